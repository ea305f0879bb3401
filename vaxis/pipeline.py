"""The axis experiment as testable steps (notebooks 02 and 03 call these).

Notebook 02 (extraction) runs two passes over the games:

1. *fit pass*: before/after span sums on the target rewrite of the **construction** games,
   from which every direction that the evaluation needs is fit: the value axis, one axis
   per construction split (35 train / 15 test criteria), shuffled-label axes, plus random
   directions;
2. *evaluation pass*: over **all** games, per-token cosines with those directions for the
   target before/after spans and the placebo spans (failed attempts cut at the word the
   player targeted), span sums, and residual norms over assistant tokens.

Both passes stop at the last token a span needs and reduce on the device, so no pass holds
every layer's activations for every token. Notebook 03 fits the final axis from the saved
sums and evaluates from the saved projections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .axis import fit_axis, random_directions, shuffled_label_axes
from .evaluate import criterion_splits


@dataclass(frozen=True)
class Item:
    """Spans over one game's rendered text.

    ``kind`` is ``"target"`` (the first post-discovery rewrite: spans ``before``, ``reward``,
    ``after``), ``"placebo"`` (a failed attempt: ``before``, ``reward`` = the targeted word,
    ``after``) or ``"norm"`` (span ``assistant``: assistant contents up to the target, for the
    mean residual norm). ``rewrite`` is the rewrite's character span in ``text``.
    """

    game: int
    kind: str
    text: str
    spans: dict
    rewrite: tuple[int, int] | None = None
    attempt: int | None = None


@dataclass
class Directions:
    """Every direction projected on in the evaluation pass.

    ``vectors``: ``(K, n_layers, d)``; ``names[k]`` says what column ``k`` is:
    ``axis``, ``split{i}``, ``shuffled{i}``, ``random{i}``.
    """

    vectors: torch.Tensor
    names: list[str]
    splits: list[tuple[list[str], list[str]]] = field(default_factory=list)

    def columns(self, prefix: str) -> list[int]:
        """Column indices whose name starts with ``prefix`` (``"split"``, ``"random"``...)."""
        return [k for k, n in enumerate(self.names) if n.rstrip("0123456789") == prefix]

    def as_extract_directions(self, layers: list[int]) -> dict[int, torch.Tensor]:
        """``{layer: (K, d)}`` for :func:`vaxis.extract`."""
        return {layer: self.vectors[:, i] for i, layer in enumerate(layers)}


def build_directions(
    contrasts: torch.Tensor,
    criteria: list[str],
    n_splits: int,
    n_test: int,
    n_shuffles: int,
    n_random: int,
    seed: int,
    weighting: str = "criterion",
) -> Directions:
    """Fit the axis, the split axes and the shuffled-label axes on construction ``contrasts``
    (``(n_games, n_layers, d)``, game criteria in ``criteria``) and draw random directions."""
    vectors, names = [fit_axis(contrasts, criteria, weighting)], ["axis"]
    splits = criterion_splits(criteria, n_splits, n_test, seed) if n_splits else []
    for i, (train, _) in enumerate(splits):
        keep = [j for j, c in enumerate(criteria) if c in set(train)]
        vectors.append(fit_axis(contrasts[keep], [criteria[j] for j in keep], weighting))
        names.append(f"split{i}")
    if n_shuffles:
        vectors.extend(shuffled_label_axes(contrasts, criteria, n_shuffles, seed + 1, weighting))
        names.extend(f"shuffled{i}" for i in range(n_shuffles))
    if n_random:
        vectors.extend(random_directions(n_random, contrasts.shape[1], contrasts.shape[2], seed + 2))
        names.extend(f"random{i}" for i in range(n_random))
    return Directions(torch.stack(vectors).float(), names, splits)


@dataclass
class TokenTable:
    """Flat per-token view of an evaluation pass for one item kind.

    ``scores``: ``(n_tokens, n_layers, K)`` cosines; ``labels``: 1 after / 0 before;
    ``item``: index into the item list; ``position``: token's relative position in the
    rewrite (0 = first character, 1 = last), from its character offset.
    """

    scores: np.ndarray
    labels: np.ndarray
    item: np.ndarray
    position: np.ndarray

    def select(self, mask: np.ndarray) -> TokenTable:
        return TokenTable(self.scores[mask], self.labels[mask], self.item[mask], self.position[mask])


def token_table(stats, items: list[Item], indices: list[int], tokenizer) -> TokenTable:
    """Gather before/after token projections of ``items[indices]`` from extraction ``stats``
    (the stats of the evaluation pass, one row per item)."""
    scores, labels, owner, position = [], [], [], []
    offsets_cache: dict[str, list] = {}
    for i in indices:
        item = items[i]
        if item.text not in offsets_cache:
            enc = tokenizer(item.text, return_offsets_mapping=True, add_special_tokens=False)
            offsets_cache[item.text] = enc["offset_mapping"]
        offsets = offsets_cache[item.text]
        start, end = item.rewrite
        for label, name in ((0, "before"), (1, "after")):
            proj = stats.projections[name][i]
            toks = stats.token_indices[name][i].tolist()
            scores.append(proj.numpy())
            labels.append(np.full(len(toks), label))
            owner.append(np.full(len(toks), i))
            position.append(np.array([(offsets[t][0] - start) / max(end - start, 1) for t in toks]))
    return TokenTable(
        np.concatenate(scores).astype(np.float64),
        np.concatenate(labels),
        np.concatenate(owner),
        np.concatenate(position).astype(np.float64),
    )


@dataclass
class Evaluation:
    """Everything notebook 03 reports about an axis, per layer (arrays over ``layers``)."""

    layers: list[int]
    auroc: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    mean_level: np.ndarray
    random: np.ndarray
    shuffled: np.ndarray
    split: np.ndarray
    position_auroc: float
    position_matched: np.ndarray
    real_contrast: np.ndarray
    placebo_contrast: np.ndarray
    main_layer: int
    main_layer_rule: str
    heldout_best_layer: int
    counts: dict

    def at(self, layer: int) -> dict:
        """The per-layer numbers at residual index ``layer`` as a dict."""
        i = self.layers.index(layer)
        return {
            "layer": layer,
            "auroc": float(self.auroc[i]),
            "ci": (float(self.ci_low[i]), float(self.ci_high[i])),
            "mean_level": float(self.mean_level[i]),
            "random_max": float(self.random[:, i].max()) if len(self.random) else float("nan"),
            "shuffled_max": float(self.shuffled[:, i].max()) if len(self.shuffled) else float("nan"),
            "split_mean": float(self.split[:, i].mean()) if len(self.split) else float("nan"),
            "position_matched": float(self.position_matched[i]),
            "placebo_ratio": float(self.placebo_contrast[i] / self.real_contrast[i]),
        }

    def table(self):
        """Per-layer table (a pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame(
            {
                "layer": self.layers,
                "heldout_auroc": self.auroc,
                "ci_low": self.ci_low,
                "ci_high": self.ci_high,
                "mean_level_metric": self.mean_level,
                "position_matched_auroc": self.position_matched,
                "split_auroc_mean": self.split.mean(0) if len(self.split) else np.nan,
                "split_auroc_std": self.split.std(0) if len(self.split) else np.nan,
                "random_auroc_max": self.random.max(0) if len(self.random) else np.nan,
                "shuffled_auroc_max": self.shuffled.max(0) if len(self.shuffled) else np.nan,
                "real_contrast": self.real_contrast,
                "placebo_contrast": self.placebo_contrast,
            }
        )


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
) -> Evaluation:
    """Held-out evaluation with controls (METHOD.md sections 3 and 7).

    * token AUROC per layer on held-out target items (column ``axis``), 95% CI by
      bootstrapping held-out criteria, and the paper-style mean-level metric;
    * controls on the same tokens: random directions, shuffled-label axes, and token
      position within the rewrite alone;
    * split analysis within construction criteria: axis ``split{i}`` scored on the target
      tokens of its 15 test criteria;
    * main layer: ``"auto"`` takes the best *split-analysis* layer (construction criteria
      only, so held-out criteria never choose it); an int fixes it;
    * contrast: mean after minus mean before projection on held-out targets (real) and on
      failed attempts of held-out games cut at the targeted word (placebo).
    """
    from .evaluate import (
        auroc_by_layer,
        bootstrap_auroc,
        choose_main_layer,
        contrast,
        mean_level_metric,
        position_matched_auroc,
    )

    layers = list(stats.layers)
    target = [i for i, it in enumerate(items) if it.kind == "target"]
    held = [i for i in target if game_split[items[i].game] == "held_out"]
    cons = [i for i in target if game_split[items[i].game] == "construction"]
    if not held:
        raise ValueError("no held-out target items: notebook 01 must generate held-out games")
    t_held = token_table(stats, items, held, tokenizer)
    groups = np.array([game_criterion[items[i].game] for i in t_held.item])
    axis_scores = t_held.scores[:, :, 0]
    auroc = auroc_by_layer(axis_scores, t_held.labels)
    low, high = bootstrap_auroc(axis_scores, t_held.labels, groups, n_boot=n_boot, seed=seed)
    mean_level = mean_level_metric(axis_scores, t_held.labels, groups)
    rand = np.array([auroc_by_layer(t_held.scores[:, :, k], t_held.labels) for k in directions.columns("random")])
    shuf = np.array([auroc_by_layer(t_held.scores[:, :, k], t_held.labels) for k in directions.columns("shuffled")])
    position = float(auroc_by_layer(t_held.position, t_held.labels)[0])
    matched = position_matched_auroc(axis_scores, t_held.labels, t_held.position)

    split_rows = []
    if cons and directions.splits:
        t_cons = token_table(stats, items, cons, tokenizer)
        cons_groups = np.array([game_criterion[items[i].game] for i in t_cons.item])
        for k, (_, test) in zip(directions.columns("split"), directions.splits):
            m = np.isin(cons_groups, test)
            if len(np.unique(t_cons.labels[m])) == 2:
                split_rows.append(auroc_by_layer(t_cons.scores[m][:, :, k], t_cons.labels[m]))
    split = np.array(split_rows) if split_rows else np.zeros((0, len(layers)))

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

    def side(idx, name):
        return [stats.projections[name][i][:, :, 0].numpy() for i in idx]

    real = contrast(side(held, "after"), side(held, "before")).mean(0)
    placebo_idx = [i for i, it in enumerate(items) if it.kind == "placebo" and game_split[it.game] == "held_out"]
    placebo = (
        contrast(side(placebo_idx, "after"), side(placebo_idx, "before")).mean(0)
        if placebo_idx
        else np.full(len(layers), np.nan)
    )
    counts = {
        "heldout_games": len({items[i].game for i in held}),
        "heldout_criteria": len(set(groups)),
        "heldout_tokens": int(len(t_held.labels)),
        "construction_games": len({items[i].game for i in cons}),
        "placebo_items": len(placebo_idx),
        "splits": len(split),
    }
    return Evaluation(
        layers,
        auroc,
        low,
        high,
        mean_level,
        rand,
        shuf,
        split,
        position,
        matched,
        real,
        placebo,
        chosen,
        rule,
        int(layers[int(np.argmax(auroc))]),
        counts,
    )


