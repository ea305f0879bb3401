"""Notebook 02, the axis experiment's extraction: games -> span items -> two passes -> run files.

Two passes over the games, both stopping at the last token a span needs and reducing on the
device, so no pass holds every layer's activations for every token:

1. *fit pass*: before/after span sums on the target rewrite of the **construction** games,
   from which every direction that the evaluation needs is fit: the value axis, one axis
   per construction split (35 train / 15 test criteria), shuffled-label axes (balanced
   per criterion, see :func:`vaxis.core.axis.shuffled_label_axes`), plus random directions;
2. *evaluation pass*: over the held-out games (and, for large models, all games), per-token
   cosines with those directions for the target before/after spans and the placebo spans
   (failed attempts cut at the word the player targeted), span sums, and residual norms
   over assistant tokens.

:func:`~vaxis.experiments.extraction_files.save_run` writes it all under ``run_dir/extraction`` and
:func:`~vaxis.experiments.extraction_files.load_run` reads it back for notebook 03 (:mod:`vaxis.experiments.axis`);
they live in :mod:`vaxis.experiments.extraction_files`, with the span items (``Item``) and the ``Directions``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.axis import fit_axis, random_directions, shuffled_label_axes
from ..core.evaluate import criterion_splits
from .extraction_files import Directions, Item


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
    from ..data.icrl import TargetSpanError, placebo_spans, render_game, target_spans

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
        items.append(
            Item(g, "target", target.text, spans, target.rewrite_span, target.attempt, target.assistant_spans[-1])
        )
        placebos, skipped = placebo_spans(game, tokenizer, rendered=rendered)
        p_excluded.extend(skipped)
        for p in placebos:
            spans = {
                "before": list(p.char_spans["before"]),
                "reward": list(p.char_spans["target"]),
                "after": list(p.char_spans["after"]),
            }
            items.append(Item(g, "placebo", p.text, spans, p.rewrite_span, p.attempt, p.assistant_spans[-1]))
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
    """One :class:`~vaxis.core.spanstats.SpanStats` over ``n_items`` items from several extractions:
    ``parts`` is ``[(item_indices, stats), ...]``, where row ``j`` of ``stats`` is item
    ``item_indices[j]``. Every item must be covered once; span names are united (an item
    lacking a name gets zeros); per-token projections are kept where present."""
    from ..core.spanstats import SpanStats

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
    from ..core.axis import game_contrasts
    from ..core.extract import extract

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


def extract_run(cfg, n_test: int = 15, model=None, tokenizer=None, spans: GameItems | None = None) -> Extraction:
    """Notebook 02's passes for a resolved run config (:func:`vaxis.resolve_config`): the items of the games in
    ``cfg.run_dir/games.jsonl`` (unless ``spans`` are given), on the profile's model (unless ``model`` and
    ``tokenizer`` are given), every residual index, the profile's settings. ``python -m vaxis extract`` runs it
    too, under ``accelerate launch`` on several processes or machines (every pass sharded)."""
    from ..core.layout import find_layout
    from ..core.models import load_model
    from ..data import icrl

    if model is None:
        model, tokenizer = load_model(
            cfg.model, quantization=cfg.quantization, chat_template_kwargs=cfg.chat_template_kwargs
        )
    if spans is None:
        spans = items_from_games(icrl.load_games(cfg.run_dir / "games.jsonl"), tokenizer)
    return run_extraction(
        model, tokenizer, spans, list(find_layout(model).residual_indices), n_splits=cfg["n_splits"], n_test=n_test,
        n_shuffles=cfg["n_shuffles"], n_random=cfg["n_random_directions"], seed=cfg.seed,
        keep_construction_activations=cfg["keep_construction_activations"], max_batch_tokens=cfg["max_batch_tokens"],
        quantization=cfg.quantization,
    )  # fmt: skip
