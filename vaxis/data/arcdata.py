"""ARC-Challenge multiple-choice questions, answer parsing, and a generic train/eval split.

Data. :func:`load_arc` reads the 1,172 questions of the ARC-Challenge test split (Clark
et al. 2018, AI2, CC BY-SA 4.0), which ship with vaxis offline (``data/arc/``, written
by ``scripts/extract_arc_data.py``; see data/LICENSES.md). Every question has 3 to 5
choices labelled ``A``-``E`` and one correct label. ARC has no worked solutions:
:attr:`ArcQuestion.solution` is a short reference answer ("The answer is C: ...").

Prompting and grading. :func:`format_question` writes the question with its lettered
choices and the instruction "Answer with the letter of the correct choice.";
:func:`extract_choice` reads the chosen label out of a model's text and
:func:`is_correct` compares it with the gold label. Like :func:`vaxis.data.mathdata.is_correct`,
it returns ``None`` when no choice can be read: an unparseable output is not a wrong one.

The parsing rule of :func:`extract_choice` (``X`` is one of the allowed labels, matched
case-sensitively, so the lower-case article "a" is never a label):

1. Explicit answers; the last one in the text wins. "answer", "choice" or "option"
   (any case, optionally "correct"/"final"/"best"/"right" before it) followed by "is",
   ":", "=", "would be", "should be" or "will be", then ``X`` with optional markdown,
   brackets and an optional "option"/"choice"/"letter" word: "The answer is B",
   "Answer: D", "**Final answer:** (C)", "the correct option is letter A". Also
   "Option C is correct" / "choice (B) is the right answer", and ``\\boxed{X}`` (also
   ``\\boxed{\\text{X}}``, ``\\boxed{(X)}``).
2. Otherwise, a label standing on its own; the last one wins: a line that is only the
   label ("B", "B.", "(C)", "**D**", "[A]"), a line starting with the label followed by
   ``.``, ``)`` or ``:`` ("B. wet palms", "C) ..."), or a label in parentheses anywhere
   ("I pick (C) here").
3. Otherwise ``None``. A bare capital letter in running text never counts, so "A plant
   needs water" or "B is tempting but" give ``None`` (and do not override rule 1).
   ``X`` must not run into a word or digit ("answer is Carbon" is not ``C``, "answer is
   12" is not ``1``). An explicit pattern always counts, even before an article:
   "Answer: A plant needs water" reads as ``A``.

Splits. :func:`split_indices` makes a deterministic shuffled train/eval split of ``n``
items (for SFT on ARC, GSM8K or any other list).
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..core.cache import REPO_ROOT

DATA_DIR = REPO_ROOT / "data" / "arc"
DATA_FILE = "arc_challenge_test.jsonl"
INSTRUCTION = "Answer with the letter of the correct choice."


class ArcDataError(ValueError):
    """ARC data was asked for wrongly (bad ``n``) or its file is missing or broken."""


@dataclass(frozen=True)
class ArcQuestion:
    """One ARC question: ``choices`` is a tuple of ``(label, text)`` pairs in the source's order,
    ``answer`` the label of the correct one."""

    id: str
    question: str
    choices: tuple[tuple[str, str], ...]
    answer: str

    @property
    def labels(self) -> tuple[str, ...]:
        """The choice labels, e.g. ``("A", "B", "C", "D")``."""
        return tuple(label for label, _ in self.choices)

    @property
    def answer_text(self) -> str:
        """The text of the correct choice."""
        return dict(self.choices)[self.answer]

    @property
    def solution(self) -> str:
        """The short reference answer ``"The answer is <label>: <text>."`` (the data file's ``solution``)."""
        text = self.answer_text
        return f"The answer is {self.answer}: {text}" + ("" if text.endswith((".", "?", "!")) else ".")


# ---------------------------------------------------------------------------------------------
# Loading


def load_arc(n: int | None = None, seed: int = 0) -> list[ArcQuestion]:
    """The ARC-Challenge test questions, in the source's order.

    With ``n``, a random subset of ``n`` questions drawn with ``random.Random(seed)``,
    returned in the source's order (the same ``n`` and ``seed`` give the same subset),
    as :func:`vaxis.data.mathdata.load_problems` does. Raises :class:`ArcDataError` (a
    ``ValueError``) when ``n`` is not a positive integer or exceeds the number of questions.
    """
    from .mathdata import check_n, seeded_subset

    check_n(n, "questions", ArcDataError)
    return seeded_subset(_read_questions(DATA_DIR / DATA_FILE), n, seed, "ARC-Challenge", ArcDataError, "questions")


def _read_questions(path: Path) -> list[ArcQuestion]:
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise ArcDataError(
            f"{path} not found: the ARC data ship in a source checkout of vaxis; "
            "rebuild them with `python scripts/extract_arc_data.py`"
        ) from None
    questions = []
    with handle:
        for line_no, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
                question = ArcQuestion(
                    id=record["id"],
                    question=record["question"],
                    choices=tuple((c["label"], c["text"]) for c in record["choices"]),
                    answer=record["answer"],
                )
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ArcDataError(f"{DATA_FILE} line {line_no}: bad record ({err!r})") from err
            if question.answer not in question.labels:
                raise ArcDataError(f"{DATA_FILE} line {line_no}: answer {question.answer!r} is not a choice label")
            questions.append(question)
    return questions


# ---------------------------------------------------------------------------------------------
# Prompting and grading


def format_question(q: ArcQuestion) -> str:
    """The question, one ``"<label>. <text>"`` line per choice, and the instruction, e.g.::

    Which gas do plants take in?
    A. oxygen
    B. carbon dioxide
    Answer with the letter of the correct choice.
    """
    lines = [q.question, *(f"{label}. {text}" for label, text in q.choices), INSTRUCTION]
    return "\n".join(lines)


@lru_cache(maxsize=64)
def _patterns(labels: tuple[str, ...]) -> tuple[tuple[re.Pattern, ...], tuple[re.Pattern, ...]]:
    """The explicit (rule 1) and standalone (rule 2) patterns for one set of labels; group ``x`` is the label."""
    x = "(?P<x>" + "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True)) + r")(?![^\W_])"
    key = r"(?i:\b(?:(?:correct|final|best|right)\s+)?(?:answer|choice|option))"
    verb = r"(?i:is\b|:|=|(?:would|should|will)\s+be\b)"
    word = r"(?:(?i:option|choice|letter)\s*)?"
    explicit = (
        rf"{key}[\s*_]*{verb}[\s*_:]*{word}[(\[{{]?[\s*_]*{x}",  # "The answer is B", "Answer: (D)"
        rf"(?i:\b(?:option|choice))\s*[(\[]?{x}[)\]]?\s+(?i:is\s+(?:the\s+)?(?:correct|right|best))",
        rf"\\boxed\{{\s*(?:\\text(?:bf)?\{{)?\s*\(?{x}\)?\s*\}}",  # \boxed{C}, \boxed{\text{C}}
    )
    standalone = (
        rf"^[^\S\n]*[*_]*[(\[]?{x}[)\]]?[.:)]?[*_]*[^\S\n]*$",  # a line that is only "B", "B.", "(C)", "**D**"
        rf"^[^\S\n]*[*_]*[(\[]?{x}(?:[)\]]|[.:])[*_]*[^\S\n]+\S",  # "B. wet palms", "C) ..."
        rf"(?<![\w(])\({x}\)(?![\w)])",  # "(C)" anywhere
    )
    return (
        tuple(re.compile(p) for p in explicit),
        tuple(re.compile(p, re.MULTILINE) for p in standalone),
    )


