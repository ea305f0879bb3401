"""Notebook 06's pieces: code data loading, code metrics, the after-the-bug reading with its nulls,
the verbosity sweep's bookkeeping and the report's verdict (vaxis.data.codedata, vaxis.experiments.coding,
vaxis.experiments.coding_report)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from vaxis.core.axis import Axis
from vaxis.core.nulls import paired_d
from vaxis.data.codedata import CodeProblem, load_code_problems, read_code_problems
from vaxis.experiments import coding
from vaxis.experiments import coding_report as report
from vaxis.experiments import coding_stats as cs
from vaxis.experiments.corruptions import KINDS, Corruption

importlib.import_module("vaxis.core.extract")  # so that sys.modules holds the module (vaxis re-exports the function)
importlib.import_module("vaxis.core.generate")

NAN = float("nan")


def _problem(pid="t:0", source="mbpp", canonical="def f(x):\n    if x < 0:\n        return -x\n    return x\n",
             tests="assert f(-2) == 2\nassert f(3) == 3\nassert f(0) == 0\n", entry="f") -> CodeProblem:  # fmt: skip
    return CodeProblem(pid, source, f"Write f.\n{tests.splitlines()[0]}", entry, canonical, tests)


# --------------------------------------------------------------------------------------------------
# code_metrics


HINTED = """\
import typing


def f(a: int, b, /, c: str, *args: int, d: float = 1.0, e=2, **kw: typing.Any) -> int:
    def inner(x: int) -> None:
        return None

    return a


class A:
    def m(self, x: int) -> str:
        return "x"

    async def n(self, y) -> None:
        pass


def lam(q):
    return lambda z: z
"""


@pytest.mark.parametrize(
    ("code", "lines", "comments", "hints"),
    [
        pytest.param("x = 1\n\n\ny = 2\n   \n", 2, 0, 0, id="blank-lines"),
        pytest.param("s = \"a # not a comment\"\nt = '#'\n", 2, 0, 0, id="hash-in-strings"),
        pytest.param("x = 1  # inline\n", 1, 1, 0, id="inline-comment"),
        pytest.param("# one\n# two\nx = 1\n", 3, 2, 0, id="two-comment-lines"),
        pytest.param("x = 1  # a # b\n", 1, 1, 0, id="one-comment-token"),
        pytest.param('def f(x):\n    """Doc # with hash.\n\n    More."""\n    return x\n', 4, 0, 0, id="docstring"),
        pytest.param("def f(a, b=1, *c, d, **e):\n    return a\n", 2, 0, 0, id="unannotated"),
        # f: a, c, args, d, kw + return (6); inner: x + return (2); m: x + return (2); n: return (1); lam: 0
        pytest.param(HINTED, 12, 0, 11, id="hints-nested-methods-async"),
        pytest.param("def g(*args: int, **kwargs: str):\n    pass\n", 2, 0, 2, id="hints-varargs"),
        pytest.param("def g(*, k: int) -> int:\n    return k\n", 2, 0, 2, id="hints-keyword-only"),
        pytest.param("", 0, 0, 0, id="empty"),
    ],
)
def test_code_metrics_counts(code, lines, comments, hints):
    m = coding.code_metrics(code)
    assert m == {"valid": True, "lines": lines, "comments": comments, "type_hints": hints}
    assert all(isinstance(m[k], float) for k in coding.METRICS)


@pytest.mark.parametrize(
    "code",
    ["def f(:\n    pass\n", "x = (1,\n", "return 1 +\n", "def f():\nreturn 1\n"],
    ids=["def", "open", "op", "indent"],
)
def test_code_metrics_invalid_code_is_nan(code):
    m = coding.code_metrics(code)
    assert m["valid"] is False
    assert set(m) == {"valid", *coding.METRICS}
    assert all(np.isnan(m[k]) for k in coding.METRICS)


# --------------------------------------------------------------------------------------------------
# cohens_d and effects


def test_cohens_d_equals_a_hand_computed_value():
    a = np.array([1.0, 2.0, 3.0, 4.0])  # mean 2.5, var (ddof 1) 5/3
    b = np.array([0.0, 0.0, 1.0, 1.0])  # mean 0.5, var (ddof 1) 1/3
    # pooled = (3 * 5/3 + 3 * 1/3) / 6 = 1 -> d = 2 / 1
    assert float(coding.cohens_d(a, b)) == pytest.approx(2.0)
    assert float(coding.cohens_d(b, a)) == pytest.approx(-2.0)
    # unequal sizes: pooled = (3 * 5/3 + 1 * 0.5) / 4 = 1.375
    c = np.array([0.0, 1.0])
    assert float(coding.cohens_d(a, c)) == pytest.approx(2.0 / np.sqrt(1.375))
    # along axis 0 of (n, n_layers, K): each cell on its own
    A = np.stack([a * k for k in (1.0, 2.0, 3.0)], 1)[:, :, None].repeat(2, 2)
    B = np.stack([b * k for k in (1.0, 2.0, 3.0)], 1)[:, :, None].repeat(2, 2)
    d = coding.cohens_d(A, B)
    assert d.shape == (3, 2)
    np.testing.assert_allclose(d, 2.0)


def test_cohens_d_is_nan_without_spread_or_data():
    with np.errstate(all="raise"):  # no division warnings escape
        d = coding.cohens_d(np.ones((5, 2, 3)), np.zeros((5, 2, 3)))
    assert d.shape == (2, 3) and np.isnan(d).all() and not np.isinf(d).any()
    with warnings.catch_warnings():  # numpy warns about ddof=1 on one value
        warnings.simplefilter("ignore", RuntimeWarning)
        assert np.isnan(coding.cohens_d(np.array([1.0]), np.array([0.0])))  # n = 1 each: no variance


def test_effects_share_is_strict_and_hand_checked():
    correct = np.array([1.0, 1.0, 2.0, 0.0, 5.0, 3.0])
    corrupted = np.array([1.0, 0.0, 1.0, 1.0, 5.0, 2.0])  # 2 ties, 3 higher, 1 lower
    e = coding.effects(correct[:, None, None], corrupted[:, None, None], n_boot=50)
    assert e["share"].shape == (1, 1) and float(e["share"][0, 0]) == pytest.approx(3 / 6)
    assert e["n"] == 6
    assert float(e["d"][0, 0]) == pytest.approx(float(coding.cohens_d(correct, corrupted)))
    assert 0 <= e["share_low"][0, 0] <= e["share"][0, 0] <= e["share_high"][0, 0] <= 1


