"""Notebook 03, the axis experiment's evaluation: held-out AUROC with controls and its reading.

Reads what notebook 02 saved (:mod:`vaxis.experiments.extraction_files`) and asks how well the axis tells *before*
from *after* tokens of games whose criteria never fit it, beside controls that must mean what
they say (METHOD.md sections 3 and 7).

The per-token view it reads (:class:`~vaxis.experiments.axis_tokens.TokenTable`) and the AUROC among tokens at the
same position (:func:`~vaxis.experiments.axis_tokens.matched_aurocs`) are in :mod:`vaxis.experiments.axis_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .axis_tokens import POSITION_FEATURES, TokenTable, match_rules, matched_aurocs, token_table
from .extraction_files import Directions, Item


@dataclass
class Evaluation:
    """Everything notebook 03 reports about an axis, per layer (arrays over ``layers``).

    ``reference_metric``: the reference code's sign test on held-out criteria;
    ``reference_splits``: the same statistic over the construction splits, exactly as the
    reference computes it; ``cosine_mean_level``: its cosine variant; ``random``, ``shuffled``,
    ``split``: AUROC of each null / split direction; ``p_shuffled``, ``p_random``: permutation
    p-values of the axis's AUROC against those nulls; ``position``: each position covariate's
    AUROC alone; ``matched``: rule name -> :class:`~vaxis.experiments.axis_tokens.Matched`; ``real_contrast`` and
    ``placebo_contrast``: mean over games of (after - before) projections, the placebo averaged
    per game first; ``placebo_ratio_ci``: ``(2, n_layers)`` criteria-bootstrap CI of their ratio;
    ``beyond_position``: at the main layer, the out-of-fold AUROC of all position covariates
    together (``"position"``), with the axis added (``"position+axis"``), and with each of up to
    20 random directions added instead (``"position+random"``, the null for what an extra score
    adds).
    """

    layers: list[int]
    auroc: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    reference_metric: np.ndarray
    reference_splits: np.ndarray
    cosine_mean_level: np.ndarray
    random: np.ndarray
    shuffled: np.ndarray
    split: np.ndarray
    p_shuffled: np.ndarray
    p_random: np.ndarray
    position: dict
    matched: dict
    real_contrast: np.ndarray
    placebo_contrast: np.ndarray
    placebo_ratio_ci: np.ndarray
    beyond_position: dict
    main_layer: int
    main_layer_rule: str
    heldout_best_layer: int
    counts: dict

    @property
    def placebo_ratio(self) -> np.ndarray:
        """Placebo contrast over real contrast, per layer (inf/NaN where the real one is 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.placebo_contrast / self.real_contrast

    def at(self, layer: int) -> dict:
        """The per-layer numbers at residual index ``layer`` as a dict."""
        i = self.layers.index(layer)

        def q(a, level):
            return float(np.quantile(a[:, i], level)) if len(a) else float("nan")

        return {
            "layer": layer,
            "auroc": float(self.auroc[i]),
            "ci": (float(self.ci_low[i]), float(self.ci_high[i])),
            "reference_metric": float(self.reference_metric[i]),
            "reference_splits": float(self.reference_splits[i]),
            "cosine_mean_level": float(self.cosine_mean_level[i]),
            "random_max": q(self.random, 1.0),
            "random_q95": q(self.random, 0.95),
            "shuffled_max": q(self.shuffled, 1.0),
            "shuffled_q95": q(self.shuffled, 0.95),
            "shuffled_median": q(self.shuffled, 0.5),
            "p_shuffled": float(self.p_shuffled[i]),
            "p_random": float(self.p_random[i]),
            "split_mean": float(self.split[:, i].mean()) if len(self.split) else float("nan"),
            "matched": {
                rule: {
                    "axis": float(m.axis[i]),
                    "baseline": m.baseline,
                    "random_q95": q(m.random, 0.95),
                    "coverage": m.coverage,
                    "ci": m.ci_main if layer == self.main_layer else (float("nan"),) * 2,
                }
                for rule, m in self.matched.items()
            },
            "placebo_ratio": float(self.placebo_ratio[i]),
            "placebo_ratio_ci": (float(self.placebo_ratio_ci[0, i]), float(self.placebo_ratio_ci[1, i])),
        }

    def table(self):
        """Per-layer table (a pandas DataFrame)."""
        import pandas as pd

        def agg(a, fn):
            return fn(a, 0) if len(a) else np.nan

        cols = {
            "layer": self.layers,
            "heldout_auroc": self.auroc,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "reference_sign_test": self.reference_metric,
            "reference_on_splits": self.reference_splits,
            "cosine_mean_level": self.cosine_mean_level,
            "split_auroc_mean": agg(self.split, np.mean),
            "random_auroc_max": agg(self.random, np.max),
            "shuffled_auroc_q95": agg(self.shuffled, lambda a, ax: np.quantile(a, 0.95, axis=ax)),
            "p_shuffled": self.p_shuffled,
        }
        for rule, m in self.matched.items():
            cols[f"matched[{rule}]"] = m.axis
        cols.update(real_contrast=self.real_contrast, placebo_ratio=self.placebo_ratio)
        return pd.DataFrame(cols)


def _matched_ci(table, groups, li, n_bins, n_boot, seed, level=0.95) -> dict:
    """Criteria-bootstrap CI (axis fixed) of the axis's matched AUROC at layer index ``li``, per rule:
    each resample repeats a drawn criterion's tokens as often as it was drawn."""
    from ..core.evaluate import stratified_auroc

    names, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = [np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names)) for _ in range(n_boot)]
    out = {}
    for rule, strata in match_rules(table, n_bins).items():
        stats = []
        for draw in draws:
            idx = np.repeat(np.arange(len(groups)), draw[inverse])
            value = stratified_auroc(table.scores[idx, li, 0], table.labels[idx], strata[idx])[0]
            if np.isfinite(value):
                stats.append(float(value))
        alpha = (1 - level) / 2
        out[rule] = tuple(np.quantile(stats, [alpha, 1 - alpha])) if stats else (float("nan"),) * 2
    return out


