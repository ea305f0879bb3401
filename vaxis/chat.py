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
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PLACEHOLDER = "\u2063VAXIS{}\u2063"  # invisible separator: never part of real content
_PLACEHOLDER_RE = re.compile("\u2063VAXIS(\\d+)\u2063")


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
            "`tokenizer.chat_template = vaxis.tiny.CHATML_TEMPLATE` (ChatML) if that is the format "
            "the model was trained on."
        )


def render_chat(
    tokenizer, messages: list[dict], add_generation_prompt: bool = False, **template_kwargs
) -> RenderedChat:
    """Render ``messages`` with the tokenizer's chat template and locate every message.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        messages: ``[{"role": ..., "content": str}, ...]``.
        add_generation_prompt: append the template's assistant header.
        template_kwargs: passed to ``apply_chat_template`` (e.g. ``enable_thinking=False``).

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
        raise ChatTemplateError(
            "the chat template renders message contents differently from how they were given "
            "(e.g. it strips or rewrites them), so exact offsets cannot be guaranteed; "
            "strip the contents yourself before rendering"
        )
    return RenderedChat(text=text, message_spans=tuple(spans))
