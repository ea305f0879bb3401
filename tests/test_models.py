"""Model names resolve, fail clearly offline, and the embedded model's cache is verified."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

import vaxis
from vaxis.core.chat import ChatTemplateError, render_chat, require_chat_template
from vaxis.core.model_folders import manifest_ok
from vaxis.core.models import ModelLoadError, embedded_model_dir, load_model, resolve
from vaxis.core.tiny import tiny_tokenizer


def test_resolve_aliases_ids_and_folders(tmp_path):
    assert resolve("smollm2-135m")[0] == "embedded"
    assert resolve("tiny-qwen3") == ("tiny", "qwen3")
    assert resolve("qwen3-8b") == ("hub", "Qwen/Qwen3-8B")
    assert resolve("Qwen/Qwen3-8B") == ("hub", "Qwen/Qwen3-8B")
    (tmp_path / "config.json").write_text("{}")
    assert resolve(str(tmp_path)) == ("local", str(tmp_path))


@pytest.mark.parametrize("name", ["not-a-model", "./missing/folder", "", "a/b/c"])
def test_unknown_model_names(name):
    with pytest.raises(ModelLoadError, match="unknown model|non-empty"):
        resolve(name)


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve(str(tmp_path))


def test_hub_names_fail_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ["qwen3-8b", "Qwen/Qwen3-8B", "meta-llama/Llama-3.1-8B-Instruct"]:
        with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE.*smollm2-135m"):
            load_model(name, device="cpu")


def test_4bit_without_cuda_says_what_to_do():
    # device="cpu" forces the no-GPU case, so this runs on machines with CUDA too
    with pytest.raises(ModelLoadError, match="need a CUDA GPU.*quantization=None"):
        load_model("tiny-qwen3", quantization="4bit", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="need a CUDA GPU.*quantization=None"):
            load_model("tiny-qwen3", quantization="4bit")
    with pytest.raises(ModelLoadError, match="not supported"):
        load_model("tiny-qwen3", quantization="8bit")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="4-bit loading needs a CUDA GPU (none visible)")
def test_4bit_tiny_model_is_really_quantized_on_cuda():
    bnb = pytest.importorskip("bitsandbytes", reason="4-bit loading needs bitsandbytes: pip install -e '.[gpu]'")
    model, tokenizer = load_model("tiny-qwen3", quantization="4bit")
    full, _ = load_model("tiny-qwen3")
    assert getattr(model, "is_loaded_in_4bit", False)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert model.config._name_or_path == "vaxis/core/tiny-qwen3"
    enc = tokenizer("The river flows.", return_tensors="pt").to(model.device)
    with torch.no_grad():
        logits = model(**enc).logits
    assert torch.isfinite(logits).all()
    ident = vaxis.model_identity(model)
    assert ident["quantization"] == "4bit"
    assert ident == vaxis.model_identity(model) == vaxis.model_identity(model, refresh=True)
    assert ident["weights"] != vaxis.model_identity(full)["weights"]


def test_tiny_alias_is_seeded():
    a, _ = load_model("tiny-qwen3", seed=0)
    b, _ = load_model("tiny-qwen3", seed=0)
    c, _ = load_model("tiny-qwen3", seed=1)
    wa, wb, wc = (m.get_input_embeddings().weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert vaxis.model_identity(a) == vaxis.model_identity(b) != vaxis.model_identity(c)


def test_missing_chat_template_is_an_error():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ChatTemplateError, match="no chat template"):
        require_chat_template(tokenizer)
    with pytest.raises(ChatTemplateError):
        render_chat(tokenizer, [{"role": "user", "content": "hi"}])


def test_render_chat_offsets_are_exact_and_checked():
    tokenizer = tiny_tokenizer()
    msgs = [
        {"role": "system", "content": "Rules."},
        {"role": "user", "content": "Paragraph: the bus (us) left."},
        {"role": "assistant", "content": "<thinking>colon?</thinking>\nThe bus: left."},
        {"role": "user", "content": "The bus: left."},
    ]
    rendered = render_chat(tokenizer, msgs)
    for (start, end), m in zip(rendered.message_spans, msgs):
        assert rendered.text[start:end] == m["content"]
    assert rendered.text == tokenizer.apply_chat_template(msgs, tokenize=False)
    # identical contents in two messages are still told apart
    assert rendered.message_spans[2][0] < rendered.message_spans[3][0]
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] | trim }}\n{% endfor %}"
    with pytest.raises(ChatTemplateError, match="differently"):
        render_chat(tokenizer, [{"role": "user", "content": " padded "}])


def test_embedded_model_loads_and_chats(smol):
    model, tokenizer = smol
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert tokenizer.is_fast and tokenizer.chat_template
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, prompt["input_ids"].shape[1] :])


def test_embedded_cache_manifest_detects_damage(tmp_path):
    folder = embedded_model_dir()
    assert manifest_ok(folder)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("model.safetensors"))
    (copy / "model.safetensors").symlink_to(folder / "model.safetensors")
    assert manifest_ok(copy)
    config = copy / "config.json"
    config.write_text(config.read_text().replace("576", "577"))
    assert not manifest_ok(copy)
    (copy / "vaxis_manifest.json").unlink()
    assert not manifest_ok(copy)


def test_embedded_cache_is_rebuilt_when_damaged(tmp_path, monkeypatch):
    """A damaged or half-written folder is rebuilt, an intact one reused (converter stubbed: it takes 20 s)."""
    import vaxis.core.model_folders as model_folders
    import vaxis.core.models as models

    monkeypatch.setenv("VAXIS_CACHE", str(tmp_path))
    conversions = []

    def fake_convert(gguf, out):
        conversions.append(out)
        out.mkdir(parents=True)
        (out / "config.json").write_text('{"hidden_size": 576}')
        (out / "model.safetensors").write_bytes(b"weights" * 100)

    monkeypatch.setattr(model_folders, "convert_gguf", fake_convert)
    folder = models.embedded_model_dir()
    assert len(conversions) == 1 and manifest_ok(folder)
    assert models.embedded_model_dir() == folder and len(conversions) == 1  # intact: reused
    (folder / "model.safetensors").write_bytes(b"weights" * 99)  # truncated
    assert models.embedded_model_dir() == folder and len(conversions) == 2
    assert manifest_ok(folder)
    (folder / "config.json").write_text('{"hidden_size": 1}')  # same size? no: edited content
    models.embedded_model_dir()
    assert len(conversions) == 3
    assert not list(tmp_path.rglob("*.partial*"))


def test_embedded_cache_converted_by_two_processes_at_once(tmp_path):
    """Two processes converting into a fresh cache at the same time (two test workers, two notebooks) both end
    with an intact folder, and neither deletes the other's half-written copy (converter stubbed, slowed down)."""
    script = """
import time
import vaxis.core.model_folders as model_folders
import vaxis.core.models as models

def slow_convert(gguf, out):
    out.mkdir(parents=True)
    (out / "config.json").write_text('{"hidden_size": 576}')
    time.sleep(3.0)  # the other process starts its own conversion meanwhile
    (out / "model.safetensors").write_bytes(b"weights" * 100)

model_folders.convert_gguf = slow_convert
folder = models.embedded_model_dir()
print(models.manifest_ok(folder))
"""
    env = {**os.environ, "VAXIS_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["True", "True"]
    (folder,) = (tmp_path / "models").iterdir()
    assert manifest_ok(folder) and not list(tmp_path.rglob("*.partial*"))
