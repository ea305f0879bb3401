"""Decoding in the slots of a preallocated KV cache, with the decode step captured in a CUDA graph.

:class:`StaticDecoder` is :class:`vaxis.core.engine.Decoder` (same queue, prefill, sampling, stopping and steering
rules, so the same results) with the batch held in fixed buffers: ``slots`` rows of Hugging Face's
``StaticCache`` (``slots x width`` tokens, ``width`` = longest prompt + ``max_new_tokens`` + a margin), the
attention mask, position ids, next tokens and the steering mask as device tensors changed in place. So:

* a finished row frees its slot at once, and a waiting sequence's prompt (run in a prefill pass of its own) is
  written into free slots so that its last token sits in the column every row writes next; no cache is copied
  when rows leave or join (the dynamic engine copies it in groups);
* when the write column reaches the cache's end, every row moves left by the columns no live row uses (one copy
  per ``width - longest row`` steps);
* on a CUDA device the decode step, steering included (the vector added at its layer times the mask buffer), is
  captured once per run in a CUDA graph and replayed: one launch per step instead of thousands; only the next
  tokens cross to the host. If capture fails (a model or kernel that cannot be captured), decoding goes on
  eagerly and says why once.

On a CPU the same slots run eagerly (the tests compare them with the dynamic engine and with one sequence at a
time); :func:`vaxis.generate` picks this engine on CUDA devices by default (``engine="auto"``).
"""

from __future__ import annotations

import torch

from .engine import Decoder, Job, plan_rows, say_once, steering_columns


