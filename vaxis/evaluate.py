"""Held-out evaluation of an axis and its controls (METHOD.md sections 3 and 7).

The task: tell *before* tokens from *after* tokens of games whose criteria were not used
to fit the axis, using the projection ``cos(h_t, v_L)`` as the score.

* :func:`auroc_by_layer`: token-level AUROC per layer (``sklearn.metrics.roc_auc_score``).
* :func:`bootstrap_auroc`: 95% CIs by resampling criteria with replacement.
* :func:`mean_level_metric`: the paper-style number (what the reference code computes):
  the fraction of criteria whose mean after-projection exceeds their mean before-projection.
* :func:`contrast`: mean after-projection minus mean before-projection, per item, for
  comparing the real contrast with the placebo contrast on failed attempts.
* :func:`position_matched_auroc`: the AUROC inside bins of equal relative position, which
  asks what the projection knows beyond where a token sits in the answer.

Inputs are flat arrays over tokens: ``scores (n_tokens, n_layers)``, ``labels`` (1 = after,
0 = before) and ``groups`` (criterion of each token's game).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def auroc_by_layer(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Token-level AUROC of ``scores[:, l]`` for ``labels`` at every layer: ``(n_layers,)``."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim == 1:
        scores = scores[:, None]
    if len(np.unique(labels)) != 2:
        raise ValueError("AUROC needs both before (0) and after (1) tokens")
    return np.array([roc_auc_score(labels, scores[:, j], sample_weight=weights) for j in range(scores.shape[1])])


def bootstrap_auroc(
    scores: np.ndarray,
    labels: np.ndarray,
    groups: Sequence,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI of the token AUROC per layer, resampling *groups* (criteria) with
    replacement (a criterion drawn twice counts its tokens twice). Returns ``(low, high)``."""
    groups = np.asarray(groups)
    names, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        draw = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))
        weights = draw[inverse].astype(np.float64)
        keep = weights > 0
        if len(np.unique(np.asarray(labels)[keep])) < 2:
            continue
        stats.append(auroc_by_layer(np.asarray(scores)[keep], np.asarray(labels)[keep], weights[keep]))
    stats = np.array(stats)
    alpha = (1 - level) / 2
    return np.quantile(stats, alpha, axis=0), np.quantile(stats, 1 - alpha, axis=0)


def mean_level_metric(scores: np.ndarray, labels: np.ndarray, groups: Sequence) -> np.ndarray:
    """Paper-style metric per layer: fraction of groups (criteria) whose mean after-token
    projection exceeds their mean before-token projection: ``(n_layers,)``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    labels, groups = np.asarray(labels), np.asarray(groups)
    wins = []
    for g in np.unique(groups):
        m = groups == g
        after, before = scores[m & (labels == 1)], scores[m & (labels == 0)]
        if len(after) and len(before):
            wins.append(after.mean(0) > before.mean(0))
    if not wins:
        raise ValueError("no group has both before and after tokens")
    return np.mean(wins, axis=0)


def contrast(after: Sequence[np.ndarray], before: Sequence[np.ndarray]) -> np.ndarray:
    """Per item, ``mean(after projections) - mean(before projections)``: ``(n_items, n_layers)``.

    ``after[i]`` and ``before[i]`` are ``(n_tokens_i, n_layers)`` arrays; items with an
    empty side are skipped.
    """
    rows = [a.mean(0) - b.mean(0) for a, b in zip(after, before) if len(a) and len(b)]
    if not rows:
        raise ValueError("no item has both before and after tokens")
    return np.stack(rows)


def position_matched_auroc(
    scores: np.ndarray, labels: np.ndarray, position: np.ndarray, n_bins: int = 10, min_per_class: int = 20
) -> np.ndarray:
    """AUROC with position held fixed (METHOD.md section 7): tokens are binned by their relative
    position in the rewrite, the AUROC is computed inside every bin that holds at least
    ``min_per_class`` before *and* after tokens, and the bins are averaged weighted by their
    token counts. Position alone scores 0.5 here (up to within-bin spread), so what remains is
    what the projection knows beyond where the token sits. NaN when no bin qualifies.
    Returns ``(n_layers,)``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    labels, position = np.asarray(labels), np.asarray(position, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(position, edges[1:-1]), 0, n_bins - 1)
    total, weight = np.zeros(scores.shape[1]), 0
    for b in range(n_bins):
        m = which == b
        n_after, n_before = int((labels[m] == 1).sum()), int((labels[m] == 0).sum())
        if min(n_after, n_before) < min_per_class:
            continue
        total += m.sum() * auroc_by_layer(scores[m], labels[m])
        weight += m.sum()
    return total / weight if weight else np.full(scores.shape[1], np.nan)


def choose_main_layer(auroc_table: np.ndarray, layers: Sequence[int]) -> int:
    """The layer with the highest AUROC in ``auroc_table`` (``(n_layers,)`` or
    ``(n_repeats, n_layers)``, averaged over repeats). Pass a table computed *without*
    held-out criteria (the construction split analysis) so the choice is not tuned on them."""
    table = np.asarray(auroc_table, dtype=np.float64)
    if table.ndim == 2:
        table = np.nanmean(table, axis=0)
    if len(table) != len(layers):
        raise ValueError(f"{len(table)} AUROC values for {len(layers)} layers")
    return int(list(layers)[int(np.nanargmax(table))])


def criterion_splits(criteria: Sequence[str], n_splits: int, n_test: int, seed: int) -> list[tuple[list, list]]:
    """``n_splits`` random (train, test) partitions of ``criteria`` with ``n_test`` test criteria."""
    names = sorted(set(criteria))
    if not 0 < n_test < len(names):
        raise ValueError(f"cannot hold out {n_test} of {len(names)} criteria")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_splits):
        perm = rng.permutation(len(names))
        test = sorted(names[i] for i in perm[:n_test])
        out.append((sorted(set(names) - set(test)), test))
    return out
