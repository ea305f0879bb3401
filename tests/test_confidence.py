"""Notebook 04's pieces: prompts, answer parsing, statistics, and the sweep's bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vaxis.data.mathdata import Problem
from vaxis.experiments import confidence as conf
from vaxis.experiments import confidence_answers as answers
from vaxis.experiments import confidence_report as report
from vaxis.experiments import confidence_stats as stats


@pytest.mark.parametrize(
    ("text", "strict", "authors"),
    [
        ("Yes", "yes", "yes"),
        (" yes.", "yes", "yes"),
        ("**No**, because", "no", "no"),
        ("NO", "no", "no"),
        ("Yesterday", None, None),
        ("Nope", None, None),
        ("I think yes", None, "yes"),
        ("I would say no, not yes", None, "no"),
        ("", None, None),
        ("Not sure", None, None),
        ("The partial response is on track, so my answer is yes", None, None),  # past the first 50 characters
    ],
)
def test_parse_yes_no(text, strict, authors):
    assert answers.parse_yes_no(text, strict=True) == strict
    assert answers.parse_yes_no(text) == authors


def test_prompts_follow_the_authors():
    p = Problem("gsm8k:0000", "What is 2 + 2?", "4", "gsm8k")
    chat = conf.confidence_chat(p, "It is 4. \\boxed{4}", "incorrect")
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    assert chat[0]["content"] == conf.MATH_SYSTEM and chat[-1]["content"].startswith(
        "Do you think your answer is incorrect?"
    )
    partial = conf.partial_chat(p, "First, add", "correct")
    assert "lead to a correct final answer" in partial[1]["content"] and "What is 2 + 2?" in partial[1]["content"]
    assert "an incorrect final answer" in conf.partial_chat(p, "x", "incorrect")[1]["content"]


def test_partial_responses_cut_at_a_word():
    text = "one two three four five six"
    (half,) = conf.partial_responses([text])
    assert text.startswith(half) and not half.endswith(" ") and len(half) <= len(text) // 2 + 1
    assert conf.partial_responses(["x"]) == ["x"]


def test_slope_ci_recovers_a_planted_slope():
    rng = np.random.default_rng(0)
    strengths = np.array([-16.8, -8.4, 0.0, 8.4, 16.8])
    values = 0.05 * strengths[:, None] + rng.normal(0, 0.2, (5, 40))
    slope, lo, hi = conf.slope_ci(strengths, values, n_boot=200)
    assert lo < 0.05 < hi and abs(slope - 0.05) < 0.01
    flat, lo0, hi0 = conf.slope_ci(strengths, rng.normal(0, 0.2, (5, 40)), n_boot=200)
    assert lo0 < 0 < hi0
    # NaN (invalid outputs, dropped strengths) are left out; one strength left gives NaN, not an error
    holes = values.copy()
    holes[1, :20] = np.nan
    assert abs(conf.slope_ci(strengths, holes, n_boot=50)[0] - 0.05) < 0.01
    holes[:4] = np.nan
    assert np.isnan(conf.slope_ci(strengths, holes, n_boot=20)).all()


def test_spearman_and_auroc_cis():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    rho, lo, hi, n = stats.spearman_ci(x, x + rng.normal(0, 0.3, 200))
    assert rho > 0.9 and lo < rho < hi and n == 200
    assert np.isnan(stats.spearman_ci(x, np.ones(200))[0])  # no variation: not measurable
    a, lo, hi, n_pos, n_neg = stats.binary_auroc_ci(x, x > 0)
    assert a == 1.0 and n_pos + n_neg == 200
    assert np.isnan(stats.binary_auroc_ci(x, np.ones(200, bool))[0])


def _sweep():
    strengths = [-8.4, 0.0, 8.4]
    n = 4
    log_odds, yes = {}, {}
    for f in conf.QUESTIONS:
        lo = {("none", 0.0): np.zeros(n)}
        for s in (-8.4, 8.4):
            lo[("axis", s)] = np.full(n, s / 8.4)  # -1 / +1
            lo[("random0", s)] = np.full(n, 0.1 * s / 8.4)
            lo[("random1", s)] = np.full(n, -0.2 * s / 8.4)
        log_odds[f] = lo
        yes[f] = {-8.4: {"yes_rate": 0.2, "valid": 0.4, "n": 8}, 0.0: {"yes_rate": 0.5, "valid": 1.0, "n": 8},
                  8.4: {"yes_rate": 0.7, "valid": 0.9, "n": 8}}  # fmt: skip
    lengths = {-8.4: (120.0, 0.5), 0.0: (100.0, 0.2), 8.4: (50.0, 0.0)}
    return conf.Sweep(20, strengths, log_odds, yes, lengths)


def test_sweep_table_drops_degenerate_strengths_and_reads_the_band():
    sweep = _sweep()
    table = sweep.table()
    assert np.isnan(table["yes_rate[correct]"][0])  # 40% parseable: dropped
    assert table["yes_rate[correct]"][2] == 0.7
    np.testing.assert_allclose(table["log_odds[correct]"], [-1.0, 0.0, 1.0])
    lo, hi = sweep.random_band("correct")
    np.testing.assert_allclose(lo, [-0.1, 0.0, -0.2])
    np.testing.assert_allclose(hi, [0.2, 0.0, 0.1])
    np.testing.assert_allclose(table["length_fold_vs_0"], [1.2, 1.0, 0.5])


def test_strengths_must_include_zero(tiny):
    with pytest.raises(ValueError, match="include 0"):
        conf.steering_sweep(*tiny, None, 1, [], [], [-8.4, 8.4], n_random=0, n_samples=1, length_problems=[],
                            length_tokens=1)  # fmt: skip


def test_load_dataset_errors():
    with pytest.raises(ValueError, match="at least one"):
        conf.load_dataset("gsm8k", 0)
    assert len(conf.load_dataset("gsm8k", 3)) == 3


def test_distance_from_the_random_band():
    sweep = _sweep()
    np.testing.assert_allclose(sweep.distance_from_band("correct"), [-0.9, 0.0, 0.9])
    assert report._fmt_ci((float("nan"), 0, 0)) == "not measurable"


def test_random_directions_only_at_the_asked_strengths(tiny):
    from vaxis.core.axis import Axis

    axis = Axis(torch.randn(4, 64), [0, 1, 2, 3], torch.ones(4), 2, "tiny", 64, 3)
    vectors = conf.steering_vectors(axis, 2, [-8.4, 0.0, 8.4], n_random=2, seed=0, random_strengths=[8.4])
    assert set(vectors) == {("none", 0.0), ("axis", -8.4), ("axis", 8.4), ("random0", 8.4), ("random1", 8.4)}
    v = vectors[("random0", 8.4)][2]
    assert v.norm().item() == pytest.approx(0.084, rel=1e-4)  # 8.4% of the mean norm (1.0)
    sweep = _sweep()
    del sweep.log_odds["correct"][("random0", -8.4)], sweep.log_odds["correct"][("random1", -8.4)]
    lo, hi = sweep.random_band("correct")
    assert np.isnan(lo[0]) and np.isnan(sweep.distance_from_band("correct")[0])
    assert sweep.distance_from_band("correct")[2] == pytest.approx(0.9)
