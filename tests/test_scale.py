"""The scale profile (the paper's sizes on a random-weight Qwen3-8B), profile inheritance, the runner's CUDA
refusal and dry run, run timings and their table. Nothing here runs a notebook or allocates 8B parameters."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import tomllib
import torch

from vaxis.core import model_folders, models, timings
from vaxis.run import runner
from vaxis.run.config import PROFILE_DIR, REPO_ROOT, load_profile, resolve
from vaxis.run.runner import notebooks

# --------------------------------------------------------------------------- profile inheritance


def _write(folder: Path, name: str, text: str) -> None:
    (folder / f"{name}.toml").write_text(text)


def test_inherit_takes_the_parent_and_replaces_its_own_keys(tmp_path):
    _write(tmp_path, "base", 'model = "a"\nn = 1\nsizes = [1, 2]\ndescription = "base"\n')
    _write(tmp_path, "child", 'inherit = "base"\nn = 2\nextra = true\n')
    _write(tmp_path, "grandchild", 'inherit = "child"\nmodel = "b"\n')
    assert load_profile("child", tmp_path) == {"model": "a", "n": 2, "sizes": [1, 2], "description": "base",
                                               "extra": True}  # fmt: skip
    assert load_profile("grandchild", tmp_path) == {**load_profile("child", tmp_path), "model": "b"}
    assert "inherit" not in load_profile("grandchild", tmp_path)


def test_inherit_cycles_and_unknown_parents_are_clear_errors(tmp_path):
    _write(tmp_path, "a", 'inherit = "b"\nn = 1\n')
    _write(tmp_path, "b", 'inherit = "a"\nn = 2\n')
    _write(tmp_path, "self", 'inherit = "self"\n')
    _write(tmp_path, "orphan", 'inherit = "nope"\n')
    _write(tmp_path, "typed", "inherit = 3\n")
    with pytest.raises(ValueError, match="inheritance cycle a -> b -> a"):
        load_profile("a", tmp_path)
    with pytest.raises(ValueError, match="inheritance cycle self -> self"):
        load_profile("self", tmp_path)
    with pytest.raises(ValueError, match="profile 'orphan' says inherit = 'nope', which is not a profile"):
        load_profile("orphan", tmp_path)
    with pytest.raises(ValueError, match="must be a profile name"):
        load_profile("typed", tmp_path)
    with pytest.raises(ValueError, match="unknown profile 'missing'"):
        load_profile("missing", tmp_path)


# --------------------------------------------------------------------------- the scale profile


def test_scale_is_the_paper_profile_with_another_model(tmp_path):
    raw = tomllib.loads((PROFILE_DIR / "scale.toml").read_text())
    # written once: scale.toml sets only what differs, everything else comes from paper.toml
    assert set(raw) == {"inherit", "description", "model", "quantization", "requires"} and raw["inherit"] == "paper"
    scale, paper = load_profile("scale"), load_profile("paper")
    differ = {k for k in scale.keys() | paper.keys() if scale.get(k) != paper.get(k)}
    assert differ <= {"model", "quantization", "description", "requires"} and "model" in differ
    assert (scale["model"], scale["quantization"], scale["requires"]) == ("qwen3-8b-random", "4bit", "cuda")
    assert "mean nothing" in scale["description"] and "real" in scale["description"]
    cfg = resolve("scale", run_dir=tmp_path)
    assert (cfg.model, cfg.quantization) == ("qwen3-8b-random", "4bit")
    assert cfg["n_games"] == paper["n_games"] and cfg["confidence_samples"] == paper["confidence_samples"] == 100
    assert cfg["requires"] == "cuda"


# Keys of the scale profile that the smoke profile (run end to end by tests/test_notebooks.py) does not carry with
# a value of the same type, and why that is safe. Anything else missing or of another type fails the test below.
NOT_EXERCISED_BY_SMOKE = {
    "requires": "read by the runner only (the CUDA refusal), never by a notebook",
    "n_games": "a {construction, held_out} table in paper/scale, an int in smoke; icrl.generate_dataset takes both",
    "chat_template_kwargs": "unset in smoke (its ChatML template takes none); the paper_ci profile, which .ci/run "
    "executes, carries the paper's",
}


def test_every_scale_key_is_exercised_by_the_smoke_profile():
    """The smoke profile runs every notebook, so each key it carries with the scale profile's type is accepted."""
    scale, smoke = load_profile("scale"), load_profile("smoke")
    missing = sorted(k for k in scale if k not in smoke)
    retyped = sorted(k for k in scale if k in smoke and type(scale[k]) is not type(smoke[k]))
    item_types = sorted(
        k
        for k in scale
        if isinstance(scale[k], list) and scale[k] and smoke.get(k) and {type(x) for x in scale[k]} != {type(x) for x in smoke[k]}
    )  # fmt: skip
    assert sorted(missing + retyped + item_types) == sorted(NOT_EXERCISED_BY_SMOKE), (missing, retyped, item_types)


