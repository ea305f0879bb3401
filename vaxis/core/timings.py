"""Time and memory of the heavy passes, recorded while notebooks run.

:func:`record_pass` appends one JSON line per pass (an extraction, a generation sweep) to the file
named by the environment variable ``VAXIS_TIMINGS``, and does nothing when it is unset.
``python -m vaxis run`` sets it to ``<run_dir>/timings/<notebook>.jsonl`` for each notebook (the
notebook's kernel inherits the variable) and, after each notebook, gathers the lines into
``<run_dir>/timings.json`` (:func:`update_run_timings`); ``scripts/timings_table.py`` turns that into a
Markdown table.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import warnings
from pathlib import Path

from .cache import atomic_write_json

ENV_VAR = "VAXIS_TIMINGS"
SCHEMA = "vaxis.timings/1"


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def peak_gpu_mb() -> float | None:
    """Peak memory allocated by torch on the current CUDA device so far, in MB; ``None`` without CUDA."""
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # noqa: BLE001 - a broken CUDA set-up must not fail the pass being timed
        return None
    return None


def record_pass(kind: str, tokens: int, seconds: float, cached: bool, **extra) -> dict | None:
    """Append one JSON line describing a pass to the file named by ``$VAXIS_TIMINGS``.

    The line holds ``kind`` (e.g. ``"extract"``, ``"generate"``), ``tokens``, ``seconds``,
    ``tokens_per_s``, ``cached`` (whether the result came from the cache rather than the model),
    ``peak_gpu_mb`` (``torch.cuda.max_memory_allocated``; ``None`` without CUDA), ``peak_rss_mb``, ``time``
    (Unix seconds) and any ``extra`` keyword (JSON-serialisable). Returns the record, or ``None`` when the
    variable is unset (nothing is written). A file that cannot be written gives a warning, never an error:
    timing must not fail the work it times."""
    path = os.environ.get(ENV_VAR)
    if not path:
        return None
    seconds = float(seconds)
    record = {
        "kind": str(kind),
        "tokens": int(tokens),
        "seconds": seconds,
        "tokens_per_s": int(tokens) / seconds if seconds > 0 else None,
        "cached": bool(cached),
        "peak_gpu_mb": peak_gpu_mb(),
        "peak_rss_mb": peak_rss_mb(),
        "time": time.time(),
        **extra,
    }
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
    except OSError as err:
        warnings.warn(f"vaxis.core.timings: could not append to {path} ({ENV_VAR}): {err}", stacklevel=2)
    return record


def read_passes(path: str | os.PathLike) -> list[dict]:
    """The records of a pass file written by :func:`record_pass` (``[]`` if it does not exist); a torn or
    malformed line (a process killed mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    passes = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            passes.append(record)
    return passes


def machine() -> dict:
    """What the run ran on: ``gpu`` (``torch.cuda.get_device_name``, or ``"cpu"``), ``gpu_count`` and
    ``cpu_count``."""
    import torch

    on_cuda = torch.cuda.is_available()
    return {
        "gpu": torch.cuda.get_device_name() if on_cuda else "cpu",
        "gpu_count": torch.cuda.device_count() if on_cuda else 0,
        "cpu_count": os.cpu_count(),
    }


def _max(values) -> float | None:
    values = [v for v in values if isinstance(v, int | float)]
    return max(values) if values else None


def notebook_entry(
    wall_seconds: float, status: str, profile: str, model: str | None, quantization: str | None, passes: list[dict],
    machine_info: dict | None = None,
) -> dict:  # fmt: skip
    """One notebook's entry of ``timings.json``: wall seconds, status (``ok``, ``failed``,
    ``interrupted``), profile, model, quantization, the machine, the passes, and over the passes: total
    tokens, tokens of the passes that ran the model (not cached), their seconds, peak GPU and RSS MB."""
    uncached = [p for p in passes if not p.get("cached")]
    return {
        "wall_seconds": round(float(wall_seconds), 3),
        "status": status,
        "profile": profile,
        "model": model,
        "quantization": quantization,
        **(machine_info if machine_info is not None else machine()),
        "passes": passes,
        "tokens": sum(int(p.get("tokens", 0)) for p in passes),
        "uncached_tokens": sum(int(p.get("tokens", 0)) for p in uncached),
        "uncached_seconds": sum(float(p.get("seconds", 0.0)) for p in uncached),
        "peak_gpu_mb": _max(p.get("peak_gpu_mb") for p in passes),
        "peak_rss_mb": _max(p.get("peak_rss_mb") for p in passes),
    }


def update_run_timings(run_dir: str | os.PathLike, notebook: str, entry: dict) -> Path:
    """Write ``entry`` as notebook ``notebook``'s entry of ``run_dir/timings.json`` (atomically), keeping
    the entries of the other notebooks already there (a run of only some notebooks updates theirs). A
    ``timings.json`` that cannot be read is replaced, with a warning."""
    path = Path(run_dir) / "timings.json"
    data: dict = {}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            warnings.warn(f"{path} could not be read ({err}); starting it again", stacklevel=2)
            data = {}
    if not isinstance(data, dict) or not isinstance(data.get("notebooks"), dict):
        data = {"notebooks": {}}
    data["schema"] = SCHEMA
    data["notebooks"][notebook] = entry
    data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return atomic_write_json(path, data)


def load_run_timings(run_dir: str | os.PathLike) -> dict:
    """``run_dir/timings.json`` as written by :func:`update_run_timings`; FileNotFoundError with what to
    run when it is missing."""
    path = Path(run_dir) / "timings.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: `python -m vaxis run --run-dir {run_dir} ...` writes it after each notebook"
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("notebooks"), dict):
        raise ValueError(f"{path} is not a vaxis timings file (no 'notebooks' table)")
    return data


