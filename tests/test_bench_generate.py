"""benchmarks/generate.py: decode steps counted by its hooks, the floor's bandwidth table, the long case's stop
set, and both cases end to end on the tiny model, with and without the engine's ``refill`` / ``compile`` keywords."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from pathlib import Path

import pytest
import torch

import vaxis

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    """benchmarks/generate.py as a module (it puts the repository and benchmarks/ on sys.path: undone after)."""
    path, name = list(sys.path), "bench_generate"
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "generate.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    sys.path[:] = path
    yield module
    sys.modules.pop(name, None)


def test_decode_steps_counts_one_column_forwards(bench, tiny):
    model, tokenizer = tiny
    chats = bench.prompts(3)
    with bench.DecodeSteps(model) as steps:
        gens = vaxis.generate(model, tokenizer, chats, max_new_tokens=6, cache=False, progress=False)
    # one batch: a prompt pass gives every row its first token, then one decode step per further token
    assert steps.prompt == 1
    assert steps.decode == max(g.n_new_tokens for g in gens) - 1
    assert not model._forward_pre_hooks and not model.get_input_embeddings()._forward_pre_hooks


def test_decode_steps_are_graph_replays_when_there_are_any(bench, tiny):
    model, _ = tiny
    replay = torch.cuda.CUDAGraph.replay
    with bench.DecodeSteps(model) as steps:
        model(input_ids=torch.tensor([[5]]))  # an eager one-column forward (e.g. a capture's warm-up)
        assert steps.decode == 1 and steps.replays == 0
        for _ in range(3):
            with pytest.raises(Exception):  # noqa: B017 (no CUDA here: the wrapped replay counts, then fails)
                torch.cuda.CUDAGraph.replay(None)
    assert (steps.replays, steps.decode, steps.eager) == (3, 3, 1) and "1 eager" in steps.note
    assert torch.cuda.CUDAGraph.replay is replay


def test_floor_table_and_weight_bytes(bench, tiny):
    assert bench.nominal_bandwidth_gbs("NVIDIA H200") == 4800
    assert bench.nominal_bandwidth_gbs("NVIDIA H100 80GB HBM3") == 3350
    assert bench.nominal_bandwidth_gbs("NVIDIA H100 PCIe") == 2000
    assert bench.nominal_bandwidth_gbs("NVIDIA A100-SXM4-80GB") == 2039
    assert bench.nominal_bandwidth_gbs("Tesla T4") is None
    model, _ = tiny
    assert bench.weight_bytes(model) == sum(p.numel() * p.element_size() for p in model.parameters())
    assert bench.decode_floor(model, torch.device("cpu"), None) is None
    assert bench.decode_floor(model, torch.device("cpu"), 1.0) == pytest.approx(1e9 / bench.weight_bytes(model))


def test_random_stops_are_seeded_and_eos_is_restored(bench, tiny):
    model, _ = tiny
    n = bench.vocab_size(model)
    stops = bench.random_stops(model, 0.25, seed=3)
    assert stops == bench.random_stops(model, 0.25, seed=3) != bench.random_stops(model, 0.25, seed=4)
    assert len(stops) == round(0.25 * n) and len(set(stops)) == len(stops) and max(stops) < n
    before = model.generation_config.eos_token_id
    with pytest.raises(RuntimeError), bench.eos_ids(model, stops):
        assert model.generation_config.eos_token_id == stops
        raise RuntimeError
    assert model.generation_config.eos_token_id == before


def _with_signature(real, add=(), drop=()):
    """``real`` with keywords ``add`` accepted (passed on where ``real`` has them) and ``drop`` absent."""
    have = inspect.signature(real).parameters

    def wrapper(*args, **kwargs):
        assert not set(drop) & set(kwargs)
        return real(*args, **{k: v for k, v in kwargs.items() if k in have})

    params = [p for name, p in have.items() if name not in drop]
    params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None) for k in add if k not in have]
    wrapper.__signature__ = inspect.Signature(params)
    return wrapper


@pytest.mark.parametrize("keywords", ["absent", "present"])
def test_both_cases_run(bench, monkeypatch, capsys, keywords):
    """Absent: an engine without refill / compile / engine keywords (the one before refilling); present: with
    refill and compile (accepted and dropped where the engine lacks them) and engine where it has it."""
    real = bench.generate
    optional = ("refill", "compile", "engine")
    fake = _with_signature(real, drop=optional) if keywords == "absent" else _with_signature(real, add=optional[:2])
    has = set(inspect.signature(fake).parameters)
    monkeypatch.setattr(bench, "generate", fake)
    common = ["--model", "tiny-qwen3", "--device", "cpu", "--n-prompts", "4", "--bandwidth-gbs", "10"]
    bench.main([*common, "--max-new-tokens", "5"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("generate: speedup_vs_sequential=")
    fields = [f.split("=")[0] for f in out[-1].split()[1:]]
    assert fields[:5] == ["speedup_vs_sequential", "tokens_per_s", "peak_rss_mb", "decode_steps_per_s", "floor_share"]
    assert fields[5:] == [f"{label}_tokens_per_s" for k, _, label in bench.ALTERNATIVES if k in has]
    assert any(line.startswith("exact match: tokens ") for line in out)
    assert "unknown" not in out[-1]
    bench.main([*common, "--case", "long", "--long-max-new-tokens", "24"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("generate_long: tokens_per_s=")
    assert ("refill_speedup=n/a" in out[-1]) == (keywords == "absent")
    assert sum(line.startswith("long refill=") for line in out) == (4 if keywords == "present" else 0)
    assert sum(line.startswith("long grouped:") for line in out) == (2 if keywords == "absent" else 0)
