"""Prefill conflicts (METHOD.md section 7, critique a): building blocks for notebook 10.

A low-value prefill about to end against a high-value prefill with much left to write, read on identical tail
tokens (:func:`prefill_conflicts` from ICRL games, :func:`prefill_conflicts_from_prefills` from given prefills,
e.g. notebook 04's math rollouts); :func:`conflict_projections` reads them on the axes and random directions in one
pass; :func:`conflict_table` counts the pairs where the low one projects higher, beside the random directions, and
:func:`conflict_shares` gives that share for every direction read (the verdict table's null draws).

Demo cost (SmolLM2-135M, 2 CPU cores): 16 game pairs and 8 math pairs, a few tens of thousands of tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PrefillPair:
    """One conflict pair: ``low`` / ``high`` are chats whose last message is the assistant prefill; both
    prefills end with ``tail``, whose token ids (``tail_ids``) are identical in the two rendered chats.
    ``words_left``: words of the original turn after each cut, ``(low, high)``; ``None`` when unknown."""

    key: str
    low: list
    high: list
    tail: str
    tail_ids: tuple
    words_left: tuple


def _tail_ids(chat: list, tokenizer, tail: str) -> tuple | None:
    """Token ids of the last ``len(tail)`` characters of ``chat``'s last message, or ``None`` when its
    tokens do not cover exactly those characters (a token shared with the text before the tail)."""
    from ..core.chat import render_chat
    from ..core.spans import tokens_in_spans

    rendered = render_chat(tokenizer, chat)
    enc = tokenizer(rendered.text, return_offsets_mapping=True, add_special_tokens=False)
    end, offsets = rendered.message_spans[-1][1], enc["offset_mapping"]
    toks = tokens_in_spans(rendered.text, offsets, {"tail": [(end - len(tail), end)]})["tail"]
    if not toks or rendered.text[offsets[toks[0]][0] : offsets[toks[-1]][1]] != tail:
        return None
    return tuple(enc["input_ids"][t] for t in toks)


def _pair(key, low, high, tail, tokenizer, words_left, skipped) -> PrefillPair | None:
    ids = [_tail_ids(chat, tokenizer, tail) for chat in (low, high)]
    if ids[0] is None or ids[0] != ids[1]:
        skipped.append({"key": key, "reason": "tail_tokens_differ", "tail": tail})
        return None
    return PrefillPair(key, low, high, tail, ids[0], words_left)


def prefill_conflicts(games, tokenizer, *, tail_words: int = 4, high_cut: float = 0.25,
                      tail: str | None = None) -> tuple[list[PrefillPair], list[dict]]:  # fmt: skip
    """Conflict pairs from ICRL games, one per game, in its own context each:

    * low value, about to end: the game's LAST failed pre-discovery attempt (phase ``explore``), the chat
      up to and including that assistant turn, which is complete (0 words left);
    * high value, much left to write: the target (first post-discovery success), its chat up to that
      turn, the turn cut after the first ``max(1, floor(high_cut * n))`` of its rewrite's ``n`` words;
    * the tail: with ``tail=None``, the low turn's own last ``tail_words`` words with the whitespace
      before them, appended verbatim to the high cut (so the low prefill is natural text); with a
      string (start it with a space), it is appended to both (the low turn then ends with it).

    The high chat contains the low turn earlier (it is the same game), so the tail's words appear in its
    context once. A game is skipped and listed (``{"key", "reason"}``) when it has no failed
    pre-discovery attempt, a rewrite is too short for the cut, or the tail's tokens differ between the
    two rendered chats. Returns ``(pairs, skipped)``.
    """
    if tail_words < 1 or not 0 < high_cut < 1:
        raise ValueError(f"tail_words={tail_words} must be >= 1 and high_cut={high_cut} in (0, 1)")
    if tail is not None and not tail.strip():
        raise ValueError("tail is empty: give the text appended to both prefills, e.g. ' and so on.'")
    pairs, skipped = [], []
    for g in games:
        explore = [i for i, a in enumerate(g.attempts) if a.phase == "explore" and not a.success]
        if not explore:
            skipped.append({"key": g.game_id, "reason": "no_failed_pre_discovery_attempt"})
            continue
        low_a, high_a = g.attempts[explore[-1]], g.target
        low, high = g.chat(low_a.message_index), g.chat(high_a.message_index)
        low_words, high_words = (list(re.finditer(r"\S+", g.rewrite(i))) for i in (explore[-1], g.target_attempt))
        k = max(1, int(high_cut * len(high_words)))
        if (tail is None and len(low_words) <= tail_words) or k >= len(high_words):
            skipped.append({"key": g.game_id, "reason": "rewrite_too_short"})
            continue
        content = low[-1]["content"][: low_a.rewrite_span[1]]
        the_tail = content[low_a.rewrite_span[0] + low_words[-tail_words].start() - 1 :] if tail is None else tail
        low[-1]["content"] = content if tail is None else content + tail
        high[-1]["content"] = high[-1]["content"][: high_a.rewrite_span[0] + high_words[k - 1].end()] + the_tail
        pair = _pair(g.game_id, low, high, the_tail, tokenizer, (0, len(high_words) - k), skipped)
        if pair is not None:
            pairs.append(pair)
    return pairs, skipped


def prefill_conflicts_from_prefills(triples, tokenizer, tail: str) -> tuple[list[PrefillPair], list[dict]]:
    """Conflict pairs from given ``(chat, prefill_low, prefill_high)`` triples (e.g. notebook 04's math
    rollouts: a wrong one cut near its end, a correct one cut early): each prefill + ``tail`` becomes the
    assistant message after ``chat``. Keys are the triples' indices; skipped as in :func:`prefill_conflicts`."""
    if not tail or not tail.strip():
        raise ValueError("tail is empty: give the text appended to both prefills, e.g. ' and so on.'")
    pairs, skipped = [], []
    for j, (chat, low, high) in enumerate(triples):
        turn = [{"role": m["role"], "content": m["content"]} for m in chat]
        low_chat, high_chat = ([*turn, {"role": "assistant", "content": text + tail}] for text in (low, high))
        pair = _pair(str(j), low_chat, high_chat, tail, tokenizer, (None, None), skipped)
        if pair is not None:
            pairs.append(pair)
    return pairs, skipped