class StaticDecoder(Decoder):
    """See the module docstring. ``lengths``: the prompt tokens of every job it will run (slots and width:
    :func:`vaxis.core.engine.plan_rows`)."""

    def __init__(self, model, tokenizer, layout, cfg, device, budget, lengths: list[int], graphs: bool):
        super().__init__(model, tokenizer, layout, cfg, device, budget, refill=True)
        self.n_slots, self.width = plan_rows(lengths, cfg["max_new_tokens"], budget, static=True)
        self.graphs, self.graph, self.graph_logits = graphs, None, None
        self.cache = None
        self.column = 0  # the column the next step writes, in every slot
        self.slot_rows: list = [None] * self.n_slots
        self.starts = [0] * self.n_slots  # first real column of each slot's row (host copy)
        self.row_slots: list[int] = []  # the slot of each live row (self.rows)
        self.index = None

    def _can_refill(self) -> bool:
        return True

    def _keep(self, keep: list[int]) -> None:  # rows leave at once in _reap
        pass

    def _room(self, queue) -> list[Job]:
        group = []
        while queue and len(self.rows) + len(group) < self.n_slots:
            group.append(queue.popleft())
        return group

    def _allocate(self, kv) -> None:
        from transformers import StaticCache

        self.cache = StaticCache(config=self.model.config, max_cache_len=self.width)
        heads = [layer.keys.shape[1] for layer in kv.layers]
        dims = [layer.keys.shape[-1] for layer in kv.layers]
        self.cache.early_initialization(self.n_slots, heads, dims, kv.layers[0].keys.dtype, kv.layers[0].keys.device)
        device = kv.layers[0].keys.device
        self.mask = torch.zeros((self.n_slots, self.width), dtype=torch.long, device=device)
        self.pos = torch.zeros((self.n_slots, 1), dtype=torch.long, device=device)
        self.next_ids = torch.zeros((self.n_slots, 1), dtype=torch.long, device=device)
        self.columns_buffer = torch.zeros((self.n_slots, 1), dtype=torch.bool, device=device)

    def _merge(self, rows, kv, state: dict, pads: list[int]) -> None:
        """Write the new rows' prompt cache into free slots, ending at the current write column."""
        if self.cache is None:
            self._allocate(kv)
        prompt_width = state["mask"].shape[1]
        if not self.rows:
            self._set_column(prompt_width)
        elif self.column < prompt_width:
            self._compact()
            if self.column < prompt_width:
                self._move(prompt_width - self.column)
        slots = [s for s, row in enumerate(self.slot_rows) if row is None][: len(rows)]
        index = torch.tensor(slots, device=self.mask.device)
        begin = self.column - prompt_width
        for mine, theirs in zip(self.cache.layers, kv.layers):
            mine.keys[index, :, begin : self.column] = theirs.keys
            mine.values[index, :, begin : self.column] = theirs.values
        self.mask[index] = 0
        self.mask[index, begin : self.column] = state["mask"]
        self.pos[index], self.next_ids[index] = state["pos"], state["next_ids"]
        for s, row, pad in zip(slots, rows, pads):
            self.slot_rows[s], self.starts[s] = row, begin + pad
        self.rows, self.row_slots = self.rows + rows, self.row_slots + slots
        self.index = torch.tensor(self.row_slots, device=self.mask.device)

    def _set_column(self, column: int) -> None:
        self.column = column
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(column)

    def _move(self, shift: int) -> None:
        """Move every slot's columns by ``shift`` (left when negative); columns moved in are masked."""
        width = self.width
        tensors = [t for layer in self.cache.layers for t in (layer.keys, layer.values)]
        if shift < 0:
            for t in tensors:
                t[:, :, : width + shift] = t[:, :, -shift:].clone()
            self.mask[:, : width + shift] = self.mask[:, -shift:].clone()
            self.mask[:, width + shift :] = 0
        else:
            for t in tensors:
                t[:, :, shift:] = t[:, :, : width - shift].clone()
            self.mask[:, shift:] = self.mask[:, : width - shift].clone()
            self.mask[:, :shift] = 0
        self.starts = [max(0, s + shift) for s in self.starts]
        self._set_column(self.column + shift)

    def _compact(self) -> None:
        """Move every row left by the leading columns that no live row uses."""
        shift = min((self.starts[s] for s in self.row_slots), default=self.column)
        if shift:
            self._move(-shift)

    def _step(self) -> None:
        if self.column >= self.width:
            self._compact()
        self.mask[:, self.column] = 1  # free slots too: a row with no column to attend to would give NaN
        columns = steering_columns(self.cfg["positions"], self.pos, False)
        if columns is not None:
            self.columns_buffer.copy_(columns)
        self.columns = None if columns is None else self.columns_buffer
        logits = self._decode()
        self.column += 1
        self.pos.add_(1)
        self.steps += 1
        tokens = self._choose(logits[self.index], self.rows)
        self.next_ids[self.index] = tokens.unsqueeze(-1)

    def _forward_static(self):
        out = self.model(input_ids=self.next_ids, attention_mask=self.mask, position_ids=self.pos,
                         **{self.cache_arg: self.cache}, **self.extra)  # fmt: skip
        return out.logits[:, -1]

    def _decode(self) -> torch.Tensor:
        if self.graphs and self.graph is None:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
            return self.graph_logits
        return self._forward_static()

    def _capture(self) -> None:
        """Capture one decode step (after two warm-up steps on a side stream, whose cache writes the real step
        overwrites) in a CUDA graph; on failure, decode eagerly from here on and say why once."""
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._forward_static()
                    self._set_column(self.column)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                logits = self._forward_static()
            self.graph, self.graph_logits = graph, logits
        except Exception as err:  # noqa: BLE001 (any failure to capture: decode eagerly)
            say_once(f"vaxis.generate: the decode step could not be captured in a CUDA graph ({type(err).__name__}: "
                     f"{err}); decoding eagerly")  # fmt: skip
            self.graphs = False
        self._set_column(self.column)

    def _reap(self, done) -> None:
        """Report newly finished rows and free their slots at once (nothing is copied)."""
        finished = [r for r in self.rows if r.result is not None]
        if self.at_once or finished:
            done([(r.job, r.result) for r in self.at_once + finished])
        self.at_once = []
        if finished:
            live = [i for i, r in enumerate(self.rows) if r.result is None]
            for i, r in enumerate(self.rows):
                if r.result is not None:
                    self.slot_rows[self.row_slots[i]] = None
            self.rows, self.row_slots = [self.rows[i] for i in live], [self.row_slots[i] for i in live]
            self.index = torch.tensor(self.row_slots, device=self.mask.device)
