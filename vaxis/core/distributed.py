"""Several processes through ``accelerate launch``: sharded extraction, generation and adapter training.

The heavy passes are data-parallel and need no gradient exchange, so vaxis runs them as plain SPMD jobs:
every process loads the same model, takes its share of the work and writes it into the ordinary on-disk
caches, and the results are merged from there.

* **Extraction and generation** plan their batches exactly as one process would (sorted by length,
  grouped under the token budget), and process ``r`` of ``w`` runs batches ``r, r + w, r + 2w, ...``.
  Each batch lands in the cache as it finishes (``extract``'s batch parts, ``generate``'s partial
  file, one per process). After a barrier, process 0 assembles the complete result from those batches
  in input order and writes the usual cache file; every process then reads it. Each batch is the
  same forward pass with the same shapes as in one process, so the merged result is bit for bit the
  single-process result, and a rerun after a failure redoes only the batches that are missing.
* **Adapters**: adapter ``i`` of a list is trained by process ``i mod w``, each on its own device with
  the distributed variables hidden from TRL (a process trains alone; no DDP), then read back.

Two ways in:

* in Python (and so in every notebook), ``processes=N`` on :func:`vaxis.extract`, :func:`vaxis.generate`
  and :func:`vaxis.core.train.train_adapters`, or :func:`use_processes` once for every call: the call
  writes a job folder (``<cache_root>/jobs/<kind>-<key>``, the inputs and how to rebuild the model),
  runs ``accelerate launch -m vaxis job <folder>`` and reads the merged result back from the cache;
* from the shell, for clusters: ``accelerate launch [--config_file node.yaml] -m vaxis job <folder>``
  (a job folder a notebook wrote; each process runs :func:`vaxis.core.jobs.job_main`) or
  ``-m vaxis extract --run-dir R`` (notebook 02's passes), on each
  machine, with ``runs/`` and the vaxis cache on a shared filesystem; a later run on one machine
  finds everything in the cache.

Each process checks that its inputs hash to the same cache key as the others' (and, for a job, as the
launching process's): a process with another model or other inputs stops the job before anything is
merged. A process that fails makes the whole job fail with its own traceback.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from .cache import atomic_write, atomic_write_json, cache_root

# Variables torchrun / accelerate set for each process; hidden from TRL while one adapter trains.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                    "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")  # fmt: skip
JOB_FILE = "job.pt"
KINDS = ("extract", "generate", "train")


class DistributedError(RuntimeError):
    """A sharded job could not start, failed in a process, or its processes disagreed on their inputs."""


_defaults = {"processes": 1, "config_file": None, "min_tokens": 0}
_alone = False
_share: dict = {}  # what this process of a job did (tokens, sequences), for its report


def note_share(**counts) -> None:
    """Add to this process's share of the job (reported in ``rank<r>.json``)."""
    for k, v in counts.items():
        _share[k] = _share.get(k, 0) + v


def reset_share() -> None:
    """Start this process's share of a job from nothing (:func:`vaxis.core.jobs.pass_share`)."""
    _share.clear()


def share_counts() -> dict:
    """What :func:`note_share` added up since :func:`reset_share`."""
    return dict(_share)


def available_processes() -> int:
    """How many processes one machine can give a job: its GPUs, or its CPU cores without one."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else (os.cpu_count() or 1)


def read_accelerate_config(path: str | os.PathLike) -> dict:
    """An accelerate config file (YAML or JSON, as ``accelerate config`` writes it) as a dict."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise DistributedError(f"accelerate config {path} does not exist: write one with `accelerate config`")
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def machines(config_file: str | os.PathLike | None) -> int:
    """How many machines an accelerate config launches on (1 without a config)."""
    return 1 if config_file is None else int(read_accelerate_config(config_file).get("num_machines", 1) or 1)


