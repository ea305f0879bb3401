"""Held-out evaluation of an axis and its controls (METHOD.md sections 3 and 7).

The task: tell *before* tokens from *after* tokens of games whose criteria were not used
to fit the axis, using the projection ``cos(h_t, v_L)`` as the score.

* :func:`auroc_by_layer`: token-level AUROC per layer (``sklearn.metrics.roc_auc_score``).
* :func:`bootstrap_auroc`: 95% CIs by resampling criteria with replacement, the fitted axis
  held fixed (so they cover which criteria were held out, not the fit itself); a criterion
  drawn twice counts its tokens twice, so criteria with more tokens weigh more.
* :func:`reference_sign_test`: the paper's number exactly as the reference code computes it:
  per criterion, ``(pooled mean h after - pooled mean h before) . v_hat > 0``, averaged.
* :func:`mean_level_metric`: a cosine variant of it (mean per-token cosines per criterion),
  kept under its own label because the two disagree at some layers.
* :func:`contrast`: mean after-projection minus mean before-projection, per item, for
  comparing the real contrast with the placebo contrast on failed attempts.
* :func:`stratified_auroc`: the AUROC inside strata of equal position (relative position in
  the rewrite, tokens to its end, tokens to the end of the turn), which asks what the
  projection knows beyond where a token sits in the answer.
* :func:`permutation_p`: the one-sided permutation p-value of a statistic against its null draws.

Inputs are flat arrays over tokens: ``scores (n_tokens, n_layers)``, ``labels`` (1 = after,
0 = before) and ``groups`` (criterion of each token's game).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata
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


def bootstrap_samples(
    scores: np.ndarray, labels: np.ndarray, groups: Sequence, n_boot: int = 200, seed: int = 0
) -> np.ndarray:
    """Token AUROCs per layer on ``n_boot`` resamples of *groups* (criteria) drawn with
    replacement: ``(n_kept, n_layers)``. A group drawn ``k`` times counts its tokens ``k`` times
    (sample weights); resamples with only one class are skipped. The scores (the fitted axis)
    are held fixed."""
    groups = np.asarray(groups)
    names, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    labels, scores = np.asarray(labels), np.asarray(scores)
    stats = []
    for _ in range(n_boot):
        draw = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names))
        weights = draw[inverse].astype(np.float64)
        keep = weights > 0
        if len(np.unique(labels[keep])) < 2:
            continue
        stats.append(auroc_by_layer(scores[keep], labels[keep], weights[keep]))
    return np.array(stats)


def bootstrap_auroc(
    scores: np.ndarray,
    labels: np.ndarray,
    groups: Sequence,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI of the token AUROC per layer from :func:`bootstrap_samples` (criteria
    resampled, axis fixed). Returns ``(low, high)``."""
    stats = bootstrap_samples(scores, labels, groups, n_boot, seed)
    alpha = (1 - level) / 2
    return np.quantile(stats, alpha, axis=0), np.quantile(stats, 1 - alpha, axis=0)


def reference_sign_test(
    after_sums: np.ndarray,
    after_counts: np.ndarray,
    before_sums: np.ndarray,
    before_counts: np.ndarray,
    groups: Sequence,
    axis: np.ndarray,
) -> np.ndarray:
    """The reference code's "held-out AUROC" (METHOD.md section 8), per layer.

    For each criterion ``c``: pool its conversations' tokens, ``a_c = sum(h after) / n_after``
    and ``b_c = sum(h before) / n_before``; project both on the unit axis ``v_hat``; the score
    is ``roc_auc_score([0, 1], [b_c . v_hat, a_c . v_hat])``: 1 if after projects higher, 0 if
    lower, 0.5 on a tie. The number is the mean over criteria: a sign test, not a token AUROC.

    Args:
        after_sums, before_sums: ``(n_items, n_layers, d)`` span sums; ``*_counts``: ``(n_items,)``.
        groups: criterion of each item.
        axis: ``(n_layers, d)`` (normalised here).

    Returns:
        ``(n_layers,)``.
    """
    groups = np.asarray(groups)
    unit = np.asarray(axis, dtype=np.float64)
    unit = unit / np.linalg.norm(unit, axis=-1, keepdims=True)
    wins = []
    for g in np.unique(groups):
        m = groups == g
        n_a, n_b = float(np.sum(after_counts[m])), float(np.sum(before_counts[m]))
        if n_a == 0 or n_b == 0:
            continue
        diff = np.asarray(after_sums[m], np.float64).sum(0) / n_a - np.asarray(before_sums[m], np.float64).sum(0) / n_b
        wins.append(0.5 * (1 + np.sign(np.einsum("ld,ld->l", diff, unit))))
    if not wins:
        raise ValueError("no criterion has both before and after tokens")
    return np.mean(wins, axis=0)


def mean_level_metric(scores: np.ndarray, labels: np.ndarray, groups: Sequence) -> np.ndarray:
    """Cosine variant of the reference metric, per layer: fraction of groups (criteria) whose mean
    per-token cosine on after tokens exceeds that on before tokens: ``(n_layers,)``. Not the
    reference's statistic (see :func:`reference_sign_test`): averaging cosines weighs tokens by
    ``1/|h_t|`` and the two disagree at some layers."""
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


