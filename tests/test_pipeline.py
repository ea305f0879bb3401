"""The experiment steps: directions for the evaluation pass and the per-token table."""

from __future__ import annotations

import numpy as np
import torch

from vaxis.core.axis import fit_axis
from vaxis.core.extract import extract
from vaxis.experiments.axis_tokens import token_table
from vaxis.experiments.extraction import build_directions
from vaxis.experiments.extraction_files import Item


def test_build_directions_columns_and_split_axes():
    gen = torch.Generator().manual_seed(0)
    contrasts = torch.randn(40, 3, 8, generator=gen)
    criteria = [f"c{i % 20}" for i in range(40)]
    dirs = build_directions(contrasts, criteria, n_splits=4, n_test=5, n_shuffles=3, n_random=2, seed=0)
    assert dirs.vectors.shape == (1 + 4 + 3 + 2, 3, 8)
    assert dirs.names[0] == "axis" and dirs.columns("split") == [1, 2, 3, 4]
    assert dirs.columns("shuffled") == [5, 6, 7] and dirs.columns("random") == [8, 9]
    torch.testing.assert_close(dirs.vectors[0], fit_axis(contrasts, criteria))
    for k, (train, test) in zip(dirs.columns("split"), dirs.splits):
        keep = [j for j, c in enumerate(criteria) if c in train]
        torch.testing.assert_close(dirs.vectors[k], fit_axis(contrasts[keep], [criteria[j] for j in keep]))
        assert len(test) == 5
    again = build_directions(contrasts, criteria, n_splits=4, n_test=5, n_shuffles=3, n_random=2, seed=0)
    assert torch.equal(again.vectors, dirs.vectors)


def test_token_table_positions_and_labels(tiny):
    model, tokenizer = tiny
    text = "Intro. The river flows past the mill: a drum plays loudly near the old bridge today."
    rewrite = (7, len(text))
    reward = text.index(":")
    items = [
        Item(
            0,
            "target",
            text,
            {"before": [(7, reward)], "reward": [(reward, reward + 1)], "after": [(reward + 1, len(text))]},
            rewrite,
        )
    ]
    dirs = {layer: torch.randn(2, 64) for layer in range(4)}
    stats = extract(
        model,
        tokenizer,
        [i.text for i in items],
        [i.spans for i in items],
        directions=dirs,
        use_cache=False,
        progress=False,
    )
    table = token_table(stats, items, [0], tokenizer)
    n_before, n_after = int(stats.counts["before"][0]), int(stats.counts["after"][0])
    assert table.scores.shape == (n_before + n_after, 4, 2)
    assert (table.labels == np.r_[np.zeros(n_before), np.ones(n_after)]).all()
    assert (table.position[table.labels == 0] < table.position[table.labels == 1].min()).all()
    assert 0 <= table.position.min() and table.position.max() < 1
    # token counts to the rewrite's end: the last after token has 0 left, the first before token the most
    assert table.to_rewrite_end[-1] == 0 and table.to_rewrite_end[0] == table.to_rewrite_end.max()
    assert (np.diff(table.to_rewrite_end) < 0).all() and (table.to_turn_end == table.to_rewrite_end).all()
    assert table.from_start[0] == 0 and (np.diff(table.from_start) > 0).all()
    assert (table.feature("tokens to the rewrite's end") == -table.to_rewrite_end).all()
