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
    from vaxis.core.chat import render_chat

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


def test_chunked_projections_equal_one_pass_and_resume_from_the_cache(tiny, tmp_cache, monkeypatch):
    model, tok = tiny
    d = model.config.hidden_size
    directions = {
        2: torch.nn.functional.normalize(torch.randn(3, d, generator=torch.Generator().manual_seed(1)), dim=-1)
    }
    prompts = [f"Question {i}: what is {i} + {i}?" + " really" * (i % 4) for i in range(7)]
    whole, n_whole = wild.prompt_projections(model, tok, prompts, directions, chunk_size=100, progress=False)
    parts, n_parts = wild.prompt_projections(model, tok, prompts, directions, chunk_size=3, progress=False)
    np.testing.assert_allclose(parts, whole, atol=1e-5)
    np.testing.assert_array_equal(n_parts, n_whole)
    # a rerun reads every chunk from the cache: no forward pass at all
    calls = []
    monkeypatch.setattr(model, "forward", lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(AssertionError))
    again, _ = wild.prompt_projections(model, tok, prompts, directions, chunk_size=3, progress=False)
    np.testing.assert_allclose(again, parts)
    assert not calls


def test_fit_to_context_cuts_from_the_left_and_counts(tiny):
    from vaxis.core.chat import render_chat

    _, tok = tiny
    long = "start " + " ".join(f"w{i}" for i in range(300)) + " the question at the end?"
    out, n = wild.fit_to_context(tok, ["short one", long], 64)
    assert n == 1 and out[0] == "short one" and out[1].endswith("the question at the end?")
    assert not out[1].startswith("start")
    rendered = render_chat(tok, [{"role": "user", "content": out[1]}], add_generation_prompt=True).text
    assert len(tok(rendered, add_special_tokens=False)["input_ids"]) <= 64
    with pytest.raises(ValueError, match="no room"):
        wild.fit_to_context(tok, ["x"], 10)


def test_share_gaps_match_the_quartile_table_per_column():
    scores, cats = _planted()
    rng = np.random.default_rng(5)
    cols = np.stack([scores, rng.normal(size=len(scores))], 1)
    gaps = wild.share_gaps(cols, cats)
    t = wild.quartile_table(scores, cats, n_boot=0, n_perm=10).set_index("category")
    for k in t.index:
        assert gaps[k][0] == pytest.approx(t.loc[k, "top_share"] - t.loc[k, "bottom_share"])
    assert abs(gaps["high"][1]) < 0.4 < gaps["high"][0]


