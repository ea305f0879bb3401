"""Notebook 04's reading: one summary of the numbers, the plain-language verdict computed from
it, and the scorecard rows (each with its CI, sample size and null control)."""

from __future__ import annotations

import numpy as np

from .confidence import QUESTIONS, Rollouts, Sweep, Verbalized, binary_auroc_ci, logit_confidence, spearman_ci


def summarize(
    ro: Rollouts, ver: Verbalized, sampled: dict, sweep: Sweep, main_layer: int, n_boot: int = 200, seed: int = 0
) -> dict:
    """Every headline number of notebook 04 at the axis's main layer, with CIs and nulls."""
    li = ver.layers.index(main_layer)
    pre = ver.readouts["correct"].pre[:, li, 0].numpy()
    conf = sampled["confidence"]
    valid = np.isfinite(conf)
    confident = binary_auroc_ci(pre[valid], conf[valid] > 0.5, n_boot, seed)
    correct_known = np.array([c is not None for c in ro.correct])
    correct = np.array([c is True for c in ro.correct])
    vs_correct = binary_auroc_ci(pre[correct_known], correct[correct_known], n_boot, seed)
    p_yes = logit_confidence(ver.readouts["correct"])
    rand_flip = ver.flip_random[:, li] if len(ver.flip_random) else np.array([])
    out = {
        "layer": main_layer,
        "n_problems": len(ro.texts),
        "accuracy": ro.accuracy,
        "no_answer": int((~correct_known).sum()),
        "mean_rollout_tokens": float(ro.n_tokens.mean()),
        "verbalized": {f: (float(ver.auroc[f][li]), float(ver.low[f][li]), float(ver.high[f][li])) for f in QUESTIONS},
        "verbalized_random": {
            f: (float(ver.random[f][:, li].min()), float(ver.random[f][:, li].max())) if len(ver.random[f]) else None
            for f in QUESTIONS
        },
        "flip": float(ver.flip[li]),
        "flip_random_max": float(np.abs(rand_flip).max()) if len(rand_flip) else float("nan"),
        "n_random": len(rand_flip),
        "sampled_valid": int(valid.sum()),
        "confident": (float(confident[0]), float(confident[1]), float(confident[2]), confident[3], confident[4]),
        "vs_correct": (float(vs_correct[0]), float(vs_correct[1]), float(vs_correct[2]), vs_correct[3], vs_correct[4]),
        "spearman_sampled": spearman_ci(pre, conf, n_boot, seed),
        "spearman_logit": spearman_ci(pre, p_yes, n_boot, seed),
        "sampled_vs_logit": spearman_ci(conf, p_yes, n_boot, seed),
    }
    table = sweep.table()
    out["sweep"] = table
    out["dropped"] = {
        f: [s for s, v in zip(table["strength_%"], table[f"valid[{f}]"]) if np.isfinite(v) and v < 0.5]
        for f in QUESTIONS
    }
    dist = {f: sweep.distance_from_band(f) for f in QUESTIONS}
    out["distance_from_band"] = dist
    return out


def _fmt_ci(t) -> str:
    return f"{t[0]:.3f} (95% CI {t[1]:.3f}-{t[2]:.3f})" if np.isfinite(t[0]) else "not measurable"


def verdict(s: dict, model: str, profile: str) -> str:
    """Plain reading of :func:`summarize`'s numbers, each against its measured null."""
    L = s["layer"]
    lines = [
        f"**{model}, profile `{profile}`, layer {L}**, {s['n_problems']} problems; accuracy {s['accuracy']:.1%} "
        f"({s['no_answer']} rollouts without an extractable answer; mean {s['mean_rollout_tokens']:.0f} new tokens)."
    ]
    c, i = s["verbalized"]["correct"], s["verbalized"]["incorrect"]
    rc = s["verbalized_random"]["correct"]
    flips = abs(s["flip"]) > s["flip_random_max"] and (c[1] > i[2] or i[1] > c[2])  # beyond random, CIs apart
    lines.append(
        f'- Prefilled Yes vs No at the response token: AUROC {_fmt_ci(c)} for "correct?" and {_fmt_ci(i)} for '
        f'"incorrect?" (paper 0.998 / 0.024)'
        + (f'; random directions span {rc[0]:.3f}-{rc[1]:.3f} on "correct?"' if rc else "")
        + ". Telling one fixed token from another is easy for most directions, so the test of *value* is the "
        f"flip between framings: {s['flip']:+.3f} for the axis against at most {s['flip_random_max']:.3f} (in size) "
        f"for {s['n_random']} random directions: "
        + (
            "the axis flips with the question's meaning (the two CIs do not overlap)."
            if flips
            else "**no flip**: the axis reads the answer token, not what it means in the question."
        )  # fmt: skip
    )
    conf = s["confident"]
    lines.append(
        f"- Sampled confidence ({s['sampled_valid']} problems with a parseable answer): the last-10-token projection "
        f"separates confident from unconfident problems with AUROC {_fmt_ci(conf)} ({conf[3]} confident, "
        f"{conf[4]} not; paper 0.759)."
    )
    vc = s["vs_correct"]
    rho = s["spearman_logit"]
    lines.append(
        f"- Against whether the answer was actually right: AUROC {_fmt_ci(vc)} ({vc[3]} right, {vc[4]} wrong). "
        f"Against the model's own P(Yes)/(P(Yes)+P(No)): Spearman {_fmt_ci(rho[:3])} (n={rho[3]})."
    )
    table = s["sweep"]
    for f in QUESTIONS:
        rates = " / ".join("dropped" if not np.isfinite(v) else f"{v:.2f}" for v in table[f"yes_rate[{f}]"])
        d = s["distance_from_band"][f]
        outside = [f"{st:+g}%: {x:+.2f}" for st, x in zip(table["strength_%"], d) if np.isfinite(x) and x != 0]
        measured = [f"{st:+g}%" for st, x in zip(table["strength_%"], d) if np.isfinite(x) and st != 0]
        lines.append(
            f'- Steering, "{f}?" on partial responses: yes-rate {rates} over {", ".join(f"{x:+g}" for x in table["strength_%"])}%. '
            f"Length-free log-odds (random band measured at {', '.join(measured) or 'no strength'}): axis outside "
            "the band at " + (", ".join(outside) if outside else "**no strength**") + "."
        )
    measured = [(st, x, cut) for st, x, cut in zip(table["strength_%"], table["length_fold_vs_0"], table["cut_at_limit"])
                if np.isfinite(x)]  # fmt: skip
    if measured:
        text = ", ".join(f"{st:+g}%: {x:.2f}x ({cut:.0%} cut at the limit)" for st, x, cut in measured)
        all_cut = all(cut == 1 for _, _, cut in measured)
        lines.append(
            f"- Rollout length under steering, as a fold of the unsteered length: {text}"
            + (". Every rollout reached the token limit, so this run cannot see a shortening;" if all_cut else ";")
            + " the critique measured 75x shorter answers at the paper's positive strengths on Qwen3-8B."
        )
    return "\n".join(lines)


