"""Logit lens, value trace, scorecard and the evaluation/reporting steps of notebook 03."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vaxis.core.lens import logit_lens
from vaxis.core.trace import token_projections, value_trace_html
from vaxis.data.icrl import generate_games
from vaxis.experiments import axis as axis_exp
from vaxis.experiments import axis_report, extraction, extraction_files
from vaxis.run import scorecard


def test_logit_lens_ranks_by_unembedding(tiny):
    model, tokenizer = tiny
    weight = model.get_output_embeddings().weight
    token = 77
    top = logit_lens(model, tokenizer, weight[token].detach().clone(), k=5)
    assert len(top) == 5 and top == sorted(top, key=lambda t: -t[1])
    expected = torch.topk(weight @ weight[token], 5).indices.tolist()
    assert [t for t, _ in top] == [tokenizer.decode([i]) for i in expected]
    normed = logit_lens(model, tokenizer, weight[token].detach().clone(), k=5, through_norm=True)
    assert len(normed) == 5
    with pytest.raises(ValueError, match="needs"):
        logit_lens(model, tokenizer, torch.ones(3))


def test_value_trace(tiny):
    import html

    model, tokenizer = tiny
    text = "The river <flows> & past the mill."
    tokens, offsets, scores = token_projections(model, tokenizer, text, 2, torch.randn(64))
    assert "".join(tokens) == text and len(scores) == len(tokens) and (scores.abs() <= 1 + 1e-6).all()
    page = value_trace_html(tokens, scores, {0: "before", 3: "reward"}, title="t <1>")
    assert page.count("<span title=") == len(tokens)
    # Both the tokens and the title are HTML-escaped (the old check, `A or B and C`, passed on the
    # title alone): every token sits escaped in its own span, and no raw "<", ">" or "&" leaks.
    assert "t &lt;1&gt;" in page and "t <1>" not in page
    assert all(f">{html.escape(token)}</span>" in page for token in tokens)
    assert ">&lt;</span>" in page and ">&gt;</span>" in page and ">&amp;</span>" in page
    assert "<flows>" not in page and " & " not in page
    assert "border-bottom:3px solid #9467bd" in page


def test_scorecard_rows_replace_and_render(tmp_path):
    path = scorecard.record(tmp_path, [{"key": "fig2.heldout_auroc_main", "value": 0.61, "context": "m, demo"}])
    text = path.read_text()
    assert "0.954" in text and "0.610" in text and "m, demo" in text
    scorecard.record(tmp_path, [{"key": "fig2.heldout_auroc_main", "value": 0.7, "context": "again"}])
    data = json.loads((tmp_path / "scorecard.json").read_text())
    assert data["fig2.heldout_auroc_main"]["value"] == 0.7 and len(data) == 1
    with pytest.raises(KeyError, match="metric"):
        scorecard.record(tmp_path, [{"key": "new.thing", "value": 1}])
    scorecard.record(tmp_path, [{"key": "new.thing", "value": 1, "metric": "a new number", "section": "X"}])
    assert "a new number" in (tmp_path / "scorecard.md").read_text()


def test_paper_numbers_match_method():
    numbers = scorecard.paper_numbers()
    assert numbers["fig2.heldout_auroc_main"]["value"] == 0.954
    assert numbers["fig2.heldout_auroc_token_replication"]["value"] == 0.880
    assert numbers["fig2.cos_mid_late"]["value"] == 0.70


def test_layer_ranges_and_cosine_blocks():
    assert axis_report.layer_ranges([0, 1, 2, 3, 5, 6, 9], [False, True, True, True, True, False, True]) == "1..3, 5, 9"
    assert axis_report.layer_ranges([1, 2], [False, False]) == ""
    cos = np.eye(7)
    cos[1, 5] = cos[1, 6] = 0.5
    blocks = axis_report.cosine_blocks(cos)
    assert blocks["early vs late"] == pytest.approx(0.25) and blocks["mid vs late"] == 0.0
    assert np.isnan(axis_report.cosine_blocks(np.eye(3))["early vs late"])


def _extraction(tiny, keep):
    import vaxis

    model, tokenizer = tiny
    games, _ = generate_games(40, seed=3, size=vaxis.data.icrl.GameSize(max_discovery=2, max_attempts=2, max_words=80))
    spans = extraction.items_from_games(games, tokenizer)
    ex = extraction.run_extraction(
        model,
        tokenizer,
        spans,
        [0, 1, 2, 3],
        n_splits=3,
        n_test=5,
        n_shuffles=2,
        n_random=2,
        seed=0,
        keep_construction_activations=keep,
        use_cache=False,
        progress=False,
        max_batch_tokens=2048,  # as the demo profile on a CPU: padded batches cost more than they gain there
    )
    return spans, ex


@pytest.fixture(scope="module")
def run_on_tiny(tmp_path_factory, tiny):
    """Notebook 02's steps on the tiny model: items, two passes, save."""
    spans, ex = _extraction(tiny, keep=True)
    out = tmp_path_factory.mktemp("run")
    extraction_files.save_run(
        out,
        ex.fit_stats,
        ex.fit_items,
        ex.eval_stats,
        ex.items,
        ex.directions,
        spans.game_criterion,
        spans.game_split,
        {"model": "tiny", "model_name": "tiny-qwen3", "data_hash": "x"},
    )
    return out, ex, ex.eval_stats, ex.directions, tiny[1]


