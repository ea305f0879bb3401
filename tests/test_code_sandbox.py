"""The code sandbox (vaxis.data.code.run_tests, syntax_ok): passes and failures, timeouts, memory limits,
early exits, file deletion, environment and import isolation. Every case runs in well under 2 s."""

from __future__ import annotations

import os
import time

import pytest

from vaxis.data.code import TestResult, run_tests, syntax_ok
from vaxis.run.config import REPO_ROOT

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"


def test_passing_solution_passes():
    r = run_tests(ADD, ADD_TESTS, entry_point="add", timeout=2)
    assert isinstance(r, TestResult)
    assert r.passed and r.error is None and not r.timed_out and r.returncode == 0


def test_output_is_returned_without_the_token():
    r = run_tests(ADD + "print('hello from the code')\n", ADD_TESTS, timeout=2)
    assert r.passed
    assert r.stdout == "hello from the code\n"


def test_failing_assert_is_reported():
    r = run_tests("def add(a, b):\n    return a - b\n", ADD_TESTS, entry_point="add", timeout=2)
    assert not r.passed and not r.timed_out and r.returncode == 1
    assert r.error == "AssertionError"
    assert "assert add(1, 2) == 3" in r.stderr  # the traceback shows the failing assert


def test_exception_is_reported_with_its_text():
    r = run_tests("def add(a, b):\n    return a + undefined_name\n", ADD_TESTS, timeout=2)
    assert not r.passed
    assert r.error == "NameError: name 'undefined_name' is not defined"


def test_syntax_error_is_reported():
    code = "def add(a, b)\n    return a + b\n"
    assert not syntax_ok(code) and syntax_ok(ADD) and not syntax_ok("x = 1\x00")
    r = run_tests(code, ADD_TESTS, timeout=2)
    assert not r.passed and r.error.startswith("SyntaxError")


def test_missing_entry_point_is_a_failure():
    r = run_tests(ADD, "", entry_point="multiply", timeout=2)
    assert not r.passed and "multiply" in r.error


@pytest.mark.parametrize("code", ["add = 5\n", "add = None\n", "class Box:\n    pass\nadd = Box()\n"])
def test_entry_point_that_is_not_callable_is_a_failure(code):
    r = run_tests(code, "", entry_point="add", timeout=2)
    assert not r.passed and "add" in r.error
    assert run_tests("class add:\n    pass\n", "", entry_point="add", timeout=2).passed  # a class is callable


@pytest.mark.parametrize("exit_call", ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit"])
def test_exit_before_the_tests_is_not_a_pass(exit_call):
    r = run_tests(exit_call + "\n" + ADD, "assert False, 'the tests ran'\n", timeout=2)
    assert r.returncode == 0  # the process did exit cleanly ...
    assert not r.passed  # ... but the tests never ran
    assert "before the tests finished" in r.error


def test_infinite_loop_times_out():
    r = run_tests("while True:\n    pass\n", "", timeout=1)
    assert r.timed_out and not r.passed
    assert r.error.startswith("timed out")
    assert r.duration_s < 5


def _running(pid: int) -> bool:
    """True if ``pid`` is a live process (not gone, not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_sleeping_child_processes_are_killed_with_the_group():
    code = "import subprocess\np = subprocess.Popen(['sleep', '30'])\nprint(p.pid, flush=True)\nwhile True:\n    pass\n"
    r = run_tests(code, "", timeout=3)  # room to start the child on a loaded machine
    assert r.timed_out
    pid = int(r.stdout.split()[0])
    deadline = time.monotonic() + 5  # SIGKILL is delivered at once, but the kernel may take a moment
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid)


@pytest.mark.parametrize(
    "bomb", ["x = bytearray(10**10)\n", "x = []\nwhile True:\n    x.append(bytearray(10**7))\n"], ids=["one", "growing"]
)
def test_memory_bomb_is_stopped(bomb):
    r = run_tests(bomb, "", timeout=2, memory_mb=256)
    assert not r.passed and not r.timed_out
    assert "MemoryError" in r.error


def test_flood_of_output_is_capped():
    r = run_tests("while True:\n    print('x' * 1000)\n", "", timeout=2, tail_chars=100)
    assert not r.passed
    assert len(r.stdout) <= 100 and len(r.stderr) <= 100


def test_deleting_files_in_the_working_directory_leaves_the_repository_alone(tmp_path, monkeypatch):
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("still here")
    monkeypatch.chdir(tmp_path)  # if the sandbox ran in the caller's directory, the sentinel would go
    code = (
        "import os, shutil\n"
        "open('scratch.txt', 'w').write('x')\n"
        "for name in os.listdir('.'):\n"
        "    os.remove(name) if os.path.isfile(name) else shutil.rmtree(name)\n"
        "shutil.rmtree('.', ignore_errors=True)\n"
        "print(os.getcwd())\n"
    )
    r = run_tests(code, "", timeout=2)
    assert r.passed, r.error
    workdir = r.stdout.strip()
    assert workdir != str(tmp_path) and not workdir.startswith(str(REPO_ROOT))
    assert not os.path.exists(workdir)  # the sandbox's own directory is deleted afterwards
    assert sentinel.read_text() == "still here"
    for name in ("pyproject.toml", "README.md", "vaxis/data/code.py", "data/code/humaneval.jsonl"):
        assert (REPO_ROOT / name).is_file(), name


def test_environment_is_minimal(monkeypatch):
    monkeypatch.setenv("VAXIS_TEST_SECRET", "hunter2")
    code = "import os\nseen = dict(os.environ)\n"
    tests = (
        "assert 'VAXIS_TEST_SECRET' not in seen, seen\n"
        "assert 'PATH' in seen\n"
        "assert 'PYTHONPATH' not in seen\n"
        "assert seen['HOME'] == os.getcwd()\n"
        "assert 'hunter2' not in open('/proc/self/environ').read()\n"
    )
    r = run_tests(code, tests, timeout=2)
    assert r.passed, r.stderr


@pytest.mark.parametrize("site_packages", [False, True])
def test_repository_is_not_importable(site_packages):
    r = run_tests("import vaxis\n", "", timeout=2, site_packages=site_packages)
    assert not r.passed
    assert r.error == "ModuleNotFoundError: No module named 'vaxis'"
    assert run_tests("import json, re, collections, heapq, math\n", "", timeout=2, site_packages=site_packages).passed


def test_stdin_is_closed():
    r = run_tests("import sys\ndata = sys.stdin.read()\n", "assert data == ''\n", timeout=2)
    assert r.passed, r.error


def test_bad_arguments():
    with pytest.raises(ValueError):
        run_tests(ADD, ADD_TESTS, timeout=0)