def test_effects_shapes_ci_and_narrowing():
    rng = np.random.default_rng(0)

    def draw(n):
        correct = rng.normal(0.5, 1.0, (n, 3, 4))
        return correct, rng.normal(0.0, 1.0, (n, 3, 4))

    small = coding.effects(*draw(20), n_boot=200, seed=0)
    large = coding.effects(*draw(400), n_boot=200, seed=0)
    for e in (small, large):
        for k in ("d", "d_low", "d_high", "share", "share_low", "share_high"):
            assert e[k].shape == (3, 4), k
        assert (e["d_low"] <= e["d"]).all() and (e["d"] <= e["d_high"]).all()
        assert (e["share_low"] <= e["share"]).all() and (e["share"] <= e["share_high"]).all()
    assert small["n"] == 20 and large["n"] == 400
    width = lambda e: e["d_high"] - e["d_low"]  # noqa: E731
    assert (width(large) < width(small)).all()
    assert width(large).mean() < 0.5 * width(small).mean()  # ~ 1/sqrt(n): 4.5x narrower
    assert (large["d_low"] > 0).all() and (large["d_high"] < 1.0).all()  # true d = 0.5
    assert abs(large["d"].mean() - 0.5) < 0.1
    # deterministic in the seed
    c, b = draw(30)
    np.testing.assert_array_equal(coding.effects(c, b, 100, 3)["d_low"], coding.effects(c, b, 100, 3)["d_low"])


def test_effects_constant_inputs_and_tiny_n_give_nan():
    e = coding.effects(np.ones((10, 2, 3)), np.zeros((10, 2, 3)), n_boot=20)
    assert np.isnan(e["d"]).all() and np.isnan(e["d_low"]).all() and np.isnan(e["d_high"]).all()
    assert not np.isinf(e["d"]).any()
    np.testing.assert_array_equal(e["share"], 1.0)
    two = coding.effects(np.array([[[1.0]], [[2.0]]]), np.array([[[0.0]], [[0.5]]]), n_boot=20)
    assert np.isfinite(two["d"]).all() and np.isnan(two["d_low"]).all() and np.isnan(two["share_high"]).all()


# --------------------------------------------------------------------------------------------------
# probe_directions and the planted null check


D, N_LAYERS = 64, 2


def _planted_axis(seed=0):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=D)
    u /= np.linalg.norm(u)
    vectors = torch.tensor(np.stack([3.0 * u, 5.0 * u]), dtype=torch.float32)  # not unit: must be normalised
    return u, Axis(vectors, [1, 2], torch.ones(N_LAYERS), 1, "planted", D, 2)


def test_probe_directions_unit_rows_axis_first_seeded():
    u, axis = _planted_axis()
    dirs = coding.probe_directions(axis, n_random=20, seed=3)
    assert sorted(dirs) == [1, 2]
    for rows in dirs.values():
        assert rows.shape == (21, D) and rows.dtype == torch.float32
        torch.testing.assert_close(rows.norm(dim=-1), torch.ones(21), atol=1e-5, rtol=0)
        torch.testing.assert_close(rows[0], torch.tensor(u, dtype=torch.float32), atol=1e-5, rtol=0)
        assert (rows[1:] @ rows[0]).abs().max() < 0.6  # random, not the axis
    again = coding.probe_directions(axis, n_random=20, seed=3)
    other = coding.probe_directions(axis, n_random=20, seed=4)
    for layer in dirs:
        torch.testing.assert_close(again[layer], dirs[layer], atol=0, rtol=0)
        torch.testing.assert_close(other[layer][0], dirs[layer][0], atol=0, rtol=0)
        assert not torch.allclose(other[layer][1:], dirs[layer][1:])
    assert not torch.allclose(dirs[1][1:], dirs[2][1:])  # fresh random directions per layer
    only = coding.probe_directions(axis, n_random=0, seed=3)
    assert only[1].shape == (1, D)
    torch.testing.assert_close(only[1][0], dirs[1][0])


def _planted_after(shifts: dict, n=40, tokens=12, seed=0, n_random=20) -> tuple[coding.AfterBug, dict]:
    """Per-token activations ``h_t ~ N(0, I) (+ shift * u for correct solutions)`` and their mean cosines
    with each probe direction, computed by hand, as an AfterBug."""
    u, axis = _planted_axis()
    dirs = coding.probe_directions(axis, n_random=n_random, seed=11)
    layers = sorted(dirs)
    rng = np.random.default_rng(seed)

    def mean_cos(shift):
        out = np.empty((n, len(layers), 1 + n_random))
        for i in range(n):
            for li, layer in enumerate(layers):
                h = rng.normal(size=(tokens, D)) + shift * u
                unit = dirs[layer].double().numpy()
                unit = unit / np.linalg.norm(unit, axis=1, keepdims=True)
                out[i, li] = ((h @ unit.T) / np.linalg.norm(h, axis=1, keepdims=True)).mean(0)
        return out

    after = coding.AfterBug(layers, {}, {}, {}, {})
    for kind, shift in shifts.items():
        after.correct[kind] = mean_cos(shift)
        after.corrupted[kind] = mean_cos(0.0)
        after.ids[kind] = [f"p{i}" for i in range(n)]
        after.tokens[kind] = np.full((n, 2), tokens)
    return after, dirs


def test_planted_shift_is_read_by_the_axis_and_not_by_random_directions():
    after, _ = _planted_after({"logical": 1.0, "harmless": 0.0})
    table = cs.effects_table(after, li=1, n_boot=200, seed=0)
    assert list(table.kind) == ["logical", "harmless"]
    row = table.set_index("kind").loc["logical"]
    assert row.n == 40 and row.tokens_after_bug == 12
    assert row.d > 2.0 and row.d_low > 1.0 and row.d_low <= row.d <= row.d_high
    assert row.share_correct_higher > 0.85 and row.share_low > 0.7
    lo, hi = row["random_d_2.5%"], row["random_d_97.5%"]
    assert lo < 0 < hi and hi - lo < 2.0 and lo <= row.random_d_median <= hi  # the null is narrow, around 0
    assert row.d > hi + 1.0  # the planted signal is far beyond the null
    null = table.set_index("kind").loc["harmless"]
    assert null.d_low < 0 < null.d_high and abs(null.d) < 0.6  # no shift: CI contains 0
    np.testing.assert_allclose(table.harmless_d.to_numpy(float), null.d)  # the harmless column is its d
    # the row is effects() at that layer index, column 0 the axis, 1: the random directions
    e = coding.effects(after.correct["logical"], after.corrupted["logical"], 200, 0)
    assert row.d == pytest.approx(e["d"][1, 0]) and row.d_high == pytest.approx(e["d_high"][1, 0])
    assert lo == pytest.approx(np.quantile(e["d"][1, 1:], 0.025))


