"""Notebook 06's reading: one summary of its numbers, the plain-language verdict computed from it, and
the scorecard rows."""

from __future__ import annotations

import numpy as np

from .coding import METRICS

PAPER_D = {"shuffled": (1.05, 0.95), "obfuscated": (0.68, 0.96), "syntax": (0.18, 0.92), "logical": (None, 0.76)}
PAPER_VERBOSITY = {
    "lines": "18.73 / 17.92 / 17.10 / 16.36 / 15.61",
    "comments": "2.32 / 2.02 / 1.92 / 1.80 / 1.63",
    "type_hints": "0.66 / 0.60 / 0.56 / 0.47 / 0.26",
}


def summarize(effects_table, verbosity_table, slopes: dict, layer: int, n_problems: int, steering_p=None) -> dict:
    """The headline numbers: per kind the effects row (:func:`vaxis.experiments.coding_stats.effects_table`); per
    metric the axis's means per strength, the random band (descriptive), the dropped strengths, the slope at
    ``layer`` (``slopes[metric] = (slope, low, high)`` from :func:`vaxis.experiments.confidence.slope_ci`) and its
    per-problem sign-flip p-value (``steering_p[metric]``, :func:`vaxis.experiments.coding_stats.steering_p`)."""
    axis = verbosity_table[verbosity_table.direction.isin(["axis", "none"])].sort_values("strength_%")
    rand = verbosity_table[verbosity_table.direction.str.startswith("random")]
    return {
        "layer": layer,
        "n_problems": n_problems,
        "effects": {r["kind"]: r for r in effects_table.to_dict("records")},
        "window": effects_table["window"].iloc[0] if "window" in effects_table and len(effects_table) else "to_end",
        "strengths": [float(s) for s in axis["strength_%"]],
        "means": {m: [float(v) for v in axis[m]] for m in (*METRICS, "pass_rate", "valid")},
        "n_outputs": [int(n) for n in axis["n"]],
        "n_valid": [int(round(n * v)) for n, v in zip(axis["n"], axis["valid"])],
        "dropped": [float(s) for s in axis[axis.dropped]["strength_%"]],
        "random_range": {
            m: (float(np.nanmin(rand[m])), float(np.nanmax(rand[m]))) if rand[m].notna().any() else (np.nan, np.nan)
            for m in METRICS
        },  # fmt: skip
        "n_random": int(rand.direction.nunique()),
        "slopes": {m: tuple(float(x) for x in v) for m, v in slopes.items()},
        "steering_p": {m: float((steering_p or {}).get(m, np.nan)) for m in METRICS},
        "beside_random": {m: _beside_random(axis, rand, m) for m in METRICS},
    }


def _beside_random(axis, rand, metric: str) -> dict:
    """``{strength: (axis mean, random min, random max)}`` at the strengths random directions were read."""
    out = {}
    for s in sorted(set(rand["strength_%"])):
        r = rand[rand["strength_%"] == s][metric].to_numpy(dtype=float)
        a = axis[axis["strength_%"] == s][metric].to_numpy(dtype=float)
        if len(a) and np.isfinite(r).any():
            out[float(s)] = (float(a[0]), float(np.nanmin(r)), float(np.nanmax(r)))
    return out


WINDOW_TEXT = {"to_end": "from the bug to the end of the code", "authors_10": "over the bug and the 10 tokens after it",
               "whole": "over the whole code"}  # fmt: skip


def _kind_reading(e: dict) -> str:
    """The paper's side (correct higher) decides: d_z's pair-bootstrap CI must exclude 0 on that side, and the
    share (the paper's statistic) must clear the random directions read in the same pass (one-sided p <= 0.05)."""
    if e["n"] < 5:
        return "too few problems to read"
    if e["d_z_high"] < 0:
        return "correct code projects **lower** after the bug: opposite to the paper"
    if not e["d_z_low"] > 0:
        return "not distinguishable from 0"
    if not np.isfinite(e["p_share"]):
        return "correct code projects higher after the bug (no random directions were read to compare)"
    if e["p_share"] <= 0.05:
        return "correct code projects higher after the bug, beyond the random directions"
    return "correct code projects higher, but random directions reach as far: not specific to the axis"


def _steer_reading(p: float, lo: float, hi: float) -> str:
    if not np.isfinite(p):
        return "no per-problem test (fewer than two strengths per problem)"
    if p <= 0.05:
        return f"falls with positive steering, as in the paper (per-problem sign-flip p = {p:.3f})"
    trend = "rises" if lo > 0 else "falls" if hi < 0 else "shows no clear trend"
    return (
        f"{trend}; the per-problem sign-flip test on the paper's side (fewer with positive steering) gives p = {p:.3f}"
    )