# ------------------------------------------------------------------------------------------ run files


@dataclass
class Run:
    """What notebook 02 wrote into ``run_dir/extraction``, loaded back for notebook 03."""

    fit_stats: object
    eval_stats: object
    directions: Directions
    items: list[Item]
    fit_items: list[Item]
    game_criterion: list[str]
    game_split: list[str]
    meta: dict
    tokenizer: object = None

    @property
    def mean_norms(self) -> torch.Tensor:
        """Mean residual norm per layer over assistant tokens (the ``norm`` items)."""
        return self.eval_stats.mean_norms("assistant")

    def fit_contrasts(self) -> tuple[torch.Tensor, list[str]]:
        """Per-game ``mean(after) - mean(before)`` of the fit pass and each game's criterion."""
        from .axis import game_contrasts

        rows = [j for j, it in enumerate(self.fit_items) if it.kind == "target"]
        contrasts = game_contrasts(self.fit_stats.means("after")[rows], self.fit_stats.means("before")[rows])
        return contrasts, [self.game_criterion[self.fit_items[j].game] for j in rows]


def _item_rows(items: list[Item]) -> tuple[list[str], list[dict]]:
    texts: dict[str, int] = {}
    rows = []
    for it in items:
        rows.append(
            {
                "game": it.game,
                "kind": it.kind,
                "text": texts.setdefault(it.text, len(texts)),
                "spans": it.spans,
                "rewrite": it.rewrite,
                "attempt": it.attempt,
            }
        )
    return list(texts), rows


