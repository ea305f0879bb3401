"""One process of a sharded job: ``accelerate launch -m vaxis job <folder>`` (see :mod:`vaxis.core.distributed`).

The launching side (job folders, ``accelerate launch``, the failure report) and the primitives a process of a job
uses (its shard, barriers, its share of the work) live in :mod:`vaxis.core.distributed`, which imports none of the
passes; this module is the worker side, which runs them: it loads the job's model again (:func:`load_source`) and
runs its share of the extraction, generation or adapter training, writing ``rank<r>.json`` (or
``error-rank<r>.txt`` with its traceback)."""

from __future__ import annotations

import os
import socket
import time
import traceback
from pathlib import Path

from . import distributed
from .cache import atomic_write_json, atomic_write_text


def load_source(source: dict):
    """``(model, tokenizer)`` from :func:`vaxis.core.distributed.model_source`'s description, on this process's
    device."""
    import torch

    from .models import load_model
    from .train import load_adapter

    model, tokenizer = load_model(source["name"], quantization=source["quantization"],
                                  dtype=getattr(torch, source["dtype"]), seed=source.get("seed", 0),
                                  chat_template_kwargs=source.get("chat_template_kwargs"))  # fmt: skip
    for folder in source.get("adapters", []):
        model = load_adapter(model, folder, source["quantization"])
    return model, tokenizer


def job_main(job_dir: str | os.PathLike) -> int:
    """Entry point of one process of a job (``accelerate launch -m vaxis job <folder>``)."""
    import torch

    folder = Path(job_dir)
    if not (folder / distributed.JOB_FILE).exists():
        raise SystemExit(f"{folder} is not a vaxis job folder (no {distributed.JOB_FILE}); notebooks write them with "
                         "processes > 1")  # fmt: skip
    rank = int(os.environ.get("RANK", "0"))
    distributed.pin_device()
    start = time.perf_counter()
    try:
        job = torch.load(folder / distributed.JOB_FILE, weights_only=False)
        if job["kind"] == "train":
            report = train_share(job, rank, int(os.environ.get("WORLD_SIZE", "1")))
        else:
            with distributed.process_group():
                report = pass_share(job)
        report.update(rank=rank, seconds=time.perf_counter() - start, host=socket.gethostname())
        atomic_write_json(folder / f"rank{rank}.json", report)
    except BaseException:
        atomic_write_text(folder / f"error-rank{rank}.txt", traceback.format_exc())
        raise
    return 0


def pass_share(job: dict) -> dict:
    """This process's share of an extraction or generation job; its report (the cache key and what it did)."""
    from .extract import extract
    from .generate import generate

    model, tokenizer = load_source(job["model"])
    call = extract if job["kind"] == "extract" else generate
    distributed.reset_share()
    call(model, tokenizer, **job["kwargs"], expect_key=job["key"])
    return {"key": job["key"], **distributed.share_counts()}


def train_share(job: dict, rank: int, world: int) -> dict:
    """The adapters ``rank, rank + world, ...`` of a training job, each trained alone; its report."""
    from .train import train_adapter

    mine = list(range(rank, len(job["calls"]), world))
    trained = []
    with distributed.alone():
        for i in mine:
            trained.append(bool(train_adapter(**job["calls"][i]).trained_now))
    return {"key": job["key"], "adapters": mine, "trained_now": trained}
