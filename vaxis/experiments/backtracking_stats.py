"""Notebook 05's statistics over problems (METHOD.md section 4, "Backtracking"; paper Figs 4-6).

The unit of every interval and test here is the *problem*: a problem's sampled rollouts share its difficulty,
length and wording, so resampling rollouts one by one would treat them as independent and give intervals too
narrow. Bootstraps draw whole problems (:func:`vaxis.core.nulls.group_resamples`).

* :func:`band_curves` / :func:`band_gap`: Fig 5, mean projection per band of tokens for rollouts that backtrack
  and rollouts that do not, and the authors' headline (all band means pooled, backtracking minus not).
* :func:`event_gap`: Fig 6 at the event (offset 0), and the event minus the matched-index control.
* :func:`steered_rates` / :func:`steering_tests`: Fig 4, backtracking presence under steering counted over
  *all* rollouts (as the authors' steering code; a length cap otherwise selects against long, backtracking
  rollouts, and steering changes length), the answered share beside it, and a per-problem sign-flip test of
  each steering effect on the paper's side (positive steering, less backtracking). Steering here generates
  whole rollouts, so the null is this permutation test, not a band of 20+ generated random directions; the
  profile's few random directions are shown as a descriptive band only.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..core.nulls import group_resamples, sign_flip_p
from .backtracking import bands, has_backtracking

#: The paper's side: positive steering along the axis means *less* backtracking (Fig 4: 0.390 at -16.8 % to
#: 0.221 at +16.8 %), so a steered-minus-unsteered difference at strength s is claimed to have sign -sign(s).
SIDE = -1


def band_table(projections, li: int, band: int) -> np.ndarray:
    """``(n_rollouts, n_bands)`` band means (:func:`vaxis.experiments.backtracking.bands`) of column 0 at layer
    index ``li``, NaN past a rollout's end."""
    per = [bands(p[:, li, 0], np.arange(len(p)), band)[1] if len(p) else np.zeros(0) for p in projections]
    table = np.full((len(per), max((len(m) for m in per), default=0)), np.nan)
    for r, m in enumerate(per):
        table[r, : len(m)] = m
    return table


def _nanmean(x, axis=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis)


def _ci(boot) -> tuple[float, float]:
    """The 95 % percentile interval of bootstrap draws, NaN left out (NaN when no draw is finite)."""
    boot = np.asarray(boot, dtype=float)
    if not np.isfinite(boot).any():
        return np.nan, np.nan
    low, high = np.nanquantile(boot, [0.025, 0.975])
    return float(low), float(high)


