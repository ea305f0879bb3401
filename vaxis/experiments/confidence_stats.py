"""Notebook 04's statistics, each read against a null that can fail it (beside :mod:`.confidence`, which runs the
model). The side of every claim is fixed by the paper (:data:`SIDE`), never by the observed number.

* :func:`framing_flip`: the flip between framings as the difference of the raw Yes-minus-No projection gaps
  ("correct?" gap minus "incorrect?" gap), per problem, with a bootstrap over problems (a problem's Yes and No,
  in both framings, travel together) and the random directions read in the same pass as its null.
* :func:`log_odds_effects`: steering effects on ``log P(Yes) - log P(No)`` against random directions of the same
  norm; the headline contrast (+s minus -s) is odd in the direction, so each random direction ``r`` read at +-s
  also gives the draw of ``-r``: ``n`` directions make ``2n`` exact null draws.
* :func:`yes_rate_effects`: steering effects on sampled yes-rates with a per-problem sign-flip test (generation is
  too dear for 20 generated random directions): it asks whether steering along the axis moves the yes-rate at
  all, not whether the axis moves it more than a random direction would.
* :func:`spearman_ci`, :func:`binary_auroc_ci`: correlation and AUROC with bootstrap CIs.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..core.evaluate import auroc_columns, mean_ci
from ..core.nulls import claim_p, min_draws, null_range, sign_flip_p

#: The paper's side per framing: "correct?" Yes rises with positive steering (and Yes projects higher than No);
#: "incorrect?" the opposite.
SIDE = {"correct": 1, "incorrect": -1}


def per_group_mean(values: np.ndarray, groups) -> np.ndarray:
    """Mean of ``values`` ``(n, ...)`` over the rows of each group (NaN left out), in sorted group order."""
    values, groups = np.asarray(values, dtype=float), np.asarray(groups)
    with warnings.catch_warnings():  # a group without a finite value stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.array([np.nanmean(values[groups == g], axis=0) for g in np.unique(groups)])


def framing_flip(ver, layer_index: int, n_boot: int = 200, seed: int = 0) -> dict:
    """The flip of :class:`~.confidence.Verbalized` at one layer: per problem ``(yes - no)["correct?"] -
    (yes - no)["incorrect?"]`` of the response-token projections; ``value`` its mean for the axis (column 0),
    ``ci`` a bootstrap over problems, ``null`` the same mean for every random direction (columns 1+), ``p`` the
    one-sided p on the paper's side (positive: "Yes" means good in one question and bad in the other), and each
    framing's own gap. NaN rows (a problem dropped) are left out."""
    gaps = {f: (ver.readouts[f].response["yes"][:, layer_index] - ver.readouts[f].response["no"][:, layer_index])
            .numpy().astype(float) for f in SIDE}  # fmt: skip
    diff = gaps["correct"] - gaps["incorrect"]  # (n_problems, K): one row per problem, Yes and No together
    diff = diff[np.isfinite(diff).all(1)]
    value, low, high = mean_ci(diff[:, 0], n_boot, seed)
    null = diff[:, 1:].mean(0) if len(diff) else np.array([])
    return {
        "value": value, "ci": (low, high), "n": len(diff), "null": null, "null_range": null_range(null),
        "p": claim_p(value, null, +1), "n_null": len(null),
        "gap": {f: float(np.nanmean(g[:, 0])) for f, g in gaps.items()},
    }  # fmt: skip


def auroc_p(ver, layer_index: int) -> dict:
    """Per framing, the one-sided p of the axis's prefilled Yes-vs-No AUROC against the random directions' on
    the paper's side (high for "correct?", low for "incorrect?")."""
    return {f: claim_p(float(ver.auroc[f][layer_index]), ver.random[f][:, layer_index], s) for f, s in SIDE.items()}