def test_without_a_planted_shift_the_axis_ci_contains_zero():
    after, _ = _planted_after({"shuffled": 0.0}, seed=5)
    for li in (0, 1):
        row = cs.effects_table(after, li=li, n_boot=200, seed=0).iloc[0]
        assert row.d_low < 0 < row.d_high
        assert pd.isna(row.harmless_d)  # no harmless kind read


# --------------------------------------------------------------------------------------------------
# after_bug_projections


CANON = "def f(x):\n    if x < 0:\n        return -x\n    return x\n"


def _fake_extract(calls, n_after=3, n_before=0):
    def fake(model, tokenizer, texts, spans, layers=None, directions=None, **kw):
        calls.append({"texts": texts, "spans": spans, "layers": layers, "directions": directions, "kw": kw})
        k = next(iter(directions.values())).shape[0]

        def tokens(values):
            return values.view(-1, 1, 1).expand(len(values), len(layers), k).clone()

        # item i: n_after tokens valued i, i + 1, ... (mean i + 1 for 3); n_before tokens valued -1 - i
        after = [tokens(float(i) + torch.arange(float(n_after))) for i in range(len(texts))]
        before = [tokens(torch.full((n_before if "before" in sp else 0,), -1.0 - i)) for i, sp in enumerate(spans)]
        return SimpleNamespace(projections={"after": after, "before": before},
                               counts={"after": torch.arange(len(texts)) + 10})  # fmt: skip

    return fake


def test_after_bug_spans_start_at_the_bug(monkeypatch):
    p = _problem("t:1", canonical=CANON)
    q = _problem("t:2", source="humaneval", canonical="def g(y):\n    return y * 2\n", entry="g")
    logical = CANON.replace("x < 0", "x >= 0")
    longer = CANON.replace("return x\n", "return x + 0 + 0\n")
    cs = {
        p.id: [
            Corruption("logical", logical, CANON.index("x < 0") + 2),
            Corruption("syntax", CANON + ")", len(CANON)),  # bug at the very end: empty span, skipped
            Corruption("shuffled", longer, CANON.index("return x\n") + 8),
        ],
        q.id: [Corruption("logical", "def g(y):\n    return y * 3\n", 22)],
    }
    calls = []
    monkeypatch.setattr(sys.modules["vaxis.core.extract"], "extract", _fake_extract(calls))
    dirs = {2: torch.randn(4, 8), 0: torch.randn(4, 8)}
    out = coding.after_bug_projections(None, None, [p, q], cs, dirs, max_batch_size=3)
    (call,) = calls
    assert call["layers"] == [0, 2] and call["directions"] is dirs and call["kw"] == {"max_batch_size": 3}
    texts, spans = call["texts"], call["spans"]
    pairs = [(p, cs[p.id][0]), (p, cs[p.id][2]), (q, cs[q.id][0])]
    assert len(texts) == len(spans) == 2 * len(pairs)
    for j, (prob, c) in enumerate(pairs):
        good, bad = texts[2 * j], texts[2 * j + 1]
        assert good == coding.prefilled_chat(prob, prob.canonical_solution)
        assert bad == coding.prefilled_chat(prob, c.code)
        assert good[:2] == coding.task_chat(prob) and good[2]["role"] == "assistant"
        ((mi, s, e),) = spans[2 * j]["after"]
        assert mi == 2 and good[2]["content"][s:e] == prob.canonical_solution[c.bug_offset :]
        ((mi, s, e),) = spans[2 * j + 1]["after"]
        assert mi == 2 and bad[2]["content"][s:e] == c.code[c.bug_offset :]
        for item, code in ((2 * j, prob.canonical_solution), (2 * j + 1, c.code)):  # the code before the bug
            ((mi, s, e),) = spans[item]["before"]
            assert mi == 2 and texts[item][2]["content"][s:e] == code[: c.bug_offset] and s == len(coding.FENCE)
    # arranged per kind, in order; correct = even items, corrupted = odd items (mean of i, i+1, i+2 = i + 1)
    assert out.layers == [0, 2]
    assert list(out.correct) == ["logical", "shuffled"] and list(out.corrupted) == ["logical", "shuffled"]
    assert out.ids == {"logical": [p.id, q.id], "shuffled": [p.id]}
    assert out.correct["logical"].shape == (2, 2, 4) and out.corrupted["shuffled"].shape == (1, 2, 4)
    np.testing.assert_allclose(out.correct["logical"][:, 0, 0], [1.0, 5.0])  # items 0 and 4
    np.testing.assert_allclose(out.corrupted["logical"][:, 1, 3], [2.0, 6.0])  # items 1 and 5
    np.testing.assert_allclose(out.correct["shuffled"][0], 3.0)  # item 2
    np.testing.assert_allclose(out.corrupted["shuffled"][0], 4.0)  # item 3
    np.testing.assert_array_equal(out.tokens["logical"], [[3, 3], [3, 3]])  # tokens averaged in the window
    assert out.window == "to_end" and set(out.windows) == set(coding.WINDOWS)


