"""Backtracking detection (METHOD.md section 4) and the notebook's band / event-locked helpers."""

from __future__ import annotations

import numpy as np
import pytest

from vaxis.experiments.backtracking import (
    AUTHORS_BROAD,
    Event,
    bands,
    event_locked,
    event_token_indices,
    find_backtracking,
    first_event,
    full_windows,
    has_backtracking,
    matched_controls,
)

# (text, [(start, end, phrase), ...]) with offsets checked exactly.
CASES = [
    ("Wait, that is wrong.", [(0, 4, "wait")]),
    ("x = 3. Wait", [(7, 11, "wait")]),
    ("WAIT!", [(0, 4, "wait")]),
    ("we wait for the bus", [(3, 7, "wait")]),  # case-insensitive, as the paper: a known false positive
    ("The waiter came.", []),
    ("I'm waiting for it.", []),
    ("awaited result", []),
    ("wait_time = 3", []),
    ("Actually, it is 4.", [(0, 8, "actually")]),
    ("It is factually correct.", []),
    ('He said "actually" twice.', [(9, 17, "actually")]),  # inside a quotation: counts
    ("Hmm, let me see.", [(0, 3, "hmm")]),
    ("Hmmm.", [(0, 4, "hmm")]),
    ("HMMMMM", [(0, 6, "hmm")]),
    ("Hm, ok.", []),
    ("Hmmph.", []),
    ("Hold on, the sign.", [(0, 7, "hold on")]),
    ("hold\non", [(0, 7, "hold on")]),
    ("Household items", []),
    ("But wait, 3 is odd.", [(0, 8, "but wait")]),
    ("but  wait", [(0, 9, "but wait")]),
    ("Let me reconsider.", [(0, 17, "let me reconsider")]),
    ("Let me recheck: 2+2=4.", [(0, 14, "let me recheck")]),
    ("let me re-check", [(0, 15, "let me recheck")]),
    ("Let me rethink this.", [(0, 14, "let me rethink")]),
    ("Let me try again.", [(0, 16, "let me try again")]),
    ("Let me try another way.", []),
    ("Oops, I made a mistake.", [(6, 22, "i made a mistake")]),
    ("I think I was wrong.", [(0, 19, "i think i was wrong")]),
    ("I think I was right.", []),
    ("On second thought, no.", [(0, 17, "on second thought")]),
    ("No, that is not it.", [(0, 3, "no,")]),
    ("No.", []),
    ("No,3", []),
    ("answer: no,", [(8, 11, "no,")]),
    ("nowhere, really", []),
    ("Nobody, ok", []),
    ("there is no, um, way", [(9, 12, "no,")]),  # default: the paper's rule, anywhere
    ("No, wait. Actually", [(0, 3, "no,"), (4, 8, "wait"), (10, 18, "actually")]),
    ("Hmm, actually", [(0, 3, "hmm"), (5, 13, "actually")]),
    ("So 12. But wait, hmm... hold on", [(7, 15, "but wait"), (17, 20, "hmm"), (24, 31, "hold on")]),
    ("", []),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_find_backtracking_table(text, expected):
    events = find_backtracking(text)
    assert [(e.start, e.end, e.phrase) for e in events] == expected
    assert has_backtracking(text) is bool(expected)
    assert first_event(text) == (Event(*expected[0]) if expected else None)


def test_matched_text_is_the_span():
    text = "Hmmm... BUT WAIT. Let me\nRecheck."
    assert [text[e.start : e.end] for e in find_backtracking(text)] == ["Hmmm", "BUT WAIT", "Let me\nRecheck"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No, it is 4.", [(0, 3)]),
        ("x = 3.\nNo, 4.", [(7, 10)]),
        ("x = 3. No, 4.", [(7, 10)]),
        ('He said: "No, never".', [(10, 13)]),
        ("* No, it is 4", [(2, 5)]),  # a markdown list item
        ("**No,** it is 4", []),  # "no," must be followed by whitespace, as the paper's "No, "
        ("there is no, um, way", []),
        ("so 3, no, 4", []),
    ],
)
def test_sentence_initial_no(text, expected):
    got = [(e.start, e.end) for e in find_backtracking(text, sentence_initial_no=True) if e.phrase == "no,"]
    assert got == expected


def test_event_token_indices():
    # tokens: "So"(0) " x"(2) "."(4) " Wait"(5) ","(10)
    starts = np.array([0, 2, 4, 5, 10])
    events = find_backtracking("So x. Wait, no")
    assert events == [Event(6, 10, "wait")]
    assert event_token_indices(events, starts) == [3]