def test_kept_activations_equal_a_second_pass(tiny, run_on_tiny):
    """Projecting kept construction activations gives what a second forward pass gives."""
    _, kept, kept_stats, kept_dirs, _ = run_on_tiny
    spans, ex = _extraction(tiny, keep=False)
    assert torch.equal(ex.directions.vectors, kept_dirs.vectors)
    assert len(ex.items) == len(spans.items) > len(kept.items)  # construction placebos only without keeping
    where = {(it.game, it.kind, it.attempt): i for i, it in enumerate(ex.items)}
    for j, it in enumerate(kept.items):
        i = where[(it.game, it.kind, it.attempt)]
        for name in ("before", "after"):
            torch.testing.assert_close(
                kept_stats.projections[name][j], ex.eval_stats.projections[name][i], atol=1e-5, rtol=1e-4
            )
            torch.testing.assert_close(kept_stats.sums[name][j], ex.eval_stats.sums[name][i], atol=1e-4, rtol=1e-5)
    assert {spans.game_split[it.game] for it in kept.items if it.kind == "placebo"} == {"held_out"}
    # keeping activations spares the second forward over construction games
    assert kept.passes[1]["tokens_processed"] < ex.passes[1]["tokens_processed"]


def test_items_from_games_structure(tiny):
    import vaxis

    games, _ = generate_games(30, seed=4, size=vaxis.data.icrl.GameSize(max_discovery=2, max_attempts=2, max_words=80))
    spans = extraction.items_from_games(games, tiny[1])
    kinds = [it.kind for it in spans.items]
    assert kinds.count("target") == kinds.count("norm") == len(spans.game_criterion)
    assert kinds.count("placebo") > 0
    for it in spans.items:
        if it.kind in ("target", "placebo"):
            s, e = it.rewrite
            assert s <= it.spans["before"][0][0] and it.spans["after"][-1][1] <= e
            assert set(it.spans) == {"before", "reward", "after"}
    assert len({it.text for it in spans.items}) == len(spans.game_criterion)  # one text (one forward) per game