def verdict(s: dict, model: str, profile: str) -> str:
    """Plain reading of :func:`summarize`'s numbers."""
    lines = [f"**{model}, profile `{profile}`, layer {s['layer']}**, {s['n_problems']} problems; the projection "
             f"{WINDOW_TEXT.get(s['window'], s['window'])} (`code_window`):"]  # fmt: skip
    harmless = s["effects"].get("harmless", {}).get("d", np.nan)
    for kind, e in s["effects"].items():
        if kind == "harmless":
            continue
        paper_d, paper_share = PAPER_D.get(kind, (None, None))
        paper = (f"d {paper_d}, " if paper_d is not None else "") + (f"{paper_share:.0%}" if paper_share else "")
        lines.append(
            f"- {kind}: correct higher in {e['share_correct_higher']:.0%} of {e['n']} problems "
            f"({e['share_low']:.0%}..{e['share_high']:.0%}; random directions {e['random_share_2.5%']:.0%}.."
            f"{e['random_share_97.5%']:.0%}, p = {e['p_share']:.2f}); paired d_z = {e['d_z']:+.2f} "
            f"({e['d_z_low']:+.2f}..{e['d_z_high']:+.2f}; random {e['random_d_z_2.5%']:+.2f}..{e['random_d_z_97.5%']:+.2f}, "
            f"p = {e['p_d_z']:.2f}); pooled d = {e['d']:+.2f} ({e['d_low']:+.2f}..{e['d_high']:+.2f}) (paper: {paper}): "
            f"{_kind_reading(e)}."
        )  # fmt: skip
    lines.append(f"- A harmless edit (code that still passes) moves d by {harmless:+.2f}: the size of a change that "
                 "is not a bug. p-values are one-sided on the paper's side (correct higher) against the random "
                 "directions read in the same pass.")  # fmt: skip
    st = " / ".join(f"{x:+g}" for x in s["strengths"])
    for m in METRICS:
        v, lo, hi = s["slopes"].get(m, (np.nan,) * 3)
        means = " / ".join("n/a" if np.isnan(x) else f"{x:.2f}" for x in s["means"][m])
        band = s["random_range"][m]
        lines.append(f"- {m} at {st}%: {means} (paper {PAPER_VERBOSITY[m]}); slope {v:+.3f} per % "
                     f"({lo:+.3f}..{hi:+.3f}): {_steer_reading(s['steering_p'][m], lo, hi)}; {s['n_random']} random "
                     f"direction(s) give {band[0]:.2f}..{band[1]:.2f} (a descriptive band, not a test).")  # fmt: skip
    rate = " / ".join(f"{x:.2f}" for x in s["means"]["pass_rate"])
    lines.append(f"- Pass rate in the sandbox: {rate}; valid outputs {' / '.join(map(str, s['n_valid']))} of "
                 f"{' / '.join(map(str, s['n_outputs']))}" + (f"; dropped as degenerate: {s['dropped']}" if s["dropped"]
                 else "") + ".")  # fmt: skip
    return "\n".join(lines)


def _null(e: dict, stat: str, fmt: str) -> str:
    lo, hi = e[f"random_{stat}_2.5%"], e[f"random_{stat}_97.5%"]
    return f"random directions {lo:{fmt}}..{hi:{fmt}}, p = {e[f'p_{stat}']:.3f} (correct higher)"


def scorecard_rows(s: dict, model: str, profile: str) -> list[dict]:
    """Scorecard rows of notebook 06 (keys in ``data/paper_numbers.json``): each number with its CI, n and the null
    it is read against (random directions' 95 % range and the one-sided p on the paper's side; for steering, the
    per-problem sign-flip p)."""
    ctx = f"{model}, profile {profile}, L={s['layer']}, window {s['window']}"
    harmless = f"{s['effects']['harmless']['d']:+.2f}" if "harmless" in s["effects"] else "n/a"
    rows = []
    for kind, e in s["effects"].items():
        base = {"section": "Sec 4 code", "n": f"{e['n']} problems", "context": ctx}
        if kind != "harmless":
            rows.append({**base, "key": f"sec4.code_share_{kind}", "value": e["share_correct_higher"],
                         "metric": f"share of problems where correct > {kind} after the bug",
                         "ci": (e["share_low"], e["share_high"]), "null": _null(e, "share", ".2f")})  # fmt: skip
        rows.append({**base, "key": f"sec4.code_d_{kind}", "value": e["d"], "ci": (e["d_low"], e["d_high"]),
                     "metric": f"Cohen's d after the bug, correct vs {kind}",
                     "null": _null(e, "d", "+.2f") + f"; harmless edit {harmless}"})  # fmt: skip
        rows.append({**base, "key": f"sec4.code_dz_{kind}", "value": e["d_z"], "ci": (e["d_z_low"], e["d_z_high"]),
                     "metric": f"paired d_z after the bug, correct vs {kind}", "null": _null(e, "d_z", "+.2f")})  # fmt: skip
    st = " / ".join(f"{x:+g}" for x in s["strengths"])
    for m in METRICS:
        lo, hi = s["random_range"][m]
        slope = s["slopes"].get(m)
        rows.append({
            "key": f"fig4.code_{m}",
            "value": " / ".join("n/a" if np.isnan(x) else f"{x:.2f}" for x in s["means"][m]),
            "n": " / ".join(map(str, s["n_valid"])) + " valid outputs",
            "null": f"per-problem sign-flip p = {s['steering_p'][m]:.3f} (fewer with positive steering); "
                    f"{s['n_random']} random direction(s) {lo:.2f}..{hi:.2f} (descriptive)",
            "context": f"strengths {st} %" + (f"; slope {slope[0]:+.3f} per % ({slope[1]:+.3f}..{slope[2]:+.3f})" if slope else "") + f"; {ctx}",
        })  # fmt: skip
    return rows
