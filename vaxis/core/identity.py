"""Model identity for cache keys: what a model computes, fingerprinted.

``model_identity(model)`` covers the name, revision and config, every parameter and buffer
(:func:`weights_digest`: SHA-256 on the CPU, an exact on-device sketch on a GPU, memoised per
model object with a check that notices in-place edits), PEFT adapters (names, configs, layer
states), dtype and quantization. A LoRA-wrapped model, a merged fine-tune or one changed weight
never shares an extraction cache entry with its base model.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .cache import stable_hash

# ---------------------------------------------------------------------------- identity


class ModelIdentityError(RuntimeError):
    """A model's weights could not be fingerprinted; the message says what to do instead."""


# The on-device sketch (see :func:`weights_digest`): rows of 2**16 words, two sums per row.
_SKETCH_PERIOD = 1 << 16
_SKETCH_PRIMES = (2_147_483_647, 2_147_483_629)  # the two largest primes below 2**31
_SKETCH_BATCH_WORDS = 1 << 24  # words per device pass: int64 temporaries of 128 MiB
_SKETCH_SEED = 0x5EED0A15
_PROBES = 16  # words per tensor read back for the memo check
_MEMO_ATTR = "_vaxis_weights_memo"
_sketch_weights: dict[torch.device, torch.Tensor] = {}


def _jsonable(obj):
    """``obj`` as JSON-ready data with a deterministic form: sets sorted, enums by value,
    objects by ``to_dict()`` or ``str`` (memory addresses removed)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return _jsonable(obj.value)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (set, frozenset)):
        return sorted((_jsonable(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True, default=str))
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if callable(getattr(obj, "to_dict", None)):
        return _jsonable(obj.to_dict())
    return re.sub(r" at 0x[0-9a-fA-F]+", "", str(obj))


@dataclass
class _Weight:
    """One tensor that enters the digest: ``values`` holds its bytes (``None`` for an alias
    of an earlier tensor), ``source`` is the tensor whose version counter and address the
    memo watches (``None``: not memoisable)."""

    name: str
    kind: str
    values: torch.Tensor | None
    source: torch.Tensor | None
    meta: dict


def _hooks(hook) -> list:
    if hook is None:
        return []
    return list(getattr(hook, "hooks", None) or [hook])


def _offloaded_value(model: torch.nn.Module, name: str) -> torch.Tensor | None:
    """The values of a weight that sits on the meta device because accelerate offloaded it
    (``device_map`` with ``"cpu"``/``"disk"``, ``cpu_offload``): read from the offload map
    of the hook on its module or a parent. ``None`` if no hook holds it."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        owner, local = ".".join(parts[:cut]), ".".join(parts[cut:])
        try:
            module = model.get_submodule(owner) if owner else model
        except AttributeError:
            continue
        for hook in _hooks(getattr(module, "_hf_hook", None)):
            weights_map = getattr(hook, "weights_map", None)
            if weights_map is None:
                continue
            try:
                value = weights_map[local]
            except (KeyError, IndexError, OSError):
                continue
            if isinstance(value, torch.Tensor) and value.device.type != "meta":
                return value
    return None


def _plain(name: str, kind: str, tensor: torch.Tensor, source: torch.Tensor | None, meta: dict) -> list[_Weight]:
    """``tensor`` as plain tensors: tensor subclasses with ``__tensor_flatten__`` (wrapper
    subclasses such as torchao's) are split into their inner tensors (not memoisable)."""
    values = tensor.detach()
    if type(values) is torch.Tensor:
        return [_Weight(name, kind, values, source, meta)]
    flatten = getattr(values, "__tensor_flatten__", None)
    if flatten is not None:
        attrs, ctx = flatten()
        out = []
        for attr in attrs:
            inner_meta = {**meta, "subclass": type(values).__name__, "ctx": _jsonable(ctx)}
            out.extend(_plain(f"{name}:{attr}", kind, getattr(values, attr), None, inner_meta))
        return out
    try:  # a Parameter subclass (bitsandbytes Params4bit / Int8Params): same storage, plain type
        return [_Weight(name, kind, values.as_subclass(torch.Tensor), source, meta)]
    except (RuntimeError, TypeError) as err:
        raise ModelIdentityError(
            f"model_identity cannot read the bytes of {name!r} ({type(tensor).__name__}): {err}. "
            "Pass use_cache=False to extract() for this model."
        ) from err


