"""Summary statistics of a set of ICRL games, as plain dicts and lists (no pandas).

:func:`summary_stats` is what notebook 01 prints: games per criterion and split,
discovery positions, paragraphs and attempts per game, edit operators, the
reward word's relative position in the target rewrite (a histogram that should be
spread, not piled up at the end), and, given a tokenizer, tokens before/after and
exclusions.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .gamefile import Game

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def histogram(values: Sequence[float], bins: int = 10, lo: float = 0.0, hi: float = 1.0) -> dict:
    """Counts of ``values`` in ``bins`` equal bins over ``[lo, hi]`` (the last bin is closed).

    Returns:
        ``{"edges": [lo, ..., hi], "counts": [...]}``.
    """
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        k = min(bins - 1, max(0, int((v - lo) / width)))
        counts[k] += 1
    return {"edges": [round(lo + i * width, 6) for i in range(bins + 1)], "counts": counts}


def describe(values: Sequence[float]) -> dict:
    """``{"n", "min", "median", "mean", "max"}`` of ``values`` (``None`` entries when empty)."""
    if not values:
        return {"n": 0, "min": None, "median": None, "mean": None, "max": None}
    return {
        "n": len(values),
        "min": min(values),
        "median": statistics.median(values),
        "mean": round(statistics.fmean(values), 4),
        "max": max(values),
    }


def reward_relative_positions(games: Iterable[Game]) -> list[float]:
    """For each game, where the first reward occurrence starts in the target rewrite, as a
    fraction of the rewrite's length in characters (0 = start, 1 = end)."""
    out = []
    for g in games:
        a = g.target
        length = a.rewrite_span[1] - a.rewrite_span[0]
        out.append(a.reward_spans[0][0] / length)
    return out


def summary_stats(
    games: Sequence[Game], tokenizer: PreTrainedTokenizerBase | None = None, bins: int = 10, **template_kwargs
) -> dict:
    """Statistics of ``games`` for reports and notebook 01.

    Args:
        games: the games.
        tokenizer: optional fast tokenizer with a chat template; adds token counts of the
            before/after spans, the token-level relative position of the reward, and the
            exclusions of :func:`~vaxis.data.icrl.spans.target_spans_many`.
        bins: histogram bins for relative positions.
        template_kwargs: passed to the chat template.

    Returns:
        A dict of plain values: ``n_games``, ``by_split``, ``games_per_criterion``,
        ``criteria_per_split``, ``discovery_paragraph`` (1-based: 2..6), ``paragraphs_per_game``,
        ``attempts_per_paragraph``, ``failed_attempts``, ``target_operators``,
        ``reward_relative_position`` (``describe`` + ``histogram``, characters), and with a
        tokenizer ``tokens_before``, ``tokens_after``, ``reward_relative_position_tokens``,
        ``kept``, ``excluded``, ``exclusion_reasons``.
    """
    games = list(games)
    crit_split = {g.criterion: g.split for g in games}
    attempts_per_par = Counter()
    for g in games:
        per = Counter(a.paragraph_index for a in g.attempts)
        attempts_per_par.update(per.values())
    rel = reward_relative_positions(games)
    stats = {
        "n_games": len(games),
        "by_split": dict(sorted(Counter(g.split for g in games).items())),
        "games_per_criterion": dict(sorted(Counter(g.criterion for g in games).items())),
        "criteria_per_split": dict(sorted(Counter(crit_split.values()).items())),
        "by_kind": dict(sorted(Counter(g.criterion_kind for g in games).items())),
        "discovery_paragraph": dict(sorted(Counter(g.discovery_index + 1 for g in games).items())),
        "paragraphs_per_game": dict(sorted(Counter(len(g.paragraphs) for g in games).items())),
        "attempts_per_paragraph": dict(sorted(attempts_per_par.items())),
        "failed_attempts": sum(len(g.failed_attempts) for g in games),
        "target_operators": dict(sorted(Counter(g.target.operator for g in games).items())),
        "reward_relative_position": {**describe([round(r, 4) for r in rel]), **histogram(rel, bins)},
    }
    if tokenizer is not None:
        from .spans import target_spans_many

        kept, excluded = target_spans_many(games, tokenizer, **template_kwargs)
        stats["kept"] = len(kept)
        stats["excluded"] = len(excluded)
        stats["exclusion_reasons"] = dict(sorted(Counter(e["reason"] for e in excluded).items()))
        stats["tokens_before"] = describe([len(t.before) for t in kept])
        stats["tokens_after"] = describe([len(t.after) for t in kept])
        tok_rel = [t.relative_position for t in kept]
        stats["reward_relative_position_tokens"] = {
            **describe([round(r, 4) for r in tok_rel]),
            **histogram(tok_rel, bins),
        }
    return stats


def format_histogram(hist: dict, width: int = 40) -> str:
    """A text bar chart of a :func:`histogram` result, one line per bin."""
    counts, edges = hist["counts"], hist["edges"]
    top = max(counts) or 1
    lines = []
    for i, c in enumerate(counts):
        bar = "#" * round(width * c / top)
        lines.append(f"[{edges[i]:.1f}, {edges[i + 1]:.1f}) {c:5d} {bar}")
    return "\n".join(lines)
