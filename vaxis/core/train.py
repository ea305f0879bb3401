"""LoRA adapters trained with TRL (DPO and SFT), saved once and never silently reused.

:func:`train_adapter` trains one PEFT LoRA adapter with TRL's ``DPOTrainer`` (sigmoid DPO) or
``SFTTrainer`` (prompt-completion data, loss on the completion only) on a *fresh* copy of the base
model (TRL injects the LoRA layers into the model it is given, so a shared model object would be
changed under the caller's feet). The adapter is saved in PEFT's format under
``<root>/<name>-<key>/`` with a sidecar ``vaxis_adapter.json`` (the key, the base model's name and
fingerprint, quantization, settings, row count, metadata) and ``losses.jsonl`` (every logged step):

* ``key`` hashes the base model's identity (:func:`vaxis.core.identity.model_identity`: config and a
  digest of every weight, dtype, quantization), the training rows and the settings, so a rerun with
  the same inputs loads the saved adapter and a changed input trains a new one;
* training writes into a temporary sibling folder and the sidecar is written last, then the folder
  is renamed into place: an interrupted run leaves no folder that looks finished (a leftover
  temporary folder is removed on the next run);
* :func:`load_adapter` checks the sidecar's base identity against the model it is asked to wrap
  and refuses an adapter trained on another base model, with a message that says what to do.

Settings mirror the paper (METHOD.md section 5): LoRA r=16, alpha=32, dropout 0.05 on all linear
layers; sigmoid DPO with beta 0.1; cosine schedule; bf16 on a GPU (float32 on a CPU). Progress is
TRL's own (a tqdm bar per run); every logged step's loss goes to ``losses.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .cache import atomic_write_json, atomic_write_jsonl, stable_hash
from .chat import bound_template_kwargs, render_chat
from .model_folders import move_into_place

SIDECAR = "vaxis_adapter.json"
METHODS = ("dpo", "sft")


class AdapterMismatchError(ValueError):
    """An adapter was trained on another base model than the one it is loaded onto."""


@dataclass(frozen=True)
class TrainSettings:
    """What an adapter is trained with (every field enters the adapter's key)."""

    method: str = "dpo"
    r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"
    learning_rate: float = 5e-5
    scheduler: str = "cosine"
    epochs: float = 6.0
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    beta: float = 0.1
    precompute_ref: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}: use one of {METHODS}")
        positive = dict(r=self.r, batch_size=self.batch_size, epochs=self.epochs, learning_rate=self.learning_rate,
                        grad_accum=self.grad_accum, max_length=self.max_length, beta=self.beta,
                        lora_alpha=self.lora_alpha)  # fmt: skip
        bad = [k for k, v in positive.items() if not v > 0]
        if bad or not 0 <= self.lora_dropout < 1:
            raise ValueError(f"{bad or 'lora_dropout'} out of range (each must be > 0; 0 <= lora_dropout < 1): {self}")
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))

    def updated(self, **changes) -> TrainSettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class Adapter:
    """A trained adapter on disk: its folder, sidecar and whether this call trained it."""

    path: Path
    sidecar: dict
    trained_now: bool = False
    losses: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.sidecar["name"]


def _base_fingerprint(model, quantization) -> str:
    from .identity import model_identity

    return stable_hash(model_identity(model, quantization=quantization), 32)


def adapter_key(base_fingerprint: str, rows: list[dict], settings: TrainSettings, chat_template_kwargs=None) -> str:
    """The hash an adapter is stored under: base model, training rows, settings and the chat-template arguments
    its rows are rendered with (none: the same key as before they existed)."""
    parts = {"base": base_fingerprint, "rows": rows, "settings": asdict(settings)}
    if chat_template_kwargs:
        parts["chat_template_kwargs"] = chat_template_kwargs
    return stable_hash(parts, 16)