def check_processes(processes, config_file: str | os.PathLike | None = None) -> int:
    """``processes`` as an int after the checks a launch from this machine needs (see :func:`use_processes`)."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise DistributedError(f"processes={processes!r}: give an int >= 1 (1 runs everything in this process)")
    if config_file is not None and machines(config_file) > 1:
        return processes  # the machines named in the config provide them (see run_job)
    import torch

    have = available_processes()
    if processes > have:
        what = "GPUs" if torch.cuda.is_available() else "CPU cores (no GPU is visible)"
        raise DistributedError(
            f"processes={processes}, but this machine has {have} {what}: use at most {have}; more processes than one "
            "machine has need several machines, named in an accelerate config file (`accelerate config`; pass it as "
            "accelerate_config; README, 'Several GPUs or machines')"
        )
    return processes


def use_processes(processes: int = 1, config_file: str | os.PathLike | None = None, min_tokens: int = 0) -> int:
    """Set how many processes the heavy calls of this Python process use when not told otherwise.

    ``processes`` may not exceed this machine's GPUs (CPU cores without a GPU) unless ``config_file``, an
    accelerate config for the launches, names several machines: then each heavy call writes its job folder
    and stops with the command to start on every machine (:func:`run_job`). A pass of fewer than
    ``min_tokens`` tokens stays in this process, since every launch loads the model once per process.
    Returns ``processes``."""
    _defaults.update(processes=check_processes(processes, config_file), config_file=config_file,
                     min_tokens=int(min_tokens))  # fmt: skip
    return processes


def processes_for(processes: int | None, tokens: int | None = None) -> int:
    """The processes a call runs on: ``processes`` when given, else :func:`use_processes`'s setting (for a
    pass of ``tokens`` tokens, 1 below its ``min_tokens``); always 1 inside a process of a job."""
    if shard() is not None or _alone:
        return 1
    if processes is not None:
        return check_processes(processes, _defaults["config_file"])
    if tokens is not None and tokens < _defaults["min_tokens"]:
        return 1
    return _defaults["processes"]


# ---------------------------------------------------------------- inside a process of a job


def shard() -> tuple[int, int] | None:
    """``(rank, world size)`` inside a process of a running job of several processes, else None."""
    import torch.distributed as dist

    if _alone or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    import torch.distributed as dist

    if shard() is not None:
        dist.barrier()


def same_everywhere(value: str, what: str) -> None:
    """Raise :class:`DistributedError` in every process unless all processes hold the same ``value``."""
    import torch.distributed as dist

    if shard() is None:
        return
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    if len(set(values)) > 1:
        listing = ", ".join(f"process {r}: {v}" for r, v in enumerate(values))
        raise DistributedError(
            f"the processes' {what} differ ({listing}): each process must load the same model and read the same "
            "inputs (the same files on a shared filesystem, the same vaxis version); nothing was merged"
        )


def my_batches(n_batches: int) -> list[int]:
    """Indices of the batches this process runs: all of them outside a job, else every ``world``-th."""
    where = shard()
    if where is None:
        return list(range(n_batches))
    rank, world = where
    return list(range(rank, n_batches, world))


def pin_device() -> None:
    """Give this process of a job its own GPU (``CUDA_VISIBLE_DEVICES`` narrowed to the ``LOCAL_RANK``-th
    visible one, before CUDA starts, so loaders see one device) or its share of the CPU threads."""
    import torch

    local, local_world = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = [d for d in visible.split(",") if d.strip()] if visible is not None else None
    if local_world > 1 and (devices is None or len(devices) > 1):
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[local % len(devices)] if devices else str(local)
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local_world, 1)))


@contextlib.contextmanager
def process_group():
    """Join the job's process group when launched as one of several processes (gloo: it carries only
    barriers and small objects, on any device)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def alone():
    """Run the body as a lone process: the launcher's variables hidden (so TRL's Trainer does not start
    DDP across the job's processes) and :func:`shard` reporting None."""
    global _alone
    saved = {k: os.environ.pop(k) for k in LAUNCH_VARIABLES if k in os.environ}
    was, _alone = _alone, True
    try:
        yield
    finally:
        os.environ.update(saved)
        _alone = was


# ---------------------------------------------------------------- the launching process


def model_source(model) -> dict:
    """How to load ``model`` again in another process (recorded by :func:`vaxis.load_model` and
    :func:`vaxis.core.train.load_adapter`; :func:`vaxis.core.jobs.load_source` loads it)."""
    source = getattr(model, "_vaxis_source", None)
    if source is None:
        raise DistributedError(
            "processes > 1 needs a model that vaxis can load again in each process: load it with vaxis.load_model "
            "(plus vaxis.core.train.load_adapter for adapters), or run with processes=1"
        )
    return dict(source)


