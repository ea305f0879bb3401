"""The end-of-turn confound (METHOD.md section 7; issue 12): the directions and axes of notebook 10.

The replication argues the value axis largely tracks proximity to the end of the assistant turn.
This module gives the pieces to test that, each fit or read by the value axis's own recipe:

* **A late-minus-early direction** (:func:`fit_end_of_turn_axis`; saved as ``end_of_turn_axis``): real
  paragraphs (nothing about success) as assistant turns; per paragraph ``mean(h late) - mean(h early)`` over
  the last / first ``fraction`` of the turn's tokens, averaged over paragraphs (Eq. 1 with *late* for *after*,
  *early* for *before*). Late tokens are both far from the start and near the end of the turn, so the
  direction mixes the two (it is named for that: "late-minus-early", not "distance to the end").
* **Two position-controlled value axes**: :func:`project_out` (the late-minus-early direction removed per
  layer) and :func:`position_matched_axes` (the value axis refit on before/after tokens matched in tokens to
  the end of the turn, with a control refit on as many tokens drawn without matching). All are
  :class:`vaxis.core.axis.Axis` objects: ``save`` them and give the path as ``axis_path`` to any notebook.
* :func:`with_norms`: an axis steered at a percentage of another axis's mean residual norm, so that it and the
  random directions steered beside the value axis move the residual stream by the same amount.

Prefill conflicts live in :mod:`vaxis.experiments.prefill_conflict`.

Reads paragraphs (``data/paragraphs.jsonl``), notebook 02's fit items and a saved value axis; writes nothing
itself (the notebook saves the axes). Demo costs (SmolLM2-135M, 2 CPU cores, ~500 tokens/s): the matched axes
read notebook 02's cache (seconds); 40 paragraphs ~10k tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..core.axis import Axis

#: The neutral user request that makes a paragraph an assistant turn (nothing about success or feedback).
REQUEST = "Write a paragraph about {title}."


def _per_layer(layers, values) -> dict:
    return {str(layer): round(float(v), 4) for layer, v in zip(layers, values)}


# ------------------------------------------------------------------------------------------ end-of-turn direction


def end_of_turn_items(paragraphs, tokenizer, fraction: float = 0.25, request: str = REQUEST) -> tuple[list, list]:
    """Each paragraph as an assistant turn answering ``request`` (``"Write a paragraph."`` when it has
    no title), with spans over the assistant content: ``early`` = its first ``k`` tokens, ``late`` = its
    last ``k`` tokens, ``middle`` = the rest (only for the residual norms), ``k = floor(fraction * n)``
    of the ``n`` content tokens (tokens placed by :func:`vaxis.core.spans.tokens_in_spans`'s rule).

    Args:
        paragraphs: strings or ``{"text", "title"?}`` dicts (e.g. :func:`vaxis.data.icrl.load_paragraphs`).
        fraction: in ``(0, 0.5]``, so that early and late never overlap.

    Returns:
        ``(chats, spans)`` for :func:`vaxis.core.extract.extract` (spans as ``(1, start, end)`` in the content).
    """
    from ..core.chat import render_chat
    from ..core.spans import token_anchor, tokens_in_spans

    if not 0 < fraction <= 0.5:
        raise ValueError(f"fraction={fraction} must be in (0, 0.5]: early and late are the first and last "
                         "fraction of the turn's tokens and must not overlap")  # fmt: skip
    paragraphs = list(paragraphs)
    if not paragraphs:
        raise ValueError("no paragraphs given: pass e.g. vaxis.data.icrl.load_paragraphs()")
    chats, spans = [], []
    for i, p in enumerate(paragraphs):
        text, title = (p, "") if isinstance(p, str) else (str(p.get("text", "")), p.get("title") or "")
        if not text.strip():
            raise ValueError(f"paragraph {i} is empty: give paragraphs with text")
        chat = [{"role": "user", "content": request.format(title=title) if title else "Write a paragraph."},
                {"role": "assistant", "content": text.strip()}]  # fmt: skip
        rendered = render_chat(tokenizer, chat)
        enc = tokenizer(rendered.text, return_offsets_mapping=True, add_special_tokens=False)
        start, end = rendered.message_spans[1]
        toks = tokens_in_spans(rendered.text, enc["offset_mapping"], {"turn": [(start, end)]})["turn"]
        k = int(fraction * len(toks))
        if k < 1:
            raise ValueError(f"paragraph {i} has {len(toks)} tokens: fraction={fraction} of it is no token")
        a_early, a_late = (token_anchor(rendered.text, *enc["offset_mapping"][t]) - start for t in (toks[k], toks[-k]))
        item = {"early": [(1, 0, a_early)], "late": [(1, a_late, end - start)]}
        if a_late > a_early:
            item["middle"] = [(1, a_early, a_late)]
        chats.append(chat)
        spans.append(item)
    return chats, spans


def fit_end_of_turn_axis(model, tokenizer, paragraphs, *, fraction: float = 0.25, held_out: float = 0.25,
                         request: str = REQUEST, n_splits: int = 10, n_random: int = 20, n_boot: int = 200,
                         seed: int = 0, main_layer: int | str = "auto", model_name: str = "",
                         **extract_kwargs) -> Axis:  # fmt: skip
    """The end-of-turn direction ``e_L`` as an :class:`~vaxis.core.axis.Axis`, by the value axis's recipe.

    ``e_L = mean over fit paragraphs p of [mean_{t in late(p)} h_{t,L} - mean_{t in early(p)} h_{t,L}]``
    (:func:`vaxis.core.axis.game_contrasts` and :func:`vaxis.core.axis.fit_axis`, each paragraph once;
    spans from :func:`end_of_turn_items`). A seeded ``held_out`` share of the paragraphs never fits it.

    Main layer (``"auto"``), as for the value axis: the best mean AUROC (late vs early span means
    projected on an axis fit on the rest) over ``n_splits`` random splits of the *fit* paragraphs
    (:func:`vaxis.experiments.boundary.split_auroc`); held-out paragraphs never choose it.

    ``axis.meta`` holds, per layer, ``heldout_auroc`` (token AUROC of late vs early held-out tokens,
    score ``cos(h_t, e_L)``), ``heldout_auroc_ci`` (95 %, paragraphs resampled, axis fixed; none if
    ``n_boot=0``), ``heldout_random_q95`` (``n_random`` random unit directions read in the same pass) and
    ``fit_split_auroc``; mean residual norms are over the fit paragraphs' assistant tokens.
    """
    from ..core.axis import fit_axis, game_contrasts
    from ..core.evaluate import auroc_columns, bootstrap_auroc, choose_main_layer
    from ..core.extract import extract
    from ..core.layout import find_layout
    from .boundary import split_auroc
    from .coding import probe_directions

    if not 0 < held_out < 1:
        raise ValueError(f"held_out={held_out} must be in (0, 1): the share of paragraphs kept out of the fit")
    chats, spans = end_of_turn_items(paragraphs, tokenizer, fraction, request)
    order = np.random.default_rng(seed).permutation(len(chats))
    n_held = int(round(held_out * len(chats)))
    held, fit = sorted(order[:n_held].tolist()), sorted(order[n_held:].tolist())
    if not held or len(fit) < 2:
        raise ValueError(f"{len(chats)} paragraphs with held_out={held_out}: need at least 2 to fit and 1 held out")
    layers = extract_kwargs.pop("layers", None)
    stats = extract(model, tokenizer, [chats[i] for i in fit], [spans[i] for i in fit], layers=layers,
                    token_spans=[], **extract_kwargs)  # fmt: skip
    layers = list(stats.layers)
    late, early = stats.means("late"), stats.means("early")
    vectors = fit_axis(game_contrasts(late, early), weighting="conversation")
    table = split_auroc(late.double(), early.double(), [str(i) for i in fit], n_splits, seed) if n_splits else []
    if main_layer != "auto":
        main, rule = int(main_layer), "fixed by the user"
    elif len(table):
        main, rule = choose_main_layer(table, layers), f"best mean AUROC over {n_splits} splits of the fit paragraphs"
    else:
        main, rule = layers[len(layers) * 2 // 3], "no split analysis (n_splits=0): two-thirds depth"
    layout = find_layout(model)
    ids = [str(p.get("id", i)) if isinstance(p, dict) else str(i) for i, p in enumerate(paragraphs)]
    axis = Axis(vectors, layers, stats.mean_norms(), main, model_name or getattr(model.config, "_name_or_path", ""),
                layout.hidden_size, layout.n_layers)  # fmt: skip
    hs = extract(model, tokenizer, [chats[i] for i in held], [spans[i] for i in held], layers=layers,
                 directions=probe_directions(axis, n_random, seed + 1), token_spans=["early", "late"],
                 **extract_kwargs)  # fmt: skip
    parts = [(j, int(n == "late"), hs.projections[n][j].numpy()) for n in ("early", "late") for j in range(len(held))]
    scores = np.concatenate([p for _, _, p in parts])  # (n_tokens, n_layers, 1 + n_random)
    labels = np.concatenate([np.full(len(p), y) for _, y, p in parts])
    groups = np.concatenate([np.full(len(p), j) for j, _, p in parts])
    auroc = auroc_columns(scores, labels)
    ci = zip(layers, *bootstrap_auroc(scores[:, :, 0], labels, groups, n_boot, seed)) if n_boot else []
    axis.meta = {
        "kind": "late-minus-early direction (last minus first tokens of unrelated assistant turns: distance from "
        "the start and distance to the end mixed)",
        "recipe": f"e_L = mean over paragraphs of [mean h over the last {fraction:.0%} of the assistant turn's tokens "
        f"- mean h over its first {fraction:.0%}]; user turn {request!r}",
        "fraction": fraction, "n_fit": len(fit), "n_held_out": len(held), "held_out_ids": [ids[i] for i in held],
        "seed": seed, "main_layer_rule": rule, "heldout_auroc": _per_layer(layers, auroc[:, 0]),
        "heldout_auroc_ci": {str(layer): [round(float(lo), 4), round(float(hi), 4)] for layer, lo, hi in ci},
        "heldout_random_q95": _per_layer(layers, np.quantile(auroc[:, 1:], 0.95, axis=1)) if n_random else {},
        "fit_split_auroc": _per_layer(layers, np.mean(table, 0)) if len(table) else {},
    }  # fmt: skip
    return axis


# ------------------------------------------------------------------------------------------ controlled value axes


def _check_same_space(a: Axis, b: Axis) -> None:
    if a.layers != b.layers or a.hidden_size != b.hidden_size:
        raise ValueError(f"the axes differ: layers {a.layers[0]}..{a.layers[-1]} ({len(a.layers)}), hidden "
                         f"{a.hidden_size} vs layers {b.layers[0]}..{b.layers[-1]} ({len(b.layers)}), hidden "
                         f"{b.hidden_size}; fit both on the same model and layers")  # fmt: skip


def cosine_by_layer(axis_a: Axis, axis_b: Axis) -> np.ndarray:
    """``cos(a_L, b_L)`` for every residual index of the two axes (same layers): ``(n_layers,)``."""
    _check_same_space(axis_a, axis_b)
    return torch.nn.functional.cosine_similarity(axis_a.vectors.double(), axis_b.vectors.double(), dim=-1).numpy()


def project_out(axis: Axis, direction: Axis,
                name: str = "value axis, late-minus-early end-of-turn direction projected out") -> Axis:  # fmt: skip
    """``axis`` with ``direction`` removed at every layer (one Gram-Schmidt step):
    ``v'_L = v_L - (v_L . u_L) u_L`` with ``u_L = e_L / |e_L|``, so ``v'_L`` is orthogonal to ``e_L``.

    Main layer, mean norms and model are the source axis's; ``meta`` records the recipe, both axes'
    kinds, the cosine removed and the share of ``|v_L|`` kept, per layer (the source axis's evaluation
    numbers do not carry over and are dropped)."""
    _check_same_space(axis, direction)
    v, e = axis.vectors.double(), direction.vectors.double()
    u = e / e.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    out = v - (v * u).sum(-1, keepdim=True) * u
    keep = ("profile", "data_hash", "seed", "weighting", "revision")
    meta = {
        "kind": name, "recipe": "v'_L = v_L - (v_L . u_L) u_L, u_L = e_L / |e_L| (per layer)",
        "source": {"kind": axis.meta.get("kind", "value axis"), **{k: axis.meta[k] for k in keep if k in axis.meta}},
        "projected_out": direction.meta.get("kind", "direction"),
        "cosine_removed": _per_layer(axis.layers, cosine_by_layer(axis, direction)),
        "norm_kept": _per_layer(axis.layers, (out.norm(dim=-1) / v.norm(dim=-1).clamp_min(1e-12)).numpy()),
    }  # fmt: skip
    return Axis(out.float(), list(axis.layers), axis.mean_norms.clone(), axis.main_layer, axis.model,
                axis.hidden_size, axis.n_blocks, meta)  # fmt: skip


def matched_bins(before_to_end: np.ndarray, after_to_end: np.ndarray, bin_width: int,
                 min_tokens: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """The bins of ``to_end // bin_width`` (tokens to the end of the turn) that hold at least ``min_tokens``
    before *and* after tokens, as ``(before mask, after mask)`` pairs."""
    b_bin, a_bin = np.asarray(before_to_end) // bin_width, np.asarray(after_to_end) // bin_width
    out = []
    for b in np.intersect1d(b_bin, a_bin):
        mb, ma = b_bin == b, a_bin == b
        if mb.sum() >= min_tokens and ma.sum() >= min_tokens:
            out.append((mb, ma))
    return out


def matched_contrast(before: torch.Tensor, after: torch.Tensor, before_to_end: np.ndarray, after_to_end: np.ndarray,
                     bin_width: int, min_tokens: int = 1) -> tuple[torch.Tensor, float, float] | None:  # fmt: skip
    """One game's position-matched contrast: in every bin of :func:`matched_bins`,
    ``mean(h after in bin) - mean(h before in bin)``; the contrast is the mean over those bins.

    Args:
        before, after: ``(n_tokens, n_layers, d)`` activations; ``*_to_end``: each token's tokens to the end.

    Returns:
        ``(contrast (n_layers, d), matched gap, unmatched gap)``, the gaps being mean tokens-to-end of
        before minus after tokens (matched: averaged over the bins used), or ``None`` when no bin qualifies.
    """
    before_to_end, after_to_end = np.asarray(before_to_end), np.asarray(after_to_end)
    diffs, gaps = [], []
    for mb, ma in matched_bins(before_to_end, after_to_end, bin_width, min_tokens):
        diffs.append(after[torch.from_numpy(ma)].double().mean(0) - before[torch.from_numpy(mb)].double().mean(0))
        gaps.append(float(before_to_end[mb].mean() - after_to_end[ma].mean()))
    if not diffs:
        return None
    return torch.stack(diffs).mean(0).float(), float(np.mean(gaps)), float(before_to_end.mean() - after_to_end.mean())


def unmatched_contrast(before: torch.Tensor, after: torch.Tensor, n_before: int, n_after: int,
                       rng: np.random.Generator) -> torch.Tensor:  # fmt: skip
    """The control for :func:`matched_contrast`: ``mean(h of n_after after tokens) - mean(h of n_before before
    tokens)``, the tokens drawn at random (without replacement) from all of the game's before / after tokens,
    with no regard to position; ``(n_layers, d)``."""
    if not (0 < n_before <= len(before) and 0 < n_after <= len(after)):
        raise ValueError(f"cannot draw {n_before} of {len(before)} before and {n_after} of {len(after)} after tokens")
    b = torch.from_numpy(np.sort(rng.choice(len(before), n_before, replace=False)))
    a = torch.from_numpy(np.sort(rng.choice(len(after), n_after, replace=False)))
    return (after[a].double().mean(0) - before[b].double().mean(0)).float()


def _per_game(stats, table, fit_items, targets, game_criterion, bin_width, min_tokens, rng) -> tuple:
    """Per target game: the matched contrast and its unmatched control (as many before / after tokens as the
    matched bins hold, drawn at random), the game's criterion, position gaps and token counts; skipped games."""
    contrasts, controls, criteria, gaps, counts, skipped = [], [], [], [], [], []
    for i in targets:
        rows = table.item == i
        before, after = stats.activations["before"][i], stats.activations["after"][i]
        b_end, a_end = table.to_turn_end[rows & (table.labels == 0)], table.to_turn_end[rows & (table.labels == 1)]
        found = matched_contrast(before, after, b_end, a_end, bin_width, min_tokens)
        if found is None:
            skipped.append(fit_items[i].game)
            continue
        bins = matched_bins(b_end, a_end, bin_width, min_tokens)
        n = (int(sum(mb.sum() for mb, _ in bins)), int(sum(ma.sum() for _, ma in bins)))
        contrasts.append(found[0])
        controls.append(unmatched_contrast(before, after, *n, rng))
        criteria.append(game_criterion[fit_items[i].game])
        gaps.append(found[1:])
        counts.append(n)
    return contrasts, controls, criteria, gaps, counts, skipped


def position_matched_axes(model, tokenizer, fit_items, game_criterion: Sequence[str], value_axis: Axis, *,
                          bin_width: int = 16, min_tokens: int = 2, weighting: str = "criterion", seed: int = 0,
                          **extract_kwargs) -> tuple[Axis, Axis]:  # fmt: skip
    """The value axis refit on before/after contrasts matched in distance to the end of the turn, and its
    control: ``(matched, control)``.

    Recipe: for each construction target (``fit_items``, e.g. ``run.fit_items`` of notebook 02) every
    before and after token of the first post-discovery rewrite gets its tokens to the end of the
    assistant turn (:func:`vaxis.experiments.axis_tokens.token_table`, as in notebook 03's matched AUROC);
    :func:`matched_contrast` keeps bins of ``bin_width`` of that count holding ``min_tokens`` of both
    classes, so inside one game tokens are also matched in relative position. Before tokens all precede
    after tokens, so a game shares at most the bin around the reward, and its before tokens there still
    sit a few tokens further from the end (``meta["position_gap_tokens"]``: matched vs all tokens, over
    the games kept). ``v_L`` = :func:`vaxis.core.axis.fit_axis` of these contrasts (``weighting``). Games
    without a shared bin are skipped and counted. Layers, main layer, norms and model: ``value_axis``'s.

    The control is fit the same way on the same games from as many before and as many after tokens per game as
    the matched bins used, drawn at random from all of the game's before / after tokens (:func:`unmatched_contrast`,
    seeded by ``seed``): it has the matched axis's estimation noise but keeps the position signal, so a matched
    axis that falls to chance while the control does not lost a signal, not precision.

    The activations come from :func:`vaxis.core.extract.extract` called exactly as notebook 02's fit pass
    (``keep_activations=True``): after a run with ``keep_construction_activations`` (the demo's) they
    are read from the extraction cache, given the same ``max_batch_tokens``/``quantization``.
    """
    from ..core.axis import fit_axis
    from ..core.extract import extract
    from .axis_tokens import token_table
    from .extraction import project_activations
    from .extraction_files import Directions

    if bin_width < 1 or min_tokens < 1:
        raise ValueError(f"bin_width={bin_width} and min_tokens={min_tokens} must be positive integers")
    value_axis.check_model(model)
    targets = [i for i, it in enumerate(fit_items) if it.kind == "target"]
    if not targets:
        raise ValueError("no target items: pass the fit items of notebook 02 (run.fit_items)")
    stats = extract(model, tokenizer, [it.text for it in fit_items], [it.spans for it in fit_items],
                    layers=value_axis.layers, token_spans=["before", "after"], keep_activations=True,
                    **extract_kwargs)  # fmt: skip
    # token_table reads positions beside per-token scores; the scores of this placeholder direction are unused
    project_activations(stats, Directions(torch.ones(1, len(stats.layers), value_axis.hidden_size), ["unused"]))
    table = token_table(stats, fit_items, targets, tokenizer)
    contrasts, controls, criteria, gaps, counts, skipped = _per_game(
        stats, table, fit_items, targets, game_criterion, bin_width, min_tokens, np.random.default_rng(seed)
    )
    if not contrasts:
        raise ValueError(f"no usable games: none of {len(targets)} has a bin of {bin_width} tokens to the end of "
                         f"the turn with >= {min_tokens} before and after tokens; widen bin_width or lower "
                         "min_tokens")  # fmt: skip
    gap, tokens = np.mean(gaps, axis=0), np.sum(counts, axis=0)
    shared = {
        "bin_width": bin_width, "min_tokens": min_tokens, "weighting": weighting, "n_games": len(contrasts),
        "n_criteria": len(set(criteria)), "skipped_games": len(skipped),
        "n_tokens": {"before": int(tokens[0]), "after": int(tokens[1])},
        "source": {k: value_axis.meta[k] for k in ("kind", "profile", "data_hash", "seed") if k in value_axis.meta},
    }  # fmt: skip
    matched_meta = {
        "kind": "position-matched value axis",
        "recipe": f"per game: mean h after - mean h before inside bins of {bin_width} tokens to the end of the "
        f"turn holding >= {min_tokens} of each; fit_axis over games ({weighting})",
        **shared, "position_gap_tokens": {"matched": round(float(gap[0]), 2), "all_tokens": round(float(gap[1]), 2)},
    }  # fmt: skip
    control_meta = {
        "kind": "unmatched control of the position-matched value axis",
        "recipe": "per game: mean h of as many after tokens minus mean h of as many before tokens as the matched "
        f"bins used, drawn at random from the game's before / after tokens (seed {seed}); fit_axis over games "
        f"({weighting})",
        **shared, "seed": seed,
    }  # fmt: skip
    return tuple(
        Axis(fit_axis(torch.stack(c), criteria, weighting), list(value_axis.layers), value_axis.mean_norms.clone(),
             value_axis.main_layer, value_axis.model, value_axis.hidden_size, value_axis.n_blocks, meta)
        for c, meta in ((contrasts, matched_meta), (controls, control_meta))
    )  # fmt: skip


def position_matched_axis(model, tokenizer, fit_items, game_criterion: Sequence[str], value_axis: Axis,
                          **kwargs) -> Axis:  # fmt: skip
    """The matched axis of :func:`position_matched_axes` alone (same arguments)."""
    return position_matched_axes(model, tokenizer, fit_items, game_criterion, value_axis, **kwargs)[0]


def with_norms(axis: Axis, like: Axis) -> Axis:
    """``axis`` with ``like``'s mean residual norms (same layers), so that steering it at ``s`` % of the norm moves
    the residual stream as far as steering ``like`` (and the random directions steered beside ``like``) at ``s`` %;
    ``meta["steering_norm"]`` says whose norms they are."""
    _check_same_space(axis, like)
    meta = {**axis.meta, "steering_norm": f"mean residual norms of {like.meta.get('kind', 'another axis')}"}
    return Axis(axis.vectors.clone(), list(axis.layers), like.mean_norms.clone(), axis.main_layer, axis.model,
                axis.hidden_size, axis.n_blocks, meta)  # fmt: skip