def log_odds_effects(sweep, framing: str) -> dict:
    """Steering effects on the length-free log-odds along the axis, each against random directions of the same
    norm on the paper's side for ``framing`` (:data:`SIDE` times the sign of the strength).

    Returns ``{"per_strength": [{strength, effect, null_n, p}], "contrast": {...}}``: ``effect`` is the mean over
    problems of log-odds at the strength minus unsteered; ``contrast`` the mean of log-odds at the largest
    strength minus at its negative (``s_max``), with a CI over problems, its null (the random directions read at
    both strengths and their negations, ``2n`` draws) and ``p``."""
    side = SIDE[framing]
    groups = getattr(sweep, "groups", None)
    groups = np.arange(len(sweep.log_odds_at(framing, "none", 0.0))) if groups is None else groups
    names = sorted({d for d, _ in sweep.log_odds[framing] if d.startswith("random")})
    base = sweep.log_odds_at(framing, "none", 0.0)
    rows = []
    for s in sweep.strengths:
        if s == 0:
            continue
        effect = float(np.mean(sweep.log_odds_at(framing, "axis", s) - base))
        null = [np.mean(sweep.log_odds[framing][(d, s)] - base) for d in names if (d, s) in sweep.log_odds[framing]]
        rows.append({"strength": s, "effect": effect, "null_n": len(null),
                     "p": claim_p(effect, null, side * int(np.sign(s)))})  # fmt: skip
    s_max = max(sweep.strengths)
    contrast = {"strength": s_max, "value": np.nan, "ci": (np.nan, np.nan), "null": np.array([]), "p": np.nan}
    if -s_max in sweep.strengths and s_max > 0:
        per = per_group_mean(sweep.log_odds_at(framing, "axis", s_max) - sweep.log_odds_at(framing, "axis", -s_max),
                             groups)  # fmt: skip
        value, low, high = mean_ci(per, 200, 0)
        odd = [np.mean(sweep.log_odds[framing][(d, s_max)] - sweep.log_odds[framing][(d, -s_max)]) for d in names
               if (d, s_max) in sweep.log_odds[framing] and (d, -s_max) in sweep.log_odds[framing]]  # fmt: skip
        null = np.r_[odd, -np.asarray(odd)]  # steering by r at -s is steering by -r at +s
        contrast = {"strength": s_max, "value": value, "ci": (low, high), "null": null, "null_range": null_range(null),
                    "p": claim_p(value, null, side), "n_directions": len(odd), "n": len(per)}  # fmt: skip
    return {"per_strength": rows, "contrast": contrast, "enough_draws": len(contrast["null"]) >= min_draws(0.05)}


def yes_rate_effects(sweep, framing: str, parser: str = "authors", n_perm: int = 10000, seed: int = 0) -> dict:
    """Steering effects on sampled yes-rates along the axis, per problem (a problem's partial responses
    averaged), each with a sign-flip p on the paper's side: per strength ``s`` (yes-rate at ``s`` minus at 0)
    and the contrast of the largest strength against its negative. A dropped strength (over half the answers
    unparseable) gives NaN. ``parser``: ``"authors"`` or ``"strict"`` (:func:`~.confidence.parse_yes_no`)."""
    side = SIDE[framing]
    yes = sweep.yes[framing]
    groups = getattr(sweep, "groups", None)

    def per_problem(s):
        y = yes.get(float(s))
        if not y:
            return None
        y = y if parser == "authors" else y["strict"]
        if y["valid"] < 0.5:
            return None
        g = np.arange(len(y["per_chat"])) if groups is None else groups
        return per_group_mean(y["per_chat"], g)

    def test(a, b, sign):
        pa, pb = per_problem(a), per_problem(b)
        if pa is None or pb is None:
            return {"effect": np.nan, "p": np.nan, "n": 0}
        d = pa - pb
        d = d[np.isfinite(d)]
        return {"effect": float(d.mean()) if len(d) else np.nan,
                "p": sign_flip_p(d, sign, n_perm, seed) if len(d) else np.nan, "n": len(d)}  # fmt: skip

    rows = [{"strength": s, **test(s, 0.0, side * int(np.sign(s)))} for s in sweep.strengths if s != 0]
    s_max = max(sweep.strengths)
    contrast = test(s_max, -s_max, side) if -s_max in sweep.strengths else {"effect": np.nan, "p": np.nan, "n": 0}
    return {"per_strength": rows, "contrast": {"strength": s_max, **contrast}}


def spearman_ci(x: np.ndarray, y: np.ndarray, n_boot: int = 200, seed: int = 0) -> tuple[float, float, float, int]:
    """Spearman correlation of the finite pairs with a bootstrap CI: ``(rho, low, high, n)``."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), float("nan"), len(x)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) and np.ptp(y[i]):
            draws.append(spearmanr(x[i], y[i]).statistic)
    lo, hi = np.quantile(draws, [0.025, 0.975])
    return float(spearmanr(x, y).statistic), float(lo), float(hi), len(x)


def binary_auroc_ci(scores: np.ndarray, labels: np.ndarray, n_boot: int = 200, seed: int = 0):
    """AUROC of ``scores`` (``(n, ...)``) for boolean ``labels`` with a bootstrap over items:
    ``(auroc, low, high, n_pos, n_neg)``; NaN when a class is missing."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    nan = np.full(scores.shape[1:], np.nan)
    if min(n_pos, n_neg) == 0:
        return nan, nan, nan, n_pos, n_neg
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        i = rng.integers(0, len(labels), len(labels))
        if 0 < labels[i].sum() < len(i):
            draws.append(auroc_columns(scores[i], labels[i]))
    if not draws:  # n_boot=0: no CI
        return auroc_columns(scores, labels), nan, nan, n_pos, n_neg
    low, high = np.quantile(np.array(draws), [0.025, 0.975], axis=0)
    return auroc_columns(scores, labels), low, high, n_pos, n_neg
