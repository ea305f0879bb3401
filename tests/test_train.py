"""LoRA adapters trained with TRL (vaxis.core.train): train once and load after, keys that follow every input,
interrupted runs that leave nothing finished-looking, the base-model check on load, SFT, row and settings
errors; plus atomic_write's file permissions and mean_ci (vaxis.core.cache, vaxis.core.evaluate).

Training runs on the tiny random Qwen3 ("tiny-qwen3") with 8-16 rows, batch 8, 1 epoch: a few seconds each."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import shutil
import stat
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vaxis.core import train
from vaxis.core.cache import atomic_write, atomic_write_json, atomic_write_text
from vaxis.core.evaluate import mean_ci
from vaxis.experiments import preference_data as pdata

MODEL = "tiny-qwen3"
needs_trl = pytest.mark.skipif(
    importlib.util.find_spec("trl") is None or importlib.util.find_spec("peft") is None,
    reason="training needs the 'train' extra (trl, peft)",
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rows(n: int = 16) -> list[dict]:
    return pdata.dpo_pairs(pdata.choice_prompts("vegetables", n, seed=0), "potato", "prefer", seed=0)


def _settings(**changes) -> train.TrainSettings:
    return train.TrainSettings(epochs=1, batch_size=8, max_length=512, learning_rate=5e-3).updated(**changes)


def _base(seed: int = 0):
    from vaxis.core.models import load_model

    return load_model(MODEL, seed=seed)


class _Refused(Exception):
    """Raised by a stand-in trainer: the call would have trained."""


def _refuse(seen: list):
    """A ``_trainer`` stand-in that records the temporary folder it was given and refuses to train."""

    def trainer(model, tokenizer, rows, settings, out):
        seen.append(Path(out).parent.name)
        raise _Refused

    return trainer


def _key_of_tmp(name: str, adapter_name: str = "dpo") -> str:
    """The key in a temporary folder name ``.{name}-{key}.tmp-{pid}``."""
    assert name.startswith(f".{adapter_name}-") and ".tmp-" in name, name
    return name[len(adapter_name) + 2 :].split(".tmp-")[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One DPO adapter trained on 16 rows (2 steps) at a high learning rate, so its effect is visible."""
    if importlib.util.find_spec("trl") is None:
        pytest.skip("training needs the 'train' extra (trl, peft)")
    root = tmp_path_factory.mktemp("adapters")
    rows, settings = _rows(16), _settings()
    adapter = train.train_adapter(MODEL, rows, settings, root, "dpo", meta={"note": "test"})
    return SimpleNamespace(root=root, rows=rows, settings=settings, adapter=adapter)


# --------------------------------------------------------------------------------------------------
# train once, load after