def test_the_paper_n_games_table_form_generates_each_split():
    """n_games, the one key smoke does not exercise in the paper's form: the table, scaled down to a tenth."""
    from vaxis.data import icrl

    plan = {split: max(1, n // 10) for split, n in load_profile("scale")["n_games"].items()}
    games, report = icrl.generate_dataset(plan, seed=0, size=icrl.GameSize(**load_profile("smoke")["game_size"]))
    assert report["by_split"] == plan and {g.split for g in games} == set(plan)


# --------------------------------------------------------------------------- the runner: CUDA refusal and dry run


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def no_notebooks(monkeypatch):
    """papermill.execute_notebook fails the test: nothing here may run a notebook."""
    import papermill

    def refuse(*args, **kwargs):
        raise AssertionError("a notebook was started")

    monkeypatch.setattr(papermill, "execute_notebook", refuse)


def test_run_refuses_a_cuda_profile_without_cuda(no_cuda, no_notebooks, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as err:
        runner.run("scale", run_dir=run_dir)
    message = str(err.value)
    assert "profile 'scale' needs a CUDA GPU" in message and "mean nothing" in message
    assert "--profile demo" in message and "--dry-run" in message
    assert not run_dir.exists()  # refused before anything was started or written


def test_dry_run_accepts_the_scale_profile_in_every_notebook(no_cuda, no_notebooks, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert runner.run("scale", run_dir=run_dir, parameters={"seed": 1}, dry_run_only=True) == []
    out = capsys.readouterr().out
    names = [p.stem for p in notebooks()]
    assert len(names) == 10
    for name in names:
        assert f"[dry run] {name}: ok, profile scale, model qwen3-8b-random (4bit)" in out, name
    assert "10 notebook(s) accept profile 'scale'" in out
    assert not run_dir.exists()  # nothing was run or written


def test_dry_run_names_each_notebook_without_a_parameter(no_cuda, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        runner.run("scale", run_dir=tmp_path, parameters={"bogus_knob": 3}, dry_run_only=True)
    message = str(err.value)
    assert all(f"{p.stem}: no parameter bogus_knob" in message for p in notebooks())
    # a parameter only some notebooks have: the others are named, and only they
    with pytest.raises(SystemExit) as err:
        runner.run("scale", run_dir=tmp_path, only=["01", "02", "03"], parameters={"axis_path": "x"}, dry_run_only=True)
    message = str(err.value)
    assert "01_synthesize_icrl: no parameter axis_path" in message and "02_extract_activations" in message
    assert "03_fit_axis: no parameter" not in message  # 03 takes it, and its own check reads it: "x" is no axis
    assert "[dry run] 03_fit_axis: FAILED, 1 problem(s) in its parameters" in capsys.readouterr().out


def test_dry_run_reports_a_profile_that_does_not_resolve(no_cuda, tmp_path):
    with pytest.raises(SystemExit, match="does not resolve: quantization='8bit'"):
        runner.run("scale", run_dir=tmp_path, parameters={"quantization": "8bit"}, dry_run_only=True)
    with pytest.raises(SystemExit, match="does not resolve: unknown model 'qwen9-random'"):
        runner.run("scale", run_dir=tmp_path, parameters={"model": "qwen9-random"}, dry_run_only=True)


# --------------------------------------------------------------------------- timings


def test_record_pass_writes_nothing_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(timings.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert timings.record_pass("extract", 100, 1.0, False) is None
    assert list(tmp_path.iterdir()) == []


def test_record_pass_appends_one_line_per_pass(monkeypatch, tmp_path, no_cuda):
    path = tmp_path / "timings" / "02.jsonl"
    monkeypatch.setenv(timings.ENV_VAR, str(path))
    timings.record_pass("extract", 1000, 2.0, False, texts=4)
    timings.record_pass("generate", 50, 0.0, True)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert (first["kind"], first["tokens"], first["seconds"], first["tokens_per_s"], first["cached"]) == (
        "extract", 1000, 2.0, 500.0, False)  # fmt: skip
    assert first["texts"] == 4 and first["peak_gpu_mb"] is None and first["peak_rss_mb"] > 0 and first["time"] > 0
    assert second["cached"] is True and second["tokens_per_s"] is None  # no division by zero
    assert timings.read_passes(path) == lines


def test_record_pass_never_fails_the_caller(monkeypatch, tmp_path):
    monkeypatch.setenv(timings.ENV_VAR, str(tmp_path))  # a folder: appending to it is an OSError
    with pytest.warns(UserWarning, match="could not append"):
        record = timings.record_pass("extract", 10, 1.0, False)
    assert record["tokens"] == 10


def _entry(wall, status, tokens):
    passes = [{"kind": "extract", "tokens": tokens, "seconds": 2.0, "cached": False, "peak_gpu_mb": 7000.0,
               "peak_rss_mb": 3000.0}, {"kind": "extract", "tokens": 5000, "seconds": 0.1, "cached": True,
               "peak_gpu_mb": 7500.0, "peak_rss_mb": 2900.0}]  # fmt: skip
    machine = {"gpu": "NVIDIA H200", "gpu_count": 1, "cpu_count": 16}
    return timings.notebook_entry(wall, status, "scale", "qwen3-8b-random", "4bit", passes, machine)


def test_notebook_entry_sums_the_passes():
    e = _entry(12.5, "ok", 1000)
    assert (e["tokens"], e["uncached_tokens"], e["uncached_seconds"]) == (6000, 1000, 2.0)
    assert (e["peak_gpu_mb"], e["peak_rss_mb"], e["gpu"], e["cpu_count"]) == (7500.0, 3000.0, "NVIDIA H200", 16)


def test_the_runner_gives_each_notebook_its_timings_file_and_restores_the_variable(tmp_path, monkeypatch, no_cuda):
    """run() with papermill replaced by a stand-in that records a pass, as vaxis.extract does in the kernel."""
    import papermill

    seen = []

    def fake_execute(path, out, **kwargs):
        seen.append(os.environ[timings.ENV_VAR])
        timings.record_pass("extract", 100, 0.5, False)
        if "02_" in path:
            raise papermill.PapermillExecutionError(0, 1, "boom", "RuntimeError", "boom", [])

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.setenv(timings.ENV_VAR, "outer")
    runner.run("smoke", only=["01"], run_dir=tmp_path)
    with pytest.raises(SystemExit):
        runner.run("smoke", only=["02"], run_dir=tmp_path)
    assert seen == [str(tmp_path / "timings" / f"{n}.jsonl") for n in ("01_synthesize_icrl", "02_extract_activations")]
    assert os.environ[timings.ENV_VAR] == "outer"  # restored after each notebook
    entries = json.loads((tmp_path / "timings.json").read_text())["notebooks"]
    assert (entries["01_synthesize_icrl"]["status"], entries["02_extract_activations"]["status"]) == ("ok", "failed")
    assert entries["01_synthesize_icrl"]["tokens"] == 100 and entries["01_synthesize_icrl"]["model"] == "tiny-qwen3"


def test_a_relative_run_dir_gives_the_kernel_an_absolute_timings_path(tmp_path, monkeypatch, no_cuda):
    """The kernel runs in notebooks/: a relative run folder must still collect its passes (not notebooks/runs/...)."""
    import papermill

    seen = []

    def fake_execute(path, out, **kwargs):
        seen.append((os.environ[timings.ENV_VAR], kwargs["parameters"]["run_dir"]))
        timings.record_pass("extract", 100, 0.5, False)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    monkeypatch.chdir(tmp_path)
    runner.run("smoke", only=["01"], run_dir="rel-run")
    assert seen == [(str(tmp_path / "rel-run" / "timings" / "01_synthesize_icrl.jsonl"), str(tmp_path / "rel-run"))]
    entry = json.loads((tmp_path / "rel-run" / "timings.json").read_text())["notebooks"]["01_synthesize_icrl"]
    assert entry["tokens"] == 100


def test_a_run_stopped_by_sigterm_keeps_the_notebook_timings(tmp_path, monkeypatch, no_cuda):
    """`timeout` (benchmarks/gpu_scale.sh) stops a run with SIGTERM: the notebook is recorded as interrupted."""
    import signal
    import time

    import papermill

    def fake_execute(path, out, **kwargs):
        timings.record_pass("generate", 64, 1.0, False)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("SIGTERM was not turned into an exception")

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        runner.run("smoke", only=["04"], run_dir=tmp_path)
    assert signal.getsignal(signal.SIGTERM) == before  # the runner's handler is removed again
    entry = json.loads((tmp_path / "timings.json").read_text())["notebooks"]["04_task_confidence"]
    assert entry["status"] == "interrupted" and entry["tokens"] == 64 and entry["wall_seconds"] < 5


def test_the_runner_keeps_other_notebooks_timings(tmp_path, no_cuda):
    timings.update_run_timings(tmp_path, "01_synthesize_icrl", _entry(3.0, "ok", 10))
    timings.update_run_timings(tmp_path, "02_extract_activations", _entry(60.0, "ok", 1000))
    passes = tmp_path / "timings" / "02_extract_activations.jsonl"
    passes.parent.mkdir()
    passes.write_text(json.dumps({"kind": "extract", "tokens": 77, "seconds": 1.0, "cached": False,
                                  "peak_gpu_mb": None, "peak_rss_mb": 10.0}) + "\n{torn")  # fmt: skip
    cfg = resolve("smoke", run_dir=tmp_path)
    # a rerun of notebook 02 alone (--only 02) replaces its entry and keeps 01's
    runner._record_notebook(tmp_path, Path("02_extract_activations.ipynb"), 5.0, "failed", "smoke", cfg, passes)
    data = json.loads((tmp_path / "timings.json").read_text())
    assert set(data["notebooks"]) == {"01_synthesize_icrl", "02_extract_activations"}
    assert data["notebooks"]["01_synthesize_icrl"] == json.loads(json.dumps(_entry(3.0, "ok", 10)))
    rerun = data["notebooks"]["02_extract_activations"]
    assert (rerun["status"], rerun["wall_seconds"], rerun["tokens"]) == ("failed", 5.0, 77)
    assert rerun["model"] == "tiny-qwen3" and rerun["profile"] == "smoke"
    assert rerun["gpu"] == "cpu" and len(rerun["passes"]) == 1  # the torn line is skipped
    assert not list(tmp_path.glob(".timings.json.*"))  # written atomically, no temporary file left
    (tmp_path / "timings.json").write_text("{not json")
    with pytest.warns(UserWarning, match="could not be read"):
        timings.update_run_timings(tmp_path, "03_fit_axis", _entry(1.0, "ok", 1))
    assert set(json.loads((tmp_path / "timings.json").read_text())["notebooks"]) == {"03_fit_axis"}


def _timings_table():
    spec = importlib.util.spec_from_file_location("timings_table", REPO_ROOT / "scripts" / "timings_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_timings_table_renders_a_planted_run(tmp_path, capsys):
    timings.update_run_timings(tmp_path, "01_synthesize_icrl", _entry(3.0, "ok", 10))
    timings.update_run_timings(tmp_path, "02_extract_activations", _entry(1234.0, "interrupted", 1000))
    assert _timings_table().main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Machine: NVIDIA H200, 16 CPU cores; profile scale, model qwen3-8b-random (4bit)." in out
    assert "| notebook | wall time | passes | tokens | tokens/s (uncached passes) | peak GPU memory | peak RSS |" in out
    # tokens/s counts only the passes that ran the model: 1000 tokens in 2 s, not the 5000 cached ones
    assert "| 02_extract_activations (interrupted) | 1,234 s | 2 | 6,000 | 500 | 7,500 MB | 3,000 MB |" in out
    assert "| all | 1,237 s | 4 | 11,010 | | 7,500 MB | 3,000 MB |" in out


def test_timings_table_says_what_is_missing(tmp_path):
    with pytest.raises(SystemExit, match=r"timings.json not found: `python -m vaxis run --run-dir"):
        _timings_table().main([str(tmp_path)])


# --------------------------------------------------------------------------- qwen3-8b-random


@pytest.fixture
def embedded_only_cache(tmp_path, monkeypatch):
    """VAXIS_CACHE in tmp_path with only the embedded SmolLM2 folder linked in, so what the random alias writes
    (its tokenizer folder, its saved weights) stays in tmp_path."""
    real = models.cache_root() / "models"
    monkeypatch.setenv("VAXIS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "models").mkdir(parents=True)
    for folder in real.glob("smollm2-135m-instruct-*") if real.exists() else []:
        (tmp_path / "cache" / "models" / folder.name).symlink_to(folder)
    return tmp_path / "cache"


def test_qwen3_8b_random_refuses_a_cpu(no_cuda, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("the 8B model must not be built here")

    monkeypatch.setattr(model_folders, "build_random", no_build)
    with pytest.raises(models.ModelLoadError, match=r"needs a CUDA GPU.*'tiny-qwen3'.*'smollm2-135m'"):
        models.load_model("qwen3-8b-random")
    with pytest.raises(models.ModelLoadError, match="need a CUDA GPU"):  # 4-bit on an explicit CPU: bitsandbytes
        models.load_model("qwen3-8b-random", quantization="4bit", device="cpu")


def test_qwen3_8b_random_has_the_qwen3_8b_architecture(embedded_only_cache):
    config = models.random_config()
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.vocab_size) == (
        "qwen3", 36, 4096, 151936)  # fmt: skip
    assert (config.intermediate_size, config.num_attention_heads, config.num_key_value_heads) == (12288, 32, 8)
    model, tokenizer = models.load_model("qwen3-8b-random", device="meta")  # shapes only, no memory
    assert all(p.device.type == "meta" for p in model.parameters())
    assert 8.1e9 < sum(p.numel() for p in model.parameters()) < 8.3e9
    assert model.config._name_or_path == "vaxis/qwen3-8b-random" and model.config.num_hidden_layers == 36
    # the embedded SmolLM2 tokenizer: every id it makes is a row of Qwen3's embedding
    assert len(tokenizer) == 49152 < model.config.vocab_size and tokenizer.chat_template
    assert model.config.eos_token_id == tokenizer.eos_token_id == model.generation_config.eos_token_id
    text = "Is this the right answer? Yes."
    assert tokenizer(text).input_ids == models.load_tokenizer("smollm2-135m")(text).input_ids
    assert models.random_tokenizer_dir().parent == embedded_only_cache / "models"


TINY_QWEN3 = dict(model_folders.QWEN3_8B, vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=16)  # fmt: skip


def test_qwen3_8b_random_is_seeded(embedded_only_cache, monkeypatch):
    monkeypatch.setattr(model_folders, "QWEN3_8B", TINY_QWEN3)  # the same code path at a size a test can build
    a, _ = models.load_model("qwen3-8b-random", device="cpu", seed=0)
    b, _ = models.load_model("qwen3-8b-random", device="cpu", seed=0)
    c, _ = models.load_model("qwen3-8b-random", device="cpu", seed=1)
    wa, wb, wc = (m.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.config._name_or_path == "vaxis/qwen3-8b-random"


def test_the_saved_random_weights_are_written_once_and_atomically(embedded_only_cache, monkeypatch):
    monkeypatch.setattr(model_folders, "QWEN3_8B", TINY_QWEN3)
    folder = models.random_model_dir("qwen3-8b-random", seed=3, device="cpu")
    assert folder == embedded_only_cache / "models" / "qwen3-8b-random-seed3"
    assert (folder / "config.json").exists() and list(folder.glob("*.safetensors"))
    assert not list(folder.parent.glob("*.partial*"))
    meta = json.loads((folder / "vaxis_manifest.json").read_text())
    assert meta["seed"] == 3 and "config.json" in meta["files"]

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a complete copy must be reused")

    with monkeypatch.context() as m:
        m.setattr(model_folders, "build_random", no_rebuild)
        assert models.random_model_dir("qwen3-8b-random", seed=3, device="cpu") == folder
    # a torn copy (a file shorter than the manifest says) is built again
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    assert not model_folders.sizes_ok(folder)
    assert models.random_model_dir("qwen3-8b-random", seed=3, device="cpu") == folder and model_folders.sizes_ok(folder)
    assert not list(folder.parent.glob("*.partial*"))