@dataclass
class Conflicts:
    """Mean projection (``cos(h_t, u)``) over each prefill's tail tokens: ``low`` / ``high`` are
    ``(n_pairs, n_layers, K)``, the columns those of the directions given (column 0 the axis, then the
    random directions of :func:`vaxis.experiments.coding.probe_directions`); ``tail_tokens``: ``(n_pairs,)``."""

    layers: list[int]
    keys: list[str]
    low: np.ndarray
    high: np.ndarray
    tail_tokens: np.ndarray


def conflict_projections(model, tokenizer, pairs: Sequence[PrefillPair], directions: dict,
                         **extract_kwargs) -> Conflicts:  # fmt: skip
    """Read :class:`Conflicts` in one :func:`vaxis.core.extract.extract` pass (the forward pass stops at the
    tail's last token, so the end-of-turn marker the template adds is never read). ``directions``:
    ``{layer: (K, d)}``, e.g. ``probe_directions(axis, n_random, seed)``."""
    from ..core.extract import extract

    if not pairs:
        raise ValueError("no prefill pairs: every candidate was skipped (see the skipped list) or none was given")
    chats = [p.low for p in pairs] + [p.high for p in pairs]
    spans = [{"tail": [(len(c) - 1, len(c[-1]["content"]) - len(p.tail), len(c[-1]["content"]))]}
             for c, p in zip(chats, list(pairs) * 2)]  # fmt: skip
    stats = extract(model, tokenizer, chats, spans, layers=sorted(directions), directions=directions, **extract_kwargs)
    means = np.stack([p.numpy().mean(0) for p in stats.projections["tail"]])
    n, counts = len(pairs), stats.counts["tail"].numpy()
    return Conflicts(list(stats.layers), [p.key for p in pairs], means[:n], means[n:], counts[:n])


def conflict_table(conflicts: Conflicts, n_boot: int = 200, seed: int = 0, tie_tol: float = 1e-6):
    """Per layer (a pandas DataFrame): ``low_higher``, the pairs where the low-value prefill projects
    higher on the axis (column 0) by more than ``tie_tol`` (identical tail tokens give identical layer-0
    activations, equal up to batch rounding: ``ties``), its ``share`` with a bootstrap 95 % CI over pairs,
    the two-sided sign test ``p_sign`` (binomial, p = 0.5, ties counted as not higher), the mean
    ``low - high``, and the same count for the random directions (median, 95th percentile) with
    ``p_random``, the permutation p-value of the axis's count among theirs."""
    import pandas as pd
    from scipy.stats import binomtest

    from ..core.evaluate import mean_ci, permutation_p

    diff = conflicts.low - conflicts.high
    wins, n = diff > tie_tol, len(diff)
    counts = wins.sum(0)
    rows = []
    for li, layer in enumerate(conflicts.layers):
        share, low, high = mean_ci(wins[:, li, 0].astype(float), n_boot, seed)
        rand = counts[li, 1:]
        rows.append({"layer": layer, "n_pairs": n, "low_higher": int(counts[li, 0]),
                     "ties": int((np.abs(diff[:, li, 0]) <= tie_tol).sum()), "share": share, "share_low": low,
                     "share_high": high, "p_sign": binomtest(int(counts[li, 0]), n, 0.5).pvalue,
                     "mean_low_minus_high": float(diff[:, li, 0].mean()),
                     "random_median": float(np.median(rand)) if len(rand) else np.nan,
                     "random_q95": float(np.quantile(rand, 0.95)) if len(rand) else np.nan,
                     "p_random": float(permutation_p(counts[li, 0], rand)) if len(rand) else np.nan})  # fmt: skip
    return pd.DataFrame(rows)


def conflict_shares(conflicts: Conflicts, li: int = 0, tie_tol: float = 1e-6) -> np.ndarray:
    """Share of the pairs where the low-value prefill projects higher than the high-value one by more than
    ``tie_tol`` at layer index ``li``, for every direction read (column): ``(K,)`` (the count of
    :func:`conflict_table`, over the pairs, for the axes and the random directions alike)."""
    return ((conflicts.low[:, li] - conflicts.high[:, li]) > tie_tol).mean(0)