@needs_trl
def test_dpo_trains_once_and_writes_adapter_sidecar_and_losses(trained):
    a, rows, settings = trained.adapter, trained.rows, trained.settings
    assert a.trained_now
    key = a.sidecar["key"]
    assert a.path == trained.root / f"dpo-{key}" and a.name == "dpo"
    files = {p.name for p in a.path.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", train.SIDECAR, "losses.jsonl"} <= files
    assert "trainer" not in files  # TRL's output folder is removed
    assert sorted(p.name for p in trained.root.iterdir()) == [f"dpo-{key}"]  # no temporary folder left

    side = json.loads((a.path / train.SIDECAR).read_text())
    assert side == a.sidecar == train.read_sidecar(a.path)
    base = train._base_fingerprint(_base()[0], None)
    assert side["base_fingerprint"] == base and side["base_model"] == MODEL and side["quantization"] is None
    assert side["key"] == train.adapter_key(base, rows, settings)
    assert side["method"] == "dpo" and side["n_rows"] == 16 and side["meta"] == {"note": "test"}
    assert side["settings"] == asdict(settings)

    losses = [json.loads(line) for line in (a.path / "losses.jsonl").read_text().splitlines()]
    n_steps = math.ceil(len(rows) / settings.batch_size) * int(settings.epochs)
    assert [x["step"] for x in losses] == list(range(1, n_steps + 1))  # one logged loss per step
    assert all(math.isfinite(x["loss"]) for x in losses)
    assert losses == a.losses


@needs_trl
def test_same_inputs_load_without_training(trained, monkeypatch):
    monkeypatch.setattr(train, "_trainer", _refuse([]))
    again = train.train_adapter(MODEL, trained.rows, trained.settings, trained.root, "dpo", meta={"note": "test"})
    assert not again.trained_now
    assert again.path == trained.adapter.path and again.sidecar == trained.adapter.sidecar
    assert again.losses == trained.adapter.losses


@needs_trl
def test_changed_row_setting_or_base_model_trains_under_a_new_key(trained, monkeypatch):
    key = trained.adapter.sidecar["key"]
    seen: list = []
    monkeypatch.setattr(train, "_trainer", _refuse(seen))
    rows = [dict(r) for r in trained.rows]
    rows[3] = {**rows[3], "chosen": [{"role": "assistant", "content": "I'd pick potato. It is round."}]}

    def attempt(rows=trained.rows, settings=trained.settings):
        with pytest.raises(_Refused):
            train.train_adapter(MODEL, rows, settings, trained.root, "dpo")

    attempt(rows=rows)  # one row changed
    attempt(settings=trained.settings.updated(learning_rate=1e-3))  # one setting changed
    from vaxis.core import models

    load = models.load_model
    monkeypatch.setattr(models, "load_model", lambda name, **kw: load(name, **{**kw, "seed": 1}))
    attempt()  # another base model (a tiny Qwen3 initialised from another seed)
    monkeypatch.setattr(models, "load_model", load)
    monkeypatch.setattr(train, "_base_fingerprint", lambda model, quantization: "another-base")
    attempt()  # another base fingerprint

    keys = [_key_of_tmp(name) for name in seen]
    assert len(keys) == 4 and len(set(keys)) == 4 and key not in keys
    # the refused runs left nothing behind, and the finished adapter is untouched
    assert sorted(p.name for p in trained.root.iterdir()) == [f"dpo-{key}"]
    assert train.read_sidecar(trained.adapter.path) == trained.adapter.sidecar


def _changed(field: dataclasses.Field):
    value = getattr(train.TrainSettings(), field.name)
    if field.name == "method":
        return "sft"
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 if value else 1
    return ("q_proj",) if field.name == "target_modules" else value + "-other"


@pytest.mark.parametrize("field", dataclasses.fields(train.TrainSettings), ids=lambda f: f.name)
def test_adapter_key_follows_every_setting(field):
    rows, s = _rows(4), train.TrainSettings()
    key = train.adapter_key("base", rows, s)
    assert train.adapter_key("base", rows, train.TrainSettings()) == key  # deterministic
    assert train.adapter_key("base", rows, dataclasses.replace(s, **{field.name: _changed(field)})) != key


def test_adapter_key_follows_base_and_rows():
    rows, s = _rows(4), train.TrainSettings()
    key = train.adapter_key("base", rows, s)
    assert train.adapter_key("other", rows, s) != key
    assert train.adapter_key("base", rows[:3], s) != key
    assert train.adapter_key("base", rows[::-1], s) != key
    assert train.adapter_key("base", [{**rows[0], "id": "x"}, *rows[1:]], s) != key  # extra keys count too


# --------------------------------------------------------------------------------------------------
# interrupted training


@needs_trl
def test_interrupted_training_leaves_nothing_that_looks_finished(trained, tmp_path, monkeypatch):
    rows, settings, key = trained.rows, trained.settings, trained.adapter.sidecar["key"]
    root = tmp_path / "adapters"
    real = train._trainer

    # 1. interrupted inside TRL's train(): the cleanup removes the temporary folder
    during: list = []

    def interrupted(model, tokenizer, rows_, settings_, out):
        trainer = real(model, tokenizer, rows_, settings_, out)

        def stop():
            during.extend(p.relative_to(root) for p in root.rglob("*"))
            raise KeyboardInterrupt

        trainer.train = stop
        return trainer

    monkeypatch.setattr(train, "_trainer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.train_adapter(MODEL, rows, settings, root, "dpo")
    assert during and all(p.name != train.SIDECAR for p in during)  # nothing looked finished mid-training
    assert _key_of_tmp(during[0].parts[0]) == key
    assert list(root.iterdir()) == []

    # 2. a crash the cleanup never sees (a killed process): the leftover folder is not a finished adapter
    monkeypatch.setattr(train, "_trainer", lambda *a: SimpleNamespace(train=lambda: 1 / 0))
    monkeypatch.setattr(train, "shutil", SimpleNamespace(rmtree=lambda *a, **kw: None))
    with pytest.raises(ZeroDivisionError):
        train.train_adapter(MODEL, rows, settings, root, "dpo")
    (left,) = root.iterdir()
    assert left.name.startswith(f".dpo-{key}.tmp-")
    assert train.read_sidecar(left) is None and not list(left.rglob(train.SIDECAR))

    # 3. another process's stale temporary folder and a final-named folder without a sidecar
    stale = root / f".dpo-{key}.tmp-999999"
    stale.mkdir()
    (stale / "adapter_model.safetensors").write_bytes(b"partial")
    half = root / f"dpo-{key}"
    shutil.copytree(trained.adapter.path, half)
    (half / train.SIDECAR).unlink()
    assert train.read_sidecar(half) is None
    with pytest.raises(FileNotFoundError, match=r"not a finished vaxis adapter.*train_adapter"):
        train.load_adapter(_base()[0], half)

    # 4. the next call trains cleanly, removes the leftovers and replaces the unfinished folder
    monkeypatch.setattr(train, "shutil", shutil)
    monkeypatch.setattr(train, "_trainer", real)
    again = train.train_adapter(MODEL, rows, settings, root, "dpo")
    assert again.trained_now and again.path == half
    assert sorted(p.name for p in root.iterdir()) == [f"dpo-{key}"]
    assert train.read_sidecar(half)["key"] == key and (half / "losses.jsonl").exists()


@needs_trl
def test_an_adapter_another_process_finished_first_is_left_in_place(trained, tmp_path, monkeypatch):
    """Two processes training the same adapter at once (two notebooks, two test workers): the one finishing second
    keeps the first one's folder as it is (a reader of it never sees it vanish) and drops its own copy."""
    rows, settings, key = trained.rows, trained.settings, trained.adapter.sidecar["key"]
    root = tmp_path / "adapters"
    folder = root / f"dpo-{key}"
    real = train._trainer

    def neighbour_finishes_meanwhile(model, tokenizer, rows_, settings_, out):
        trainer = real(model, tokenizer, rows_, settings_, out)
        train_for_real = trainer.train

        def train_():
            result = train_for_real()
            shutil.copytree(trained.adapter.path, folder)  # the other process's finished adapter
            (folder / "theirs").write_text("read by someone")
            return result

        trainer.train = train_
        return trainer

    monkeypatch.setattr(train, "_trainer", neighbour_finishes_meanwhile)
    adapter = train.train_adapter(MODEL, rows, settings, root, "dpo")
    assert adapter.path == folder and (folder / "theirs").read_text() == "read by someone"
    assert sorted(p.name for p in root.iterdir()) == [folder.name]  # our copy dropped, nothing left aside


# --------------------------------------------------------------------------------------------------
# load_adapter


def _forward(model, tokenizer):
    ids = tokenizer("The river flows through the valley, past the old mill.", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    return out.hidden_states, out.logits


@needs_trl
def test_load_adapter_changes_outputs_after_the_embedding(trained):
    from peft import PeftModel

    base, tok = _base()
    h0, logits0 = _forward(base, tok)
    wrapped = train.load_adapter(_base()[0], trained.adapter.path)
    assert isinstance(wrapped, PeftModel) and not wrapped.training
    h1, logits1 = _forward(wrapped, tok)
    assert torch.equal(h0[0], h1[0])  # the embedding is not adapted
    for layer in range(1, len(h0)):
        assert (h0[layer] - h1[layer]).abs().max() > 1e-4, layer
    assert (logits0 - logits1).abs().max() > 1e-4
    h2, _ = _forward(wrapped, tok)
    assert all(torch.equal(a, b) for a, b in zip(h1, h2))  # eval mode: no dropout


@needs_trl
def test_load_adapter_refuses_another_base_model(trained):
    model, _ = _base()
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] += 1.0  # one weight changed in place
    with pytest.raises(train.AdapterMismatchError, match="load the base model it was trained on") as err:
        train.load_adapter(model, trained.adapter.path)
    assert MODEL in str(err.value) and isinstance(err.value, ValueError)
    assert not any("lora" in n for n, _ in model.named_modules())  # left unwrapped
    with pytest.raises(train.AdapterMismatchError):
        train.load_adapter(_base(seed=1)[0], trained.adapter.path)


# --------------------------------------------------------------------------------------------------
# SFT, row checks, settings


def _sft_rows(n: int = 8) -> list[dict]:
    return [{"id": r["id"], "prompt": r["prompt"], "completion": r["chosen"]} for r in _rows(n)]


@needs_trl
def test_sft_trains_and_saves(tmp_path):
    a = train.train_adapter(MODEL, _sft_rows(8), _settings(method="sft"), tmp_path, "sft")
    assert a.trained_now and a.sidecar["method"] == "sft" and a.path.name == f"sft-{a.sidecar['key']}"
    assert {"adapter_config.json", "adapter_model.safetensors", train.SIDECAR, "losses.jsonl"} <= {
        p.name for p in a.path.iterdir()
    }
    assert len(a.losses) == 1 and math.isfinite(a.losses[0]["loss"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [a.path.name]
    assert not train.load_adapter(_base()[0], a.path).training


@pytest.mark.parametrize(
    ("method", "rows", "match"),
    [
        pytest.param("sft", _rows(2), r"lacks \['completion'\].*sft rows need", id="dpo-rows-for-sft"),
        pytest.param("dpo", [{"prompt": [], "chosen": []}], r"lacks \['rejected'\].*dpo rows need", id="no-rejected"),
        pytest.param("sft", [{"completion": []}], r"lacks \['prompt'\]", id="no-prompt"),
        pytest.param("dpo", [], "no training rows for dpo", id="empty-dpo"),
        pytest.param("sft", [], "no training rows for sft", id="empty-sft"),
    ],
)
def test_bad_rows_raise_naming_what_is_needed(tmp_path, method, rows, match):
    with pytest.raises(ValueError, match=match):
        train.train_adapter(MODEL, rows, _settings(method=method), tmp_path, "x")
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


@needs_trl
@pytest.mark.parametrize("method", ["dpo", "sft"])
def test_rows_all_longer_than_max_length_raise(tmp_path, monkeypatch, method):
    monkeypatch.setattr(train, "_trainer", _refuse([]))
    rows = _rows(2) if method == "dpo" else _sft_rows(2)
    with pytest.raises(ValueError, match="raise max_length"):
        train.train_adapter(MODEL, rows, _settings(method=method, max_length=8), tmp_path, "x")


@needs_trl
def test_some_rows_too_long_warns_and_trains(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "_trainer", _refuse([]))
    rows = _rows(2)
    rows[1] = {**rows[1], "chosen": [{"role": "assistant", "content": "potato " * 600}]}
    with pytest.warns(UserWarning, match="1 of 2 rows exceed max_length=512"), pytest.raises(_Refused):
        train.train_adapter(MODEL, rows, _settings(), tmp_path, "x")


@pytest.mark.parametrize(
    "changes",
    [{"method": "ppo"}, {"r": 0}, {"batch_size": 0}, {"epochs": 0}, {"epochs": -1.0}, {"learning_rate": 0.0},
     {"learning_rate": -1e-5}],
    ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()),
)  # fmt: skip
def test_train_settings_validation(changes):
    with pytest.raises(ValueError, match="method=|must be positive"):
        train.TrainSettings(**changes)


def test_train_settings_updated_and_list_modules():
    s = train.TrainSettings()
    assert s.updated(learning_rate=None, r=None) == s
    assert s.updated(learning_rate=1e-4).learning_rate == 1e-4 and s.learning_rate == 5e-5
    listed = train.TrainSettings(target_modules=["q_proj", "v_proj"])
    assert listed.target_modules == ("q_proj", "v_proj") and hash(listed)
    with pytest.raises(ValueError, match="method="):
        s.updated(method="grpo")


# --------------------------------------------------------------------------------------------------
# atomic_write permissions


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_open_permissions(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths = [
            atomic_write_text(tmp_path / "a.txt", "x"),
            atomic_write_json(tmp_path / "b.json", {"a": 1}),
            atomic_write(tmp_path / "c.bin", lambda tmp: Path(tmp).write_bytes(b"\0")),
        ]
    finally:
        os.umask(old)
    assert [stat.S_IMODE(p.stat().st_mode) for p in paths] == [mode] * 3


def test_atomic_write_failure_leaves_no_file(tmp_path):
    def fail(tmp):
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "x.txt", fail)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# mean_ci


def test_mean_ci_brackets_the_mean():
    x = np.random.default_rng(0).normal(2.0, 1.0, 60)
    m, lo, hi = mean_ci(x, n_boot=300, seed=1)
    assert m == pytest.approx(x.mean()) and lo < m < hi
    assert hi - lo == pytest.approx(2 * 1.96 * x.std(ddof=1) / np.sqrt(len(x)), rel=0.35)
    assert mean_ci(x, n_boot=300, seed=1) == (m, lo, hi)  # seeded


def test_mean_ci_edge_cases():
    m, lo, hi = mean_ci([0.7])
    assert m == 0.7 and np.isnan(lo) and np.isnan(hi)
    assert mean_ci(np.ones(5)) == (1.0, 1.0, 1.0)
    assert mean_ci([0, 0, 0.0]) == (0.0, 0.0, 0.0)
    assert all(np.isnan(v) for v in mean_ci([]))
    assert all(np.isnan(v) for v in mean_ci([np.nan, np.nan]))
    m, lo, hi = mean_ci([1.0, np.nan, 3.0, np.nan, 2.0, 4.0])
    assert m == 2.5 and lo <= m <= hi and np.isfinite([lo, hi]).all()
    m, lo, hi = mean_ci([1.0, np.nan, 1.0])
    assert (m, lo, hi) == (1.0, 1.0, 1.0)


@needs_trl
def test_shared_folder_serves_another_run_without_training(tmp_path, monkeypatch):
    """An adapter trained with ``shared=`` is copied (not retrained) into another run folder."""
    rows, settings = _rows(8), _settings()
    first = train.train_adapter(MODEL, rows, settings, tmp_path / "run1", "dpo", shared=tmp_path / "shared")
    assert (
        first.trained_now and train.read_sidecar(tmp_path / "shared" / first.path.name)["key"] == first.sidecar["key"]
    )
    seen: list = []
    monkeypatch.setattr(train, "_trainer", _refuse(seen))
    second = train.train_adapter(MODEL, rows, settings, tmp_path / "run2", "dpo", shared=tmp_path / "shared")
    assert not second.trained_now and not seen and second.path.parent == tmp_path / "run2"
    assert train.read_sidecar(second.path) == first.sidecar and second.losses == first.losses
    assert not [p for p in (tmp_path / "run2").iterdir() if p.name.startswith(".")]  # no copy left half-done
    with pytest.raises(_Refused):  # without the shared folder, a new run folder would train
        train.train_adapter(MODEL, rows, settings, tmp_path / "run3", "dpo")


def test_finished_adapters_take_the_newest_per_name_and_skip_unfinished(tmp_path):
    import os

    def make(folder, name, base, when):
        (tmp_path / folder).mkdir()
        side = tmp_path / folder / train.SIDECAR
        side.write_text(json.dumps({"name": name, "base_model": base}))
        os.utime(side, (when, when))

    make("prefer-a-1", "prefer-a", "m", 100)
    make("prefer-a-2", "prefer-a", "m", 200)
    make("prefer-a-0", "prefer-a", "m", 50)
    make("other-1", "other", "another-model", 300)
    (tmp_path / "half-done").mkdir()  # no sidecar: not finished
    (tmp_path / ".tmp-x").mkdir()
    assert train.finished_adapters(tmp_path, base_model="m") == {"prefer-a": tmp_path / "prefer-a-2"}
    assert set(train.finished_adapters(tmp_path)) == {"prefer-a", "other"}
    assert train.finished_adapters(tmp_path / "missing") == {}
