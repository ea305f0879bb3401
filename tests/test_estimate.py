"""`python -m vaxis run --estimate`: the passes a run will make, planned with the tokenizer only, and the check of
an estimate against a real run's timings (the end-to-end comparison is in tests/test_notebooks.py)."""

from __future__ import annotations

import json
import math
import sys

import pytest

from vaxis.core import timings
from vaxis.run import estimate as est
from vaxis.run.estimate import NotebookEstimate, Pass
from vaxis.run.estimate_planner import Planner
from vaxis.run.runner import main, notebooks


@pytest.fixture(scope="module")
def smoke():
    """The smoke profile's estimate on the CPU rates (the whole run, every notebook)."""
    return est.estimate("smoke", gpu="cpu")


def test_the_smoke_estimate_lists_the_passes_of_every_notebook(smoke):
    assert [b.name for b in smoke.notebooks] == [p.stem for p in notebooks()]
    first, *rest = smoke.notebooks
    assert not first.passes and first.notes  # 01 synthesizes games: no model
    for book in rest:
        assert book.passes and book.loads >= 1, book.name
        assert all(p.sequences > 0 and p.tokens > 0 for p in book.passes), book.name
    kinds = {p.kind for b in smoke.notebooks for p in b.passes}
    assert kinds == {"extract", "generate", "readout", "train"}
    for p in (p for b in smoke.notebooks for p in b.passes):
        if p.kind == "generate":
            assert p.decode_steps > 0 and p.decode_steps % p.batches == 0  # max_new_tokens per batch
        if p.kind == "train":
            assert p.optimizer_steps > 0
    # notebook 10 reads notebook 04's rollouts again: the same pass, from the cache
    later = next(b for b in smoke.notebooks if b.name.startswith("10"))
    assert any(p.cached and p.kind == "generate" for p in later.passes)
    assert smoke.hours() > 0 and all(smoke.rate.seconds(p) == 0 for b in smoke.notebooks for p in b.passes if p.cached)
    table = est.markdown(smoke)
    assert all(b.name in table for b in smoke.notebooks) and "| all |" in table and "upper bounds" in table


def test_the_estimate_equals_an_equal_run_and_fails_a_changed_one(smoke):
    run = _as_timings(smoke)
    assert est.compare(smoke, run) == []
    target = next(b for b in smoke.notebooks if any(p.kind == "generate" for p in b.passes))
    dropped = _as_timings(smoke)
    passes = dropped["notebooks"][target.name]["passes"]
    passes.remove(next(r for r in passes if r["kind"] == "generate"))
    problems = est.compare(smoke, dropped)
    assert len(problems) == 1 and target.name in problems[0] and "generate" in problems[0] and "passes" in problems[0]
    off = _as_timings(smoke)
    for record in off["notebooks"][target.name]["passes"]:
        if record["kind"] == "generate":
            record["planned_tokens"] = math.ceil(record["planned_tokens"] * 1.1)
    problems = est.compare(smoke, off)
    assert len(problems) == 1 and target.name in problems[0] and "tokens" in problems[0]
    failed = _as_timings(smoke)
    failed["notebooks"][target.name]["status"] = "failed"
    del failed["notebooks"][smoke.notebooks[-1].name]
    assert len(est.compare(smoke, failed)) == 2


def _as_timings(estimate) -> dict:
    """A timings.json a run matching ``estimate`` exactly would write (what vaxis.core.timings.record_pass records)."""
    books = {}
    for b in estimate.notebooks:
        passes = []
        for p in b.passes:
            if p.kind in est.RECORDED:
                record = {"kind": p.kind, "tokens": p.tokens, "sequences": p.sequences, "batches": p.batches,
                          "cached": p.cached, "optimizer_steps": p.optimizer_steps}  # fmt: skip
                if p.kind == "generate":
                    record.update(planned_tokens=p.tokens, decode_steps=p.decode_steps, tokens=p.sequences)
                passes.append(record)
        books[b.name] = {"status": "ok", "passes": passes}
    return {"schema": timings.SCHEMA, "notebooks": books}