def _items_from_rows(texts: list[str], rows: list[dict]) -> list[Item]:
    return [
        Item(
            r["game"],
            r["kind"],
            texts[r["text"]],
            {k: [tuple(s) for s in v] for k, v in r["spans"].items()},
            tuple(r["rewrite"]) if r["rewrite"] else None,
            r["attempt"],
        )
        for r in rows
    ]


def save_run(run_dir, fit_stats, fit_items, eval_stats, eval_items, directions, game_criterion, game_split, meta):
    """Write the extraction outputs under ``run_dir/extraction`` (atomically, file by file)."""
    from pathlib import Path

    from safetensors.torch import save_file

    from .cache import atomic_write, atomic_write_json
    from .extract import save_stats

    out = Path(run_dir) / "extraction"
    save_stats(out / "fit_pass.safetensors", fit_stats)
    save_stats(out / "eval_pass.safetensors", eval_stats)
    atomic_write(
        out / "directions.safetensors", lambda tmp: save_file({"vectors": directions.vectors.contiguous()}, tmp)
    )
    texts, fit_rows = _item_rows(fit_items)
    eval_texts, eval_rows = _item_rows(eval_items)
    atomic_write_json(
        out / "items.json",
        {
            "fit": {"texts": texts, "items": fit_rows},
            "eval": {"texts": eval_texts, "items": eval_rows},
            "game_criterion": game_criterion,
            "game_split": game_split,
            "directions": {"names": directions.names, "splits": directions.splits},
        },
    )
    atomic_write_json(out / "meta.json", meta)
    return out