def auroc_columns(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unweighted AUROC of every column of ``scores`` (``(n, ...)``) at once, by the Mann-Whitney
    rank formula (ties count one half, as in ``roc_auc_score``): shape ``scores.shape[1:]``."""
    x = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("AUROC needs both before (0) and after (1) tokens")
    ranks = rankdata(x.reshape(len(x), -1), axis=0)
    return ((ranks[y].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)).reshape(x.shape[1:])


def position_strata(position: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """Stratum of each token: its bin among ``n_bins`` equal bins of relative position in [0, 1]."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.digitize(np.asarray(position, dtype=np.float64), edges[1:-1]), 0, n_bins - 1)


def stratified_auroc(
    scores: np.ndarray, labels: np.ndarray, strata: np.ndarray, min_per_class: int = 10
) -> tuple[np.ndarray, float]:
    """AUROC with a covariate held fixed (METHOD.md section 7): the AUROC inside every stratum
    that holds at least ``min_per_class`` before *and* after tokens, averaged with weights equal
    to the strata's token counts.

    Matching is only as fine as the strata: inside a bin of relative position, after tokens
    still sit slightly later than before tokens, so the covariate itself scores above 0.5 there.
    Compare a score's stratified AUROC with the covariate's own (its measured baseline), never
    with 0.5. Exact strata (e.g. an integer count of tokens to the end) leave the covariate at
    exactly 0.5.

    Args:
        scores: ``(n_tokens, ...)``; every trailing column is scored.
        strata: ``(n_tokens,)`` stratum labels (e.g. :func:`position_strata`, or token counts).

    Returns:
        ``(auroc, coverage)``: the weighted mean AUROC, shape ``scores.shape[1:]`` (NaN when no
        stratum qualifies), and the fraction of tokens in qualifying strata.
    """
    x = np.asarray(scores, dtype=np.float64)
    labels, strata = np.asarray(labels), np.asarray(strata)
    total, weight = np.zeros(x.shape[1:]), 0
    for s in np.unique(strata):
        m = strata == s
        n_after = int((labels[m] == 1).sum())
        if min(n_after, int(m.sum()) - n_after) < min_per_class:
            continue
        total = total + m.sum() * auroc_columns(x[m], labels[m])
        weight += int(m.sum())
    if not weight:
        return np.full(x.shape[1:], np.nan), 0.0
    return total / weight, weight / len(x)


def permutation_p(real: float | np.ndarray, null: np.ndarray) -> float | np.ndarray:
    """One-sided permutation p-value ``(1 + #{null >= real}) / (1 + n_null)`` (the real value
    counts as one draw, so p is never 0), along the first axis of ``null``."""
    null = np.asarray(null, dtype=np.float64)
    return (1 + (null >= np.asarray(real)).sum(0)) / (1 + len(null))


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


def incremental_auroc(
    base: np.ndarray, extra: np.ndarray, labels: np.ndarray, groups: Sequence, n_folds: int = 5
) -> tuple[float, np.ndarray]:
    """What scores add beyond covariates: out-of-fold AUROC of a logistic regression on ``base``
    (``(n, p)``, e.g. the position covariates) and of ``base`` plus each column of ``extra``
    (``(n, m)``, e.g. the axis and random directions, one at a time), with folds that hold out
    whole groups (criteria), so a score that only re-encodes position adds nothing.

    Returns:
        ``(base_auroc, full_auroc)`` with ``full_auroc`` of shape ``(m,)``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    base = np.asarray(base, dtype=np.float64).reshape(len(labels), -1)
    extra = np.asarray(extra, dtype=np.float64).reshape(len(labels), -1)
    labels, groups = np.asarray(labels), np.asarray(groups)
    folds = list(GroupKFold(n_splits=min(n_folds, len(np.unique(groups)))).split(base, labels, groups))

    def oof(x):
        pred = np.zeros(len(labels))
        for train, test in folds:
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
            pred[test] = clf.fit(x[train], labels[train]).predict_proba(x[test])[:, 1]
        return roc_auc_score(labels, pred)

    return oof(base), np.array([oof(np.c_[base, extra[:, j]]) for j in range(extra.shape[1])])


def mean_ci(values, n_boot: int = 200, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` (NaN left out) with a percentile bootstrap CI (``scipy.stats.bootstrap``):
    ``(mean, low, high)``; the CI is NaN with fewer than 2 values and collapses to the mean when every
    value is the same (a rate of 0 or 1)."""
    from scipy.stats import bootstrap

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return (np.nan, np.nan, np.nan)
    mean = float(x.mean())
    if len(x) < 2 or n_boot < 1:
        return (mean, np.nan, np.nan)
    if np.all(x == x[0]):
        return (mean, mean, mean)
    res = bootstrap((x,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                    rng=np.random.default_rng(seed))  # fmt: skip
    return (mean, float(res.confidence_interval.low), float(res.confidence_interval.high))