def test_bands_dense_means_and_counts():
    values = np.array([1.0, 3.0, np.nan, 5.0, 7.0])
    tokens = np.array([0, 1, 2, 9, 11])
    starts, means, counts = bands(values, tokens, band=4)
    assert starts.tolist() == [0, 4, 8]
    assert means[0] == 2.0 and np.isnan(means[1]) and means[2] == 6.0
    assert counts.tolist() == [2, 0, 2]
    with pytest.raises(ValueError):
        bands(values, tokens, band=0)
    assert bands(np.zeros(0), np.zeros(0, dtype=int), 5)[1].size == 0


def test_event_locked_edges_and_nan():
    a = np.arange(10, dtype=float)  # value = position
    b = np.array([0.0, 0.0, np.nan, 0.0])
    offsets, mean, counts = event_locked([a, b, np.zeros(3)], [[1, 8], [2], []], window=2, full_window=False)
    assert offsets.tolist() == [-2, -1, 0, 1, 2]
    # event a@1: positions -1..3 -> [-, 0, 1, 2, 3]; a@8: [6, 7, 8, 9, -]; b@2: [0, 0, nan, 0, -]
    assert counts.tolist() == [2, 3, 2, 3, 1]
    np.testing.assert_allclose(mean, [(6 + 0) / 2, (0 + 7 + 0) / 3, (1 + 8) / 2, (2 + 9 + 0) / 3, 3.0])
    _, empty_mean, empty_counts = event_locked([a], [[]], window=1)
    assert empty_counts.tolist() == [0, 0, 0] and np.isnan(empty_mean).all()


def test_event_locked_full_window_only_by_default():
    a = np.arange(10, dtype=float)  # value = position: a partial window would bend the mean along this ramp
    # events at 1 (window -1..3: partial), 2 (0..4: full, the first), 7 (5..9: full, the last), 8 (partial)
    offsets, mean, counts = event_locked([a], [[1, 2, 7, 8]], window=2)
    assert counts.tolist() == [2] * 5
    np.testing.assert_allclose(mean, (np.array([0, 1, 2, 3, 4]) + np.array([5, 6, 7, 8, 9])) / 2)
    kept, dropped = full_windows([[1, 2, 7, 8], [0], []], [10, 1, 0], 2)
    assert kept == [[2, 7], [], []] and dropped == 3
    assert full_windows([[0]], [1], 0) == ([[0]], 0)  # a window of 0 needs only the token itself
    with pytest.raises(ValueError):
        full_windows([[1]], [3, 4], 1)


def test_matched_controls_same_index_and_seeded():
    events = [[5, 50], [], [200]]
    lengths = [10, 100, 60]
    pos, unmatched = matched_controls(events, lengths, seed=3)
    assert unmatched == 1  # token 200: no control rollout is that long
    assert sorted(p for ps in pos for p in ps) == [5, 50]
    for c, ps in enumerate(pos):
        assert all(p < lengths[c] for p in ps)
    assert matched_controls(events, lengths, seed=3) == (pos, unmatched)
    draws = {tuple(map(tuple, matched_controls([[5] * 20], lengths, seed=s)[0])) for s in range(5)}
    assert len(draws) > 1  # the seed matters


def test_matched_controls_hold_the_whole_window():
    # token 5 with window 5 needs a control of length > 10: only rollout 2 (length 11), never rollout 0 (10)
    for seed in range(20):
        pos, unmatched = matched_controls([[5, 5, 5]], [10, 3, 11], seed=seed, window=5)
        assert pos == [[], [], [5, 5, 5]] and unmatched == 0
    assert matched_controls([[5]], [10, 3], window=5) == ([[], []], 1)
    # both long-enough controls are drawn over many events (the draw is random among all candidates)
    pos, _ = matched_controls([[5] * 200], [11, 3, 12], seed=0, window=5)
    assert pos[1] == [] and 60 < len(pos[0]) < 140 and len(pos[0]) + len(pos[2]) == 200


# ---------------------------------------------------------------------------------- notebook 05 steps


def test_placebo_events_are_sentence_initial_and_avoid_backtracking():
    from vaxis.experiments.backtracking import find_backtracking, placebo_events

    text = "We add 3. So the total is 5.\nThen we check. Also so what. Next: done. So, wait."
    events = placebo_events(text, find_backtracking(text))
    assert [(e.phrase, text[e.start : e.end]) for e in events] == [
        ("so", "So"),
        ("then", "Then"),
        ("next", "Next"),
        ("so", "So"),
    ]
    assert not placebo_events("Sometimes Thenardier. Nextly.")


