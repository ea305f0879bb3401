"""Notebook 03's reading of an :class:`~vaxis.experiments.axis.Evaluation`: the plain-language
verdict, the scorecard rows, and small helpers for figures and the value trace.

Every sentence of the verdict is computed from the numbers and reads each one against its
*measured* baseline (a null distribution, or what position alone achieves on the same tokens),
never against a fixed cut-off.
"""

from __future__ import annotations

import numpy as np

from .axis import Evaluation
from .extraction_files import Item

#: What the criteria bootstrap holds fixed, said wherever a CI of the held-out AUROC is shown.
CI_NOTE = (
    "95% CI from resampling held-out criteria with the fitted axis held fixed (it covers which criteria were "
    "held out, not the fit); a criterion drawn twice counts its tokens twice, so criteria with more tokens weigh more"
)


def cosine_blocks(cos: np.ndarray) -> dict:
    """Block means of a cross-layer cosine matrix over residual indices ``1..n`` split in thirds
    (early, mid, late): ``{"early vs late", "mid vs late", "blocks"}`` (paper: 0.08, 0.70);
    ``blocks`` names the boundaries, e.g. ``"early 1..10, mid 11..20, late 21..30"``."""
    n = cos.shape[0] - 1
    if n < 3:
        return {"early vs late": float("nan"), "mid vs late": float("nan"), "blocks": "too few layers"}
    early, mid, late = np.array_split(np.arange(1, n + 1), 3)
    return {
        "early vs late": float(cos[np.ix_(early, late)].mean()),
        "mid vs late": float(cos[np.ix_(mid, late)].mean()),
        "blocks": ", ".join(f"{name} {b[0]}..{b[-1]}" for name, b in zip(("early", "mid", "late"), (early, mid, late))),
    }


def layer_ranges(layers: list[int], mask) -> str:
    """``"2..27, 30"`` for the layers where ``mask`` is true."""
    picked = [layer for layer, m in zip(layers, mask) if m]
    if not picked:
        return ""
    runs, start, prev = [], picked[0], picked[0]
    for layer in picked[1:] + [None]:
        if layer is not None and layer == prev + 1:
            prev = layer
            continue
        runs.append(f"{start}..{prev}" if prev > start else str(start))
        if layer is not None:
            start = prev = layer
    return ", ".join(runs)


def _p(p: float) -> str:
    return f"p = {p:.3f}" if np.isfinite(p) else "p n/a"


def verdict(ev: Evaluation, model: str, profile: str) -> str:
    """A plain-language reading of an :class:`Evaluation`, derived from its numbers."""
    m = ev.at(ev.main_layer)
    c = ev.counts
    lo, hi = m["ci"]
    lines = [
        f"**{model}, profile `{profile}`, main layer {ev.main_layer}** ({c['heldout_criteria']} held-out criteria, "
        f"{c['heldout_games']} games, {c['heldout_before_tokens']} before / {c['heldout_after_tokens']} after tokens)."
    ]
    where = "above " if lo > 0.5 else "below " if hi < 0.5 else "**indistinguishable from** "
    lines.append(
        f"- Held-out token AUROC {m['auroc']:.3f} (95% CI {lo:.3f}-{hi:.3f}) is {where}chance. The CI resamples "
        "held-out criteria with the axis fixed; criteria with more tokens weigh more."
    )
    lines += _null_lines(m, c)
    lines += _position_lines(ev, m)
    lines += _contrast_lines(m, c)
    return "\n".join(lines)


def _null_lines(m: dict, c: dict) -> list[str]:
    """The verdict's lines on the random directions and the shuffled-label axes (``m``: the main layer's
    :meth:`Evaluation.at`, ``c``: the counts)."""
    lines = []
    if c["random_directions"]:
        above = "above" if m["auroc"] > m["random_max"] else "**not** above"
        lines.append(
            f"- It is {above} every one of {c['random_directions']} random directions (best {m['random_max']:.3f}; "
            f"{_p(m['p_random'])})."
        )
    if c["shuffled_axes"]:
        reading = (
            "the before/after labels carry real signal"
            if m["p_shuffled"] <= 0.05
            else "**no better than axes fit on shuffled labels**"
        )
        lines.append(
            f"- Shuffled-label null ({c['shuffled_axes']} axes, each fit after swapping the labels of exactly half of "
            f"every criterion's games, so a shift shared by the games cancels): median {m['shuffled_median']:.3f}, "
            f"95th percentile {m['shuffled_q95']:.3f}; permutation {_p(m['p_shuffled'])}: {reading}."
        )
    return lines


