"""Notebook 08's pieces: GSM8K reference answers, items and splits, TRL rows (task and control), the
trained - base deltas on planted arrays, the report's verdict / accuracy / scorecard, and the reference
readout and accuracy with the tiny model, real and with extract / generate replaced
(vaxis.experiments.sft, vaxis.experiments.sft_report)."""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from vaxis.data import arcdata, mathdata
from vaxis.data.icrl.paragraphs import load_paragraphs
from vaxis.experiments import sft
from vaxis.experiments import sft_report as report

importlib.import_module("vaxis.core.extract")  # so that sys.modules holds the module (vaxis re-exports the function)
importlib.import_module("vaxis.core.generate")

NAN = float("nan")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------------------------------
# gsm8k_reference


def test_gsm8k_reference_planted():
    solution = (
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n"
        "#### 72"
    )
    assert sft.gsm8k_reference(solution) == (
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n"
        "The answer is 72."
    )


def test_gsm8k_reference_keeps_commas_and_text_verbatim():
    solution = (
        "He pays  $1,000 + $1,000 = $<<1000+1000=2000>>2,000 (if 5 > 3; a*b).\n"
        "  Then 2,000 - 875 = <<2000-875=1125>>1,125 left\n"
        "#### 1,125  \n"
    )
    ref = sft.gsm8k_reference(solution)
    assert (
        ref
        == "He pays  $1,000 + $1,000 = $2,000 (if 5 > 3; a*b).\n  Then 2,000 - 875 = 1,125 left\nThe answer is 1,125."
    )
    assert ref.splitlines()[-1] == "The answer is 1,125."
    assert "<<" not in ref and ">>" not in ref and "####" not in ref


def test_gsm8k_reference_without_annotations_is_verbatim():
    assert sft.gsm8k_reference("3 + 4 = 7 apples.\n#### 7") == "3 + 4 = 7 apples.\nThe answer is 7."


def test_gsm8k_reference_of_real_solutions_grades_correct():
    for item in sft.load_items("gsm8k", 3):
        p = item.source
        assert "<<" in p.solution and "####" in p.solution  # real GSM8K solutions have both
        assert item.reference == sft.gsm8k_reference(p.solution)
        assert item.reference.splitlines()[-1] == f"The answer is {p.answer}."
        assert "<<" not in item.reference and "####" not in item.reference
    items = sft.load_items("gsm8k", 50, seed=3)
    assert len(items) == 50
    for item in items:
        assert item.reference.endswith("."), item.id
        assert mathdata.is_correct(item.reference, item.source) is True, item.id


# --------------------------------------------------------------------------------------------------
# load_items, Item.chat


@pytest.mark.parametrize(("dataset", "system"), [("gsm8k", sft.MATH_SYSTEM), ("math500", sft.MATH_SYSTEM),
                                                 ("arc", sft.ARC_SYSTEM)])  # fmt: skip
def test_load_items_messages(dataset, system):
    items = sft.load_items(dataset, 4, seed=1)
    assert len(items) == 4 and len({it.id for it in items}) == 4
    for it in items:
        assert it.dataset == dataset
        assert [m["role"] for m in it.messages] == ["system", "user"]
        assert it.messages[0]["content"] == system
        if dataset == "arc":
            assert it.messages[1]["content"] == arcdata.format_question(it.source)
            assert it.reference == it.source.solution
            assert arcdata.is_correct(it.reference, it.source) is True
        else:
            assert it.messages[1]["content"] == it.source.question and it.source.source == dataset
            assert mathdata.is_correct(it.reference, it.source) is True
        if dataset == "math500":
            assert it.reference == it.source.solution
        assert it.reference not in it.messages[1]["content"]


@pytest.mark.parametrize("dataset", sft.DATASETS)
def test_load_items_seeded(dataset):
    a, b = sft.load_items(dataset, 6, seed=0), sft.load_items(dataset, 6, seed=0)
    c = sft.load_items(dataset, 6, seed=1)
    assert [it.id for it in a] == [it.id for it in b]
    assert a == b
    assert [it.id for it in a] != [it.id for it in c]


