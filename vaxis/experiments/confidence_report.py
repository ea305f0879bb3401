"""Notebook 04's reading: one summary of the numbers, the plain-language verdict computed from
it, and the scorecard rows (each with its CI, sample size and null control)."""

from __future__ import annotations

import numpy as np

from ..core.evaluate import auroc_columns
from ..core.nulls import claim_p, min_draws, null_range
from .confidence import QUESTIONS, Rollouts, Sweep, Verbalized
from .confidence_answers import logit_confidence
from .confidence_stats import (
    SIDE,
    auroc_p,
    binary_auroc_ci,
    framing_flip,
    log_odds_effects,
    spearman_ci,
    yes_rate_effects,
)


def _confident(pre: np.ndarray, conf: np.ndarray, n_boot: int, seed: int) -> dict:
    """AUROC of the axis's pre-response projection (column 0 of ``pre``) for confident (> 0.5) vs not, with CI,
    and the random directions' AUROCs (columns 1+) as its null (p on the paper's side: higher when confident)."""
    valid = np.isfinite(conf)
    a = binary_auroc_ci(pre[valid, 0], conf[valid] > 0.5, n_boot, seed)
    labels = conf[valid] > 0.5
    null = auroc_columns(pre[valid, 1:], labels) if 0 < labels.sum() < len(labels) else np.array([])
    return {"auroc": tuple(float(x) for x in a[:3]), "n_pos": a[3], "n_neg": a[4], "n_valid": int(valid.sum()),
            "null": null, "p": claim_p(float(a[0]), null, 1)}  # fmt: skip


def summarize(
    ro: Rollouts, ver: Verbalized, sampled: dict, sweep: Sweep, main_layer: int, n_boot: int = 200, seed: int = 0,
    kept=None,
) -> dict:  # fmt: skip
    """Every headline number of notebook 04 at the axis's main layer, with CIs, nulls and p-values on the
    paper's side. ``kept``: the rollouts ``ver`` and ``sampled`` were read on (those with an extractable answer,
    as the authors keep; default all)."""
    kept = np.arange(len(ro.texts)) if kept is None else np.asarray(kept, dtype=int)
    li = ver.layers.index(main_layer)
    pre = ver.readouts["correct"].pre[:, li].numpy()  # (n_kept, K): the axis, then random directions
    conf = sampled["confidence"]
    correct = np.array([ro.correct[i] is True for i in kept])
    vs_correct = binary_auroc_ci(pre[:, 0], correct, n_boot, seed)
    p_yes = logit_confidence(ver.readouts["correct"])
    out = {
        "layer": main_layer,
        "n_problems": len(ro.texts),
        "n_kept": len(kept),
        "accuracy": ro.accuracy,
        "no_answer": int(sum(c is None for c in ro.correct)),
        "mean_rollout_tokens": float(ro.n_tokens.mean()),
        "verbalized": {f: (float(ver.auroc[f][li]), float(ver.low[f][li]), float(ver.high[f][li])) for f in QUESTIONS},
        "verbalized_random": {f: null_range(ver.random[f][:, li]) if len(ver.random[f]) else None for f in QUESTIONS},
        "verbalized_p": auroc_p(ver, li),
        "flip": framing_flip(ver, li, n_boot, seed),
        "n_random": len(ver.random["correct"]),
        "confident": _confident(pre, conf, n_boot, seed),
        "confident_strict": _confident(pre, sampled["strict"]["confidence"], n_boot, seed),
        "sampled_counts": {k: int(sampled[k].sum()) for k in ("yes", "no", "invalid")},
        "sampled_counts_strict": {k: int(sampled["strict"][k].sum()) for k in ("yes", "no", "invalid")},
        "vs_correct": (float(vs_correct[0]), float(vs_correct[1]), float(vs_correct[2]), vs_correct[3], vs_correct[4]),
        "spearman_sampled": spearman_ci(pre[:, 0], conf, n_boot, seed),
        "spearman_logit": spearman_ci(pre[:, 0], p_yes, n_boot, seed),
        "sampled_vs_logit": spearman_ci(conf, p_yes, n_boot, seed),
    }
    table = sweep.table()
    out["sweep"] = table
    out["dropped"] = {
        f: [s for s, v in zip(table["strength_%"], table[f"valid[{f}]"]) if np.isfinite(v) and v < 0.5]
        for f in QUESTIONS
    }
    out["log_odds"] = {f: log_odds_effects(sweep, f) for f in QUESTIONS}
    out["yes_effects"] = {f: yes_rate_effects(sweep, f, seed=seed) for f in QUESTIONS}
    out["yes_effects_strict"] = {f: yes_rate_effects(sweep, f, "strict", seed=seed) for f in QUESTIONS}
    out["n_steer_chats"] = len(sweep.log_odds_at(next(iter(QUESTIONS)), "none", 0.0))
    out["n_steer_problems"] = len(np.unique(sweep.groups)) if sweep.groups is not None else out["n_steer_chats"]
    return out


