"""Sharded passes under ``accelerate launch`` (vaxis.core.distributed), on the CPU with 2 gloo processes: sharded
extraction, generation and adapter training equal one process; a failing process fails the job with its own
error and a rerun resumes from the cache; a process whose inputs differ stops the job before anything is
merged; bad settings fail before any launch.

Each launch starts 2 Python processes that load the tiny model (a few seconds on 2 cores)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import vaxis
from vaxis.core import distributed, jobs
from vaxis.core.distributed import DistributedError

PLANTED = Path(__file__).with_name("planted_fault_job.py")
TEXTS = [f"word{i} " * (6 + 9 * i) for i in range(10)]
SPANS = [{"head": [(0, 12)], "rest": [(12, len(t) - 1)]} for t in TEXTS]
CHATS = [[{"role": "user", "content": t[: 30 + 5 * i]}] for i, t in enumerate(TEXTS[:6])]
EXTRACT = dict(max_batch_tokens=160, progress=False)
GENERATE = dict(max_new_tokens=6, temperature=1.0, n_samples=2, seed=3, max_batch_tokens=120, progress=False)


@pytest.fixture(scope="module")
def tiny64():
    """The tiny model in float64, loaded through vaxis.load_model so that each process can load it again."""
    return vaxis.load_model("tiny-qwen3", device="cpu", dtype=torch.float64)


@pytest.fixture
def planted(monkeypatch):
    """Launch jobs through tests/planted_fault_job.py with the fault named by the returned setter."""
    real = distributed.launch_command
    monkeypatch.setattr(distributed, "launch_command", lambda d, n, c=None, e=None: real(d, n, c, [str(PLANTED)]))
    return lambda fault: monkeypatch.setenv("VAXIS_PLANTED_FAULT", fault)


def _same_stats(a, b):
    assert a.names == b.names and a.layers == b.layers
    for n in a.names:
        assert torch.equal(a.sums[n], b.sums[n]) and torch.equal(a.norm_sums[n], b.norm_sums[n])
        assert torch.equal(a.counts[n], b.counts[n])
        # bit for bit (NaN where a layer has no directions)
        pairs = zip(a.projections[n], b.projections[n]) if a.projections is not None else []
        assert (a.projections is None) == (b.projections is None)
        assert all(torch.allclose(x, y, rtol=0, atol=0, equal_nan=True) for x, y in pairs)


def _only(kind: str) -> Path:
    (folder,) = (distributed.cache_root() / "jobs").glob(f"{kind}-*")
    return folder


def _reports(kind: str, key: str) -> list[dict]:
    folder = distributed.job_folder(kind, key)
    return [json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))]


def test_sharded_extraction_and_generation_equal_one_process(tiny64, tmp_cache):
    model, tok = tiny64
    directions = {1: torch.randn(3, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)}
    one = vaxis.extract(model, tok, TEXTS, SPANS, directions=directions, use_cache=False, **EXTRACT)
    two = vaxis.extract(model, tok, TEXTS, SPANS, directions=directions, processes=2, **EXTRACT)
    _same_stats(one, two)
    assert two.info["processes"] == 2
    reports = _reports("extract", two.info["cache_key"])
    assert [r["rank"] for r in reports] == [0, 1]
    assert all(r["tokens_this_process"] > 0 for r in reports)  # both processes did part of the work
    assert sum(r["tokens_this_process"] for r in reports) == one.info["tokens_processed"]
    assert not list((tmp_cache / "extract").glob("*.parts"))  # the batches were merged and cleaned up

    single = vaxis.generate(model, tok, CHATS, cache=False, **GENERATE)
    sharded = vaxis.generate(model, tok, CHATS, processes=2, **GENERATE)
    assert [(g.conversation, g.sample, g.token_ids, g.text) for g in single] == [
        (g.conversation, g.sample, g.token_ids, g.text) for g in sharded
    ]
    assert not list((tmp_cache / "generate").glob("*.partial*"))
    shares = [r["sequences_this_process"] for r in _reports("generate", Path(_only("generate")).name[9:])]
    assert min(shares) > 0 and sum(shares) == len(CHATS) * 2  # split, each sequence once


def test_a_failing_process_fails_the_job_and_a_rerun_resumes(tiny64, tmp_cache, planted):
    model, tok = tiny64
    planted("fail")
    with pytest.raises(DistributedError, match="planted failure in process 1") as err:
        vaxis.extract(model, tok, TEXTS, SPANS, processes=2, **EXTRACT)
    assert "rank1" in str(err.value) and "resumes" in str(err.value)
    assert not list((tmp_cache / "extract").glob("*.safetensors"))  # nothing merged
    assert list((tmp_cache / "extract").glob("*.parts/*.safetensors"))  # finished batches kept

    planted("none")
    two = vaxis.extract(model, tok, TEXTS, SPANS, processes=2, **EXTRACT)
    one = vaxis.extract(model, tok, TEXTS, SPANS, use_cache=False, **EXTRACT)
    _same_stats(one, two)
    rerun = sum(r["tokens_this_process"] for r in _reports("extract", two.info["cache_key"]))
    assert rerun < one.info["tokens_processed"]  # the batches finished before the failure were not run again


def test_a_process_with_another_model_stops_the_job_before_merging(tiny64, tmp_cache, planted):
    model, tok = tiny64
    planted("mismatch")
    with pytest.raises(DistributedError, match="hash to .*launching process"):
        vaxis.extract(model, tok, TEXTS, SPANS, processes=2, **EXTRACT)
    assert not list((tmp_cache / "extract").glob("*.safetensors"))


@pytest.mark.skipif(importlib.util.find_spec("trl") is None, reason="training needs the 'train' extra (trl, peft)")
def test_adapters_train_one_per_process_and_equal_one_process(tmp_cache, tmp_path, one_torch_thread):
    from safetensors.torch import load_file

    from vaxis.core import train
    from vaxis.experiments import preference_data as pdata

    settings = train.TrainSettings(epochs=1, batch_size=8, max_length=512, learning_rate=5e-3)
    rows = {w: pdata.dpo_pairs(pdata.choice_prompts("vegetables", 8, seed=0), w, "prefer", seed=0)
            for w in ("potato", "carrot")}  # fmt: skip
    calls = [dict(model_name="tiny-qwen3", rows=r, settings=settings, root=tmp_path / "two", name=w)
             for w, r in rows.items()]  # fmt: skip
    two = train.train_adapters(calls, processes=2)
    job = sorted((tmp_cache / "jobs").glob("train-*"))
    reports = [json.loads(p.read_text()) for p in sorted(job[0].glob("rank*.json"))]
    assert [(r["adapters"], r["trained_now"]) for r in reports] == [([0], [True]), ([1], [True])]
    assert not any(a.trained_now for a in two)  # read back here, not trained again
    one = train.train_adapter(**{**calls[1], "root": tmp_path / "one"})
    weights = [load_file(str(a.path / "adapter_model.safetensors")) for a in (two[1], one)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-6) for k in weights[0])


def test_bad_settings_fail_before_any_launch(tiny64, tmp_cache, tmp_path, monkeypatch):
    model, tok = tiny64
    monkeypatch.setattr(distributed, "available_processes", lambda: 2)
    with pytest.raises(DistributedError, match="processes=3, but this machine has 2"):
        vaxis.extract(model, tok, TEXTS, SPANS, processes=3, **EXTRACT)
    for bad in (0, 1.5, "2", True):
        with pytest.raises(DistributedError, match="give an int >= 1"):
            distributed.use_processes(bad)
    config = tmp_path / "two_machines.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_machines: 2\n"
                      "num_processes: 4\nmachine_rank: 0\n")  # fmt: skip
    with pytest.raises(DistributedError, match="does not exist"):
        distributed.use_processes(2, tmp_path / "missing.yaml")
    from vaxis.core.tiny import tiny_model_and_tokenizer

    bare, bare_tok = tiny_model_and_tokenizer("qwen3")  # not loaded through vaxis.load_model
    with pytest.raises(DistributedError, match="vaxis.load_model"):
        vaxis.extract(bare, bare_tok, TEXTS, SPANS, processes=2, **EXTRACT)
    with pytest.raises(ValueError, match="keep use_cache=True"):
        vaxis.extract(model, tok, TEXTS, SPANS, processes=2, use_cache=False, **EXTRACT)
    with pytest.raises(ValueError, match="keep cache=True"):
        vaxis.generate(model, tok, CHATS, processes=2, cache=False, **GENERATE)
    with pytest.raises(SystemExit, match="not a vaxis job folder"):
        jobs.job_main(tmp_path)
    assert not (tmp_cache / "jobs").exists()


def test_a_config_for_several_machines_writes_the_job_and_says_how_to_run_it(tiny64, tmp_cache, tmp_path, monkeypatch):
    model, tok = tiny64
    monkeypatch.setattr(distributed, "_defaults", dict(distributed._defaults))
    config = tmp_path / "two_machines.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_machines: 2\n"
                      "num_processes: 4\nmachine_rank: 0\nmain_process_ip: 10.0.0.1\n")  # fmt: skip
    distributed.use_processes(4, config)  # 4 processes on 2 machines: more than this one has is fine
    with pytest.raises(
        DistributedError, match="launches on 2 machines.*on every machine run `accelerate launch"
    ) as err:
        vaxis.extract(model, tok, TEXTS, SPANS, **EXTRACT)
    (folder,) = (tmp_cache / "jobs").glob("extract-*")
    assert f"-m vaxis job {folder}" in str(err.value) and (folder / "job.pt").exists()


def test_use_processes_sets_the_default_and_min_tokens(monkeypatch):
    monkeypatch.setattr(distributed, "available_processes", lambda: 4)
    monkeypatch.setattr(distributed, "_defaults", dict(distributed._defaults))
    assert distributed.processes_for(None, 10) == 1
    distributed.use_processes(3, min_tokens=100)
    assert distributed.processes_for(None, 10) == 1  # a small pass stays here
    assert distributed.processes_for(None, 100) == 3
    assert distributed.processes_for(2, 10) == 2  # an explicit count wins
    with distributed.alone():
        assert distributed.processes_for(None, 1000) == 1  # inside a job's process: never launch again


def test_alone_hides_and_restores_the_launch_variables(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with distributed.alone():
        import os

        assert "WORLD_SIZE" not in os.environ and "LOCAL_RANK" not in os.environ
    import os

    assert os.environ["WORLD_SIZE"] == "2" and os.environ["LOCAL_RANK"] == "1"


def test_launch_command_runs_vaxis_job_on_this_machine(tmp_path):
    cmd = distributed.launch_command(tmp_path, 2)
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[-4:] == ["-m", "vaxis", "job", str(tmp_path)]
    assert cmd[cmd.index("--num_processes") + 1] == "2" and "--multi_gpu" in cmd
    assert "--multi_gpu" not in distributed.launch_command(tmp_path, 1)


def test_shell_extract_under_accelerate_fills_the_cache_notebook_02_reads(tmp_cache, tmp_path):
    """`accelerate launch -m vaxis extract --run-dir R` (the cluster path): every pass of notebook 02, sharded;
    notebook 02's own call then finds each pass in the cache."""
    import subprocess

    from vaxis.data import icrl
    from vaxis.experiments.extraction import extract_run
    from vaxis.run.runner import main

    with pytest.raises(SystemExit, match="run notebook 01 first"):
        main(["extract", "--profile", "smoke", "--run-dir", str(tmp_path)])
    cfg = vaxis.resolve_config("smoke", run_dir=tmp_path)
    games, _ = icrl.generate_dataset(cfg["n_games"], seed=0, size=icrl.GameSize(**cfg["game_size"]))
    icrl.write_games(tmp_path / "games.jsonl", games)  # what notebook 01 writes
    cmd = distributed.launch_command(tmp_path, 2, entry=["-m", "vaxis", "extract", "--profile", "smoke", "--run-dir"])
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "notebook 02 reads them from the cache" in done.stdout
    ex = extract_run(cfg)
    assert len(ex.passes) == 2 and all(p.get("cached") for p in ex.passes)


