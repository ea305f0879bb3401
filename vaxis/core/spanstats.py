"""Span statistics, the result of :func:`vaxis.core.extract.extract`, and their files.

:class:`SpanStats` holds, per item, span and residual index, the sums of the activations over the span's tokens,
the token counts and norm sums, and optionally per-token cosines and kept activations. :func:`save_stats` and
:func:`load_stats` write and read them as one safetensors file (the extraction cache's format; notebook 02's run
files too). The extraction's per-batch cache files are read with :func:`load_part` and written in a background
thread by :class:`PartWriter`. :class:`CacheError` is what any damaged cache file of vaxis raises.
"""

from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .cache import atomic_write


class CacheError(RuntimeError):
    """A cache file is unreadable or does not match what it should hold."""


@dataclass
class SpanStats:
    """Per-item, per-span, per-layer statistics returned by :func:`extract`.

    Attributes:
        layers: residual indices, in the order of the layer axis.
        names: span names.
        sums: name -> ``(n_items, n_layers, d)`` float32 sums of ``h_t`` over the span.
        counts: name -> ``(n_items,)`` number of tokens in the span.
        norm_sums: name -> ``(n_items, n_layers)`` sums of ``|h_t|``.
        token_indices: name -> list (per item) of token-index tensors.
        text_lengths: ``(n_items,)`` number of tokens of each item's whole text.
        projections: name -> list (per item) of ``(n_tokens, n_layers, K)`` cosines with
            the directions, for the names in ``token_spans``; ``None`` if no directions were given.
        info: tokens processed, seconds, tokens/s, peak memory, cache key.
        activations: name -> list (per item) of ``(n_tokens, n_layers, d)`` float32 activations,
            for the names in ``token_spans``, if ``keep_activations=True``.
    """

    layers: list[int]
    names: list[str]
    sums: dict[str, torch.Tensor]
    counts: dict[str, torch.Tensor]
    norm_sums: dict[str, torch.Tensor]
    token_indices: dict[str, list[torch.Tensor]]
    text_lengths: torch.Tensor
    projections: dict[str, list[torch.Tensor]] | None = None
    info: dict = field(default_factory=dict)
    activations: dict[str, list[torch.Tensor]] | None = None

    def means(self, name: str) -> torch.Tensor:
        """``(n_items, n_layers, d)`` mean activation over the span (NaN where empty)."""
        counts = self.counts[name].to(torch.float32).clamp_min(0)
        return self.sums[name] / counts.view(-1, 1, 1).where(counts.view(-1, 1, 1) > 0, torch.nan)

    def mean_norms(self, name: str | None = None) -> torch.Tensor:
        """``(n_layers,)`` mean token norm over all tokens of span ``name`` (or all spans)."""
        names = [name] if name else self.names
        total = sum(self.norm_sums[n].sum(0) for n in names)
        count = sum(self.counts[n].sum() for n in names)
        return total / max(int(count), 1)

    def layer_index(self, layer: int) -> int:
        """Position of residual index ``layer`` on the layer axis."""
        try:
            return self.layers.index(layer)
        except ValueError as err:
            raise KeyError(f"layer {layer} was not extracted; extracted layers are {self.layers}") from err


def load_part(path: Path) -> dict[str, torch.Tensor] | None:
    """The tensors of one batch's cache file, or None where the file is gone (another process that ran the same
    extraction removed it on finishing: the batch is computed again); a damaged file is a :class:`CacheError` that
    says what to delete."""
    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        if not path.exists():
            return None
        raise CacheError(
            f"cache file {path} is damaged ({err}); delete it (or the folder {path.parent}) to recompute that batch"
        ) from err


class PartWriter:
    """Writes finished batches to the cache in a background thread, so that the device runs the next batch
    meanwhile instead of waiting for the disk. One write is pending at most (memory stays bounded); a failed
    write is raised at the next write or on leaving; on leaving, even through an exception (an interrupted
    run), the pending write is finished first, so every batch that was computed is kept for the resume."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vaxis-extract-parts")
        self._pending: Future | None = None

    def write(self, path: Path, result: dict[str, torch.Tensor]) -> None:
        self.wait()
        self._pending = self._pool.submit(atomic_write, path, lambda tmp: save_file(result, tmp))

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
            elif self._pending is not None:  # keep what was computed; the exception in flight is the one to report
                self._pending.exception()
        finally:
            self._pool.shutdown(wait=True)


def save_stats(path: str | Path, stats: SpanStats, key: str | None = None) -> Path:
    """Write :class:`SpanStats` (with projections and kept activations, if any) to a safetensors
    file, atomically. ``key`` is stored in the metadata (the extraction cache uses it)."""
    tensors = {"text_lengths": stats.text_lengths.contiguous()}
    for n in stats.names:
        tensors[f"sums/{n}"] = stats.sums[n].contiguous()
        tensors[f"norms/{n}"] = stats.norm_sums[n].contiguous()
        tensors[f"counts/{n}"] = stats.counts[n].contiguous()
        tensors[f"tokens/{n}"] = torch.cat(stats.token_indices[n]) if stats.token_indices[n] else torch.zeros(0)
        for prefix, table in (("proj", stats.projections), ("act", stats.activations)):
            if table is not None and n in table:
                tensors[f"{prefix}/{n}"] = torch.cat(table[n]).contiguous()
    meta = {"layers": json.dumps(stats.layers), "names": json.dumps(stats.names), "info": json.dumps(stats.info)}
    if key is not None:
        meta["key"] = key
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_stats(path: str | Path, key: str | None = None) -> SpanStats:
    """Read :class:`SpanStats` written by :func:`save_stats`; with ``key``, check it matches."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        names = json.loads(meta["names"])
        layers = json.loads(meta["layers"])
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CacheError(
            f"{path} is damaged or not a vaxis span-statistics file ({err}); delete it to recompute"
        ) from err
    if key is not None and meta.get("key") != key:
        raise CacheError(f"cache file {path} does not match its key; delete it to recompute")
    split = {n: tensors[f"counts/{n}"].tolist() for n in names}
    tables = {}
    for prefix in ("proj", "act"):
        found = [n for n in names if f"{prefix}/{n}" in tensors]
        tables[prefix] = {n: list(torch.split(tensors[f"{prefix}/{n}"], split[n])) for n in found} if found else None
    return SpanStats(
        layers=layers,
        names=names,
        sums={n: tensors[f"sums/{n}"] for n in names},
        counts={n: tensors[f"counts/{n}"] for n in names},
        norm_sums={n: tensors[f"norms/{n}"] for n in names},
        token_indices={n: list(torch.split(tensors[f"tokens/{n}"].long(), split[n])) for n in names},
        text_lengths=tensors["text_lengths"],
        projections=tables["proj"],
        info=json.loads(meta.get("info", "{}")),
        activations=tables["act"],
    )