def test_after_bug_windows_from_one_pass(monkeypatch):
    """to_end: every token from the bug; authors_10: the bug's token and the 10 after it; whole: the code before
    the bug too. One extraction call reads all three."""
    p = _problem("t:1", canonical=CANON)
    bug = CANON.index("x < 0") + 2
    cs_ = {p.id: [Corruption("logical", CANON.replace("x < 0", "x >= 0"), bug),
                  Corruption("obfuscated", "def f(v0):\n    if v0 < 0:\n        return -v0\n    return v0\n", 0)]}  # fmt: skip
    calls = []
    monkeypatch.setattr(sys.modules["vaxis.core.extract"], "extract", _fake_extract(calls, n_after=15, n_before=4))
    dirs = {1: torch.randn(2, 8)}
    out = coding.after_bug_projections(None, None, [p], cs_, dirs, window="authors_10")
    assert len(calls) == 1 and out.window == "authors_10"
    assert "before" not in calls[0]["spans"][2]  # a bug at the first character: nothing before it
    # item i's after tokens are i .. i + 14; its before tokens (when it has a span) 4 x (-1 - i)
    np.testing.assert_allclose(out.correct["logical"][0], 0 + 5.0)  # tokens 0..10: the bug and 10 after it
    np.testing.assert_allclose(out.corrupted["logical"][0], 1 + 5.0)
    np.testing.assert_array_equal(out.tokens["logical"], [[11, 11]])
    to_end, whole = out.at("to_end"), out.at("whole")
    np.testing.assert_allclose(to_end.correct["logical"][0], 7.0)  # mean of 0..14
    np.testing.assert_allclose(to_end.corrupted["obfuscated"][0], 3 + 7.0)
    np.testing.assert_allclose(whole.correct["logical"][0], (4 * -1.0 + 15 * 7.0) / 19)
    np.testing.assert_allclose(whole.corrupted["logical"][0], (4 * -2.0 + 15 * 8.0) / 19)
    np.testing.assert_allclose(whole.correct["obfuscated"][0], 2 + 7.0)  # no before span: the after tokens alone
    np.testing.assert_array_equal(whole.tokens["logical"], [[19, 19]])
    assert whole.ids == out.ids and whole.at("authors_10").correct is out.correct
    with pytest.raises(ValueError, match="window"):
        coding.after_bug_projections(None, None, [p], cs_, dirs, window="bug_only")


def test_effects_bootstrap_keeps_pairs_together():
    """Problems differ a lot, every pair differs little and consistently: resampling whole pairs gives a share of 1
    in every draw and a narrow d; resampling correct and corrupted independently would not."""
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1.0, (40, 1, 1))
    correct, corrupted = base + 0.2 + rng.normal(0, 0.02, base.shape), base.copy()
    e = coding.effects(correct, corrupted, n_boot=300, seed=0)
    assert e["share"][0, 0] == 1.0 and e["share_low"][0, 0] == 1.0  # every resample keeps the pairs
    assert e["d_high"][0, 0] - e["d_low"][0, 0] < 0.2  # the mean difference barely moves between resamples
    assert e["d_z_low"][0, 0] > 5  # ~10: sd of the differences 0.02
    assert e["d_z"][0, 0] == pytest.approx(paired_d(correct.ravel(), corrupted.ravel()))


def _exchangeable(n=30, k=20, shift=0.0, seed=0):
    """Correct/corrupted (n, 1, 1 + k): every direction's values drawn alike (problem effect + noise), the axis
    (column 0) shifted by ``shift`` on the correct side."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1.0, (n, 1, 1 + k))
    correct, corrupted = base + rng.normal(0, 0.5, base.shape), base + rng.normal(0, 0.5, base.shape)
    correct[..., 0] += shift
    return correct, corrupted


def test_random_direction_test_nominal_rate_and_power():
    """The axis judged against 20 random directions: p <= 0.05 in about 5% of planted nulls, in nearly every
    planted effect on the paper's side, and never for an effect on the other side."""

    def rejected(shift, reps):
        out = []
        for r in range(reps):
            e = coding.effects(*_exchangeable(shift=shift, seed=r), n_boot=0)
            out.append([cs.against_random(e, 0)[stat]["p"] <= 0.05 for stat in cs.STATS])
        return np.array(out).mean(0)

    null = rejected(0.0, 300)
    assert ((null > 0.02) & (null < 0.09)).all(), null  # share, d, d_z
    assert (rejected(0.8, 40) > 0.9).all()
    assert (rejected(-0.8, 40) == 0).all()  # the side is the paper's, not the observed one


def test_effects_table_reads_each_statistic_against_the_random_directions():
    after = coding.AfterBug([7], {}, {}, {}, {})
    for kind, shift in (("logical", 0.6), ("syntax", -0.6)):
        after.correct[kind], after.corrupted[kind] = _exchangeable(shift=shift, seed=3)
        after.ids[kind], after.tokens[kind] = [f"p{i}" for i in range(30)], np.full((30, 2), 5)
    table = cs.effects_table(after, 0, n_boot=100).set_index("kind")
    e = coding.effects(after.correct["logical"], after.corrupted["logical"], 100)
    row = table.loc["logical"]
    for stat, col in (("share", "share_correct_higher"), ("d", "d"), ("d_z", "d_z")):
        assert row[col] == pytest.approx(e[stat][0, 0]) and row[f"p_{stat}"] == pytest.approx(1 / 21)
        assert row[f"random_{stat}_97.5%"] == pytest.approx(np.quantile(e[stat][0, 1:], 0.975))
        assert row[f"beyond_{stat}"]
        assert table.loc["syntax", f"p_{stat}"] == 1.0 and not table.loc["syntax", f"beyond_{stat}"]
    assert row.d_z_low > 0 and row.share_low > 0.5 and row.window == "to_end"


def test_after_bug_with_nothing_to_read_skips_extraction(monkeypatch):
    calls = []
    monkeypatch.setattr(sys.modules["vaxis.core.extract"], "extract", _fake_extract(calls))
    p = _problem("t:1", canonical=CANON)
    out = coding.after_bug_projections(None, None, [p], {p.id: [Corruption("syntax", CANON + ")", len(CANON))]},
                                       {1: torch.randn(2, 8)})  # fmt: skip
    assert calls == [] and out.correct == {} and out.ids == {} and out.layers == [1]


