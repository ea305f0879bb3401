"""A "value trace": one text with every token coloured by its projection on the axis."""

from __future__ import annotations

import html

import torch

from .hooks import capture


@torch.no_grad()
def token_projections(model, tokenizer, text: str, layer: int, direction: torch.Tensor):
    """``(tokens, offsets, scores)``: each token's text, character offsets and ``cos(h_t, v)``
    at residual index ``layer`` for the whole ``text``."""
    enc = tokenizer(text, return_tensors="pt", return_offsets_mapping=True, add_special_tokens=False)
    offsets = [tuple(o) for o in enc.pop("offset_mapping")[0].tolist()]
    device = model.get_input_embeddings().weight.device
    with capture(model, [layer]) as acts:
        model(**{k: v.to(device) for k, v in enc.items()}, use_cache=False)
    h = acts[layer][0].float()
    v = torch.as_tensor(direction, dtype=torch.float32).to(h.device)
    scores = (h @ v) / (h.norm(dim=-1) * v.norm()).clamp_min(1e-12)
    return [text[s:e] for s, e in offsets], offsets, scores.cpu()


def colour_scale(scores) -> tuple[float, float]:
    """``(centre, scale)`` of the value-trace colours for ``scores``: the median, and the largest absolute
    distance from it (``(0, 1)`` for no scores)."""
    scores = torch.as_tensor(scores, dtype=torch.float32)
    if not len(scores):
        return 0.0, 1.0
    centre = float(scores.median())
    return centre, float((scores - centre).abs().max())


def score_colour(score: float, scale: float) -> str:
    """The colour of ``score`` (already centred) on a scale of ``+-scale``: white at 0, green up to ``+scale``,
    red down to ``-scale``."""
    x = max(-1.0, min(1.0, score / scale)) if scale > 0 else 0.0
    if x >= 0:  # white -> green
        r, g, b = int(255 * (1 - x)), 255, int(255 * (1 - x))
    else:  # white -> red
        r, g, b = 255, int(255 * (1 + x)), int(255 * (1 + x))
    return f"rgb({r},{g},{b})"


def value_trace_html(
    tokens: list[str],
    scores,
    marks: dict[int, str] | None = None,
    title: str = "",
    start: int = 0,
) -> str:
    """HTML of ``tokens[start:]`` coloured by ``scores`` (green high, red low, scaled to the
    largest absolute score shown, centred on the median). ``marks`` maps a token index to a
    label (``"before"``, ``"reward"``, ``"after"``), drawn as a coloured underline (the legend names them when
    there are marks); hovering a token shows its score."""
    scores = torch.as_tensor(scores, dtype=torch.float32)
    centre, scale = colour_scale(scores[start:])
    underline = {"before": "#1f77b4", "reward": "#9467bd", "after": "#ff7f0e"}
    parts = [
        '<div style="font-family:monospace;font-size:12px;line-height:1.9;white-space:pre-wrap;'
        'border:1px solid #ccc;padding:8px;color:#000;background:#fff">'
    ]
    if title:
        parts.append(f"<div style='font-weight:bold;margin-bottom:4px'>{html.escape(title)}</div>")
    marks = marks or {}
    legend = " ".join(f"<span style='border-bottom:3px solid {c}'>{name}</span>" for name, c in underline.items())
    parts.append(
        f"<div style='margin-bottom:6px'>green = higher projection, red = lower (centre {centre:+.3f})"
        + (f"; underline: {legend}</div>" if marks else "</div>")
    )
    for i in range(start, len(tokens)):
        style = f"background:{score_colour(float(scores[i]) - centre, scale)}"
        if i in marks:
            style += f";border-bottom:3px solid {underline.get(marks[i], '#000')}"
        parts.append(f"<span title='{i}: {float(scores[i]):+.4f}' style='{style}'>{html.escape(tokens[i])}</span>")
    parts.append("</div>")
    return "".join(parts)
