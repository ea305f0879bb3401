"""Browser check of vaxis.monitor in JupyterLab: the tokens appear while they are generated, and the cell ends with
the final rendering. A manual check (a real browser), not part of `make test`.

What it does: writes a small notebook with one monitor cell into a temporary folder, starts JupyterLab there
headless (`--no-browser`, loopback, a token, Jupyter's config/data/runtime folders in the temporary folder; the
notebook names the `vaxis` kernel that `make install` registers in .venv), opens the notebook in headless Chromium
through Selenium, runs the cell (JupyterLab's own `notebook:run-all-cells` command), and every 0.2 s counts the
coloured token spans of the monitor's output and reads its status line, saving screenshots at two moments while it
generates and one at the end. It passes when the count was seen at two or more values strictly between 0 and the
final count (the tokens arrived progressively, in place, in one output), the final status says "done", the final
rendering has one coloured span and one trace point per token and the output area holds exactly one monitor
rendering.

Model: the embedded SmolLM2-135M-Instruct with the demo run's axis (`runs/demo/value_axis`) and a held-out game of
`runs/demo/games.jsonl` when they exist (`--model`, `--axis`, `--games`); `--tiny` uses the tiny random Qwen3 and a
random axis instead (each forward slowed by `--delay` seconds, so that a fast CPU still shows the tokens arrive).

Needs (not project dependencies): Chromium and its driver from the system (Debian: `apt-get install -y chromium
chromium-driver`), and Selenium in the environment (`.venv/bin/pip install selenium`).

    .venv/bin/python scripts/check_monitor_browser.py                 # SmolLM2 + the demo axis, 64 tokens
    .venv/bin/python scripts/check_monitor_browser.py --tiny --tokens 80
    .venv/bin/python scripts/check_monitor_browser.py --out /tmp/monitor-shots   # where screenshots go

Exit status 0 when every check passes, 1 otherwise (the log says which failed).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]

REAL_CELL = """\
import json
import vaxis

model, tokenizer = vaxis.load_model({model!r}, device="cpu")
axis = vaxis.Axis.load({axis!r})
chat = json.loads({chat!r})
live = vaxis.monitor(model, tokenizer, axis, chat, max_new_tokens={tokens}, title="browser check: " + {what!r})
"""

TINY_CELL = """\
import time
import torch
import vaxis
from vaxis.core.tiny import tiny_model_and_tokenizer

model, tokenizer = tiny_model_and_tokenizer("qwen3", seed=0)
model.model.layers[0].register_forward_pre_hook(lambda *a: time.sleep({delay}))  # a slower model, to watch
axis = vaxis.Axis(torch.randn(4, 64, generator=torch.Generator().manual_seed(1)), [0, 1, 2, 3],
                  torch.full((4,), 0.25), 2, "tiny", 64, 3)
chat = [{{"role": "user", "content": "Rewrite this paragraph, please."}}]
live = vaxis.monitor(model, tokenizer, axis, chat, max_new_tokens={tokens}, title="browser check: tiny model")
"""

# JavaScript run in the page: the monitor outputs, their token spans, trace points and status line.
PROBE = """
const outs = document.querySelectorAll('.jp-OutputArea-output .vaxis-monitor');
const last = outs[outs.length - 1];
if (!last) return {outputs: 0, spans: 0, points: 0, status: ''};
const head = last.querySelector(':scope > div > div:first-child');  // the title and status line
return {outputs: outs.length, spans: last.querySelectorAll('span[title]').length,
        points: last.querySelectorAll('svg.vaxis-trace circle').length, status: head ? head.textContent : ''};
