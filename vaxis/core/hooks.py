"""Exact reading and steering of the residual stream with PyTorch hooks.

Residual index ``L`` (see :mod:`vaxis.core.layout`): ``L = 0`` is the input of block 0,
``L = k`` the output of block ``k - 1``, always before the final norm. Reading
at ``L`` gives ``hidden_states[L]`` of a Hugging Face forward (except the last
index, where Hugging Face applies the final norm); steering at ``L`` changes that
same point, so everything downstream of it sees the change.

Both context managers register hooks and remove them in ``finally``, so a model
is never left modified after an exception. Hooks are registered on the blocks
found by :func:`vaxis.core.layout.find_layout`, which also works through PEFT wrappers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from .layout import ModelLayout, find_layout


class StopForward(Exception):
    """Raised by a hook to end a forward pass once every needed layer was read."""


def _split_output(output):
    """Return (hidden, rebuild) for a block output that is a tensor or a tuple."""
    if isinstance(output, torch.Tensor):
        return output, lambda h: h
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return output[0], lambda h: (h, *output[1:])
    raise TypeError(f"cannot read a block output of type {type(output).__name__}")


def register_residual_hook(layout: ModelLayout, layer: int, fn) -> torch.utils.hooks.RemovableHandle:
    """Register ``fn(hidden) -> hidden | None`` at residual index ``layer``.

    ``layer == 0`` hooks the input of block 0; ``layer == k`` the output of block ``k - 1``.
    """
    if layer == 0:

        def pre_hook(module, args, kwargs):
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        return layout.blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True)

    def hook(module, args, output):
        hidden, rebuild = _split_output(output)
        new = fn(hidden)
        return None if new is None else rebuild(new)

    return layout.blocks[layer - 1].register_forward_hook(hook)


class Captured(Mapping):
    """Activations read by :func:`capture`: ``captured[L]`` is a tensor ``(batch, seq, d)``.

    Under ``generate`` with a KV cache each forward call adds its new tokens, and
    ``captured[L]`` concatenates them along the sequence axis, so it covers the
    prompt and every generated token that was fed back in.
    """

    def __init__(self, layers: list[int]):
        self._chunks: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}

    def __getitem__(self, layer: int) -> torch.Tensor:
        chunks = self._chunks[layer]
        if not chunks:
            raise KeyError(f"nothing was captured at layer {layer}: run a forward pass inside the context")
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)

    def __iter__(self):
        return iter(self._chunks)

    def __len__(self) -> int:
        return len(self._chunks)

    def clear(self) -> None:
        """Forget everything captured so far (e.g. between batches)."""
        for chunks in self._chunks.values():
            chunks.clear()


@contextmanager
def capture(
    model: nn.Module,
    layers,
    layout: ModelLayout | None = None,
    to_cpu: bool = False,
    dtype: torch.dtype | None = None,
) -> Iterator[Captured]:
    """Record the residual stream at ``layers`` during the forward passes in the block.

    Example::

        with vaxis.capture(model, [0, 12]) as acts:
            model(**batch)
        acts[12].shape  # (batch, seq, hidden)

    Args:
        model: the model (any wrapper :func:`find_layout` understands).
        layers: residual indices, ``0..n_layers``.
        layout: a precomputed :class:`ModelLayout` (found if omitted).
        to_cpu: move captured tensors to CPU as they are recorded.
        dtype: cast captured tensors (e.g. ``torch.float32``).
    """
    layout = layout or find_layout(model)
    layers = layout.check_layers(layers)
    captured = Captured(layers)
    handles = []

    def recorder(layer):
        def fn(hidden):
            out = hidden.detach()
            if dtype is not None:
                out = out.to(dtype)
            captured._chunks[layer].append(out.cpu() if to_cpu else out)
            return None

        return fn

    try:
        for layer in layers:
            handles.append(register_residual_hook(layout, layer, recorder(layer)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


class _ColumnTracker:
    """Knows which absolute sequence columns the current forward call covers.

    Registered as a pre-hook on the module that owns the blocks, which receives a
    2-D attention mask spanning cached plus new tokens during ``generate``. The
    first call of a new sequence (no cached tokens) fixes the prompt length.
    """

    def __init__(self):
        self.offset = 0
        self.length = 0
        self.prompt_length: int | None = None

    def __call__(self, module, args, kwargs):
        x = kwargs.get("input_ids")
        if x is None:
            x = kwargs.get("inputs_embeds")
        if x is None and args:
            x = args[0]
        if x is None:
            return None
        length = x.shape[1]
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            past = mask.shape[1] - length
        else:
            past = 0
            for value in kwargs.values():
                get_len = getattr(value, "get_seq_length", None)
                if callable(get_len):
                    past = int(get_len())
                    break
        self.offset, self.length = past, length
        if past == 0:
            self.prompt_length = length
        return None


def _owner_of_blocks(model: nn.Module, layout: ModelLayout) -> nn.Module:
    if "." not in layout.blocks_path:
        return model
    return model.get_submodule(layout.blocks_path.rsplit(".", 1)[0])


def steering_mask(positions, tracker: _ColumnTracker, batch: int, device) -> torch.Tensor | None:
    """Boolean ``(batch, length)`` mask of the columns to steer in the current call,
    or ``None`` for every column."""
    start, stop = tracker.offset, tracker.offset + tracker.length
    cols = torch.arange(start, stop, device=device)
    if isinstance(positions, str):
        if positions == "all":
            return None
        prompt = tracker.prompt_length if tracker.prompt_length is not None else stop
        if positions == "prompt":
            keep = cols < prompt
        elif positions == "generated":
            keep = cols >= prompt
        else:
            raise ValueError(f"positions={positions!r}: use 'all', 'prompt', 'generated', an int or a mask")
        return keep.unsqueeze(0).expand(batch, -1)
    if isinstance(positions, int):
        return (cols >= positions).unsqueeze(0).expand(batch, -1)
    if callable(positions):  # per-row rules, e.g. vaxis.generate's int positions under left padding
        return positions(start, stop, batch, device)
    if isinstance(positions, torch.Tensor):
        if positions.dim() == 1:
            positions = positions.unsqueeze(0).expand(batch, -1)
        if positions.shape[0] != batch or positions.shape[1] < stop:
            raise ValueError(
                f"the steering mask has shape {tuple(positions.shape)}, but this call covers batch {batch} "
                f"and columns {start}..{stop - 1}: give a (batch, total_length) mask"
            )
        return positions[:, start:stop].to(device=device, dtype=torch.bool)
    raise TypeError(f"positions must be 'all', 'prompt', 'generated', an int or a bool tensor, not {positions!r}")


@contextmanager
def steer(
    model: nn.Module,
    vectors: Mapping[int, torch.Tensor],
    positions="all",
    coefficient: float = 1.0,
    layout: ModelLayout | None = None,
) -> Iterator[None]:
    """Add ``coefficient * vectors[L]`` to the residual stream at each layer ``L``.

    ``h_t <- h_t + coefficient * v_L`` for every steered position ``t``.

    Args:
        model: the model.
        vectors: residual index -> vector of size ``hidden_size`` (use
            :func:`steering_vector` to build one from a direction and a
            percentage of the mean residual norm).
        positions: which sequence columns to steer: ``"all"`` (prompt and generated),
            ``"prompt"``, ``"generated"`` (every token produced by ``generate`` and fed
            back, including the first), an ``int`` p (columns >= p), or a boolean
            mask ``(batch, total_length)`` over absolute columns, or a callable
            ``(start, stop, batch, device) -> (batch, stop - start) bool mask | None``
            for columns ``start..stop-1`` of the current call. Column positions
            survive the KV cache: during ``generate`` each call knows its offset.
        coefficient: global multiplier.
        layout: a precomputed :class:`ModelLayout`.
    """
    layout = layout or find_layout(model)
    layout.check_layers(list(vectors))
    tracker = _ColumnTracker()
    prepared = {}
    for layer, vector in vectors.items():
        vector = torch.as_tensor(vector)
        if vector.shape != (layout.hidden_size,):
            raise ValueError(
                f"steering vector for layer {layer} has shape {tuple(vector.shape)}; "
                f"this model needs ({layout.hidden_size},)"
            )
        prepared[layer] = vector

    def adder(vector):
        def fn(hidden):
            delta = (coefficient * vector).to(device=hidden.device, dtype=hidden.dtype)
            mask = steering_mask(positions, tracker, hidden.shape[0], hidden.device)
            if mask is None:
                return hidden + delta
            return hidden + mask.unsqueeze(-1).to(hidden.dtype) * delta

        return fn

    handles = []
    try:
        owner = _owner_of_blocks(model, layout)
        handles.append(owner.register_forward_pre_hook(tracker, with_kwargs=True))
        for layer, vector in prepared.items():
            handles.append(register_residual_hook(layout, layer, adder(vector)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def steering_vector(
    direction: torch.Tensor,
    percent_of_norm: float | None = None,
    mean_norm: float | None = None,
    coefficient: float | None = None,
) -> torch.Tensor:
    """Build ``alpha * v / |v|`` for steering (METHOD.md section 0).

    Give either ``coefficient`` (alpha in residual units) or ``percent_of_norm``
    with ``mean_norm``, the mean residual-stream norm at that layer, so that
    ``alpha = percent_of_norm / 100 * mean_norm``.
    """
    direction = torch.as_tensor(direction, dtype=torch.float32)
    norm = direction.norm()
    if norm == 0:
        raise ValueError("cannot steer along a zero vector")
    if (coefficient is None) == (percent_of_norm is None):
        raise ValueError("give exactly one of coefficient= or percent_of_norm= (with mean_norm=)")
    if percent_of_norm is not None:
        if mean_norm is None or mean_norm <= 0:
            raise ValueError("percent_of_norm needs the layer's mean residual norm: pass mean_norm= (> 0)")
        coefficient = percent_of_norm / 100.0 * float(mean_norm)
    return coefficient * direction / norm
