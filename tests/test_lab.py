"""JupyterLab as `make lab` opens it: the server lists the notebooks, offers the `vaxis` kernel, and the kernel starts.

The server runs headless on a free loopback port with a token; Jupyter's config, data and runtime folders
point at a temporary folder, so nothing is written to $HOME, while the `vaxis` kernelspec that
`make install` registers in the environment (``--sys-prefix``) is still found.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import vaxis
from vaxis.run.runner import FALLBACK_KERNEL, KERNEL_NAME, NOTEBOOK_DIR, kernel_for_notebooks, notebooks

BUDGET_S = 60.0  # the whole server test: start, requests, kernel start, shutdown


def _environment(executable: str) -> Path:
    """The bin/ folder of an interpreter: one per virtual or conda environment."""
    return Path(executable).absolute().parent.resolve()


class _Lab:
    """A JupyterLab server subprocess; ``request`` speaks its REST API with the token."""

    def __init__(self, tmp: Path, deadline: float):
        self.deadline = deadline
        self.token = secrets.token_hex(16)
        self.log_path = tmp / "lab.log"
        self.runtime = tmp / "runtime"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "IPYTHON"))}
        env.update(
            JUPYTER_CONFIG_DIR=str(tmp / "config"),
            JUPYTER_DATA_DIR=str(tmp / "data"),
            JUPYTER_RUNTIME_DIR=str(self.runtime),
            IPYTHONDIR=str(tmp / "ipython"),
        )
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            "--port=0",  # a free port, chosen by the server as it binds; read back from its server file
            f"--IdentityProvider.token={self.token}",
            f"--notebook-dir={NOTEBOOK_DIR}",
            "--ServerApp.shutdown_no_activity_timeout=120",  # a server left behind stops by itself
            "--LanguageServerManager.autodetect=False",  # no npm probes (they log to ~/.npm)
        ]
        if os.geteuid() == 0:  # containers; loopback and a token either way
            cmd.append("--allow-root")
        self.log = self.log_path.open("wb")
        # its own session: the server and the kernels it starts can be killed as one group, and only them
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=tmp, start_new_session=True
        )
        self.port = None
        self.kernel_pids: list[int] = []

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        assert left > 0, f"JupyterLab test exceeded {BUDGET_S:.0f} s\n{self.log_tail()}"
        return left

    def log_tail(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def request(self, method: str, path: str, body: dict | None = None, raw: bool = False) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        req.add_header("Authorization", f"token {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=min(10.0, self.remaining())) as resp:
            content = resp.read()
            return resp.status, (content.decode() if raw else json.loads(content) if content else None)

    def wait_ready(self) -> None:
        info = self.runtime / f"jpserver-{self.proc.pid}.json"
        while True:
            self.remaining()
            if self.proc.poll() is not None:
                raise AssertionError(f"JupyterLab exited with {self.proc.returncode}\n{self.log_tail()}")
            try:
                if self.port is None:
                    self.port = json.loads(info.read_text())["port"]
                if self.request("GET", "/api/status")[0] == 200:
                    return
            except (FileNotFoundError, ValueError, KeyError, urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)

    def run_in_kernel(self, kernel_id: str, code: str) -> str:
        """Send kernel_info_request, then execute ``code`` over the kernel's websocket (Jupyter's JSON
        protocol, the way JupyterLab talks to kernels); returns what the code printed."""
        import websocket  # websocket-client, a dependency of jupyter_server

        ws = websocket.create_connection(
            f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels",
            header=[f"Authorization: token {self.token}"],
            timeout=min(10.0, self.remaining()),
        )
        session = uuid.uuid4().hex

        def send(msg_type: str, content: dict) -> str:
            msg_id = uuid.uuid4().hex
            header = {"msg_id": msg_id, "msg_type": msg_type, "session": session, "username": "test", "version": "5.3"}
            msg = {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}
            ws.send(json.dumps(msg))
            return msg_id

        def replies(parent: str):
            while True:
                ws.settimeout(self.remaining())
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") == parent:
                    yield msg

        try:
            info = send("kernel_info_request", {})
            reply = next(m for m in replies(info) if m["msg_type"] == "kernel_info_reply")
            assert reply["content"]["status"] == "ok" and reply["content"]["language_info"]["name"] == "python"
            request = send("execute_request", {"code": code, "silent": False, "store_history": False})
            out = []
            for msg in replies(request):
                kind, content = msg["msg_type"], msg["content"]
                assert kind != "error", "\n".join(content["traceback"])
                if kind == "stream":
                    out.append(content["text"])
                if kind == "status" and content["execution_state"] == "idle":
                    return "".join(out)
        finally:
            ws.close()

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    assert self.port is not None
                    self.request("POST", "/api/shutdown")
                except Exception:
                    self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            try:  # whatever is left of the server's own process group
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait(timeout=10)
            self.log.close()
            # kernels run in sessions of their own (jupyter_client) and exit when the server does; one that
            # has not (a server killed above) is killed by its pid, if that pid is still our kernel
            for pid in self.kernel_pids:
                cmdline = Path(f"/proc/{pid}/cmdline")
                try:
                    if str(self.runtime) in cmdline.read_bytes().decode(errors="replace"):
                        os.kill(pid, signal.SIGKILL)
                except (OSError, ProcessLookupError):
                    pass


def test_jupyterlab_lists_the_notebooks_and_starts_the_vaxis_kernel(tmp_path):
    start = time.monotonic()
    lab = _Lab(tmp_path, deadline=start + BUDGET_S)
    kernel_id = None
    try:
        lab.wait_ready()
        ready_s = time.monotonic() - start

        # JupyterLab's page itself (not just the Jupyter server behind it)
        status, page = lab.request("GET", "/lab", raw=True)
        assert status == 200 and "jupyter-config-data" in page

        # the file browser opens on notebooks/ and shows every numbered notebook
        status, listing = lab.request("GET", "/api/contents/")
        assert status == 200 and listing["type"] == "directory"
        shown = {item["name"] for item in listing["content"]}
        expected = {p.name for p in notebooks()}
        assert expected <= shown, f"missing from JupyterLab: {sorted(expected - shown)}"
        for name in sorted(expected):
            nb = lab.request("GET", f"/api/contents/{name}?type=notebook&content=1")[1]
            assert nb["content"]["metadata"]["kernelspec"]["name"] == KERNEL_NAME, name

        # the kernel the notebooks name is offered, and it is this environment's Python
        specs = lab.request("GET", "/api/kernelspecs")[1]["kernelspecs"]
        assert KERNEL_NAME in specs, (
            f"no {KERNEL_NAME!r} kernel (have {sorted(specs)}): `make install` registers it, "
            f"or `{sys.executable} -m ipykernel install --sys-prefix --name {KERNEL_NAME}`"
        )
        spec = specs[KERNEL_NAME]["spec"]
        assert spec["language"] == "python"
        assert _environment(spec["argv"][0]) == _environment(sys.executable), spec["argv"]

        # and it starts, as JupyterLab opening a notebook starts it: created through the REST API, then
        # asked over the kernel's websocket for kernel_info and to run the notebooks' first import
        status, kernel = lab.request("POST", "/api/kernels", {"name": KERNEL_NAME})
        assert status == 201 and kernel["name"] == KERNEL_NAME
        kernel_id = kernel["id"]
        code = "import os, sys, vaxis\nprint(os.getpid(), sys.executable, vaxis.__file__)"
        pid, executable, module = lab.run_in_kernel(kernel_id, code).split()
        lab.kernel_pids.append(int(pid))
        printed = f"kernel runs {executable} and {module}"
        assert _environment(executable) == _environment(sys.executable), printed
        assert Path(module) == Path(vaxis.__file__), printed
        # the server's own view (it follows the kernel's status messages on a channel of its own)
        while (kernel := lab.request("GET", f"/api/kernels/{kernel_id}")[1])["execution_state"] != "idle":
            assert kernel["execution_state"] in ("starting", "busy"), f"{kernel}\n{lab.log_tail()}"
            time.sleep(0.1)
        kernel_s = time.monotonic() - start - ready_s

        assert lab.request("DELETE", f"/api/kernels/{kernel_id}")[0] == 204
        kernel_id = None
        assert lab.request("GET", "/api/kernels")[1] == []
        print(f"JupyterLab ready in {ready_s:.1f} s, {KERNEL_NAME} kernel idle after {kernel_s:.1f} s more")
    finally:
        if kernel_id is not None:
            try:
                lab.request("DELETE", f"/api/kernels/{kernel_id}")
            except Exception:
                pass
        lab.stop()
    assert lab.proc.returncode is not None
    assert time.monotonic() - start < BUDGET_S + 25  # the shutdown is bounded too


def test_runner_uses_the_vaxis_kernel_or_says_why_not(tmp_path):
    """papermill starts the kernel named here; without a `vaxis` kernel for this environment, python3."""
    from jupyter_client.kernelspec import KernelSpecManager

    def manager_with(argv0: str | None) -> KernelSpecManager:
        folder = tmp_path / (argv0 or "none").replace("/", "_") / "kernels"
        folder.mkdir(parents=True, exist_ok=True)
        if argv0:
            (folder / KERNEL_NAME).mkdir(exist_ok=True)
            spec = {"argv": [argv0, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "language": "python"}
            (folder / KERNEL_NAME / "kernel.json").write_text(json.dumps(spec | {"display_name": "vaxis"}))
        return KernelSpecManager(kernel_dirs=[str(folder)])

    assert kernel_for_notebooks(manager_with(sys.executable)) == (KERNEL_NAME, None)
    assert kernel_for_notebooks(manager_with("python")) == (KERNEL_NAME, None)
    name, why = kernel_for_notebooks(manager_with(None))
    assert name == FALLBACK_KERNEL and "no Jupyter kernel named 'vaxis'" in why
    name, why = kernel_for_notebooks(manager_with(str(tmp_path / "other-env" / "bin" / "python")))
    assert name == FALLBACK_KERNEL and "other-env" in why
    # the fallback is always available: ipykernel's own kernel, run by this interpreter
    assert FALLBACK_KERNEL in manager_with(None).find_kernel_specs()
    # and in this environment (`make install`), the notebooks run on the vaxis kernel
    assert kernel_for_notebooks() == (KERNEL_NAME, None), "`make install` registers the vaxis kernel in .venv"
