"""Rendering chats through a tokenizer's chat template with exact message offsets.

The reference code located an assistant rewrite by searching the rendered chat
for its text and usually found the user's copy instead (METHOD.md section 2).
vaxis never searches rendered text for content. :func:`render_chat` renders the
conversation once with every message content replaced by a unique placeholder,
then splices the real contents back in, so the character span of every message
inside the rendered string is known by construction. It then checks that the
spliced string equals the template's own rendering of the real messages; if a
template rewrites contents (e.g. strips them) the check fails loudly instead of
returning wrong offsets.

Chat-template arguments (Qwen3's ``enable_thinking``) are part of the experiment: the authors render
Qwen3 with ``enable_thinking=False`` everywhere (METHOD.md section 8). :func:`bind_template_kwargs`
attaches them to a tokenizer once (``vaxis.load_model`` and ``vaxis.load_tokenizer`` do it), and every
render through :func:`render_chat` (generation, readouts, extraction, the training data) uses them, so no
entry point can drop them; :func:`bound_template_kwargs` reads them back for cache keys and sidecars. A template
that takes ``enable_thinking`` with no arguments given gets ``{"enable_thinking": False}``, said once.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

_PLACEHOLDER = "\u2063VAXIS{}\u2063"  # invisible separator: never part of real content
_PLACEHOLDER_RE = re.compile("\u2063VAXIS(\\d+)\u2063")


_BOUND_ATTR = "_vaxis_chat_template_kwargs"
THINKING_KEY = "enable_thinking"
_REASONING_RE = re.compile(r"<think>.*?</think>\n*", re.DOTALL)
_said_default: set[str] = set()


class ChatTemplateError(ValueError):
    """The tokenizer has no chat template, or its template changes message contents."""


@dataclass(frozen=True)
class RenderedChat:
    """A chat rendered to text. ``message_spans[i]`` is the ``(start, end)`` character
    span of ``messages[i]['content']`` inside ``text``."""

    text: str
    message_spans: tuple[tuple[int, int], ...]

    def span_in_message(self, message_index: int, start: int, end: int) -> tuple[int, int]:
        """Map a character span of message ``message_index``'s content to the rendered text."""
        m_start, m_end = self.message_spans[message_index]
        if not 0 <= start <= end <= m_end - m_start:
            raise ValueError(
                f"span ({start}, {end}) lies outside message {message_index}, "
                f"whose content has {m_end - m_start} characters"
            )
        return m_start + start, m_start + end


def require_chat_template(tokenizer) -> None:
    """Raise :class:`ChatTemplateError` if ``tokenizer`` cannot render chats."""
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
        raise ChatTemplateError(
            f"tokenizer {name!r} has no chat template, so vaxis cannot build chat prompts for it. "
            "Use the model's instruct/chat variant, or set one explicitly, e.g. "
            "`tokenizer.chat_template = vaxis.core.tiny.CHATML_TEMPLATE` (ChatML) if that is the format "
            "the model was trained on."
        )


def takes_thinking_switch(tokenizer) -> bool:
    """Whether the tokenizer's chat template reads ``enable_thinking`` (Qwen3 and its kind)."""
    return THINKING_KEY in str(getattr(tokenizer, "chat_template", None) or "")


def bind_template_kwargs(tokenizer, kwargs: dict | None = None, quiet: bool = False) -> dict:
    """Attach chat-template arguments to ``tokenizer``; every :func:`render_chat` with it then uses them.

    ``kwargs=None`` means the default: ``{"enable_thinking": False}`` for a template that takes that switch
    (the authors' setting; said once per template unless ``quiet``), ``{}`` for any other. A dict is used as
    given (``{"enable_thinking": True}`` for Qwen3's thinking mode). Returns the arguments bound."""
    if kwargs is None:
        kwargs = {THINKING_KEY: False} if takes_thinking_switch(tokenizer) else {}
        if kwargs and not quiet:
            digest = hashlib.sha256(str(tokenizer.chat_template).encode()).hexdigest()
            if digest not in _said_default:
                _said_default.add(digest)
                print("vaxis: this chat template takes enable_thinking; rendering every chat with "
                      "enable_thinking=False, as the authors do (set chat_template_kwargs to change it)", flush=True)  # fmt: skip
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ValueError(f"chat_template_kwargs={kwargs!r}: give a dict of template arguments, e.g. "
                         '{"enable_thinking": False}, or None for the default')  # fmt: skip
    try:
        json.dumps(kwargs, sort_keys=True)
    except TypeError as err:
        raise ValueError(f"chat_template_kwargs={kwargs!r} must be JSON-serialisable (they enter cache keys)") from err
    setattr(tokenizer, _BOUND_ATTR, dict(kwargs))
    return dict(kwargs)