def _p(p) -> str:
    return "p n/a" if not np.isfinite(p) else f"p = {p:.3f}"


def _contrast(yc: dict) -> str:
    """The yes-rate contrast of the extreme strengths, or why there is none (a strength dropped)."""
    head = f"+{yc['strength']:g}% minus -{yc['strength']:g}%"
    if not np.isfinite(yc["effect"]):
        return f"{head}: n/a (a strength dropped: over half its answers unparseable)"
    return f"{head} = {yc['effect']:+.3f}, per-problem sign-flip {_p(yc['p'])}"


def _null_text(null, p, what: str = "random directions") -> str:
    """``"<what>: median m (95% a..b), n draws, p = x"`` plus a flag when fewer draws than a 5% test needs."""
    null = np.asarray(null, dtype=float)
    if not len(null):
        return f"no {what} read"
    med, lo, hi = null_range(null)
    flag = "" if len(null) >= min_draws(0.05) else f" (fewer than {min_draws(0.05)} draws: not a 5% test)"
    return f"{what}: median {med:+.3f} (95% {lo:+.3f}..{hi:+.3f}), {len(null)} draws, {_p(p)}{flag}"


def _fmt_ci(t) -> str:
    return f"{t[0]:.3f} (95% CI {t[1]:.3f}-{t[2]:.3f})" if np.isfinite(t[0]) else "not measurable"


def _rates(table, col: str) -> str:
    return " / ".join("dropped" if not np.isfinite(v) else f"{v:.3f}" for v in table[col])


def _steering_line(s: dict, f: str) -> str:
    table, lo, ye = s["sweep"], s["log_odds"][f], s["yes_effects"][f]
    c, yc = lo["contrast"], ye["contrast"]
    want = "rise" if SIDE[f] > 0 else "fall"
    per = ", ".join(f"{r['strength']:+g}%: {r['effect']:+.2f} ({_p(r['p'])}, {r['null_n']} directions)"
                    for r in lo["per_strength"] if r["null_n"])  # fmt: skip
    return (
        f'- Steering, "{f}?" on {s["n_steer_chats"]} partial responses of {s["n_steer_problems"]} problems '
        f"(the paper: Yes should {want} with positive steering): yes-rate {_rates(table, f'yes_rate[{f}]')} over "
        f"{', '.join(f'{x:+g}' for x in table['strength_%'])}% (strict parser: {_rates(table, f'yes_rate_strict[{f}]')}); "
        f"{_contrast(yc)} "
        f"(n={yc['n']}; it asks whether steering moves the yes-rate at all, not whether the axis moves it more than a "
        f"random direction would). Length-free log-odds, +{c['strength']:g}% minus -{c['strength']:g}%: "
        f"{c['value']:+.3f} against {_null_text(c['null'], c['p'])}"
        + (f"; per strength against unsteered: {per}" if per else "")
        + "."
    )


