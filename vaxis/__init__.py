"""vaxis: find, test and use the value axis of chat language models.

Public API::

    model, tokenizer = vaxis.load_model("smollm2-135m")
    with vaxis.capture(model, [0, 12]) as acts: ...
    with vaxis.steer(model, {12: vector}, positions="generated"): ...
    stats = vaxis.extract(model, tokenizer, texts, spans)
    live = vaxis.monitor(model, tokenizer, axis, chat)  # tokens coloured by the axis as they arrive

Residual index ``L`` means ``hidden_states[L]``: 0 = embeddings, k = output of
block k-1, always read before the final norm (see :mod:`vaxis.core.layout`).
"""

__version__ = "0.1.0"

from .core.axis import Axis
from .core.chat import ChatTemplateError, render_chat
from .core.distributed import DistributedError, use_processes
from .core.extract import extract
from .core.generate import generate
from .core.generate_cache import Generation
from .core.hooks import capture, steer, steering_vector
from .core.identity import ModelIdentityError, model_identity, weights_digest
from .core.layout import LayoutError, ModelLayout, find_layout
from .core.models import ALIASES, ModelLoadError, load_model, load_tokenizer
from .core.monitor import Monitored, monitor
from .core.spans import SpanError, tokens_in_spans
from .core.spanstats import CacheError, SpanStats, load_stats, save_stats
from .run.checks import ParameterError, check_notebook
from .run.config import resolve as resolve_config

__all__ = [
    "ALIASES",
    "Axis",
    "CacheError",
    "DistributedError",
    "ChatTemplateError",
    "Generation",
    "LayoutError",
    "ModelLayout",
    "ModelIdentityError",
    "ModelLoadError",
    "Monitored",
    "ParameterError",
    "SpanError",
    "SpanStats",
    "capture",
    "check_notebook",
    "extract",
    "find_layout",
    "generate",
    "load_model",
    "load_stats",
    "load_tokenizer",
    "model_identity",
    "monitor",
    "weights_digest",
    "render_chat",
    "resolve_config",
    "save_stats",
    "steer",
    "steering_vector",
    "tokens_in_spans",
    "use_processes",
]
