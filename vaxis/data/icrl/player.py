"""Optional LLM-backed player for the ICRL games (never required by notebooks or tests).

:class:`LLMPlayer` asks a chat model to write the thinking and the rewrite of each
attempt, following the script the generator decides (which hypothesis to test,
when to discover). Its answers go through exactly the same checks as the offline
template player: a failed attempt must fail the true criterion and satisfy the
hypothesis it tests; a success must pass the criterion; otherwise the generator
asks again and finally falls back to the template player for that attempt (the
attempt's ``author`` field records who wrote it). LLM output is not reproducible
byte for byte; the offline generator is.

A client is any callable ``client(messages: list[dict]) -> str``. Two adapters:
:func:`anthropic_client` (needs the ``anthropic`` package and the user's own API key
in ``ANTHROPIC_API_KEY``, read by that package) and :func:`hf_client` (a local Hugging
Face chat model, e.g. one loaded by vaxis).

Example::

    from vaxis.data.icrl import generate_games
    from vaxis.data.icrl.player import LLMPlayer, hf_client
    games, report = generate_games(20, seed=0, player=LLMPlayer(hf_client(model, tokenizer), name="qwen3-8b"))
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .criteria import Criterion
from .edits import Edit
from .players import AttemptRequest, Written

Client = Callable[[Sequence[Mapping[str, str]]], str]

_INSTRUCTIONS = {
    "first": "The player has no feedback yet and guesses that the hidden rule is that the paragraph {hyp}.",
    "retry": "The player's last guess (the paragraph {prev}) got -1; now it guesses the paragraph {hyp}.",
    "new_paragraph": (
        "This is a new paragraph; earlier guesses (the paragraph {tried}) all got -1. "
        "It now guesses that the paragraph {hyp}."
    ),
    "revisit": "The player retries an earlier guess with a different edit: the paragraph {hyp}.",
    "discovery": (
        "All guesses so far failed (the paragraph {tried}). The player now has a new idea: the paragraph {crit}."
    ),
    "confirm_first": (
        "The player's last rewrite got +1, so it now knows the rule: the paragraph {crit}. It says so confidently."
    ),
    "confirm_later": "The player knows the rule (the paragraph {crit}) and applies it again, confidently.",
}

_SYSTEM = (
    "You write turns for a synthetic dataset of a rewriting game. In each turn a player rewrites a "
    "paragraph to test a hypothesis about a hidden rule. Keep the rewrite as close to the original as "
    "possible: keep every original sentence, and add or change only a few words, in a natural way, at "
    "any suitable place in the paragraph."
)


class LLMPlayer:
    """A player whose thinking and rewrites come from a chat model.

    Args:
        client: ``client(messages) -> str``, e.g. :func:`anthropic_client` or :func:`hf_client`.
        name: recorded in each game's ``generator`` field as ``"llm:<name>"``.
    """

    def __init__(self, client: Client, name: str = "llm"):
        self.client = client
        self.name = name
        self.stats: Counter = Counter()

    def prompt(self, request: AttemptRequest) -> list[dict]:
        """The chat sent to the model for ``request``."""
        situation = _INSTRUCTIONS[request.phase].format(
            **{"hyp": "", "prev": "", "tried": "", "crit": "", **request.context}
        )
        user = (
            f"Original paragraph:\n\n{request.paragraph}\n\n"
            f"Situation: {situation}\n\n"
            f"Task: rewrite the paragraph so that it {request.rule.description}. Then write the player's "
            "reasoning: one to three sentences in the first person, stating the hypothesis and what it will "
            "change. Do not use angle brackets in the reasoning.\n\n"
            "Answer in exactly this format:\n<thinking>REASONING</thinking>\n"
            "<rewrite>FULL REWRITTEN PARAGRAPH</rewrite>"
        )
        return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]

    def write(self, request: AttemptRequest, rng: random.Random) -> Written | None:
        """Ask the model once; ``None`` if the answer cannot be parsed or nothing new satisfies the rule."""
        self.stats["calls"] += 1
        try:
            answer = self.client(self.prompt(request))
        except Exception as exc:  # a failing client must not stop generation: fall back to templates
            self.stats[f"client_error:{type(exc).__name__}"] += 1
            return None
        parsed = parse_answer(answer)
        if parsed is None:
            self.stats["unparseable"] += 1
            return None
        thinking, rewrite = parsed
        key = new_match(request.rule, request.paragraph, rewrite)
        if key is None:
            self.stats["rule_not_satisfied"] += 1
            return None
        self.stats["proposed"] += 1
        return Written(thinking=thinking, edit=Edit(rewrite, key, "llm_rewrite", "rewrite the paragraph"), author="llm")


def parse_answer(answer: str) -> tuple[str, str] | None:
    """``(thinking, rewrite)`` from ``<thinking>..</thinking><rewrite>..</rewrite>``, whitespace
    collapsed; ``None`` if either part is missing or empty."""
    m_t = re.search(r"<thinking>(.*?)</thinking>", answer, re.S)
    m_r = re.search(r"<rewrite>(.*?)</rewrite>", answer, re.S)
    if not m_t or not m_r:
        return None
    thinking = " ".join(m_t.group(1).split())
    rewrite = " ".join(m_r.group(1).split())
    if not thinking or not rewrite:
        return None
    return thinking, rewrite


def new_match(rule: Criterion, original: str, rewrite: str) -> tuple[int, int] | None:
    """The first span of ``rule.matches(rewrite)`` whose text occurs more often in the rewrite than
    in the original (i.e. the player added it); ``None`` if there is none."""
    before = Counter(original[s:e] for s, e in rule.matches(original))
    seen: Counter = Counter()
    for s, e in rule.matches(rewrite):
        word = rewrite[s:e]
        seen[word] += 1
        if seen[word] > before[word]:
            return (s, e)
    return None


def anthropic_client(model: str = "claude-sonnet-4-5", max_tokens: int = 1500, temperature: float = 0.7) -> Client:
    """A client for Anthropic's API (the user's own key, read by the ``anthropic`` package
    from ``ANTHROPIC_API_KEY``). Needs ``pip install anthropic``."""
    try:
        import anthropic
    except ImportError as exc:
        raise ImportError("anthropic_client needs the anthropic package: pip install anthropic") from exc
    api = anthropic.Anthropic()

    def client(messages: Sequence[Mapping[str, str]]) -> str:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        chat = [dict(m) for m in messages if m["role"] != "system"]
        reply = api.messages.create(
            model=model, system=system, messages=chat, max_tokens=max_tokens, temperature=temperature
        )
        return "".join(getattr(block, "text", "") for block in reply.content)

    return client


def hf_client(model: Any, tokenizer: Any, max_new_tokens: int = 600, **generate_kwargs) -> Client:
    """A client for a local Hugging Face chat model (greedy decoding unless ``generate_kwargs``
    say otherwise); chats render through :func:`vaxis.core.chat.render_chat`, with the tokenizer's bound
    chat-template arguments (Qwen3: ``enable_thinking=False`` unless set otherwise)."""
    from ...core.chat import render_chat

    def client(messages: Sequence[Mapping[str, str]]) -> str:
        import torch

        text = render_chat(tokenizer, [dict(m) for m in messages], add_generation_prompt=True).text
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(model.device)
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, **generate_kwargs)
        return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    return client