def test_band_curves_split_groups_and_bootstrap():
    from vaxis.experiments.backtracking_stats import band_curves

    proj = [np.full((8, 1, 1), -1.0), np.full((8, 1, 1), -1.0), np.full((4, 1, 1), 1.0), np.zeros((0, 1, 1))]
    curves = band_curves(proj, np.array([True, True, False, False]), [0, 1, 2, 3], 0, band=4, n_boot=20)
    starts, mean, low, high, n = curves[True]
    np.testing.assert_array_equal(starts, [0, 4])
    np.testing.assert_array_equal(mean, [-1.0, -1.0])
    np.testing.assert_array_equal(n, [2, 2])
    assert curves[False][1][0] == 1.0 and np.isnan(curves[False][1][1]) and curves[False][4][1] == 0


def _clustered(n_problems=4, per=20):
    """Rollouts whose projection is their problem's value (+-1): all spread lies between problems."""
    level = np.where(np.arange(n_problems) % 2, 1.0, -1.0)
    problems = np.repeat(np.arange(n_problems), per)
    proj = [np.full((6, 1, 1), level[p]) for p in problems]
    flags = np.tile(np.arange(per) % 2 == 0, n_problems)  # half of every problem's rollouts backtrack
    return proj, flags, problems


def test_band_bootstrap_resamples_whole_problems():
    from vaxis.experiments.backtracking_stats import band_curves, band_gap

    proj, flags, problems = _clustered()
    # within every problem, backtracking and other rollouts are identical: each problem resample keeps the
    # gap at exactly 0, a resample of single rollouts would not
    g = band_gap(proj, flags, problems, 0, band=3, n_boot=200)
    assert g["gap"] == 0 and g["low"] == 0 and g["high"] == 0 and g["n_problems"] == 4
    # the group means' CI spans the between-problem spread (4 problems at +-1), not the ~0 of 80 rollouts
    _, mean, low, high, _ = band_curves(proj, flags, problems, 0, band=3, n_boot=200)[True]
    assert mean[0] == 0 and low[0] <= -0.5 and high[0] >= 0.5
    # a rollout-level bootstrap (every rollout its own problem) is what the narrow CI would look like
    _, _, low1, high1, _ = band_curves(proj, flags, np.arange(len(proj)), 0, band=3, n_boot=200)[True]
    assert high1[0] - low1[0] < high[0] - low[0]


def test_band_gap_is_backtracking_minus_other_pooled():
    from vaxis.experiments.backtracking_stats import band_gap

    proj = [np.array([0.0, 0.0, 2.0])[:, None, None], np.full((2, 1, 1), 1.0), np.full((3, 1, 1), 5.0)]
    g = band_gap(proj, [True, True, False], [0, 1, 2], 0, band=2, n_boot=10)
    # band means: rollout 0 -> 0, 2; rollout 1 -> 1; pooled (0 + 2 + 1) / 3 = 1; other: 5
    assert g["backtracking"] == 1.0 and g["other"] == 5.0 and g["gap"] == -4.0


def _events_setup():
    """Rollout 0 backtracks at token 3 ("Wait"); rollouts 1 (short) and 2 (long) never do; rollout 3 backtracks
    and is long: it must never serve as a control. Tokens start every 5 characters."""
    texts = ["aaaa bbbb cccc Wait dddd eeee ffff ", "xxxx yyyy ", "xxxx yyyy zzzz uuuu vvvv wwww tttt ",
             "Hmm, aaaa bbbb cccc dddd eeee ffff gggg hhhh "]  # fmt: skip
    starts = [np.arange(0, len(t), 5) for t in texts]
    proj = [np.array([0, 0, 0, -1.0, 0, 0, 0]), np.array([7.0, 7.0]), np.arange(7.0), np.full(9, 9.0)]
    return texts, starts, [p[:, None, None] for p in proj]