def test_load_items_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'aime'"):
        sft.load_items("aime", 3)


def test_item_chat():
    (it,) = sft.load_items("arc", 1)
    chat = it.chat()
    assert chat == [dict(m) for m in it.messages] and len(chat) == 2
    chat[0]["content"] = "changed"  # a copy: the item stays as it was
    assert it.messages[0]["content"] == sft.ARC_SYSTEM
    answered = it.chat("The answer is B")
    assert answered[:2] == it.chat() and answered[2] == {"role": "assistant", "content": "The answer is B"}
    assert len(answered) == 3
    assert it.chat("")[-1] == {"role": "assistant", "content": ""}  # an empty answer is still an answer


# --------------------------------------------------------------------------------------------------
# split


@pytest.mark.parametrize(("n", "n_train", "n_held"), [(10, 8, 2), (50, 40, 10), (7, 6, 1)])
def test_split_sizes_disjoint_covering(n, n_train, n_held):
    items = sft.load_items("gsm8k", n)
    train, held = sft.split(items, 0.2, seed=0)
    assert (len(train), len(held)) == (n_train, n_held)
    ids_train, ids_held = {it.id for it in train}, {it.id for it in held}
    assert not ids_train & ids_held
    assert ids_train | ids_held == {it.id for it in items}
    assert all(isinstance(it, sft.Item) for it in train + held)
    again = sft.split(items, 0.2, seed=0)
    assert again == (train, held)
    others = [sft.split(items, 0.2, seed=s)[1] for s in range(1, 6)]
    assert any({it.id for it in o} != ids_held for o in others)  # the seed matters


@pytest.mark.parametrize(("n", "fraction"), [(1, 0.2), (2, 0.2), (4, 0.9)])
def test_split_refuses_an_empty_side(n, fraction):
    items = sft.load_items("gsm8k", n)
    with pytest.raises(ValueError, match="empty"):
        sft.split(items, fraction, seed=0)


# --------------------------------------------------------------------------------------------------
# sft_rows / control_rows


def test_sft_rows_prompt_completion():
    items = sft.load_items("gsm8k", 3) + sft.load_items("arc", 2)
    rows = sft.sft_rows(items)
    assert len(rows) == len(items)
    for row, it in zip(rows, items):
        assert set(row) == {"prompt", "completion", "id"}
        assert row["id"] == it.id
        assert row["prompt"] == it.chat()
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert all(it.reference not in m["content"] for m in row["prompt"])
        assert row["completion"] == [{"role": "assistant", "content": it.reference}]
    assert sft.sft_rows([]) == []


def test_control_rows():
    paragraphs = {p["id"]: p for p in load_paragraphs()}
    rows = sft.control_rows(7, seed=0)
    assert len(rows) == 7 and len({r["id"] for r in rows}) == 7
    for row in rows:
        p = paragraphs[row["id"]]
        assert set(row) == {"prompt", "completion", "id"}
        assert row["prompt"] == [{"role": "user", "content": sft.TITLE_PROMPT.format(text=p["text"])}]
        assert row["completion"] == [{"role": "assistant", "content": p["title"]}]
        assert p["title"] and p["title"] not in ("", None)
    assert sft.control_rows(7, seed=0) == rows
    assert [r["id"] for r in sft.control_rows(7, seed=1)] != [r["id"] for r in rows]
    assert len(sft.control_rows(1, seed=0)) == 1
    assert len(sft.control_rows(30, seed=2)) == 30


# --------------------------------------------------------------------------------------------------
# deltas_table on planted arrays

N_ITEMS, N_LAYERS, K = 40, 2, 21
EFFECT = 0.05


