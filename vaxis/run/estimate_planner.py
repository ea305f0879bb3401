"""The planner of :mod:`vaxis.run.estimate`: a run's heavy passes planned with the tokenizer only, the way the engine
plans them (:func:`vaxis.core.extract.plan_batches`, :func:`vaxis.core.generate.generation_plan`,
:func:`vaxis.core.train.training_plan`), each with its cache identity so that a pass an earlier one made counts as
read from the cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..core.cache import stable_hash


@dataclass
class Pass:
    """One heavy pass. ``tokens``: extraction and readouts, tokens run; generation, planned tokens (prompt and
    prefill plus ``max_new_tokens`` per sequence); training, sequence tokens over all epochs. ``forward_tokens``:
    the part that runs as a plain forward pass (generation prompts, DPO's reference pass)."""

    kind: str
    what: str
    sequences: int
    tokens: int
    batches: int = 0
    decode_steps: int = 0
    optimizer_steps: int = 0
    forward_tokens: int = 0
    key: str = ""
    cached: bool = False
    tokens_low: int | None = None  # a lower bound when ``tokens`` is an upper one (texts a model makes)
    kv_read_tokens: int = 0  # generation: KV-cache columns attention reads over all decode steps


@dataclass
class NotebookEstimate:
    """The passes, model loads and notes (approximations) of one notebook."""

    name: str
    passes: list[Pass] = field(default_factory=list)
    loads: int = 0
    notes: list[str] = field(default_factory=list)


class Planner:
    """Builds :class:`Pass` es the way the engine plans them, with the tokenizer only. Passes go to the current
    notebook (:attr:`book`); ``model`` names the weights a pass runs on (``"base"`` or an adapter), part of
    every pass's cache identity."""

    def __init__(self, tokenizer, device: str, generation_budget: int | None = None):
        self.tok, self.device, self.generation_budget = tokenizer, device, generation_budget
        self.book = NotebookEstimate("")
        self.model = "base"
        self._seen: set[str] = set()
        self._plans: dict = {}

    def _add(self, kind: str, what: str, identity, **sizes) -> Pass:
        key = stable_hash([kind, self.model, identity], 24)
        p = Pass(kind, what, key=key, cached=key in self._seen, **sizes)
        self._seen.add(key)
        self.book.passes.append(p)
        return p

    def note(self, text: str) -> None:
        """An approximation of this notebook, printed under its table (once)."""
        if text not in self.book.notes:
            self.book.notes.append(text)

    def load(self, n: int = 1) -> None:
        """``n`` model loads (:func:`vaxis.load_model`)."""
        self.book.loads += n

    def budget(self, max_batch_tokens: int | None) -> int:
        from ..core.engine import default_max_batch_tokens

        return max_batch_tokens or default_max_batch_tokens(self.device)

    def extract(self, what: str, texts, spans, *, tag, max_batch_tokens: int = 8192, max_batch_size: int = 32,
                token_spans=None, keep: bool = False, tokens_low: int | None = None) -> Pass:  # fmt: skip
        """:func:`vaxis.core.extract.extract`: each distinct text runs up to its last span token, batched by
        :func:`~vaxis.core.extract.plan_batches`. ``tag`` names what the texts do not: layers and directions.
        ``tokens_low``: when the texts stand for a model's output at its limit, the tokens they would have at
        their shortest (the pass's tokens are then an upper bound)."""
        from ..core.extract import plan_batches
        from ..core.extract_items import as_items

        def lengths() -> list[int]:  # of each distinct text with a span token: up to its last one
            items, _ = as_items(self.tok, texts, spans)
            by_text: dict[str, list] = {}
            for text, item_spans in items:
                by_text.setdefault(text, []).append(item_spans)
            distinct, out = list(by_text), []
            for lo in range(0, len(distinct), 256):  # batched tokenizer calls, a bounded number of texts at a time
                chunk = distinct[lo : lo + 256]
                offsets = self.tok(chunk, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
                out += [last_token(t, o, by_text[t]) for t, o in zip(chunk, offsets)]
            return [n for n in out if n > 0]

        inputs = stable_hash([texts, spans], 32)
        lengths = self._memo(inputs, lengths)
        batches = plan_batches(lengths, max_batch_tokens, max_batch_size)
        identity = [inputs, tag, max_batch_tokens, max_batch_size, sorted(token_spans) if token_spans is not None else None,
                    keep]  # fmt: skip
        return self._add("extract", what, identity, sequences=len(lengths), tokens=sum(lengths), batches=len(batches),
                         forward_tokens=sum(lengths), tokens_low=tokens_low)  # fmt: skip

    def _memo(self, key, compute):
        """``compute()``, once per ``key``: the same inputs read by several models (the base model and each
        adapter) are rendered and tokenized once."""
        key = stable_hash(key, 32)
        if key not in self._plans:
            self._plans[key] = compute()
        return self._plans[key]

    def _texts(self, chats, prefill) -> list[str]:
        from ..core.chat import render_chat

        prefills = [prefill or ""] * len(chats) if prefill is None or isinstance(prefill, str) else list(prefill)
        return [render_chat(self.tok, c, add_generation_prompt=True).text + f for c, f in zip(chats, prefills)]

    def generate(self, what: str, chats, max_new_tokens: int, *, tag=None, n_samples: int = 1,
                 temperature: float = 0.0, seed: int = 0, prefill=None, max_batch_tokens: int | None = None) -> Pass:  # fmt: skip
        """:func:`vaxis.core.generate.generate`, planned by :func:`vaxis.core.generate.generation_plan` (the run's own
        numbers). ``tag``: what else the pass depends on (steering, stop strings, scores)."""
        from ..core.generate import generation_plan

        inputs = stable_hash([chats, prefill], 32)
        budget, sampling = max_batch_tokens or self.generation_budget or self.budget(None), temperature > 0
        static = self.device == "cuda"  # vaxis.generate's engine="auto": static slots on a CUDA device
        plan = self._memo((inputs, max_new_tokens, budget, n_samples, sampling, static), lambda: generation_plan(
            self.tok, self._texts(chats, prefill), max_new_tokens, budget, n_samples, sampling, static))  # fmt: skip
        identity = [inputs, max_new_tokens, float(temperature), n_samples, seed, tag]
        return self._add("generate", what, identity, sequences=plan["sequences"], tokens=plan["planned_tokens"],
                         batches=plan["batches"], decode_steps=plan["decode_steps"], kv_read_tokens=plan["kv_read_tokens"],
                         forward_tokens=plan["planned_tokens"] - plan["sequences"] * max_new_tokens)  # fmt: skip

    def readout(self, what: str, chats, *, tag=None, prefill=None, answers=None,
                max_batch_tokens: int | None = None) -> Pass:  # fmt: skip
        """:func:`vaxis.core.readout.next_token_logprobs` (one forward over each prompt), or with ``answers``
        (``{name: text}``) :func:`vaxis.core.readout.answer_readout` (the prompt pass, then each answer's tokens)."""
        from ..core.extract import plan_batches

        def sizes() -> tuple[list[int], int]:  # prompt tokens, and the answers' tokens after them
            texts = self._texts(chats, prefill)
            lengths = [len(i) for i in self.tok(texts, add_special_tokens=False)["input_ids"]]
            extra = 0
            for answer in (answers or {}).values():
                extra += sum(map(len, self.tok([t + answer for t in texts], add_special_tokens=False)["input_ids"]))
                extra -= sum(lengths)
            return lengths, extra

        inputs = stable_hash([chats, prefill], 32)
        lengths, extra = self._memo((inputs, answers), sizes)
        pad = 8 if answers else 0  # answer_readout plans room for the answers' tokens
        batches = plan_batches([n + pad for n in lengths], self.budget(max_batch_tokens), 1 << 30)
        tokens = sum(lengths) + extra
        identity = [inputs, tag, answers]
        return self._add("readout", what, identity, sequences=len(lengths), tokens=tokens,
                         batches=len(batches) * (1 + len(answers or {})), forward_tokens=tokens)  # fmt: skip

    def forward(self, what: str, texts: list[str], *, tag=None) -> Pass:
        """A plain forward pass over each whole text, one at a time (e.g. :func:`vaxis.core.trace.token_projections`),
        counted as a readout."""
        lengths = [len(i) for i in self.tok(list(texts), add_special_tokens=False)["input_ids"]]
        return self._add("readout", what, [stable_hash(list(texts), 32), tag], sequences=len(texts),
                         tokens=sum(lengths), batches=len(texts), forward_tokens=sum(lengths))  # fmt: skip

    def train(self, what: str, rows: list[dict], settings, *, tag=None) -> Pass:
        """:func:`vaxis.core.train.train_adapter`: its model load, and the plan of :func:`vaxis.core.train.training_plan`."""
        from dataclasses import asdict

        from ..core.train import training_plan

        self.load()
        plan = training_plan(self.tok, rows, settings)
        identity = [stable_hash(rows, 32), asdict(settings), tag]
        return self._add("train", what, identity, sequences=plan["rows"], tokens=plan["tokens"],
                         batches=math.ceil(plan["rows"] / settings.batch_size), optimizer_steps=plan["optimizer_steps"],
                         forward_tokens=plan["reference_tokens"])  # fmt: skip


def last_token(text: str, offsets, spans_of_items: list[dict]) -> int:
    """1 + the last token that any span of the items of ``text`` holds (:func:`vaxis.core.spans.tokens_in_spans`'s rule:
    a token belongs to the span holding its anchor character), 0 when none: how far :func:`vaxis.core.extract.extract`
    runs the text. ``offsets``: the fast tokenizer's character offsets of ``text``."""
    import bisect

    from ..core.spans import token_anchor, tokens_in_spans

    tokens = [t for t, (s, e) in enumerate(offsets) if e > s]
    anchors = [token_anchor(text, *offsets[t]) for t in tokens]
    last = -1
    if any(a > b for a, b in zip(anchors, anchors[1:])):  # anchors out of order (rare): the rule token by token
        for spans in spans_of_items:
            found = [max(idx) for idx in tokens_in_spans(text, offsets, spans, validate=False).values() if idx]
            last = max([last, *found])
        return last + 1
    for start, end in (r for spans in spans_of_items for ranges in spans.values() for r in ranges):
        j = bisect.bisect_left(anchors, end) - 1
        if j >= 0 and anchors[j] >= start:
            last = max(last, tokens[j])
    return last + 1


def filler(tokenizer, n: int, salt: int = 0) -> str:
    """Text of about ``n`` tokens standing for a model's output (a rollout) that later passes read; another
    ``salt`` gives another text (samples of one prompt differ, and identical texts would run once)."""
    ids = _FILLER.get(id(tokenizer), [])
    if len(ids) < salt + n:
        base = "First we add the two numbers, then we check the result once more before we write the answer. "
        ids = tokenizer(base * ((salt + n) // 8 + 2), add_special_tokens=False)["input_ids"]
        _FILLER[id(tokenizer)] = ids
    return tokenizer.decode(ids[salt : salt + n]).strip()


_FILLER: dict[int, list[int]] = {}  # filler token ids per tokenizer
