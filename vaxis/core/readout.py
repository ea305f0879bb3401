"""Length-free readouts: what the model would answer next, from one forward pass.

The published critique of the value axis (METHOD.md section 7b) found that positive steering mostly
shortens answers. A yes-rate counted in generated text mixes "the model is more confident" with "the
model stops sooner"; the log-probability of the answer tokens at the answer position does not: it
is read from a single forward pass over the prompt, under the same steering, with no sampling.

* :func:`answer_token_ids`: the first-token ids of an answer's spellings (``Yes``, `` yes``, ...).
* :func:`next_token_logprobs`: log P(answer) at the position after each chat's generation prompt
  (and optional prefill), summed over each answer's spellings, batched with left padding and the
  same position ids and steering as :func:`vaxis.core.generate.generate`.
* :func:`answer_readout`: the same forward pass also gives the projections on given directions of
  the last ``n_pre`` prompt tokens (the pre-response readout), and, one cached step later, of each
  prefilled answer's tokens (the response-token readout of paper Fig 3): one prompt pass serves
  every answer, where running each prefilled text separately would repeat the prompt per answer.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from .cache import cached_tensors
from .chat import render_chat
from .engine import default_max_batch_tokens, left_padded
from .extract import input_device, plan_batches
from .generate_settings import resolve_steer
from .hooks import steer as steer_context
from .layout import find_layout


def answer_token_ids(tokenizer, spellings: Sequence[str]) -> list[int]:
    """Distinct first-token ids of ``spellings`` (e.g. ``["Yes", " Yes", "yes", " yes"]``), each
    tokenized on its own, without special tokens."""
    ids = []
    for s in spellings:
        first = tokenizer(s, add_special_tokens=False)["input_ids"][:1]
        if not first:
            raise ValueError(f"{s!r} tokenizes to nothing")
        if first[0] not in ids:
            ids.append(first[0])
    return ids


def yes_no_ids(tokenizer) -> dict[str, list[int]]:
    """``{"yes": [...], "no": [...]}``: first-token ids of the usual spellings of Yes and No; a token
    shared by both (e.g. a bare space) is dropped from both, so neither answer claims it."""
    yes = answer_token_ids(tokenizer, ["Yes", " Yes", "yes", " yes", "YES"])
    no = answer_token_ids(tokenizer, ["No", " No", "no", " no", "NO"])
    shared = set(yes) & set(no)
    out = {"yes": [t for t in yes if t not in shared], "no": [t for t in no if t not in shared]}
    if not out["yes"] or not out["no"]:
        raise ValueError("this tokenizer gives Yes and No the same first token; a next-token readout cannot tell them")
    return out


@torch.no_grad()
def next_token_logprobs(
    model,
    tokenizer,
    conversations: Sequence[list[dict]],
    answers: Mapping[str, Sequence[int]],
    *,
    prefill: str | Sequence[str] | None = None,
    steer=None,
    positions="all",
    max_batch_tokens: int | None = None,
    chat_template_kwargs: dict | None = None,
    cache: bool = True,
) -> dict[str, torch.Tensor]:
    """``log P(answer)`` at the next position of each chat (rendered with the generation prompt,
    then ``prefill``), for each answer: the log of the summed probabilities of its token ids.

    Args:
        conversations: chats, as for :func:`vaxis.core.generate.generate`.
        answers: ``{name: [token ids]}``, e.g. :func:`yes_no_ids`.
        prefill: assistant prefix (one string, or one per chat).
        steer, positions: as for :func:`vaxis.core.generate.generate` (``"all"`` steers the whole prompt).
        max_batch_tokens: padded tokens per forward pass.
        cache: keep the result on disk (:func:`vaxis.core.cache.cached_tensors`), keyed by the model's and
            tokenizer's identities, the rendered texts, the answers' ids and the steering vectors.

    Returns:
        ``{name: (n_conversations,) float32 tensor}`` on the CPU.
    """
    if not len(conversations):
        raise ValueError("give at least one conversation")
    n = len(conversations)
    prefills = [prefill or ""] * n if prefill is None or isinstance(prefill, str) else list(prefill)
    if len(prefills) != n:
        raise ValueError(f"prefill: give one string, or a list of {n} strings")
    if not isinstance(positions, str):
        raise ValueError("positions: a readout takes 'all' or 'prompt' (every position here is a prompt position)")
    layout = find_layout(model)
    vectors = resolve_steer(model, layout, steer)
    kwargs = chat_template_kwargs or {}
    texts = [
        render_chat(tokenizer, c, add_generation_prompt=True, **kwargs).text + p
        for c, p in zip(conversations, prefills)
    ]
    index = {name: torch.tensor(list(t), dtype=torch.long) for name, t in answers.items()}

    def compute():
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        device = input_device(model)
        budget = max_batch_tokens or default_max_batch_tokens(device)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        out = {name: torch.zeros(n) for name in answers}
        for batch in plan_batches([len(i) for i in ids], budget, 1 << 30):
            input_ids, mask, position_ids, _ = left_padded([ids[i] for i in batch], pad_id, device)
            with steer_context(model, vectors, positions, layout=layout) if vectors else contextlib.nullcontext():
                logits = model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                               **_last_logits_only(model)).logits[:, -1]  # fmt: skip
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()
            for name, tokens in index.items():
                out[name][batch] = torch.logsumexp(logp[:, tokens], dim=-1)
        return out

    key = _readout_key("next_token_logprobs", model, tokenizer, texts, vectors, answers=index, positions=positions)
    return cached_tensors("readout", key, compute, enabled=cache)


def _last_logits_only(model) -> dict:
    """``{"logits_to_keep": 1}`` where the model's forward takes it (skips the unembedding elsewhere)."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def _readout_key(kind: str, model, tokenizer, texts, vectors, **rest) -> dict:
    """What a readout depends on, for :func:`vaxis.core.cache.cached_tensors`."""
    import hashlib

    from .cache import stable_hash
    from .extract_items import tokenizer_identity
    from .identity import model_identity

    def norm(v):
        if isinstance(v, torch.Tensor):
            return hashlib.sha256(v.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()
        if isinstance(v, Mapping):
            return {str(k): norm(x) for k, x in v.items()}
        return v

    return {
        "v": 1,
        "kind": kind,
        "model": model_identity(model),
        "tokenizer": tokenizer_identity(tokenizer),
        "texts": stable_hash(list(texts), 32),
        "steer": norm({str(layer): v for layer, v in sorted(vectors.items())}),
        **{k: norm(v) for k, v in rest.items()},
    }


@dataclass
class AnswerReadout:
    """What :func:`answer_readout` reads at the answer position, per conversation.

    ``logprobs[name]``: ``(n,)`` log P(answer ``name``) at the answer position (first-token ids of
    its spellings, as :func:`next_token_logprobs`); ``pre``: ``(n, n_layers, K)`` mean over the last
    ``n_pre`` prompt tokens of ``cos(h_t, u_k)``; ``response[name]``: ``(n, n_layers, K)`` mean of
    ``cos(h_t, u_k)`` over the tokens of answer ``name`` prefilled after the prompt.
    """

    layers: list[int]
    logprobs: dict[str, torch.Tensor]
    pre: torch.Tensor
    response: dict[str, torch.Tensor]


def _cosine_hooks(layout, layers, unit, out, cols: slice):
    """Hooks adding ``cos(h[:, cols], unit[l])`` (mean over cols) into ``out[:, l]``."""
    from .hooks import register_residual_hook

    def make(li):
        def fn(hidden):
            h = hidden[:, cols].float()
            cos = (h @ unit[li].to(h.device).T) / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            out[:, li] = cos.mean(1).cpu()

        return fn

    return [register_residual_hook(layout, layer, make(li)) for li, layer in enumerate(layers)]


@torch.no_grad()
def answer_readout(
    model,
    tokenizer,
    conversations: Sequence[list[dict]],
    answers: Mapping[str, str],
    directions: Mapping[int, torch.Tensor],
    *,
    answer_ids: Mapping[str, Sequence[int]] | None = None,
    n_pre: int = 10,
    steer=None,
    max_batch_tokens: int | None = None,
    chat_template_kwargs: dict | None = None,
    cache: bool = True,
) -> AnswerReadout:
    """Read, at the answer position of each chat (its generation prompt rendered), the answers'
    log-probabilities, the projections of the last ``n_pre`` prompt tokens, and the projections of
    each answer's tokens when it is prefilled (one cached step per answer after one prompt pass).

    Args:
        answers: ``{name: text}`` prefilled as the assistant's answer, e.g. ``{"yes": "Yes", "no": "No"}``.
        directions: ``{residual index: (K, d)}`` directions to project on (normalised here).
        answer_ids: ``{name: token ids}`` for the log-probabilities (default: :func:`yes_no_ids`
            when the answers are yes and no, else each answer's first token).
        steer: as for :func:`vaxis.core.generate.generate`; every position is steered, the prefilled
            answer too, and the projections read the steered residual stream.
        cache: keep the result on disk, keyed like :func:`next_token_logprobs` plus the directions.
    """
    if not len(conversations):
        raise ValueError("give at least one conversation")
    if n_pre < 1:
        raise ValueError(f"n_pre={n_pre}: read at least one token before the answer")
    layout = find_layout(model)
    layers = layout.check_layers(sorted(directions))
    unit = torch.stack([torch.as_tensor(directions[layer], dtype=torch.float32).reshape(-1, layout.hidden_size)
                        for layer in layers])  # fmt: skip
    unit = unit / unit.norm(dim=-1, keepdim=True)
    vectors = resolve_steer(model, layout, steer)
    if answer_ids is None:
        answer_ids = yes_no_ids(tokenizer) if set(answers) == {"yes", "no"} else {
            k: answer_token_ids(tokenizer, [v]) for k, v in answers.items()
        }  # fmt: skip
    kwargs = chat_template_kwargs or {}
    prompts = [render_chat(tokenizer, c, add_generation_prompt=True, **kwargs).text for c in conversations]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in prompts]
    if min(len(i) for i in ids) < n_pre:
        raise ValueError(f"a prompt is shorter than n_pre={n_pre} tokens")
    tails = _answer_tails(tokenizer, prompts, ids, answers)

    def compute() -> dict:
        reading = _Reading(model, tokenizer, layout, layers, unit, vectors, answers, answer_ids, tails, n_pre)
        return reading.run(ids, max_batch_tokens)

    key = _readout_key("answer_readout", model, tokenizer, prompts, vectors, answers=dict(answers),
                       answer_ids={k: list(v) for k, v in answer_ids.items()}, directions=dict(zip(map(str, layers), unit)),
                       n_pre=n_pre)  # fmt: skip
    flat = cached_tensors("readout", key, compute, enabled=cache)
    return AnswerReadout(
        layers,
        {name: flat[f"logprobs/{name}"] for name in answer_ids},
        flat["pre"],
        {name: flat[f"response/{name}"] for name in answers},
    )


