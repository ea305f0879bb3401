"""The held-out evaluation on planted data whose answers are known exactly.

The planted games make the best held-out layer (2) differ from the best construction layer (1),
give construction games the opposite signal from held-out games, and give construction
placebos a contrast no held-out number may contain, so each of these bugs changes an exact
value: choosing the main layer on held-out AUROC, evaluating construction games as held-out,
taking the placebo from construction games, averaging the placebo per attempt instead of per
game, flipping the reference comparison, pooling it wrongly.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from vaxis.core.axis import balanced_signs, fit_axis, shuffled_label_axes
from vaxis.core.evaluate import (
    auroc_columns,
    bootstrap_samples,
    permutation_p,
    position_strata,
    reference_sign_test,
    stratified_auroc,
)
from vaxis.experiments.axis import evaluate
from vaxis.experiments.extraction_files import Directions, Item

N_BEFORE, N_AFTER, TEXT_LEN = 5, 5, 11  # before tokens 0..4, reward 5, after 6..10
LAYERS = [0, 1, 2]
NAMES = ["axis", "split0", "split1", "shuffled0", "shuffled1", "random0", "random1"]
D = 4


class CharTokenizer:
    """One token per character: offsets (i, i + 1)."""

    def __call__(self, text, return_offsets_mapping=True, add_special_tokens=False):
        return {"offset_mapping": [(i, i + 1) for i in range(len(text))]}


def _scores(before: list[float], after: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_tokens, n_layers, K) projections: column k at layer l is ``before[l]`` or ``after[l]``."""
    k = len(NAMES)
    b = torch.tensor(before).view(1, -1, 1).expand(N_BEFORE, -1, k).clone()
    a = torch.tensor(after).view(1, -1, 1).expand(N_AFTER, -1, k).clone()
    return b, a


@pytest.fixture(scope="module")
def planted():
    """Games: construction criteria c0..c3 (2 games each), held-out h0..h3 (1 game each), with
    placebos on held-out games (game 8: one attempt of contrast 0.4; game 9: three of 0.1) and
    on construction games (contrast 5.0). Axis projections (column 0 and all others alike):

    * held-out targets: before/after = (1, 0) at L0, (0, 0) at L1, (0, 1) at L2 -> AUROC 0, 0.5, 1;
    * construction targets: (0, 0) at L0, (0, 1) at L1, (1, 0) at L2 -> split AUROC 0.5, 1, 0.
    """
    items, projections, sums, counts = [], {"before": [], "after": []}, {"before": [], "after": []}, []
    game_criterion, game_split = [], []
    text = "x" * TEXT_LEN
    spans = {"before": [(0, 5)], "reward": [(5, 6)], "after": [(6, 11)]}

    def add(game, kind, before, after, attempt=None, sum_after=None):
        items.append(Item(game, kind, text, spans, (0, TEXT_LEN), attempt, (0, TEXT_LEN)))
        b, a = _scores(before, after)
        projections["before"].append(b)
        projections["after"].append(a)
        sums["before"].append(torch.zeros(len(LAYERS), D))
        sums["after"].append(sum_after if sum_after is not None else torch.zeros(len(LAYERS), D))
        counts.append(N_AFTER)

    axis = torch.zeros(len(NAMES), len(LAYERS), D)
    axis[:, :, 0] = 1.0  # every direction points along e0: a sum's sign along e0 is its "projection"
    e0 = torch.zeros(len(LAYERS), D)
    e0[:, 0] = 1.0
    for g in range(8):  # construction games 0..7, criteria c0..c3
        game_criterion.append(f"c{g // 2}")
        game_split.append("construction")
        add(g, "target", [0, 0, 1], [0, 1, 0])
    for j in range(4):  # held-out games 8..11, criteria h0..h3
        g = 8 + j
        game_criterion.append(f"h{j}")
        game_split.append("held_out")
        # reference sign test along e0: h0, h1, h2 positive at every layer, h3 negative -> 0.75
        add(g, "target", [1, 0, 0], [0, 0, 1], sum_after=(1.0 if j < 3 else -1.0) * e0)
    for attempt, (g, value) in enumerate([(8, 0.4), (9, 0.1), (9, 0.1), (9, 0.1)]):
        add(g, "placebo", [0, 0, 0], [value] * 3, attempt=attempt)
    for g in (0, 1):
        add(g, "placebo", [0, 0, 0], [5.0] * 3, attempt=9)
    stats = SimpleNamespace(
        layers=LAYERS,
        projections=projections,
        token_indices={
            "before": [torch.arange(0, 5)] * len(items),
            "after": [torch.arange(6, 11)] * len(items),
        },
        sums={k: torch.stack(v) for k, v in sums.items()},
        counts={"before": torch.full((len(items),), N_BEFORE), "after": torch.tensor(counts)},
    )
    splits = [(["c2", "c3"], ["c0", "c1"]), (["c0", "c1"], ["c2", "c3"])]
    directions = Directions(axis, NAMES, splits)
    ev = evaluate(stats, items, game_criterion, game_split, directions, CharTokenizer(), n_boot=20, seed=0)
    return ev, stats, items, game_criterion, game_split, directions


