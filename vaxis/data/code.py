"""Run model-written Python against unit tests in a separate, resource-limited process.

:func:`run_tests` is how vaxis grades code problems (HumanEval, MBPP; ``data/code/``):
it writes ``code + "\\n\\n" + tests`` to a fresh temporary directory and executes it in a
new interpreter, ``sys.executable -I -S -B -X utf8`` (isolated mode: no ``PYTHON*``
environment variables, no user site, no current directory on ``sys.path``; ``-S``: no
site-packages either, so only the standard library is importable, and neither vaxis, nor
its editable install, nor the notebook's packages are). It never runs in the calling
(notebook) process. The child gets

- a wall-clock ``timeout``: on expiry the whole process group is killed with SIGKILL (the
  child starts a new session, so its own children die with it); stray background children
  are killed the same way after a normal exit;
- ``resource`` limits set before ``exec``: ``RLIMIT_AS`` (address space, ``memory_mb``),
  ``RLIMIT_CPU`` (``ceil(timeout) + 1`` s of CPU), ``RLIMIT_FSIZE`` (16 MiB per file written,
  stdout and stderr included), ``RLIMIT_CORE`` 0 and, if asked (``max_processes``),
  ``RLIMIT_NPROC``. ``RLIMIT_NPROC`` is off by default: Linux counts it per *user*, not per
  process tree (a low value fails when the user already runs many processes, as on a CI
  machine), and root ignores it;
- its own temporary working directory (also ``HOME`` and ``TMPDIR``), deleted afterwards;
- a minimal environment: ``PATH``, ``HOME``/``TMPDIR`` (the work directory), ``LANG``,
  ``PYTHONDONTWRITEBYTECODE`` and single-threaded BLAS/OpenMP settings; nothing of the
  parent's environment (API keys, tokens) is passed on;
- stdin at end of file (``input()`` raises ``EOFError`` instead of hanging); stdout and stderr
  go to anonymous temporary files (not pipes: a child printing in a loop cannot fill the
  parent's memory), of which the last ``tail_chars`` characters are returned.

A run *passes* only if the program exits with status 0 **and** prints a random per-run token
that the harness writes after the code and the tests have run to completion. The token reaches
the child on stdin (then stdin is replaced by ``/dev/null``), so it is in no file, argument or
environment variable; ``sys.exit(0)`` or ``os._exit(0)`` in the code before its tests, or a
test program that never gets to the end, is therefore a failure, not a pass.

Threat model, honestly: this guards against **accidents and runaway code** (infinite loops,
memory blow-ups, huge outputs, stray ``sys.exit``, code that deletes or writes files in its
working directory, code that reads environment variables) of the kind models write by mistake.
It is **not a security boundary** against an adversary: the child runs as the same user with
the same file-system access (it can delete anything that user can, e.g. by absolute path), the
same network, and can read the harness's memory by frame inspection or start a new session to
escape the process-group kill. Run untrusted code from an untrusted source in a container or VM
with no network and a read-only file system, not with this alone.

:func:`syntax_ok` checks that a string parses as Python (``ast.parse``) without running it.
"""

from __future__ import annotations

import ast
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from ..core.cache import REPO_ROOT

#: Largest file the child may write, stdout and stderr included (``RLIMIT_FSIZE``).
MAX_FILE_BYTES = 16 * 1024 * 1024
PROGRAM_NAME = "program.py"

# The harness that runs in the child (``python -c``); run_tests fills in the ``{...}`` fields.
_RUNNER = """\
import os, sys, types

def _vaxis_main():
    token = sys.stdin.readline().strip()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, encoding="utf-8", closefd=False)
    if {strip_repo}:
        # Site-packages are on: hide an editable install of the repository (and the repository itself).
        hidden = lambda f: str(getattr(f, "__module__", "")).startswith("__editable__")
        sys.meta_path[:] = [f for f in sys.meta_path if not hidden(f)]
        sys.path_hooks[:] = [h for h in sys.path_hooks if not hidden(h)]
        sys.path[:] = [p for p in sys.path if not os.path.abspath(p or ".").startswith({repo!r})]
        sys.path_importer_cache.clear()
    with open({program!r}, encoding="utf-8") as f:
        source = f.read()
    module = types.ModuleType("__main__")
    module.__file__ = os.path.abspath({program!r})
    module.__builtins__ = __builtins__
    sys.modules["__main__"] = module
    exec(compile(source, {program!r}, "exec"), module.__dict__)
    entry_point = {entry_point!r}
    if entry_point is not None and not callable(module.__dict__.get(entry_point)):
        raise NameError(f"entry point {{entry_point!r}} is not defined by the code")
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(1, ("\\n" + token + "\\n").encode())
    os._exit(0)

_vaxis_main()
"""


@dataclass(frozen=True)
class TestResult:
    """The outcome of :func:`run_tests`.

    ``passed``: exit status 0 and the harness's completion token seen. ``error``: ``None`` on a
    pass, else a one-line reason (the exception line of the traceback, e.g.
    ``"AssertionError"`` or ``"SyntaxError: invalid syntax"``, or ``"timed out after 2.0 s"``,
    ``"memory limit ..."``). ``returncode``: the exit status (negative: killed by that signal;
    ``None`` if the process could not be started). ``stdout`` / ``stderr``: the last characters
    of each (the token removed). ``duration_s``: wall-clock seconds.
    """

    __test__ = False  # not a pytest test class

    passed: bool
    error: str | None
    timed_out: bool
    returncode: int | None
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0


