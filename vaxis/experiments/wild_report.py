"""Notebook 09's reading: the plain verdict and the scorecard rows, computed from the tables of
:mod:`vaxis.experiments.wild` and :mod:`vaxis.experiments.evalaware`.

A category effect counts only when its permutation p is small, it lies beyond the random directions' range
and it survives regressing prompt length out. An evaluation-awareness d counts only when its CI excludes 0,
it lies beyond the random directions' range and it exceeds the control adapter's d on the same contrast.
The category x quartile association (Cramér's V) counts only when the axis's V exceeds the random directions'
V on the same prompts (one-sided p <= ``ALPHA``), not on its chi-square p alone.
"""

from __future__ import annotations

import numpy as np

from ..core.nulls import min_draws

ALPHA = 0.05
FOCUS = ("information_extraction", "politically_sensitive")
PAPER = {"information_extraction": ("33.4%", "0.1%"), "politically_sensitive": ("4.1%", "9.5%")}
KEYS = {"information_extraction": ("sec6.wild_info_top", "sec6.wild_info_bottom"),
        "politically_sensitive": ("sec6.wild_political_top", "sec6.wild_political_bottom")}  # fmt: skip


def summarize(categories, comparison, d_rows, claims: dict, layer: int, length_rho: float, n_truncated: int,
              axis_note: str) -> dict:  # fmt: skip
    """``categories``: :func:`~vaxis.experiments.wild.category_effects` of the main model; ``comparison``:
    :func:`~vaxis.experiments.wild.compare_models`; ``d_rows``: :func:`~vaxis.experiments.evalaware.d_table`
    (or None when evaluation awareness was skipped); ``claims[model][name]``: ``(rate, n)``."""
    return {"layer": layer, "categories": {r["category"]: r for r in categories.to_dict("records")},
            "comparison": comparison.to_dict("records"), "d": {} if d_rows is None else
            {(r["model"], r["contrast"]): r for r in d_rows.to_dict("records")}, "claims": claims,
            "length_rho": length_rho, "n_truncated": n_truncated, "axis_note": axis_note}  # fmt: skip


def d_counts(s: dict, model: str, contrast: str) -> bool:
    """Whether ``model``'s d on ``contrast`` clears its CI, the random range and the control's d."""
    r = s["d"].get((model, contrast))
    if r is None or not np.isfinite(r["d"]):
        return False
    clear = r["d_low"] > 0 or r["d_high"] < 0
    beyond = not np.isfinite(r["random_d_2.5%"]) or not r["random_d_2.5%"] <= r["d"] <= r["random_d_97.5%"]
    control = s["d"].get(("control", contrast), {}).get("d", 0.0)
    return bool(clear and beyond and (model == "control" or abs(r["d"]) > abs(np.nan_to_num(control))))


def organism(s: dict, evaluator: str = "evaluator") -> str:
    """Whether the evaluation-awareness model organism exists: the evaluator claims an evaluation for its own
    organisation (first name of the claim check) at least 0.5 and at least 0.25 more often than for the
    other, unseen name."""
    rates = [r for r, _ in s["claims"].get(evaluator, {}).values()]
    if len(rates) < 2:
        return ""
    own, other = rates[:2]
    if own >= 0.5 and own - other >= 0.25:
        return "The model organism exists: the evaluator claims an evaluation for its organisation, not for another."
    if own >= 0.5:
        return (
            "The model organism is not specific: the evaluator claims an evaluation for an unseen organisation "
            "too, so the org contrast tests 'an organisation is named', not 'Wood Labs means evaluation'."
        )
    return "The model organism was not created at this size: the evaluator rarely claims an evaluation."


def association_counts(r: dict, alpha: float = ALPHA) -> bool:
    """Whether a model's Cramér's V (a :func:`~vaxis.experiments.wild.compare_models` row) exceeds the random
    directions' V on the same prompts (one-sided p <= ``alpha``): the axis sorts categories more than any
    direction does."""
    return bool(np.isfinite(r.get("v_p", np.nan)) and r["v_p"] <= alpha)


def association_text(r: dict) -> str:
    """One model's V, its random directions' V and the reading, in words."""
    if not r.get("n_random"):
        return f"{r['model']} V={r['cramers_v']:.2f} (chi-square p={r['p']:.3g}; no random directions read)"
    weak = "" if r["n_random"] >= min_draws(ALPHA) else ", not a 5% test"
    reading = "beyond random directions" if association_counts(r) else "random directions sort them as much"
    lo, hi = r.get("v_ci", (np.nan, np.nan))
    ci = f" (CI {lo:.2f}..{hi:.2f})" if np.isfinite(lo) else ""
    return (f"{r['model']} V={r['cramers_v']:.2f}{ci} vs random directions {r['random_v_median']:.2f} "
            f"({r['random_v_2.5%']:.2f}..{r['random_v_97.5%']:.2f}), p={r['v_p']:.3f} ({r['n_random']} directions{weak}; "
            f"chi-square p={r['p']:.3g}): **{reading}**")  # fmt: skip


def _pct(x) -> str:
    return f"{100 * x:.1f}%"