def extract_choice(text: str, labels) -> str | None:
    """The label chosen in a model's ``text``, one of ``labels``, or ``None``; see the module docstring for the rule."""
    labels = tuple(labels)
    if not labels:
        raise ValueError("extract_choice needs at least one label")
    for tier in _patterns(labels):
        found = [m for pattern in tier for m in pattern.finditer(text)]
        if found:
            return max(found, key=lambda m: m.start("x")).group("x")
    return None


def is_correct(text: str, q: ArcQuestion) -> bool | None:
    """Whether the choice read from ``text`` is ``q.answer``; ``None`` when no choice can be read."""
    predicted = extract_choice(text, q.labels)
    return None if predicted is None else predicted == q.answer


# ---------------------------------------------------------------------------------------------
# Splits


def split_indices(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A deterministic shuffled split of ``range(n)`` into ``(train_idx, eval_idx)``.

    The indices are shuffled with ``random.Random(seed)``; the first
    ``round(n * eval_fraction)`` (halves round up) form the eval side, the rest the
    train side. Both lists are sorted, disjoint, and together cover ``range(n)``; the
    same ``n``, ``eval_fraction`` and ``seed`` always give the same split. Raises
    ``ValueError`` when ``n`` is not a non-negative integer, ``eval_fraction`` is not
    strictly between 0 and 1, or either side would be empty.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)) or not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be strictly between 0 and 1, got {eval_fraction!r}")
    n_eval = math.floor(n * eval_fraction + 0.5)
    if n_eval == 0 or n_eval == n:
        side = "eval" if n_eval == 0 else "train"
        raise ValueError(
            f"split_indices(n={n}, eval_fraction={eval_fraction}) would leave the {side} side empty "
            f"({n_eval} of {n} items for eval); use more items or another eval_fraction"
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[n_eval:]), sorted(order[:n_eval])
