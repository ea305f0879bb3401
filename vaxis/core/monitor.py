"""A live value monitor: generate from a chat and watch each token's projection on the value axis as it arrives.

``vaxis.monitor(model, tokenizer, axis, chat)`` decodes step by step with the KV cache, one forward pass per token,
reads the residual stream at the axis layer (the axis's main layer by default) for the newest token through
:func:`vaxis.capture`, and shows the generated tokens coloured by ``cos(h_t, v_L)`` (the colours of the value trace,
:func:`vaxis.core.trace.value_trace_html`: green high, red low, centred on the median of the tokens so far, so a
token's colour may shift as more arrive) above the running trace, one point per token, drawn as an inline SVG
polyline.

Where it shows: in a Jupyter kernel (JupyterLab, Notebook, VS Code) the rendering is one output that is updated in
place (an IPython display id, at most every ``refresh`` seconds and once at the end), so the tokens appear as they
are generated. papermill, nbclient and ``nbconvert --execute`` apply the same updates to that output, so an executed
notebook (and its HTML) keeps the final static rendering, once. Outside a kernel nothing is shown; the returned
:class:`Monitored` holds the numbers (and :meth:`Monitored.html` the rendering).

The decode is :func:`vaxis.generate`'s for one chat: the chat rendered by :func:`vaxis.render_chat` (with the
chat-template arguments bound to the tokenizer, so Qwen3's thinking mode is off as everywhere in vaxis), greedy
tokens equal to ``vaxis.generate``'s, samples drawn as ``vaxis.generate`` draws sample 0 for the same ``seed``, ending
at EOS or ``max_new_tokens``. Steering goes through :func:`vaxis.steer` (``positions="generated"`` by default: the
prompt is read as it is, every generated token is steered); the projection is read after the steering, as a forward
pass over the same tokens under the same steering reads it. The monitor records no pass in
:mod:`vaxis.core.timings` (it is a demonstration of a few dozen tokens, not a measured pass).
"""

from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import dataclass, field

import torch

from .cache import stable_hash
from .chat import render_chat
from .engine import sample
from .extract import input_device
from .generate_settings import eos_ids, resolve_steer
from .hooks import capture
from .hooks import steer as steer_context
from .layout import find_layout
from .trace import colour_scale, score_colour, value_trace_html


@dataclass
class Monitored:
    """What :func:`monitor` generated and read.

    ``prompt``: the rendered chat plus prefill; ``token_ids``: the new tokens (EOS included when ``finish_reason ==
    "eos"``); ``tokens``: each one's text as shown (a token that ends inside a multi-byte character shows nothing,
    the next one shows the character); ``text``: the new text without special tokens (as :class:`vaxis.Generation`);
    ``projections``: ``(n,)`` ``cos(h_t, v_L)`` of each new token at residual index ``layer``; ``finish_reason``:
    ``"eos"`` or ``"length"``."""

    prompt: str
    token_ids: list[int]
    tokens: list[str]
    text: str
    projections: torch.Tensor
    layer: int
    finish_reason: str
    max_new_tokens: int
    title: str = ""
    seconds: float = 0.0
    steered: dict = field(default_factory=dict)

    def html(self) -> str:
        """The static rendering: tokens coloured by their projection, the trace below them."""
        return monitor_html(self.tokens, self.projections, self.max_new_tokens, self.title, self._status())

    def _status(self) -> str:
        return f"done: {len(self.token_ids)} tokens in {self.seconds:.1f} s ({self.finish_reason})"

    def __repr__(self) -> str:
        mean = float(self.projections.mean()) if len(self.projections) else float("nan")
        return (f"Monitored({len(self.token_ids)} tokens, L={self.layer}, finish={self.finish_reason!r}, "
                f"mean projection {mean:+.4f}, text={self.text[:60]!r})")  # fmt: skip


