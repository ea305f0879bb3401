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


def summarize(effects_table, verbosity_table, slopes: dict, layer: int, n_problems: int) -> dict:
    """The headline numbers: per kind the effects row; per metric the axis's means per strength, the
    random band, the dropped strengths and the slope at ``layer`` (``slopes[metric] = (slope, low, high)``
    from :func:`vaxis.experiments.confidence.slope_ci`)."""
    axis = verbosity_table[verbosity_table.direction.isin(["axis", "none"])].sort_values("strength_%")
    rand = verbosity_table[verbosity_table.direction.str.startswith("random")]
    return {
        "layer": layer,
        "n_problems": n_problems,
        "effects": {r["kind"]: r for r in effects_table.to_dict("records")},
        "strengths": [float(s) for s in axis["strength_%"]],
        "means": {m: [float(v) for v in axis[m]] for m in (*METRICS, "pass_rate", "valid")},
        "n_outputs": [int(n) for n in axis["n"]],
        "n_valid": [int(round(n * v)) for n, v in zip(axis["n"], axis["valid"])],
        "dropped": [float(s) for s in axis[axis.dropped]["strength_%"]],
        "random_range": {
            m: (float(np.nanmin(rand[m])), float(np.nanmax(rand[m]))) if rand[m].notna().any() else (np.nan, np.nan)
            for m in METRICS
        },  # fmt: skip
        "slopes": {m: tuple(float(x) for x in v) for m, v in slopes.items()},
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


def _kind_reading(kind: str, e: dict) -> str:
    outside = e["d"] > e["random_d_97.5%"] or e["d"] < e["random_d_2.5%"]
    ci_clear = e["d_low"] > 0 or e["d_high"] < 0
    if e["n"] < 5:
        return "too few problems to read"
    if ci_clear and not np.isfinite([e["random_d_2.5%"], e["random_d_97.5%"]]).all():
        sign = "higher" if e["d"] > 0 else "**lower**"
        return f"correct code projects {sign} after the bug (no random directions were read to compare)"
    if ci_clear and outside:
        sign = "higher" if e["d"] > 0 else "**lower**"
        return f"correct code projects {sign} after the bug, beyond the random directions"
    if ci_clear:
        return "the CI excludes 0 but random directions reach as far: not specific to the axis"
    return "not distinguishable from 0"


def verdict(s: dict, model: str, profile: str) -> str:
    """Plain reading of :func:`summarize`'s numbers."""
    lines = [f"**{model}, profile `{profile}`, layer {s['layer']}**, {s['n_problems']} problems:"]
    harmless = s["effects"].get("harmless", {}).get("d", np.nan)
    for kind, e in s["effects"].items():
        if kind == "harmless":
            continue
        paper_d, paper_share = PAPER_D.get(kind, (None, None))
        paper = (f"d {paper_d}, " if paper_d is not None else "") + (f"{paper_share:.0%}" if paper_share else "")
        lines.append(
            f"- {kind}: d = {e['d']:+.2f} ({e['d_low']:+.2f}..{e['d_high']:+.2f}), correct higher in "
            f"{e['share_correct_higher']:.0%} of {e['n']} problems (paper: {paper}); random directions' d "
            f"{e['random_d_2.5%']:+.2f}..{e['random_d_97.5%']:+.2f}: {_kind_reading(kind, e)}."
        )
    lines.append(f"- A harmless edit (code that still passes) moves d by {harmless:+.2f}: the size of a change that "
                 "is not a bug.")  # fmt: skip
    st = " / ".join(f"{x:+g}" for x in s["strengths"])
    for m in METRICS:
        v, lo, hi = s["slopes"].get(m, (np.nan,) * 3)
        means = " / ".join("n/a" if np.isnan(x) else f"{x:.2f}" for x in s["means"][m])
        trend = ("falls with positive steering" if hi < 0 else "rises with positive steering" if lo > 0
                 else "shows no clear trend")  # fmt: skip
        beside = s["beside_random"].get(m, {})
        if (hi < 0 or lo > 0) and beside:
            sign = 1 if lo > 0 else -1  # beyond the band on the trend's side: above it where sign * s > 0
            outside = all(a > hi_r if sign * st_ > 0 else a < lo_r for st_, (a, lo_r, hi_r) in beside.items())
            trend += (
                (
                    ", beyond the random directions' range on the trend's side at "
                    if outside
                    else ", but random directions of the same norm reach as far at "
                )
                + "/".join(f"{x:+g}%" for x in beside)
                + ("" if outside else ": not specific to the axis")
            )
        lines.append(f"- {m} at {st}%: {means} (paper {PAPER_VERBOSITY[m]}); slope {v:+.3f} per % "
                     f"({lo:+.3f}..{hi:+.3f}): {trend}.")  # fmt: skip
    rate = " / ".join(f"{x:.2f}" for x in s["means"]["pass_rate"])
    lines.append(f"- Pass rate in the sandbox: {rate}; valid outputs {' / '.join(map(str, s['n_valid']))} of "
                 f"{' / '.join(map(str, s['n_outputs']))}" + (f"; dropped as degenerate: {s['dropped']}" if s["dropped"]
                 else "") + ".")  # fmt: skip
    return "\n".join(lines)


def scorecard_rows(s: dict, model: str, profile: str) -> list[dict]:
    """Scorecard rows of notebook 06 (keys in ``data/paper_numbers.json``)."""
    ctx = f"{model}, profile {profile}, L={s['layer']}"
    rows = []
    for kind, e in s["effects"].items():
        null = f"random directions {e['random_d_2.5%']:+.2f}..{e['random_d_97.5%']:+.2f}; harmless edit " + (
            f"{s['effects']['harmless']['d']:+.2f}" if "harmless" in s["effects"] else "n/a"
        )
        if kind != "harmless":
            rows.append({"key": f"sec4.code_share_{kind}", "section": "Sec 4 code",
                         "metric": f"share of problems where correct > {kind} after the bug", "value": e["share_correct_higher"],
                         "ci": (e["share_low"], e["share_high"]), "n": f"{e['n']} problems", "null": "0.5 (chance)",
                         "context": ctx})  # fmt: skip
        rows.append({"key": f"sec4.code_d_{kind}", "section": "Sec 4 code",
                     "metric": f"Cohen's d after the bug, correct vs {kind}", "value": e["d"], "ci": (e["d_low"], e["d_high"]),
                     "n": f"{e['n']} problems", "null": null, "context": ctx})  # fmt: skip
    st = " / ".join(f"{x:+g}" for x in s["strengths"])
    for m in METRICS:
        lo, hi = s["random_range"][m]
        slope = s["slopes"].get(m)
        rows.append({
            "key": f"fig4.code_{m}",
            "value": " / ".join("n/a" if np.isnan(x) else f"{x:.2f}" for x in s["means"][m]),
            "n": " / ".join(map(str, s["n_valid"])) + " valid outputs",
            "null": f"random directions {lo:.2f}..{hi:.2f}",
            "context": f"strengths {st} %" + (f"; slope {slope[0]:+.3f} per % ({slope[1]:+.3f}..{slope[2]:+.3f})" if slope else "") + f"; {ctx}",
        })  # fmt: skip
    return rows