def _planted_proj(seed: int = 0) -> dict:
    """base: noise; "sft-x": base + small noise, +EFFECT on column 0 at both layers for dataset "x" only;
    "control": base + small noise."""
    rng = np.random.default_rng(seed)
    base = {ds: rng.normal(0.1 * (i + 1), 0.02, (N_ITEMS, N_LAYERS, K)) for i, ds in enumerate(("x", "y"))}
    proj = {"base": base, "sft-x": {}, "control": {}}
    for name in ("sft-x", "control"):
        for ds in ("x", "y"):
            p = base[ds] + rng.normal(0, 0.005, base[ds].shape)
            if name == "sft-x" and ds == "x":
                p[:, :, 0] += EFFECT
            proj[name][ds] = p
    return proj


def test_deltas_table_planted():
    proj = _planted_proj()
    table = sft.deltas_table(proj, li=1, n_boot=200, seed=0)
    assert set(zip(table.model, table.dataset)) == {("sft-x", "x"), ("sft-x", "y"), ("control", "x"), ("control", "y")}
    assert "base" not in set(table.model) and len(table) == 4
    rows = {(r["model"], r["dataset"]): r for r in table.to_dict("records")}
    hit = rows[("sft-x", "x")]
    assert hit["n"] == N_ITEMS
    assert hit["delta"] == pytest.approx(EFFECT, abs=0.003)
    assert 0 < hit["delta_low"] < hit["delta"] < hit["delta_high"]
    assert hit["delta_high"] - hit["delta_low"] < 0.01
    for key, r in rows.items():
        assert r["base_projection"] == pytest.approx(proj["base"][key[1]][:, 1, 0].mean())
        assert r["random_delta_2.5%"] <= r["random_delta_median"] <= r["random_delta_97.5%"]
        assert abs(r["random_delta_median"]) < 0.002 and r["random_delta_97.5%"] - r["random_delta_2.5%"] < 0.006
        if key != ("sft-x", "x"):
            assert abs(r["delta"]) < 0.003 and r["delta_high"] < EFFECT / 2, key
    assert rows[("sft-x", "y")]["base_projection"] == pytest.approx(0.2, abs=0.01)
    assert rows[("sft-x", "x")]["base_projection"] == pytest.approx(0.1, abs=0.01)


def test_deltas_table_layer_and_exact_values():
    """Constant planted deltas: the delta is exact, at the layer asked for only, and the random range is exact."""
    base = np.zeros((5, 3, 4))
    base[:, :, 0] = 0.3
    trained = base.copy()
    trained[:, 2, :] += np.array([0.1, -0.02, 0.0, 0.04])  # layer 2 only
    proj = {"base": {"d": base}, "m": {"d": trained}}
    t2 = sft.deltas_table(proj, li=2, n_boot=50).iloc[0]
    assert t2["delta"] == pytest.approx(0.1) and t2["delta_low"] == pytest.approx(0.1)
    assert t2["base_projection"] == pytest.approx(0.3)
    assert t2["random_delta_median"] == pytest.approx(0.0)
    assert t2["random_delta_2.5%"] == pytest.approx(np.quantile([-0.02, 0.0, 0.04], 0.025))
    assert t2["random_delta_97.5%"] == pytest.approx(np.quantile([-0.02, 0.0, 0.04], 0.975))
    t0 = sft.deltas_table(proj, li=0, n_boot=50).iloc[0]
    assert t0["delta"] == pytest.approx(0.0) and t0["random_delta_97.5%"] == pytest.approx(0.0)


# --------------------------------------------------------------------------------------------------
# sft_report


def _row(model, dataset, delta, low, high, r_low=-0.003, r_high=0.004, n=40, base=0.12):
    return {"model": model, "dataset": dataset, "n": n, "delta": delta, "delta_low": low, "delta_high": high,
            "base_projection": base, "random_delta_median": (r_low + r_high) / 2, "random_delta_2.5%": r_low,
            "random_delta_97.5%": r_high}  # fmt: skip