def scorecard_rows(s: dict, model: str, profile: str) -> list[dict]:
    """Scorecard rows of notebook 04."""
    ctx = f"{model}, profile {profile}, L={s['layer']}"
    n = f"{s['n_problems']} problems"
    table = s["sweep"]

    def rates(f):
        return " / ".join("dropped" if not np.isfinite(v) else f"{v:.3f}" for v in table[f"yes_rate[{f}]"])

    rows = []
    for key, f in (("fig3.verbalized_auroc", "correct"), ("fig3.verbalized_auroc_inverted", "incorrect")):
        v = s["verbalized"][f]
        r = s["verbalized_random"][f]
        rows.append({"key": key, "value": v[0], "ci": v[1:], "n": n,
                     "null": f"random directions {r[0]:.3f}-{r[1]:.3f}" if r else "", "context": ctx})  # fmt: skip
    rows.append({
        "key": "fig3.framing_flip", "metric": "axis AUROC \"correct?\" minus \"incorrect?\" at the response token",
        "section": "Fig 3", "value": s["flip"], "n": n,
        "null": f"|flip| of {s['n_random']} random directions <= {s['flip_random_max']:.3f}", "context": ctx,
    })  # fmt: skip
    c = s["confident"]
    rows.append({"key": "fig3.sampled_confidence_auroc", "value": c[0], "ci": c[1:3],
                 "n": f"{c[3]} confident / {c[4]} not", "null": "0.5", "context": f"last 10 tokens; {ctx}"})  # fmt: skip
    vc = s["vs_correct"]
    rows.append({"key": "fig3.projection_vs_correct", "metric": "last-10-token projection, right vs wrong answers (AUROC)",
                 "section": "Fig 3", "value": vc[0], "ci": vc[1:3], "n": f"{vc[3]} right / {vc[4]} wrong",
                 "null": "0.5", "context": ctx})  # fmt: skip
    rho = s["spearman_logit"]
    rows.append({"key": "fig3.projection_vs_logit_confidence", "metric": "Spearman: projection vs P(Yes)/(P(Yes)+P(No))",
                 "section": "Fig 3", "value": rho[0], "ci": rho[1:3], "n": f"{rho[3]} problems", "null": "0",
                 "context": ctx})  # fmt: skip
    for key, f in (("fig4.yes_rate_correct", "correct"), ("fig4.yes_rate_incorrect", "incorrect")):
        d = s["distance_from_band"][f]
        rows.append({"key": key, "value": rates(f), "n": f"{len(table)} strengths",
                     "null": "log-odds outside the random band at " + (", ".join(
                         f"{st:+g}%" for st, x in zip(table["strength_%"], d) if np.isfinite(x) and x != 0) or "none"),
                     "context": f"strengths {' / '.join(f'{x:+g}' for x in table['strength_%'])} %; {ctx}"})  # fmt: skip
    lengths = table["length_fold_vs_0"].to_numpy()
    if np.isfinite(lengths).any():
        rows.append({"key": "sec7.steer_length", "value": " / ".join(f"{x:.2f}x" for x in lengths if np.isfinite(x)),
                     "n": f"cut at the limit: {' / '.join(f'{c:.0%}' for c in table['cut_at_limit'] if np.isfinite(c))}",
                     "context": f"rollout length fold vs 0%, strengths {' / '.join(f'{st:+g}' for st, x in zip(table['strength_%'], lengths) if np.isfinite(x))}; {ctx}"})  # fmt: skip
    return rows
