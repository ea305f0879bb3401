"""Math problems for the task-confidence experiments (METHOD.md section 4), and answer checking.

Data. :func:`load_problems` reads the two benchmarks that ship with vaxis, offline
(``data/math/``, MIT, written by ``scripts/extract_math_data.py``; see data/LICENSES.md):
``"gsm8k"`` (the 1,319 GSM8K test problems) and ``"math500"`` (MATH-500). The paper
uses AIME 2024/2025; :func:`load_aime` fetches those from the Hugging Face hub for
users who have network access and the ``datasets`` library (not a vaxis dependency).

Answers, in the style of lm-evaluation-harness: :func:`extract_answer` reads the final
answer out of a model's text, :func:`normalize_math` puts a MATH-style answer in a
canonical form, and :func:`is_correct` compares with the gold answer. It returns
``None`` when no answer can be extracted: an unparseable output is not a wrong one, and
callers count it as invalid (METHOD.md: metrics over valid outputs only).

- GSM8K (numbers): the number in the last ``\\boxed{...}``; else the number after the last
  ``####``; else after the last "the answer is" / "answer:"; else the last number in the
  text. Thousands commas and ``$`` are dropped, a trailing ``.`` is not part of a number,
  negatives and decimals are kept; comparison is numeric (``"18.00"`` equals ``"18"``).
- MATH-500 and AIME (LaTeX): the content of the last ``\\boxed{...}`` or ``\\fbox{...}``,
  braces balanced (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``); if the last box is
  never closed (a truncated output) there is no answer. Without a box, the Minerva form
  "final answer is $X$" is accepted. Comparison: :func:`normalize_math` on both sides,
  then equal strings, or equal values when both sides are plain numbers or fractions
  (``0.5``, ``1/2`` and ``\\frac12`` are equal; ``0.333`` and ``\\frac13`` are not).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ..core.cache import REPO_ROOT

DATA_DIR = REPO_ROOT / "data" / "math"
DATA_FILES = {"gsm8k": "gsm8k_test.jsonl", "math500": "math500.jsonl"}
#: Hugging Face datasets used by :func:`load_aime` (split ``train``, 30 problems each).
AIME_DATASETS = {2024: "HuggingFaceH4/aime_2024", 2025: "yentinglin/aime_2025"}
ANSWER_STYLES = {"gsm8k": "number", "math500": "latex", "aime": "latex"}
_OFFLINE_HINT = 'offline, use load_problems("gsm8k") or load_problems("math500"), which ship with vaxis'


class MathDataError(ValueError):
    """A math data set was asked for wrongly (unknown name, bad ``n``) or its file is missing or broken."""


class AimeUnavailableError(RuntimeError):
    """AIME cannot be loaded here: ``datasets`` is not installed, or the Hugging Face hub is offline."""


@dataclass
class Problem:
    """One math problem: ``answer`` is the gold final answer as the source gives it.

    ``source`` is ``"gsm8k"``, ``"math500"`` or ``"aime"``; ``solution`` is the reference
    solution when the source has one; ``extra`` holds the rest (``level`` and ``subject``
    for MATH-500, ``year`` and ``dataset`` for AIME).
    """

    id: str
    question: str
    answer: str
    source: str
    solution: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Loading


def load_problems(name: str, n: int | None = None, seed: int = 0) -> list[Problem]:
    """The problems of ``name`` (``"gsm8k"`` or ``"math500"``), in the source's order.

    With ``n``, a random subset of ``n`` problems drawn with ``random.Random(seed)``,
    returned in the source's order (the same ``n`` and ``seed`` give the same subset).
    """
    if name not in DATA_FILES:
        raise MathDataError(
            f"unknown math data set {name!r}: choose one of {sorted(DATA_FILES)} "
            "(AIME: load_aime(2024) or load_aime(2025))"
        )
    check_n(n, "problems", MathDataError)
    return seeded_subset(_read_problems(name), n, seed, name, MathDataError, "problems")


def check_n(n, what: str, error: type[Exception] = ValueError) -> None:
    """``n`` must be None (everything) or a positive integer; else ``error`` says so."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise error(f"n must be a positive integer or None (all {what}), got {n!r}")


def seeded_subset(
    items: list, n: int | None, seed: int, name: str, error: type[Exception] = ValueError, what: str = "items"
) -> list:
    """All ``items`` (``n`` None), or ``n`` of them drawn with ``random.Random(seed)`` and returned in
    their original order (the same ``n`` and ``seed`` give the same subset); ``error`` when ``n`` is
    larger than the set."""
    if n is None:
        return items
    if n > len(items):
        raise error(f"asked for n={n} {what} but {name} has only {len(items)}")
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def _read_problems(name: str) -> list[Problem]:
    path = DATA_DIR / DATA_FILES[name]
    if not path.exists():
        raise MathDataError(
            f"{path} not found: the math data ship in a source checkout of vaxis; "
            "rebuild them with `python scripts/extract_math_data.py`"
        )
    problems = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
                problems.append(
                    Problem(
                        id=record.pop("id"),
                        question=record.pop("question"),
                        answer=record.pop("answer"),
                        source=record.pop("source"),
                        solution=record.pop("solution", None),
                        extra=record,
                    )
                )
            except (json.JSONDecodeError, KeyError) as err:
                raise MathDataError(f"{path.name} line {line_no}: bad record ({err!r})") from err
    return problems


