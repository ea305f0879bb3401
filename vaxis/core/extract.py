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
  forward passes, each padded to its own longest row (:func:`_pieces`).
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
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from . import distributed
from .cache import atomic_write, cache_root, stable_hash
from .chat import bound_template_kwargs, render_chat
from .hooks import StopForward, register_residual_hook
from .identity import model_identity
from .layout import ModelLayout, find_layout
from .spans import tokens_in_spans, validate_spans
from .timings import record_pass

EXTRACT_VERSION = 2  # 2: results stored with save_stats (names, counts, kept activations)


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


def as_items(tokenizer, texts, spans):
    """Normalise inputs to (text, {name: [(s, e)]}) pairs. Chats are rendered and
    their spans, given as ``(message_index, start, end)``, mapped to the text."""
    if isinstance(texts, (str, dict)):
        raise TypeError("texts must be a list of strings or of chats (lists of messages)")
    texts = list(texts)
    if not texts:
        raise ValueError("no texts given: pass at least one text (or chat)")
    if spans is None or len(spans) != len(texts):
        raise ValueError(
            f"give one span mapping per text: got {len(texts)} texts and "
            f"{'no' if spans is None else len(spans)} span mappings"
        )
    items = []
    for i, (text, item_spans) in enumerate(zip(texts, spans)):
        if not isinstance(item_spans, Mapping) or not item_spans:
            raise ValueError(f"text {i}: spans must be a non-empty mapping name -> [(start, end), ...]")
        if isinstance(text, list):
            rendered = render_chat(tokenizer, text)
            mapped = {}
            for name, ranges in item_spans.items():
                mapped[name] = []
                for rng in ranges:
                    if len(rng) != 3:
                        raise ValueError(f"text {i} is a chat: span {name!r} needs (message_index, start, end)")
                    mapped[name].append(rendered.span_in_message(*rng))
            text, item_spans = rendered.text, mapped
        elif not isinstance(text, str):
            raise TypeError(f"text {i} is a {type(text).__name__}; give a string or a list of messages")
        if not text:
            raise ValueError(f"text {i} is empty")
        item_spans = {name: [tuple(r) for r in ranges] for name, ranges in item_spans.items()}
        validate_spans(item_spans, len(text), where=f"text {i}: ")
        items.append((text, item_spans))
    names = sorted({name for _, s in items for name in s})
    return items, names


def _tokenize(tokenizer, text: str, add_special_tokens: bool):
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "vaxis maps spans to tokens through character offsets, which only fast tokenizers give: "
            "load the tokenizer with use_fast=True"
        )
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
    return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]


