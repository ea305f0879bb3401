"""Notebook 05's reading: one summary of its numbers, the plain-language verdict computed from it,
and the scorecard rows."""

from __future__ import annotations

import numpy as np

CONTROLS = ("matched index, no backtracking", "placebo words")


def summarize(has: np.ndarray, curves: dict, events: dict, rates_table, window: int, layer: int) -> dict:
    """The headline numbers: band means per group, the event-locked values at offsets -W, -W/2, 0 for
    the events and both controls, and the axis's backtracking presence per steering strength."""
    with np.errstate(all="ignore"):
        bands = {("backtracking" if k else "no backtracking"): float(np.nanmean(v[1])) for k, v in curves.items()}
    at = {name: {off: float(events[name][1][window + off]) for off in (-window, -(window // 2), 0)}
          for name in ("backtracking", *CONTROLS)}  # fmt: skip
    axis_rows = rates_table[rates_table.direction.isin(["axis", "none"])].sort_values("strength_%")
    return {
        "layer": layer,
        "n_rollouts": int(len(has)),
        "n_backtracking": int(np.sum(has)),
        "n_events": int(events["n_events"]),
        "bands": bands,
        "at": at,
        "strengths": [float(s) for s in axis_rows["strength_%"]],
        "presence": [float(x) for x in axis_rows.backtracking],
        "answered": [int(n) for n in axis_rows.n_answered],
    }


def verdict(s: dict, model: str, profile: str) -> str:
    """Plain reading of :func:`summarize`'s numbers, the event against its two controls."""
    at = s["at"]
    event0, controls0 = at["backtracking"][0], [at[c][0] for c in CONTROLS]
    if not s["n_events"]:
        reading = "No backtracking events in this run: nothing to lock to."
    elif s["n_events"] < 10:
        reading = f"With only {s['n_events']} events this run is too small to tell a drop from noise."
    elif event0 < min(controls0):
        reading = "The event value sits below both controls."
    else:
        reading = "The controls reach the same level or lower: this run shows **no backtracking-specific drop**."
    presence = " / ".join("n/a" if np.isnan(x) else f"{x:.2f}" for x in s["presence"])
    return "\n".join([
        f"**{model}, profile `{profile}`, layer {s['layer']}**: {s['n_rollouts']} rollouts, {s['n_backtracking']} "
        f"backtrack ({s['n_events']} events).",
        "- Mean projection over bands: " + ", ".join(f"{k} {v:+.4f}" for k, v in s["bands"].items())
        + " (paper, band 3000: -0.023 vs -0.004).",
        f"- At the event (offset 0): {event0:+.4f}; matched-index control {controls0[0]:+.4f}; placebo words "
        f"{controls0[1]:+.4f} (paper: -0.043 at 0, -0.014 at -25). {reading}",
        f"- Backtracking presence under steering ({', '.join(f'{x:+g}' for x in s['strengths'])}%): {presence} over "
        f"{' / '.join(map(str, s['answered']))} answered rollouts (paper 0.390 / 0.267 / 0.244 / 0.253 / 0.221).",
    ])  # fmt: skip


def scorecard_rows(s: dict, model: str, profile: str, band: int) -> list[dict]:
    """Scorecard rows of notebook 05."""
    ctx = f"{model}, profile {profile}, L={s['layer']}"
    at = s["at"]
    return [
        {"key": "fig5.band_means", "metric": "mean projection over bands, backtracking vs not", "section": "Fig 5",
         "value": " vs ".join(f"{v:+.4f}" for v in s["bands"].values()),
         "n": f"{s['n_backtracking']} vs {s['n_rollouts'] - s['n_backtracking']} rollouts",
         "context": f"bands of {band} tokens; {ctx}"},
        {"key": "fig6.event_locked_0", "metric": "projection at the event (offset 0)", "section": "Fig 6",
         "value": at["backtracking"][0], "n": f"{s['n_events']} events",
         "null": f"matched index {at[CONTROLS[0]][0]:+.4f}; placebo {at[CONTROLS[1]][0]:+.4f}", "context": ctx},
        {"key": "fig4.backtracking_presence", "metric": "backtracking presence under steering", "section": "Fig 4",
         "value": " / ".join("n/a" if np.isnan(x) else f"{x:.2f}" for x in s["presence"]),
         "n": " / ".join(map(str, s["answered"])) + " answered",
         "context": f"strengths {' / '.join(f'{x:+g}' for x in s['strengths'])} %; {ctx}"},
    ]  # fmt: skip
