"""A *boundary axis* from the ICRL games (METHOD.md section 5, "where it moves").

The value axis contrasts tokens after vs before the reward inside the first post-discovery rewrite.
The boundary axis contrasts two whole rewrites of the same game: the successful rewrite of the
**post-discovery** paragraph (the player now knows the criterion) minus the successful rewrite of
the **discovery** paragraph (the first success, found by trying). It is fit by the value axis's
recipe (:func:`vaxis.core.axis.fit_axis`: per-game contrasts of span means, each criterion counted once)
on construction games only, and its layer is chosen like the value axis's: the best mean held-out
AUROC (post vs discovery span means projected on the axis) over splits *inside* the construction
criteria (:func:`vaxis.core.evaluate.criterion_splits`), never on held-out criteria.
"""

from __future__ import annotations

import numpy as np
import torch

SPANS = ("discovery", "post")


def boundary_items(games) -> tuple[list, list, list]:
    """``(chats, spans, criteria)`` of the construction games that have a successful discovery
    rewrite and a successful rewrite of the next paragraph; a chat stops at the post rewrite."""
    chats, spans, criteria = [], [], []
    for g in games:
        if g.split != "construction":
            continue
        first = {}
        for a in g.attempts:
            if a.success and a.paragraph_index in (g.discovery_index, g.discovery_index + 1):
                first.setdefault(a.paragraph_index, a)
        if len(first) < 2:
            continue
        disc, post = first[g.discovery_index], first[g.discovery_index + 1]
        chats.append(g.chat(post.message_index))
        spans.append({
            "discovery": [(disc.message_index, *disc.rewrite_span)],
            "post": [(post.message_index, *post.rewrite_span)],
        })  # fmt: skip
        criteria.append(g.criterion)
    return chats, spans, criteria


def split_auroc(post: torch.Tensor, disc: torch.Tensor, criteria, n_splits: int, seed: int) -> np.ndarray:
    """Held-out AUROC per layer over splits of the construction criteria: ``(n_splits, n_layers)``."""
    from ..core.axis import fit_axis
    from ..core.evaluate import auroc_by_layer, criterion_splits

    names = sorted(set(criteria))
    splits = criterion_splits(criteria, n_splits, max(1, len(names) // 3), seed)
    crit = np.asarray(criteria)
    table = []
    for train, test in splits:
        tr, te = np.isin(crit, train), np.isin(crit, test)
        v = fit_axis(post[tr] - disc[tr], list(crit[tr]))
        unit = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        scores = torch.cat([(post[te] * unit).sum(-1), (disc[te] * unit).sum(-1)]).numpy()
        labels = np.r_[np.ones(int(te.sum())), np.zeros(int(te.sum()))]
        table.append(auroc_by_layer(scores, labels))
    return np.array(table)


def fit_boundary_axis(model, tokenizer, games, *, n_games: int | None = None, n_splits: int = 10, seed: int = 0,
                      model_name: str = "", **extract_kwargs):  # fmt: skip
    """The boundary axis (an :class:`vaxis.Axis`) from up to ``n_games`` construction games (in file
    order), its main layer chosen on splits of the construction criteria. Raises ValueError when fewer
    than 2 criteria have usable games."""
    from ..core.axis import Axis, fit_axis
    from ..core.evaluate import choose_main_layer
    from ..core.extract import extract

    chats, spans, criteria = boundary_items(games)
    if n_games:
        chats, spans, criteria = chats[:n_games], spans[:n_games], criteria[:n_games]
    if len(set(criteria)) < 2:
        raise ValueError(
            f"{len(chats)} usable construction games over {len(set(criteria))} criteria: the boundary axis needs "
            "games of at least 2 criteria with a successful discovery and post-discovery rewrite (run notebook 01)"
        )
    stats = extract(model, tokenizer, chats, spans, token_spans=[], **extract_kwargs)
    post, disc = stats.means("post").double(), stats.means("discovery").double()
    table = split_auroc(post, disc, criteria, n_splits, seed)
    layers = list(stats.layers)
    main = choose_main_layer(table, layers)
    vectors = fit_axis((post - disc).float(), criteria)
    return Axis(
        vectors=vectors, layers=layers, mean_norms=stats.mean_norms(), main_layer=main,
        model=model_name or getattr(model.config, "_name_or_path", ""), hidden_size=vectors.shape[1],
        n_blocks=layers[-1],
        meta={"kind": "boundary (post-discovery minus discovery rewrite)", "n_games": len(chats),
              "n_criteria": len(set(criteria)), "seed": seed,
              "construction_split_auroc": {str(layer): round(float(a), 4) for layer, a in zip(layers, table.mean(0))}},
    )  # fmt: skip