def job_folder(kind: str, key: str) -> Path:
    return cache_root() / "jobs" / f"{kind}-{key}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(job_dir: Path, processes: int, config_file=None, entry: list[str] | None = None) -> list[str]:
    """The ``accelerate launch`` command line that runs ``job_dir`` on ``processes`` processes here."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file is not None:
        cmd += ["--config_file", str(config_file)]
    cmd += ["--num_processes", str(processes), "--num_machines", "1", "--main_process_port", str(_free_port())]
    if processes > 1:
        cmd += ["--multi_gpu"]  # torchrun; on a machine without GPUs each process runs on the CPU
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    return cmd + (entry or ["-m", "vaxis", "job"]) + [str(job_dir)]


def run_job(kind: str, job: dict, key: str, processes: int, entry: list[str] | None = None,
            progress: bool = True) -> Path:  # fmt: skip
    """Write ``job`` under :func:`job_folder` and run it on ``processes`` processes with ``accelerate launch``;
    returns the job folder. A failure raises :class:`DistributedError` with the failing process's error."""
    import torch

    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: one of {KINDS}")
    folder = job_folder(kind, key)
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("error-rank*.txt"), *folder.glob("rank*.json")]:
        old.unlink()
    atomic_write(folder / JOB_FILE, lambda tmp: torch.save({"kind": kind, "key": key, **job}, tmp))
    config = _defaults["config_file"]
    if machines(config) > 1:
        raise DistributedError(
            f"{config} launches on {machines(config)} machines, which this process cannot start: on every machine run "
            f"`accelerate launch --config_file {config} -m vaxis job {folder}` (its machine_rank set for each; runs/ "
            "and the vaxis cache on a shared filesystem), then run this again: it reads the merged result from the cache"
        )
    cmd = launch_command(folder, processes, config, entry)
    # the launching process records the job's time (vaxis.core.timings), not each of its processes
    env = {k: v for k, v in os.environ.items() if k not in (*LAUNCH_VARIABLES, "VAXIS_TIMINGS")}
    env["PYTHONUNBUFFERED"] = "1"
    env["VAXIS_CACHE"] = str(cache_root())
    start = time.perf_counter()
    with open(folder / "launch.log", "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)  # fmt: skip
        try:
            for line in proc.stdout:
                log.write(line)
                if progress:
                    print(line, end="", flush=True)
            proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
            proc.wait()
            raise
    if proc.returncode != 0:
        raise DistributedError(_failure_message(kind, folder, proc.returncode, processes))
    atomic_write_json(folder / "done.json", {"processes": processes, "seconds": time.perf_counter() - start})
    return folder


def _lost_connection(text: str) -> bool:
    return "Connection closed by peer" in text or "Connection reset" in text


def _failure_message(kind: str, folder: Path, returncode: int, processes: int = 0) -> str:
    # The process that failed first, not the ones that lost their connection to it afterwards.
    def order(path: Path):
        return (_lost_connection(path.read_text(encoding="utf-8")), path.stat().st_mtime_ns)

    errors = sorted(folder.glob("error-rank*.txt"), key=order)
    silent = [r for r in range(processes)
              if not (folder / f"rank{r}.json").exists() and not (folder / f"error-rank{r}.txt").exists()]  # fmt: skip
    if errors and silent and _lost_connection(errors[0].read_text(encoding="utf-8")):
        # every report is a lost connection: the process that failed first died without one (killed, e.g. for memory)
        head = (
            f"the sharded {kind} job failed in {', '.join(f'rank{r}' for r in silent)}, which ended without a "
            f"report (killed, e.g. for memory?); the others lost their connection to it (exit status {returncode})"
        )
        detail = "\n".join((folder / "launch.log").read_text(encoding="utf-8").splitlines()[-30:])
    elif errors:
        detail = errors[0].read_text(encoding="utf-8")
        last = detail.strip().splitlines()
        head = (f"the sharded {kind} job failed in {errors[0].stem.removeprefix('error-')} "
                f"(processes reporting an error: {', '.join(sorted(e.stem.removeprefix('error-') for e in errors))}): "
                f"{last[-1] if last else '?'}")  # fmt: skip
    else:
        tail = (folder / "launch.log").read_text(encoding="utf-8").splitlines()[-30:]
        head = f"the sharded {kind} job exited with status {returncode} before any process reported an error"
        detail = "\n".join(tail)
    return (f"{head}\n{detail}\nLog: {folder / 'launch.log'}. Finished batches stay in the cache: a rerun "
            "resumes from them.")  # fmt: skip