def load_run(run_dir, tokenizer=None) -> Run:
    """Read what :func:`save_run` wrote; loads the tokenizer of the run's model if not given."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from .extract import load_stats

    out = Path(run_dir) / "extraction"
    if not (out / "meta.json").exists():
        raise FileNotFoundError(f"{out} has no extraction results: run notebook 02 with run_dir={run_dir} first")
    meta = json.loads((out / "meta.json").read_text())
    data = json.loads((out / "items.json").read_text())
    directions = Directions(
        load_file(str(out / "directions.safetensors"))["vectors"],
        data["directions"]["names"],
        [tuple(s) for s in data["directions"]["splits"]],
    )
    if tokenizer is None:
        from .models import load_tokenizer

        tokenizer = load_tokenizer(meta["model_name"])
    return Run(
        fit_stats=load_stats(out / "fit_pass.safetensors"),
        eval_stats=load_stats(out / "eval_pass.safetensors"),
        directions=directions,
        items=_items_from_rows(data["eval"]["texts"], data["eval"]["items"]),
        fit_items=_items_from_rows(data["fit"]["texts"], data["fit"]["items"]),
        game_criterion=data["game_criterion"],
        game_split=data["game_split"],
        meta=meta,
        tokenizer=tokenizer,
    )


# ------------------------------------------------------------------------------------------ reporting


def cosine_blocks(cos: np.ndarray) -> dict[str, float]:
    """Block means of a cross-layer cosine matrix over residual indices ``1..n`` split in
    thirds (early, mid, late): ``{"early vs late": ..., "mid vs late": ...}`` (paper: 0.08, 0.70)."""
    n = cos.shape[0] - 1
    if n < 3:
        return {"early vs late": float("nan"), "mid vs late": float("nan")}
    cuts = np.array_split(np.arange(1, n + 1), 3)
    early, mid, late = cuts
    return {
        "early vs late": float(cos[np.ix_(early, late)].mean()),
        "mid vs late": float(cos[np.ix_(mid, late)].mean()),
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


def verdict(ev: Evaluation, model: str, profile: str) -> str:
    """A plain-language reading of an :class:`Evaluation`, derived from its numbers."""
    m = ev.at(ev.main_layer)
    lo, hi = m["ci"]
    lines = [
        f"**{model}, profile `{profile}`, main layer {ev.main_layer}** "
        f"({ev.counts['heldout_criteria']} held-out criteria, {ev.counts['heldout_games']} games, "
        f"{ev.counts['heldout_tokens']} tokens)."
    ]
    if lo <= 0.5 <= hi:
        lines.append(
            f"- Held-out token AUROC {m['auroc']:.3f} is **indistinguishable from chance** "
            f"(95% CI {lo:.3f}-{hi:.3f} includes 0.5)."
        )
    elif m["auroc"] > 0.5:
        lines.append(f"- Held-out token AUROC {m['auroc']:.3f} (95% CI {lo:.3f}-{hi:.3f}) is above chance.")
    else:
        lines.append(
            f"- Held-out token AUROC {m['auroc']:.3f} is **below** chance: the axis points the wrong way "
            "on held-out criteria."
        )
    if np.isfinite(m["random_max"]):
        relation = "above" if lo > m["random_max"] else "**not** clearly above"
        lines.append(f"- It is {relation} every random direction (best {m['random_max']:.3f}, n={len(ev.random)}).")
    if np.isfinite(m["shuffled_max"]):
        tail = (
            ": a before-to-after shift shared by most games is recovered whenever unswapped games happen to "
            "outnumber swapped ones, so this null's upper edge measures how uniform the shift is, not a chance level"
            if m["shuffled_max"] > lo
            else ", below the real axis's CI"
        )
        lines.append(
            f"- Axes fit after randomly swapping before/after labels game by game reach up to "
            f"{m['shuffled_max']:.3f} (n={len(ev.shuffled)}){tail}."
        )
    pos = ev.position_auroc
    relation = "beats" if m["auroc"] > pos else "does **not** beat"
    lines.append(
        f"- It {relation} token position alone (AUROC {pos:.3f}): before tokens always precede after "
        "tokens, so a direction tracking position in the answer would score this high without any notion "
        "of value."
    )
    if np.isfinite(m["position_matched"]):
        pm = m["position_matched"]
        reading = (
            "so it carries information beyond position"
            if pm >= 0.6
            else "so beyond position it carries little"
            if pm > 0.55
            else "so beyond position it carries none"
        )
        lines.append(f"- Among tokens at the same relative position (10 bins), its AUROC is {pm:.3f}, {reading}.")
    if np.isfinite(m["placebo_ratio"]):
        r = m["placebo_ratio"]
        size = "larger than" if r >= 1 else "nearly as large as" if r >= 0.75 else "smaller than"
        lines.append(
            f"- The placebo contrast (failed attempts cut at the word the player targeted: no reward) is "
            f"{r:.2f}x the real one, {size} it. The replication measured 1.34x on Qwen3-8B and read it as "
            "a ramp towards the end of the answer rather than a reward event."
        )
    if np.isfinite(m["split_mean"]):
        lines.append(
            f"- Within construction criteria (35/15 splits) the mean AUROC at this layer is {m['split_mean']:.3f}."
        )
    return "\n".join(lines)


def trace_example(items: list[Item], game_split: list[str]) -> Item:
    """The first held-out target item (the game shown as a value trace)."""
    for it in items:
        if it.kind == "target" and game_split[it.game] == "held_out":
            return it
    raise ValueError("no held-out target item to trace")


def token_marks(item: Item, offsets) -> dict[int, str]:
    """Token index -> span name for ``item``'s spans, by the vaxis token rule."""
    from .spans import tokens_in_spans

    marks = {}
    for name, idx in tokens_in_spans(item.text, offsets, item.spans).items():
        for t in idx:
            marks[t] = name
    return marks