def _quant_state_weights(name: str, state, prefix: str = "quant_state") -> list[_Weight]:
    """The tensors and settings of a bitsandbytes ``QuantState`` (absmax, code, offset,
    nested ``state2``), read with ``getattr`` so bitsandbytes need not be installed."""
    settings = {}
    for attr in ("blocksize", "quant_type", "dtype", "shape", "nested"):
        value = getattr(state, attr, None)
        if value is not None:
            settings[attr] = _jsonable(value)
    out = [_Weight(f"{name}.{prefix}", "quant_settings", None, None, {"settings": settings})]
    for attr in ("absmax", "code", "offset"):
        value = getattr(state, attr, None)
        if isinstance(value, torch.Tensor):
            out.extend(_plain(f"{name}.{prefix}.{attr}", "quant_state", value, value, {}))
    nested = getattr(state, "state2", None)
    if nested is not None:
        out.extend(_quant_state_weights(name, nested, f"{prefix}.state2"))
    return out


def _collect_weights(model: torch.nn.Module) -> list[_Weight]:
    """Every parameter and buffer by name (a tensor reachable under two names, such as
    tied embeddings, is read once and recorded as an alias), with quantization state."""
    seen: dict[int, str] = {}
    out: list[_Weight] = []
    named = [
        ("param", model.named_parameters(remove_duplicate=False)),
        ("buffer", model.named_buffers(remove_duplicate=False)),
    ]
    for kind, items in named:
        for name, tensor in items:
            if tensor is None:
                continue
            if id(tensor) in seen:
                out.append(_Weight(name, kind, None, None, {"alias_of": seen[id(tensor)]}))
                continue
            seen[id(tensor)] = name
            meta = {"shape": list(tensor.shape), "dtype": str(tensor.dtype)}
            if tensor.device.type == "meta":
                value = _offloaded_value(model, name)
                if value is None:
                    raise ModelIdentityError(
                        f"model_identity cannot fingerprint {name!r}: it is on the meta device (offloaded or "
                        "not materialised) and no accelerate offload map holds its values. Load the model "
                        "without meta/disk offload, or pass use_cache=False to extract() for this model."
                    )
                out.extend(_plain(name, kind, value, None, meta))  # re-read on every call: not memoised
            else:
                out.extend(_plain(name, kind, tensor, tensor, meta))
            state = getattr(tensor, "quant_state", None)
            if state is not None:
                out.extend(_quant_state_weights(name, state))
            for attr in ("SCB", "CB"):  # bitsandbytes Int8Params
                extra = getattr(tensor, attr, None)
                if isinstance(extra, torch.Tensor):
                    out.extend(_plain(f"{name}.{attr}", "quant_state", extra, extra, {}))
    return out


def _flat_bytes(tensor: torch.Tensor) -> torch.Tensor:
    flat = (tensor if tensor.is_contiguous() else tensor.contiguous()).reshape(-1)
    return flat if flat.dtype == torch.uint8 else flat.view(torch.uint8)


