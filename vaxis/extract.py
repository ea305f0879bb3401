"""Fast, exact extraction of span statistics from the residual stream.

Given texts and, per text, named character spans (e.g. ``before`` and ``after``
a reward word), :func:`extract` returns for each span and each residual index
``L`` the sum of the activations ``h_t`` over the span's tokens, the number of
tokens, the sum of token norms ``|h_t|``, and (optionally) every token's cosine
``cos(h_t, u_k)`` with given directions ``u_k``. Means are ``sums / counts``.

How it is fast (and why the result is exact):

* Spans are mapped to tokens through the fast tokenizer's character offsets
  (:func:`vaxis.spans.tokens_in_spans`), never by searching text.
* Each text is run only up to the last token any of its spans needs: attention
  is causal, so later tokens cannot change earlier activations.
* The forward pass stops after the deepest requested block (no final norm, no
  unembedding), via an exception raised from the hook.
* Texts are sorted by length and batched with right padding under a token budget;
  activations are reduced on the device (float32) inside the hook, so full hidden
  states of all layers are never held, and memory does not grow with the
  number of texts beyond the small per-span results.
* Several items may share a text (e.g. one game with many failed attempts):
  each distinct text is run once.

Results are cached on disk under a key hashing the model identity, the texts,
the spans, the layers, the directions and the options; batches are written
atomically as they finish, so an interrupted run resumes where it stopped and
gives identical results.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from . import distributed
from .cache import atomic_write, cache_root, stable_hash
from .chat import bound_template_kwargs, render_chat
from .hooks import StopForward, _register_residual_hook
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


def _as_items(tokenizer, texts, spans):
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
    bound to it (:func:`vaxis.chat.bound_template_kwargs`) when there are any. Two tokenizers that split
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

    The one batch planner of the engine: :func:`extract`, :func:`vaxis.generate.generate` and the readouts
    of :mod:`vaxis.readout` batch with it, and :mod:`vaxis.estimate` calls it to plan a run before any
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


def _input_device(model) -> torch.device:
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
            (:mod:`vaxis.distributed`; the result is identical); ``None``: the setting of
            :func:`vaxis.distributed.use_processes` (1 unless changed).
        expect_key: internal (a process of a sharded job): the cache key the launching process
            computed; a process whose inputs hash otherwise stops the job.
    """
    layout = layout or find_layout(model)
    layers = layout.check_layers(list(layers) if layers is not None else list(layout.residual_indices))
    items, names = _as_items(tokenizer, texts, spans)
    tokenwise = set(names if token_spans is None else token_spans)
    unknown_names = tokenwise - set(names)
    if unknown_names:
        raise ValueError(f"token_spans names {sorted(unknown_names)} are not span names ({names})")

    dir_matrix = None
    if directions:
        ks = {torch.as_tensor(v).reshape(-1, layout.hidden_size).shape[0] for v in directions.values()}
        if len(ks) != 1:
            raise ValueError(f"every layer needs the same number of directions, got {sorted(ks)}")
        unknown = sorted(set(directions) - set(layers))
        if unknown:
            raise ValueError(f"directions given for layers {unknown} that are not extracted ({layers})")
        k = ks.pop()
        dir_matrix = torch.full((len(layers), k, layout.hidden_size), torch.nan)
        for layer, value in directions.items():
            value = torch.as_tensor(value, dtype=torch.float32).reshape(k, layout.hidden_size)
            dir_matrix[layers.index(layer)] = value / value.norm(dim=-1, keepdim=True)

    # Distinct texts, tokenized once.
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

    key = stable_hash(
        {
            "v": EXTRACT_VERSION,
            "model": model_identity(model, quantization),
            "tokenizer": tokenizer_identity(tokenizer),
            "texts": stable_hash(unique, 32),
            "items": stable_hash([[text_ids[t], s] for t, s in items], 32),
            "layers": layers,
            "directions": None if dir_matrix is None else hashlib.sha256(dir_matrix.numpy().tobytes()).hexdigest(),
            "special": add_special_tokens,
            "batching": [max_batch_tokens, max_batch_size],
            "tokenwise": sorted(tokenwise),
            "keep": keep_activations,
        },
        24,
    )
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "extract"
    final_path = folder / f"{key}.safetensors"
    if expect_key is not None and expect_key != key:
        raise distributed.DistributedError(
            f"this process's extraction inputs hash to {key}, the launching process's to {expect_key}: it loaded "
            "another model or read other inputs; nothing was merged"
        )
    distributed.same_everywhere(key, "extraction cache keys")
    runnable = [u for u in range(len(unique)) if needed[u] > 0]
    batches = plan_batches([needed[u] for u in runnable], max_batch_tokens, max_batch_size)
    batches = [[runnable[j] for j in b] for b in batches]
    plan = {"sequences": len(runnable), "batches": len(batches)}  # in every record, cached or not
    if use_cache and final_path.exists():
        stats = load_stats(final_path, key=key)
        stats.info.update(cached=True, cache_key=key)
        if distributed.shard() is None:
            record_pass("extract", sum(needed), 0.0, cached=True, **plan)
        return stats
    n_proc = distributed.processes_for(processes, sum(needed))
    if n_proc > 1:
        if not use_cache:
            raise ValueError("processes > 1 merges the processes' batches through the cache: keep use_cache=True")
        start_time = time.perf_counter()
        cpu_directions = {k: torch.as_tensor(v).detach().cpu() for k, v in (directions or {}).items()} or None
        kwargs = dict(
            texts=[t for t, _ in items], spans=[sp for _, sp in items], layers=layers, directions=cpu_directions,
            max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size, add_special_tokens=add_special_tokens,
            cache_dir=cache_dir, progress=progress, quantization=quantization, token_spans=token_spans,
            keep_activations=keep_activations,
        )  # fmt: skip
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
    if distributed.shard() is not None and not use_cache:
        raise ValueError("a process of a sharded job writes its batches to the cache: keep use_cache=True")

    # Groups: (item, name, token indices, per-token outputs?) with at least one token, per distinct text.
    by_text: dict[int, list[tuple[int, str, torch.Tensor, bool]]] = {}
    for i, (text, _) in enumerate(items):
        for name in names:
            idx = item_tokens[i][name]
            if len(idx):
                by_text.setdefault(text_ids[text], []).append((i, name, idx, name in tokenwise))

    n_layers, d = len(layers), layout.hidden_size
    sums = {n: torch.zeros(len(items), n_layers, d) for n in names}
    norm_sums = {n: torch.zeros(len(items), n_layers) for n in names}
    flat_proj: dict[tuple[int, str], torch.Tensor] = {}
    flat_act: dict[tuple[int, str], torch.Tensor] = {}
    device = _input_device(model)
    part_dir = folder / f"{key}.parts"
    start_time, processed = time.perf_counter(), 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    where = distributed.shard()
    if where is not None:  # a process of a sharded job: run this process's batches into the cache first
        for b in distributed.my_batches(len(batches)):
            part = part_dir / f"{b:06d}.safetensors"
            if not part.exists():
                result = _run_batch(model, layout, layers, tokenized, needed, batches[b], by_text, dir_matrix,
                                    device, keep_activations)  # fmt: skip
                atomic_write(part, lambda tmp, r=result: save_file(r, tmp))
                processed += sum(needed[u] for u in batches[b])
        distributed.note_share(tokens_this_process=processed)
        processed = 0  # the merged file counts every process's tokens
        distributed.barrier()
        if where[0] != 0:  # process 0 merges every batch into the final file, then everyone reads it
            distributed.barrier()
            return load_stats(final_path, key=key)
    bar = tqdm(total=sum(needed[u] for u in runnable), unit="tok", desc="extract", disable=not progress or where is not None,
               mininterval=10)  # fmt: skip
    for b, batch in enumerate(batches):
        part = part_dir / f"{b:06d}.safetensors"
        result = _load_part(part) if use_cache and part.exists() else None
        if result is None:
            result = _run_batch(
                model, layout, layers, tokenized, needed, batch, by_text, dir_matrix, device, keep_activations
            )
            if use_cache:
                atomic_write(part, lambda tmp, r=result: save_file(r, tmp))
        groups = [g for u in batch for g in by_text.get(u, [])]
        for g, (i, name, _, per_token) in enumerate(groups):
            sums[name][i] = result["sums"][g]
            norm_sums[name][i] = result["norms"][g]
            if per_token and dir_matrix is not None:
                flat_proj[(i, name)] = result[f"proj{g}"]
            if per_token and keep_activations:
                flat_act[(i, name)] = result[f"act{g}"]
        tokens = sum(needed[u] for u in batch)
        processed += tokens
        bar.update(tokens)
    bar.close()
    seconds = time.perf_counter() - start_time
    stats = SpanStats(
        layers=layers,
        names=names,
        sums=sums,
        counts={n: torch.tensor([len(t[n]) for t in item_tokens]) for n in names},
        norm_sums=norm_sums,
        token_indices={n: [t[n] for t in item_tokens] for n in names},
        text_lengths=torch.tensor([len(tokenized[text_ids[t]][0]) for t, _ in items]),
        projections=None,
        info={},
    )
    kept_names = [n for n in names if n in tokenwise]
    if dir_matrix is not None:
        empty = torch.zeros(0, n_layers, dir_matrix.shape[1])
        stats.projections = {n: [flat_proj.get((i, n), empty) for i in range(len(items))] for n in kept_names}
    if keep_activations:
        empty = torch.zeros(0, n_layers, d)
        stats.activations = {n: [flat_act.get((i, n), empty) for i in range(len(items))] for n in kept_names}
    stats.info = {
        "cached": False,
        "cache_key": key,
        "tokens_processed": processed,
        "tokens_total": sum(len(t[0]) for t in tokenized),
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


@torch.no_grad()
def _run_batch(model, layout, layers, tokenized, needed, batch, by_text, dir_matrix, device, keep=False):
    """One forward pass over ``batch`` (distinct-text indices); returns reduced tensors."""
    width = max(needed[u] for u in batch)
    pad_id = 0
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, u in enumerate(batch):
        ids = tokenized[u][0][: needed[u]]
        input_ids[r, : len(ids)] = torch.tensor(ids)
        mask[r, : len(ids)] = 1
    groups = [(r, g) for r, u in enumerate(batch) for g in by_text.get(u, [])]
    rows = torch.cat([torch.full((len(g[2]),), r) for r, g in groups]).to(device)
    cols = torch.cat([g[2] for _, g in groups]).to(device)
    group_of = torch.cat([torch.full((len(g[2]),), j) for j, (_, g) in enumerate(groups)]).to(device)
    per_token = torch.cat([torch.full((len(g[2]),), g[3]) for _, g in groups]).to(device)
    tokenwise_rows = per_token.nonzero().squeeze(-1)
    n_groups = len(groups)
    d = layout.hidden_size
    out_sums = torch.zeros(n_groups, len(layers), d, device=device)
    out_norms = torch.zeros(n_groups, len(layers), device=device)
    proj = acts = None
    if dir_matrix is not None:
        dirs = dir_matrix.to(device)
        proj = torch.full((len(tokenwise_rows), len(layers), dirs.shape[1]), torch.nan, device=device)
    if keep:
        acts = torch.zeros(len(tokenwise_rows), len(layers), d, device=device)
    last = max(layers)
    has_dirs = [] if dir_matrix is None else [not bool(torch.isnan(m).any()) for m in dir_matrix]

    def reducer(li, layer):
        def fn(hidden):
            if hidden.device != rows.device:  # model spread over several devices
                h = hidden[rows.to(hidden.device), cols.to(hidden.device)].to(rows.device).float()
            else:
                h = hidden[rows, cols].float()
            out_sums[:, li].index_add_(0, group_of, h)
            norms = h.norm(dim=-1)
            out_norms[:, li].index_add_(0, group_of, norms)
            if proj is not None and has_dirs[li]:
                sel = h[tokenwise_rows]
                proj[:, li] = (sel @ dirs[li].T) / norms[tokenwise_rows].clamp_min(1e-12).unsqueeze(-1)
            if acts is not None:
                acts[:, li] = h[tokenwise_rows]
            if layer == last:
                raise StopForward
            return None

        return fn

    handles = [_register_residual_hook(layout, layer, reducer(li, layer)) for li, layer in enumerate(layers)]
    try:
        model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False)
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    result = {"sums": out_sums.cpu().contiguous(), "norms": out_norms.cpu().contiguous()}
    sizes = [len(g[2]) for _, g in groups if g[3]]
    owners = [j for j, (_, g) in enumerate(groups) if g[3]]
    for prefix, values in (("proj", proj), ("act", acts)):
        if values is not None:
            for j, chunk in zip(owners, torch.split(values.cpu(), sizes)):
                result[f"{prefix}{j}"] = chunk.contiguous()
    return result


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