def bound_template_kwargs(tokenizer) -> dict:
    """The chat-template arguments bound to ``tokenizer`` (:func:`bind_template_kwargs`); ``{}`` if none."""
    return dict(getattr(tokenizer, _BOUND_ATTR, None) or {})


def strip_reasoning(text: str) -> str:
    """``text`` without its ``<think>...</think>`` blocks (and the newlines after them): what a Qwen3-style
    template keeps of an earlier assistant turn, so a chat built from it renders with exact offsets."""
    return _REASONING_RE.sub("", text)


def render_chat(
    tokenizer, messages: list[dict], add_generation_prompt: bool = False, **template_kwargs
) -> RenderedChat:
    """Render ``messages`` with the tokenizer's chat template and locate every message.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        messages: ``[{"role": ..., "content": str}, ...]``.
        add_generation_prompt: append the template's assistant header.
        template_kwargs: passed to ``apply_chat_template`` (e.g. ``enable_thinking=False``), over the
            arguments bound to the tokenizer (:func:`bind_template_kwargs`).

    Returns:
        :class:`RenderedChat` with the text and each message's content span.
    """
    require_chat_template(tokenizer)
    if not messages:
        raise ValueError("cannot render an empty chat: give at least one message")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or not isinstance(message.get("content"), str):
            raise ValueError(f"message {i} must be a dict with 'role' and a string 'content', got {message!r}")
        if _PLACEHOLDER_RE.search(message["content"]):
            raise ValueError(f"message {i} contains vaxis's reserved placeholder character U+2063")

    template_kwargs = {**bound_template_kwargs(tokenizer), **template_kwargs}

    def apply(msgs):
        return tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=add_generation_prompt, **template_kwargs
        )

    skeleton = apply([{**m, "content": _PLACEHOLDER.format(i)} for i, m in enumerate(messages)])
    pieces, spans, cursor = [], [None] * len(messages), 0
    length = 0
    for match in _PLACEHOLDER_RE.finditer(skeleton):
        i = int(match.group(1))
        between = skeleton[cursor : match.start()]
        pieces.append(between)
        length += len(between)
        content = messages[i]["content"]
        if spans[i] is not None:
            raise ChatTemplateError(f"the chat template repeats the content of message {i}; vaxis cannot locate it")
        spans[i] = (length, length + len(content))
        pieces.append(content)
        length += len(content)
        cursor = match.end()
    pieces.append(skeleton[cursor:])
    text = "".join(pieces)
    missing = [i for i, s in enumerate(spans) if s is None]
    if missing:
        raise ChatTemplateError(f"the chat template dropped the content of messages {missing}")
    if text != apply(messages):
        reasoning = [i for i, m in enumerate(messages) if m["role"] == "assistant" and "</think>" in m["content"]]
        if reasoning:
            raise ChatTemplateError(
                f"assistant message(s) {reasoning} hold a reasoning block (<think>...</think>), which this chat "
                "template moves or removes when it renders the chat, so exact offsets cannot be kept: build the "
                "chat from vaxis.core.chat.strip_reasoning(text) (what the template keeps of an earlier turn), or "
                'generate with chat_template_kwargs={"enable_thinking": False} as the authors do'
            )
        raise ChatTemplateError(
            "the chat template renders message contents differently from how they were given "
            "(e.g. it strips or rewrites them), so exact offsets cannot be guaranteed; "
            "strip the contents yourself before rendering"
        )
    return RenderedChat(text=text, message_spans=tuple(spans))
