"""Null controls that can fail a claim: the shared statistics every notebook's verdict uses.

A claim of the paper has a *side* (``+1``: the value axis's number should be high, ``-1``: low). It is judged
against draws of the same statistic from a null (random directions read in the same pass, label permutations,
sign flips of paired differences) on *that* side, fixed by the claim, never by the observed number, so an effect
opposite to the paper's counts as failing, not as clearing the null.

* :func:`claim_p`: one-sided p-value of a value against null draws, on the claim's side.
* :func:`beyond`: whether a value lies beyond the null's ``level`` quantile on the claim's side.
* :func:`null_range`: median and central 95% range of the null draws, for tables.
* :func:`sign_flip_p`: paired permutation test (random sign flips of per-unit differences; exact when small).
* :func:`paired_d`: the paired effect size ``d_z = mean(diff) / sd(diff)``.
* :func:`group_resamples`: bootstrap resamples of whole units (problems, games, pairs), as index arrays.

With ``n`` null draws the smallest attainable p is ``1 / (n + 1)``; :func:`min_draws` says how many draws a
test at ``alpha`` needs, so a profile cannot ask a verdict of fewer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def _side(sign: int) -> int:
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 (the claim says high) or -1 (low), not {sign!r}")
    return sign


def _finite(null) -> np.ndarray:
    x = np.asarray(null, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def min_draws(alpha: float = 0.05) -> int:
    """The fewest null draws for which a one-sided test can reach ``p <= alpha`` (``1/(n+1) <= alpha``)."""
    return int(np.ceil(1 / alpha - 1))


def claim_p(value: float, null, sign: int = 1) -> float:
    """One-sided p-value of ``value`` against the ``null`` draws on the claim's side: ``(1 + #{null at or
    beyond value}) / (1 + n)``, the value counting as one draw (never 0). NaN without a finite value or draws."""
    s = _side(sign)
    x = _finite(null)
    if not np.isfinite(value) or len(x) == 0:
        return float("nan")
    return float((1 + (s * x >= s * value).sum()) / (1 + len(x)))


def beyond(value: float, null, sign: int = 1, level: float = 0.95) -> bool | None:
    """Whether ``value`` lies strictly beyond the null's ``level`` quantile on the claim's side (the upper
    quantile for ``sign=+1``, the lower for ``-1``). None without a finite value or draws."""
    s = _side(sign)
    x = _finite(null)
    if not np.isfinite(value) or len(x) == 0:
        return None
    q = np.quantile(x, level if s > 0 else 1 - level)
    return bool(value > q) if s > 0 else bool(value < q)


def null_range(null, level: float = 0.95) -> tuple[float, float, float]:
    """``(median, low, high)`` of the null draws, ``low``/``high`` the central ``level`` quantiles."""
    x = _finite(null)
    if len(x) == 0:
        return (float("nan"),) * 3
    a = (1 - level) / 2
    return (float(np.median(x)), float(np.quantile(x, a)), float(np.quantile(x, 1 - a)))


def sign_flip_p(diffs, sign: int = 1, n_perm: int = 10000, seed: int = 0) -> float:
    """Paired permutation test of per-unit differences (treated minus control, one per problem): under the
    null each difference is as likely negative as positive. One-sided on the claim's side, statistic the mean;
    exact (all ``2^n`` sign patterns) when ``2^n <= n_perm``, else ``n_perm`` random patterns plus the
    observed one."""
    s = _side(sign)
    d = _finite(diffs)
    if len(d) == 0:
        return float("nan")
    real = s * d.mean()
    if 2 ** len(d) <= n_perm:
        signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
        null = s * (signs * d).mean(1)
        return float((null >= real - 1e-12).mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice((-1.0, 1.0), size=(n_perm, len(d)))
    null = s * (signs * d).mean(1)
    return float((1 + (null >= real - 1e-12).sum()) / (1 + n_perm))


def paired_d(a, b) -> float:
    """Paired effect size ``d_z``: the mean of ``a - b`` over its standard deviation (pairs with a NaN left
    out; NaN with fewer than 2 pairs or no spread)."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return float("nan")
    sd = d.std(ddof=1)
    return float(d.mean() / sd) if sd > 0 else float("nan")


def group_resamples(groups: Sequence, n_boot: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``n_boot`` bootstrap resamples that draw whole groups with replacement: each yields the indices of
    the rows of the drawn groups (a group drawn twice appears twice), so rows of one unit (the Yes and No of
    one problem, a game's tokens, a correct/corrupted pair) are never split."""
    groups = np.asarray(groups)
    names, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield np.concatenate([members[g] for g in rng.integers(0, len(names), len(names))])
