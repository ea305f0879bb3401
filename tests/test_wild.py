"""Notebook 09's building blocks (vaxis.experiments.wild) on planted data and the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaxis.experiments import wild

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _planted(n_per=60, seed=0):
    rng = np.random.default_rng(seed)
    cats = np.repeat(["high", "low", "flat", "flat2"], n_per)
    scores = rng.normal(0, 1, len(cats)) + np.where(cats == "high", 2.0, 0) - np.where(cats == "low", 2.0, 0)
    return scores, cats


def test_quartile_table_finds_planted_categories_and_not_flat_ones():
    scores, cats = _planted()
    t = wild.quartile_table(scores, cats, n_boot=100, n_perm=200, seed=0).set_index("category")
    assert t.top_share.sum() == pytest.approx(1.0) and t.bottom_share.sum() == pytest.approx(1.0)
    assert t.loc["high", "top_share"] > 0.7 and t.loc["high", "bottom_share"] < 0.05
    assert t.loc["low", "bottom_share"] > 0.7 and t.loc["high", "permutation_p"] < 0.01
    lo, hi = t.loc["high", "top_ci"]
    assert lo <= t.loc["high", "top_share"] <= hi
    assert t.loc["flat", "permutation_p"] > 0.05 and t.loc["flat2", "permutation_p"] > 0.05
    assert list(t.n) == [60] * 4


def test_quartile_table_permutation_null_is_uniform_without_signal():
    rng = np.random.default_rng(3)
    ps = []
    for s in range(20):
        cats = rng.choice(["a", "b", "c"], 120)
        t = wild.quartile_table(rng.normal(size=120), cats, n_boot=0, n_perm=100, seed=s)
        ps.extend(t.permutation_p)
    assert np.mean(np.array(ps) < 0.05) < 0.15  # about 5% false positives, not many more


def test_length_residuals_remove_a_planted_length_effect():
    rng = np.random.default_rng(1)
    n_tokens = rng.integers(5, 400, 300)
    scores = 0.05 * np.log(n_tokens) + rng.normal(0, 0.01, 300)
    res = wild.length_residuals(scores, n_tokens)
    assert abs(np.corrcoef(res, np.log(n_tokens))[0, 1]) < 1e-6
    assert abs(np.corrcoef(scores, np.log(n_tokens))[0, 1]) > 0.9
    assert res.mean() == pytest.approx(0, abs=1e-12)


def test_extremes_order():
    top, bottom = wild.extremes(np.array([0.3, -1.0, 2.0, 0.0]), ["a", "b", "c", "d"], k=2)
    assert top == [(2.0, "c"), (0.3, "a")] and bottom == [(-1.0, "b"), (0.0, "d")]


def test_prompt_projections_read_the_last_token_before_generation(tiny, tmp_cache):
    from vaxis.chat import render_chat

    model, tok = tiny
    d = model.config.hidden_size
    directions = {
        1: torch.nn.functional.normalize(torch.randn(2, d, generator=torch.Generator().manual_seed(0)), dim=-1)
    }
    prompts = ["What is 2 + 2?", "Summarise this: the cat sat on the mat."]
    proj, n_tokens = wild.prompt_projections(model, tok, prompts, directions, progress=False)
    assert proj.shape == (2, 1, 2) and np.isfinite(proj).all() and (n_tokens > 0).all()
    # the same cosine by hand: the hidden state at the rendered prompt's last token (the header's newline)
    from vaxis import capture

    for i, p in enumerate(prompts):
        text = render_chat(tok, [{"role": "user", "content": p}], add_generation_prompt=True).text
        enc = tok(text, return_offsets_mapping=True, add_special_tokens=False, return_tensors="pt")
        offsets = enc.pop("offset_mapping")[0].tolist()
        last = len(offsets) - 1
        with capture(model, [1]) as acts, torch.no_grad():
            model(**enc)
        h = acts[1][0, last]
        want = torch.nn.functional.cosine_similarity(h[None], directions[1], dim=-1).numpy()
        np.testing.assert_allclose(proj[i, 0], want, atol=1e-4)
