"""A generation's settings, checked and resolved before anything is decoded.

:func:`check_arguments` checks :func:`vaxis.core.generate.generate`'s arguments (an error says what to give);
:func:`resolve_steer` turns ``steer=`` (a mapping or an ``(Axis, percent_of_norm)`` pair) into float32 CPU vectors;
:func:`positions_key` checks ``positions=`` and gives the form that enters the cache key; :func:`eos_ids` lists the
ids that end a sequence; :func:`sequence_seed` seeds each sequence's generator from ``(seed, prompt + prefill,
sample)``. The readouts (:mod:`vaxis.core.readout`) and the live monitor (:mod:`vaxis.core.monitor`) use the same.
"""

from __future__ import annotations

import hashlib

import torch

from .cache import stable_hash


def eos_ids(model, tokenizer) -> list[int]:
    """The ids that end a generation, sorted: the generation config's (else the config's) and the tokenizer's."""
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        ids = getattr(model.config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids))


def resolve_steer(model, layout, steer) -> dict[int, torch.Tensor]:
    """``{layer: float32 CPU vector}`` from a mapping or an ``(Axis, percent_of_norm)`` pair."""
    if steer is None:
        return {}
    if isinstance(steer, tuple):
        if len(steer) != 2 or not hasattr(steer[0], "steering_vector"):
            raise TypeError("steer= takes {layer: vector} or an (Axis, percent_of_norm) pair")
        axis, percent = steer
        axis.check_model(model)
        return {axis.main_layer: axis.steering_vector(float(percent)).float().cpu()}
    if not hasattr(steer, "items"):
        raise TypeError(
            f"steer= takes {{layer: vector}} or an (Axis, percent_of_norm) pair, not {type(steer).__name__}"
        )
    layout.check_layers(list(steer))
    vectors = {}
    for layer, vector in steer.items():
        vector = torch.as_tensor(vector).detach().float().cpu()
        if vector.shape != (layout.hidden_size,):
            raise ValueError(
                f"steering vector for layer {layer} has shape {tuple(vector.shape)}; this model needs "
                f"({layout.hidden_size},)"
            )
        vectors[int(layer)] = vector.contiguous()
    return vectors


def positions_key(positions):
    """``positions=`` checked (a ValueError that says what to give) and as it enters the cache key (a mask by its
    hash)."""
    if isinstance(positions, str):
        if positions not in ("all", "prompt", "generated"):
            raise ValueError(f"positions={positions!r}: use 'all', 'prompt', 'generated', an int or a 1-D bool mask")
        return positions
    if isinstance(positions, int) and not isinstance(positions, bool) and positions >= 0:
        return positions
    if isinstance(positions, torch.Tensor) and positions.dim() == 1:
        return {"mask": hashlib.sha256(positions.bool().cpu().numpy().tobytes()).hexdigest()}
    raise ValueError(
        f"positions={positions!r}: generate() takes 'all', 'prompt', 'generated', an int p >= 0 (each sequence's "
        "own tokens from p on) or a 1-D bool mask over each sequence's own tokens (prompt, then generated)"
    )


def sequence_seed(seed: int, text: str, sample: int) -> int:
    """The seed of one sequence's generator: from the base ``seed``, its prompt plus prefill and its sample index."""
    return int(stable_hash([seed, text, sample], 16), 16) & ((1 << 63) - 1)


def check_arguments(conversations, max_new_tokens, n_samples, temperature, top_p, prefill, stop):
    """``(prefills, stops)``: :func:`vaxis.core.generate.generate`'s ``prefill`` (one per conversation) and ``stop``
    as lists, once its arguments pass their checks (a ValueError that says what to give)."""
    if isinstance(conversations, (str, dict)) or not len(conversations):
        raise ValueError("conversations must be a non-empty list of chats (lists of {'role', 'content'} messages)")
    if isinstance(conversations[0], dict):
        raise ValueError("conversations must be a list of chats: wrap a single chat as [messages]")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: give an int >= 1")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples={n_samples!r}: give an int >= 1")
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: use 0 for greedy decoding or a positive value to sample")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p}: give a value in (0, 1]; 1 turns nucleus sampling off")
    n = len(conversations)
    prefills = [prefill or ""] * n if prefill is None or isinstance(prefill, str) else list(prefill)
    if len(prefills) != n or not all(isinstance(p, str) for p in prefills):
        raise ValueError(f"prefill: give one string, or a list of {n} strings (one per conversation)")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if not all(isinstance(s, str) and s for s in stops):
        raise ValueError("stop: give a list of non-empty strings")
    return prefills, stops