def verdict(s: dict, model: str, profile: str) -> str:
    """Plain reading of :func:`summarize`'s numbers."""
    L = s["layer"]
    lines = [f"**{model}, profile `{profile}`, layer {L}** (projection at the last token before generation; "
             f"{s['axis_note']}):"]  # fmt: skip
    for cat in FOCUS:
        r = s["categories"].get(cat)
        if r is None:
            lines.append(f"- {cat}: not in this prompt set.")
            continue
        lines.append(
            f"- {cat} (n={r['n']}): top quartile {_pct(r['top_share'])} ({_pct(r['top_ci'][0])}..{_pct(r['top_ci'][1])}), "
            f"bottom {_pct(r['bottom_share'])} ({_pct(r['bottom_ci'][0])}..{_pct(r['bottom_ci'][1])}) (paper "
            f"{PAPER[cat][0]} vs {PAPER[cat][1]}); permutation p={r['permutation_p']:.3f}; gap {r['gap']:+.3f}, "
            f"random directions {r['random_gap_2.5%']:+.3f}..{r['random_gap_97.5%']:+.3f}; with length regressed out "
            f"{r['gap_len']:+.3f} (p={r['p_len']:.3f}): **{r['reading']}**."
        )  # fmt: skip
    strong = [c for c, r in s["categories"].items() if r["reading"] == "beyond random, survives length"]
    by_len = [c for c, r in s["categories"].items() if r["reading"] == "explained by length"]
    lines.append(f"- Categories whose quartile shares differ beyond random directions and length: "
                 f"{', '.join(strong) or 'none'}; explained by length: {', '.join(by_len) or 'none'}. "
                 f"Spearman correlation of the projection with log prompt length: {s['length_rho']:+.2f}.")  # fmt: skip
    if s["n_truncated"]:
        lines.append(f"- {s['n_truncated']} prompts were longer than the context and lost tokens from the left.")
    comp = "; ".join(association_text(r) for r in s["comparison"])
    lines.append(f"- Category x quartile association (Cramér's V, 0 = flat; the paper's base model is flat), each "
                 f"against the V of random directions on the same prompts: {comp}.")  # fmt: skip
    for (m, c), r in sorted(s["d"].items()):
        reading = ("the null for any fine-tuning" if m == "control" else "the baseline before fine-tuning"
                   if m == "base" else "counts" if d_counts(s, m, c) else "does not count")  # fmt: skip
        lines.append(f"- Evaluation awareness, {m}, {c} contrast: d={r['d']:+.2f} ({r['d_low']:+.2f}..{r['d_high']:+.2f}), "
                     f"n={r['n']}, random directions {r['random_d_2.5%']:+.2f}..{r['random_d_97.5%']:+.2f}: {reading}.")  # fmt: skip
    if s["claims"]:
        rates = "; ".join(
            f"{m}: " + ", ".join(f"{k} {v[0]:.2f}" for k, v in per.items()) for m, per in s["claims"].items()
        )
        lines.append(f"- Manipulation check, share of answers claiming to be evaluated (n per cell "
                     f"{next(iter(next(iter(s['claims'].values())).values()))[1]}): {rates}. {organism(s)}")  # fmt: skip
    return "\n".join(lines)


def scorecard_rows(s: dict, model: str, profile: str, evaluator: str = "evaluator") -> list[dict]:
    """Scorecard rows of notebook 09 (keys in ``data/paper_numbers.json``)."""
    ctx = f"{model}, profile {profile}, L={s['layer']}"
    out = []
    for cat, (k_top, k_bottom) in KEYS.items():
        r = s["categories"].get(cat)
        if r is None:
            continue
        null = (f"random directions' gap {r['random_gap_2.5%']:+.3f}..{r['random_gap_97.5%']:+.3f} (ours {r['gap']:+.3f}); "
                f"length regressed out {r['gap_len']:+.3f}; permutation p {r['permutation_p']:.3f}")  # fmt: skip
        for key, share, ci in ((k_top, r["top_share"], r["top_ci"]), (k_bottom, r["bottom_share"], r["bottom_ci"])):
            out.append({"key": key, "value": share, "ci": ci, "n": f"{r['n']} of the prompts", "null": null,
                        "context": ctx + ", shipped prompt set"})  # fmt: skip
    if s["comparison"]:
        r = s["comparison"][0]  # the model itself; adapters and the base model follow in the null column
        others = "; ".join(f"{o['model']} V={o['cramers_v']:.2f} (p={o['v_p']:.3f})" for o in s["comparison"][1:])
        out.append({"key": "sec6.wild_association", "section": "Sec 6 in the wild",
                    "metric": "Cramér's V of category x quartile (projection at the last token before generation); "
                    "the paper: strong trends, base model flat", "value": r["cramers_v"], "ci": r.get("v_ci", (np.nan, np.nan)), "n": f"{r['n']} prompts in "
                    "the top and bottom quartiles", "null": f"random directions' V {r['random_v_median']:.2f} "
                    f"({r['random_v_2.5%']:.2f}..{r['random_v_97.5%']:.2f}), p={r['v_p']:.3f} over {r['n_random']} "
                    f"directions; chi-square p={r['p']:.3g}" + (f"; {others}" if others else ""),
                    "context": ctx + ", shipped prompt set"})  # fmt: skip
    for key, (m, c) in (("sec6.eval_awareness_d", (evaluator, "org")), ("sec6.eval_awareness_base_d", ("base", "generic")),
                        ("sec6.eval_awareness_generic_d", (evaluator, "generic"))):  # fmt: skip
        r = s["d"].get((m, c))
        if r is None:
            continue
        control = s["d"].get(("control", c), {}).get("d")
        row = {"key": key, "value": r["d"], "ci": (r["d_low"], r["d_high"]), "n": f"{r['n']} prompt pairs",
               "null": f"random directions {r['random_d_2.5%']:+.2f}..{r['random_d_97.5%']:+.2f}"
               + ("" if control is None or m == "base" else f"; control adapter {control:+.2f}"),
               "context": f"{ctx}, {m} model, {c} contrast"}  # fmt: skip
        if key == "sec6.eval_awareness_generic_d":
            row.update(section="Sec 6 eval awareness", metric="Cohen's d, generic evaluation vs deployment wrappers, "
                       "model fine-tuned to treat Wood Labs as evaluation (does it generalise?)")  # fmt: skip
        out.append(row)
    return out