# ------------------------------------------------------------------------------------------ games -> items


@dataclass
class GameItems:
    """Span items of a set of games (see :func:`items_from_games`)."""

    items: list[Item]
    game_criterion: list[str]
    game_split: list[str]
    excluded: list[dict]
    placebo_excluded: list[dict]

    @property
    def n_target(self) -> int:
        return sum(it.kind == "target" for it in self.items)

    @property
    def n_placebo(self) -> int:
        return sum(it.kind == "placebo" for it in self.items)

    def exclusion_reasons(self) -> dict[str, int]:
        """Excluded games counted by reason."""
        from collections import Counter

        return dict(Counter(e["reason"] for e in self.excluded))


def items_from_games(games, tokenizer) -> GameItems:
    """Target, placebo and norm items of ICRL ``games`` rendered with ``tokenizer``.

    Per kept game: one ``target`` item (before / reward / after of the first post-discovery
    rewrite), one ``placebo`` item per usable failed attempt (before / reward = the word the
    player targeted / after), and one ``norm`` item (span ``assistant``: every assistant
    message up to the target). All items of a game share its rendered text, so the
    extraction runs each game once. Games the span rules exclude are listed with reasons.
    """
    from .icrl import TargetSpanError, placebo_spans, render_game, target_spans

    items, criterion, split, excluded, p_excluded = [], [], [], [], []
    for game in games:
        rendered = render_game(game, tokenizer)
        try:
            target = target_spans(game, tokenizer, rendered=rendered)
        except TargetSpanError as exc:
            excluded.append({"game_id": game.game_id, "criterion": game.criterion, "reason": exc.reason})
            continue
        g = len(criterion)
        criterion.append(game.criterion)
        split.append(game.split)
        spans = {k: list(v) for k, v in target.char_spans.items()}
        items.append(Item(g, "target", target.text, spans, target.rewrite_span, target.attempt))
        placebos, skipped = placebo_spans(game, tokenizer, rendered=rendered)
        p_excluded.extend(skipped)
        for p in placebos:
            spans = {
                "before": list(p.char_spans["before"]),
                "reward": list(p.char_spans["target"]),
                "after": list(p.char_spans["after"]),
            }
            items.append(Item(g, "placebo", p.text, spans, p.rewrite_span, p.attempt))
        items.append(Item(g, "norm", target.text, {"assistant": list(target.assistant_spans)}, None, None))
    if not items:
        raise ValueError(f"all {len(excluded)} games were excluded by the span rules: {excluded[:3]} ...")
    return GameItems(items, criterion, split, excluded, p_excluded)