def trace_svg(scores, max_tokens: int, width: int = 640, height: int = 120) -> str:
    """An inline SVG of the running trace: one point per token (x: token index on ``0..max_tokens``, y: the
    projection, axis scaled to the scores and 0), joined by a polyline, each point in its token's colour; a dashed
    line at the colour centre (the median) and a grey one at 0 when in range."""
    scores = [float(s) for s in torch.as_tensor(scores, dtype=torch.float32)]
    centre, scale = colour_scale(scores)
    low, high = min([0.0, *scores]), max([0.0, *scores])
    pad = 0.05 * (high - low) or 0.05
    low, high = low - pad, high + pad
    left, right, top, bottom = 48, width - 8, 8, height - 18

    def x(i: int) -> float:
        return left + (right - left) * i / max(1, max_tokens - 1)

    def y(v: float) -> float:
        return bottom - (bottom - top) * (v - low) / (high - low)

    parts = [f"<svg class='vaxis-trace' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"viewBox='0 0 {width} {height}' style='background:#fff;border:1px solid #ccc;margin-top:4px'>",
             f"<line x1='{left}' x2='{right}' y1='{y(0):.1f}' y2='{y(0):.1f}' stroke='#999' stroke-width='1'/>",
             f"<text x='4' y='{top + 8}' font-size='10' fill='#333'>{high:+.3f}</text>",
             f"<text x='4' y='{bottom}' font-size='10' fill='#333'>{low:+.3f}</text>",
             f"<text x='{left}' y='{height - 4}' font-size='10' fill='#333'>token 0 .. {max_tokens - 1}; "
             f"cos(h, v) per token, dashed: median {centre:+.3f}</text>"]  # fmt: skip
    if scores:
        parts.append(f"<line x1='{left}' x2='{right}' y1='{y(centre):.1f}' y2='{y(centre):.1f}' stroke='#666' "
                     "stroke-dasharray='4 3' stroke-width='1'/>")  # fmt: skip
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(scores))
        parts.append(f"<polyline fill='none' stroke='#333' stroke-width='1.2' points='{points}'/>")
        for i, v in enumerate(scores):
            parts.append(f"<circle cx='{x(i):.1f}' cy='{y(v):.1f}' r='2.5' fill='{score_colour(v - centre, scale)}' "
                         f"stroke='#555' stroke-width='0.5'><title>{i}: {v:+.4f}</title></circle>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def monitor_html(tokens: list[str], scores, max_tokens: int, title: str = "", status: str = "") -> str:
    """The monitor's rendering: ``tokens`` coloured by ``scores`` (:func:`vaxis.core.trace.value_trace_html`), a
    status line, and :func:`trace_svg` below."""
    head = f"{title} · {status}" if title and status else title or status
    return (f"<div class='vaxis-monitor'>{value_trace_html(tokens, scores, title=head)}"
            f"{trace_svg(scores, max_tokens)}</div>")  # fmt: skip


class _Live:
    """One display updated in place (IPython display id): at most every ``refresh`` seconds, or at once when forced
    (the first and the final rendering); nothing at all when not shown."""

    def __init__(self, show: bool | None, refresh: float):
        self.handle, self.refresh, self.last = None, refresh, 0.0
        if show is None:
            show = _in_kernel()
        if show:
            from IPython.display import display

            self.handle = display(_bundle("<div class='vaxis-monitor'>starting ...</div>", "starting ..."),
                                  raw=True, display_id=True)  # fmt: skip

    def update(self, render, force: bool = False) -> None:
        now = time.perf_counter()
        if self.handle is None or (not force and now - self.last < self.refresh):
            return
        self.handle.update(_bundle(*render()), raw=True)
        self.last = now


def _in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (where display updates reach a front end or nbclient)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return getattr(get_ipython(), "kernel", None) is not None


def _bundle(page: str, text: str) -> dict:
    return {"text/html": page, "text/plain": text}


def _check_chat(chat) -> None:
    if isinstance(chat, str) or not isinstance(chat, (list, tuple)):
        raise TypeError(f"chat must be a list of {{'role', 'content'}} messages, not {type(chat).__name__}: e.g. "
                        "[{'role': 'user', 'content': 'Hello'}]")  # fmt: skip
    if not chat:
        raise ValueError("chat is empty: give at least one message, e.g. [{'role': 'user', 'content': 'Hello'}]")
    if not isinstance(chat[0], dict):
        raise TypeError("monitor() takes one chat (a list of messages), not a list of chats: pass chats[0]")


def _check_layer(axis, layout, layer) -> int:
    layer = axis.main_layer if layer is None else layer
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise TypeError(f"layer={layer!r}: give a residual index (an int) or None for the axis's main layer")
    if not 0 <= layer <= layout.n_layers:
        raise ValueError(f"layer {layer} is out of range for this model: its residual indices are 0..{layout.n_layers} "
                         f"(the axis's main layer is {axis.main_layer})")  # fmt: skip
    if layer not in axis.layers:
        raise ValueError(f"the axis has no vector at layer {layer}: it holds residual indices {axis.layers[0]}.."
                         f"{axis.layers[-1]}; pass one of them as layer= (or None for its main layer {axis.main_layer})")  # fmt: skip
    return layer


def _steering(model, layout, axis, spec, positions) -> dict:
    """``{layer: vector}`` from ``steer=``: a number (% of the mean residual norm along ``axis`` at its main layer),
    an ``(Axis, percent)`` pair or ``{layer: vector}`` (as :func:`vaxis.generate`)."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        spec = (axis, float(spec)) if spec else None
    ok = positions in ("all", "prompt", "generated") or (isinstance(positions, int) and positions >= 0)
    if not ok or isinstance(positions, bool):
        raise ValueError(
            f"positions={positions!r}: use 'all', 'prompt', 'generated' or an int p >= 0 (tokens from p on)"
        )
    device = input_device(model)
    return {layer: v.to(device) for layer, v in resolve_steer(model, layout, spec).items()}


class _Stepper:
    """One sequence's forward passes over the KV cache, as :class:`vaxis.core.engine.Decoder` makes them for one row."""

    def __init__(self, model, ids: list[int]):
        params = inspect.signature(model.forward).parameters
        self.model, self.device = model, input_device(model)
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.extra = {"use_cache": True, **({"logits_to_keep": 1} if "logits_to_keep" in params else {})}
        self.ids = torch.tensor([ids], device=self.device)
        self.mask = torch.ones_like(self.ids)
        self.pos = torch.arange(len(ids), device=self.device).unsqueeze(0)
        self.kv = None

    def forward(self) -> torch.Tensor:
        """Run the pending tokens; returns the next-token logits ``(1, vocab)``."""
        out = self.model(input_ids=self.ids, attention_mask=self.mask, position_ids=self.pos,
                         **{self.cache_arg: self.kv}, **self.extra)  # fmt: skip
        self.kv = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        return out.logits[:, -1]

    def feed(self, token: int) -> None:
        self.pos = self.mask.sum(-1, keepdim=True)
        self.mask = torch.cat([self.mask, self.mask.new_ones(1, 1)], dim=1)
        self.ids = torch.tensor([[token]], device=self.device)


def _pieces(tokenizer, ids: list[int], shown: str) -> tuple[str, str]:
    """The text the newest of ``ids`` adds to ``shown`` (what is on screen already), and the new ``shown``:
    nothing while the decoded text ends inside a multi-byte character."""
    full = tokenizer.decode(ids, skip_special_tokens=False)
    if full.endswith("\ufffd") or not full.startswith(shown):
        return "", shown
    return full[len(shown) :], full


@torch.no_grad()
def monitor(
    model,
    tokenizer,
    axis,
    chat: list[dict],
    *,
    layer: int | None = None,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    steer=None,
    positions="generated",
    prefill: str = "",
    chat_template_kwargs: dict | None = None,
    show: bool | None = None,
    refresh: float = 0.1,
    title: str | None = None,
) -> Monitored:
    """Generate a reply to ``chat`` and show each token coloured by its projection on ``axis`` as it arrives.

    Args:
        model, tokenizer: a causal LM and its tokenizer (with a chat template), as :func:`vaxis.load_model` gives.
        axis: a :class:`vaxis.Axis` of this model.
        chat: one conversation, ``[{"role", "content"}, ...]``, rendered with the generation prompt.
        layer: residual index to read (default: the axis's main layer); the axis must hold a vector there.
        max_new_tokens: most new tokens (>= 1); generation also ends at EOS.
        temperature: 0 for greedy decoding (the tokens of ``vaxis.generate``), else sampling at this temperature.
        top_p: nucleus mass when sampling (1 = off).
        seed: sampling seed; the draws are ``vaxis.generate``'s sample 0 for this seed.
        steer: ``None``; a number (% of the mean residual norm, along ``axis`` at its main layer); an
            ``(Axis, percent_of_norm)`` pair; or ``{residual index: vector}`` (as :func:`vaxis.generate`).
        positions: what to steer (:func:`vaxis.steer`): ``"generated"`` (default), ``"all"``, ``"prompt"``, an int.
        prefill: assistant text fed after the generation prompt (not part of the returned ``text``).
        chat_template_kwargs: chat-template arguments over the tokenizer's bound ones (as :func:`vaxis.generate`).
        show: display live (default: when running in a Jupyter kernel).
        refresh: least seconds between two display updates (the final one is always sent).
        title: heading of the rendering (default: names the layer and the steering).

    Returns:
        :class:`Monitored` (tokens, text, per-token projections).
    """
    _check_chat(chat)
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: give an int >= 1")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"temperature={temperature}, top_p={top_p}: temperature 0 (greedy) or > 0, top_p in (0, 1]")
    axis.check_model(model)
    layout = find_layout(model)
    layer = _check_layer(axis, layout, layer)
    vectors = _steering(model, layout, axis, steer, positions)
    prompt = render_chat(tokenizer, chat, add_generation_prompt=True, **(chat_template_kwargs or {})).text + prefill
    if title is None:
        steered = ", ".join(f"L{k} |v|={float(v.norm()):.2f}" for k, v in vectors.items())
        title = f"value monitor, L={layer}" + (f", steered ({positions}: {steered})" if vectors else "")
    out = Monitored(prompt, [], [], "", torch.zeros(0), layer, "length", max_new_tokens, title, 0.0,
                    {k: v.cpu() for k, v in vectors.items()})  # fmt: skip
    sample_seed = int(stable_hash([seed, prompt, 0], 16), 16) & ((1 << 63) - 1)  # vaxis.generate's, for sample 0
    live = _Live(show, refresh)
    live.update(lambda: (monitor_html([], [], max_new_tokens, title, "generating ..."), "generating ..."), force=True)
    steering = steer_context(model, vectors, positions=positions, layout=layout) if vectors else None
    start = time.perf_counter()
    with steering or contextlib.nullcontext(), capture(model, [layer], layout=layout) as acts:
        _decode(model, tokenizer, out, acts, axis.unit(layer), (temperature, top_p, sample_seed), live)
    out.seconds = time.perf_counter() - start
    ids = out.token_ids[:-1] if out.finish_reason == "eos" else out.token_ids
    out.text = tokenizer.decode(ids, skip_special_tokens=True)
    live.update(lambda: (out.html(), repr(out)), force=True)
    return out


def _decode(model, tokenizer, out: Monitored, acts, direction: torch.Tensor, sampling: tuple, live: _Live) -> None:
    """The decode loop of :func:`monitor`: fills ``out`` token by token (under the caller's capture and steering)."""
    temperature, top_p, seed = sampling
    layer, n_max, eos = out.layer, out.max_new_tokens, set(eos_ids(model, tokenizer))
    unit = direction.float().to(input_device(model))
    stepper = _Stepper(model, tokenizer(out.prompt, add_special_tokens=False)["input_ids"])
    logits, shown, scores = stepper.forward(), "", []  # the prompt
    gen = torch.Generator(device=logits.device).manual_seed(seed) if temperature > 0 else None
    for _ in range(n_max):
        token = int(sample(logits, temperature, top_p, [gen])[0] if gen is not None else logits.argmax(-1)[0])
        out.token_ids.append(token)
        acts.clear()
        stepper.feed(token)
        logits = stepper.forward()  # the newest token: its residual, and the next token's logits
        h = acts[layer][0, -1].float()
        scores.append(float(h @ unit.to(h.device) / h.norm().clamp_min(1e-12)))
        piece, shown = _pieces(tokenizer, out.token_ids, shown)
        out.tokens.append(piece)
        out.projections = torch.tensor(scores)
        status = f"generating ... {len(scores)}/{n_max} tokens"
        live.update(lambda s=status: (monitor_html(out.tokens, out.projections, n_max, out.title, s), s))
        if token in eos:
            out.finish_reason = "eos"
            break
    full = tokenizer.decode(out.token_ids, skip_special_tokens=False)
    if full.startswith(shown) and out.tokens:  # bytes held back at the end (a cut multi-byte character)
        out.tokens[-1] += full[len(shown) :]