def _reference_on_splits(stats, items, cons, game_criterion, directions) -> np.ndarray:
    """The reference's own procedure: each split axis, sign test on its test criteria (pooled
    construction sums), averaged over every (split, test criterion) pair."""
    from ..core.evaluate import reference_sign_test

    groups = np.array([game_criterion[items[i].game] for i in cons])
    rows = []
    for k, (_, test) in zip(directions.columns("split"), directions.splits):
        m = np.isin(groups, test)
        if m.any():
            idx = [cons[j] for j in np.flatnonzero(m)]
            sign = reference_sign_test(*_sums(stats, idx), groups[m], directions.vectors[k].numpy())
            rows.extend([sign] * len(set(groups[m])))
    return np.mean(rows, axis=0) if rows else np.full(len(stats.layers), np.nan)


def _sums(stats, idx):
    return (
        stats.sums["after"][idx].numpy(),
        stats.counts["after"][idx].numpy(),
        stats.sums["before"][idx].numpy(),
        stats.counts["before"][idx].numpy(),
    )


def _contrasts(stats, items, idx, game_criterion):
    """Per-game mean of (after - before) projections on the axis (items of one game averaged
    first), and the games' criteria: ``(n_games, n_layers)``, ``(n_games,)``."""
    from ..core.evaluate import contrast

    if not idx:
        return np.zeros((0, len(stats.layers))), np.array([])
    per_item = contrast(
        [stats.projections["after"][i][:, :, 0].numpy() for i in idx],
        [stats.projections["before"][i][:, :, 0].numpy() for i in idx],
    )
    keep = [i for i in idx if stats.counts["after"][i] and stats.counts["before"][i]]
    games = np.array([items[i].game for i in keep])
    names = np.unique(games)
    per_game = np.stack([per_item[games == g].mean(0) for g in names])
    return per_game, np.array([game_criterion[g] for g in names])


def _ratio_ci(real, real_groups, placebo, placebo_groups, n_boot, seed, level=0.95):
    """Criteria-bootstrap CI of mean(placebo per game) / mean(real per game)."""
    if not len(placebo):
        return np.full((2, real.shape[1]), np.nan)
    names = np.unique(np.r_[real_groups, placebo_groups])
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        w = np.bincount(rng.integers(0, len(names), len(names)), minlength=len(names)).astype(float)
        wr, wp = w[np.searchsorted(names, real_groups)], w[np.searchsorted(names, placebo_groups)]
        if wr.sum() and wp.sum():
            with np.errstate(divide="ignore", invalid="ignore"):
                out.append((wp @ placebo / wp.sum()) / (wr @ real / wr.sum()))
    alpha = (1 - level) / 2
    return np.quantile(np.array(out), [alpha, 1 - alpha], axis=0)


