"""Logit lens of a direction: which tokens does adding ``v_L`` promote? (METHOD.md section 3)."""

from __future__ import annotations

import torch

from .layout import find_layout


@torch.no_grad()
def logit_lens(
    model, tokenizer, vector: torch.Tensor, k: int = 30, through_norm: bool = False
) -> list[tuple[str, float]]:
    """Top-``k`` tokens of ``W_U v`` (or ``W_U norm(v)`` with ``through_norm=True``, i.e. the
    model's final norm applied first, as the residual stream would be read out).

    Returns ``[(token_text, logit), ...]`` sorted by logit, descending.
    """
    layout = find_layout(model)
    if layout.unembed is None:
        raise ValueError("this model has no output embedding (get_output_embeddings() is None)")
    weight = layout.unembed.weight
    v = torch.as_tensor(vector, dtype=torch.float32).to(weight.device)
    if v.shape != (layout.hidden_size,):
        raise ValueError(f"vector has shape {tuple(v.shape)}, the model needs ({layout.hidden_size},)")
    if through_norm:
        if layout.final_norm is None:
            raise ValueError("no final norm found; pass through_norm=False")
        norm_dtype = next(layout.final_norm.parameters(), v).dtype
        v = layout.final_norm(v.view(1, 1, -1).to(norm_dtype)).view(-1).float()
    logits = weight.float() @ v
    top = torch.topk(logits, min(k, logits.numel()))
    return [(tokenizer.decode([int(i)]), float(s)) for s, i in zip(top.values.cpu(), top.indices.cpu())]