def _position_lines(ev: Evaluation, m: dict) -> list[str]:
    """The verdict's lines on position: alone, matched (one line per rule) and together with the axis."""
    best_name, best = max(ev.position.items(), key=lambda kv: kv[1])
    beats = "beats" if m["auroc"] > best else "does **not** beat"
    lines = [
        f"- It {beats} position alone: {best_name} scores {best:.3f} on the same tokens (before tokens always "
        "precede after tokens, so a direction that tracks progress through the answer scores high with no notion "
        "of value)."
    ]
    lines += [_matched_line(rule, mm) for rule, mm in m["matched"].items()]
    b = ev.beyond_position
    null_q95 = float(np.quantile(b["position+random"], 0.95)) if len(b["position+random"]) else float("nan")
    gain = b["position+axis"] - b["position"]
    adds = "adds" if b["position+axis"] > null_q95 else "adds **no more than a random direction**"
    lines.append(
        f"- A logistic model of all {len(ev.position)} position covariates, criteria held out fold by fold, scores "
        f"{b['position']:.3f}; with the axis's projection added, {b['position+axis']:.3f} ({gain:+.3f}); with a random "
        f"direction added instead, up to {null_q95:.3f} (95th percentile of {len(b['position+random'])}). "
        f"Beyond position, the axis {adds}."
    )
    return lines


def _matched_line(rule: str, mm: dict) -> str:
    """The verdict's line on the axis among tokens matched on ``rule``."""
    if not np.isfinite(mm["axis"]):
        return f"- Matched on {rule}: too few tokens of both kinds in any stratum to tell."
    margin = mm["axis"] - max(mm["baseline"], mm["random_q95"])
    ci = mm["ci"]
    ci_text = f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if np.isfinite(ci[0]) else ""
    if np.isfinite(ci[0]) and ci[0] > max(mm["baseline"], mm["random_q95"]):
        reading = "it carries information beyond this kind of position"
    elif margin > 0:
        reading = "slightly above, but its CI reaches down to them: little beyond this kind of position"
    else:
        reading = "**no more than position and chance give**"
    return (
        f"- Among tokens with equal {rule} ({mm['coverage']:.0%} of tokens in strata with both kinds): axis "
        f"{mm['axis']:.3f}{ci_text} vs position's own {mm['baseline']:.3f} and random directions' 95th "
        f"percentile {mm['random_q95']:.3f}: {reading}."
    )


def _contrast_lines(m: dict, c: dict) -> list[str]:
    """The verdict's lines on the placebo contrast, the reference's statistic and the split analysis."""
    lines = []
    if np.isfinite(m["placebo_ratio"]):
        r, (rlo, rhi) = m["placebo_ratio"], m["placebo_ratio_ci"]
        size = "larger than" if rlo > 1 else "smaller than" if rhi < 1 else "statistically as large as"
        lines.append(
            f"- The placebo contrast (failed attempts cut at the word the player targeted: no reward; averaged per "
            f"game, {c['placebo_games']} games) is {r:.2f}x the real one (95% CI {rlo:.2f}-{rhi:.2f}), {size} it. "
            "The replication measured 1.34x on Qwen3-8B and read it as a ramp towards the end of the answer rather "
            "than a reward event."
        )
    lines.append(
        f"- The reference code's statistic (per criterion, pooled mean after minus pooled mean before, projected on "
        f"the unit axis, > 0) is {m['reference_metric']:.3f} on the held-out criteria and {m['reference_splits']:.3f} "
        f"over the construction splits (the reference's own procedure); its cosine variant gives "
        f"{m['cosine_mean_level']:.3f}. It is a sign test over {c['heldout_criteria']} criteria, so it saturates "
        "long before a token-level AUROC does."
    )
    if np.isfinite(m["split_mean"]):
        lines.append(
            f"- Within construction criteria ({c['splits']} splits, {c['split_train_test_criteria']} train/test "
            f"criteria) the mean token AUROC at this layer is {m['split_mean']:.3f}."
        )
    return lines