def test_event_curves_lock_to_events_and_controls():
    from vaxis.experiments.backtracking import event_curves

    texts, starts, proj = _events_setup()
    for seed in range(10):
        out = event_curves(proj, starts, texts, 0, window=2, seed=seed)
        offsets, mean, counts = out["backtracking"]
        np.testing.assert_array_equal(offsets, [-2, -1, 0, 1, 2])
        np.testing.assert_array_equal(mean, [0.0, 0.0, -1.0, 0.0, 0.0])  # the "Hmm" at token 0 of rollout 3: dropped
        # the control: token 3 of rollout 2 (the only event-free rollout with the whole window), never rollout 3
        np.testing.assert_array_equal(out["matched index, no backtracking"][1], [1.0, 2.0, 3.0, 4.0, 5.0])
        assert out["n_events"] == 1 and out["dropped"] == {"events": 1, "placebo words": 0} and out["unmatched"] == 0
        assert out["windows"]["matched index, no backtracking"][1].tolist() == [2]
    partial = event_curves(proj, starts, texts, 0, window=2, full_window=False)
    assert partial["n_events"] == 2 and partial["backtracking"][2].tolist() == [1, 1, 2, 2, 2]


def test_event_curves_placebo_and_same_token_events():
    from vaxis.experiments.backtracking import event_curves

    # "Hmm,wait": two events inside one token (index 1) count once; "So" at token 2 of rollout 1 is a placebo word
    # (rollout 2's "So" at token 0 has no full window: dropped)
    texts = ["aa Hmm,wait bb cc dd ", "xx yy. So zz ww vv ", "So aa bb "]
    starts = [np.array([0, 3, 11, 14, 17]), np.array([0, 3, 7, 10, 13, 16]), np.array([0, 3, 6])]
    proj = [np.arange(5.0)[:, None, None], np.arange(6.0)[:, None, None] * 10, np.full((3, 1, 1), 99.0)]
    out = event_curves(proj, starts, texts, 0, window=1)
    assert out["n_events"] == 1 and out["backtracking"][1].tolist() == [0.0, 1.0, 2.0]
    assert out["n_placebo"] == 1 and out["placebo words"][1].tolist() == [10.0, 20.0, 30.0]
    assert out["dropped"] == {"events": 0, "placebo words": 1}


def test_event_gap_over_problems():
    from vaxis.experiments.backtracking import event_curves
    from vaxis.experiments.backtracking_stats import event_gap

    texts, starts, proj = _events_setup()
    ev = event_curves(proj, starts, texts, 0, window=2)
    g = event_gap(ev, [0, 1, 1, 2], 2, n_boot=50)
    assert g["event"] == -1.0 and g["gap"] == -1.0 - 3.0
    assert g["event_low"] == g["event_high"] == -1.0 and g["gap_low"] == g["gap_high"] == -4.0


def test_event_gap_resamples_whole_problems():
    from vaxis.experiments.backtracking_stats import event_gap

    # 40 events in 4 problems, each event at its problem's level (+-1); controls all 0 in a fifth problem
    level = np.repeat([-1.0, 1.0, -1.0, 1.0], 10)
    windows = np.repeat(level[:, None], 3, axis=1)
    ev = {"windows": {"backtracking": (windows, np.arange(40)),
                      "matched index, no backtracking": (np.zeros((40, 3)), np.full(40, 40))}}  # fmt: skip
    problems = np.append(np.repeat(np.arange(4), 10), 4)
    g = event_gap(ev, problems, 1, n_boot=300)
    assert g["event"] == 0 and g["event_low"] <= -0.5 and g["event_high"] >= 0.5
    narrow = event_gap(ev, np.arange(41), 1, n_boot=300)  # every rollout its own problem: a narrower CI
    assert narrow["event_high"] - narrow["event_low"] < g["event_high"] - g["event_low"]
    # controls in rollouts 79..40 (listed in reverse), each at its own problem's level: every problem resample
    # draws a problem's events and its controls together, so event minus control is 0 in every one
    owner = np.arange(79, 39, -1)
    problems = np.tile(np.repeat(np.arange(4), 10), 2)
    ev["windows"]["matched index, no backtracking"] = (windows[owner - 40], owner)
    g = event_gap(ev, problems, 1, n_boot=300)
    assert g["gap"] == 0 and g["gap_low"] == 0 and g["gap_high"] == 0


def test_rollout_projections_equal_extraction(tiny, tmp_cache):
    import torch

    from vaxis.core.generate_cache import Generation
    from vaxis.experiments.backtracking import rollout_projections

    model, tokenizer = tiny
    g = Generation(
        0, 0, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "", "Wait, two plus two is four.", [], 0, "eos"
    )
    empty = Generation(1, 0, "p", "", "", [], 0, "eos")
    d = {1: torch.randn(1, 64), 2: torch.randn(1, 64)}
    proj, starts = rollout_projections(model, tokenizer, [g, empty], d, progress=False)
    assert proj[0].shape[1:] == (2, 1) and len(proj[1]) == 0 and starts[0][0] == 0
    assert len(starts[0]) == len(proj[0]) and (np.diff(starts[0]) > 0).all()