def band_curves(projections, groups, problems, li: int, band: int, n_boot: int = 200, seed: int = 0) -> dict:
    """Mean projection per band of ``band`` tokens for each group of rollouts (``groups``: bool, True =
    backtracking), column 0 at layer index ``li``, with a bootstrap CI over whole problems (``problems``: each
    rollout's problem id): ``{True/False: (starts, mean, low, high, n_rollouts_per_band)}``."""
    table, groups = band_table(projections, li, band), np.asarray(groups, dtype=bool)
    draws = list(group_resamples(problems, n_boot, seed))
    out = {}
    for flag in (True, False):
        rows = table[groups == flag]
        if not len(rows):
            continue
        boot = np.array([_nanmean(table[i][groups[i] == flag], 0) for i in draws]).reshape(-1, table.shape[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanquantile(boot, [0.025, 0.975], axis=0)
        out[flag] = (np.arange(table.shape[1]) * band, _nanmean(rows, 0), low, high, np.isfinite(rows).sum(0))
    return out


def band_gap(projections, groups, problems, li: int, band: int, n_boot: int = 200, seed: int = 0) -> dict:
    """The authors' Fig 5 statistic: every band mean of every rollout pooled, rollouts that backtrack minus
    rollouts that do not, with a 95 % bootstrap CI over whole problems. ``{"gap", "low", "high",
    "backtracking", "other", "n_problems"}``."""
    table, groups = band_table(projections, li, band), np.asarray(groups, dtype=bool)

    def gap(i):
        return _nanmean(table[i][groups[i]]) - _nanmean(table[i][~groups[i]])

    every = np.arange(len(table))
    boot = np.array([gap(i) for i in group_resamples(problems, n_boot, seed)])
    low, high = _ci(boot)
    return {"gap": float(gap(every)), "low": low, "high": high,
            "backtracking": float(_nanmean(table[groups])), "other": float(_nanmean(table[~groups])),
            "n_problems": int(len(np.unique(problems)))}  # fmt: skip


def event_gap(ev: dict, problems, window: int, n_boot: int = 200, seed: int = 0) -> dict:
    """Fig 6 at the event (offset 0) from :func:`vaxis.experiments.backtracking.event_curves`'s ``windows``:
    the events' mean and the events minus the matched-index control, each with a 95 % bootstrap CI over whole
    problems (``problems``: each rollout's problem id; an event belongs to its rollout's problem, a control
    position to its own rollout's). ``{"event", "event_low", "event_high", "gap", "gap_low", "gap_high"}``."""
    problems = np.asarray(problems)
    (wa, ra), (wb, rb) = ev["windows"]["backtracking"], ev["windows"]["matched index, no backtracking"]
    a, b = wa[:, window] if len(wa) else np.zeros(0), wb[:, window] if len(wb) else np.zeros(0)
    pa, pb = problems[ra] if len(ra) else np.zeros(0, problems.dtype), problems[rb] if len(rb) else np.zeros(0)
    names = np.unique(problems)
    event_boot, gap_boot = [], []
    for draw in group_resamples(names, n_boot, seed):
        picked = names[draw]
        ea = np.concatenate([a[pa == p] for p in picked]) if len(a) else a
        eb = np.concatenate([b[pb == p] for p in picked]) if len(b) else b
        event_boot.append(_nanmean(ea) if len(ea) else np.nan)
        gap_boot.append(_nanmean(ea) - _nanmean(eb) if len(ea) and len(eb) else np.nan)
    out = {"event": float(_nanmean(a)) if len(a) else np.nan}
    out["gap"] = out["event"] - float(_nanmean(b)) if len(b) else np.nan
    for name, boot in (("event", event_boot), ("gap", gap_boot)):
        out[f"{name}_low"], out[f"{name}_high"] = _ci(boot)
    return out


def steered_rates(model, tokenizer, problems, vectors: dict, *, patterns: str = "paper", **generate_kwargs) -> dict:
    """Rollouts under each steering of ``vectors`` (from :func:`vaxis.experiments.confidence.steering_vectors`):
    ``{key: {"backtracking", "backtracking_answered", "answer_rate", "accuracy", "mean_tokens", "n",
    "n_answered", "per_problem"}}``. ``backtracking`` counts over ALL rollouts (as the authors);
    ``backtracking_answered`` over those that end (EOS) with an extractable answer, the sensitivity row;
    ``per_problem`` is each problem's presence rate over its samples (the unit of :func:`steering_tests`)."""
    from ..core.generate import generate
    from ..data.mathdata import extract_answer, is_correct
    from .confidence import math_chat

    out = {}
    for key, steer in vectors.items():
        gens = generate(model, tokenizer, [math_chat(p) for p in problems], steer=steer, **generate_kwargs)
        answered = np.array([g.finish_reason == "eos" and extract_answer(g.text, problems[g.conversation].source)
                             is not None for g in gens])  # fmt: skip
        present = np.array([has_backtracking(g.text, patterns=patterns) for g in gens], dtype=float)
        which = np.array([g.conversation for g in gens])
        out[key] = {
            "backtracking": float(present.mean()) if len(present) else float("nan"),
            "backtracking_answered": float(present[answered].mean()) if answered.any() else float("nan"),
            "answer_rate": float(answered.mean()) if len(answered) else float("nan"),
            "accuracy": float(np.mean([is_correct(g.text, problems[g.conversation]) is True for g in gens])),
            "mean_tokens": float(np.mean([g.n_new_tokens for g in gens])),
            "n": len(gens),
            "n_answered": int(answered.sum()),
            "per_problem": np.array([present[which == j].mean() for j in range(len(problems))]),
        }
    return out


def per_problem_slopes(per_problem: dict) -> np.ndarray:
    """Each problem's OLS slope of presence against strength (% of norm) over ``{strength: (n_problems,)}``."""
    s = np.array(sorted(per_problem), dtype=float)
    y = np.stack([np.asarray(per_problem[k], dtype=float) for k in sorted(per_problem)])  # (strengths, problems)
    x = s - s.mean()
    return (x[:, None] * (y - y.mean(0))).sum(0) / (x**2).sum()


def steering_tests(rates: dict, n_boot: int = 200, n_perm: int = 10000, seed: int = 0) -> list[dict]:
    """The axis's steering effects against a per-problem sign-flip null (:func:`vaxis.core.nulls.sign_flip_p`) on
    the paper's side (:data:`SIDE`): for each strength s, steered minus unsteered presence per problem (claimed
    sign ``-sign(s)``), and the per-problem slope of presence over every axis strength (claimed negative). Each
    row: ``strength`` (None for the slope), ``effect`` (mean difference or slope), ``low``/``high`` (95 %
    bootstrap over problems), ``p``, ``n_problems``."""
    base = np.asarray(rates[("none", 0.0)]["per_problem"], dtype=float)
    axis = {k[1]: np.asarray(v["per_problem"], dtype=float) for k, v in rates.items() if k[0] == "axis"}
    rows = []
    units = np.arange(len(base))
    for s in sorted(axis):
        rows.append(_test_row(s, axis[s] - base, int(SIDE * np.sign(s)), units, n_boot, n_perm, seed))
    if axis:
        rows.append(_test_row(None, per_problem_slopes({0.0: base, **axis}), SIDE, units, n_boot, n_perm, seed))
    return rows


def _test_row(strength, diffs, sign, units, n_boot, n_perm, seed) -> dict:
    boot = np.array([_nanmean(diffs[i]) for i in group_resamples(units, n_boot, seed)])
    low, high = _ci(boot)
    return {"strength": strength, "effect": float(_nanmean(diffs)), "low": low, "high": high,
            "p": sign_flip_p(diffs, sign, n_perm=n_perm, seed=seed), "n_problems": int(np.isfinite(diffs).sum())}  # fmt: skip


def rates_table(rates: dict):
    """:func:`steered_rates` as a table, one row per (direction, strength), without the per-problem arrays."""
    import pandas as pd

    rows = [{"direction": k[0], "strength_%": k[1], **{n: x for n, x in v.items() if n != "per_problem"}}
            for k, v in rates.items()]  # fmt: skip
    return pd.DataFrame(rows).sort_values(["direction", "strength_%"]).reset_index(drop=True)