def test_passes_are_timed_for_the_runner(tiny64, tmp_cache, tmp_path, monkeypatch):
    """extract and generate append one line per call to $VAXIS_TIMINGS (vaxis.core.timings; the runner's timings.json)."""
    from vaxis.core.timings import read_passes

    model, tok = tiny64
    log = tmp_path / "passes.jsonl"
    monkeypatch.setenv("VAXIS_TIMINGS", str(log))
    vaxis.extract(model, tok, TEXTS, SPANS, **EXTRACT)
    vaxis.extract(model, tok, TEXTS, SPANS, **EXTRACT)
    vaxis.generate(model, tok, CHATS, **GENERATE)
    passes = read_passes(log)
    assert [(p["kind"], p["cached"]) for p in passes] == [("extract", False), ("extract", True), ("generate", False)]
    assert passes[0]["tokens"] > 0 and passes[2]["tokens"] > 0 and passes[0]["processes"] == 1


def _planted_reports(folder: Path, reports: dict) -> None:
    """Write ``{rank: text or None}`` as error-rank<r>.txt (text) or rank<r>.json (None: finished), oldest
    first in the order given (1 ms apart, so that the file times order them)."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "launch.log").write_text("launch output\nthe last line of the launch log\n")
    for i, (rank, text) in enumerate(reports.items()):
        path = folder / (f"error-rank{rank}.txt" if text is not None else f"rank{rank}.json")
        path.write_text(text if text is not None else "{}")
        os.utime(path, ns=(10**18 + i * 10**6, 10**18 + i * 10**6))


LOST = "Traceback (most recent call last):\nRuntimeError: Connection closed by peer [127.0.0.1]:29500"


def test_the_failure_report_blames_the_process_that_failed_not_another(tmp_path):
    """Several processes report errors: the report names the one that failed first, with its own error, not the
    ones that lost their connection to it, nor the lowest rank, nor the last to write."""
    blame = distributed._failure_message
    # rank 0 lost its connection and wrote first; rank 2 raised the real error afterwards
    _planted_reports(tmp_path / "a", {0: LOST, 1: None, 2: "Traceback\nValueError: planted failure in rank 2"})
    text = blame("extract", tmp_path / "a", 1, processes=3)
    assert text.startswith("the sharded extract job failed in rank2 ") and "planted failure in rank 2" in text
    assert "processes reporting an error: rank0, rank2" in text and str(tmp_path / "a" / "launch.log") in text
    # two real errors: the first to fail (rank 3) is blamed, not rank 1 (lower) nor the later one
    _planted_reports(tmp_path / "b", {3: "Traceback\nOSError: disk full in rank 3", 0: None, 2: None,
                                      1: "Traceback\nKeyError: after rank 3 in rank 1"})  # fmt: skip
    text = blame("generate", tmp_path / "b", 1, processes=4)
    assert (
        text.startswith("the sharded generate job failed in rank3 ") and "disk full in rank 3" in text.splitlines()[0]
    )
    # only lost connections reported, and rank 1 left nothing at all (killed): rank 1 is blamed, not rank 0
    _planted_reports(tmp_path / "c", {0: LOST, 2: LOST})
    text = blame("extract", tmp_path / "c", -9, processes=3)
    assert text.startswith("the sharded extract job failed in rank1, which ended without a report")
    assert "the last line of the launch log" in text
    # no process reported: the launch log's tail
    _planted_reports(tmp_path / "d", {})
    assert "before any process reported an error" in blame("train", tmp_path / "d", 2, processes=2)