def _deltas(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


GOOD = ("sft-gsm8k", "gsm8k", 0.02, 0.015, 0.025)
ACC = {"base": {"gsm8k": np.array([1.0, 0.0, NAN, 1.0])}, "sft-gsm8k": {"gsm8k": np.array([1.0, 1.0, 1.0, 0.0])}}


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        pytest.param([_row(*GOOD), _row("control", "gsm8k", 0.001, -0.002, 0.004)], True, id="planted-effect"),
        pytest.param([_row(*GOOD)], True, id="no-control-row"),
        pytest.param([_row(*GOOD), _row("control", "gsm8k", 0.025, 0.02, 0.03)], False, id="control-larger"),
        pytest.param([_row(*GOOD), _row("control", "gsm8k", -0.02, -0.025, -0.015)], False, id="control-as-large"),
        pytest.param([_row("sft-gsm8k", "gsm8k", 0.02, -0.001, 0.04)], False, id="ci-includes-0"),
        pytest.param([_row("sft-gsm8k", "gsm8k", 0.02, NAN, NAN)], False, id="ci-nan"),
        pytest.param([_row(*GOOD, r_low=-0.03, r_high=0.03)], False, id="inside-random-range"),
        pytest.param([_row(*GOOD, r_low=-0.01, r_high=0.02)], False, id="at-random-edge"),
        pytest.param([_row("sft-gsm8k", "gsm8k", -0.02, -0.025, -0.015)], True, id="negative-effect"),
        pytest.param([_row("sft-gsm8k", "gsm8k", -0.02, -0.025, -0.015, r_low=-0.03)], False,
                     id="negative-inside-random-range"),
        pytest.param([_row("sft-arc", "arc", 0.03, 0.02, 0.04)], False, id="row-missing"),
    ],
)  # fmt: skip
def test_counts(rows, expected):
    s = report.summarize(_deltas(*rows), ACC, layer=5)
    assert report.counts(s, "sft-gsm8k", "gsm8k") is expected


def _line(text, start):
    (line,) = [x for x in text.splitlines() if x.startswith(start)]
    return line


def test_verdict():
    rows = [_row(*GOOD), _row("sft-gsm8k", "math500", 0.01, 0.005, 0.015, r_low=-0.02, r_high=0.02),
            _row("sft-gsm8k", "arc", 0.0001, -0.002, 0.002), _row("control", "gsm8k", 0.001, -0.002, 0.004)]  # fmt: skip
    s = report.summarize(_deltas(*rows), ACC, layer=5)
    text = report.verdict(s, "tiny-model", "demo")
    assert text.startswith("**tiny-model, profile `demo`, layer 5**")
    hit = _line(text, "- sft-gsm8k on gsm8k:")
    assert hit.endswith(": counts.") and "(paper +0.0211)" in hit
    assert "+0.0200 (+0.0150..+0.0250), n=40" in hit and "random directions -0.0030..+0.0040" in hit
    math = _line(text, "- sft-gsm8k on math500:")
    assert math.endswith("does not count.") and "(paper +0.004)" in math
    arc = _line(text, "- sft-gsm8k on arc:")
    assert arc.endswith("does not count.") and "paper" not in arc
    assert _line(text, "- control on gsm8k:").endswith("the null for any fine-tuning.")
    acc = _line(text, "- Accuracy")
    assert "base: gsm8k 0.67 (n=3)" in acc and "sft-gsm8k: gsm8k 0.75 (n=4)" in acc