def read_sidecar(folder: str | Path) -> dict | None:
    """The sidecar of a finished adapter folder, or None when the folder is not a finished adapter."""
    path = Path(folder) / SIDECAR
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _trainer(model, tokenizer, rows, settings: TrainSettings, out: Path):
    """The TRL trainer for ``settings.method`` (imported here: TRL is the ``train`` extra)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig

    on_gpu = torch.cuda.is_available() and next(model.parameters()).is_cuda
    common = dict(
        output_dir=str(out), per_device_train_batch_size=settings.batch_size, num_train_epochs=settings.epochs,
        gradient_accumulation_steps=settings.grad_accum, learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.scheduler, max_length=settings.max_length, logging_steps=1, save_strategy="no",
        report_to="none", seed=settings.seed, bf16=on_gpu and torch.cuda.is_bf16_supported(), use_cpu=not on_gpu,
    )  # fmt: skip
    peft_config = LoraConfig(
        r=settings.r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout, task_type="CAUSAL_LM",
        target_modules=list(settings.target_modules) if isinstance(settings.target_modules, tuple)
        else settings.target_modules,
    )  # fmt: skip
    bound = bound_template_kwargs(tokenizer)
    # TRL renders conversational rows itself: its per-row `chat_template_kwargs` column carries the arguments
    data = Dataset.from_list([{**r, "chat_template_kwargs": bound} for r in rows] if bound else rows)
    if settings.method == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(beta=settings.beta, loss_type=["sigmoid"], precompute_ref_log_probs=settings.precompute_ref,
                         **common)  # fmt: skip
        return DPOTrainer(
            model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=peft_config
        )
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(completion_only_loss=True, **common)
    return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=peft_config)


def _check_rows(rows: list[dict], method: str) -> None:
    need = ("prompt", "chosen", "rejected") if method == "dpo" else ("prompt", "completion")
    if not rows:
        raise ValueError(f"no training rows for {method}: build the data first")
    for i, row in enumerate(rows):
        missing = [k for k in need if k not in row]
        if missing:
            raise ValueError(f"training row {i} lacks {missing}; {method} rows need {need}")


def _alive(pid: str) -> bool:
    """Whether process ``pid`` (text) is running on this machine (False for a malformed pid)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return int(pid) != os.getpid()


def optimizer_steps(n_rows: int, settings: TrainSettings) -> int:
    """The optimizer steps the Trainer under TRL takes on one process: ``ceil(epochs * max(ceil(batches /
    grad_accum), 1))`` with ``batches = ceil(n_rows / batch_size)`` (the last batch may be short), as
    transformers' ``Trainer`` computes ``max_steps`` from ``num_train_epochs``."""
    batches = math.ceil(n_rows / settings.batch_size)
    return math.ceil(settings.epochs * max(math.ceil(batches / settings.grad_accum), 1))


def rendered_lengths(tokenizer, rows: list[dict], method: str) -> list[list[int]]:
    """Per row, the token count of each sequence the trainer reads (prompt and answer rendered with the chat
    template): ``[chosen, rejected]`` for DPO, ``[completion]`` for SFT. One batched tokenizer call."""
    answers = ("chosen", "rejected") if method == "dpo" else ("completion",)
    texts = [render_chat(tokenizer, list(row["prompt"]) + list(row[a])).text for row in rows for a in answers]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    k = len(answers)
    return [[len(i) for i in ids[j : j + k]] for j in range(0, len(ids), k)]


def training_plan(tokenizer, rows: list[dict], settings: TrainSettings, lengths: list[list[int]] | None = None) -> dict:
    """What training ``rows`` costs, counted before any step (an adapter's timing record, and
    :mod:`vaxis.run.estimate` before a model is loaded): ``rows``, ``optimizer_steps`` (:func:`optimizer_steps`),
    ``tokens`` (every sequence the trainer reads over all epochs, each rendered with the chat template and cut
    at ``max_length``; DPO reads a chosen and a rejected sequence per row) and ``reference_tokens`` (DPO's
    reference model: one forward pass over every sequence before training when ``precompute_ref``, else
    one per step; 0 for SFT). ``lengths``: :func:`rendered_lengths` when the caller has them already."""
    lengths = rendered_lengths(tokenizer, rows, settings.method) if lengths is None else lengths
    per_epoch = sum(min(n, settings.max_length) for row in lengths for n in row)
    tokens = round(per_epoch * settings.epochs)
    reference = 0 if settings.method != "dpo" else per_epoch if settings.precompute_ref else tokens
    return {"rows": len(rows), "optimizer_steps": optimizer_steps(len(rows), settings), "tokens": tokens,
            "reference_tokens": reference}  # fmt: skip


def _record_training(tokenizer, rows, settings: TrainSettings, name: str, seconds: float, cached: bool,
                     lengths: list[list[int]]) -> None:  # fmt: skip
    """One ``train`` line in the run's timings (:func:`vaxis.core.timings.record_pass`), the same fields whether the
    adapter was trained now or loaded; nothing is counted when no timings are kept (``$VAXIS_TIMINGS`` unset)."""
    from .timings import ENV_VAR, record_pass

    if not os.environ.get(ENV_VAR):
        return
    plan = training_plan(tokenizer, rows, settings, lengths)
    record_pass("train", plan.pop("tokens"), seconds, cached=cached, adapter=name, method=settings.method, **plan)


def _too_long(lengths: list[list[int]], max_length: int) -> int:
    """How many rows render (prompt and chosen answer or completion, chat template) to more than ``max_length``
    tokens, from :func:`rendered_lengths`."""
    return sum(row[0] > max_length for row in lengths)