def _answer_tails(tokenizer, prompts: list[str], ids: list[list[int]], answers: Mapping[str, str]) -> dict:
    """``{name: [token ids of answer name after prompt i]}``: the tokens each answer adds to each rendered prompt
    (a ValueError when an answer merges with the prompt's last tokens)."""
    tails = {}
    for name, text in answers.items():
        tails[name] = []
        for prompt, prompt_ids in zip(prompts, ids):
            full = tokenizer(prompt + text, add_special_tokens=False)["input_ids"]
            if full[: len(prompt_ids)] != prompt_ids or len(full) == len(prompt_ids):
                raise ValueError(
                    f"answer {text!r} merges with the end of the prompt into other tokens; prefill it differently"
                )
            tails[name].append(full[len(prompt_ids) :])
    return tails


@dataclass
class _Reading:
    """The forward passes of one :func:`answer_readout`: per batch of prompts one steered prompt pass (log-probs at
    the answer position, projections of its last ``n_pre`` tokens), then one cached step per prefilled answer."""

    model: object
    tokenizer: object
    layout: object
    layers: list[int]
    unit: torch.Tensor  # (n_layers, K, d), unit rows
    vectors: dict
    answers: Mapping[str, str]
    answer_ids: Mapping[str, Sequence[int]]
    tails: dict
    n_pre: int

    def run(self, ids: list[list[int]], max_batch_tokens: int | None) -> dict:
        """Every prompt's readout, flat for the cache (``logprobs/<name>``, ``response/<name>``, ``pre``)."""
        n, k = len(ids), self.unit.shape[1]
        result = AnswerReadout(
            self.layers,
            {name: torch.zeros(n) for name in self.answer_ids},
            torch.zeros(n, len(self.layers), k),
            {name: torch.zeros(n, len(self.layers), k) for name in self.answers},
        )
        device = input_device(self.model)
        budget = max_batch_tokens or default_max_batch_tokens(device)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        for batch in plan_batches([len(i) + 8 for i in ids], budget, 1 << 30):
            padded = left_padded([ids[i] for i in batch], pad_id, device)
            vectors, layout = self.vectors, self.layout
            with steer_context(self.model, vectors, "all", layout=layout) if vectors else contextlib.nullcontext():
                self.batch(batch, padded, result, device)
        flat = {f"logprobs/{name}": v for name, v in result.logprobs.items()}
        flat.update({f"response/{name}": v for name, v in result.response.items()}, pre=result.pre)
        return flat

    def batch(self, batch: list[int], padded, result: AnswerReadout, device) -> None:
        """The prompt pass of ``batch`` (left-``padded``) and its answers' steps, into ``result``'s rows."""
        input_ids, mask, position_ids, _ = padded
        pre = torch.zeros(len(batch), len(self.layers), self.unit.shape[1])
        handles = _cosine_hooks(self.layout, self.layers, self.unit, pre, slice(-self.n_pre, None))
        try:
            output = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=True,
                                **_last_logits_only(self.model))  # fmt: skip
        finally:
            for h in handles:
                h.remove()
        logp = torch.log_softmax(output.logits[:, -1].float(), dim=-1).cpu()
        kv = output.cache if getattr(output, "cache", None) is not None else output.past_key_values
        for name, tokens in self.answer_ids.items():
            result.logprobs[name][batch] = torch.logsumexp(logp[:, list(tokens)], dim=-1)
        result.pre[batch] = pre
        for name in self.answers:
            rows = [self.tails[name][i] for i in batch]
            result.response[name][batch] = self.prefilled(name, rows, mask, position_ids, kv, device)

    def prefilled(self, name: str, rows: list[list[int]], mask, position_ids, kv, device) -> torch.Tensor:
        """``(rows, n_layers, K)``: the mean projections of answer ``name``'s tokens (``rows``, one per prompt),
        run as one step on a copy of the prompts' KV cache ``kv``."""
        width = max(len(r) for r in rows)
        if any(len(r) != width for r in rows):
            raise ValueError(f"answer {self.answers[name]!r} tokenizes differently after different prompts")
        step = torch.tensor(rows, dtype=torch.long, device=device)
        step_mask = torch.cat([mask, mask.new_ones(len(rows), width)], dim=1)
        step_pos = position_ids[:, -1:] + 1 + torch.arange(width, device=device)
        got = torch.zeros(len(rows), len(self.layers), self.unit.shape[1])
        handles = _cosine_hooks(self.layout, self.layers, self.unit, got, slice(None))
        cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        try:
            self.model(input_ids=step, attention_mask=step_mask, position_ids=step_pos, use_cache=True,
                       **{cache_arg: copy.deepcopy(kv)})  # fmt: skip
        finally:
            for h in handles:
                h.remove()
        return got
