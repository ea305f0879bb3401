"""Notebook 06's verdict statistics: each after-bug number against the random directions read in the same pass,
the three after-bug windows side by side, and the per-problem permutation test of verbosity steering.

* **After the bug.** The paper's claim is that correct code projects *higher* than corrupted code, so every
  statistic (the share of problems where it does, Cohen's d, the paired d_z) is judged on that side
  (``SIDE = +1``) against the same statistic of the random unit directions (:func:`vaxis.core.nulls.claim_p`,
  :func:`vaxis.core.nulls.beyond`, :func:`vaxis.core.nulls.null_range`), never against 0.5 or 0: random directions read
  in the same pass give shares far from 0.5, because a corruption moves the whole residual stream.
* **Verbosity steering.** The paper's claim is that positive steering gives *fewer* lines, comments and type
  hints (``STEER_SIDE = -1``). Each problem's OLS slope of the metric against strength (its valid outputs, every
  strength) is one paired unit; under the null (steering changes nothing) a problem's outputs are exchangeable
  across strengths, and mirrored strengths make each slope symmetric around 0, so
  :func:`vaxis.core.nulls.sign_flip_p` gives an exact p-value without generating more random directions (each costs a
  generation pass per strength). Random directions stay as a descriptive band.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.nulls import beyond, claim_p, null_range, sign_flip_p
from .coding import WINDOWS, AfterBug, effects, verbosity_table

SIDE = 1  # the paper: correct code projects higher after the bug
STEER_SIDE = -1  # the paper: positive steering, fewer lines / comments / type hints
STATS = ("share", "d", "d_z")


def against_random(e: dict, li: int) -> dict:
    """For each of :data:`STATS` of :func:`vaxis.experiments.coding.effects` at layer index ``li``: the axis's
    value (column 0) against the random directions' (columns 1:) on the paper's side: ``{stat: {"p", "beyond",
    "median", "low", "high"}}`` (``beyond``: past the random directions' 95th percentile; ``low``/``high``: their
    central 95 %)."""
    out = {}
    for stat in STATS:
        value, null = float(e[stat][li, 0]), e[stat][li, 1:]
        med, lo, hi = null_range(null)
        out[stat] = {"p": claim_p(value, null, SIDE), "beyond": beyond(value, null, SIDE), "median": med, "low": lo,
                     "high": hi}  # fmt: skip
    return out


def effects_table(after: AfterBug, li: int, n_boot: int = 200, seed: int = 0):
    """One row per corruption kind at layer index ``li`` in ``after``'s window: the axis's share of problems
    where correct > corrupted, Cohen's d and d_z, each with its pair-bootstrap CI and against the random
    directions (:func:`against_random`: their 95 % range and the one-sided p), and the harmless edit's d."""
    import pandas as pd

    harmless = np.nan
    if "harmless" in after.correct:
        harmless = effects(after.correct["harmless"], after.corrupted["harmless"], 0)["d"][li, 0]
    rows = []
    for kind in after.correct:
        e = effects(after.correct[kind], after.corrupted[kind], n_boot, seed)
        row = {"kind": kind, "window": after.window, "n": e["n"]}
        nulls = against_random(e, li)
        for stat in STATS:
            row |= {stat: e[stat][li, 0], f"{stat}_low": e[f"{stat}_low"][li, 0],
                    f"{stat}_high": e[f"{stat}_high"][li, 0]}  # fmt: skip
            r = nulls[stat]
            row |= {f"random_{stat}_median": r["median"], f"random_{stat}_2.5%": r["low"],
                    f"random_{stat}_97.5%": r["high"], f"p_{stat}": r["p"], f"beyond_{stat}": r["beyond"]}  # fmt: skip
        row |= {"harmless_d": harmless, "tokens_after_bug": float(after.tokens[kind][:, 1].mean())}
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.rename(columns={"share": "share_correct_higher"}) if len(table) else table


def windows_table(after: AfterBug, li: int, n_boot: int = 200, seed: int = 0):
    """:func:`effects_table` in each of :data:`vaxis.experiments.coding.WINDOWS` (one pass read them all), the
    headline's columns only: kind, window, n, share, d, d_z with CIs and p-values against random directions,
    and the tokens averaged."""
    import pandas as pd

    keep = ["kind", "window", "n", "share_correct_higher", "share_low", "share_high", "p_share", "d", "d_low",
            "d_high", "p_d", "d_z", "d_z_low", "d_z_high", "p_d_z", "tokens_after_bug"]  # fmt: skip
    tables = [effects_table(after.at(w), li, n_boot, seed) for w in WINDOWS if w in after.windows]
    tables = [t[keep] for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=keep)


def problem_slopes(rows, metric: str, strengths: Sequence[float], direction: str = "axis") -> dict:
    """``{problem: slope}``: each problem's OLS slope of ``metric`` against strength over its valid outputs along
    ``direction`` (the unsteered outputs at 0), strengths dropped as degenerate
    (:func:`vaxis.experiments.coding.verbosity_table`) left out; NaN with fewer than two strengths left."""
    dropped = verbosity_table(rows)
    dropped = {(d, s) for d, s, x in zip(dropped.direction, dropped["strength_%"], dropped.dropped) if x}
    keys = [("none" if float(s) == 0 else direction, float(s)) for s in strengths]
    keys = [k for k in keys if k not in dropped]
    wanted = set(keys)
    sel = rows[[(d, s) in wanted for d, s in zip(rows.direction, rows["strength_%"])]]
    sel = sel[np.isfinite(sel[metric].to_numpy(dtype=float))]
    out = {}
    for problem in dict.fromkeys(rows.problem):
        x, y = (sel[sel.problem == problem][c].to_numpy(dtype=float) for c in ("strength_%", metric))
        out[problem] = float(np.polyfit(x, y, 1)[0]) if len(np.unique(x)) >= 2 else np.nan
    return out


def steering_p(rows, metric: str, strengths: Sequence[float], direction: str = "axis", seed: int = 0) -> float:
    """One-sided p-value, on the paper's side (:data:`STEER_SIDE`: fewer with positive steering), of the mean
    per-problem slope (:func:`problem_slopes`) under random sign flips (:func:`vaxis.core.nulls.sign_flip_p`)."""
    slopes = np.array(list(problem_slopes(rows, metric, strengths, direction).values()), dtype=float)
    return sign_flip_p(slopes, STEER_SIDE, seed=seed)