def load_aime(year: int, dataset: str | None = None) -> list[Problem]:
    """The 30 AIME problems of ``year`` (2024 or 2025) from the Hugging Face hub (the paper's setting).

    Needs network access and the ``datasets`` library (``pip install datasets``), which
    vaxis does not depend on; ``dataset`` overrides the hub repository (default
    :data:`AIME_DATASETS`), which must have a ``train`` split with ``problem`` (or
    ``question``) and ``answer`` columns. Raises :class:`AimeUnavailableError` when
    ``datasets`` is missing, ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` is set, or the hub
    cannot be reached; offline, use ``load_problems("gsm8k")`` or ``load_problems("math500")``.
    """
    if dataset is None:
        if year not in AIME_DATASETS:
            raise MathDataError(f"no AIME data set known for {year}: choose one of {sorted(AIME_DATASETS)}")
        dataset = AIME_DATASETS[year]
    from ..core.hub import load_hub_dataset

    rows = list(
        load_hub_dataset(dataset, f"AIME {year}", AimeUnavailableError, _OFFLINE_HINT, lambda: _hub_reachable())
    )
    problems = []
    for i, row in enumerate(rows):
        question = row.get("problem") or row.get("question")
        if not question or row.get("answer") is None:
            raise MathDataError(f"{dataset} row {i}: expected 'problem' (or 'question') and 'answer' columns")
        problems.append(
            Problem(
                id=f"aime{year}:{i:02d}",
                question=str(question),
                answer=str(row["answer"]).strip(),
                source="aime",
                solution=row.get("solution") or None,
                extra={"year": year, "dataset": dataset, "dataset_id": row.get("id", row.get("problem_idx"))},
            )
        )
    return problems


# ---------------------------------------------------------------------------------------------
# Answer extraction

