"""Code data (data/code/, scripts/extract_code_data.py): counts, schema, known items, and every
canonical solution passing its own tests in the sandbox (vaxis.data.code.run_tests; ~15 s on 2 cores)."""

from __future__ import annotations

import importlib.util
import json
import os
import re

import pytest

from vaxis.data.code import run_tests, syntax_ok
from vaxis.run.config import REPO_ROOT

DATA_DIR = REPO_ROOT / "data" / "code"
KEYS = ["id", "source", "prompt", "entry_point", "canonical_solution", "tests"]


def _load(name: str) -> list[dict]:
    with open(DATA_DIR / f"{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def humaneval() -> list[dict]:
    return _load("humaneval")


@pytest.fixture(scope="module")
def mbpp() -> list[dict]:
    return _load("mbpp")


def test_counts_ids_and_schema(humaneval, mbpp):
    assert len(humaneval) == 164 and len(mbpp) == 500
    assert [r["id"] for r in humaneval] == [f"humaneval:{k:03d}" for k in range(164)]
    assert [r["id"] for r in mbpp] == [f"mbpp:{k:03d}" for k in range(11, 511)]  # MBPP test split: tasks 11-510
    for records, source in ((humaneval, "humaneval"), (mbpp, "mbpp")):
        for r in records:
            assert list(r) == KEYS, r["id"]
            assert r["source"] == source
            assert all(isinstance(r[k], str) and r[k] for k in KEYS), r["id"]
            assert r["entry_point"].isidentifier()
            assert re.search(rf"^def {r['entry_point']}\s*\(", r["canonical_solution"], re.M), r["id"]
            assert syntax_ok(r["canonical_solution"]) and syntax_ok(r["tests"]), r["id"]
            assert "\r" not in r["canonical_solution"] + r["tests"] + r["prompt"], r["id"]


def test_known_items(humaneval, mbpp):
    h0 = humaneval[0]
    assert h0["entry_point"] == "has_close_elements"
    assert h0["prompt"].startswith("from typing import List\n\n\ndef has_close_elements(numbers: List[float]")
    assert h0["canonical_solution"].startswith(h0["prompt"])  # prompt + body
    assert h0["tests"].rstrip().endswith("check(has_close_elements)")
    m11 = mbpp[0]
    assert m11["id"] == "mbpp:011" and m11["entry_point"] == "remove_Occ"
    assert m11["prompt"] == (
        "Write a python function to remove first and last occurrence of a given character from the string.\n"
        'assert remove_Occ("hello","l") == "heo"'
    )
    assert m11["tests"].count("assert remove_Occ(") == 3
    m367 = next(r for r in mbpp if r["id"] == "mbpp:367")  # the one problem with test_setup_code
    assert m367["entry_point"] == "is_tree_balanced" and m367["tests"].startswith("root = Node(1)")


def test_every_canonical_solution_passes_its_tests(humaneval, mbpp):
    """All 664, each in its own sandboxed subprocess; as many at a time as the machine has cores."""
    from concurrent.futures import ThreadPoolExecutor

    records = humaneval + mbpp
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(lambda r: run_tests(r["canonical_solution"], r["tests"], r["entry_point"], timeout=10),
                                records))  # fmt: skip
    assert len(results) == 664
    assert [(r["id"], res.error) for r, res in zip(records, results) if not res.passed] == []


def test_a_wrong_solution_fails(humaneval):
    h0 = humaneval[0]
    wrong = h0["prompt"] + "    return False\n"
    res = run_tests(wrong, h0["tests"], h0["entry_point"], timeout=5)
    assert not res.passed and res.error == "AssertionError"


def test_script_reproduces_the_records(humaneval, mbpp):
    """The extraction functions, run on rows in the wheels' formats, give the committed records."""
    spec = importlib.util.spec_from_file_location("extract_code_data", REPO_ROOT / "scripts" / "extract_code_data.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    h0 = humaneval[0]
    body = h0["canonical_solution"][len(h0["prompt"]) :]
    test = h0["tests"].rsplit("\n\n\ncheck(", 1)[0] + "\n"
    row = {"task_id": "HumanEval/0", "prompt": h0["prompt"], "entry_point": h0["entry_point"]}
    assert script.humaneval_records([{**row, "canonical_solution": body, "test": test}]) == [h0]
    m = mbpp[0]
    doc = {
        "task_id": 11,
        "text": m["prompt"].split("\n")[0],
        "code": m["canonical_solution"].replace("\n", "\r\n"),
        "test_list": m["tests"].splitlines(),
        "test_setup_code": "",
    }
    assert script.mbpp_records([{"doc": doc}]) == [m]
    assert (
        script.mbpp_entry_point("def helper(x):\n    return x\ndef f(y):\n    return helper(y)", ["assert f(1) == 1"])
        == "f"
    )