def syntax_ok(code: str) -> bool:
    """True if ``code`` parses as Python (``ast.parse``; nothing is executed)."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: source contains null bytes
        return False
    return True


def _limits(memory_mb: int, cpu_s: int, max_processes: int | None):
    """The ``preexec_fn`` that sets the child's resource limits (runs in the child, before exec)."""
    import resource

    def apply() -> None:
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if max_processes is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))

    return apply


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(f, n: int) -> str:
    """The last ``n`` characters (roughly: ``4 n`` bytes, decoded) of the binary file ``f``."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - 4 * n))
    return f.read().decode("utf-8", errors="replace")[-n:] if n > 0 else ""


def _error_line(stderr: str) -> str | None:
    """The exception line of a Python traceback in ``stderr`` (its last non-blank line)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else None


def _rmtree(path: str) -> None:
    """Delete ``path`` even if the child removed permissions inside it."""

    def fix(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


def run_tests(
    code: str,
    tests: str,
    entry_point: str | None = None,
    timeout: float = 5.0,
    memory_mb: int = 512,
    *,
    site_packages: bool = False,
    max_processes: int | None = None,
    tail_chars: int = 4000,
) -> TestResult:
    """Run ``code`` followed by ``tests`` in a fresh, resource-limited interpreter; see the module docstring.

    ``tests`` is a Python program that raises (typically ``AssertionError``) on failure, e.g.
    HumanEval's ``check`` function followed by ``check(<entry point>)``, or MBPP's asserts. With
    ``entry_point``, the code must also define a callable of that name. ``timeout`` is wall-clock
    seconds; ``memory_mb`` caps the address space (``RLIMIT_AS``; the interpreter itself needs
    about 30 MB). ``site_packages=True`` drops ``-S`` so the environment's installed packages
    (numpy, ...) are importable; the repository and an editable install of it stay hidden.
    ``max_processes`` sets ``RLIMIT_NPROC`` (per user; see the module docstring).
    """
    if timeout <= 0 or memory_mb <= 0:
        raise ValueError(f"timeout and memory_mb must be positive, got {timeout} and {memory_mb}")
    token = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix="vaxis-code-")
    try:
        with open(os.path.join(workdir, PROGRAM_NAME), "w", encoding="utf-8") as f:
            f.write(code + "\n\n" + tests + "\n")
        runner = _RUNNER.format(
            program=PROGRAM_NAME, entry_point=entry_point, strip_repo=site_packages, repo=str(REPO_ROOT)
        )
        flags = ["-I", "-B", "-X", "utf8"] + ([] if site_packages else ["-S"])
        limits = _limits(memory_mb, math.ceil(timeout) + 1, max_processes)
        ran = _run_sandboxed([sys.executable, *flags, "-c", runner], workdir, token, timeout, limits, tail_chars)
    finally:
        _rmtree(workdir)
    if isinstance(ran, TestResult):  # the interpreter did not start
        return ran
    returncode, timed_out, duration, stdout, stderr = ran
    marker = "\n" + token + "\n"
    finished = stdout.endswith(marker)
    stdout = (stdout[: -len(marker)] if finished else stdout)[-tail_chars:]
    passed = returncode == 0 and finished and not timed_out
    error = None if passed else _failure(returncode, timed_out, timeout, memory_mb, stderr)
    return TestResult(passed, error, timed_out, returncode, stdout, stderr, duration)


def _run_sandboxed(cmd: list[str], workdir: str, token: str, timeout: float, limits, tail_chars: int):
    """Run ``cmd`` in ``workdir`` (its home and temporary folder) with a bare environment, in a session of its
    own under ``limits`` (a ``preexec_fn``), ``token`` on its stdin; its whole process group is killed at the
    end, at ``timeout`` seconds at the latest. Returns ``(returncode, timed_out, seconds, stdout tail, stderr
    tail)``, or a failed :class:`TestResult` when the interpreter cannot start."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                cwd=workdir,
                env=env,
                start_new_session=True,
                preexec_fn=limits,
                close_fds=True,
            )
        except OSError as e:
            return TestResult(False, f"could not start the interpreter: {e}", False, None)
        timed_out = False
        try:
            proc.stdin.write((token + "\n").encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            returncode = proc.wait()
        _kill_group(proc.pid)  # background children left behind by a normal exit
        duration = time.monotonic() - start
        return returncode, timed_out, duration, _tail(out, tail_chars + 2 * len(token)), _tail(err, tail_chars)


def _failure(returncode: int | None, timed_out: bool, timeout: float, memory_mb: int, stderr: str) -> str:
    """Why a run that did not pass failed, in one line."""
    if timed_out:
        return f"timed out after {timeout:g} s"
    if returncode == -signal.SIGXCPU:
        return "CPU time limit exceeded"
    if returncode == -signal.SIGKILL:
        return "killed by SIGKILL (CPU hard limit, or out of memory)"
    if returncode == -signal.SIGXFSZ:  # Python ignores SIGXFSZ: usually "OSError: [Errno 27] File too large"
        return f"file size limit exceeded (a file or the output grew past {MAX_FILE_BYTES} bytes)"
    if returncode is not None and returncode < 0:
        return f"killed by signal {signal.Signals(-returncode).name}"
    if returncode == 0:
        return "exited with status 0 before the tests finished (sys.exit / os._exit in the code?)"
    error = _error_line(stderr) or f"exited with status {returncode}"
    if error.startswith("MemoryError"):
        error = f"MemoryError (memory limit {memory_mb} MB)"
    return error