def _tiny_axis(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return Axis(torch.randn(4, 64, generator=gen), [0, 1, 2, 3], torch.full((4,), 20.0), 2, "tiny", 64, 3)


def test_after_bug_projections_with_the_tiny_model(tiny, tmp_cache):
    model, tokenizer = tiny
    problems, skipped = load_code_problems("mbpp", 2)
    assert len(problems) == 2 and skipped == {}
    made, counts = coding.make_corruptions(problems, kinds=["logical", "obfuscated", "harmless"])
    n_random = 3
    dirs = coding.probe_directions(_tiny_axis(), n_random=n_random, seed=0)
    out = coding.after_bug_projections(model, tokenizer, problems, made, dirs, progress=False,
                                       cache_dir=tmp_cache / "extract")  # fmt: skip
    assert out.layers == [0, 1, 2, 3] and out.correct
    for kind in out.correct:
        n = len(out.ids[kind])
        assert counts.loc[kind, "kept"] >= n >= 1
        for store in (out.correct, out.corrupted):
            assert store[kind].shape == (n, 4, 1 + n_random)
            assert np.isfinite(store[kind]).all() and (np.abs(store[kind]) <= 1 + 1e-5).all()
        assert out.tokens[kind].shape == (n, 2) and (out.tokens[kind] > 0).all()
    table = cs.effects_table(out, li=2, n_boot=20)
    assert list(table.kind) == list(out.correct)


# --------------------------------------------------------------------------------------------------
# make_corruptions


def test_make_corruptions_counts_and_a_failing_original():
    good = _problem("t:good")
    bad = _problem("t:bad", canonical="def f(x):\n    return x + 1\n")  # fails its own tests
    made, counts = coding.make_corruptions([good, bad], seed=0)
    assert list(counts.index) == list(KINDS)
    assert list(counts.columns) == ["kept", "rejected", "original fails"]
    np.testing.assert_array_equal(counts.sum(axis=1), 2)
    np.testing.assert_array_equal(counts["original fails"], 1)
    assert made[bad.id] == []
    assert counts["kept"].sum() == len(made[good.id]) >= 1
    for c in made[good.id]:
        assert c.code[: c.bug_offset] == good.canonical_solution[: c.bug_offset] and c.code != good.canonical_solution
    assert {c.kind for c in made[good.id]} == set(counts.index[counts["kept"] == 1])
    only, counts2 = coding.make_corruptions([bad], kinds=["syntax", "logical"])
    assert list(counts2.index) == ["syntax", "logical"] and only == {bad.id: []}
    np.testing.assert_array_equal(counts2["original fails"], 1)
    np.testing.assert_array_equal(counts2[["kept", "rejected"]].to_numpy(), 0)


# --------------------------------------------------------------------------------------------------
# codedata


def _record(i, **over):
    r = {"id": f"x:{i}", "source": "mbpp", "prompt": f"Task {i}", "entry_point": "f",
         "canonical_solution": "def f():\n    return 1\n", "tests": "assert f() == 1\n"}  # fmt: skip
    r.update(over)
    return r


def test_read_code_problems_skips_and_counts(tmp_path):
    no_solution = _record(3)
    del no_solution["canonical_solution"]
    records = [_record(0), _record(1, tests=""), _record(2, tests="   \n"), no_solution, _record(4, entry_point=None),
               _record(5), _record(6, prompt="")]  # fmt: skip
    path = tmp_path / "toy.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in records[:3]) + "\n\n" + "\n".join(json.dumps(r) for r in records[3:])
    )
    problems, skipped = read_code_problems(path)
    assert [p.id for p in problems] == ["x:0", "x:5"]
    assert skipped == {"no tests": 2, "no canonical_solution": 1, "no entry_point": 1, "no prompt": 1}
    assert problems[0] == CodeProblem("x:0", "mbpp", "Task 0", "f", "def f():\n    return 1\n", "assert f() == 1\n")
    path.write_text(json.dumps(_record(7, tests="", canonical_solution="")) + "\n")  # two reasons: counted once
    problems, skipped = read_code_problems(path)
    assert problems == [] and sum(skipped.values()) == 1


def test_read_code_problems_rejects_bad_lines(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_record(0)) + "\n" + json.dumps(_record(1)) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: not valid JSON"):
        read_code_problems(path)
    path.write_text(json.dumps(_record(0)) + "\n[1, 2]\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: expected a JSON object"):
        read_code_problems(path)


def test_load_code_problems_both_alternates_sources():
    problems, skipped = load_code_problems("both", 10)
    assert [p.source for p in problems] == ["humaneval", "mbpp"] * 5 and skipped == {}
    he, _ = load_code_problems("humaneval")
    mb, _ = load_code_problems("mbpp")
    assert [p.id for p in problems[0::2]] == [p.id for p in he[:5]]  # each source in its own seeded order
    assert [p.id for p in problems[1::2]] == [p.id for p in mb[:5]]
    everything, _ = load_code_problems("both")
    assert len(everything) == 664 and len({p.id for p in everything}) == 664
    assert [p.source for p in everything[:328]] == ["humaneval", "mbpp"] * 164
    assert all(p.source == "mbpp" for p in everything[328:])  # the longer list's remainder


def test_load_code_problems_errors_and_seeded_order():
    with pytest.raises(ValueError, match="at least one"):
        load_code_problems("mbpp", 0)
    with pytest.raises(ValueError, match="at least one"):
        load_code_problems("both", -3)
    with pytest.raises(ValueError, match="unknown code dataset"):
        load_code_problems("apps", 5)
    ids = lambda **kw: [p.id for p in load_code_problems("humaneval", 30, **kw)[0]]  # noqa: E731
    assert ids(seed=0) == ids(seed=0) and len(ids(seed=0)) == 30
    assert ids(seed=0) != ids(seed=1)
    all_ids = [p.id for p in load_code_problems("humaneval")[0]]
    assert sorted(all_ids) == [f"humaneval:{k:03d}" for k in range(164)] and all_ids != sorted(all_ids)


# --------------------------------------------------------------------------------------------------
# verbosity_table, metric_matrix, random_band


def _rows() -> pd.DataFrame:
    """direction, strength, valid, lines, comments, type_hints, passed for 2 problems x 2 samples."""
    bad = (0, NAN, NAN, NAN, 0)  # invalid (metrics NaN, as code_metrics gives), not passed
    spec = {
        ("none", 0.0): [(1, 10, 1, 0, 1), (1, 12, 2, 1, 1), (1, 14, 0, 0, 0), (1, 16, 1, 2, 1)],
        ("axis", -10.0): [bad, (1, 30, 3, 0, 1), bad, bad],
        ("axis", 10.0): [(1, 4, 0, 1, 1), bad, (1, 6, 1, 0, 1), (1, 8, 2, 2, 0)],
        ("axis", 5.0): [(1, 7, 1, 1, 1), bad, bad, (1, 9, 3, 0, 0)],  # half
        ("random0", 10.0): [(1, 9, 1, 0, 1), (1, 11, 1, 0, 0), (1, 13, 1, 0, 1), (1, 15, 1, 0, 1)],
        ("random1", 10.0): [(1, 20, 2, 1, 1)] * 4,
        ("random0", -10.0): [bad] * 4,  # dropped: the band at -10 is random1's alone
        ("random1", -10.0): [(1, 25, 0, 0, 1)] * 4,
        ("random0", 5.0): [bad] * 3 + [(1, 3, 0, 0, 0)],  # dropped: no random direction read
    }
    rows = []
    for (direction, strength), outs in spec.items():
        for k, (valid, lines, comments, hints, passed) in enumerate(outs):
            rows.append({"direction": direction, "strength_%": strength, "problem": f"p{k // 2}", "sample": k % 2,
                         "valid": bool(valid), "lines": lines, "comments": comments, "type_hints": hints,
                         "passed": bool(passed), "tokens": 20 + k, "finish": "stop"})  # fmt: skip
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)  # order must not matter


