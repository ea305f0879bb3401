"""Notebook 10 (the end-of-turn confound, METHOD.md section 7): several axes read side by side.

Every readout here reads *several* named axes and a set of random unit directions in one extraction pass
(columns ``[axis 1, ..., axis m, random 1, ..., random n]``, :func:`axes_directions`), then hands each axis in
turn to the readout's own module function as "column 0 with the random directions after it"
(:func:`as_axis`), so the logic of notebooks 03-09 is reused, never copied. The pieces specific to this
notebook:

* :func:`heldout_table`: the per-token view of held-out games (notebook 03's :class:`TokenTable`) for the
  target rewrites and for the failed attempts cut at the targeted word (the placebo);
* :func:`auroc_rows` / :func:`matched_rows`: held-out AUROC (CI: games resampled) and the AUROC among tokens
  at the same distance to the end of the turn, per axis, beside the random directions' range;
* :func:`cut_contrasts`: the before/after contrast when the rewrite is cut at relative positions other than
  the reward word (critique c: a ramp gives the same contrast wherever the cut is).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch


def axes_directions(axes: dict, layers: Sequence[int], n_random: int, seed: int = 0) -> dict:
    """``{layer: (m + n_random, d)}``: the unit vector of each of the ``m`` named ``axes`` (same model, same
    layers) then ``n_random`` random unit directions (seeded, drawn without any data)."""
    from ..core.axis import random_directions

    first = next(iter(axes.values()))
    for name, a in axes.items():
        if (a.hidden_size, a.model) != (first.hidden_size, first.model):
            raise ValueError(f"axis {name!r} is of {a.model} (hidden {a.hidden_size}), not of {first.model}")
    layers = list(layers)
    rand = random_directions(n_random, len(layers), first.hidden_size, seed) if n_random else None
    out = {}
    for j, layer in enumerate(layers):
        rows = [a.unit(layer) for a in axes.values()]
        if rand is not None:
            rows.extend(rand[:, j])
        out[layer] = torch.stack(rows).float()
    return out


def as_axis(values: np.ndarray, k: int, n_axes: int) -> np.ndarray:
    """``values[..., K]`` with column ``k`` first and the random columns (``n_axes..``) after it: the layout
    every module function of notebooks 03-09 reads (axis in column 0, random directions after)."""
    values = np.asarray(values)
    return values[..., [k, *range(n_axes, values.shape[-1])]]


def heldout_table(model, tokenizer, run, directions: dict, n_games: int | None = None, kind: str = "target",
                  seed: int = 0, **extract_kwargs):  # fmt: skip
    """:class:`~vaxis.experiments.axis_tokens.TokenTable` of held-out games' ``kind`` items ("target" or
    "placebo") of notebook 02's ``run``, read on ``directions`` in one pass (``n_games``: a seeded subset
    of the held-out games; None = all)."""
    from ..core.extract import extract
    from .axis_tokens import token_table

    games = sorted({it.game for it in run.items if it.kind == kind and run.game_split[it.game] == "held_out"})
    if not games:
        raise ValueError(f"no held-out games with {kind} items in this run")
    if n_games is not None and n_games < len(games):
        games = sorted(np.random.default_rng(seed).choice(games, n_games, replace=False).tolist())
    idx = [i for i, it in enumerate(run.items) if it.kind == kind and it.game in set(games)]
    items = [run.items[i] for i in idx]
    stats = extract(model, tokenizer, [it.text for it in items], [it.spans for it in items], layers=sorted(directions),
                    directions=directions, token_spans=["before", "after"], **extract_kwargs)  # fmt: skip
    return token_table(stats, items, list(range(len(items))), tokenizer), items


def auroc_rows(table, names: Sequence[str], li: int = 0, n_boot: int = 200, seed: int = 0) -> dict:
    """``{name: (auroc, low, high)}`` of after vs before tokens at layer index ``li`` for each named axis
    (CI: whole games resampled, :func:`vaxis.core.nulls.group_resamples`, the axis fixed), plus ``"random"``: the
    random directions' 2.5-97.5 % range, and ``"null"``: their AUROCs (the null draws of a verdict)."""
    from ..core.evaluate import auroc_columns
    from ..core.nulls import group_resamples

    scores, labels = table.scores[:, li, :], table.labels
    point = auroc_columns(scores, labels)
    draws = np.array([auroc_columns(scores[i], labels[i]) for i in group_resamples(table.item, n_boot, seed)])
    out = {}
    for k, name in enumerate(names):
        lo, hi = np.quantile(draws[:, k], [0.025, 0.975]) if len(draws) else (np.nan, np.nan)
        out[name] = (float(point[k]), float(lo), float(hi))
    rand = point[len(names) :]
    out["random"] = (float(np.median(rand)), *np.quantile(rand, [0.025, 0.975])) if len(rand) else (np.nan,) * 3
    out["null"] = rand.astype(float)
    return out


