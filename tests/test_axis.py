"""Fitting recovers planted directions, AUROC behaves on known cases, the axis round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from vaxis.core.axis import Axis, cosine_matrix, fit_axis, game_contrasts, random_directions, shuffled_label_axes
from vaxis.core.evaluate import (
    auroc_by_layer,
    bootstrap_auroc,
    choose_main_layer,
    contrast,
    criterion_splits,
    mean_level_metric,
)


def _planted(n_games=60, n_layers=4, d=32, noise=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    direction = torch.randn(n_layers, d, generator=gen)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    before = torch.randn(n_games, n_layers, d, generator=gen) * noise
    after = before + 2.0 * direction + torch.randn(n_games, n_layers, d, generator=gen) * noise
    groups = [f"c{i % 12}" for i in range(n_games)]
    return direction, after, before, groups


@pytest.mark.parametrize("weighting", ["criterion", "conversation"])
def test_fit_recovers_planted_direction(weighting):
    direction, after, before, groups = _planted(n_games=600, noise=0.3)
    v = fit_axis(game_contrasts(after, before), groups, weighting)
    cos = torch.nn.functional.cosine_similarity(v, direction, dim=-1)
    assert (cos > 0.99).all(), cos


def test_criterion_weighting_counts_each_criterion_once():
    contrasts = torch.tensor([[[1.0]], [[1.0]], [[1.0]], [[-1.0]]])  # criterion a thrice, b once
    groups = ["a", "a", "a", "b"]
    assert fit_axis(contrasts, groups, "criterion").item() == pytest.approx(0.0)
    assert fit_axis(contrasts, groups, "conversation").item() == pytest.approx(0.5)


def test_shuffled_axes_lose_the_direction():
    direction, after, before, groups = _planted(n_games=400, noise=1.0)
    shuffled = shuffled_label_axes(game_contrasts(after, before), groups, n=40, seed=0)
    real = fit_axis(game_contrasts(after, before), groups)
    cos_real = torch.nn.functional.cosine_similarity(real, direction, dim=-1).mean()
    cos_shuf = torch.nn.functional.cosine_similarity(shuffled, direction.expand_as(shuffled), dim=-1)
    assert cos_real > 0.95
    assert cos_shuf.abs().mean() < 0.4 and cos_shuf.mean().abs() < 0.1  # no systematic alignment


def test_nan_means_are_rejected():
    a = torch.zeros(2, 1, 3)
    b = a.clone()
    b[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="empty before or after"):
        game_contrasts(a, b)


def test_auroc_separable_and_shuffled():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(500), np.ones(500)]
    separable = np.c_[np.r_[rng.normal(0, 1, 500), rng.normal(10, 1, 500)]]
    assert auroc_by_layer(separable, labels)[0] == 1.0
    shuffled = auroc_by_layer(separable, rng.permutation(labels))[0]
    assert abs(shuffled - 0.5) < 0.06
    assert auroc_by_layer(-separable, labels)[0] == 0.0


def test_bootstrap_ci_brackets_the_estimate():
    rng = np.random.default_rng(1)
    n = 2000
    labels = rng.integers(0, 2, n)
    scores = (labels + rng.normal(0, 1.5, n))[:, None]
    groups = rng.integers(0, 25, n)
    point = auroc_by_layer(scores, labels)[0]
    lo, hi = bootstrap_auroc(scores, labels, groups, n_boot=100, seed=0)
    assert lo[0] < point < hi[0] and hi[0] - lo[0] < 0.1
    # weights are multiplicities: a weighted AUROC equals the AUROC of the repeated sample
    w = rng.integers(1, 3, n)
    assert auroc_by_layer(scores, labels, w.astype(float))[0] == pytest.approx(
        roc_auc_score(np.repeat(labels, w), np.repeat(scores[:, 0], w))
    )


def test_mean_level_metric_and_contrast():
    scores = np.array([[0.0], [1.0], [0.5], [0.2]])
    labels = np.array([0, 1, 0, 1])
    groups = np.array(["a", "a", "b", "b"])
    assert mean_level_metric(scores, labels, groups)[0] == 0.5
    c = contrast([np.array([[1.0], [3.0]]), np.zeros((0, 1))], [np.array([[0.0]]), np.array([[1.0]])])
    assert c.shape == (1, 1) and c[0, 0] == 2.0


def test_main_layer_choice_and_splits():
    assert choose_main_layer(np.array([[0.5, 0.9, 0.7], [0.5, 0.8, 0.9]]), [4, 5, 6]) == 5
    splits = criterion_splits([f"c{i}" for i in range(50)], n_splits=20, n_test=15, seed=0)
    assert len(splits) == 20
    for train, test in splits:
        assert len(train) == 35 and len(test) == 15 and not set(train) & set(test)
    assert splits[0] != splits[1]
    with pytest.raises(ValueError):
        criterion_splits(["a", "b"], 1, 2, 0)


def test_random_directions_and_cosine_matrix():
    r = random_directions(5, 3, 16, seed=0)
    torch.testing.assert_close(r.norm(dim=-1), torch.ones(5, 3))
    m = cosine_matrix(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
    torch.testing.assert_close(torch.diag(m), torch.ones(3))
    assert m[0, 1].abs() < 1e-6 and m[0, 2] == pytest.approx(2**-0.5)


def _axis(hidden=64, blocks=3):
    return Axis(
        vectors=torch.randn(blocks + 1, hidden),
        layers=list(range(blocks + 1)),
        mean_norms=torch.rand(blocks + 1) + 1,
        main_layer=2,
        model="vaxis/core/tiny-qwen3",
        hidden_size=hidden,
        n_blocks=blocks,
        meta={"seed": 0, "auroc": {"2": 0.8}},
    )


def test_axis_round_trip_exact(tmp_path):
    axis = _axis()
    st, js = axis.save(tmp_path / "axis")
    back = Axis.load(st)
    assert torch.equal(back.vectors, axis.vectors) and torch.equal(back.mean_norms, axis.mean_norms)
    assert back.layers == axis.layers and back.main_layer == 2 and back.meta == axis.meta
    assert Axis.load(tmp_path / "axis.json").model == axis.model
    sv = axis.steering_vector(10)
    torch.testing.assert_close(sv.norm(), torch.tensor(0.1 * axis.mean_norm(2)))


def test_axis_refuses_other_models(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="hidden size 64.*Fit an axis"):
        _axis(hidden=32).check_model(model)
    with pytest.raises(ValueError, match="3 blocks"):
        _axis(blocks=5).check_model(model)
    axis = _axis()
    scores = axis.project(
        model, tokenizer, ["The river flows.", "A drum played."], layers=[1, 2], use_cache=False, progress=False
    )
    assert scores.shape == (2, 2) and torch.isfinite(scores).all() and (scores.abs() <= 1).all()


def test_axis_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is missing"):
        Axis.load(tmp_path / "nothing")
    axis = _axis()
    axis.save(tmp_path / "a")
    (tmp_path / "a.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a vaxis axis"):
        Axis.load(tmp_path / "a")


def test_project_uses_each_layers_own_vector(tiny):
    """``Axis.project`` at several layers equals the mean cosine with *that* layer's vector, read
    with ``capture`` (the main layer's vector at every layer would differ)."""
    from vaxis.core.hooks import capture

    model, tokenizer = tiny
    axis = _axis()
    texts = ["The river flows past the mill.", "A drum played."]
    layers = [1, 2, 3]
    got = axis.project(model, tokenizer, texts, layers=layers, use_cache=False, progress=False)
    for i, text in enumerate(texts):
        batch = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with capture(model, layers) as acts:
            model(**batch)
        for j, layer in enumerate(layers):
            h = acts[layer][0]
            cos = torch.nn.functional.cosine_similarity(h, axis.vector(layer).expand_as(h), dim=-1).mean()
            torch.testing.assert_close(got[i, j], cos, atol=1e-5, rtol=1e-4)