def test_verbosity_table_means_over_valid_pass_over_all_and_dropped():
    table = coding.verbosity_table(_rows()).set_index(["direction", "strength_%"])
    assert len(table) == 9 and (table.n == 4).all()
    none, neg, pos = table.loc[("none", 0.0)], table.loc[("axis", -10.0)], table.loc[("axis", 10.0)]
    assert not none.dropped and none.valid == 1.0 and none.lines == 13.0 and none.pass_rate == 0.75
    assert neg.dropped and neg.valid == 0.25  # 3 of 4 invalid: dropped, means blanked
    assert np.isnan(neg.lines) and np.isnan(neg.comments) and np.isnan(neg.type_hints)
    assert neg.pass_rate == 0.25 and neg.tokens == 21.5  # pass rate and tokens are kept
    assert not pos.dropped and pos.valid == 0.75
    assert pos.lines == 6.0 and pos.comments == 1.0 and pos.type_hints == 1.0  # over the 3 valid outputs
    assert pos.pass_rate == 0.5  # 2 passed of 4 outputs (the invalid one counts as failed)
    half = table.loc[("axis", 5.0)]  # exactly half invalid: kept ("over half" drops)
    assert not half.dropped and half.valid == 0.5 and half.lines == 8.0 and half.comments == 2.0
    assert table.loc[("random0", -10.0)].dropped and not table.loc[("random1", 10.0)].dropped


def test_metric_matrix_rows_and_nans():
    rows = _rows()
    m = coding.metric_matrix(rows, "lines", [-10, 0, 10])
    assert m.shape == (3, 4)
    assert np.isnan(m[0]).all()  # dropped strength, although one output was valid
    np.testing.assert_array_equal(m[1], [10, 12, 14, 16])  # the unsteered run at 0, by (problem, sample)
    np.testing.assert_array_equal(m[2], [4, NAN, 6, 8])  # invalid output: NaN
    r = coding.metric_matrix(rows, "comments", [0, 10], direction="random0")
    np.testing.assert_array_equal(r, [[1, 2, 0, 1], [1, 1, 1, 1]])
    assert np.isnan(coding.metric_matrix(rows, "type_hints", [-10, 10], direction="random0")[0]).all()


def test_random_band_min_max_over_random_directions():
    table = coding.verbosity_table(_rows())
    lo, hi = coding.random_band(table, "lines", [-10, 0, 5, 10])
    assert (lo[0], hi[0]) == (25.0, 25.0)  # random0 dropped at -10: random1 alone
    assert np.isnan(lo[1]) and np.isnan(hi[1])  # no random direction at 0 (the axis is not in the band)
    assert np.isnan(lo[2]) and np.isnan(hi[2])  # the only random direction at 5 was dropped: none read
    assert (lo[3], hi[3]) == (12.0, 20.0)
    lo, hi = coding.random_band(table, "comments", [10.0])
    np.testing.assert_array_equal([lo[0], hi[0]], [1.0, 2.0])


# --------------------------------------------------------------------------------------------------
# the per-problem permutation test of verbosity steering


STRENGTHS = [-10.1, -5.0, 0.0, 5.0, 10.1]