def train_adapter(
    model_name: str,
    rows: list[dict],
    settings: TrainSettings,
    root: str | Path,
    name: str,
    *,
    quantization: str | None = None,
    meta: dict | None = None,
    shared: str | Path | None = None,
    chat_template_kwargs: dict | None = None,
) -> Adapter:
    """Train (or load, when its key matches a finished folder) one LoRA adapter; see the module doc.

    ``rows``: TRL conversational rows (DPO: ``prompt``/``chosen``/``rejected``; SFT:
    ``prompt``/``completion``); only those keys are trained on, extra keys (ids, metadata) enter the
    key but not the trainer. ``name`` names the folder; ``meta`` is stored in the sidecar.
    ``shared``: an optional second folder (e.g. ``vaxis.core.cache.cache_root() / "adapters"``) where a
    finished adapter is also kept, so another ``root`` (another run folder) copies it instead of
    training again; copies are atomic too. ``chat_template_kwargs``: bound to the base model's tokenizer
    (:func:`vaxis.load_model`; ``None``: its default, ``enable_thinking=False`` for Qwen3), so TRL renders
    the rows as every readout does; they enter the key and the sidecar.
    """
    from .models import load_model

    _check_rows(rows, settings.method)
    root = Path(root)
    model, tokenizer = load_model(model_name, quantization=quantization, chat_template_kwargs=chat_template_kwargs)
    bound = bound_template_kwargs(tokenizer)
    lengths = rendered_lengths(tokenizer, rows, settings.method)  # once: the length check and the timing record
    _check_lengths(lengths, settings.max_length)
    base = _base_fingerprint(model, quantization)
    key = adapter_key(base, rows, settings, bound)
    folder = root / f"{name}-{key}"
    cached = Path(shared) / folder.name if shared else None
    done = _finished_folder(folder, key, cached)
    if done is not None:
        del model
        losses = [json.loads(x) for x in (folder / "losses.jsonl").read_text().splitlines() if x.strip()]
        _record_training(tokenizer, rows, settings, name, 0.0, cached=True, lengths=lengths)
        return Adapter(folder, done, False, losses)
    sidecar = {
        "name": name, "key": key, "base_model": model_name, "base_fingerprint": base, "quantization": quantization,
        "method": settings.method, "settings": asdict(settings), "n_rows": len(rows), "meta": meta or {},
        "chat_template_kwargs": bound,
    }  # fmt: skip
    seconds, losses = _train_into(folder, model, tokenizer, rows, settings, sidecar)
    if cached is not None:
        _copy_folder(folder, cached)
    _record_training(tokenizer, rows, settings, name, seconds, cached=False, lengths=lengths)
    return Adapter(folder, sidecar, True, losses)


def _check_lengths(lengths: list[list[int]], max_length: int) -> None:
    """A ValueError when every row renders to more than ``max_length`` tokens; a warning when some do."""
    long = _too_long(lengths, max_length)
    if long == len(lengths):
        raise ValueError(
            f"every training row is longer than max_length={max_length} tokens with this tokenizer, so TRL "
            "would truncate them all: raise max_length"
        )
    if long:
        warnings.warn(  # stacklevel 3: the caller of train_adapter
            f"{long} of {len(lengths)} rows exceed max_length={max_length} tokens and are truncated", stacklevel=3
        )


def _finished_folder(folder: Path, key: str, cached: Path | None) -> dict | None:
    """The sidecar of the finished adapter ``folder`` when its key is ``key``, copied first from ``cached`` (the
    shared folder) when only that one has it; None when the adapter is still to train."""
    if not _has_key(folder, key) and cached is not None and _has_key(cached, key):
        _copy_folder(cached, folder)
    done = read_sidecar(folder)
    return done if done is not None and done.get("key") == key else None


def _train_into(folder: Path, model, tokenizer, rows: list[dict], settings: TrainSettings, sidecar: dict):
    """``(seconds, losses)``: train the adapter in a temporary folder beside ``folder`` (those of runs that died
    removed first), write its losses and then its ``sidecar`` (last: a folder without it is not an adapter), and
    move it into place; a failure removes the temporary folder."""
    root = folder.parent
    tmp = root / f".{folder.name}.tmp-{os.getpid()}"
    for stale in root.glob(f".{folder.name}.tmp-*"):
        if not _alive(stale.name.rsplit("-", 1)[-1]):  # left by a run that died; a live one keeps its folder
            shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        keep = ("prompt", "chosen", "rejected") if settings.method == "dpo" else ("prompt", "completion")
        trainer = _trainer(model, tokenizer, [{k: r[k] for k in keep} for r in rows], settings, tmp / "trainer")
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        trainer.model.save_pretrained(tmp)
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        losses = [
            {k: v for k, v in h.items() if isinstance(v, (int, float))}
            for h in trainer.state.log_history
            if "loss" in h
        ]
        atomic_write_jsonl(tmp / "losses.jsonl", losses)
        atomic_write_json(tmp / SIDECAR, sidecar)  # last: a folder without it is not an adapter
        move_into_place(tmp, folder, lambda f: _has_key(f, sidecar["key"]))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return seconds, losses