def project_activations(stats, directions: Directions) -> None:
    """Fill ``stats.projections`` with ``cos(h_t, u_k)`` for every kept activation of ``stats``
    (extracted with ``keep_activations=True``) and every direction: the same numbers the
    extraction computes on the fly when the directions are known in advance."""
    if stats.activations is None:
        raise ValueError("these statistics hold no activations: extract with keep_activations=True")
    unit = directions.vectors / directions.vectors.norm(dim=-1, keepdim=True)  # (K, n_layers, d)
    stats.projections = {}
    for name, per_item in stats.activations.items():
        out = []
        for h in per_item:
            cos = torch.einsum("tld,kld->tlk", h, unit) / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            out.append(cos)
        stats.projections[name] = out


def combine_stats(n_items: int, parts: list[tuple[list[int], object]]):
    """One :class:`~vaxis.extract.SpanStats` over ``n_items`` items from several extractions:
    ``parts`` is ``[(item_indices, stats), ...]``, where row ``j`` of ``stats`` is item
    ``item_indices[j]``. Every item must be covered once; span names are united (an item
    lacking a name gets zeros); per-token projections are kept where present."""
    from .extract import SpanStats

    owner = {}
    for p, (indices, _) in enumerate(parts):
        for j, i in enumerate(indices):
            if i in owner:
                raise ValueError(f"item {i} appears in two parts")
            owner[i] = (p, j)
    if sorted(owner) != list(range(n_items)):
        raise ValueError(f"the parts cover {len(owner)} of {n_items} items")
    layers = parts[0][1].layers
    if any(s.layers != layers for _, s in parts):
        raise ValueError("the parts were extracted at different layers")
    names = sorted({n for _, s in parts for n in s.names})
    d = next(iter(parts[0][1].sums.values())).shape[-1]
    k = next(
        (
            len(s.projections[n][0][0, 0])
            for _, s in parts
            if s.projections
            for n in s.projections
            if s.projections[n] and len(s.projections[n][0])
        ),
        None,
    )

    def pick(i, getter, empty):
        p, j = owner[i]
        value = getter(parts[p][1], j)
        return empty if value is None else value

    def get(table_name, name):
        def getter(s, j):
            table = getattr(s, table_name)
            if table is None or name not in table:
                return None
            return table[name][j]

        return getter

    zeros_sum, zeros_norm = torch.zeros(len(layers), d), torch.zeros(len(layers))
    combined = SpanStats(
        layers=layers,
        names=names,
        sums={n: torch.stack([pick(i, get("sums", n), zeros_sum) for i in range(n_items)]) for n in names},
        counts={n: torch.tensor([int(pick(i, get("counts", n), 0)) for i in range(n_items)]) for n in names},
        norm_sums={n: torch.stack([pick(i, get("norm_sums", n), zeros_norm) for i in range(n_items)]) for n in names},
        token_indices={
            n: [pick(i, get("token_indices", n), torch.zeros(0, dtype=torch.long)) for i in range(n_items)]
            for n in names
        },
        text_lengths=torch.tensor([int(parts[owner[i][0]][1].text_lengths[owner[i][1]]) for i in range(n_items)]),
        info={"parts": [s.info for _, s in parts]},
    )
    if k is not None:
        empty = torch.zeros(0, len(layers), k)
        proj_names = sorted({n for _, s in parts if s.projections for n in s.projections})
        combined.projections = {n: [pick(i, get("projections", n), empty) for i in range(n_items)] for n in proj_names}
    return combined