def _steer_rows(n_problems=20, slope=0.0, seed=0, samples=1) -> pd.DataFrame:
    """Sweep rows whose ``lines`` are Poisson counts around a per-problem level plus ``slope * strength``."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_problems):
        level = rng.uniform(6, 14)
        for s in STRENGTHS:
            for k in range(samples):
                lines = float(rng.poisson(max(level + slope * s, 0.5)))
                rows.append({"direction": "none" if s == 0 else "axis", "strength_%": s, "problem": f"p{i}",
                             "sample": k, "valid": True, "lines": lines, "comments": 1.0, "type_hints": 0.0,
                             "passed": True, "tokens": 30, "finish": "stop"})  # fmt: skip
    return pd.DataFrame(rows)


def test_problem_slopes_per_problem_and_without_dropped_or_invalid():
    rows = _rows()
    slopes = cs.problem_slopes(rows, "lines", [-10, 0, 5, 10])  # -10 dropped (3 of 4 invalid)
    # p0: (0, 10), (0, 12), (5, 7), (10, 4) (its other outputs invalid); p1: (0, 14), (0, 16), (5, 9), (10, 6), (10, 8)
    np.testing.assert_allclose(slopes["p0"], np.polyfit([0, 0, 5, 10], [10, 12, 7, 4], 1)[0])
    np.testing.assert_allclose(slopes["p1"], np.polyfit([0, 0, 5, 10, 10], [14, 16, 9, 6, 8], 1)[0])
    assert set(slopes) == {"p0", "p1"}
    only_zero = cs.problem_slopes(rows, "lines", [-10, 0])  # one strength left: no slope
    assert np.isnan(list(only_zero.values())).all()
    random0 = cs.problem_slopes(rows, "comments", [0, 10], direction="random0")
    np.testing.assert_allclose(random0["p0"], np.polyfit([0, 0, 10, 10], [1, 2, 1, 1], 1)[0])


def test_steering_p_nominal_rate_power_and_side():
    """Sign flips of per-problem slopes: p <= 0.05 in about 5% of planted nulls (outputs that do not depend on
    the strength), in nearly every planted fall, never for a planted rise (the paper's side is 'fewer')."""
    null = np.mean([cs.steering_p(_steer_rows(seed=r), "lines", STRENGTHS) <= 0.05 for r in range(200)])
    assert 0.015 < null < 0.09, null
    assert np.mean([cs.steering_p(_steer_rows(slope=-0.15, seed=r), "lines", STRENGTHS) <= 0.05
                    for r in range(30)]) > 0.9  # fmt: skip
    assert all(cs.steering_p(_steer_rows(slope=0.15, seed=r), "lines", STRENGTHS) > 0.5 for r in range(20))
    assert cs.STEER_SIDE == -1


# --------------------------------------------------------------------------------------------------
# verbosity_sweep with the tiny model


def test_verbosity_sweep_rows(tiny, tmp_cache, monkeypatch):
    from vaxis.experiments.confidence import steering_vectors

    model, tokenizer = tiny
    problems, _ = load_code_problems("mbpp", 2)
    axis = _tiny_axis()
    vectors = steering_vectors(axis, 2, [-10.1, 0, 10.1], 1, 0, [10.1])
    assert set(vectors) == {("none", 0.0), ("axis", -10.1), ("axis", 10.1), ("random0", 10.1)}
    gen_mod = sys.modules["vaxis.core.generate"]
    real, seen = gen_mod.generate, []

    p0 = problems[0]
    wrong = f"def {p0.entry_point}(*args):\n    return None\n"

    def spy(*args, **kw):
        out = real(*args, **kw)
        if kw["steer"] is None:  # the unsteered run: plant a passing and a valid but wrong answer for problem 0
            out[0] = dataclasses.replace(out[0], text=p0.canonical_solution)
            out[1] = dataclasses.replace(out[1], text=wrong)
        seen.append(out)
        return out

    monkeypatch.setattr(gen_mod, "generate", spy)
    n_samples, max_new = 2, 12
    rows = coding.verbosity_sweep(model, tokenizer, problems, vectors, timeout=5, max_new_tokens=max_new,
                                  n_samples=n_samples, temperature=1.0, progress=False)  # fmt: skip
    assert len(seen) == len(vectors)
    assert len(rows) == len(vectors) * len(problems) * n_samples
    keys = set(zip(rows.direction, rows["strength_%"], rows.problem, rows["sample"]))
    assert keys == {(d, s, p.id, k) for d, s in vectors for p in problems for k in range(n_samples)}
    assert not (rows.passed & ~rows.valid).any()  # passed is False wherever valid is False
    assert rows.passed.dtype == bool and rows.valid.dtype == bool
    assert set(rows.finish) <= {"eos", "length", "stop"} and rows.tokens.between(1, max_new).all()
    # each row is its generation's metrics, assigned to the right problem and sample
    gens = [g for out in seen for g in out]
    for (_, r), g in zip(rows.iterrows(), gens):
        assert r.problem == problems[g.conversation].id and r["sample"] == g.sample and r.tokens == g.n_new_tokens
        m = coding.code_metrics(g.text)
        assert r.valid == m["valid"]
        for k in coding.METRICS:
            assert r[k] == m[k] or (np.isnan(r[k]) and np.isnan(m[k]))
    invalid = rows[~rows.valid]
    assert len(invalid) and invalid[list(coding.METRICS)].isna().all().all()
    planted = rows[(rows.direction == "none") & (rows.problem == p0.id)].set_index("sample")
    assert planted.loc[0, "valid"] and planted.loc[0, "passed"]  # the canonical solution passes in the sandbox
    assert planted.loc[0, "lines"] == coding.code_metrics(p0.canonical_solution)["lines"]
    assert planted.loc[1, "valid"] and not planted.loc[1, "passed"]  # valid, wrong: fails


# --------------------------------------------------------------------------------------------------
# coding_report


def _effects_table() -> pd.DataFrame:
    def row(kind, dz, lo, hi, p_share, n=40, share=0.8):
        out = {"kind": kind, "window": "to_end", "n": n, "share_correct_higher": share, "share_low": share - 0.1,
               "share_high": share + 0.1, "d": dz / 2, "d_low": lo / 2, "d_high": hi / 2, "d_z": dz, "d_z_low": lo,
               "d_z_high": hi, "p_share": p_share, "p_d": 0.5, "p_d_z": 0.04, "harmless_d": 0.05,
               "tokens_after_bug": 30.0}  # fmt: skip
        for stat, (lo_r, hi_r) in (("share", (0.2, 0.7)), ("d", (-0.4, 0.4)), ("d_z", (-0.5, 0.5))):
            out |= {
                f"random_{stat}_median": (lo_r + hi_r) / 2,
                f"random_{stat}_2.5%": lo_r,
                f"random_{stat}_97.5%": hi_r,
            }
        return out

    return pd.DataFrame([
        row("shuffled", 1.2, 0.8, 1.6, 0.048),  # CI excludes 0, the share beyond every random direction
        row("obfuscated", 0.9, 0.5, 1.3, 0.2),  # CI excludes 0, random directions reach as far
        row("syntax", -0.9, -1.4, -0.4, 1.0, share=0.2),  # correct lower: opposite to the paper
        row("logical", 0.3, -0.1, 0.7, 0.048),  # CI contains 0
        row("tiny", 2.0, 1.5, 2.5, 0.048, n=3),  # too few problems
        row("none", 0.9, 0.5, 1.3, NAN),  # no random directions read
        row("harmless", 0.1, -0.3, 0.4, 0.5),
    ])  # fmt: skip


def _verbosity_table(comments_ends=(3.0, 1.5)) -> pd.DataFrame:
    strengths = [-10.0, -5.0, 0.0, 5.0, 10.0]
    rows = []
    for s, lines, comments, hints in zip(strengths, [20, 18, 16, 14, 12], [comments_ends[0], 2.6, 2.2, 1.8, comments_ends[1]],
                                         [0.5, 0.5, 0.5, 0.5, 0.5]):  # fmt: skip
        rows.append({"direction": "none" if s == 0 else "axis", "strength_%": s, "n": 10, "valid": 0.9 if s else 1.0,
                     "lines": lines, "comments": comments, "type_hints": hints, "pass_rate": 0.5, "tokens": 40.0,
                     "dropped": False})  # fmt: skip
    for name, s, lines, comments, hints in [("random0", -10.0, 17, 2.0, 0.4), ("random1", -10.0, 15, 3.5, 0.6),
                                            ("random0", 10.0, 15, 1.2, 0.5), ("random1", 10.0, 17, 2.4, 0.6)]:  # fmt: skip
        rows.append({"direction": name, "strength_%": s, "n": 10, "valid": 1.0, "lines": lines, "comments": comments,
                     "type_hints": hints, "pass_rate": 0.5, "tokens": 40.0, "dropped": False})  # fmt: skip
    table = pd.DataFrame(rows)
    return table.sample(frac=1.0, random_state=1).reset_index(drop=True)


SLOPES = {"lines": (-0.4, -0.5, -0.3), "comments": (-0.07, -0.1, -0.04), "type_hints": (0.0, -0.01, 0.01)}


def _line(text: str, prefix: str) -> str:
    (line,) = [x for x in text.splitlines() if x.startswith(prefix)]
    return line


STEER_P = {"lines": 0.01, "comments": 0.3, "type_hints": 0.9}


def test_summarize_collects_the_numbers():
    s = report.summarize(_effects_table(), _verbosity_table(), SLOPES, layer=7, n_problems=40, steering_p=STEER_P)
    assert s["layer"] == 7 and s["n_problems"] == 40 and s["window"] == "to_end"
    assert list(s["effects"]) == ["shuffled", "obfuscated", "syntax", "logical", "tiny", "none", "harmless"]
    assert s["effects"]["shuffled"]["d_z"] == 1.2
    assert s["strengths"] == [-10.0, -5.0, 0.0, 5.0, 10.0]
    assert s["means"]["lines"] == [20, 18, 16, 14, 12] and s["means"]["valid"][2] == 1.0
    assert s["n_outputs"] == [10] * 5 and s["n_valid"] == [9, 9, 10, 9, 9] and s["dropped"] == []
    assert s["random_range"]["lines"] == (15.0, 17.0) and s["random_range"]["comments"] == (1.2, 3.5)
    assert s["n_random"] == 2 and s["steering_p"] == STEER_P
    assert s["beside_random"]["lines"] == {-10.0: (20.0, 15.0, 17.0), 10.0: (12.0, 15.0, 17.0)}
    assert s["slopes"]["lines"] == (-0.4, -0.5, -0.3)
    assert np.isnan(report.summarize(_effects_table(), _verbosity_table(), SLOPES, 7, 40)["steering_p"]["lines"])


def test_verdict_reads_each_kind_on_the_papers_side():
    s = report.summarize(_effects_table(), _verbosity_table(), SLOPES, layer=7, n_problems=40, steering_p=STEER_P)
    text = report.verdict(s, "tiny-model", "demo")
    assert text.startswith(
        "**tiny-model, profile `demo`, layer 7**, 40 problems; the projection from the bug to the end"
    )
    shuffled = _line(text, "- shuffled:")
    assert "higher after the bug, beyond the random directions" in shuffled
    assert "random directions 20%..70%, p = 0.05" in shuffled and "paired d_z = +1.20 (+0.80..+1.60" in shuffled
    assert "pooled d = +0.60" in shuffled
    assert "not specific to the axis" in _line(text, "- obfuscated:")
    assert "beyond the random" not in _line(text, "- obfuscated:")
    assert "**lower**" in _line(text, "- syntax:") and "opposite to the paper" in _line(text, "- syntax:")
    assert "not distinguishable from 0" in _line(text, "- logical:")
    assert "too few problems" in _line(text, "- tiny:")
    assert "no random directions were read" in _line(text, "- none:")
    assert not any(x.startswith("- harmless:") for x in text.splitlines())
    assert "moves d by +0.05" in text


def test_verdict_reads_each_steering_effect_by_its_permutation_p():
    s = report.summarize(_effects_table(), _verbosity_table(), SLOPES, layer=7, n_problems=40, steering_p=STEER_P)
    text = report.verdict(s, "m", "demo")
    lines = _line(text, "- lines at")
    assert "falls with positive steering, as in the paper (per-problem sign-flip p = 0.010)" in lines
    assert "2 random direction(s) give 15.00..17.00 (a descriptive band, not a test)" in lines
    comments = _line(text, "- comments at")  # the slope's CI excludes 0, the permutation test does not clear it
    assert "falls; the per-problem sign-flip test" in comments and "p = 0.300" in comments
    assert "as in the paper" not in comments
    assert "shows no clear trend" in _line(text, "- type_hints at") and "p = 0.900" in _line(text, "- type_hints at")
    none = report.summarize(_effects_table(), _verbosity_table(), SLOPES, layer=7, n_problems=40)
    assert "no per-problem test" in _line(report.verdict(none, "m", "d"), "- lines at")


def test_scorecard_rows_record(tmp_path):
    from vaxis.run.scorecard import record

    s = report.summarize(_effects_table(), _verbosity_table(), SLOPES, layer=7, n_problems=40, steering_p=STEER_P)
    rows = report.scorecard_rows(s, "m", "demo")
    for row in rows:
        assert {"key", "value", "n", "null", "context"} <= set(row), row["key"]
        assert "L=7" in row["context"] and "window to_end" in row["context"]
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys))
    assert {"sec4.code_d_shuffled", "sec4.code_share_shuffled", "sec4.code_share_logical", "sec4.code_d_harmless",
            "sec4.code_dz_shuffled", "fig4.code_lines", "fig4.code_comments", "fig4.code_type_hints"} <= set(keys)  # fmt: skip
    assert "sec4.code_share_harmless" not in keys
    by_key = {r["key"]: r for r in rows}
    assert by_key["sec4.code_d_shuffled"]["value"] == 0.6 and by_key["sec4.code_d_shuffled"]["ci"] == (0.4, 0.8)
    assert by_key["sec4.code_dz_shuffled"]["value"] == 1.2 and by_key["sec4.code_dz_shuffled"]["ci"] == (0.8, 1.6)
    share = by_key["sec4.code_share_shuffled"]
    assert share["null"] == "random directions 0.20..0.70, p = 0.048 (correct higher)" and share["ci"] == pytest.approx(
        (0.7, 0.9)
    )
    assert by_key["sec4.code_dz_shuffled"]["null"] == "random directions -0.50..+0.50, p = 0.040 (correct higher)"
    assert by_key["fig4.code_lines"]["value"] == "20.00 / 18.00 / 16.00 / 14.00 / 12.00"
    assert by_key["fig4.code_lines"]["null"] == (
        "per-problem sign-flip p = 0.010 (fewer with positive steering); 2 random direction(s) 15.00..17.00 (descriptive)"
    )
    md = record(tmp_path, rows)
    stored = json.loads((tmp_path / "scorecard.json").read_text())
    assert set(stored) == set(keys)
    assert "Cohen's d after the bug, correct vs logical" in md.read_text()
    assert "paired d_z after the bug, correct vs shuffled" in md.read_text()