def _words(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes as int32 words (uint8 when the byte count is not a multiple of 4)."""
    data = _flat_bytes(tensor)
    if data.numel() % 4:
        return data
    try:
        return data.view(torch.int32)
    except RuntimeError:  # storage offset not 4-byte aligned
        return data.clone().view(torch.int32)


def _sketch_weights_on(device: torch.device) -> torch.Tensor:
    weights = _sketch_weights.get(device)
    if weights is None:
        gen = torch.Generator().manual_seed(_SKETCH_SEED)
        shape = (len(_SKETCH_PRIMES), _SKETCH_PERIOD)
        weights = torch.randint(1, min(_SKETCH_PRIMES), shape, generator=gen, dtype=torch.int64).to(device)
        _sketch_weights[device] = weights
    return weights


def _device_sketch(words: torch.Tensor) -> torch.Tensor:
    """``(2, rows)`` int64 on ``words.device``: per row of 2**16 words (the last row shorter),
    ``sum_i (w_i * a_ki mod p_k)`` for two primes ``p_k`` and fixed random ``a_ki`` in ``[1, p_k)``.

    Exact integer arithmetic (products < 2**62, row sums < 2**47). One changed word
    changes row sum ``k`` modulo ``p_k`` unless ``p_k`` divides the change; a change of a
    32-bit word is below ``p_0 * p_1``, so at least one of the two sums always moves. Other
    changes (swaps, several words) go unseen with probability about ``p_0**-1 * p_1**-1`` per row.
    """
    weights = _sketch_weights_on(words.device)
    n, period = words.numel(), _SKETCH_PERIOD
    full = n // period
    body = words[: full * period].view(full, period)
    step = max(1, _SKETCH_BATCH_WORDS // period)
    out = []
    for start in range(0, full, step):
        x = body[start : start + step].to(torch.int64)
        out.append(torch.stack([(x * weights[k]).remainder_(p).sum(1) for k, p in enumerate(_SKETCH_PRIMES)]))
    if n > full * period or n == 0:
        x = words[full * period :].to(torch.int64)
        tail = [(x * weights[k, : x.numel()]).remainder_(p).sum(0, keepdim=True) for k, p in enumerate(_SKETCH_PRIMES)]
        out.append(torch.stack(tail))
    return torch.cat(out, dim=1)


def _on_device_sketch(device: torch.device) -> bool:
    """Whether tensors on ``device`` are digested by :func:`_device_sketch` (every device but
    the CPU, where SHA-256 of the bytes is faster than torch's int64 arithmetic)."""
    return device.type != "cpu"


def _probe(words: torch.Tensor) -> torch.Tensor:
    """``_PROBES`` words spread over the tensor (a strided view: one small copy)."""
    step = max(1, words.numel() // _PROBES)
    return words[step // 2 :: step][:_PROBES].to(torch.int64)


def _gather_to_cpu(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Move 1-D tensors to the CPU with one transfer per device, keeping their order."""
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    out: list[torch.Tensor] = [torch.empty(0)] * len(tensors)
    for indices in by_device.values():
        host = torch.cat([tensors[i].reshape(-1) for i in indices]).cpu()
        for i, part in zip(indices, host.split([tensors[i].numel() for i in indices])):
            out[i] = part
    return out


def _memo_key(weights: list[_Weight]) -> tuple | None:
    """What the memo is keyed on, or ``None`` if a weight cannot be watched (offloaded,
    inference-mode or subclass tensors): every weight's name, shape, dtype, device, storage
    address and version counter, plus ``_PROBES`` words of each read back from the device."""
    fields, probes = [], []
    for w in weights:
        if w.values is None:
            fields.append((w.name, w.kind, json.dumps(w.meta, sort_keys=True, default=str)))
            continue
        if w.source is None:
            return None
        try:
            version = w.source._version
            address = w.source.data_ptr()
        except RuntimeError:  # inference tensors have no version counter
            return None
        fields.append(
            (w.name, w.kind, tuple(w.source.shape), str(w.source.dtype), str(w.source.device), address, version)
        )
        probes.append(_probe(_words(w.values)))
    return tuple(fields), tuple(tuple(p.tolist()) for p in _gather_to_cpu(probes))


def _compute_digest(weights: list[_Weight]) -> str:
    headers, payloads, sketches = [], [], []
    for w in weights:
        header = {"name": w.name, "kind": w.kind, **w.meta}
        if w.values is not None:
            header.update(shape=list(w.values.shape), dtype=str(w.values.dtype))
            if not _on_device_sketch(w.values.device):
                header["scheme"] = "sha256"
                payloads.append(hashlib.sha256(_flat_bytes(w.values).numpy()).digest())
            else:
                words = _words(w.values)
                header["scheme"] = f"sketch/{words.dtype}"
                payloads.append(len(sketches))
                sketches.append(_device_sketch(words))
        else:
            payloads.append(b"")
        headers.append(header)
    fetched = _gather_to_cpu(sketches)
    digest = hashlib.sha256(b"vaxis-weights/1\n")
    for header, payload in zip(headers, payloads):
        if isinstance(payload, int):
            payload = fetched[payload].numpy().astype("<i8").tobytes()
        digest.update(json.dumps(_jsonable(header), sort_keys=True).encode())
        digest.update(len(payload).to_bytes(8, "little") + payload)
    return digest.hexdigest()


def weights_digest(model: torch.nn.Module, refresh: bool = False) -> str:
    """SHA-256 (hex) over every parameter and buffer of ``model``: names, shapes, dtypes and bytes.

    Each tensor is digested where it lives, one tensor at a time (never a copy of the whole
    model): on the CPU, SHA-256 of its bytes; on an accelerator, an exact on-device sketch of
    its bytes viewed as int32 words (two position-weighted sums modulo two primes per 2**16
    words, see :func:`_device_sketch`), so a model hashes to different digests on the CPU and
    on a GPU. The small per-tensor digests are combined with SHA-256 on the CPU. A changed
    element anywhere (one ulp of a bfloat16 weight, a swap of two rows) changes the digest.
    Buffers are included (the rotary ``inv_freq`` is a deterministic function of the config, so
    it never splits identical models; dynamic-RoPE models that rewrite it during a long forward
    pass get a new digest, i.e. a cache miss, never a wrong hit). bitsandbytes 4-bit weights
    contribute their packed bytes plus the ``quant_state`` (absmax, code, nested state, block
    size, type); weights that accelerate offloaded to the CPU or disk are read from its offload
    map; any other meta-device weight raises :class:`ModelIdentityError`.

    Memo: the digest is kept on the model object and reused while, for every tensor, the
    name, shape, dtype, device, storage address (``data_ptr``) and version counter
    (``_version``) are unchanged and ``_PROBES`` words read from spread positions are
    equal. torch bumps ``_version`` on every in-place op (``add_``, ``copy_``,
    ``w[3, 5] += x`` under ``no_grad``, optimizer steps, ``load_state_dict``); rebinding
    ``.data`` or ``.to()`` moves the address; adding, removing or renaming weights (PEFT
    wrapping, merging) changes the names. In-place writes through ``.data`` bypass the
    version counter: the probes catch those that touch most elements (a merged LoRA delta,
    a rescaled matrix), but a ``.data`` write to a few elements between probes is not seen;
    pass ``refresh=True`` after such an edit. Offloaded, inference-mode and tensor-subclass
    weights are re-hashed on every call.
    """
    with torch.no_grad():
        weights = _collect_weights(model)
        key = _memo_key(weights)
        memo = vars(model).get(_MEMO_ATTR)
        if not refresh and key is not None and memo is not None and memo[0] == key:
            return memo[1]
        digest = _compute_digest(weights)
    if key is not None:
        object.__setattr__(model, _MEMO_ATTR, (key, digest))
    else:
        vars(model).pop(_MEMO_ATTR, None)
    return digest


def _active_adapters(model) -> list | None:
    try:
        value = getattr(model, "active_adapters", None)
        value = value() if callable(value) else value
    except Exception:  # transformers' active_adapters() raises when no adapter is loaded
        return None
    return _jsonable([value] if isinstance(value, str) else value)


def adapter_identity(model: torch.nn.Module) -> dict | None:
    """PEFT adapters of ``model`` (a ``PeftModel`` or a transformers model with
    ``add_adapter``): adapter names, active adapters, a hash of every ``peft_config``, and a
    hash of each tuner layer's state (enabled or disabled, active and merged adapters,
    scaling). ``None`` when the model carries no adapters. Computed on every call (cheap)."""
    layers = []
    for name, module in model.named_modules():
        if not hasattr(module, "_disable_adapters"):  # peft's BaseTunerLayer and ModulesToSaveWrapper
            continue
        state = {"module": name, "type": type(module).__name__}
        for attr in ("disable_adapters", "active_adapters", "active_adapter", "merged_adapters", "scaling"):
            try:
                state[attr] = _jsonable(getattr(module, attr, None))
            except Exception:  # a property that needs state this layer lacks
                state[attr] = None
        layers.append(state)
    configs = getattr(model, "peft_config", None)
    configs = dict(configs) if isinstance(configs, Mapping) else {}
    if not configs and not layers:
        return None
    return {
        "names": sorted(configs),
        "active": _active_adapters(model),
        "configs": stable_hash(_jsonable(configs)),
        "layers": stable_hash(layers),
        "tuner_layers": len(layers),
    }


def model_identity(model, quantization: str | None = None, refresh: bool = False) -> dict:
    """What identifies a model's computation, for cache keys and run metadata.

    Returns a JSON-ready dict: ``name`` and ``revision`` (from the config), ``config`` (a
    hash of the config), ``dtype`` of the input embedding, ``quantization``, ``weights``
    (:func:`weights_digest`: every parameter and buffer, quantization state included) and
    ``adapters`` (:func:`adapter_identity`: PEFT adapter names, configs and layer states, or
    ``None``). A LoRA-wrapped model differs from its base even while LoRA B is still zero (the
    adapter's weights and config are part of it), a merged fine-tune or any single changed
    weight differs, and two loads of the same weights agree.

    The weight digest is memoised on the model object and recomputed when a weight changes
    (rule: :func:`weights_digest`); ``refresh=True`` forces a recomputation.

    Raises :class:`ModelIdentityError` for weights whose values cannot be read (meta tensors
    with no offload map).
    """
    config = model.config
    emb = model.get_input_embeddings().weight
    cfg = {k: v for k, v in config.to_dict().items() if k not in {"_name_or_path", "transformers_version"}}
    return {
        "name": getattr(config, "_name_or_path", type(model).__name__),
        "revision": getattr(config, "_commit_hash", None),
        "config": stable_hash(_jsonable(cfg)),
        "dtype": str(emb.dtype),
        "quantization": quantization or ("4bit" if getattr(model, "is_loaded_in_4bit", False) else None),
        "weights": weights_digest(model, refresh=refresh),
        "adapters": adapter_identity(model),
    }