def test_load_run_and_evaluate(run_on_tiny):
    out, ex, stats, dirs, tokenizer = run_on_tiny
    run = extraction_files.load_run(out, tokenizer=tokenizer)
    assert len(run.items) == len(ex.items) and run.directions.names == dirs.names
    contrasts, criteria = run.fit_contrasts()
    torch.testing.assert_close(vaxis_fit(contrasts, criteria), run.directions.vectors[0])
    ev = axis_exp.evaluate(
        run.eval_stats, run.items, run.game_criterion, run.game_split, run.directions, tokenizer, n_boot=20
    )
    assert ev.auroc.shape == (4,) and ((0 <= ev.auroc) & (ev.auroc <= 1)).all()
    assert ev.random.shape == (2, 4) and ev.shuffled.shape == (2, 4) and ev.split.shape[1] == 4
    # before tokens precede after tokens within each rewrite
    assert 0.5 < ev.position["relative position in the rewrite"] <= 1.0
    assert ev.position["tokens to the rewrite's end"] > 0.5 and ev.counts["rewrite_ends_turn"] == 1.0
    main = ev.at(ev.main_layer)
    assert main["matched"] and all(m.axis.shape == (4,) for m in ev.matched.values())
    assert ev.reference_metric.shape == ev.reference_splits.shape == (4,)
    assert ev.p_shuffled.shape == (4,) and ((0 < ev.p_shuffled) & (ev.p_shuffled <= 1)).all()
    assert ev.main_layer in ev.layers and "construction" in ev.main_layer_rule
    assert (ev.ci_low <= ev.auroc + 1e-9).all() and (ev.auroc <= ev.ci_high + 1e-9).all()
    assert ev.table().shape[0] == 4
    text = axis_report.verdict(ev, "tiny", "smoke")
    assert "position alone" in text and f"main layer {ev.main_layer}" in text
    fixed = axis_exp.evaluate(
        run.eval_stats, run.items, run.game_criterion, run.game_split, run.directions, tokenizer, n_boot=5, main_layer=1
    )
    assert fixed.main_layer == 1 and fixed.main_layer_rule == "fixed by the user"
    example = axis_report.trace_example(run.items, run.game_split)
    enc = tokenizer(example.text, return_offsets_mapping=True, add_special_tokens=False)
    marks = axis_report.token_marks(example, enc["offset_mapping"])
    assert set(marks.values()) == {"before", "reward", "after"}


def vaxis_fit(contrasts, criteria):
    from vaxis.core.axis import fit_axis

    return fit_axis(contrasts, criteria)


def test_load_run_without_extraction(tmp_path):
    with pytest.raises(FileNotFoundError, match="run notebook 02"):
        extraction_files.load_run(tmp_path)


def test_scorecard_escapes_table_breakers(tmp_path):
    scorecard.record(tmp_path, [{"key": "fig2.logit_lens", "value": "a, |, \n, b", "context": "x|y"}])
    row = [line for line in (tmp_path / "scorecard.md").read_text().splitlines() if "logit lens" in line][0]
    import re

    assert len(re.findall(r"(?<!\\)\|", row)) == 10  # nine columns, however the value looks
    assert "⏎" in row and row.count("\\|") == 2


def test_publish_only_when_asked_and_only_for_the_profiles_model(tmp_path, monkeypatch):
    import vaxis.run.config
    from vaxis.run.plots import publish

    monkeypatch.setattr(vaxis.run.config, "REPO_ROOT", tmp_path)
    src = tmp_path / "run" / "auroc_by_layer.png"
    src.parent.mkdir()
    src.write_bytes(b"png")
    own = vaxis.run.config.resolve("demo", run_dir=tmp_path / "run")
    other = vaxis.run.config.resolve("demo", model="tiny-qwen3", run_dir=tmp_path / "run")
    assert publish(own, [src], requested=False) == [] and publish(other, [src], requested=True) == []
    assert not (tmp_path / "figures").exists()
    assert publish(own, [src], requested=True) == [tmp_path / "figures" / "demo_auroc_by_layer.png"]
    assert (tmp_path / "figures" / "demo_auroc_by_layer.png").read_bytes() == b"png"


def test_scorecard_replace_prefix_drops_rows_an_earlier_run_wrote_under_old_names(tmp_path):
    rows = [{"key": f"sec7.verdict.{n}", "value": 0.5, "metric": n, "section": "S"} for n in ("a_old", "b")]
    scorecard.record(tmp_path, rows + [{"key": "fig2.heldout_auroc_main", "value": 0.6}])
    scorecard.record(tmp_path, [{"key": "sec7.verdict.b", "value": 0.7, "metric": "b", "section": "S"}],
                     replace_prefix="sec7.verdict.")  # fmt: skip
    data = json.loads((tmp_path / "scorecard.json").read_text())
    assert set(data) == {"sec7.verdict.b", "fig2.heldout_auroc_main"} and data["sec7.verdict.b"]["value"] == 0.7
    assert "a_old" not in (tmp_path / "scorecard.md").read_text()