def evaluate(
    stats,
    items: list[Item],
    game_criterion: list[str],
    game_split: list[str],
    directions: Directions,
    tokenizer,
    n_boot: int = 200,
    seed: int = 0,
    main_layer: int | str = "auto",
    n_bins: int = 20,
) -> Evaluation:
    """Held-out evaluation with controls (METHOD.md sections 3 and 7).

    * token AUROC per layer on held-out target items (column ``axis``), 95% CI by
      bootstrapping held-out criteria with the axis fixed; the reference's sign test on the
      held-out criteria (from span sums) and on the construction splits, and its cosine variant;
    * nulls on the same tokens: random directions and balanced shuffled-label axes, with
      permutation p-values; each position covariate alone;
    * the AUROC among tokens at the same position (:func:`~vaxis.experiments.axis_tokens.matched_aurocs`), beside the
      position covariates' own AUROC in the same strata and the random directions';
    * split analysis within construction criteria: axis ``split{i}`` scored on the target
      tokens of its test criteria;
    * main layer: ``"auto"`` takes the best *split-analysis* layer (construction criteria
      only, so held-out criteria never choose it); an int fixes it;
    * contrast: mean over held-out games of after minus before projection (real), and the same
      on failed attempts of held-out games cut at the targeted word (placebo), averaged per
      game before averaging over games, with a criteria-bootstrap CI of the ratio.
    """
    layers = list(stats.layers)
    target = [i for i, it in enumerate(items) if it.kind == "target"]
    held = [i for i in target if game_split[items[i].game] == "held_out"]
    cons = [i for i in target if game_split[items[i].game] == "construction"]
    if not held:
        raise ValueError("no held-out target items: notebook 01 must generate held-out games")
    t_held = token_table(stats, items, held, tokenizer)
    groups = np.array([game_criterion[items[i].game] for i in t_held.item])
    held_out = _held_out_aurocs(stats, items, held, t_held, groups, game_criterion, directions, n_boot, seed, n_bins)
    split = _split_aurocs(stats, items, cons, game_criterion, directions, tokenizer)
    chosen, rule = _main_layer(main_layer, split, layers)
    li = layers.index(chosen)
    for name, ci in _matched_ci(t_held, groups, li, n_bins, n_boot, seed).items():
        held_out["matched"][name].ci_main = ci
    real, real_groups = _contrasts(stats, items, held, game_criterion)
    placebo_idx = [i for i, it in enumerate(items) if it.kind == "placebo" and game_split[it.game] == "held_out"]
    placebo, placebo_groups = _contrasts(stats, items, placebo_idx, game_criterion)
    return Evaluation(
        layers=layers,
        **held_out,
        reference_splits=_reference_on_splits(stats, items, cons, game_criterion, directions),
        split=split,
        real_contrast=real.mean(0),
        placebo_contrast=placebo.mean(0) if len(placebo) else np.full(len(layers), np.nan),
        placebo_ratio_ci=_ratio_ci(real, real_groups, placebo, placebo_groups, n_boot, seed),
        beyond_position=_beyond_position(t_held, groups, li, directions.columns("random")[:20]),
        main_layer=chosen,
        main_layer_rule=rule,
        heldout_best_layer=int(layers[int(np.argmax(held_out["auroc"]))]),
        counts=_counts(items, held, cons, t_held, groups, placebo_idx, placebo, split, held_out, directions),
    )


def _held_out_aurocs(stats, items, held, t_held, groups, game_criterion, directions, n_boot, seed, n_bins) -> dict:
    """On the held-out target tokens (``t_held``, criteria ``groups``): the axis's AUROC per layer with its
    criteria-bootstrap CI, the reference's sign test and its cosine variant, the random and shuffled nulls with
    permutation p-values, each position covariate alone and the matched AUROCs (:class:`Evaluation`'s fields)."""
    from ..core.evaluate import (
        auroc_by_layer,
        auroc_columns,
        bootstrap_auroc,
        mean_level_metric,
        permutation_p,
        reference_sign_test,
    )

    n_layers = len(stats.layers)
    axis_scores = t_held.scores[:, :, 0]
    auroc = auroc_by_layer(axis_scores, t_held.labels)
    low, high = bootstrap_auroc(axis_scores, t_held.labels, groups, n_boot=n_boot, seed=seed)
    held_groups = [game_criterion[items[i].game] for i in held]
    reference = reference_sign_test(*_sums(stats, held), held_groups, directions.vectors[0].numpy())
    rand_cols, shuf_cols = directions.columns("random"), directions.columns("shuffled")
    empty = np.zeros((0, n_layers))
    rand = auroc_columns(t_held.scores[:, :, rand_cols], t_held.labels).T if rand_cols else empty
    shuf = auroc_columns(t_held.scores[:, :, shuf_cols], t_held.labels).T if shuf_cols else empty
    return {
        "auroc": auroc,
        "ci_low": low,
        "ci_high": high,
        "reference_metric": reference,
        "cosine_mean_level": mean_level_metric(axis_scores, t_held.labels, groups),
        "random": rand,
        "shuffled": shuf,
        "p_shuffled": np.asarray(permutation_p(auroc, shuf)) if len(shuf) else np.full(n_layers, np.nan),
        "p_random": np.asarray(permutation_p(auroc, rand)) if len(rand) else np.full(n_layers, np.nan),
        "position": {name: float(auroc_columns(t_held.feature(name), t_held.labels)) for name in POSITION_FEATURES},
        "matched": matched_aurocs(t_held, rand_cols, n_bins=n_bins),
    }


