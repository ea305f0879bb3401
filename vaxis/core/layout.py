"""Where a model's decoder blocks, final norm and unembedding live.

vaxis reads and steers the residual stream between decoder blocks. Rather than
hard-coding attribute paths per architecture, :func:`find_layout` applies rules
that hold for Llama, Qwen2/3, Gemma3, Mistral, GPT-2 and their PEFT wrappers:
the blocks are the largest ``nn.ModuleList`` whose children all share one class
and whose length equals the config's layer count. Any part can be overridden by
passing dotted module paths.

Residual index convention (used everywhere in vaxis): ``L = 0`` is the input of
block 0 (the embedding output, after any embedding scaling), ``L = k`` for
``k >= 1`` is the output of block ``k - 1``, before the final norm. This equals
``hidden_states[L]`` in Hugging Face outputs for every ``L`` except the last,
where Hugging Face applies the final norm and vaxis does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


class LayoutError(ValueError):
    """The model's decoder blocks could not be found, or a layer index is invalid."""


@dataclass(frozen=True)
class ModelLayout:
    """Where things are in one model. ``n_layers`` is the number of decoder blocks,
    so valid residual indices are ``0..n_layers``."""

    blocks_path: str
    blocks: nn.ModuleList
    final_norm_path: str | None
    final_norm: nn.Module | None
    unembed: nn.Module | None
    hidden_size: int

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def residual_indices(self) -> range:
        return range(self.n_layers + 1)

    def check_layers(self, layers) -> list[int]:
        """Validate residual indices and return them as a sorted list of unique ints."""
        if isinstance(layers, int):
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise LayoutError("no layers given: pass at least one residual index")
        out = []
        for layer in layers:
            if not isinstance(layer, int) or isinstance(layer, bool):
                raise LayoutError(f"layer {layer!r} must be an integer residual index")
            if not 0 <= layer <= self.n_layers:
                raise LayoutError(
                    f"layer {layer} is out of range: this model has residual indices 0..{self.n_layers} "
                    f"(0 = embeddings, {self.n_layers} = output of the last block)"
                )
            out.append(layer)
        return sorted(set(out))


def _get(model: nn.Module, path: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError as err:
        raise LayoutError(f"model has no submodule {path!r}") from err


def _config_layers(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    config = getattr(config, "get_text_config", lambda: config)()
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def _find_blocks(model: nn.Module) -> str:
    expected = _config_layers(model)
    candidates = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            classes = {type(child) for child in module}
            if len(classes) == 1:
                candidates.append((len(module), name))
    if expected is not None:
        matching = [c for c in candidates if c[0] == expected]
        if matching:
            candidates = matching
    if not candidates:
        raise LayoutError(
            f"could not find the decoder blocks of {type(model).__name__}: no nn.ModuleList of identical "
            "blocks. Pass blocks_path='model.layers' (or the right dotted path) to find_layout."
        )
    candidates.sort(key=lambda c: (-c[0], len(c[1])))
    return candidates[0][1]


_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "final_layer_norm", "norm_f")


def _find_final_norm(model: nn.Module, blocks_path: str) -> str | None:
    parent = blocks_path.rsplit(".", 1)[0] if "." in blocks_path else ""
    for name in _NORM_NAMES:
        path = f"{parent}.{name}" if parent else name
        try:
            model.get_submodule(path)
            return path
        except AttributeError:
            continue
    return None


def find_layout(
    model: nn.Module,
    blocks_path: str | None = None,
    final_norm_path: str | None = None,
) -> ModelLayout:
    """Find the decoder blocks, final norm and unembedding of ``model``.

    Args:
        model: a Hugging Face causal LM, possibly wrapped (PEFT, etc.).
        blocks_path: dotted path of the block ``nn.ModuleList`` (override the detector).
        final_norm_path: dotted path of the final norm (override the detector).
    """
    if blocks_path is None:
        blocks_path = _find_blocks(model)
    blocks = _get(model, blocks_path)
    if not isinstance(blocks, nn.ModuleList):
        raise LayoutError(f"{blocks_path!r} is a {type(blocks).__name__}, not an nn.ModuleList of blocks")
    if final_norm_path is None:
        final_norm_path = _find_final_norm(model, blocks_path)
    final_norm = _get(model, final_norm_path) if final_norm_path else None
    get_out = getattr(model, "get_output_embeddings", None)
    unembed = get_out() if callable(get_out) else None
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if config is not None and hasattr(config, "get_text_config") else config
    hidden = getattr(text_config, "hidden_size", None) or getattr(text_config, "n_embd", None)
    if hidden is None:
        raise LayoutError("could not read the hidden size from the model config")
    return ModelLayout(blocks_path, blocks, final_norm_path, final_norm, unembed, int(hidden))
