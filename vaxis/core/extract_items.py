"""What an extraction runs on: its inputs checked and prepared before any forward pass.

:func:`as_items` normalises texts or chats and their character spans to ``(text, {name: [(start, end)]})`` items;
:func:`prepare_texts` tokenizes each distinct text once (a fast tokenizer's offsets) and maps every item's spans
to token indices (:func:`vaxis.core.spans.tokens_in_spans`), noting how far each text must run; the directions
become one matrix of unit vectors (:func:`direction_matrix`) and the span tokens are grouped per text
(:func:`groups_by_text`). :func:`tokenizer_identity` fingerprints a tokenizer for the cache keys of extraction,
generation and the readouts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from .chat import bound_template_kwargs, render_chat
from .spans import tokens_in_spans, validate_spans


def as_items(tokenizer, texts, spans):
    """Normalise inputs to (text, {name: [(s, e)]}) pairs. Chats are rendered and
    their spans, given as ``(message_index, start, end)``, mapped to the text."""
    if isinstance(texts, (str, dict)):
        raise TypeError("texts must be a list of strings or of chats (lists of messages)")
    texts = list(texts)
    if not texts:
        raise ValueError("no texts given: pass at least one text (or chat)")
    if spans is None or len(spans) != len(texts):
        raise ValueError(
            f"give one span mapping per text: got {len(texts)} texts and "
            f"{'no' if spans is None else len(spans)} span mappings"
        )
    items = []
    for i, (text, item_spans) in enumerate(zip(texts, spans)):
        if not isinstance(item_spans, Mapping) or not item_spans:
            raise ValueError(f"text {i}: spans must be a non-empty mapping name -> [(start, end), ...]")
        if isinstance(text, list):
            rendered = render_chat(tokenizer, text)
            mapped = {}
            for name, ranges in item_spans.items():
                mapped[name] = []
                for rng in ranges:
                    if len(rng) != 3:
                        raise ValueError(f"text {i} is a chat: span {name!r} needs (message_index, start, end)")
                    mapped[name].append(rendered.span_in_message(*rng))
            text, item_spans = rendered.text, mapped
        elif not isinstance(text, str):
            raise TypeError(f"text {i} is a {type(text).__name__}; give a string or a list of messages")
        if not text:
            raise ValueError(f"text {i} is empty")
        item_spans = {name: [tuple(r) for r in ranges] for name, ranges in item_spans.items()}
        validate_spans(item_spans, len(text), where=f"text {i}: ")
        items.append((text, item_spans))
    names = sorted({name for _, s in items for name in s})
    return items, names


def _tokenize(tokenizer, text: str, add_special_tokens: bool):
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "vaxis maps spans to tokens through character offsets, which only fast tokenizers give: "
            "load the tokenizer with use_fast=True"
        )
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
    return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]


def tokenizer_identity(tokenizer) -> str:
    """Hash of a fast tokenizer's full definition (vocabulary, merges, normaliser, pre- and
    post-processor: ``backend_tokenizer.to_str()``; ~35 ms for SmolLM2's), with the chat-template arguments
    bound to it (:func:`vaxis.core.chat.bound_template_kwargs`) when there are any. Two tokenizers that split
    the same text differently, or render chats with other arguments, never share a cache entry."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("vaxis needs a fast tokenizer (one with a backend_tokenizer): load it with use_fast=True")
    definition = backend.to_str()
    bound = bound_template_kwargs(tokenizer)
    if bound:  # no arguments: the same hash as before they existed, so earlier caches stay valid
        definition += "\nchat_template_kwargs=" + json.dumps(bound, sort_keys=True)
    return hashlib.sha256(definition.encode()).hexdigest()[:32]


def tokenwise_names(names: list[str], token_spans) -> set[str]:
    """The span names that get per-token outputs: ``token_spans``, checked against ``names`` (default: all)."""
    tokenwise = set(names if token_spans is None else token_spans)
    unknown_names = tokenwise - set(names)
    if unknown_names:
        raise ValueError(f"token_spans names {sorted(unknown_names)} are not span names ({names})")
    return tokenwise


@dataclass
class Texts:
    """The distinct texts of one call, each tokenized once, and what the items need of them."""

    ids: dict[str, int]  # text -> index of the distinct text
    unique: list[str]
    tokenized: list[tuple[list[int], list[tuple[int, int]]]]  # (token ids, character offsets) per distinct text
    item_tokens: list[dict[str, torch.Tensor]]  # per item: span name -> token indices
    needed: list[int]  # per distinct text: tokens up to its last span token (0: no span token at all)


def direction_matrix(directions, layers: list[int], d: int) -> torch.Tensor | None:
    """``(n_layers, K, d)`` unit directions on the CPU (NaN rows for layers without any), or None."""
    if not directions:
        return None
    ks = {torch.as_tensor(v).reshape(-1, d).shape[0] for v in directions.values()}
    if len(ks) != 1:
        raise ValueError(f"every layer needs the same number of directions, got {sorted(ks)}")
    unknown = sorted(set(directions) - set(layers))
    if unknown:
        raise ValueError(f"directions given for layers {unknown} that are not extracted ({layers})")
    k = ks.pop()
    dir_matrix = torch.full((len(layers), k, d), torch.nan)
    for layer, value in directions.items():
        value = torch.as_tensor(value, dtype=torch.float32).reshape(k, d)
        dir_matrix[layers.index(layer)] = value / value.norm(dim=-1, keepdim=True)
    return dir_matrix


def prepare_texts(tokenizer, items, names: list[str], add_special_tokens: bool) -> Texts:
    """Tokenize the distinct texts once and map every item's spans to token indices."""
    text_ids: dict[str, int] = {}
    for text, _ in items:
        text_ids.setdefault(text, len(text_ids))
    unique = list(text_ids)
    tokenized = [_tokenize(tokenizer, t, add_special_tokens) for t in unique]
    item_tokens = []
    needed = [0] * len(unique)
    for text, item_spans in items:
        u = text_ids[text]
        idx = tokens_in_spans(text, tokenized[u][1], item_spans, validate=False)
        idx = {name: torch.tensor(idx.get(name, []), dtype=torch.long) for name in names}
        item_tokens.append(idx)
        for v in idx.values():
            if len(v):
                needed[u] = max(needed[u], int(v.max()) + 1)
    return Texts(text_ids, unique, tokenized, item_tokens, needed)


def groups_by_text(items, names: list[str], texts: Texts, tokenwise: set[str]):
    """Per distinct text: its groups ``(item, name, token indices, per-token outputs?)`` with at least one token."""
    by_text: dict[int, list[tuple[int, str, torch.Tensor, bool]]] = {}
    for i, (text, _) in enumerate(items):
        for name in names:
            idx = texts.item_tokens[i][name]
            if len(idx):
                by_text.setdefault(texts.ids[text], []).append((i, name, idx, name in tokenwise))
    return by_text
