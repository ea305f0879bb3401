"""Notebook 04's yes/no answers: the parsers (the authors' and the strict one), per-chat counts and rates, and the
model's own length-free confidence from the logits. The authors' recipe (METHOD.md section 8; their
``parse_yes_no`` and steering script) is the default: yes/no looked for in the first 50 characters, at most 20 new
tokens under steering and 5 for sampled confidence, temperature 0.7, top-p 0.9 in the steering sweeps (their
sampled confidence keeps vLLM's default top-p, 1)."""

from __future__ import annotations

import re
import warnings

import numpy as np

_YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)
_ANY_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
ANSWER_WINDOW = 50
STEER_ANSWER_TOKENS = 20
CONFIDENCE_ANSWER_TOKENS = 5
TEMPERATURE = 0.7
STEER_TOP_P = 0.9


def parse_yes_no(text: str, strict: bool = False) -> str | None:
    """``"yes"`` / ``"no"``: the word the answer starts with (case-insensitive, after any punctuation or space),
    else (the authors' parser, the default) the first whole word yes or no within the first
    :data:`ANSWER_WINDOW` characters; ``strict=True`` keeps only the first rule. ``None`` otherwise: an
    unparseable answer is invalid, never a "No". (The authors' ``startswith`` would also read "Not sure" as No
    and "Yesterday" as Yes; here both must be whole words.)"""
    m = _YES_NO.match(text)
    if m or strict:
        return m.group(1).lower() if m else None
    m = _ANY_YES_NO.search(text.strip()[:ANSWER_WINDOW])
    return m.group(1).lower() if m else None


def count_answers(gens, n_chats: int, strict: bool = False) -> dict:
    """Per chat ``yes``, ``no``, ``invalid`` counts of parsed answers and ``rate`` = yes / (yes + no) (NaN
    when none parses: an unparseable answer is left out, never a "No")."""
    counts = np.zeros((n_chats, 3))
    for g in gens:
        counts[g.conversation, {"yes": 0, "no": 1, None: 2}[parse_yes_no(g.text, strict)]] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = counts[:, 0] / (counts[:, 0] + counts[:, 1])
    return {"yes": counts[:, 0], "no": counts[:, 1], "invalid": counts[:, 2], "rate": rate}


def answer_rates(gens, n_chats: int, strict: bool = False) -> dict:
    """Yes-rates of sampled answers ``gens`` over ``n_chats`` chats: ``per_chat`` (each chat's yes / (yes + no),
    NaN when none parses), ``yes_rate`` their mean (the authors average per completion), ``valid`` the parseable
    fraction of all answers, ``n`` the answers."""
    c = count_answers(gens, n_chats, strict)
    n = len(gens)
    with warnings.catch_warnings():  # no chat with a parseable answer: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = float(np.nanmean(c["rate"])) if n else float("nan")
    return {"yes_rate": mean, "valid": float((n - c["invalid"].sum()) / n) if n else 0.0, "n": n, "per_chat": c["rate"]}


def logit_confidence(readout) -> np.ndarray:
    """The model's own length-free confidence ``P(Yes) / (P(Yes) + P(No))`` at the answer position."""
    yes, no = readout.logprobs["yes"].numpy(), readout.logprobs["no"].numpy()
    return 1.0 / (1.0 + np.exp(no - yes))