def test_report_reads_the_event_against_both_controls():
    import pandas as pd

    from vaxis.experiments import backtracking_report as report

    w = 2
    curve = lambda v: (np.arange(-w, w + 1), np.full(2 * w + 1, v), np.ones(2 * w + 1))  # noqa: E731
    events = {"backtracking": curve(-0.5), "matched index, no backtracking": curve(-0.1), "placebo words": curve(-0.2),
              "n_events": 12, "dropped": {"events": 3, "placebo words": 1}, "unmatched": 0}  # fmt: skip
    rates = pd.DataFrame({"direction": ["none", "axis", "random0", "random1"], "strength_%": [0.0, 8.4, 8.4, 8.4],
                          "backtracking": [0.25, 0.5, 0.0, 0.2], "backtracking_answered": [0.3, 0.6, 0.0, 0.1],
                          "answer_rate": [0.5, 0.25, 1.0, 1.0], "n": [8, 8, 8, 8]})  # fmt: skip
    tests = [{"strength": 8.4, "effect": 0.25, "low": 0.0, "high": 0.5, "p": 0.9, "n_problems": 8},
             {"strength": None, "effect": 0.03, "low": 0.0, "high": 0.06, "p": 0.8, "n_problems": 8}]  # fmt: skip
    gap = {"gap": -0.1, "low": -0.2, "high": 0.0, "backtracking": -0.3, "other": -0.2, "n_problems": 8}
    stats = {"event": -0.5, "event_low": -0.6, "event_high": -0.4, "gap": -0.4, "gap_low": -0.5, "gap_high": -0.3}
    s = report.summarize(np.array([True, False]), gap, events, stats, rates, tests, w, 20)
    assert s["presence"] == [0.25, 0.5] and s["n"] == [8, 8] and s["at"]["backtracking"][0] == -0.5
    assert s["p"][1] == 0.9 and np.isnan(s["p"][0]) and s["random"] == {8.4: (0.0, 0.2, 2)} and s["dropped"] == 3
    assert "below the matched index beyond its CI" in report.verdict(s, "m", "demo")
    s["event"] = {**stats, "gap_high": 0.1}
    assert "CI against the matched index includes 0" in report.verdict(s, "m", "demo")
    s["event"] = stats
    events["placebo words"] = curve(-0.9)
    assert "no backtracking-specific drop" in report.verdict(
        report.summarize(np.array([True]), gap, events, stats, rates, tests, w, 20), "m", "demo"
    )
    events["n_events"] = 3
    assert "too small" in report.verdict(
        report.summarize(np.array([True]), gap, events, stats, rates, tests, w, 20), "m", "demo"
    )
    rows = report.scorecard_rows(s, "m", "demo", 32)
    assert rows[2]["value"] == "0.25 / 0.50" and rows[1]["n"].startswith("12 events") and "3 dropped" in rows[1]["n"]
    assert rows[1]["ci"] == (-0.6, -0.4) and "n/a / 0.9" in rows[2]["null"] and "p = 0.8" in rows[3]["null"]
    assert rows[3]["key"] == "fig4.backtracking_slope" and rows[3]["ci"] == (0.0, 0.06)


def test_authors_broad_patterns():
    assert len(AUTHORS_BROAD) == 61  # the authors' BT_PATTERNS_COUNT, verbatim
    text = "Wait, that is wrong. Let me try again: recheck. No, it is 4. no,3"
    got = [(text[e.start : e.end], e.phrase) for e in find_backtracking(text, patterns="authors_broad")]
    # "Wait," matches \bWait\b and \bwait, at one position: one event, the longest; "No, " is not in their
    # list (\bno,\b needs a word character after the comma), "no,3" is
    assert got == [("Wait,", "wait,"), ("wrong", "wrong"), ("Let me try", "let me try"), ("recheck", "recheck"),
                   ("no,", "no,")]  # fmt: skip
    assert not has_backtracking("That is an error.") and has_backtracking("That is an error.", patterns="authors_broad")
    assert has_backtracking("Hmm.") and not has_backtracking("Hmm.", patterns="authors_broad")
    with pytest.raises(ValueError):
        find_backtracking("wait", patterns="broad")


