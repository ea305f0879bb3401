"""Notebook 10's side-by-side readouts (vaxis.experiments.confound) and its verdict (confound_report)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vaxis.experiments import confound as cf
from vaxis.experiments import confound_report as report
from vaxis.experiments.axis_tokens import TokenTable


def _axis(d=32, seed=0, model="m", layers=(1, 2)):
    from vaxis.core.axis import Axis

    g = torch.Generator().manual_seed(seed)
    return Axis(vectors=torch.randn(len(layers), d, generator=g), layers=list(layers), mean_norms=torch.ones(len(layers)),
                main_layer=layers[0], model=model, hidden_size=d, n_blocks=3)  # fmt: skip


def test_axes_directions_put_named_axes_first_then_random_units():
    a, b = _axis(seed=1), _axis(seed=2)
    dirs = cf.axes_directions({"a": a, "b": b}, [1, 2], n_random=5, seed=0)
    assert set(dirs) == {1, 2} and dirs[1].shape == (7, 32)
    torch.testing.assert_close(dirs[2][1], b.unit(2))
    torch.testing.assert_close(dirs[1].norm(dim=-1), torch.ones(7))
    with pytest.raises(ValueError, match="not of m"):
        cf.axes_directions({"a": a, "c": _axis(model="other")}, [1], 2)


def test_as_axis_moves_one_named_column_first_and_keeps_the_random_ones():
    x = np.arange(2 * 6).reshape(2, 6)  # 3 named axes, 3 random
    np.testing.assert_array_equal(cf.as_axis(x, 1, 3)[0], [1, 3, 4, 5])
    np.testing.assert_array_equal(cf.as_axis(x, 0, 3)[1], [6, 9, 10, 11])
    out = cf.per_axis(lambda v: v[0, 0], [x], ["a", "b", "c"])
    assert out == {"a": 0, "b": 1, "c": 2}


def _table(n_games=30, per=40, seed=0):
    """Planted tokens: column 0 steps up at the reward (a value signal), column 1 ramps with position (an
    end-of-turn signal), columns 2.. are noise (the random directions)."""
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("scores", "labels", "item", "position", "from_start", "to_rewrite_end", "to_turn_end")}
    for g in range(n_games):
        cut = rng.integers(per // 4, 3 * per // 4)
        pos = np.arange(per) / (per - 1)
        lab = (np.arange(per) >= cut).astype(int)
        step = lab + rng.normal(0, 0.3, per)
        ramp = pos + rng.normal(0, 0.05, per)
        noise = rng.normal(0, 1, (per, 6))
        rows["scores"].append(np.column_stack([step, ramp, noise])[:, None, :])
        rows["labels"].append(lab)
        rows["item"].append(np.full(per, g))
        rows["position"].append(pos)
        rows["from_start"].append(np.arange(per))
        rows["to_rewrite_end"].append(per - 1 - np.arange(per))
        rows["to_turn_end"].append(per - 1 - np.arange(per) + 5)
    return TokenTable(**{k: np.concatenate(v) for k, v in rows.items()})


def test_auroc_rows_and_the_random_range():
    t = _table()
    out = cf.auroc_rows(t, ["step", "ramp"], n_boot=50)
    assert out["step"][0] > 0.9 and out["step"][1] <= out["step"][0] <= out["step"][2]
    assert out["ramp"][2] - out["ramp"][1] > 0.005  # games are resampled: the CI has a width
    assert out["ramp"][0] > 0.8  # position alone separates before from after: the critique's point
    assert 0.35 < out["random"][1] < out["random"][0] < out["random"][2] < 0.65


def test_matched_rows_remove_what_position_explains():
    t = _table()
    out = cf.matched_rows(t, ["step", "ramp"], rule="end of the turn")
    assert out["step"] > 0.85  # the planted value signal survives matching on distance to the end
    assert abs(out["ramp"] - 0.5) < 0.1  # the ramp is position: nothing left at equal distance
    assert out["position"] == pytest.approx(0.5, abs=0.05)


def test_cut_contrasts_tell_a_step_from_a_ramp():
    t = _table()
    cuts = cf.cut_contrasts(t, ["step", "ramp"], [0.25, 0.5, 0.75], n_boot=50).set_index(["cut", "axis"])
    step = [cuts.loc[(c, "step"), "contrast"] for c in (0.25, 0.5, 0.75)]
    ramp = [cuts.loc[(c, "ramp"), "contrast"] for c in (0.25, 0.5, 0.75)]
    assert cuts.loc[("reward", "step"), "contrast"] == pytest.approx(1.0, abs=0.1)
    assert max(step) < cuts.loc[("reward", "step"), "contrast"] - 0.2  # a step is largest at its own cut
    assert np.ptp(ramp) < 0.1 and min(ramp) > 0.4  # a ramp gives the same contrast wherever the cut is
    lo, hi = cuts.loc[("reward", "step"), ["low", "high"]]
    assert lo <= cuts.loc[("reward", "step"), "contrast"] <= hi


def test_math_triples_pair_wrong_rollouts_with_an_early_cut_of_the_reference():
    from vaxis.data.mathdata import Problem
    from vaxis.experiments.confidence import Rollouts

    probs = [Problem(str(i), f"What is {i} + {i}?", str(2 * i), "gsm8k",
                     solution=f"We add {i} and {i}. That gives <<{i}+{i}={2 * i}>>{2 * i} in all.\n#### {2 * i}")
             for i in range(4)]  # fmt: skip
    ro = Rollouts(["wrong 1", "right", "wrong 3", "   "], np.zeros(4), ["stop"] * 4, [False, True, None, False])
    triples = cf.math_triples(probs, ro, high_cut=0.25)
    assert [t[1] for t in triples] == ["wrong 1", "wrong 3"]  # the correct and the empty rollouts are skipped
    chat, low, high = triples[0]
    assert chat[-1]["role"] == "user" and "What is 0 + 0?" in chat[-1]["content"]
    assert high == "We add 0" and "<<" not in high  # a quarter of the 13 words of the cleaned reference


def _row(claim, sign, section="paper", null=None, **cells):
    null = np.linspace(-1.0, 1.0, 20) if null is None else null  # 20 draws: the smallest p is 1/21
    return {"claim": claim, "n": "10", "section": section, "sign": sign, "null": null, **cells}


def test_verdict_sides_are_fixed_by_the_claim_not_by_the_value_axis():
    up, down = _row("up", 1, value=(2.0, 1.5, 2.5), other=-2.0), _row("down", -1, value=-2.0, other=2.0)
    names = ["value", "other"]
    assert report.survives(up, "value") and report.cell_p(up, "value") == pytest.approx(1 / 21)
    # beyond the null, but on the side opposite to the claim: a large p, no survival (the old rule took the
    # side of the value axis's own number and counted it)
    assert not report.survives(up, "other") and report.cell_p(up, "other") == 1.0
    assert report.survives(down, "value") and not report.survives(down, "other")
    flipped = _row("flipped", 1, value=-2.0)  # the value axis itself lands opposite to the claim
    assert not report.survives(flipped, "value")
    assert report.survives(_row("inside", 1, value=0.99), "value") is False  # inside the null: p = 2/21
    assert report.survives(_row("no null", 1, null=[], value=0.9), "value") is None
    table = report.verdict_table([up, down], names)
    assert table.loc[("claims of the paper", "up"), "value"].endswith("p=0.048*")
    assert table.loc[("claims of the paper", "up"), "side"] == "high"
    assert not table.loc[("claims of the paper", "down"), "other"].endswith("*")


def test_critique_tests_and_pure_nulls_are_not_counted_among_the_paper_claims():
    rows = [_row("claim a", 1, value=2.0), _row("claim b", -1, value=0.0),
            _row("prefill conflict", 1, "critique", value=2.0), _row("harmless edit", 1, "null", value=2.0)]  # fmt: skip
    text = report.reading(rows, ["value"], "m", "demo", 5)
    assert "value: 1 of 2 paper claims survive (claim a)" in text
    assert "critique's tests holding beyond random: 1 of 1" in text
    assert "pure nulls beyond random (should be none): 1 of 1 (harmless edit)" in text
    table = report.verdict_table(rows, ["value"])
    assert [s for s, _ in table.index] == ["claims of the paper"] * 2 + ["the critique's tests", "pure nulls"]


def test_the_equal_position_bar_is_the_larger_of_position_and_the_random_975th_percentile():
    null = np.linspace(0.40, 0.60, 41)  # 97.5th percentile 0.595
    assert report.equal_position_bar(0.70, null) == pytest.approx(0.70)  # position's own AUROC is higher
    assert report.equal_position_bar(0.45, null) == pytest.approx(np.quantile(null, 0.975))
    assert report.equal_position_bar(np.nan, null) == pytest.approx(np.quantile(null, 0.975))
    # 0.65 beats every random direction (p = 1/42) but not what position alone knows in the same bins
    row = _row("equal position", 1, null=null, value=0.65, other=0.75, bar=report.equal_position_bar(0.70, null))
    assert report.cell_p(row, "value") == pytest.approx(1 / 42)
    assert not report.survives(row, "value") and report.survives(row, "other")
    out = cf.matched_rows(_table(), ["step", "ramp"])
    assert out["bar"] == pytest.approx(max(out["position"], np.quantile(out["null"], 0.975)))
    assert len(out["null"]) == 6  # the random directions' own AUROCs, not only their range


def test_verdict_p_values_reject_a_planted_effect_and_hold_their_nominal_rate_under_a_planted_null():
    rng = np.random.default_rng(0)
    n_sets = 600
    nulls = rng.normal(size=(n_sets, 20))
    for sign in (1, -1):
        planted_null = [_row("x", sign, null=nulls[i], value=float(rng.normal())) for i in range(n_sets)]
        p = np.array([report.cell_p(r, "value") for r in planted_null])
        rate = np.mean([report.survives(r, "value") for r in planted_null])
        assert 0.025 < rate < 0.08 and rate == pytest.approx(np.mean(p <= 0.05))  # nominal: 1/21 = 0.048
        assert np.mean(p <= 0.5) == pytest.approx(0.5, abs=0.06)  # uniform over the attainable values
        effect = [_row("x", sign, null=nulls[i], value=sign * 4.0 + float(rng.normal(0, 0.3))) for i in range(200)]
        assert np.mean([report.survives(r, "value") for r in effect]) > 0.9
        wrong_side = [_row("x", sign, null=nulls[i], value=-sign * 4.0) for i in range(200)]
        assert not any(report.survives(r, "value") for r in wrong_side)


def test_scorecard_rows_give_each_cell_its_side_p_ci_n_and_null():
    rows = [_row("c1", 1, value=(2.0, 1.5, 2.5), other=0.0), _row("c2", -1, "critique", value=-2.0),
            _row("few draws", 1, null=[0.0, 0.1], value=0.9)]  # fmt: skip
    card = report.scorecard_rows(rows, ["value", "other"], "m", "demo", 5)
    assert [r["key"] for r in card] == ["sec7.verdict.c1_value", "sec7.verdict.c1_other", "sec7.verdict.c2_value",
                                        "sec7.verdict.few_draws_value"]  # fmt: skip
    first = card[0]
    assert first["ci"] == (1.5, 2.5) and first["n"] == "10" and first["value"] == 2.0
    assert "side: high" in first["metric"] and "claims of the paper" in first["metric"]
    assert "p = 0.048: survives" in first["null"] and "20 draws" in first["null"]
    assert "p = 0.524: does not survive" in card[1]["null"]
    assert "side: low" in card[2]["metric"] and "the critique's tests" in card[2]["metric"]
    assert "not a 5% test" in card[3]["null"]
    assert all(r["section"] and "m, profile demo" in r["context"] for r in card)


def test_auroc_rows_resample_whole_games():
    """Games whose tokens all go one way (after above before in half the games, below in the other half): the
    pooled AUROC is near 0.5 and only the number of games limits its precision; a bootstrap that split games
    into independent tokens would give a CI a few hundredths wide."""
    t = _table(n_games=20, per=100, seed=3)
    flip = np.where(t.item % 2 == 0, 1.0, -1.0)
    scores = t.scores.copy()
    scores[:, 0, 0] = flip * (t.labels - 0.5) * 2 + np.random.default_rng(0).normal(0, 0.5, len(flip))
    heavy = cf.auroc_rows(dataclasses.replace(t, scores=scores), ["games", "ramp"], n_boot=200)
    assert abs(heavy["games"][0] - 0.5) < 0.1
    assert heavy["games"][2] - heavy["games"][1] > 0.3
    assert len(heavy["null"]) == 6 and heavy["random"][1] <= np.median(heavy["null"]) <= heavy["random"][2]


def test_matched_rows_default_rule_bins_relative_position():
    t = _table()
    out = cf.matched_rows(t, ["step", "ramp"])
    assert out["step"] > 0.85 and abs(out["ramp"] - 0.5) < 0.15


def test_random_range_and_backtracking_change_on_planted_rollouts():
    assert cf.random_range([]) is None
    med, lo, hi = cf.random_range(np.arange(101.0))
    assert (med, round(lo, 1), round(hi, 1)) == (50.0, 2.5, 97.5)
    # two rollouts of 40 one-character "tokens": one backtracks at token 30 ("Wait"), one does not
    texts = ["x" * 29 + " Wait " + "y" * 5, "z" * 40]  # the event starts at character (= token) 30
    starts = [np.arange(40), np.arange(40)]
    ramp = np.linspace(0, 1, 40)
    col_dip = np.where(np.arange(40) >= 30, ramp - 1.0, ramp)  # drops at the event
    proj = [np.stack([np.stack([col_dip, ramp], -1)], 1), np.stack([np.stack([ramp, ramp], -1)], 1)]  # (40, 1, 2)
    change_dip, n = cf.backtracking_change(proj, starts, texts, 0, 5, column=0)
    change_ramp, _ = cf.backtracking_change(proj, starts, texts, 0, 5, column=1)
    assert n == 1 and change_dip == pytest.approx(-1.0, abs=1e-9)
    assert change_ramp == pytest.approx(0.0, abs=1e-9)  # a ramp at matched indices cancels