def test_accuracy_all_nan_without_warnings():
    acc = {"base": {"gsm8k": np.array([NAN, NAN, NAN]), "arc": np.array([1.0, 0.0, NAN, 1.0])},
           "sft-arc": {"gsm8k": np.array([0.0, 0.0, 1.0]), "arc": np.array([NAN])}}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = report.accuracy_table(acc)
        s = report.summarize(_deltas(_row("sft-arc", "arc", 0.03, 0.02, 0.04)), acc, layer=3)
        text = report.verdict(s, "m", "p")
    assert list(table.index) == ["base", "sft-arc"] and set(table.columns) == {"gsm8k", "arc"}
    assert table.loc["base", "gsm8k"] == "nan (0 of 3 parseable)"
    assert table.loc["base", "arc"] == "0.67 (3 of 4 parseable)"
    assert table.loc["sft-arc", "gsm8k"] == "0.33 (3 of 3 parseable)"
    assert table.loc["sft-arc", "arc"] == "nan (0 of 1 parseable)"
    a, n = s["accuracy"]["base"]["gsm8k"]
    assert np.isnan(a) and n == 0
    assert s["accuracy"]["base"]["arc"] == (pytest.approx(2 / 3), 3)
    assert s["layer"] == 3 and set(s["rows"]) == {("sft-arc", "arc")}
    assert "gsm8k nan (n=0)" in _line(text, "- Accuracy")


def test_scorecard_rows_record(tmp_path):
    from vaxis.run.scorecard import record

    rows = [_row(*GOOD), _row("sft-arc", "arc", 0.03, 0.02, 0.04), _row("sft-gsm8k", "math500", 0.004, -0.001, 0.009),
            _row("control", "gsm8k", 0.001, -0.002, 0.004), _row("control", "arc", -0.002, -0.004, 0.0),
            _row("sft-arc", "gsm8k", 0.001, -0.002, 0.004)]  # fmt: skip
    s = report.summarize(_deltas(*rows), ACC, layer=5)
    out = report.scorecard_rows(s, "tiny-model", "demo")
    by_key = {r["key"]: r for r in out}
    assert list(by_key) == ["sec6.sft_gsm8k", "sec6.sft_arc", "sec6.sft_math500"] and len(out) == 3
    g = by_key["sec6.sft_gsm8k"]
    assert g["value"] == 0.02 and g["ci"] == (0.015, 0.025) and g["n"] == "40 items"
    assert g["null"] == "random directions -0.0030..+0.0040; control adapter +0.0010"
    assert g["context"] == "tiny-model, profile demo, L=5"
    assert by_key["sec6.sft_arc"]["null"].endswith("control adapter -0.0020")
    assert by_key["sec6.sft_math500"]["null"].endswith("control adapter n/a")  # no control row on math500
    md = record(tmp_path, out)
    stored = json.loads((tmp_path / "scorecard.json").read_text())
    assert set(stored) == {"sec6.sft_gsm8k", "sec6.sft_arc", "sec6.sft_math500"}
    assert stored["sec6.sft_arc"]["value"] == 0.03
    assert "SFT on GSM8K" in md.read_text()
    # rows that do not exist give no scorecard rows
    only = report.summarize(_deltas(_row("sft-arc", "arc", 0.03, 0.02, 0.04)), ACC, layer=5)
    assert [r["key"] for r in report.scorecard_rows(only, "m", "p")] == ["sec6.sft_arc"]
    assert report.scorecard_rows(report.summarize(_deltas(_row("control", "arc", 0.0, -0.01, 0.01)), ACC, 5),
                                 "m", "p") == []  # fmt: skip


# --------------------------------------------------------------------------------------------------
# reference_projections