def scorecard_rows(ev: Evaluation, model: str, profile: str, blocks: dict, lens_top: str, lens_k: int) -> list[dict]:
    """Scorecard rows of notebook 03 (see :func:`vaxis.run.scorecard.record`): each with its CI, its
    sample size and its null control where it has them."""
    m, c, L = ev.at(ev.main_layer), ev.counts, ev.main_layer
    n_tok = f"{c['heldout_criteria']} criteria, {c['heldout_games']} games, {c['heldout_tokens']} tokens"
    ctx = f"{model}, profile {profile}, L={L}"
    rows = _auroc_rows(ev, m, n_tok, ctx, model, profile)
    rows += [
        {"key": "fig2.main_layer", "value": f"{L} of {ev.layers[-1]}", "context": ev.main_layer_rule},
        {
            "key": "fig2.layers_above_0.9",
            "value": layer_ranges(ev.layers, ev.auroc > 0.9) or "none",
            "context": f"token AUROC; {model}, profile {profile}",
        },
        {"key": "fig2.cos_early_late", "value": blocks["early vs late"], "context": f"{model}; {blocks['blocks']}"},
        {"key": "fig2.cos_mid_late", "value": blocks["mid vs late"], "context": f"{model}; {blocks['blocks']}"},
        {"key": "fig2.logit_lens", "value": lens_top, "context": f"top of {lens_k} via W_U at L={L}; {model}"},
        {
            "key": "sec7.placebo_ratio",
            "value": m["placebo_ratio"],
            "ci": m["placebo_ratio_ci"],
            "n": f"{c['placebo_games']} games, {c['placebo_items']} failed attempts",
            "null": "1.0 = same size",
            "context": f"averaged per game first; CI: criteria bootstrap; {ctx}",
        },
    ]
    return rows + _control_rows(ev, m, n_tok, ctx, model, profile)


def _auroc_rows(ev: Evaluation, m: dict, n_tok: str, ctx: str, model: str, profile: str) -> list[dict]:
    """The scorecard's held-out AUROC rows: at the main layer, the reference's statistic (held out and on the
    construction splits), and at the last layer."""
    c = ev.counts
    null = f"shuffled-label q95 {m['shuffled_q95']:.3f} ({_p(m['p_shuffled'])}); random max {m['random_max']:.3f}"
    return [
        {
            "key": "fig2.heldout_auroc_token_replication",
            "value": m["auroc"],
            "ci": m["ci"],
            "n": n_tok,
            "null": null,
            "context": f"token AUROC; {ctx}; CI: criteria bootstrap, axis fixed",
        },
        {
            "key": "fig2.heldout_auroc_main",
            "value": m["reference_metric"],
            "n": f"{c['heldout_criteria']} criteria",
            "null": "0.5 (sign test)",
            "context": f"the reference's sign test on pooled span means; {ctx}",
        },
        {
            "key": "fig2.reference_on_splits",
            "metric": "reference's procedure on construction splits",
            "section": "Fig 2",
            "value": m["reference_splits"],
            "n": f"{c['splits']} splits",
            "context": f"{c['split_train_test_criteria']} train/test criteria; {ctx}",
        },
        {
            "key": "fig2.heldout_auroc_last",
            "value": float(ev.auroc[-1]),
            "ci": (float(ev.ci_low[-1]), float(ev.ci_high[-1])),
            "n": n_tok,
            "context": f"token AUROC, L={ev.layers[-1]}; {model}, profile {profile}",
        },
    ]


def _control_rows(ev: Evaluation, m: dict, n_tok: str, ctx: str, model: str, profile: str) -> list[dict]:
    """The scorecard's position controls: position alone, the axis matched on each rule, position with the axis."""
    best_name, best = max(ev.position.items(), key=lambda kv: kv[1])
    rows = [
        {
            "key": "controls.position_auroc",
            "metric": "position alone, best covariate (AUROC)",
            "section": "Controls",
            "value": best,
            "n": n_tok,
            "context": f"{best_name}; {model}, profile {profile}",
        }
    ]
    for rule, mm in m["matched"].items():
        rows.append(
            {
                "key": f"controls.matched.{rule}",
                "metric": f"value axis AUROC among tokens with equal {rule}",
                "section": "Controls",
                "value": mm["axis"],
                "ci": mm["ci"],
                "n": f"{mm['coverage']:.0%} of {n_tok}",
                "null": f"position's own {mm['baseline']:.3f}; random q95 {mm['random_q95']:.3f}",
                "context": ctx,
            }
        )
    b = ev.beyond_position
    rows.append({
        "key": "controls.beyond_position", "metric": "position covariates + axis, out-of-fold AUROC",
        "section": "Controls", "value": b["position+axis"], "n": n_tok,
        "null": f"position alone {b['position']:.3f}; + a random direction, q95 "
        f"{np.quantile(b['position+random'], 0.95) if len(b['position+random']) else float('nan'):.3f}",
        "context": f"logistic regression, folds hold out criteria; {ctx}",
    })  # fmt: skip
    return rows


def trace_example(items: list[Item], game_split: list[str]) -> Item:
    """The first held-out target item (the game shown as a value trace)."""
    for it in items:
        if it.kind == "target" and game_split[it.game] == "held_out":
            return it
    raise ValueError("no held-out target item to trace")


def token_marks(item: Item, offsets) -> dict[int, str]:
    """Token index -> span name for ``item``'s spans, by the vaxis token rule."""
    from ..core.spans import tokens_in_spans

    marks = {}
    for name, idx in tokens_in_spans(item.text, offsets, item.spans).items():
        for t in idx:
            marks[t] = name
    return marks