def test_category_effects_reads_signal_length_and_the_random_band():
    rng = np.random.default_rng(2)
    n = 400
    cats = np.repeat(["real", "long", "flat", "other"], n // 4)
    n_tokens = np.where(cats == "long", rng.integers(200, 400, n), rng.integers(10, 40, n))
    # "real" is high on the axis for its own sake; "long" only because its prompts are long
    axis = rng.normal(0, 1, n) + 2.0 * (cats == "real") + 1.5 * np.log(n_tokens)
    random_cols = rng.normal(0, 1, (n, 20))  # random directions: no category signal at all
    t = wild.category_effects(np.column_stack([axis, random_cols]), n_tokens, cats, n_boot=50, n_perm=200, seed=0)
    t = t.set_index("category")
    assert t.loc["real", "reading"] == "beyond random, survives length"
    assert t.loc["long", "reading"] == "explained by length"
    # (shares are compositional: "flat" is crowded out of the top by "real", so it is not asserted on)
    assert t.loc["real", "random_gap_2.5%"] < 0.2 and t.loc["real", "random_gap_97.5%"] < 0.3
    # a random direction that carries the same category signal closes the band: no longer "beyond random"
    same = np.column_stack([axis, axis[:, None] + rng.normal(0, 0.01, (n, 20))])
    t2 = wild.category_effects(same, n_tokens, cats, n_boot=0, n_perm=200, seed=0).set_index("category")
    assert t2.loc["real", "reading"] == "within the random band"


def test_random_band_cannot_carry_a_planted_category_signal(tiny):
    """The null directions come from probe_directions, drawn without the data: on planted activations where
    only the axis carries a category effect, the random directions' gaps stay near zero."""
    from vaxis.core.axis import Axis
    from vaxis.experiments.coding import probe_directions

    rng = np.random.default_rng(0)
    d, n = 1024, 300  # random directions overlap the axis by ~1/sqrt(d), as in a real residual stream
    v = rng.normal(size=d)
    v /= np.linalg.norm(v)
    axis = Axis(
        model="planted",
        layers=[1],
        vectors=torch.tensor(v[None], dtype=torch.float32),
        main_layer=1,
        mean_norms=torch.ones(1),
        hidden_size=d,
        n_blocks=1,
        meta={},
    )
    cats = np.repeat(["up", "down", "x"], n // 3)
    acts = rng.normal(size=(n, d)) + 3.0 * np.outer((cats == "up").astype(float) - (cats == "down"), v)
    dirs = probe_directions(axis, 50, seed=0)[1].numpy()
    cos = (acts / np.linalg.norm(acts, axis=1, keepdims=True)) @ dirs.T
    gaps = wild.share_gaps(cos, cats)
    assert gaps["up"][0] > 0.6
    assert np.quantile(np.abs(gaps["up"][1:]), 0.9) < 0.2


def test_association_is_zero_for_flat_trends_and_large_for_planted_ones():
    scores, cats = _planted()
    strong = wild.association(scores, cats)
    rng = np.random.default_rng(0)
    flat = wild.association(rng.normal(size=len(cats)), cats)
    assert strong["cramers_v"] > 0.6 and strong["p"] < 1e-6
    assert flat["cramers_v"] < 0.3 and flat["p"] > 0.001
    table = wild.compare_models({"planted": scores, "noise": rng.normal(size=len(cats))}, cats, focus=["high"])
    assert list(table.model) == ["planted", "noise"] and table["gap high"][0] > 0.6


# --------------------------------------------------------------------------------------------------
# Cramér's V against the random directions read in the same pass


def _stream(rng, n_per=30, d=16, n_random=20, axis_gain=0.0):
    """Activations whose categories differ along many dimensions (as a residual stream's do), read along
    ``1 + n_random`` random unit directions; ``axis_gain`` adds a category contrast along column 0 only."""
    cats = np.repeat(["a", "b", "c", "d"], n_per)
    means = rng.normal(0, 1, (4, d))
    acts = means[np.searchsorted(["a", "b", "c", "d"], cats)] + rng.normal(0, 1.5, (len(cats), d))
    dirs = rng.normal(size=(1 + n_random, d))
    scores = acts @ (dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).T
    scores[:, 0] += axis_gain * ((cats == "a").astype(float) - (cats == "b"))
    return scores, cats


def test_association_null_rejects_at_its_nominal_rate_when_the_axis_is_one_more_direction():
    """Random directions sort these categories too (chi-square p tiny along most of them), so the axis's V is
    judged against theirs: with the axis one more random direction, p <= 0.05 in about 1/21 of datasets."""
    rng = np.random.default_rng(0)
    got = [wild.association_null(*_stream(rng)) for _ in range(300)]
    ps = np.array([g["v_p"] for g in got])
    assert 0.02 <= np.mean(ps <= 0.05) <= 0.085
    assert 0.4 <= np.mean(ps <= 0.5) <= 0.6
    assert np.median([g["p"] for g in got]) < 0.01  # the chi-square p alone would call nearly all of them real


def test_association_null_rejects_a_planted_axis_effect():
    rng = np.random.default_rng(1)
    got = [wild.association_null(*_stream(rng, axis_gain=4.0)) for _ in range(40)]
    assert np.mean([g["v_p"] <= 0.05 for g in got]) >= 0.9
    g = got[0]
    assert g["random_v"].shape == (20,) and g["v_beyond"] is True
    med, lo, hi = g["random_v_range"]
    assert lo <= med <= hi < g["cramers_v"]
    assert g["v_p"] == pytest.approx(wild.association_null(*_stream(np.random.default_rng(1), axis_gain=4.0))["v_p"])


def test_association_null_values_equal_association_per_column_and_its_bootstrap_ci():
    rng = np.random.default_rng(2)
    scores, cats = _stream(rng, n_random=5)
    a = wild.association_null(scores, cats, n_boot=200, seed=0)
    for j in range(1, 6):
        assert a["random_v"][j - 1] == pytest.approx(wild.association(scores[:, j], cats)["cramers_v"])
    assert a["cramers_v"] == pytest.approx(wild.association(scores[:, 0], cats)["cramers_v"])
    lo, hi = a["v_ci"]
    assert lo < a["cramers_v"] < hi and hi - lo < 0.6
    assert np.isnan(wild.association_null(scores[:, 0], cats)["v_p"])  # no random directions: no p
    assert all(np.isnan(wild.association_null(scores, cats)["v_ci"]))  # no resamples: no CI


def test_compare_models_judges_each_models_v_against_its_random_directions():
    rng = np.random.default_rng(3)
    real, cats = _stream(rng, axis_gain=4.0)
    null, _ = _stream(rng)
    table = wild.compare_models({"real": real, "null": null[: len(cats)], "1d": real[:, 0]}, cats, focus=["a"])
    t = table.set_index("model")
    assert t.loc["real", "v_p"] <= 0.05 and t.loc["real", "n_random"] == 20
    assert t.loc["real", "random_v_2.5%"] <= t.loc["real", "random_v_median"] <= t.loc["real", "random_v_97.5%"]
    assert t.loc["1d", "n_random"] == 0 and np.isnan(t.loc["1d", "v_p"])
    assert t.loc["1d", "cramers_v"] == pytest.approx(t.loc["real", "cramers_v"])
    assert t.loc["real", "gap a"] == pytest.approx(t.loc["1d", "gap a"]) and t.loc["real", "gap a"] > 0.3