def matched_rows(table, names: Sequence[str], li: int = 0, rule: str = "relative position") -> dict:
    """``{name: auroc}`` among tokens at the same position (notebook 03's :func:`matched_aurocs`, the rule
    whose name contains ``rule``: by default bins of relative position in the rewrite; "end of the turn"
    matches exact tokens to the end of the turn, which needs many games to fill), each axis in turn as
    column 0; ``"random"``: the random directions' range; ``"null"``: their AUROCs; ``"position"``: the best
    position covariate inside the same strata (what position alone still knows there); ``"bar"``: what an axis
    must beat, the larger of ``"position"`` and the random directions' 97.5th percentile
    (:func:`vaxis.experiments.confound_report.equal_position_bar`)."""
    from .axis_tokens import matched_aurocs
    from .confound_report import equal_position_bar

    out, n = {}, len(names)
    for k, name in enumerate(names):
        by_rule = matched_aurocs(replace(table, scores=as_axis(table.scores, k, n)), list(range(1, table.scores.shape[2] - n + 1)))  # fmt: skip
        m = next(v for key, v in by_rule.items() if rule in key)
        out[name] = float(m.axis[li])
    rand = m.random[:, li] if len(m.random) else np.array([np.nan])
    out["random"] = (float(np.nanmedian(rand)), *np.nanquantile(rand, [0.025, 0.975]))
    out["position"] = float(m.baseline)
    out["null"] = rand[np.isfinite(rand)].astype(float)
    out["bar"] = equal_position_bar(out["position"], out["null"])
    return out


def cut_contrasts(table, names: Sequence[str], cuts: Sequence[float], li: int = 0, n_boot: int = 200,
                  seed: int = 0):  # fmt: skip
    """The before/after contrast at each ``cut`` (relative position in the rewrite, 0..1) and at the real
    cut (``"reward"``, the table's own labels), per named axis: mean over games of ``mean(tokens at or past
    the cut) - mean(tokens before it)`` over the rewrite's before and after tokens, with a CI over games.
    A direction that only tracks position gives about the same contrast at every cut."""
    import pandas as pd

    rows = []
    scores = table.scores[:, li, : len(names)]
    games = np.unique(table.item)
    for cut in ["reward", *cuts]:
        late = table.labels.astype(bool) if cut == "reward" else table.position >= float(cut)
        per_game = []
        for g in games:
            m = table.item == g
            if late[m].any() and (~late[m]).any():
                per_game.append(scores[m & late].mean(0) - scores[m & ~late].mean(0))
        per_game = np.array(per_game)
        rng = np.random.default_rng(seed)
        boots = np.array([per_game[rng.integers(0, len(per_game), len(per_game))].mean(0) for _ in range(n_boot)])
        for k, name in enumerate(names):
            lo, hi = np.quantile(boots[:, k], [0.025, 0.975]) if len(boots) else (np.nan, np.nan)
            rows.append({"cut": cut, "axis": name, "contrast": per_game[:, k].mean() if len(per_game) else np.nan,
                         "low": lo, "high": hi, "games": len(per_game)})  # fmt: skip
    return pd.DataFrame(rows)