def _unit_directions(hidden, k=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(k, hidden, generator=gen)
    return d / d.norm(dim=1, keepdim=True)


def test_reference_projections_with_the_tiny_model(tiny, tmp_cache):
    model, tokenizer = tiny
    items = sft.load_items("gsm8k", 2)
    dirs = {1: _unit_directions(model.config.hidden_size)}
    out = sft.reference_projections(model, tokenizer, items, dirs, progress=False, cache_dir=tmp_cache / "extract")
    assert out.shape == (2, 1, 3)
    assert np.isfinite(out).all() and (np.abs(out) <= 1 + 1e-5).all()
    assert not np.allclose(out[0], out[1])  # different answers, different readings


def test_reference_projections_span_is_the_reference(monkeypatch):
    calls = []

    def fake(model, tokenizer, texts, spans, layers=None, directions=None, **kw):
        calls.append({"texts": texts, "spans": spans, "layers": layers, "directions": directions, "kw": kw})
        k = next(iter(directions.values())).shape[0]
        # item i: 4 tokens valued i + (0, 1, 2, 3) at layer j + 10 * j (mean i + 1.5 + 10 j)
        proj = [(i + torch.arange(4.0)).view(4, 1, 1) + 10 * torch.arange(float(len(layers))).view(1, -1, 1)
                for i in range(len(texts))]  # fmt: skip
        return SimpleNamespace(projections={"answer": [p.expand(4, len(layers), k).clone() for p in proj]})

    monkeypatch.setattr(sys.modules["vaxis.core.extract"], "extract", fake)
    items = sft.load_items("gsm8k", 2) + sft.load_items("arc", 1)
    dirs = {3: torch.randn(5, 8), 1: torch.randn(5, 8)}
    out = sft.reference_projections(None, None, items, dirs, max_batch_size=2)
    (call,) = calls
    assert call["layers"] == [1, 3] and call["directions"] is dirs and call["kw"] == {"max_batch_size": 2}
    assert len(call["texts"]) == len(call["spans"]) == 3
    for it, chat, span in zip(items, call["texts"], call["spans"]):
        assert chat == it.chat(it.reference)
        assert set(span) == {"answer"}
        ((mi, s, e),) = span["answer"]
        assert mi == 2 and chat[mi]["role"] == "assistant"
        assert chat[mi]["content"][s:e] == it.reference
    assert out.shape == (3, 2, 5)
    np.testing.assert_allclose(out[:, 0, 0], [1.5, 2.5, 3.5])
    np.testing.assert_allclose(out[:, 1, 4], [11.5, 12.5, 13.5])


# --------------------------------------------------------------------------------------------------
# accuracy


def test_accuracy_with_the_tiny_model(tiny, tmp_cache):
    model, tokenizer = tiny
    items = sft.load_items("arc", 2)
    out = sft.accuracy(model, tokenizer, items, max_new_tokens=4, progress=False)
    assert isinstance(out, np.ndarray) and out.shape == (2,)
    assert all(np.isnan(v) or v in (0.0, 1.0) for v in out)


def test_accuracy_grading_with_planted_answers(monkeypatch):
    arc = sft.load_items("arc", 12)
    right = next(it for it in arc if it.source.answer == "C")
    wrong = next(it for it in arc if it.source.answer != "C")
    unparseable = next(it for it in arc if it not in (right, wrong))
    g_right, g_wrong, g_none = sft.load_items("gsm8k", 3)
    items = [right, wrong, unparseable, g_right, g_wrong, g_none]
    texts = {right.id: "The answer is C", wrong.id: "The answer is C", unparseable.id: "not sure, maybe a plant",
             g_right.id: f"So the total is {g_right.source.answer}.", g_wrong.id: "The answer is 123456789.",
             g_none.id: "I cannot tell."}  # fmt: skip
    calls = []

    def fake(model, tokenizer, conversations, *, max_new_tokens, **kw):
        calls.append({"conversations": conversations, "max_new_tokens": max_new_tokens, "kw": kw})
        return [SimpleNamespace(text=texts[it.id]) for it in items]

    monkeypatch.setattr(sys.modules["vaxis.core.generate"], "generate", fake)
    out = sft.accuracy(None, None, items, max_new_tokens=7, temperature=0.0)
    (call,) = calls
    assert call["conversations"] == [it.chat() for it in items]
    assert call["max_new_tokens"] == 7 and call["kw"] == {"temperature": 0.0}
    np.testing.assert_array_equal(out, [1.0, 0.0, NAN, 1.0, 0.0, NAN])


def test_deltas_table_refuses_models_read_on_different_items():
    with pytest.raises(ValueError, match="same items"):
        sft.deltas_table({"base": {"d": np.zeros((1, 1, 3))}, "m": {"d": np.ones((5, 1, 3))}}, 0)