def _split_aurocs(stats, items, cons, game_criterion, directions, tokenizer) -> np.ndarray:
    """``(n_splits, n_layers)``: each split axis's AUROC per layer on the target tokens of its test criteria
    (construction games only); a split whose test tokens lack a class is left out."""
    from ..core.evaluate import auroc_by_layer

    split_rows = []
    if cons and directions.splits:
        t_cons = token_table(stats, items, cons, tokenizer)
        cons_groups = np.array([game_criterion[items[i].game] for i in t_cons.item])
        for k, (_, test) in zip(directions.columns("split"), directions.splits):
            m = np.isin(cons_groups, test)
            if len(np.unique(t_cons.labels[m])) == 2:
                split_rows.append(auroc_by_layer(t_cons.scores[m][:, :, k], t_cons.labels[m]))
    return np.array(split_rows) if split_rows else np.zeros((0, len(stats.layers)))


def _main_layer(main_layer: int | str, split: np.ndarray, layers: list[int]) -> tuple[int, str]:
    """The main layer and the rule that chose it (see :func:`evaluate`)."""
    from ..core.evaluate import choose_main_layer

    if main_layer == "auto":
        if len(split):
            chosen, rule = (
                choose_main_layer(split, layers),
                "best mean AUROC over construction splits (no held-out data)",
            )
        else:
            chosen, rule = layers[len(layers) * 2 // 3], "no split analysis possible: two-thirds depth"
    else:
        chosen, rule = int(main_layer), "fixed by the user"
    if chosen not in layers:
        raise ValueError(f"main layer {chosen} is not among the extracted layers {layers}")
    return chosen, rule


def _beyond_position(t_held: TokenTable, groups, li: int, rand_some: list[int]) -> dict:
    """At layer index ``li``: the out-of-fold AUROC of the position covariates together, with the axis added, and
    with each of the random directions ``rand_some`` added instead (:class:`Evaluation`'s ``beyond_position``)."""
    from ..core.evaluate import incremental_auroc

    covariates = np.stack([t_held.feature(name) for name in POSITION_FEATURES], axis=1)
    extra = t_held.scores[:, li, [0, *rand_some]]
    base_auc, full = incremental_auroc(covariates, extra, t_held.labels, groups)
    return {"position": base_auc, "position+axis": float(full[0]), "position+random": full[1:]}


def _counts(items, held, cons, t_held, groups, placebo_idx, placebo, split, held_out: dict, directions) -> dict:
    """How many games, criteria, tokens, placebos, splits and null directions the evaluation read."""
    split_sizes = sorted({(len(tr), len(te)) for tr, te in directions.splits})
    return {
        "heldout_games": len({items[i].game for i in held}),
        "heldout_criteria": len(set(groups)),
        "heldout_tokens": int(len(t_held.labels)),
        "heldout_before_tokens": int((t_held.labels == 0).sum()),
        "heldout_after_tokens": int((t_held.labels == 1).sum()),
        "construction_games": len({items[i].game for i in cons}),
        "placebo_items": len(placebo_idx),
        "placebo_games": len(placebo),
        "splits": len(split),
        "split_train_test_criteria": "; ".join(f"{a}/{b}" for a, b in split_sizes),
        "random_directions": len(held_out["random"]),
        "shuffled_axes": len(held_out["shuffled"]),
        "rewrite_ends_turn": float(np.mean(t_held.to_rewrite_end == t_held.to_turn_end)),
    }