def math_triples(problems, rollouts, high_cut: float = 0.25) -> list[tuple]:
    """``(chat, low, high)`` prefills from notebook 04's math rollouts: for each problem whose rollout is wrong
    (or has no answer) and whose source has a reference solution, the low-value prefill is that wrong
    rollout, complete (about to end), and the high-value one the first ``high_cut`` of the reference
    solution's words (correct reasoning with much left to write)."""
    import re

    from .confidence import math_chat
    from .sft import gsm8k_reference

    out = []
    for p, text, ok in zip(problems, rollouts.texts, rollouts.correct):
        if ok is True or not p.solution or not text.strip():
            continue
        words = list(re.finditer(r"\S+", gsm8k_reference(p.solution)))
        k = max(1, int(high_cut * len(words)))
        if k >= len(words):
            continue
        out.append((math_chat(p), text.rstrip(), gsm8k_reference(p.solution)[: words[k - 1].end()]))
    return out


def per_axis(fn, values: Sequence[np.ndarray], names: Sequence[str]) -> dict:
    """``{name: fn(*each value as that axis)}``: call a notebook 03-09 function once per named axis, each
    value array reordered by :func:`as_axis` (axis in column 0, the random directions after it)."""
    return {name: fn(*[as_axis(v, k, len(names)) for v in values]) for k, name in enumerate(names)}


def random_range(values) -> tuple | None:
    """``(median, 2.5 %, 97.5 %)`` of the random directions' values (None when there are none)."""
    values = np.asarray(values, dtype=float)
    return (float(np.median(values)), *map(float, np.quantile(values, [0.025, 0.975]))) if values.size else None


def backtracking_change(projections, starts, texts, li: int, window: int, column: int, seed: int = 0):
    """Notebook 05's event-locked readout for one direction (``column``): the change of the projection from
    ``window`` tokens before a backtracking event to the event, minus the same change at matched token
    indices of rollouts without backtracking (:func:`vaxis.experiments.backtracking.event_curves`).
    Returns ``(change, n_events)``."""
    from .backtracking import event_curves

    one = [p[..., [column]] if p.shape[-1] else p for p in projections]
    ev = event_curves(one, starts, texts, li, window, seed=seed)
    change = [ev[n][1][window] - ev[n][1][0] for n in ("backtracking", "matched index, no backtracking")]
    return float(change[0] - change[1]), ev["n_events"]


#: the strengths notebook 10 steers each axis at (its confidence sweep)
EOT_STRENGTHS = (-16.8, -8.4, 0.0, 8.4, 16.8)


def check_eot_keys(p, cfg, games) -> None:
    """Notebook 10's own ``eot_*`` keys, against the data they select (``games``: notebook 01's, or None when they
    are not written yet). ``p``: a :class:`vaxis.run.checks.Problems`."""
    from ..core.nulls import min_draws
    from ..data.icrl import load_paragraphs
    from ..data.prompts import read_prompts

    n_paragraphs = len(load_paragraphs())
    if p.integer("eot_paragraphs", cfg["eot_paragraphs"], 3):
        p.enough("eot_paragraphs", cfg["eot_paragraphs"], n_paragraphs, "paragraphs ship (data/paragraphs.jsonl)")
    p.fraction("eot_fraction", cfg["eot_fraction"], 0.5, closed=True)
    for key in ("eot_random_directions", "eot_bin_width", "eot_conflict_games", "eot_math_pairs", "eot_heldout_games"):
        p.integer(key, cfg[key], 1)
    n, least = cfg["eot_random_directions"], min_draws(0.05)
    if p.whole(n) and 0 < n < least:
        p.note(f"eot_random_directions={n}: the verdict table's p-values cannot reach 0.05 with fewer than {least} "
               "random directions (smallest p = 1/(n+1)): no cell can survive; it is not a 5% test")  # fmt: skip
    p.text("eot_tail", cfg["eot_tail"])
    cuts = cfg["eot_cuts"]
    if (
        not isinstance(cuts, (list, tuple))
        or not all(p.whole(c) or isinstance(c, float) for c in cuts)
        or any(not 0 < c < 1 for c in cuts)
    ):
        p.add(f"eot_cuts={cuts!r}: give a list of relative positions in the rewrite, each in (0, 1)")
    if games is not None:
        held = sum(g.split == "held_out" for g in games)
        if p.whole(cfg["eot_conflict_games"]):
            p.cap("eot_conflict_games", cfg["eot_conflict_games"], len(games), "games")
        if p.whole(cfg["eot_heldout_games"]):
            p.cap("eot_heldout_games", cfg["eot_heldout_games"], held, "held-out games")
    if p.whole(cfg["eot_math_pairs"]) and p.whole(cfg["confidence_problems"]):
        p.cap("eot_math_pairs", cfg["eot_math_pairs"], cfg["confidence_problems"], "rollouts (confidence_problems) "
              "to make pairs from, at most")  # fmt: skip
    n = cfg["eot_wild_prompts"]
    if p.integer("eot_wild_prompts", n, 0, fix=" (0: every shipped prompt)") and 0 < n < 4:
        p.add(f"eot_wild_prompts={n}: the quartile gaps need 4 prompts or more (0: every shipped prompt)")
    elif p.whole(n):
        p.cap("eot_wild_prompts", n, len(read_prompts()), "shipped prompts")


