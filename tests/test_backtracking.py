"""Backtracking detection (METHOD.md section 4) and the notebook's band / event-locked helpers."""

from __future__ import annotations

import numpy as np
import pytest

from vaxis.experiments.backtracking import (
    Event,
    bands,
    event_locked,
    event_token_indices,
    find_backtracking,
    first_event,
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
    offsets, mean, counts = event_locked([a, b, np.zeros(3)], [[1, 8], [2], []], window=2)
    assert offsets.tolist() == [-2, -1, 0, 1, 2]
    # event a@1: positions -1..3 -> [-, 0, 1, 2, 3]; a@8: [6, 7, 8, 9, -]; b@2: [0, 0, nan, 0, -]
    assert counts.tolist() == [2, 3, 2, 3, 1]
    np.testing.assert_allclose(mean, [(6 + 0) / 2, (0 + 7 + 0) / 3, (1 + 8) / 2, (2 + 9 + 0) / 3, 3.0])
    _, empty_mean, empty_counts = event_locked([a], [[]], window=1)
    assert empty_counts.tolist() == [0, 0, 0] and np.isnan(empty_mean).all()


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
    from vaxis.experiments.backtracking import band_curves

    proj = [np.full((8, 1, 1), -1.0), np.full((8, 1, 1), -1.0), np.full((4, 1, 1), 1.0), np.zeros((0, 1, 1))]
    curves = band_curves(proj, np.array([True, True, False, False]), 0, band=4, n_boot=20)
    starts, mean, low, high, n = curves[True]
    np.testing.assert_array_equal(starts, [0, 4])
    np.testing.assert_array_equal(mean, [-1.0, -1.0])
    np.testing.assert_array_equal(n, [2, 2])
    assert curves[False][1][0] == 1.0 and np.isnan(curves[False][1][1]) and curves[False][4][1] == 0


def test_event_curves_lock_to_events_and_controls():
    from vaxis.experiments.backtracking import event_curves

    # rollout 0 backtracks at character 6 ("Wait"), token index 2 (tokens start every 3 characters)
    texts = ["a  b  Wait c  d  e  ", "So x  y  z  w  v  "]
    starts = [np.arange(0, 20, 3), np.arange(0, 18, 3)]
    proj = [np.array([0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0])[:, None, None], np.arange(6.0)[:, None, None]]
    out = event_curves(proj, starts, texts, 0, window=1, seed=0)
    offsets, mean, counts = out["backtracking"]
    np.testing.assert_array_equal(offsets, [-1, 0, 1])
    np.testing.assert_array_equal(mean, [0.0, -1.0, 0.0])
    np.testing.assert_array_equal(counts, [1, 1, 1])
    np.testing.assert_array_equal(out["matched index, no backtracking"][1], [1.0, 2.0, 3.0])  # token 2 of rollout 1
    np.testing.assert_array_equal(out["placebo words"][1][1:], [0.0, 1.0])  # "So" at token 0 of rollout 1
    assert out["n_events"] == 1 and out["n_placebo"] == 1 and out["unmatched"] == 0


def test_rollout_projections_equal_extraction(tiny, tmp_cache):
    import torch

    from vaxis.experiments.backtracking import rollout_projections
    from vaxis.generate import Generation

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
              "n_events": 12}  # fmt: skip
    rates = pd.DataFrame({"direction": ["none", "axis", "random0"], "strength_%": [0.0, 8.4, 8.4],
                          "backtracking": [0.25, 0.5, 0.0], "n_answered": [4, 2, 3]})  # fmt: skip
    curves = {True: (np.array([0]), np.array([-0.3]), None, None, None)}
    s = report.summarize(np.array([True, False]), curves, events, rates, w, 20)
    assert s["presence"] == [0.25, 0.5] and s["answered"] == [4, 2] and s["at"]["backtracking"][0] == -0.5
    assert "below both controls" in report.verdict(s, "m", "demo")
    events["placebo words"] = curve(-0.9)
    assert "no backtracking-specific drop" in report.verdict(
        report.summarize(np.array([True]), curves, events, rates, w, 20), "m", "demo"
    )
    events["n_events"] = 3
    assert "too small" in report.verdict(report.summarize(np.array([True]), curves, events, rates, w, 20), "m", "demo")
    rows = report.scorecard_rows(s, "m", "demo", 32)
    assert rows[2]["value"] == "0.25 / 0.50" and "12 events" == rows[1]["n"]
