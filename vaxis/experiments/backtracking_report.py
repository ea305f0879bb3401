"""Notebook 05's reading: one summary of its numbers, the plain-language verdict computed from it,
and the scorecard rows."""

from __future__ import annotations

import numpy as np

CONTROLS = ("matched index, no backtracking", "placebo words")


def _f(x, fmt="+.4f") -> str:
    return "n/a" if x is None or not np.isfinite(x) else format(x, fmt)


def _p(p) -> str:
    return "n/a" if p is None or not np.isfinite(p) else f"{p:.3g}"


def summarize(has, gap: dict, events: dict, event_stats: dict, rates_table, tests: list[dict], window: int,
              layer: int, patterns: str = "paper") -> dict:  # fmt: skip
    """The headline numbers: the pooled band gap (:func:`vaxis.experiments.backtracking_stats.band_gap`), the
    event-locked values at offsets -W, -W/2, 0 for the events and both controls with the event's CI over
    problems (:func:`~vaxis.experiments.backtracking_stats.event_gap`), and the axis's backtracking presence per
    steering strength over all rollouts, with its answered share, the per-problem sign-flip p-values
    (:func:`~vaxis.experiments.backtracking_stats.steering_tests`) and the random directions' range."""
    at = {name: {off: float(events[name][1][window + off]) for off in (-window, -(window // 2), 0)}
          for name in ("backtracking", *CONTROLS)}  # fmt: skip
    axis_rows = rates_table[rates_table.direction.isin(["axis", "none"])].sort_values("strength_%")
    random = rates_table[~rates_table.direction.isin(["axis", "none"])]
    p_at = {t["strength"]: t["p"] for t in tests if t["strength"] is not None}
    return {
        "layer": layer,
        "patterns": patterns,
        "n_rollouts": int(len(has)),
        "n_backtracking": int(np.sum(has)),
        "n_events": int(events["n_events"]),
        "dropped": int(events["dropped"]["events"]),
        "unmatched": int(events["unmatched"]),
        "gap": gap,
        "at": at,
        "event": event_stats,
        "strengths": [float(s) for s in axis_rows["strength_%"]],
        "presence": [float(x) for x in axis_rows.backtracking],
        "presence_answered": [float(x) for x in axis_rows.backtracking_answered],
        "answer_rate": [float(x) for x in axis_rows.answer_rate],
        "n": [int(n) for n in axis_rows.n],
        "p": [p_at.get(float(s), float("nan")) for s in axis_rows["strength_%"]],
        "slope": next((t for t in tests if t["strength"] is None), None),
        "random": {
            float(s): (float(g.backtracking.min()), float(g.backtracking.max()), int(len(g)))
            for s, g in random.groupby("strength_%")
        },  # fmt: skip
    }


def verdict(s: dict, model: str, profile: str) -> str:
    """Plain reading of :func:`summarize`'s numbers, the event against its two controls and steering against
    its per-problem permutation null."""
    at, g, ev = s["at"], s["gap"], s["event"]
    event0, controls0 = at["backtracking"][0], [at[c][0] for c in CONTROLS]
    if not s["n_events"]:
        reading = "No backtracking events with a full window in this run: nothing to lock to."
    elif s["n_events"] < 10:
        reading = f"With only {s['n_events']} events this run is too small to tell a drop from noise."
    elif event0 < min(controls0) and ev["gap_high"] < 0:
        reading = "The event value sits below both controls, and below the matched index beyond its CI."
    elif event0 < min(controls0):
        reading = "The event value sits below both controls, but its CI against the matched index includes 0."
    else:
        reading = "The controls reach the same level or lower: this run shows **no backtracking-specific drop**."
    slope = s["slope"]
    steer = (f"per-problem slope {_f(slope['effect'], '+.4f')} per % (CI {_f(slope['low'])}..{_f(slope['high'])}, "
             f"sign-flip p = {_p(slope['p'])}, paper's side: negative)" if slope else "no axis strengths")  # fmt: skip
    rand = "; ".join(f"{k:+g}%: {lo:.2f}..{hi:.2f} ({n})" for k, (lo, hi, n) in s["random"].items())
    return "\n".join([
        f"**{model}, profile `{profile}`, layer {s['layer']}, patterns `{s['patterns']}`**: {s['n_rollouts']} "
        f"rollouts, {s['n_backtracking']} backtrack ({s['n_events']} events with a full window; {s['dropped']} "
        f"dropped for a partial window).",
        f"- Band means pooled: backtracking {_f(g['backtracking'])} vs not {_f(g['other'])}, gap {_f(g['gap'])} "
        f"(CI over {g['n_problems']} problems {_f(g['low'])}..{_f(g['high'])}; paper, band 3000: -0.023 vs -0.004).",
        f"- At the event (offset 0): {_f(event0)} (CI {_f(ev['event_low'])}..{_f(ev['event_high'])}); matched-index "
        f"control {_f(controls0[0])} (event minus it {_f(ev['gap'])}, CI {_f(ev['gap_low'])}..{_f(ev['gap_high'])}); "
        f"placebo words {_f(controls0[1])} (paper: -0.043 at 0, -0.014 at -25). {reading}",
        f"- Backtracking presence over all rollouts under steering ({', '.join(f'{x:+g}' for x in s['strengths'])}%): "
        f"{' / '.join(_f(x, '.2f') for x in s['presence'])} (p vs unsteered {' / '.join(map(_p, s['p']))}; "
        f"answered share {' / '.join(_f(x, '.2f') for x in s['answer_rate'])}; paper 0.390 / 0.267 / 0.244 / "
        f"0.253 / 0.221); {steer}. Random directions (descriptive, not the null): {rand or 'none'}.",
    ])  # fmt: skip


def scorecard_rows(s: dict, model: str, profile: str, band: int) -> list[dict]:
    """Scorecard rows of notebook 05: the paper's numbers beside this run's, with CIs over problems, n and
    the null (controls; per-problem sign-flip p-values for steering)."""
    ctx = f"{model}, profile {profile}, L={s['layer']}, patterns {s['patterns']}"
    at, g, ev, slope = s["at"], s["gap"], s["event"], s["slope"]
    strengths = " / ".join(f"{x:+g}" for x in s["strengths"])
    rows = [
        {"key": "fig5.band_means", "metric": "mean projection over bands, backtracking vs not", "section": "Fig 5",
         "value": f"{_f(g['backtracking'])} vs {_f(g['other'])}", "n": f"{s['n_backtracking']} vs "
         f"{s['n_rollouts'] - s['n_backtracking']} rollouts, {g['n_problems']} problems",
         "null": f"gap {_f(g['gap'])}, CI over problems {_f(g['low'])}..{_f(g['high'])}",
         "context": f"all bands pooled, bands of {band} tokens; {ctx}"},
        {"key": "fig6.event_locked_0", "metric": "projection at the event (offset 0)", "section": "Fig 6",
         "value": at["backtracking"][0], "ci": (ev["event_low"], ev["event_high"]),
         "n": f"{s['n_events']} events ({s['dropped']} dropped: partial window)",
         "null": f"matched index {_f(at[CONTROLS[0]][0])} (event minus it {_f(ev['gap'])}, CI {_f(ev['gap_low'])}.."
         f"{_f(ev['gap_high'])}); placebo {_f(at[CONTROLS[1]][0])}", "context": ctx},
        {"key": "fig4.backtracking_presence", "metric": "backtracking presence under steering", "section": "Fig 4",
         "value": " / ".join(_f(x, ".2f") for x in s["presence"]),
         "n": " / ".join(map(str, s["n"])) + " rollouts (all; answered share "
         + " / ".join(_f(x, ".2f") for x in s["answer_rate"]) + ")",
         "null": "per-problem sign-flip p vs unsteered " + " / ".join(map(_p, s["p"])),
         "context": f"strengths {strengths} %; {ctx}"},
    ]  # fmt: skip
    if slope:
        rows.append({"key": "fig4.backtracking_slope", "section": "Fig 4",
                     "metric": "backtracking presence: per-problem slope per % of norm (paper: negative)",
                     "value": slope["effect"], "ci": (slope["low"], slope["high"]), "n": f"{slope['n_problems']} problems",
                     "null": f"per-problem sign-flip p = {_p(slope['p'])} (side: negative)",
                     "context": f"strengths {strengths} %; {ctx}"})  # fmt: skip
    return rows