def tokenizer_identity(tokenizer) -> str:
    """Hash of a fast tokenizer's full definition (vocabulary, merges, normaliser, pre- and
    post-processor: ``backend_tokenizer.to_str()``; ~35 ms for SmolLM2's), with the chat-template arguments
    bound to it (:func:`vaxis.core.chat.bound_template_kwargs`) when there are any. Two tokenizers that split
    the same text differently, or render chats with other arguments, never share a cache entry."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("vaxis needs a fast tokenizer (one with a backend_tokenizer): load it with use_fast=True")
    definition = backend.to_str()
    bound = bound_template_kwargs(tokenizer)
    if bound:  # no arguments: the same hash as before they existed, so earlier caches stay valid
        definition += "\nchat_template_kwargs=" + json.dumps(bound, sort_keys=True)
    return hashlib.sha256(definition.encode()).hexdigest()[:32]


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
    tokenwise = _tokenwise(names, token_spans)
    dir_matrix = _direction_matrix(directions, layers, layout.hidden_size)
    prepared = _prepare_texts(tokenizer, items, names, add_special_tokens)
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
               _groups_by_text(items, names, prepared, tokenwise), batches)  # fmt: skip
    return _extract_here(job, items, key, final_path, use_cache, progress, plan)


def _tokenwise(names: list[str], token_spans) -> set[str]:
    """The span names that get per-token outputs: ``token_spans``, checked against ``names`` (default: all)."""
    tokenwise = set(names if token_spans is None else token_spans)
    unknown_names = tokenwise - set(names)
    if unknown_names:
        raise ValueError(f"token_spans names {sorted(unknown_names)} are not span names ({names})")
    return tokenwise


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
class _Texts:
    """The distinct texts of one call, each tokenized once, and what the items need of them."""

    ids: dict[str, int]  # text -> index of the distinct text
    unique: list[str]
    tokenized: list[tuple[list[int], list[tuple[int, int]]]]  # (token ids, character offsets) per distinct text
    item_tokens: list[dict[str, torch.Tensor]]  # per item: span name -> token indices
    needed: list[int]  # per distinct text: tokens up to its last span token (0: no span token at all)


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
    texts: _Texts
    by_text: dict[int, list[tuple[int, str, torch.Tensor, bool]]]
    batches: list[list[int]]

    def run(self, b: int) -> dict[str, torch.Tensor]:
        """The reduced results of batch ``b`` (through the module's ``_run_batch``, which tests replace)."""
        t = self.texts
        return _run_batch(self.model, self.layout, self.layers, t.tokenized, t.needed, self.batches[b], self.by_text,
                          self.dir_matrix, self.device, self.keep)  # fmt: skip

    def tokens(self, b: int) -> int:
        return sum(self.texts.needed[u] for u in self.batches[b])

    def padded_tokens(self) -> int:
        """Tokens the forward passes compute, padding included (the pieces of :func:`_pieces`)."""
        total, minimum = 0, _piece_min_tokens(self.device)
        for batch in self.batches:
            widths = [self.texts.needed[u] for u in batch]
            total += sum((stop - first) * max(widths[first:stop]) for first, stop in _pieces(widths, minimum))
        return total


def _direction_matrix(directions, layers: list[int], d: int) -> torch.Tensor | None:
    """``(n_layers, K, d)`` unit directions on the CPU (NaN rows for layers without any), or None."""
    if not directions:
        return None
    ks = {torch.as_tensor(v).reshape(-1, d).shape[0] for v in directions.values()}
    if len(ks) != 1:
        raise ValueError(f"every layer needs the same number of directions, got {sorted(ks)}")
    unknown = sorted(set(directions) - set(layers))
    if unknown:
        raise ValueError(f"directions given for layers {unknown} that are not extracted ({layers})")
    k = ks.pop()
    dir_matrix = torch.full((len(layers), k, d), torch.nan)
    for layer, value in directions.items():
        value = torch.as_tensor(value, dtype=torch.float32).reshape(k, d)
        dir_matrix[layers.index(layer)] = value / value.norm(dim=-1, keepdim=True)
    return dir_matrix


def _prepare_texts(tokenizer, items, names: list[str], add_special_tokens: bool) -> _Texts:
    """Tokenize the distinct texts once and map every item's spans to token indices."""
    text_ids: dict[str, int] = {}
    for text, _ in items:
        text_ids.setdefault(text, len(text_ids))
    unique = list(text_ids)
    tokenized = [_tokenize(tokenizer, t, add_special_tokens) for t in unique]
    item_tokens = []
    needed = [0] * len(unique)
    for text, item_spans in items:
        u = text_ids[text]
        idx = tokens_in_spans(text, tokenized[u][1], item_spans, validate=False)
        idx = {name: torch.tensor(idx.get(name, []), dtype=torch.long) for name in names}
        item_tokens.append(idx)
        for v in idx.values():
            if len(v):
                needed[u] = max(needed[u], int(v.max()) + 1)
    return _Texts(text_ids, unique, tokenized, item_tokens, needed)


def _cache_key(model, tokenizer, quantization, texts: _Texts, items, layers, dir_matrix, add_special_tokens: bool,
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


def _groups_by_text(items, names: list[str], texts: _Texts, tokenwise: set[str]):
    """Per distinct text: its groups ``(item, name, token indices, per-token outputs?)`` with at least one token."""
    by_text: dict[int, list[tuple[int, str, torch.Tensor, bool]]] = {}
    for i, (text, _) in enumerate(items):
        for name in names:
            idx = texts.item_tokens[i][name]
            if len(idx):
                by_text.setdefault(texts.ids[text], []).append((i, name, idx, name in tokenwise))
    return by_text


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


class _PartWriter:
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

    def __enter__(self) -> _PartWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
            elif self._pending is not None:  # keep what was computed; the exception in flight is the one to report
                self._pending.exception()
        finally:
            self._pool.shutdown(wait=True)


def _extract_here(job: _Job, items, key: str, final_path: Path, use_cache: bool, progress: bool, plan: dict):
    """Run (or, batch by batch, read from the cache) this process's part of an extraction."""
    part_dir = final_path.parent / f"{key}.parts"
    device = job.device
    start_time, processed = time.perf_counter(), 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    where = distributed.shard()
    if where is not None:  # a process of a sharded job: run this process's batches into the cache first
        with _PartWriter() as writer:
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
    with _PartWriter() as writer:
        for b, batch in enumerate(job.batches):
            part = part_dir / f"{b:06d}.safetensors"
            result = _load_part(part) if use_cache and part.exists() else None
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
        for p in sorted(part_dir.glob("*.safetensors")) if part_dir.exists() else []:
            p.unlink()
        if part_dir.exists():
            part_dir.rmdir()
    if where is not None:
        distributed.barrier()  # the others wait for the merged file
    else:
        record_pass("extract", processed, seconds, cached=False, processes=1, **plan)
    return stats


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


# Fewest padded tokens a forward pass of a split batch keeps (see _pieces), by device type; 8192 elsewhere: on a
# GPU a forward of a few thousand tokens of a large model runs near the speed of a larger one, on a CPU even one
# text at a time does.
_PIECE_MIN_TOKENS = {"cpu": 1024}


def _piece_min_tokens(device: torch.device) -> int:
    return _PIECE_MIN_TOKENS.get(device.type, 8192)


def _pieces(widths: list[int], min_tokens: int) -> list[tuple[int, int]]:
    """Split one planned batch, rows sorted longest first with ``widths`` tokens each, into runs of consecutive
    rows ``[(first, stop), ...]``, each one forward pass padded to its own longest row.

    The split minimises the padded tokens computed plus ``min_tokens // 8`` for each extra forward, with every run
    keeping at least ``min_tokens`` padded tokens (so that it still fills the device); a batch of fewer than
    ``2 * min_tokens`` padded tokens runs whole. The planned batches (:func:`plan_batches`) stay what they are, so
    cache files, keys and estimates do not change; only the padding is cut (the rows' values are independent of
    their neighbours in a batch up to rounding, as in any batching)."""
    n = len(widths)
    if n < 2 or n * widths[0] < 2 * min_tokens:
        return [(0, n)]
    bounds = sorted({round(k * n / min(n, 64)) for k in range(min(n, 64) + 1)})  # at most 64 runs: O(64^2)
    extra = min_tokens // 8
    best = {n: (0, n)}  # start bound -> (cost of the rows from it on, end of its first run)
    for a in reversed(bounds[:-1]):
        options = [
            ((b - a) * widths[a] + extra + best[b][0], b)
            for b in bounds
            if b > a and b in best and ((b - a) * widths[a] >= min_tokens or (a == 0 and b == n))
        ]
        if options:
            best[a] = min(options)
    runs, a = [], 0
    while a < n:
        runs.append((a, best[a][1]))
        a = best[a][1]
    return runs


@torch.no_grad()
def _run_batch(model, layout, layers, tokenized, needed, batch, by_text, dir_matrix, device, keep=False):
    """The forward passes over ``batch`` (distinct-text indices, longest first); returns reduced tensors on the CPU.

    The batch runs as one forward pass, or as a few where that cuts padding (:func:`_pieces`). Rows are
    right-padded and get no attention mask: attention is causal, so no real token attends to the pads after it
    (their values are never read), and without a mask SDPA runs its causal kernel, which skips the masked-out half
    of the scores (on a GPU: flash attention, grouped-query heads not repeated, no mask built, no host sync)."""
    groups = [(r, g) for r, u in enumerate(batch) for g in by_text.get(u, [])]
    sizes = [len(g[2]) for _, g in groups]
    owners = [j for j, (_, g) in enumerate(groups) if g[3]]
    n_tokenwise, n_layers, d = sum(sizes[j] for j in owners), len(layers), layout.hidden_size
    out = {"sums": torch.zeros(len(groups), n_layers, d, device=device),
           "norms": torch.zeros(len(groups), n_layers, device=device)}  # fmt: skip
    dirs, has_dirs = None, []
    if dir_matrix is not None:
        dirs, has_dirs = dir_matrix.to(device), [not bool(torch.isnan(m).any()) for m in dir_matrix]
        out["proj"] = torch.full((n_tokenwise, n_layers, dirs.shape[1]), torch.nan, device=device)
    if keep:
        out["act"] = torch.zeros(n_tokenwise, n_layers, d, device=device)
    for first, stop in _pieces([needed[u] for u in batch], _piece_min_tokens(device)):
        inputs, offset = _piece_inputs(tokenized, needed, batch, groups, first, stop, device)
        _forward_piece(model, layout, layers, inputs, offset, out, dirs, has_dirs)
    result = {"sums": out["sums"].cpu().contiguous(), "norms": out["norms"].cpu().contiguous()}
    for prefix in ("proj", "act"):
        if prefix in out:
            for j, chunk in zip(owners, torch.split(out[prefix].cpu(), [sizes[j] for j in owners])):
                result[f"{prefix}{j}"] = chunk.contiguous()
    return result


def _piece_inputs(tokenized, needed, batch, groups, first: int, stop: int, device):
    """The tensors of one forward over rows ``first..stop-1`` of ``batch``, on ``device``: right-padded
    ``input_ids`` and, per span token, its row, column and group; ``tokenwise``: the positions of the
    per-token outputs among the piece's span tokens. Also the number of per-token outputs of earlier rows."""
    width = max(needed[u] for u in batch[first:stop])
    input_ids = torch.zeros((stop - first, width), dtype=torch.long)  # pad id 0: pads are never attended to
    for r, u in enumerate(batch[first:stop]):
        input_ids[r, : needed[u]] = torch.tensor(tokenized[u][0][: needed[u]])
    mine = [(j, r, g) for j, (r, g) in enumerate(groups) if first <= r < stop]
    offset = sum(len(g[2]) for r, g in groups if r < first and g[3])
    per_token = torch.cat([torch.full((len(g[2]),), g[3]) for _, _, g in mine])
    inputs = {
        "input_ids": input_ids,
        "rows": torch.cat([torch.full((len(g[2]),), r - first) for _, r, g in mine]),
        "cols": torch.cat([g[2] for _, _, g in mine]),
        "group_of": torch.cat([torch.full((len(g[2]),), j) for j, _, g in mine]),
        "tokenwise": per_token.nonzero().squeeze(-1),  # on the CPU: no device sync
    }
    if device.type == "cuda":  # pinned and asynchronous: the copy does not wait for the forward before it
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in inputs.items()}, offset
    return {k: v.to(device) for k, v in inputs.items()}, offset


def _forward_piece(model, layout, layers, inputs, offset: int, out, dirs, has_dirs) -> None:
    """One forward pass over ``inputs`` (:func:`_piece_inputs`), adding the span tokens' statistics at each of
    ``layers`` into ``out`` (float32, on the device) from a hook, and stopping after the deepest of them (no later
    block, no final norm, no unembedding)."""
    rows, cols, group_of, tokenwise = inputs["rows"], inputs["cols"], inputs["group_of"], inputs["tokenwise"]
    lo, hi = offset, offset + len(tokenwise)
    last = max(layers)

    def reducer(li, layer):
        def fn(hidden):
            if hidden.device != rows.device:  # model spread over several devices
                h = hidden[rows.to(hidden.device), cols.to(hidden.device)].to(rows.device).float()
            else:
                h = hidden[rows, cols].float()
            out["sums"][:, li].index_add_(0, group_of, h)
            norms = h.norm(dim=-1)
            out["norms"][:, li].index_add_(0, group_of, norms)
            if dirs is not None and has_dirs[li]:
                sel = h[tokenwise]
                out["proj"][lo:hi, li] = (sel @ dirs[li].T) / norms[tokenwise].clamp_min(1e-12).unsqueeze(-1)
            if "act" in out:
                out["act"][lo:hi, li] = h[tokenwise]
            if layer == last:
                raise StopForward
            return None

        return fn

    handles = [register_residual_hook(layout, layer, reducer(li, layer)) for li, layer in enumerate(layers)]
    try:
        model(input_ids=inputs["input_ids"], use_cache=False)
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()


def _load_part(path: Path):
    try:
        return load_file(str(path))
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CacheError(
            f"cache file {path} is damaged ({err}); delete it (or the folder {path.parent}) to recompute that batch"
        ) from err


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