@dataclass
class Extraction:
    """The outputs of notebook 02's two passes."""

    fit_stats: object
    fit_items: list[Item]
    eval_stats: object
    items: list[Item]
    directions: Directions
    passes: list[dict]


def run_extraction(
    model,
    tokenizer,
    spans: GameItems,
    layers: list[int],
    n_splits: int,
    n_test: int,
    n_shuffles: int,
    n_random: int,
    seed: int,
    keep_construction_activations: bool,
    weighting: str = "criterion",
    **extract_kwargs,
) -> Extraction:
    """Notebook 02: the fit pass, the directions, the evaluation pass.

    Fit pass: construction target and norm items; before/after sums give the per-game
    contrasts from which :func:`build_directions` fits every direction. With
    ``keep_construction_activations`` the fit pass also keeps the before/after token
    activations of construction targets, and their projections are computed from them
    (no second forward over construction games: what makes the CPU demo fast enough);
    the evaluation pass then runs over held-out games only, and placebo items of
    construction games are dropped (the evaluation uses held-out placebos only). Without it
    (large models), the evaluation pass runs over every game and keeps every item. Both give
    the same projections for the items they share (tested). ``Extraction.items`` lists the
    items of ``eval_stats``.
    """
    from .axis import game_contrasts
    from .extract import extract

    split = spans.game_split
    items = spans.items
    fit_idx = [i for i, it in enumerate(items) if split[it.game] == "construction" and it.kind in ("target", "norm")]
    fit_items = [items[i] for i in fit_idx]

    def run(chosen: list[Item], **kwargs):
        texts, item_spans = [it.text for it in chosen], [it.spans for it in chosen]
        return extract(
            model,
            tokenizer,
            texts,
            item_spans,
            layers=layers,
            token_spans=["before", "after"],
            **kwargs,
            **extract_kwargs,
        )

    fit = run(fit_items, keep_activations=keep_construction_activations)
    rows = [j for j, it in enumerate(fit_items) if it.kind == "target"]
    contrasts = game_contrasts(fit.means("after")[rows], fit.means("before")[rows])
    criteria = [spans.game_criterion[fit_items[j].game] for j in rows]
    n_criteria = len(set(criteria))
    directions = build_directions(
        contrasts,
        criteria,
        n_splits=n_splits if n_criteria > n_test else 0,
        n_test=min(n_test, n_criteria - 1),
        n_shuffles=n_shuffles,
        n_random=n_random,
        seed=seed,
        weighting=weighting,
    )
    if keep_construction_activations:
        project_activations(fit, directions)
        fit.activations = None  # the projections are all that is needed; free the memory
        second_items = [it for it in items if split[it.game] == "held_out"]
        final_items = fit_items + second_items
        parts = [(list(range(len(fit_items))), fit)]
    else:
        second_items = final_items = items
        parts = []
    second = run(second_items, directions=directions.as_extract_directions(layers))
    offset = len(final_items) - len(second_items)
    parts.append((list(range(offset, len(final_items))), second))
    eval_stats = combine_stats(len(final_items), parts) if len(parts) > 1 else second
    passes = [{"pass": "fit", **fit.info}, {"pass": "evaluation", **second.info}]
    return Extraction(fit, fit_items, eval_stats, final_items, directions, passes)