def check_parameters(cfg, *, axis_path=None, n_boot=200, **common) -> list[str]:
    """Notebook 10's parameters, before the model is loaded (:mod:`vaxis.run.checks`): the axis, ``n_boot``,
    ``max_batch_tokens``, notebooks 01-02's outputs, :func:`check_eot_keys`, and the keys of notebooks 04-07 it
    reads again, with its own counts among theirs (verbal and steering problems, code problems, DPO prompts).
    Raises :class:`vaxis.run.checks.ParameterError`; returns notes."""
    from ..data.icrl import load_games
    from ..run.checks import Problems
    from .backtracking import check_backtracking_keys
    from .coding import check_code_keys
    from .confidence_checks import check_confidence_keys
    from .preferences import check_dpo_keys

    p = Problems.for_notebook(10, cfg, **common)
    p.axis(axis_path)
    p.integer("n_boot", n_boot, 1)
    p.integer("max_batch_tokens", cfg["max_batch_tokens"], 1)
    p.made_by(cfg.run_dir / "extraction" / "meta.json", 2, "the extraction")
    path, games = cfg.run_dir / "games.jsonl", None
    if p.made_by(path, 1, "the games") and path.exists():
        games = p.attempt(str(path), load_games, path)
    check_eot_keys(p, cfg, games)
    check_confidence_keys(p, cfg, list(EOT_STRENGTHS))
    check_backtracking_keys(p, cfg)
    try:
        ends = {-16.8, 16.8} <= {float(s) for s in cfg["steer_random_strengths"]}
    except (TypeError, ValueError):
        ends = True  # reported by check_confidence_keys
    if cfg["steer_random_directions"] and not ends:
        p.note("steer_random_strengths lacks -16.8 or +16.8: the confidence-steering row has no random range")
    for key, of in (("eot_verbal_problems", "confidence_problems"), ("eot_steer_problems", "steer_problems")):
        if p.integer(key, cfg[key], 1) and p.whole(cfg[of]):
            p.enough(key, cfg[key], cfg[of], f"problems are read ({of})")
    have = check_code_keys(p, cfg)
    if p.integer("eot_code_problems", cfg["eot_code_problems"], 1) and have is not None:
        p.enough("eot_code_problems", cfg["eot_code_problems"], have, f"usable problems in {cfg['code_dataset']}")
    held, targets = check_dpo_keys(p, cfg), cfg["dpo_targets"]
    first = str(targets[0]).split(":")[0] if isinstance(targets, (list, tuple)) and targets else None
    if p.integer("eot_dpo_prompts", cfg["eot_dpo_prompts"], 1) and first in held:
        p.enough("eot_dpo_prompts", cfg["eot_dpo_prompts"], held[first], f"prompts of {first!r} (the first of "
                 "dpo_targets) are held out (dpo_prompts x dpo_eval_fraction)")  # fmt: skip
    return p.done()
