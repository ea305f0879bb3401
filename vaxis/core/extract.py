"""Fast, exact extraction of span statistics from the residual stream.

Given texts and, per text, named character spans (e.g. ``before`` and ``after``
a reward word), :func:`extract` returns for each span and each residual index
``L`` the sum of the activations ``h_t`` over the span's tokens, the number of
tokens, the sum of token norms ``|h_t|``, and (optionally) every token's cosine
``cos(h_t, u_k)`` with given directions ``u_k``. Means are ``sums / counts``.

How it is fast (and why the result is exact):

* Spans are mapped to tokens through the fast tokenizer's character offsets
  (:func:`vaxis.core.spans.tokens_in_spans`), never by searching text.
* Each text is run only up to the last token any of its spans needs: attention
  is causal, so later tokens cannot change earlier activations.
* The forward pass stops after the deepest requested block (no final norm, no
  unembedding), via an exception raised from the hook.
* Texts are sorted by length and batched with right padding under a token budget
  (:func:`plan_batches`); a batch whose rows differ much in length runs as a few
  forward passes, each padded to its own longest row (:func:`vaxis.core.extract_forward.pieces`).
* No attention mask is passed: attention is causal and the pads come after every
  real token, so no real token sees them, and SDPA runs its causal kernel (flash
  attention on a GPU), which skips the masked-out half of the scores.
* Activations are reduced on the device (float32) inside the hook, so full hidden
  states of all layers are never held, and memory does not grow with the
  number of texts beyond the small per-span results.
* Several items may share a text (e.g. one game with many failed attempts):
  each distinct text is run once.

Results are cached on disk under a key hashing the model identity, the texts,
the spans, the layers, the directions and the options; batches are written
atomically as they finish (in a background thread, while the next batch runs), so
an interrupted run resumes where it stopped and gives identical results.

The steps live beside this module: :mod:`vaxis.core.extract_items` prepares the inputs (items, tokens, directions),
:mod:`vaxis.core.extract_forward` runs the forward passes, and :mod:`vaxis.core.spanstats` holds the result
(:class:`~vaxis.core.spanstats.SpanStats`) and its files.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from . import distributed, extract_forward
from .cache import cache_root, stable_hash
from .extract_forward import piece_min_tokens, pieces
from .extract_items import (
    Texts,
    as_items,
    direction_matrix,
    groups_by_text,
    prepare_texts,
    tokenizer_identity,
    tokenwise_names,
)
from .identity import model_identity
from .layout import ModelLayout, find_layout
from .spanstats import PartWriter, SpanStats, load_part, load_stats, save_stats
from .timings import record_pass

EXTRACT_VERSION = 2  # 2: results stored with save_stats (names, counts, kept activations)


def plan_batches(lengths: list[int], max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Group text indices (longest first) so that batch_size * longest <= max_batch_tokens.

    The one batch planner of the engine: :func:`extract`, :func:`vaxis.core.generate.generate` and the readouts
    of :mod:`vaxis.core.readout` batch with it, and :mod:`vaxis.run.estimate` calls it to plan a run before any
    model is loaded, so an estimate's batches are the run's."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, current = [], []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and ((len(current) + 1) * longest > max_batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def input_device(model) -> torch.device:
    return model.get_input_embeddings().weight.device


def extract(
    model,
    tokenizer,
    texts: Sequence,
    spans: Sequence[Mapping[str, Sequence]],
    layers: Sequence[int] | None = None,
    directions: Mapping[int, torch.Tensor] | None = None,
    max_batch_tokens: int = 8192,
    max_batch_size: int = 32,
    add_special_tokens: bool = False,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    layout: ModelLayout | None = None,
    quantization: str | None = None,
    token_spans: Sequence[str] | None = None,
    keep_activations: bool = False,
    processes: int | None = None,
    expect_key: str | None = None,
) -> SpanStats:
    """Per-span, per-layer statistics of the residual stream (see module docstring).

    Args:
        model, tokenizer: a causal LM and its fast tokenizer.
        texts: strings, or chats (lists of ``{"role", "content"}`` messages) rendered with
            the chat template.
        spans: per text, ``{name: [(start, end), ...]}`` character ranges in the text
            (for chats, ``(message_index, start, end)`` inside that message's content).
            Spans of one text must not overlap; a name may be missing from a text.
        layers: residual indices (default: all, ``0..n_layers``).
        directions: optional ``{layer: (K, d) tensor}``; every span token's cosine with
            each direction is returned in ``projections`` (layers without directions
            get NaN). All layers must have the same K.
        max_batch_tokens: padded tokens per forward pass (lower it if memory runs out).
        max_batch_size: texts per forward pass.
        add_special_tokens: passed to the tokenizer (chat templates add their own).
        cache_dir: where results are cached (default ``<cache_root>/extract``).
        use_cache: read and write the cache.
        progress: show a tqdm progress bar.
        token_spans: span names that get per-token outputs (projections, kept activations);
            default: every name.
        keep_activations: also return every ``token_spans`` token's activation at every
            layer (float32, on the CPU: ``n_tokens * n_layers * d * 4`` bytes; use it only when
            that fits, e.g. to project on directions that are not known yet).
        processes: run the pass on this many processes with ``accelerate launch``
            (:mod:`vaxis.core.distributed`; the result is identical); ``None``: the setting of
            :func:`vaxis.core.distributed.use_processes` (1 unless changed).
        expect_key: internal (a process of a sharded job): the cache key the launching process
            computed; a process whose inputs hash otherwise stops the job.
    """
    layout = layout or find_layout(model)
    layers = layout.check_layers(list(layers) if layers is not None else list(layout.residual_indices))
    items, names = as_items(tokenizer, texts, spans)
    tokenwise = tokenwise_names(names, token_spans)
    dir_matrix = direction_matrix(directions, layers, layout.hidden_size)
    prepared = prepare_texts(tokenizer, items, names, add_special_tokens)
    key = _cache_key(model, tokenizer, quantization, prepared, items, layers, dir_matrix, add_special_tokens,
                     [max_batch_tokens, max_batch_size], tokenwise, keep_activations)  # fmt: skip
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "extract"
    final_path = folder / f"{key}.safetensors"
    _check_key(key, expect_key)
    batches, plan = _plan_pass(prepared.needed, max_batch_tokens, max_batch_size)
    if use_cache and final_path.exists():
        return _read_cached(final_path, key, sum(prepared.needed), plan)
    n_proc = distributed.processes_for(processes, sum(prepared.needed))
    if n_proc > 1:
        if not use_cache:
            raise ValueError("processes > 1 merges the processes' batches through the cache: keep use_cache=True")
        kwargs = dict(texts=[t for t, _ in items], spans=[sp for _, sp in items], layers=layers,
                      directions={k: torch.as_tensor(v).detach().cpu() for k, v in (directions or {}).items()} or None,
                      max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size, cache_dir=cache_dir,
                      add_special_tokens=add_special_tokens, progress=progress, quantization=quantization,
                      token_spans=token_spans, keep_activations=keep_activations)  # fmt: skip
        return _extract_sharded(model, kwargs, key, final_path, n_proc, plan, progress)
    if distributed.shard() is not None and not use_cache:
        raise ValueError("a process of a sharded job writes its batches to the cache: keep use_cache=True")
    job = _Job(model, layout, layers, names, tokenwise, dir_matrix, keep_activations, input_device(model), prepared,
               groups_by_text(items, names, prepared, tokenwise), batches)  # fmt: skip
    return _extract_here(job, items, key, final_path, use_cache, progress, plan)


def _check_key(key: str, expect_key: str | None) -> None:
    """Stop (in every process of a job) unless this process's cache key is the launching process's and the
    other processes'."""
    if expect_key is not None and expect_key != key:
        raise distributed.DistributedError(
            f"this process's extraction inputs hash to {key}, the launching process's to {expect_key}: it loaded "
            "another model or read other inputs; nothing was merged"
        )
    distributed.same_everywhere(key, "extraction cache keys")


def _plan_pass(needed: list[int], max_batch_tokens: int, max_batch_size: int) -> tuple[list[list[int]], dict]:
    """The batches (of distinct-text indices; texts without a span token run in none) and the planned sizes that
    go in every timing record of the pass, cached or not."""
    runnable = [u for u in range(len(needed)) if needed[u] > 0]
    batches = plan_batches([needed[u] for u in runnable], max_batch_tokens, max_batch_size)
    batches = [[runnable[j] for j in b] for b in batches]
    return batches, {"sequences": len(runnable), "batches": len(batches)}


@dataclass
class _Job:
    """Everything the forward passes of one extraction need."""

    model: object
    layout: ModelLayout
    layers: list[int]
    names: list[str]
    tokenwise: set[str]
    dir_matrix: torch.Tensor | None
    keep: bool
    device: torch.device
    texts: Texts
    by_text: dict[int, list[tuple[int, str, torch.Tensor, bool]]]
    batches: list[list[int]]

    def run(self, b: int) -> dict[str, torch.Tensor]:
        """The reduced results of batch ``b`` (:func:`vaxis.core.extract_forward.run_batch`, looked up on its module
        so that tests can replace it)."""
        t = self.texts
        return extract_forward.run_batch(self.model, self.layout, self.layers, t.tokenized, t.needed, self.batches[b],
                                         self.by_text, self.dir_matrix, self.device, self.keep)  # fmt: skip

    def tokens(self, b: int) -> int:
        return sum(self.texts.needed[u] for u in self.batches[b])

    def padded_tokens(self) -> int:
        """Tokens the forward passes compute, padding included (the pieces of
        :func:`vaxis.core.extract_forward.pieces`)."""
        total, minimum = 0, piece_min_tokens(self.device)
        for batch in self.batches:
            widths = [self.texts.needed[u] for u in batch]
            total += sum((stop - first) * max(widths[first:stop]) for first, stop in pieces(widths, minimum))
        return total


def _cache_key(model, tokenizer, quantization, texts: Texts, items, layers, dir_matrix, add_special_tokens: bool,
               batching: list[int], tokenwise: set[str], keep: bool) -> str:  # fmt: skip
    """The cache key of an extraction (unchanged since ``EXTRACT_VERSION`` 2: existing caches stay valid)."""
    return stable_hash(
        {
            "v": EXTRACT_VERSION,
            "model": model_identity(model, quantization),
            "tokenizer": tokenizer_identity(tokenizer),
            "texts": stable_hash(texts.unique, 32),
            "items": stable_hash([[texts.ids[t], s] for t, s in items], 32),
            "layers": layers,
            "directions": None if dir_matrix is None else hashlib.sha256(dir_matrix.numpy().tobytes()).hexdigest(),
            "special": add_special_tokens,
            "batching": batching,
            "tokenwise": sorted(tokenwise),
            "keep": keep,
        },
        24,
    )


def _read_cached(final_path: Path, key: str, tokens: int, plan: dict) -> SpanStats:
    stats = load_stats(final_path, key=key)
    stats.info.update(cached=True, cache_key=key)
    if distributed.shard() is None:
        record_pass("extract", tokens, 0.0, cached=True, **plan)
    return stats


def _extract_sharded(model, kwargs: dict, key: str, final_path: Path, n_proc: int, plan: dict, progress: bool):
    """Run the extraction on ``n_proc`` processes (:mod:`vaxis.core.distributed`) and read the merged file."""
    start_time = time.perf_counter()
    job = {"model": distributed.model_source(model), "kwargs": kwargs}
    distributed.run_job("extract", job, key, n_proc, progress=progress)
    if not final_path.exists():
        raise distributed.DistributedError(f"the sharded extraction finished without writing {final_path}")
    stats = load_stats(final_path, key=key)
    stats.info.update(cached=False, cache_key=key, processes=n_proc, seconds=time.perf_counter() - start_time)
    stats.info["tokens_per_s"] = stats.info["tokens_processed"] / stats.info["seconds"]
    record_pass("extract", stats.info["tokens_processed"], stats.info["seconds"], cached=False, processes=n_proc,
                **plan)  # fmt: skip
    return stats


def _extract_here(job: _Job, items, key: str, final_path: Path, use_cache: bool, progress: bool, plan: dict):
    """Run (or, batch by batch, read from the cache) this process's part of an extraction."""
    part_dir = final_path.parent / f"{key}.parts"
    device = job.device
    start_time, processed = time.perf_counter(), 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    where = distributed.shard()
    if where is not None:  # a process of a sharded job: run this process's batches into the cache first
        with PartWriter() as writer:
            for b in distributed.my_batches(len(job.batches)):
                part = part_dir / f"{b:06d}.safetensors"
                if not part.exists():
                    writer.write(part, job.run(b))
                    processed += job.tokens(b)
        distributed.note_share(tokens_this_process=processed)
        processed = 0  # the merged file counts every process's tokens
        distributed.barrier()
        if where[0] != 0:  # process 0 merges every batch into the final file, then everyone reads it
            distributed.barrier()
            return load_stats(final_path, key=key)
    collect = _Collector(job, len(items))
    bar = tqdm(total=sum(job.tokens(b) for b in range(len(job.batches))), unit="tok", desc="extract",
               disable=not progress or where is not None, mininterval=10)  # fmt: skip
    with PartWriter() as writer:
        for b, batch in enumerate(job.batches):
            part = part_dir / f"{b:06d}.safetensors"
            result = load_part(part) if use_cache and part.exists() else None
            if result is None:
                result = job.run(b)
                if use_cache:
                    writer.write(part, result)
            collect.take(batch, result)
            processed += job.tokens(b)
            bar.update(job.tokens(b))
    bar.close()
    seconds = time.perf_counter() - start_time
    stats = collect.stats(items)
    stats.info = {
        "cached": False,
        "cache_key": key,
        "tokens_processed": processed,
        "tokens_padded": job.padded_tokens(),
        "tokens_total": sum(len(t[0]) for t in job.texts.tokenized),
        "seconds": seconds,
        "tokens_per_s": processed / seconds if seconds > 0 else float("nan"),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }
    if use_cache:
        save_stats(final_path, stats, key=key)
        _remove_parts(part_dir)
    if where is not None:
        distributed.barrier()  # the others wait for the merged file
    else:
        record_pass("extract", processed, seconds, cached=False, processes=1, **plan)
    return stats


def _remove_parts(part_dir: Path) -> None:
    """Remove an extraction's batch files once its merged file is written. Another process may be running the same
    extraction into the same folder (two notebooks, two test workers on one cache): what it is still writing stays,
    and it removes the folder itself when it finishes (its batches are in its memory, and its merged file is the
    same)."""
    for p in part_dir.glob("*.safetensors") if part_dir.exists() else []:
        p.unlink(missing_ok=True)
    try:
        part_dir.rmdir()
    except OSError:  # gone already, or another process's batch is in it
        pass


class _Collector:
    """Gathers the batches' reduced results into per-item tensors and builds the :class:`SpanStats`."""

    def __init__(self, job: _Job, n_items: int):
        self.job = job
        n_layers, d = len(job.layers), job.layout.hidden_size
        self.sums = {n: torch.zeros(n_items, n_layers, d) for n in job.names}
        self.norm_sums = {n: torch.zeros(n_items, n_layers) for n in job.names}
        self.proj: dict[tuple[int, str], torch.Tensor] = {}
        self.act: dict[tuple[int, str], torch.Tensor] = {}

    def take(self, batch: list[int], result: dict[str, torch.Tensor]) -> None:
        groups = [g for u in batch for g in self.job.by_text.get(u, [])]
        for g, (i, name, _, per_token) in enumerate(groups):
            self.sums[name][i] = result["sums"][g]
            self.norm_sums[name][i] = result["norms"][g]
            if per_token and self.job.dir_matrix is not None:
                self.proj[(i, name)] = result[f"proj{g}"]
            if per_token and self.job.keep:
                self.act[(i, name)] = result[f"act{g}"]

    def stats(self, items) -> SpanStats:
        job, texts, names = self.job, self.job.texts, self.job.names
        n_layers = len(job.layers)
        stats = SpanStats(
            layers=job.layers,
            names=names,
            sums=self.sums,
            counts={n: torch.tensor([len(t[n]) for t in texts.item_tokens]) for n in names},
            norm_sums=self.norm_sums,
            token_indices={n: [t[n] for t in texts.item_tokens] for n in names},
            text_lengths=torch.tensor([len(texts.tokenized[texts.ids[t]][0]) for t, _ in items]),
            projections=None,
            info={},
        )
        kept_names = [n for n in names if n in job.tokenwise]
        if job.dir_matrix is not None:
            empty = torch.zeros(0, n_layers, job.dir_matrix.shape[1])
            stats.projections = {n: [self.proj.get((i, n), empty) for i in range(len(items))] for n in kept_names}
        if job.keep:
            empty = torch.zeros(0, n_layers, job.layout.hidden_size)
            stats.activations = {n: [self.act.get((i, n), empty) for i in range(len(items))] for n in kept_names}
        return stats