def test_heldout_auroc_uses_heldout_games_only(planted):
    ev = planted[0]
    np.testing.assert_array_equal(ev.auroc, [0.0, 0.5, 1.0])
    assert ev.counts["heldout_games"] == 4 and ev.counts["heldout_tokens"] == 4 * (N_BEFORE + N_AFTER)


def test_main_layer_is_chosen_on_construction_splits(planted):
    ev = planted[0]
    np.testing.assert_array_equal(ev.split.mean(0), [0.5, 1.0, 0.0])
    assert ev.main_layer == 1  # the best construction layer, never the best held-out layer 2
    assert ev.heldout_best_layer == 2 and "construction" in ev.main_layer_rule


def test_placebo_is_heldout_and_averaged_per_game(planted):
    ev = planted[0]
    np.testing.assert_allclose(ev.real_contrast, [-1.0, 0.0, 1.0])
    # per game: (0.4 + 0.1) / 2 = 0.25; per attempt it would be 0.175; with construction placebos, more
    np.testing.assert_allclose(ev.placebo_contrast, [0.25, 0.25, 0.25])
    assert ev.counts["placebo_items"] == 4 and ev.counts["placebo_games"] == 2
    assert ev.placebo_ratio[2] == pytest.approx(0.25)


def test_reference_sign_test_on_planted_sums(planted):
    ev = planted[0]
    np.testing.assert_allclose(ev.reference_metric, [0.75, 0.75, 0.75])
    # the same statistic over construction splits: every construction sum is zero -> ties -> 0.5
    np.testing.assert_allclose(ev.reference_splits, [0.5, 0.5, 0.5])


def test_reference_sign_test_pools_tokens_per_criterion():
    """Criterion ``a`` has two games: mean after +3 over 1 token and -1 over 9 tokens. Pooled,
    its after mean is (3 - 9) / 10 < 0, a loss; averaging the games' means would call it a win."""
    v = np.array([[1.0, 0.0]])
    after_sums = np.array([[[3.0, 0.0]], [[-9.0, 0.0]], [[2.0, 0.0]]])
    after_counts = np.array([1, 9, 1])
    before_sums = np.zeros_like(after_sums)
    before_counts = np.array([1, 1, 1])
    out = reference_sign_test(after_sums, after_counts, before_sums, before_counts, ["a", "a", "b"], v)
    assert out.tolist() == [0.5]  # a loses, b wins
    flipped = reference_sign_test(before_sums, before_counts, after_sums, after_counts, ["a", "a", "b"], v)
    assert flipped.tolist() == [0.5]
    only_b = reference_sign_test(after_sums[2:], after_counts[2:], before_sums[2:], before_counts[2:], ["b"], v)
    assert only_b.tolist() == [1.0]  # after above before -> 1, not 0
    tie = reference_sign_test(before_sums, before_counts, before_sums, before_counts, ["a", "a", "b"], v)
    assert tie.tolist() == [0.5]


def test_bootstrap_uses_its_weights():
    """Each resample equals the AUROC of the explicitly repeated tokens of the drawn criteria."""
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(6), 30)
    labels = rng.integers(0, 2, len(groups))
    # criteria differ a lot: resampling them must move the AUROC
    scores = (labels * (groups % 3) + rng.normal(0, 0.5, len(groups)))[:, None]
    samples = bootstrap_samples(scores, labels, groups, n_boot=15, seed=7)
    draws = np.random.default_rng(7)
    names = np.unique(groups)
    expected = []
    for _ in range(15):
        draw = np.bincount(draws.integers(0, len(names), len(names)), minlength=len(names))
        times = draw[np.searchsorted(names, groups)]
        expected.append(roc_auc_score(np.repeat(labels, times), np.repeat(scores[:, 0], times)))
    np.testing.assert_allclose(samples[:, 0], expected)
    assert np.ptp(samples[:, 0]) > 0.05


def test_auroc_columns_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(labels[:, None] * 0.5, 1, (300, 3)), 1)  # many ties
    expected = [roc_auc_score(labels, scores[:, j]) for j in range(3)]
    np.testing.assert_allclose(auroc_columns(scores, labels), expected)