def _num(value, unit: str = "") -> str:
    return "—" if value is None else f"{value:,.0f}{unit}"


def markdown_table(data: dict, title: str = "") -> str:
    """A Markdown table of one run's ``timings.json`` (``data``): per notebook the wall time, passes, tokens,
    tokens/s of the passes that ran the model (cached passes excluded), peak GPU memory and peak RSS; a
    machine line above it and a total row below."""
    entries = data["notebooks"]
    first = next(iter(entries.values()), {})
    gpu = first.get("gpu", "?")
    gpus = f"{gpu} x{first['gpu_count']}" if first.get("gpu_count", 0) > 1 else gpu
    lines = [title] if title else []
    lines.append(
        f"Machine: {gpus}, {first.get('cpu_count', '?')} CPU cores; profile {first.get('profile', '?')}, model "
        f"{first.get('model', '?')} ({first.get('quantization') or 'no quantization'})."
    )
    lines += [
        "",
        "| notebook | wall time | passes | tokens | tokens/s (uncached passes) | peak GPU memory | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in entries.items():
        label = name if e.get("status") == "ok" else f"{name} ({e.get('status')})"
        secs = e.get("uncached_seconds") or 0
        rate = e.get("uncached_tokens", 0) / secs if secs > 0 else None
        lines.append(
            f"| {label} | {_num(e.get('wall_seconds'), ' s')} | {len(e.get('passes', []))} | {_num(e.get('tokens'))} "
            f"| {_num(rate)} | {_num(e.get('peak_gpu_mb'), ' MB')} | {_num(e.get('peak_rss_mb'), ' MB')} |"
        )
    values = list(entries.values())
    lines.append(
        f"| all | {_num(sum(e.get('wall_seconds', 0) for e in values), ' s')} "
        f"| {sum(len(e.get('passes', [])) for e in values)} | {_num(sum(e.get('tokens', 0) for e in values))} | "
        f"| {_num(_max(e.get('peak_gpu_mb') for e in values), ' MB')} "
        f"| {_num(_max(e.get('peak_rss_mb') for e in values), ' MB')} |"
    )
    return "\n".join(lines) + "\n"
