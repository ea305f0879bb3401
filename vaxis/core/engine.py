"""The decode loop behind :func:`vaxis.generate`: continuous batching over one KV cache, steered by a per-row mask.

Sequences wait in a queue (longest first, the order of :func:`vaxis.core.extract.plan_batches`). Rows run together in
one left-padded batch: every row's latest token sits in the same cache column, so one forward call decodes them
all. When rows finish (EOS, a stop string, ``max_new_tokens``) they leave the batch and its KV cache in groups, and
waiting sequences take their places (*refill*): their prompts run in a prefill call of their own, and their KV
cache is merged into the running one, left-padded to the same width (leading columns that no row uses any more
are cut). So a batch costs about the mean length of its rows, not the longest. With ``refill=False`` the next
sequences start only when the whole batch has finished: the batches of :func:`~vaxis.core.extract.plan_batches`, one
after the other (the engine before refilling).

Rows per batch: ``rows * (longest prompt among them + max_new_tokens) <= budget`` (the KV-cache width never
exceeds that bracket, since a row's tokens are at most its prompt plus ``max_new_tokens``); on a GPU
:func:`generation_budget` sizes the budget by free memory and the model's KV-cache bytes per token.

Nothing about a sequence depends on which rows it runs beside: position ids count its own tokens, attention
never reads another row or a padded column, it samples from its own ``torch.Generator``, and the steering mask is
computed per row from its own token index (``positions``: ``"all"``, ``"prompt"`` (prompt and prefill, padding
included), ``"generated"``, an int p (own tokens from p on) or a 1-D bool mask over own tokens). Padding changes
matrix shapes, so results equal one-at-a-time results up to float rounding (exactly in float64).

The KV cache must be Hugging Face's ``DynamicCache`` of plain layers to merge; another cache (sliding-window
layers, a model's own cache class) runs without refilling, and the engine says so once.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .extract import plan_batches
from .hooks import steer as steer_context

PREFILL_TOKENS = 32768  # rows x width of one prefill call: bounds its activations (MLP, attention scores)
_SAID: set[str] = set()


def say_once(message: str) -> None:
    """Print ``message`` the first time this process meets it."""
    if message not in _SAID:
        _SAID.add(message)
        print(message, flush=True)


def default_max_batch_tokens(device) -> int:
    """The budget of padded batches: 8192 on a CPU (about 80 short chats with 64 new tokens; a CPU decode step
    costs about the same for 16 or 64 rows, see benchmarks/RESULTS.md), 65536 on an accelerator."""
    return 8192 if torch.device(device).type == "cpu" else 65536


def kv_bytes_per_token(model) -> int:
    """Bytes one token occupies in the KV cache: layers x 2 (keys, values) x KV heads x head size x dtype size."""
    config = getattr(model.config, "text_config", None) or model.config
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    layers = getattr(config, "num_hidden_layers", None) or config.n_layer
    size = model.get_input_embeddings().weight.element_size()  # the activations' dtype (NF4 weights included)
    return int(layers * 2 * kv_heads * head_dim * size)


def generation_budget(model, device, reserve_fraction: float = 0.15) -> int:
    """Default ``max_batch_tokens`` of :func:`vaxis.generate`: on a CUDA device, the free memory less a reserve
    (``reserve_fraction`` of the device's memory, at least 4 GiB, for prefill activations and logits) divided by
    :func:`kv_bytes_per_token`, at least 65536; elsewhere :func:`default_max_batch_tokens`."""
    device = torch.device(device)
    if device.type != "cuda":
        return default_max_batch_tokens(device)
    free, total = torch.cuda.mem_get_info(device)
    usable = free - max(4 << 30, int(reserve_fraction * total))
    return max(65536, int(usable // kv_bytes_per_token(model)))


def left_padded(prompt_ids: Sequence[Sequence[int]], pad_id: int, device) -> tuple:
    """A left-padded batch: ``(input_ids, attention_mask, position_ids, pads)``, position ids counted
    over real tokens only (as Hugging Face ``generate`` does), ``pads`` the number of pads per row."""
    width = max(len(p) for p in prompt_ids)
    input_ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for r, p in enumerate(prompt_ids):
        input_ids[r, width - len(p) :] = torch.tensor(list(p), dtype=torch.long)
        mask[r, width - len(p) :] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)
    return input_ids, mask, position_ids, torch.tensor([width - len(p) for p in prompt_ids])


def sample(logits: torch.Tensor, temperature: float, top_p: float, gens: list) -> torch.Tensor:
    """One token per row: softmax(logits / T), nucleus-filtered, drawn with the row's own generator
    (exponential race: ``argmax p_i / E_i`` with ``E_i ~ Exp(1)`` draws ``i`` with probability ``p_i``)."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # mass before this token already reaches top_p
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
    noise = torch.stack([torch.empty(probs.shape[-1], device=probs.device).exponential_(generator=g) for g in gens])
    return (probs / noise).argmax(-1)


def steering_columns(positions, own: torch.Tensor, prefill: bool) -> torch.Tensor | None:
    """Which columns of a call to steer, ``(rows, columns)`` bool, or ``None`` for all: ``own`` is each column's
    index among its row's own tokens (-1 on padding), ``prefill`` whether the call runs prompts."""
    if isinstance(positions, str):
        if positions == "all":
            return None
        return torch.full(own.shape, prefill == (positions == "prompt"), dtype=torch.bool, device=own.device)
    if isinstance(positions, int):
        return own >= positions
    m = positions.to(device=own.device, dtype=torch.bool)
    return (own >= 0) & (own < len(m)) & m[own.clamp(0, len(m) - 1)]


@dataclass
class Job:
    """One sequence to decode: ``ids`` (prompt plus prefill tokens) and its generator's ``seed``."""

    key: object
    ids: list[int]
    seed: int


@dataclass
class Row:
    job: Job
    out: list[int] = field(default_factory=list)
    gen: torch.Generator | None = None
    scores: dict | None = None
    result: tuple | None = None  # (token ids, text, finish reason, scores) once finished
    reported: bool = False


class Decoder:
    """Decodes :class:`Job` s with the settings ``cfg`` of :func:`vaxis.generate` (``max_new_tokens``,
    ``temperature``, ``top_p``, ``eos``, ``stop``, ``positions``, ``vectors``, ``score``); see the module docstring."""

    def __init__(self, model, tokenizer, layout, cfg: dict, device, budget: int, refill: bool = True):
        self.model, self.tok, self.layout, self.cfg, self.device = model, tokenizer, layout, cfg, device
        self.budget, self.refill = budget, refill
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (cfg["eos"] or [0])[0]
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"  # transformers 5 renamed it
        self.extra = {"use_cache": True, **({"logits_to_keep": 1} if "logits_to_keep" in params else {})}
        self.eos, self.stops = set(cfg["eos"]), cfg["stop"]
        self.window = 4 * max((len(s) for s in self.stops), default=0) + 8
        self.rows: list[Row] = []
        self.kv = self.mask = self.pos = self.next_ids = None
        self.pads: list[int] = []  # leading padded columns of each row (host copy: no device sync to trim)
        self.columns: torch.Tensor | None = None  # the steering mask of the current call, a device tensor
        self.steps = 0  # forward calls of the decode loop (prefill calls not counted)
        self.at_once: list[Row] = []  # rows that finished at their first token (never in the batch)

    def run(self, jobs: Sequence[Job], done: Callable[[list[tuple[Job, tuple]]], None]) -> None:
        """Decode every job; ``done`` receives ``[(job, (token ids, text, finish reason, scores)), ...]`` as
        they finish (each job once)."""
        queue = deque(jobs)
        context = None
        if self.cfg["vectors"]:  # on the device already: no host-to-device copy in a step (nor in a CUDA graph)
            vectors = {layer: v.to(self.device) for layer, v in self.cfg["vectors"].items()}
            context = steer_context(self.model, vectors, self._steered_columns, layout=self.layout)
        with torch.no_grad(), context or contextlib.nullcontext():
            while queue or self.rows:
                group = self._admit(queue)
                if group:
                    self._prefill(group)
                else:
                    self._step()
                self._reap(done)

    def _reap(self, done) -> None:
        """Report newly finished rows; they leave the batch in groups (each drop copies the cache)."""
        finished = [r for r in self.rows if r.result is not None]
        news = self.at_once + [r for r in finished if not r.reported]
        if news:
            done([(r.job, r.result) for r in news])
        for r in news:
            r.reported = True
        self.at_once = []
        if 4 * len(finished) >= len(self.rows):
            self._keep([i for i, r in enumerate(self.rows) if r.result is None])

    def _steered_columns(self, start, stop, batch, device):
        return self.columns

    def _can_refill(self) -> bool:
        return _mergeable(self.kv)

    def _room(self, queue: deque) -> list[Job]:
        """The next jobs that fit beside the live rows: ``rows * (longest prompt + max_new_tokens) <= budget``."""
        live = [r for r in self.rows if r.result is None]
        longest, group = max((len(r.job.ids) for r in live), default=0), []
        new = self.cfg["max_new_tokens"]
        while queue:
            n, width = len(live) + len(group) + 1, max(longest, len(queue[0].ids)) + new
            if n > 1 and n * width > self.budget:
                break
            group.append(queue.popleft())
            longest = width - new
        return group

    def _admit(self, queue: deque) -> list[Job]:
        """Jobs to start now: all that fit when nothing runs; with refill, when the free rows reach an eighth of
        the batch (or every waiting job), the jobs that fit; else none."""
        if not queue or (self.rows and not self.refill):
            return []
        if self.rows and not self._can_refill():
            say_once(f"vaxis.generate: this model's KV cache ({type(self.kv).__name__} of "
                     f"{sorted({type(x).__name__ for x in getattr(self.kv, 'layers', [])})}) cannot be merged, "
                     "so finished rows are not refilled: each batch runs until its longest row ends")  # fmt: skip
            return []
        group = self._room(queue)
        live = sum(r.result is None for r in self.rows)
        if self.rows and len(group) < min(len(queue) + len(group), max(1, (live + len(group)) // 8)):
            queue.extendleft(reversed(group))
            return []
        if self.rows and group:
            self._keep([i for i, r in enumerate(self.rows) if r.result is None])
        return group

    def _forward(self, input_ids, mask, position_ids, kv):
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                         **{self.cache_arg: kv}, **self.extra)  # fmt: skip
        return out.logits[:, -1], out.cache if getattr(out, "cache", None) is not None else out.past_key_values

    def _prefill(self, group: list[Job]) -> None:
        """Run the group's prompts (in chunks of at most :data:`PREFILL_TOKENS`; the jobs of one prompt share one
        pass), choose each one's first token and merge the live ones into the batch."""
        for chunk in plan_batches([len(j.ids) for j in group], PREFILL_TOKENS, 1 << 30):
            self._prefill_chunk([group[i] for i in chunk])

    def _prefill_chunk(self, jobs: list[Job]) -> None:
        index = {ids: k for k, ids in enumerate(dict.fromkeys(tuple(j.ids) for j in jobs))}
        distinct = list(index)
        expand = torch.tensor([index[tuple(j.ids)] for j in jobs])
        input_ids, mask, position_ids, pads = left_padded(distinct, self.pad_id, self.device)
        self.columns = steering_columns(self.cfg["positions"], mask.cumsum(-1) - 1, True)
        logits, kv = self._forward(input_ids, mask, position_ids, None)
        logits = logits[expand.to(logits.device)]
        rows = [Row(j) for j in jobs]
        if self.cfg["score"]:
            logp = torch.log_softmax(logits.float(), dim=-1)
            scores = {k: torch.logsumexp(logp[:, ids], dim=-1).tolist() for k, ids in self.cfg["score"].items()}
            for q, row in enumerate(rows):
                row.scores = {k: v[q] for k, v in scores.items()}
        if self.cfg["temperature"] > 0:
            for row in rows:
                row.gen = torch.Generator(device=logits.device).manual_seed(row.job.seed)
        tokens = self._choose(logits, rows)
        live = [q for q, row in enumerate(rows) if row.result is None]
        self.at_once += [row for row in rows if row.result is not None]
        if not live:
            return
        index = expand[live]
        kv.batch_select_indices(index)
        on = index.to(mask.device)
        state = dict(
            mask=mask[on],
            pos=mask[on].sum(-1, keepdim=True),
            next_ids=tokens[torch.tensor(live, device=tokens.device)].unsqueeze(-1),
        )
        self._merge([rows[q] for q in live], kv, state, [int(pads[i]) for i in index])

    def _merge(self, rows: list[Row], kv, state: dict, pads: list[int]) -> None:
        """Join new rows (their cache ``kv`` and tensors ``state``) to the batch, padding the narrower side."""
        if not self.rows:
            self.rows, self.kv, self.pads = rows, kv, pads
            self.mask, self.pos, self.next_ids = state["mask"], state["pos"], state["next_ids"]
            return
        width, new_width = self.mask.shape[1], state["mask"].shape[1]
        if new_width < width:
            _pad_left(kv, width - new_width)
            state["mask"] = torch.nn.functional.pad(state["mask"], (width - new_width, 0))
            pads = [p + width - new_width for p in pads]
        elif width < new_width:
            _pad_left(self.kv, new_width - width)
            self.mask = torch.nn.functional.pad(self.mask, (new_width - width, 0))
            self.pads = [p + new_width - width for p in self.pads]
        for mine, theirs in zip(self.kv.layers, kv.layers):
            mine.keys, mine.values = torch.cat([mine.keys, theirs.keys]), torch.cat([mine.values, theirs.values])
        self.mask = torch.cat([self.mask, state["mask"]])
        self.pos = torch.cat([self.pos, state["pos"]])
        self.next_ids = torch.cat([self.next_ids, state["next_ids"]])
        self.rows, self.pads = self.rows + rows, self.pads + pads

    def _step(self) -> None:
        """One decode step of every row in the batch."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], dim=1)
        self.columns = steering_columns(self.cfg["positions"], self.pos, False)
        logits, self.kv = self._forward(self.next_ids, self.mask, self.pos, self.kv)
        self.steps += 1
        tokens = self._choose(logits, self.rows)
        self.next_ids, self.pos = tokens.unsqueeze(-1), self.pos + 1

    def _choose(self, logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
        """Greedy or sampled next tokens; each unfinished row takes its token and may finish."""
        if self.cfg["temperature"] > 0:
            tokens = sample(logits, self.cfg["temperature"], self.cfg["top_p"], [r.gen for r in rows])
        else:
            tokens = logits.argmax(-1)
        for row, token in zip(rows, tokens.tolist()):
            if row.result is None:
                row.out.append(token)
                row.result = self._finish(row)
        return tokens

    def _finish(self, row: Row) -> tuple | None:
        out, decode = row.out, self.tok.decode
        if out[-1] in self.eos:
            return out, decode(out[:-1], skip_special_tokens=True), "eos", row.scores
        if self.stops and any(s in decode(out[-self.window :], skip_special_tokens=True) for s in self.stops):
            text = decode(out, skip_special_tokens=True)
            return out, text[: min(text.find(s) for s in self.stops if s in text)], "stop", row.scores
        if len(out) == self.cfg["max_new_tokens"]:
            return out, decode(out, skip_special_tokens=True), "length", row.scores
        return None

    def _keep(self, keep: list[int]) -> None:
        """Keep only rows ``keep`` (in the batch and its cache), then cut leading columns no row uses."""
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.kv = self.mask = self.pos = self.next_ids = None
            self.pads = []
            return
        index = torch.tensor(keep)  # a CPU index works on any device (and on a split model's cache)
        self.kv.batch_select_indices(index)
        self.pads = [self.pads[i] for i in keep]
        device = self.mask.device
        self.mask, self.pos = self.mask[index.to(device)], self.pos[index.to(device)]
        self.next_ids = self.next_ids[index.to(self.next_ids.device)]
        cut = min(self.pads)
        if cut and _mergeable(self.kv):
            for layer in self.kv.layers:
                layer.keys, layer.values = layer.keys[:, :, cut:], layer.values[:, :, cut:]
            self.mask, self.pads = self.mask[:, cut:], [p - cut for p in self.pads]


def _mergeable(kv) -> bool:
    """Whether ``kv`` is a cache of plain dynamic layers, whose tensors can be padded, cut and joined."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(kv, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _pad_left(kv, n: int) -> None:
    for layer in kv.layers:
        layer.keys = torch.nn.functional.pad(layer.keys, (0, 0, n, 0))
        layer.values = torch.nn.functional.pad(layer.values, (0, 0, n, 0))


def plan_rows(lengths: Sequence[int], max_new_tokens: int, budget: int, static: bool = False) -> tuple[int, int]:
    """``(rows, width)`` of a batch of sequences with ``lengths`` prompt (and prefill) tokens: the width of its
    KV cache (the longest prompt plus ``max_new_tokens``; the static engine adds a margin of a quarter of
    ``max_new_tokens``, at least 16, so that it moves its rows once per that many steps) and the rows that fit
    ``rows * width <= budget`` (at least 1; the static engine takes no more slots than sequences)."""
    width = max(lengths, default=0) + max_new_tokens + (max(16, max_new_tokens // 4) if static else 0)
    rows = max(1, budget // width)
    return (max(1, min(rows, len(lengths))), width) if static else (rows, width)
