"""Notebook 04's statistics on planted data: each null rejects a planted effect on the paper's side, accepts a
planted null at about its nominal rate, and the pairings and sides that a small slip would break are pinned."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vaxis.experiments import confidence as conf
from vaxis.experiments import confidence_answers as answers
from vaxis.experiments import confidence_report as report
from vaxis.experiments import confidence_stats as stats

N_DATASETS = 300


def _verbalized(yes_c, no_c, yes_i, no_i, auroc=None):
    """A fake :class:`Verbalized` at one layer from ``(n, K)`` response projections per framing and answer."""
    t = lambda a: torch.tensor(np.asarray(a, dtype=np.float32)[:, None, :])  # noqa: E731
    readouts = {f: SimpleNamespace(response={"yes": t(y), "no": t(n)}) for f, y, n in
                (("correct", yes_c, no_c), ("incorrect", yes_i, no_i))}  # fmt: skip
    return SimpleNamespace(readouts=readouts, auroc=auroc, random=None, layers=[0])


def _gen(conv, sample, text, scores=None):
    return SimpleNamespace(conversation=conv, sample=sample, text=text, scores=scores)


# ------------------------------------------------------------------------------------------ the flip (item 6)


def test_flip_keeps_a_problems_yes_and_no_together_and_reads_the_paper_side():
    rng = np.random.default_rng(0)
    n, K = 30, 21
    base = rng.normal(0, 10, (n, K))  # problems differ a lot; within a problem Yes - No is exactly planted
    ver = _verbalized(base + 1.0, base, base, base + 1.0)  # gap +1 under "correct?", -1 under "incorrect?"
    ver.readouts["correct"].response["yes"][:, 0, 1:] -= 1.0  # random directions: no gap at all
    ver.readouts["incorrect"].response["no"][:, 0, 1:] -= 1.0
    out = stats.framing_flip(ver, 0, n_boot=200, seed=0)
    assert out["value"] == pytest.approx(2.0, abs=1e-4)
    assert out["ci"] == pytest.approx((2.0, 2.0), abs=1e-4)  # paired per problem: no between-problem noise
    assert out["gap"] == pytest.approx({"correct": 1.0, "incorrect": -1.0}, abs=1e-4)
    assert out["p"] == pytest.approx(1 / K) and out["n_null"] == K - 1
    flipped = _verbalized(base, base.copy(), base, base.copy())  # the opposite of the paper's claim, on the axis
    flipped.readouts["correct"].response["no"][:, 0, 0] += 1.0
    flipped.readouts["incorrect"].response["yes"][:, 0, 0] += 1.0
    assert stats.framing_flip(flipped, 0, 50, 0)["value"] == pytest.approx(-2.0, abs=1e-4)
    assert stats.framing_flip(flipped, 0, 50, 0)["p"] == pytest.approx(1.0)


def test_the_flips_null_holds_its_nominal_rate_and_rejects_a_planted_flip():
    rng = np.random.default_rng(1)
    n, K = 12, 40
    ps, hits = [], []
    for _ in range(N_DATASETS):
        g = rng.normal(0, 1, (4, n, K))  # the axis (column 0) is one more random direction
        ps.append(stats.framing_flip(_verbalized(*g), 0, 0)["p"])
        g[0, :, 0] += 2.5  # a real flip: the axis's "correct?" Yes projects higher
        hits.append(stats.framing_flip(_verbalized(*g), 0, 0)["p"])
    assert 0.02 <= np.mean(np.array(ps) <= 0.05) <= 0.09
    assert np.mean(np.array(hits) <= 0.05) > 0.9


def test_pairs_auroc_resamples_a_problems_yes_and_no_together():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (25, 1))
    point, low, high = conf.pairs_auroc(x, x.copy(), n_boot=200, seed=0)
    assert point[0] == pytest.approx(0.5) and low[0] == pytest.approx(0.5) and high[0] == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------ answers


def test_an_unparseable_answer_is_never_a_no(monkeypatch):
    texts = ["Yes", "Not sure", "", "No", "Nope!", "I think yes"]
    monkeypatch.setattr(conf, "generate", lambda *a, **k: [_gen(0, j, t) for j, t in enumerate(texts)])
    p = SimpleNamespace(question="q")
    out = conf.sampled_confidence(None, None, [p], ["r"], n_samples=len(texts))
    assert (out["yes"][0], out["no"][0], out["invalid"][0]) == (2, 1, 3)
    assert out["confidence"][0] == pytest.approx(2 / 3)
    strict = out["strict"]  # the strict parser: "I think yes" does not start with yes
    assert (strict["yes"][0], strict["no"][0], strict["invalid"][0]) == (1, 1, 4)
    assert np.isnan(answers.count_answers([_gen(0, 0, "maybe")], 1)["rate"][0])  # nothing parses: NaN, not 0


def test_yes_rates_are_averaged_per_chat_and_log_odds_read_from_each_chats_first_sample(monkeypatch):
    # chat 0: 4 of 4 yes; chat 1: 1 yes of 2 parseable (two unparseable): per chat 1.0 and 0.5 -> 0.75 (pooled: 5/6)
    texts = {0: ["Yes", "yes", "Yes.", "YES"], 1: ["No", "Yes", "hmm", "??"]}
    gens = [_gen(c, j, t, {"yes": -float(c) - 10 * j, "no": 0.0}) for c in (0, 1) for j, t in enumerate(texts[c])]
    monkeypatch.setattr(conf, "generate", lambda *a, **k: list(gens))
    monkeypatch.setattr(conf, "yes_no_ids", lambda tok: {"yes": [1], "no": [2]})
    rates, log_odds = conf.yes_rates(None, None, [[], []], {("axis", 8.4): None}, n_samples=4)
    r = rates[("axis", 8.4)]
    assert r["yes_rate"] == pytest.approx(0.75) and r["valid"] == pytest.approx(6 / 8)
    np.testing.assert_allclose(r["per_chat"], [1.0, 0.5])
    np.testing.assert_allclose(log_odds[("axis", 8.4)], [0.0, -1.0])  # sample 0 of chat 0, then of chat 1
    monkeypatch.setattr(conf, "generate", lambda *a, **k: list(reversed(gens)))  # any order: still sample 0
    np.testing.assert_allclose(conf.yes_rates(None, None, [[], []], {("axis", 8.4): None}, 4)[1][("axis", 8.4)],
                               [0.0, -1.0])  # fmt: skip


def test_logit_confidence_is_p_yes():
    r = SimpleNamespace(logprobs={"yes": torch.tensor([np.log(0.9), np.log(0.1)]),
                                  "no": torch.tensor([np.log(0.1), np.log(0.9)])})  # fmt: skip
    np.testing.assert_allclose(answers.logit_confidence(r), [0.9, 0.1], rtol=1e-5)


def test_steer_inputs_cut_each_rollout_at_each_fraction():
    probs = ["p0", "p1"]
    got, partials, groups = conf.steer_inputs(probs, ["a b c d e f g h", "one two three four"], [0.25, 0.75])
    assert got == ["p0", "p0", "p1", "p1"] and groups.tolist() == [0, 0, 1, 1]
    assert partials[0] == "a" and partials[1].startswith("a b c d e") and partials[2] == "one"


# ------------------------------------------------------------------------------------------ steering


def _sweep(rng, n=10, n_random=10, axis_odd=0.0, axis_even=0.0, yes_effect=0.0, s=16.8):
    """A planted sweep: each direction d moves log-odds by ``+-a_d + b_d`` at +-s (an odd and an even part, both
    random per direction; the axis is one more draw plus ``axis_odd`` / ``axis_even``), plus per-chat noise."""
    base = rng.normal(0, 1, n)
    log_odds = {("none", 0.0): base}
    for name in ["axis"] + [f"random{j}" for j in range(n_random)]:
        a, b = rng.normal(0, 1), rng.normal(0, 2)
        if name == "axis":
            a, b = a + axis_odd, b + axis_even
        for sign in (1, -1):
            log_odds[(name, sign * s)] = base + sign * a + b + rng.normal(0, 0.3, n)
    yes = {}
    for st in (-s, 0.0, s):
        p = np.clip(0.5 + np.sign(st) * yes_effect + rng.normal(0, 0.15, n), 0, 1)
        entry = {"yes_rate": p.mean(), "valid": 1.0, "n": n, "per_chat": p}
        yes[st] = {**entry, "strict": dict(entry)}
    return conf.Sweep(20, [-s, 0.0, s], {"correct": log_odds, "incorrect": log_odds},
                      {"correct": yes, "incorrect": yes}, {})  # fmt: skip


def test_the_log_odds_contrast_holds_its_nominal_rate_under_even_effects_and_rejects_a_planted_one():
    rng = np.random.default_rng(3)
    null_p = [stats.log_odds_effects(_sweep(rng, axis_even=3.0), "correct")["contrast"]["p"] for _ in range(N_DATASETS)]
    assert 0.02 <= np.mean(np.array(null_p) <= 0.05) <= 0.09  # the even part (any steering moves log-odds) cancels
    hit = [stats.log_odds_effects(_sweep(rng, axis_odd=4.0), "correct")["contrast"] for _ in range(50)]
    assert np.mean([h["p"] <= 0.05 for h in hit]) > 0.9 and len(hit[0]["null"]) == 20
    np.testing.assert_allclose(np.sort(hit[0]["null"]), -np.sort(hit[0]["null"])[::-1])  # each draw and its negation
    # the side is the paper's: under "incorrect?" a rise is the wrong direction
    assert np.mean([stats.log_odds_effects(_sweep(rng, axis_odd=4.0), "incorrect")["contrast"]["p"] > 0.5
                    for _ in range(20)]) > 0.9  # fmt: skip


def test_per_strength_log_odds_p_reads_the_side_of_the_strength():
    rng = np.random.default_rng(4)
    sw = _sweep(rng, axis_odd=20.0)
    rows = {r["strength"]: r for r in stats.log_odds_effects(sw, "correct")["per_strength"]}
    assert rows[16.8]["p"] == pytest.approx(1 / 11) and rows[-16.8]["p"] == pytest.approx(1 / 11)
    rows = {r["strength"]: r for r in stats.log_odds_effects(sw, "incorrect")["per_strength"]}
    assert rows[16.8]["p"] == pytest.approx(1.0) and rows[-16.8]["p"] == pytest.approx(1.0)


def test_the_yes_rate_sign_flip_holds_its_nominal_rate_and_rejects_a_planted_effect():
    rng = np.random.default_rng(5)
    null_p = [stats.yes_rate_effects(_sweep(rng, n=12), "correct")["contrast"]["p"] for _ in range(N_DATASETS)]
    assert 0.02 <= np.mean(np.array(null_p) <= 0.05) <= 0.09
    hit = [stats.yes_rate_effects(_sweep(rng, n=12, yes_effect=0.15), "correct")["contrast"] for _ in range(50)]
    assert np.mean([h["p"] <= 0.05 for h in hit]) > 0.9 and hit[0]["effect"] > 0
    rows = {
        r["strength"]: r for r in stats.yes_rate_effects(_sweep(rng, n=12, yes_effect=0.2), "correct")["per_strength"]
    }
    assert rows[-16.8]["effect"] < 0 and rows[-16.8]["p"] <= 0.05 and rows[16.8]["p"] <= 0.05  # each on its side
    wrong = stats.yes_rate_effects(_sweep(rng, n=12, yes_effect=0.15), "incorrect")["contrast"]
    assert wrong["p"] > 0.5  # "incorrect?" yes should fall with positive steering


def test_yes_rate_effects_average_a_problems_partials_and_skip_dropped_strengths():
    rng = np.random.default_rng(6)
    sw = _sweep(rng, n=4, yes_effect=0.2)
    sw.groups = np.array([0, 0, 1, 1])  # two partial responses per problem: two units, not four
    assert stats.yes_rate_effects(sw, "correct")["contrast"]["n"] == 2
    sw.yes["correct"][16.8] = {**sw.yes["correct"][16.8], "valid": 0.4}
    assert np.isnan(stats.yes_rate_effects(sw, "correct")["contrast"]["p"])


def test_the_confident_auroc_null_holds_its_nominal_rate():
    rng = np.random.default_rng(7)
    ps = []
    for _ in range(N_DATASETS):
        conf_ = rng.uniform(0, 1, 30)
        ps.append(report._confident(rng.normal(0, 1, (30, 40)), conf_, 0, 0)["p"])
    assert 0.02 <= np.mean(np.array(ps) <= 0.05) <= 0.09
    conf_ = rng.uniform(0, 1, 30)
    pre = rng.normal(0, 1, (30, 40))
    pre[:, 0] += 3 * (conf_ > 0.5)
    assert report._confident(pre, conf_, 0, 0)["p"] <= 0.05


def test_report_rows_carry_p_values_and_flag_too_few_draws():
    assert "not a 5% test" in report._null_text(np.zeros(10), 0.09)
    assert "not a 5% test" not in report._null_text(np.zeros(20), 0.05)
    assert report._null_text([], np.nan).startswith("no ")
    assert "a strength dropped" in report._contrast({"strength": 16.8, "effect": np.nan, "p": np.nan})
    assert report._contrast({"strength": 16.8, "effect": 0.1, "p": 0.04}).endswith(
        "= +0.100, per-problem sign-flip p = 0.040"
    )


def test_per_strength_log_odds_effect_is_taken_against_unsteered():
    rng = np.random.default_rng(6)
    sw = _sweep(rng)
    base = sw.log_odds_at("correct", "none", 0.0)
    rows = {r["strength"]: r for r in stats.log_odds_effects(sw, "correct")["per_strength"]}
    for s in (-16.8, 16.8):
        assert rows[s]["effect"] == pytest.approx(float(np.mean(sw.log_odds_at("correct", "axis", s) - base)))


def test_pairs_auroc_labels_yes_as_the_positive_class():
    yes, no = np.full((6, 1), 1.0), np.full((6, 1), -1.0)
    point, low, high = conf.pairs_auroc(yes, no, n_boot=20, seed=0)
    assert point[0] == pytest.approx(1.0) and low[0] == pytest.approx(1.0)


def test_the_prefilled_auroc_p_reads_each_framings_side():
    """ "correct?": a high AUROC is the paper's; "incorrect?": a low one. The same AUROC of 0.0 passes one framing
    and fails the other."""
    random = np.linspace(0.2, 0.8, 19)[:, None]
    ver = SimpleNamespace(auroc={"correct": np.array([0.0]), "incorrect": np.array([0.0])},
                          random={"correct": random, "incorrect": random})  # fmt: skip
    p = stats.auroc_p(ver, 0)
    assert p["incorrect"] == pytest.approx(1 / 20) and p["correct"] == pytest.approx(1.0)