def verdict(s: dict, model: str, profile: str) -> str:
    """Plain reading of :func:`summarize`'s numbers, each against its measured null on the paper's side."""
    L = s["layer"]
    lines = [
        f"**{model}, profile `{profile}`, layer {L}**, {s['n_problems']} problems; accuracy {s['accuracy']:.1%}; "
        f"{s['no_answer']} rollouts without an extractable answer dropped from the confidence readouts, as the "
        f"authors drop them ({s['n_kept']} kept; mean {s['mean_rollout_tokens']:.0f} new tokens)."
    ]
    c, i = s["verbalized"]["correct"], s["verbalized"]["incorrect"]
    vp, fl = s["verbalized_p"], s["flip"]
    flips = np.isfinite(fl["p"]) and fl["p"] <= 0.05 and fl["ci"][0] > 0
    lines.append(
        f'- Prefilled Yes vs No at the response token: AUROC {_fmt_ci(c)} for "correct?" ({_p(vp["correct"])} against '
        f'{s["n_random"]} random directions, high side) and {_fmt_ci(i)} for "incorrect?" ({_p(vp["incorrect"])}, '
        "low side; paper 0.998 / 0.024). Telling one fixed token from another is easy for most directions, so the "
        f'test of *value* is the flip: the Yes-minus-No projection gap is {fl["gap"]["correct"]:+.4f} for "correct?" '
        f'and {fl["gap"]["incorrect"]:+.4f} for "incorrect?"; their difference {_fmt_ci((fl["value"], *fl["ci"]))} '
        f"(n={fl['n']} problems, Yes and No resampled together) against {_null_text(fl['null'], fl['p'])}: "
        + (
            "the axis's gap flips with the question's meaning beyond random directions."
            if flips
            else "**no flip beyond random directions**: the axis reads the answer token more than what it means."
        )
    )
    conf, cs = s["confident"], s["confident_strict"]
    sc = s["sampled_counts"]
    lines.append(
        f"- Sampled confidence ({sc['yes']} yes, {sc['no']} no, {sc['invalid']} unparseable by the authors' parser; "
        f"{conf['n_valid']} problems with a parseable answer): the last-10-token projection separates confident from "
        f"unconfident problems with AUROC {_fmt_ci(conf['auroc'])} ({conf['n_pos']} confident, {conf['n_neg']} not; "
        f"paper 0.759) against {_null_text(conf['null'], conf['p'])}. Strict parser: {_fmt_ci(cs['auroc'])} "
        f"({cs['n_valid']} problems)."
    )
    vc, rho = s["vs_correct"], s["spearman_logit"]
    lines.append(
        f"- Against whether the answer was actually right: AUROC {_fmt_ci(vc)} ({vc[3]} right, {vc[4]} wrong). "
        f"Against the model's own P(Yes)/(P(Yes)+P(No)): Spearman {_fmt_ci(rho[:3])} (n={rho[3]})."
    )
    lines += [_steering_line(s, f) for f in QUESTIONS]
    table = s["sweep"]
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
    """Scorecard rows of notebook 04: each number with its CI, n and the null it is read against (with p)."""
    ctx = f"{model}, profile {profile}, L={s['layer']}"
    n = f"{s['n_kept']} problems ({s['no_answer']} without an answer dropped)"
    table = s["sweep"]
    strengths = " / ".join(f"{x:+g}" for x in table["strength_%"])
    rows = []
    for key, f in (("fig3.verbalized_auroc", "correct"), ("fig3.verbalized_auroc_inverted", "incorrect")):
        v, r = s["verbalized"][f], s["verbalized_random"][f]
        null = f"{s['n_random']} random directions: median {r[0]:.3f} (95% {r[1]:.3f}-{r[2]:.3f}), " if r else ""
        rows.append({"key": key, "value": v[0], "ci": v[1:], "n": n,
                     "null": null + f"{_p(s['verbalized_p'][f])} ({'high' if SIDE[f] > 0 else 'low'} side)",
                     "context": ctx})  # fmt: skip
    fl = s["flip"]
    rows.append({"key": "fig3.framing_flip", "section": "Fig 3",
                 "metric": 'Yes-minus-No projection gap at the response token, "correct?" minus "incorrect?"',
                 "value": fl["value"], "ci": fl["ci"], "n": f"{fl['n']} problems (Yes and No resampled together)",
                 "null": _null_text(fl["null"], fl["p"]), "context": f"paper: the sign flips (0.998 vs 0.024); {ctx}"})  # fmt: skip
    for key, c, parser in (("fig3.sampled_confidence_auroc", s["confident"], "authors' parser"),
                           ("fig3.sampled_confidence_auroc_strict", s["confident_strict"], "strict parser")):  # fmt: skip
        rows.append({"key": key, "section": "Fig 3", "value": c["auroc"][0], "ci": c["auroc"][1:3],
                     "metric": f"last-10-token projection, confident (> 0.5) vs not (AUROC), {parser}",
                     "n": f"{c['n_pos']} confident / {c['n_neg']} not", "null": _null_text(c["null"], c["p"]),
                     "context": f"last 10 tokens; {ctx}"})  # fmt: skip
    vc = s["vs_correct"]
    rows.append({"key": "fig3.projection_vs_correct", "metric": "last-10-token projection, right vs wrong answers (AUROC)",
                 "section": "Fig 3", "value": vc[0], "ci": vc[1:3], "n": f"{vc[3]} right / {vc[4]} wrong",
                 "null": "0.5", "context": ctx})  # fmt: skip
    rho = s["spearman_logit"]
    rows.append({"key": "fig3.projection_vs_logit_confidence", "metric": "Spearman: projection vs P(Yes)/(P(Yes)+P(No))",
                 "section": "Fig 3", "value": rho[0], "ci": rho[1:3], "n": f"{rho[3]} problems", "null": "0",
                 "context": ctx})  # fmt: skip
    steer_n = f"{s['n_steer_chats']} partial responses of {s['n_steer_problems']} problems, {len(table)} strengths"
    for f in QUESTIONS:
        for suffix, parser, eff in (("", "authors' parser", s["yes_effects"][f]),
                                    ("_strict", "strict parser", s["yes_effects_strict"][f])):  # fmt: skip
            yc = eff["contrast"]
            rows.append({"key": f"fig4.yes_rate_{f}{suffix}", "value": _rates(table, f"yes_rate{suffix}[{f}]"),
                         "n": steer_n, "section": "Fig 4",
                         "metric": f'"{f}?" yes-rate at {strengths} % steering ({parser})',
                         "null": f"{_contrast(yc)} (steering vs none, not vs random directions)",
                         "context": f"averaged per partial response; strengths {strengths} %; {ctx}"})  # fmt: skip
        c = s["log_odds"][f]["contrast"]
        rows.append({"key": f"fig4.log_odds_contrast_{f}", "section": "Fig 4", "value": c["value"], "ci": c["ci"],
                     "metric": f'"{f}?" log P(Yes) - log P(No), +{c["strength"]:g}% minus -{c["strength"]:g}% steering',
                     "n": steer_n, "null": _null_text(c["null"], c["p"], "random directions and their negations"),
                     "context": f"paper side: {'rises' if SIDE[f] > 0 else 'falls'}; {ctx}"})  # fmt: skip
    lengths = table["length_fold_vs_0"].to_numpy()
    if np.isfinite(lengths).any():
        rows.append({"key": "sec7.steer_length", "value": " / ".join(f"{x:.2f}x" for x in lengths if np.isfinite(x)),
                     "n": f"cut at the limit: {' / '.join(f'{c:.0%}' for c in table['cut_at_limit'] if np.isfinite(c))}",
                     "context": f"rollout length fold vs 0%, strengths {' / '.join(f'{st:+g}' for st, x in zip(table['strength_%'], lengths) if np.isfinite(x))}; {ctx}"})  # fmt: skip
    return rows