"""


def held_out_chat(games: Path) -> tuple[str, str]:
    """A held-out game's chat up to the user turn before its target rewrite (JSON), and its name. Read as plain JSON,
    so a games file of an older schema string still serves."""
    for line in games.read_text().splitlines():
        game = json.loads(line) if line.strip() else None
        if game and game["split"] == "held_out":
            upto = game["attempts"][game["target_attempt"]]["message_index"]
            chat = [{"role": m["role"], "content": m["content"]} for m in game["messages"][:upto]]
            return json.dumps(chat), f"held-out game {game['game_id']}"
    raise SystemExit(f"{games} has no held-out game")


def write_notebook(folder: Path, args) -> Path:
    if args.tiny:
        source = TINY_CELL.format(delay=args.delay, tokens=args.tokens)
    else:
        chat, what = held_out_chat(Path(args.games))
        source = REAL_CELL.format(model=args.model, axis=str(Path(args.axis).resolve()), chat=chat,
                                  tokens=args.tokens, what=what)  # fmt: skip
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "vaxis", "display_name": "vaxis (.venv)", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source)]
    path = folder / "monitor_check.ipynb"
    nbformat.write(nb, path)
    return path


def start_lab(folder: Path, token: str) -> tuple[subprocess.Popen, int]:
    """JupyterLab on ``folder`` (its own session, so the server and its kernels stop as one group); its port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
    env.update(JUPYTER_CONFIG_DIR=str(folder / "config"), JUPYTER_DATA_DIR=str(folder / "data"),
               JUPYTER_RUNTIME_DIR=str(folder / "runtime"), IPYTHONDIR=str(folder / "ipython"))  # fmt: skip
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", "--port=0",
           f"--IdentityProvider.token={token}", f"--notebook-dir={folder}", "--LabApp.expose_app_in_browser=True",
           "--ServerApp.shutdown_no_activity_timeout=300", "--LanguageServerManager.autodetect=False"]  # fmt: skip
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(folder / "lab.log", "wb")  # noqa: SIM115 - open while the server runs
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True)
    info = folder / "runtime" / f"jpserver-{proc.pid}.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"JupyterLab exited: {(folder / 'lab.log').read_text()[-2000:]}")
        if info.exists():
            try:
                return proc, json.loads(info.read_text())["port"]
            except (ValueError, KeyError):
                pass
        time.sleep(0.25)
    raise SystemExit("JupyterLab did not start within 60 s")


def browser(chromium: str, driver: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def watch(page, out: Path, timeout: float) -> list[dict]:
    """Poll the monitor output until its status says done; screenshots at two moments while generating and at the
    end. Returns the samples ``{t, outputs, spans, points, status}``."""
    samples, shots, first, start = [], 0, 0, time.monotonic()
    while time.monotonic() - start < timeout:
        probe = page.execute_script(PROBE)
        probe["t"] = round(time.monotonic() - start, 2)
        samples.append(probe)
        if probe["spans"] and "generating" in probe["status"] and shots < 2 and probe["spans"] >= first + 5 * shots:
            page.save_screenshot(str(out / f"monitor_{shots + 1}_generating_{probe['spans']}_tokens.png"))
            first, shots = first or probe["spans"], shots + 1
        if "done:" in probe["status"]:
            page.save_screenshot(str(out / "monitor_3_final.png"))
            return samples
        time.sleep(0.2)
    page.save_screenshot(str(out / "monitor_timeout.png"))
    return samples


def verdict(samples: list[dict], tokens: int) -> list[str]:
    """The failed checks (empty: all passed)."""
    final = samples[-1] if samples else {"spans": 0, "points": 0, "outputs": 0, "status": ""}
    between = sorted({s["spans"] for s in samples if 0 < s["spans"] < final["spans"]})
    failed = []
    if "done:" not in final["status"]:
        failed.append(f"the final status does not say done: {final['status']!r}")
    if len(between) < 2:
        failed.append(f"tokens did not appear progressively: counts seen {between} before the final {final['spans']}")
    if not 0 < final["spans"] <= tokens or final["points"] != final["spans"]:
        failed.append(f"final rendering: {final['spans']} token spans, {final['points']} trace points")
    if any(s["outputs"] > 1 for s in samples):
        failed.append("more than one monitor rendering in the output area")
    return failed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="the tiny random model and a random axis")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--axis", default=str(REPO / "runs" / "demo" / "value_axis"))
    p.add_argument("--games", default=str(REPO / "runs" / "demo" / "games.jsonl"))
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--delay", type=float, default=0.05, help="--tiny: seconds added to each forward pass")
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "vaxis-monitor-check"))
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--driver", default=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="vaxis-monitor-lab-"))
    token = secrets.token_hex(16)
    path = write_notebook(folder, args)
    proc, port = start_lab(folder, token)
    page = None
    try:
        page = browser(args.chromium, args.driver)
        page.get(f"http://127.0.0.1:{port}/lab/tree/{path.name}?token={token}")
        ready = time.monotonic() + 120  # the page, the notebook panel and an idle kernel
        while time.monotonic() < ready and not page.execute_script(
            "const a = window.jupyterapp; const w = a && a.shell.currentWidget;"
            "return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
            " && w.sessionContext.session.kernel.status === 'idle');"
        ):
            time.sleep(0.5)
        page.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")
        samples = watch(page, out, args.timeout)
    finally:
        if page is not None:
            page.quit()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    (out / "samples.json").write_text(json.dumps(samples, indent=1))
    counts = [(s["t"], s["spans"]) for s in samples if s["spans"]]
    print(f"token spans over time (s, count): {counts[:3]} ... {counts[-3:]} ({len(samples)} samples)")
    print(f"final status: {samples[-1]['status']!r}; screenshots and samples.json in {out}")
    failed = verdict(samples, args.tokens)
    for f in failed:
        print("FAILED:", f)
    print("browser check passed" if not failed else f"browser check failed ({len(failed)})")
    shutil.rmtree(folder, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