def test_steered_rates_count_all_rollouts(monkeypatch):
    import sys

    from vaxis.core.generate_cache import Generation
    from vaxis.data.mathdata import Problem
    from vaxis.experiments.backtracking_stats import rates_table, steered_rates

    problems = [Problem("a", "2+3?", "5", "gsm8k"), Problem("b", "1+2?", "3", "gsm8k")]
    outputs = [(0, "Wait, so \\boxed{5}", "eos"), (0, "Hmm, this goes on and on", "length"),
               (1, "It is \\boxed{3}", "eos"), (1, "Actually it is \\boxed{3} and", "length")]  # fmt: skip

    def fake(model, tokenizer, chats, *, steer=None, **kw):
        assert len(chats) == 2
        return [Generation(c, i % 2, "p", "", t, [], 10 * (i + 1), f) for i, (c, t, f) in enumerate(outputs)]

    monkeypatch.setattr(sys.modules["vaxis.core.generate"], "generate", fake)
    rates = steered_rates(None, None, problems, {("none", 0.0): None, ("axis", 8.4): {}})
    r = rates[("axis", 8.4)]
    assert r["backtracking"] == 0.75  # over all 4 rollouts, the 2 cut by the length cap included
    assert r["backtracking_answered"] == 0.5 and r["answer_rate"] == 0.5 and r["n"] == 4 and r["n_answered"] == 2
    assert r["accuracy"] == 0.75 and r["mean_tokens"] == 25.0  # an answer cut by the cap: correct, not "answered"
    np.testing.assert_array_equal(r["per_problem"], [1.0, 0.5])
    table = rates_table(rates)
    assert "per_problem" not in table and table.direction.tolist() == ["axis", "none"]


def _planted_rates(rng, effect=0.0, n=30, k=4, strengths=(-16.8, -8.4, 8.4, 16.8)):
    """Per-problem presence rates (k samples each) with problem-level base rates; ``effect`` > 0: positive
    steering lowers presence (the paper's side)."""
    base = rng.uniform(0.1, 0.6, n)
    return {("none" if s == 0 else "axis", s): {"per_problem": rng.binomial(k, np.clip(base - effect * s / 16.8, 0, 1)) / k}
            for s in (0.0, *strengths)}  # fmt: skip


def test_steering_tests_planted_null_and_effect():
    from vaxis.experiments.backtracking_stats import steering_tests

    rng = np.random.default_rng(0)
    null = np.array([[r["p"] for r in steering_tests(_planted_rates(rng), n_boot=1, n_perm=2000, seed=i)]
                     for i in range(300)])  # fmt: skip
    rate = (null <= 0.05).mean(0)
    assert (rate <= 0.08).all() and 0.01 <= rate[-1] <= 0.08  # nominal (the 0/1 data make it a bit conservative)
    rows = [steering_tests(_planted_rates(rng, 0.2), n_boot=50, n_perm=2000, seed=i) for i in range(20)]
    assert np.mean([r[-1]["p"] <= 0.05 for r in rows]) >= 0.9  # the slope finds a planted effect
    assert np.mean([r[0]["p"] <= 0.05 for r in rows]) >= 0.7  # and so does -16.8 % vs unsteered
    assert all(r[-1]["effect"] < 0 and r[-1]["high"] < 0 and r[0]["effect"] > 0 for r in rows)
    opposite = [steering_tests(_planted_rates(rng, -0.2), n_boot=1, n_perm=2000, seed=i) for i in range(20)]
    assert all(row["p"] > 0.5 for r in opposite for row in (r[0], r[-1]))  # the side is the paper's, not the data's
    assert [r["strength"] for r in rows[0]] == [-16.8, -8.4, 8.4, 16.8, None]


def test_per_problem_slopes():
    from vaxis.experiments.backtracking_stats import per_problem_slopes

    slopes = per_problem_slopes({-10.0: np.array([1.0, 0.5]), 0.0: np.array([0.5, 0.5]), 10.0: np.array([0.0, 0.5])})
    np.testing.assert_allclose(slopes, [-0.05, 0.0])
    slopes = per_problem_slopes({0.0: np.array([1.0, 0.2]), 8.0: np.array([0.6, 0.2]), 16.0: np.array([0.2, 0.2])})
    np.testing.assert_allclose(slopes, [-0.05, 0.0])  # strengths not centred on 0


def test_check_parameters_refuses_unknown_patterns():
    import vaxis
    from vaxis.experiments.backtracking import check_parameters
    from vaxis.run.checks import ParameterError

    with pytest.raises(ParameterError, match="patterns='broad' is not known"):
        check_parameters(vaxis.resolve_config("smoke"), patterns="broad")