def test_stratified_auroc_removes_position_and_keeps_signal():
    rng = np.random.default_rng(2)
    n = 6000
    to_end = rng.integers(0, 30, n)
    labels = (to_end + rng.normal(0, 6, n) < 15).astype(int)  # after tokens sit nearer the end
    strata = to_end
    value, coverage = stratified_auroc(-to_end.astype(float), labels, strata)
    assert value == 0.5 and 0 < coverage <= 1  # an exact stratum leaves its covariate at exactly 0.5
    assert auroc_columns(-to_end.astype(float), labels) > 0.8
    informative = labels + rng.normal(0, 0.5, n)
    assert stratified_auroc(informative, labels, strata)[0] > 0.8
    # bins of relative position leave some position in: the covariate's own matched AUROC is above 0.5
    position = rng.uniform(0, 1, n)
    labels2 = (position + rng.normal(0, 0.1, n) > 0.5).astype(int)
    coarse = stratified_auroc(position, labels2, position_strata(position, 5))[0]
    fine = stratified_auroc(position, labels2, position_strata(position, 40))[0]
    assert coarse > fine > 0.5
    assert np.isnan(stratified_auroc(informative, labels, strata, min_per_class=10**6)[0])


def test_permutation_p():
    assert permutation_p(0.9, np.array([0.5, 0.95])) == pytest.approx(2 / 3)
    assert permutation_p(0.99, np.full(99, 0.5)) == pytest.approx(0.01)


def test_balanced_signs_cancel_within_each_criterion():
    gen = torch.Generator().manual_seed(0)
    groups = ["a"] * 4 + ["b"] * 3 + ["c"] * 3 + ["d"] * 2
    for _ in range(20):
        s = balanced_signs(groups, gen)
        for name in ("a", "d"):
            assert s[[i for i, g in enumerate(groups) if g == name]].sum() == 0
        assert abs(s[[i for i, g in enumerate(groups) if g in "bc"]].sum()) == 0  # odd leftovers alternate
        assert set(s.tolist()) == {-1.0, 1.0}


def test_shuffled_null_centres_on_chance_despite_a_strong_shift():
    """A strong before->after shift shared by every game: the real axis finds it, and the null axes
    (balanced swaps) do not carry it, so their held-out AUROCs sit around 0.5, and the cosine of
    each null axis with the planted direction is near zero. Independent per-game flips would
    leave (net sign) x shift in every null axis."""
    gen = torch.Generator().manual_seed(1)
    n_games, d = 60, 32
    direction = torch.randn(d, generator=gen)
    direction /= direction.norm()
    before = torch.randn(n_games, 1, d, generator=gen)
    after = before + 3.0 * direction + torch.randn(n_games, 1, d, generator=gen)
    groups = [f"c{i // 2}" for i in range(n_games)]
    contrasts = after - before
    real = fit_axis(contrasts, groups)[0]
    nulls = shuffled_label_axes(contrasts, groups, n=50, seed=0)[:, 0]
    cos = torch.nn.functional.cosine_similarity(nulls, direction.expand_as(nulls), dim=-1)
    assert cos.abs().max() < 0.5 and cos.abs().mean() < 0.25
    # held-out tokens: before ~ N(0, 1), after ~ N(0, 1) + 3 * direction
    tokens_before = torch.randn(500, d, generator=gen)
    tokens_after = torch.randn(500, d, generator=gen) + 3.0 * direction
    x = torch.cat([tokens_before, tokens_after]).numpy()
    labels = np.r_[np.zeros(500), np.ones(500)]
    null_auroc = auroc_columns(x @ nulls.numpy().T, labels)
    assert auroc_columns(x @ real.numpy(), labels) > 0.95
    assert abs(np.median(null_auroc) - 0.5) < 0.1 and np.quantile(null_auroc, 0.95) < 0.8
    naive = torch.randint(0, 2, (50, n_games), generator=gen) * 2.0 - 1
    naive_axes = torch.stack([fit_axis(contrasts, groups, signs=s)[0] for s in naive])
    naive_auroc = auroc_columns(x @ naive_axes.numpy().T, labels)
    assert np.abs(naive_auroc - 0.5).mean() > np.abs(null_auroc - 0.5).mean()  # the old null leaked


def test_incremental_auroc_credits_only_information_beyond_position():
    from vaxis.core.evaluate import incremental_auroc

    rng = np.random.default_rng(5)
    n = 3000
    groups = rng.integers(0, 20, n)
    position = rng.uniform(0, 1, n)
    hidden = rng.normal(0, 1, n)  # what the labels depend on besides position
    labels = (2 * position + hidden + rng.normal(0, 0.5, n) > 1).astype(int)
    ramp = position + rng.normal(0, 0.01, n)  # re-encodes position only
    informative = hidden + rng.normal(0, 0.3, n)
    base, full = incremental_auroc(position[:, None], np.c_[ramp, informative], labels, groups)
    assert full[0] - base < 0.01  # a position ramp adds nothing
    assert full[1] - base > 0.1  # a score with information beyond position adds a lot
    assert full[1] > auroc_columns(informative, labels) + 0.05  # ...on top of position, not instead of it