def test_a_pass_over_model_made_texts_is_checked_as_a_range(smoke):
    """Notebook 05's projections over its rollouts run as many tokens as the rollouts have: any count between one
    generated token per rollout and the rollouts' limit agrees; fewer or more does not."""
    book = next(b for b in smoke.notebooks if b.name.startswith("05"))
    ranged = [p for p in book.passes if p.tokens_low is not None]
    assert len(ranged) == 1 and ranged[0].kind == "extract" and 0 < ranged[0].tokens_low < ranged[0].tokens
    exact = sum(p.tokens for p in book.passes if p.kind == "extract" and p.tokens_low is None)

    def run_with(tokens: int) -> list[str]:
        run = _as_timings(smoke)
        records = [r for r in run["notebooks"][book.name]["passes"] if r["kind"] == "extract"]
        for r in records:
            r["tokens"] = 0
        records[0]["tokens"] = exact + tokens
        return est.compare(smoke, run)

    low, high = ranged[0].tokens_low, ranged[0].tokens
    assert run_with(low) == [] and run_with(high) == [] and run_with((low + high) // 2) == []
    for outside in (int(low * 0.5) - exact, int(high * 1.2) + exact):
        problems = run_with(outside)
        assert len(problems) == 1 and book.name in problems[0] and "outside the estimated range" in problems[0]


def test_a_run_recorded_before_planned_sizes_is_refused():
    book = NotebookEstimate("04_x", [Pass("generate", "rollouts", 2, 100, 1, 10)])
    estimate = est.Estimate("smoke", est.rate_for(est.load_rates(), "cpu", None), [book])
    old = {"notebooks": {"04_x": {"status": "ok", "passes": [{"kind": "generate", "tokens": 20}]}}}
    with pytest.raises(SystemExit, match="planned_tokens"):
        est.compare(estimate, old)


def test_the_planner_is_the_engines(tiny, tmp_cache, tmp_path, monkeypatch):
    """Planted: an extraction and a generation run on the tiny model record the same sequences, tokens, batches
    and decode steps the planner gives for the same inputs, cached or not; and the planner batches with the
    engine's own planner (a planted planner changes its batches)."""
    from vaxis.core.extract import extract
    from vaxis.core.generate import generate

    model, tok = tiny
    path = tmp_path / "passes.jsonl"
    monkeypatch.setenv(timings.ENV_VAR, str(path))
    texts = ["alpha beta gamma delta " * k for k in (3, 9, 5, 12)]
    spans = [{"a": [(6, 16)], "b": [(len(t) // 2, len(t) // 2 + 5)]} for t in texts]
    chats = [[{"role": "user", "content": f"question {k}: " + "why " * k}] for k in (2, 7, 4)]
    for _ in range(2):  # computed, then read from the cache: the same planned sizes
        extract(model, tok, texts, spans, max_batch_tokens=64, progress=False)
        generate(model, tok, chats, max_new_tokens=5, temperature=0.7, n_samples=2, max_batch_tokens=48, progress=False)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["cached"] for r in records] == [False, False, True, True]
    plan = Planner(tok, "cpu")
    mine = plan.extract("planted", texts, spans, tag=None, max_batch_tokens=64)
    gen = plan.generate("planted", chats, 5, n_samples=2, temperature=0.7, max_batch_tokens=48)
    for r in records[0::2]:
        assert (r["sequences"], r["tokens"], r["batches"]) == (mine.sequences, mine.tokens, mine.batches)
    for r in records[1::2]:
        assert (r["sequences"], r["planned_tokens"], r["batches"], r["decode_steps"]) == (
            gen.sequences, gen.tokens, gen.batches, gen.decode_steps)  # fmt: skip
    assert mine.batches > 1 and gen.batches > 1 and gen.sequences == 6
    again = plan.extract("planted", texts, spans, tag=None, max_batch_tokens=64)
    plan.model = "an adapter"
    other = plan.extract("planted", texts, spans, tag=None, max_batch_tokens=64)
    assert not mine.cached and again.cached and not other.cached  # the same pass on the same model is read again

    def one_each(lengths, *_):
        return [[i] for i in range(len(lengths))]

    monkeypatch.setattr(sys.modules["vaxis.core.extract"], "plan_batches", one_each)  # vaxis.extract is also a function
    monkeypatch.setattr(sys.modules["vaxis.core.generate"], "plan_batches", one_each)
    assert plan.extract("planted", texts, spans, tag=1).batches == len(texts)
    assert plan.generate("planted", chats, 5).batches == len(chats)


def test_rates(tmp_path):
    table = est.load_rates()
    assert est.rate_for(table, "h200", "4bit").precision == "nf4"
    assert est.rate_for(table, "h200", None).precision == "bf16" and est.rate_for(table, "cpu", None).device == "cpu"
    with pytest.raises(SystemExit, match="no rates for --gpu"):
        est.rate_for(table, "a100", None)
    with pytest.raises(SystemExit, match="nf4"):
        est.rate_for(table, "cpu", "4bit")
    mine = tmp_path / "rates.toml"
    mine.write_text('[a100.bf16]\ndevice = "cuda"\nextract_tokens_per_s = 1000.0\ndecode_steps_per_s = 10\n'
                    'train_tokens_per_s = 300\nmodel_load_s = 30\n')  # fmt: skip
    rate = est.rate_for(est.load_rates(mine), "a100", None)
    p = Pass("generate", "x", sequences=4, tokens=400, batches=2, decode_steps=20, forward_tokens=200)
    assert rate.seconds(p) == pytest.approx(200 / 1000 + 20 / 10)
    p.cached = True
    assert rate.seconds(p) == 0


def test_optimizer_steps_follow_the_trainer():
    from vaxis.core.train import TrainSettings, optimizer_steps

    settings = TrainSettings(batch_size=8, epochs=1.0)
    assert optimizer_steps(16, settings) == 2 and optimizer_steps(17, settings) == 3
    assert optimizer_steps(17, settings.updated(epochs=2.5)) == math.ceil(2.5 * 3)
    assert optimizer_steps(5, settings.updated(grad_accum=4)) == 1  # at least one step an epoch


def test_the_runner_prints_an_estimate_and_runs_nothing(tmp_path, capsys):
    assert (
        main(["run", "--profile", "smoke", "--only", "02", "--estimate", "--gpu", "cpu", "--run-dir", str(tmp_path)])
        == 0
    )
    out = capsys.readouterr().out
    assert "02_extract_activations" in out and "01_synthesize_icrl" not in out and "| all |" in out
    assert not list(tmp_path.iterdir())  # nothing ran, nothing written
    with pytest.raises(SystemExit, match="--estimate"):
        main(["run", "--profile", "smoke", "--against", str(tmp_path)])