def train_adapters(calls: list[dict], processes: int | None = None) -> list[Adapter]:
    """:func:`train_adapter` for each dict of keyword arguments in ``calls``, in order.

    With ``processes`` > 1 (or :func:`vaxis.core.distributed.use_processes`'s setting) they are trained by that
    many processes under ``accelerate launch``: adapter ``i`` by process ``i mod processes``, each alone on its
    own GPU (no DDP), then read back here; every adapter is exactly the one a single process trains (same
    rows, settings and seed), and adapters finished before are loaded, not trained again."""
    from . import distributed

    calls = [dict(c) for c in calls]
    todo = [c for c in calls if not _maybe_finished(c)]
    n_proc = min(distributed.processes_for(processes), len(todo))
    if n_proc > 1:
        for c in todo:
            _check_rows(c["rows"], c["settings"].method)
            c["root"] = str(Path(c["root"]).resolve())
        key = stable_hash(
            [
                [c["name"], str(c["root"]), adapter_key("", c["rows"], c["settings"], c.get("chat_template_kwargs"))]
                for c in todo
            ],
            24,
        )
        distributed.run_job("train", {"calls": todo}, key, n_proc)
    return [train_adapter(**c) for c in calls]


def _maybe_finished(call: dict) -> bool:
    """Whether an adapter of this name, settings and row count is finished under ``root``: then no job is
    launched for it (:func:`train_adapter`, which checks the full key, trains it here if it was another)."""
    sidecars = [read_sidecar(f) or {} for f in Path(call["root"]).glob(f"{call['name']}-*")]
    return any(s.get("settings") == asdict(call["settings"]) and s.get("n_rows") == len(call["rows"]) for s in sidecars)


def _copy_folder(src: Path, dst: Path) -> None:
    """Copy a finished adapter folder to ``dst`` atomically (a temporary sibling, then a rename)."""
    tmp = dst.parent / f".{dst.name}.copy-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, tmp)
    move_into_place(tmp, dst, lambda f: _has_key(f, (read_sidecar(src) or {}).get("key")))


def _has_key(folder: Path, key: str | None) -> bool:
    """Whether ``folder`` is a finished adapter with this key (another process's, left in place)."""
    return key is not None and (read_sidecar(folder) or {}).get("key") == key


def load_adapter(model, folder: str | Path, quantization: str | None = None):
    """``model`` (a freshly loaded base model) wrapped with the adapter in ``folder`` (PEFT), in eval
    mode. Raises :class:`AdapterMismatchError` if the adapter was trained on another base model, and
    FileNotFoundError for a folder that is not a finished adapter."""
    from peft import PeftModel

    sidecar = read_sidecar(folder)
    if sidecar is None:
        raise FileNotFoundError(f"{folder} is not a finished vaxis adapter (no {SIDECAR}); train it with train_adapter")
    have = _base_fingerprint(model, quantization)
    if have != sidecar["base_fingerprint"]:
        raise AdapterMismatchError(
            f"adapter {folder} was trained on base model {sidecar['base_model']!r} "
            f"(fingerprint {sidecar['base_fingerprint'][:12]}), but the model given has fingerprint {have[:12]}: "
            "load the base model it was trained on (same weights, dtype and quantization), or retrain it"
        )
    wrapped = PeftModel.from_pretrained(model, str(folder)).eval()
    source = getattr(model, "_vaxis_source", None)
    if source is not None:  # how vaxis.core.distributed loads it again in another process
        wrapped._vaxis_source = {**source, "adapters": [*source.get("adapters", []), str(Path(folder).resolve())]}
    return wrapped


def finished_adapters(folder: str | Path, base_model: str | None = None) -> dict[str, Path]:
    """``{name: folder}`` of the finished adapters under ``folder`` (e.g. ``run_dir/adapters``), the newest
    (by sidecar time) when one name was trained with several settings, optionally only those trained on
    ``base_model``. A missing folder gives ``{}``."""
    found: dict[str, tuple[float, Path]] = {}
    for sub in sorted(Path(folder).glob("*")) if Path(folder).is_dir() else []:
        side = read_sidecar(sub)
        if side is None or (base_model is not None and side.get("base_model") != base_model):
            continue
        when = (Path(sub) / SIDECAR).stat().st_mtime
        if side["name"] not in found or when > found[side["name"]][0]:
            found[side["name"]] = (when, sub)
    return {name: path for name, (_, path) in sorted(found.items())}