# A number as written in prose: optional sign (not after a word, digit or bracket, so "5-3"
# gives 5 and 3), thousands groups or plain digits, optional decimals ("18." is 18).
_NUMBER = r"(?:(?<![\w)\]}.])[-\u2212])?(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_HASHES_RE = re.compile(r"####\s*\\?\$?\s*(" + _NUMBER + ")")
_ANSWER_IS_RE = re.compile(r"answer[*\s]*(?:is|:)[\s:*$\\(]*(" + _NUMBER + ")", re.IGNORECASE)
_MINERVA_RE = re.compile(r"final answer is\s*\$(.+?)\$", re.IGNORECASE | re.DOTALL)
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``, braces balanced; also ``\\boxed 5``.

    ``None`` when there is no box, or the last one is never closed (a truncated output).
    Escaped braces ``\\{ \\}`` do not count.
    """
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return None
    k = matches[-1].end()
    if k < len(text) and text[k] != "{":
        token = re.match(r"\s+([^\s${}]+)", text[k:])  # "\boxed 5$": lm-eval accepts this form
        return token.group(1).rstrip(".") if token else None
    depth = 0
    j = k
    while j < len(text):
        char = text[j]
        if char == "\\":
            j += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[k + 1 : j]
        j += 1
    return None


def _clean_number(number: str) -> str:
    return number.replace(",", "").replace("\u2212", "-")


def extract_answer(text: str, source: str) -> str | None:
    """The final answer in a model's ``text``, or ``None`` when there is none.

    ``source`` picks the style: ``"gsm8k"`` extracts a number (boxed, then ``#### N``, then
    "the answer is N", then the last number; commas and ``$`` dropped); ``"math500"`` and
    ``"aime"`` extract the content of the last ``\\boxed{...}`` (see the module docstring).
    """
    style = ANSWER_STYLES.get(source)
    if style is None:
        raise ValueError(f"unknown answer source {source!r}: choose one of {sorted(ANSWER_STYLES)}")
    boxed = last_boxed(text)
    if style == "latex":
        if boxed is None:
            minerva = _MINERVA_RE.findall(text)
            boxed = minerva[-1] if minerva else None
        return boxed.strip() if boxed and boxed.strip() else None
    if boxed is not None:
        normalized = normalize_math(boxed)
        if _as_number(normalized) is not None:
            return normalized
        numbers = _NUMBER_RE.findall(boxed)
        if numbers:
            return _clean_number(numbers[-1])
    for pattern in (_HASHES_RE, _ANSWER_IS_RE):
        found = pattern.findall(text)
        if found:
            return _clean_number(found[-1])
    numbers = _NUMBER_RE.findall(text)
    return _clean_number(numbers[-1]) if numbers else None


# ---------------------------------------------------------------------------------------------
# Normalisation and comparison

_UNIT_RE = re.compile(r"^(.+?)\\(?:text|mbox|textrm|mathrm)\{[^{}]*\}(?:\^\{?\d\}?)?$")
_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textrm|mbox|mathrm)\{([^{}]*)\}")
_VAR_PREFIX_RE = re.compile(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?=")
_FRACTION_RE = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$")
_PLAIN_NUMBER_RE = re.compile(r"^-?(?:\d+(?:\.\d+)?|\d+/\d+)$")


def normalize_math(answer: str) -> str:
    """A light canonical form of a LaTeX answer, so that equal answers written differently compare equal.

    In order: drop ``\\$`` and surrounding ``$``, ``\\(...\\)`` or ``\\[...\\]``; drop
    ``\\left`` / ``\\right``, ``\\displaystyle``, spacing commands (``\\!``, ``\\,``, ``\\;``,
    ``\\:``, ``\\ ``) and all whitespace; drop degrees (``^\\circ``, ``^{\\circ}``, ``°``) and percent signs; drop a
    trailing unit ``\\text{...}`` / ``\\mbox{...}`` (``5\\text{ cm}^2`` -> ``5``), then unwrap
    the other ``\\text{X}`` to ``X``; ``\\dfrac`` / ``\\tfrac`` -> ``\\frac``, with braces added
    (``\\frac12`` -> ``\\frac{1}{2}``, ``\\sqrt2`` -> ``\\sqrt{2}``); drop thousands commas
    when the whole answer is one number (``10,080`` -> ``10080``; ``1,2`` stays a list); drop
    a ``x=`` style prefix of one variable; ``(C)`` -> ``C``; ``.5`` -> ``0.5``; drop a
    trailing ``.``. Deliberately not done: case folding, reordering, evaluating
    expressions (``\\frac{1}{2}`` vs ``0.5`` is left to :func:`is_correct`), or symbolic
    equivalence (no sympy).
    """
    s = answer.strip().replace("\\$", "").strip("$").strip()
    if s.startswith(("\\(", "\\[")) and s.endswith(("\\)", "\\]")):
        s = s[2:-2]
    s = re.sub(r"\\(?:left|right)(?:\.|(?![a-zA-Z]))", "", s)
    s = s.replace("\\displaystyle", "")
    s = re.sub(r"(?<!\\)\\[!,;: ]", "", s)
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"\^\{?\\circ\}?|°|\\degree", "", s)
    s = s.replace("\\%", "").replace("%", "")
    unit = _UNIT_RE.match(s)
    if unit:
        s = unit.group(1)
    previous = None
    while previous != s:
        previous, s = s, _WRAPPER_RE.sub(r"\1", s)
    s = re.sub(r"\\[dt]frac(?![a-zA-Z])", r"\\frac", s)
    s = re.sub(r"\\frac([0-9a-zA-Z])([0-9a-zA-Z])", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac([0-9a-zA-Z])\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\{([^{}]*)\}([0-9a-zA-Z])", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt([0-9a-zA-Z])", r"\\sqrt{\1}", s)
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    if s.count("=") == 1 and _VAR_PREFIX_RE.match(s):
        s = s.split("=", 1)[1]
    s = re.sub(r"^\(([A-Za-z])\)$", r"\1", s)
    s = re.sub(r"(?<![\d}])\.(\d)", r"0.\1", s)
    return s.rstrip(".")


def _as_number(s: str) -> Fraction | None:
    """The exact value of a normalised plain number (``-2``, ``0.5``, ``1/2``, ``\\frac{1}{2}``), else None."""
    s = s.replace("\u2212", "-")
    if _PLAIN_NUMBER_RE.match(s):
        try:
            return Fraction(s)
        except ZeroDivisionError:
            return None
    frac = _FRACTION_RE.match(s)
    if frac and int(frac.group(3)) != 0:
        value = Fraction(int(frac.group(2)), int(frac.group(3)))
        return -value if frac.group(1) else value
    return None


def is_correct(text: str, problem: Problem) -> bool | None:
    """Whether the final answer in ``text`` equals ``problem.answer``; ``None`` if no answer can be extracted.

    GSM8K compares numbers (``18.00`` == ``18``); MATH-500 and AIME compare
    :func:`normalize_math` forms, and values when both are plain numbers or fractions.
    """
    predicted = extract_answer(text, problem.source)
    if predicted is None:
        return None
    ours, gold = normalize_math(predicted), normalize_math(problem.answer)
    if ours == gold:
        return True
    ours_value, gold_value = _as_number(ours), _as_number(gold)
    return ours_value is not None and ours_value == gold_value


def _hub_reachable() -> bool:
    """:func:`vaxis.core.hub.hub_reachable`, looked up here so tests can stand in for the network."""
    from ..core.hub import hub_reachable

    return hub_reachable()
