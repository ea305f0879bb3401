"""Target spans of ICRL games in token space: before / reward / after (METHOD.md section 2).

The target is the successful rewrite of the FIRST post-discovery paragraph. In it,
``reward`` is every occurrence that satisfies the criterion (``criterion.matches``,
recorded in the game), ``before`` is the rewrite strictly before the first reward
occurrence and ``after`` the rewrite strictly after the last one.

Everything is located structurally: :func:`render_game` renders the whole chat with
:func:`vaxis.core.chat.render_chat`, which knows each message's character span by
construction; the rewrite's span inside its message is recorded in the game; char
spans become token indices through the tokenizer's offsets with the single rule of
:func:`vaxis.core.spans.tokens_in_spans`. Nothing searches the rendered text.

The whole conversation is rendered (it ends with a user turn), so every assistant
turn is rendered as a past turn, the same way for the target and for the failed
attempts used as placebos; run a causal model on ``input_ids[:end_token]`` to stop at
the end of the span of interest.

A game is excluded (:class:`TargetSpanError`, with a reason code) if a side has fewer
than ``min_tokens`` tokens, or if the reward tokens do not decode to the reward words
(a token shared between the reward and its neighbours).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...core.chat import RenderedChat, render_chat
from ...core.spans import token_anchor, tokens_in_spans
from .gamefile import Game

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Span = tuple[int, int]
MIN_TOKENS = 3

#: Reason codes of :class:`TargetSpanError`.
REASONS = (
    "too_few_before_tokens",
    "too_few_after_tokens",
    "reward_not_tokenized",
    "reward_decode_mismatch",
    "token_straddles_boundary",
    "no_reward",
)


class TargetSpanError(ValueError):
    """A game (or failed attempt) cannot give a clean before/center/after split.

    Attributes:
        reason: one of :data:`REASONS`.
        game_id: the game.
    """

    def __init__(self, reason: str, game_id: str, detail: str):
        super().__init__(f"game {game_id}: {reason}: {detail}")
        self.reason = reason
        self.game_id = game_id
        self.detail = detail


@dataclass(frozen=True)
class RenderedGame:
    """A game's whole chat rendered with a tokenizer's template, and its tokens."""

    game: Game
    chat: RenderedChat
    input_ids: tuple[int, ...]
    offsets: tuple[Span, ...]
    starts: tuple[int, ...] = field(default=(), repr=False)

    def __post_init__(self):
        object.__setattr__(self, "starts", tuple(s for s, _ in self.offsets))

    def token_window(self, start: int, end: int) -> tuple[int, int]:
        """``(lo, hi)``: a range of token indices containing every token that overlaps the
        characters ``[start, end)`` (offsets of byte-level/fast tokenizers are sorted)."""
        lo = max(0, bisect.bisect_left(self.starts, start) - 1)
        hi = bisect.bisect_left(self.starts, end)
        return lo, hi

    @property
    def text(self) -> str:
        """The rendered chat."""
        return self.chat.text

    def rewrite_span(self, attempt: int) -> Span:
        """Character span of ``game.attempts[attempt]``'s rewrite in the rendered text."""
        a = self.game.attempts[attempt]
        return self.chat.span_in_message(a.message_index, *a.rewrite_span)


@dataclass(frozen=True)
class TargetSpans:
    """Before / center / after of one rewrite, in rendered-text characters and tokens.

    Attributes:
        game_id, criterion, split: the game.
        kind: ``"reward"`` (the real target; center key ``"reward"``) or ``"placebo"`` (a
            failed attempt cut at the word/edit the player targeted; center key ``"target"``).
        attempt: index into ``game.attempts``; ``message_index``: its assistant message.
        text: the rendered chat (the whole conversation).
        input_ids, offsets: tokens of ``text`` (``add_special_tokens=False``) and their char offsets.
        char_spans: ``{"before": [(s, e)], center: [(s, e), ...], "after": [(s, e)]}`` in ``text``.
        token_indices: the same names -> sorted token indices (rule: ``vaxis.core.spans.tokens_in_spans``).
        end_char: the last character any span needs (end of the rewrite).
        end_token: one past the last token of any span; run the model on ``input_ids[:end_token]``.
        center_text: the text of each center occurrence (reward words or targeted text).
        rewrite_span: the rewrite's character span in ``text`` (after ``</thinking>``).
        assistant_spans: character spans in ``text`` of the contents of every assistant message
            up to and including this one (e.g. for mean residual norms over assistant tokens).
    """

    game_id: str
    criterion: str
    split: str
    kind: str
    attempt: int
    message_index: int
    text: str
    input_ids: tuple[int, ...]
    offsets: tuple[Span, ...]
    char_spans: Mapping[str, tuple[Span, ...]]
    token_indices: Mapping[str, tuple[int, ...]]
    end_char: int
    end_token: int
    center_text: tuple[str, ...]
    rewrite_span: Span = (0, 0)
    assistant_spans: tuple[Span, ...] = ()

    @property
    def center(self) -> str:
        """Name of the middle span: ``"reward"`` or ``"target"``."""
        return "reward" if self.kind == "reward" else "target"

    @property
    def before(self) -> tuple[int, ...]:
        """Token indices of the rewrite strictly before the first center occurrence."""
        return self.token_indices["before"]

    @property
    def after(self) -> tuple[int, ...]:
        """Token indices of the rewrite strictly after the last center occurrence."""
        return self.token_indices["after"]

    @property
    def reward(self) -> tuple[int, ...]:
        """Token indices of the center occurrences (reward words, or the placebo target)."""
        return self.token_indices[self.center]

    @property
    def relative_position(self) -> float:
        """Position of the first center token among the rewrite's tokens, in [0, 1]:
        ``(first_center - first_before) / (last_after - first_before)``."""
        first, last = self.before[0], self.after[-1]
        return (self.reward[0] - first) / max(1, last - first)


def render_game(game: Game, tokenizer: PreTrainedTokenizerBase, **template_kwargs) -> RenderedGame:
    """Render the whole chat of ``game`` and tokenize it (fast tokenizer, offsets,
    ``add_special_tokens=False``: the template already adds any special tokens).

    Args:
        game: a :class:`~vaxis.data.icrl.gamefile.Game`.
        tokenizer: a Hugging Face fast tokenizer with a chat template.
        template_kwargs: passed to ``apply_chat_template`` (e.g. ``enable_thinking=False``).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{type(tokenizer).__name__} is not a fast tokenizer, so it has no character offsets; "
            "load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
        )
    chat = render_chat(tokenizer, game.chat(), **template_kwargs)
    enc = tokenizer(chat.text, add_special_tokens=False, return_offsets_mapping=True)
    return RenderedGame(game, chat, tuple(enc["input_ids"]), tuple(tuple(o) for o in enc["offset_mapping"]))


def _split(
    rendered: RenderedGame,
    tokenizer: PreTrainedTokenizerBase,
    attempt: int,
    centers: Sequence[Span],
    kind: str,
    min_tokens: int,
) -> TargetSpans:
    game = rendered.game
    text, offsets = rendered.text, rendered.offsets
    rw_s, rw_e = rendered.rewrite_span(attempt)
    center = "reward" if kind == "reward" else "target"
    if not centers:
        raise TargetSpanError("no_reward", game.game_id, f"attempt {attempt} has no {center} span")
    centers = sorted((rw_s + s, rw_s + e) for s, e in centers)
    first, last = centers[0][0], centers[-1][1]
    spans: dict[str, list[Span]] = {center: list(centers)}
    spans["before"] = [(rw_s, first)] if first > rw_s else []
    spans["after"] = [(last, rw_e)] if rw_e > last else []
    # the one span rule of vaxis.core.spans, applied to the tokens around the rewrite (same result
    # as on the whole text, since no token outside the window can start inside the rewrite)
    lo, hi = rendered.token_window(rw_s, rw_e)
    idx = {k: [t + lo for t in v] for k, v in tokens_in_spans(text, offsets[lo:hi], spans).items()}
    for side, reason in (("before", "too_few_before_tokens"), ("after", "too_few_after_tokens")):
        if len(idx[side]) < min_tokens:
            raise TargetSpanError(
                reason, game.game_id, f"attempt {attempt}: {len(idx[side])} {side} tokens < {min_tokens}"
            )
    # every token of a side must lie inside the rewrite and on its side of the center
    for t in idx["before"]:
        s, e = offsets[t]
        if e > first or text[s:rw_s].strip():
            raise TargetSpanError(
                "token_straddles_boundary", game.game_id, f"before token {t} {text[s:e]!r} crosses a boundary"
            )
    for t in idx["after"]:
        s, e = offsets[t]
        if s < last or e > rw_e:
            raise TargetSpanError(
                "token_straddles_boundary", game.game_id, f"after token {t} {text[s:e]!r} crosses a boundary"
            )
    words = []
    for s, e in centers:
        toks = [t for t in idx[center] if s <= token_anchor(text, *offsets[t]) < e]
        word = text[s:e]
        if not toks:
            raise TargetSpanError("reward_not_tokenized", game.game_id, f"no token starts inside {word!r}")
        decoded = tokenizer.decode([rendered.input_ids[t] for t in toks], clean_up_tokenization_spaces=False)
        if decoded.strip() != word.strip():
            raise TargetSpanError(
                "reward_decode_mismatch",
                game.game_id,
                f"{center} tokens decode to {decoded!r}, expected {word!r}",
            )
        words.append(word)
    every = [t for name in spans for t in idx[name]]
    return TargetSpans(
        game_id=game.game_id,
        criterion=game.criterion,
        split=game.split,
        kind=kind,
        attempt=attempt,
        message_index=game.attempts[attempt].message_index,
        text=text,
        input_ids=rendered.input_ids,
        offsets=rendered.offsets,
        char_spans={k: tuple(v) for k, v in spans.items()},
        token_indices={k: tuple(v) for k, v in idx.items()},
        end_char=rw_e,
        end_token=max(every) + 1,
        center_text=tuple(words),
        rewrite_span=(rw_s, rw_e),
        assistant_spans=tuple(
            rendered.chat.message_spans[i]
            for i, m in enumerate(game.messages[: game.attempts[attempt].message_index + 1])
            if m["role"] == "assistant"
        ),
    )


def target_spans(
    game: Game,
    tokenizer,
    min_tokens: int = MIN_TOKENS,
    rendered: RenderedGame | None = None,
    **template_kwargs,
) -> TargetSpans:
    """Before / reward / after of the game's target (first post-discovery success).

    Args:
        game: the game.
        tokenizer: fast tokenizer with a chat template.
        min_tokens: tokens required on each side (METHOD.md: 3).
        rendered: reuse a :func:`render_game` result (must be for this game and tokenizer).
        template_kwargs: passed to the chat template.

    Returns:
        :class:`TargetSpans` with ``kind == "reward"``.

    Raises:
        TargetSpanError: the game must be excluded; ``.reason`` says why (see :data:`REASONS`).
    """
    rendered = rendered or render_game(game, tokenizer, **template_kwargs)
    a = game.target_attempt
    return _split(rendered, tokenizer, a, game.attempts[a].reward_spans, "reward", min_tokens)


def placebo_spans(
    game: Game,
    tokenizer,
    min_tokens: int = MIN_TOKENS,
    rendered: RenderedGame | None = None,
    **template_kwargs,
) -> tuple[list[TargetSpans], list[dict]]:
    """Placebo splits: for each FAILED attempt, before / target / after around the word or
    edit the player was targeting (``targeted_span``), in the same rendered text as the target.

    Returns:
        ``(spans, excluded)``: one :class:`TargetSpans` (``kind == "placebo"``, center key
        ``"target"``) per usable failed attempt, and ``{"game_id", "attempt", "reason",
        "detail"}`` for each failed attempt that had to be skipped.
    """
    rendered = rendered or render_game(game, tokenizer, **template_kwargs)
    out, excluded = [], []
    for a in game.failed_attempts:
        try:
            out.append(_split(rendered, tokenizer, a, [game.attempts[a].targeted_span], "placebo", min_tokens))
        except TargetSpanError as exc:
            excluded.append({"game_id": game.game_id, "attempt": a, "reason": exc.reason, "detail": exc.detail})
    return out, excluded


def target_spans_many(
    games: Iterable[Game],
    tokenizer: PreTrainedTokenizerBase,
    min_tokens: int = MIN_TOKENS,
    placebos: bool = False,
    **template_kwargs,
) -> tuple:
    """Apply :func:`target_spans` to many games.

    Args:
        games: the games.
        tokenizer: fast tokenizer with a chat template.
        min_tokens: tokens required on each side.
        placebos: also compute :func:`placebo_spans` (rendering each game once).

    Returns:
        ``(kept, excluded)``: the :class:`TargetSpans` of usable games, and one dict
        ``{"game_id", "criterion", "split", "reason", "detail"}`` per excluded game. With
        ``placebos=True`` a third element: ``(placebo_kept, placebo_excluded)``.
    """
    kept, excluded, p_kept, p_excluded = [], [], [], []
    for game in games:
        rendered = render_game(game, tokenizer, **template_kwargs)
        try:
            kept.append(target_spans(game, tokenizer, min_tokens, rendered=rendered))
        except TargetSpanError as exc:
            excluded.append(
                {
                    "game_id": game.game_id,
                    "criterion": game.criterion,
                    "split": game.split,
                    "reason": exc.reason,
                    "detail": exc.detail,
                }
            )
        if placebos:
            ok, bad = placebo_spans(game, tokenizer, min_tokens, rendered=rendered)
            p_kept.extend(ok)
            p_excluded.extend(bad)
    if placebos:
        return kept, excluded, (p_kept, p_excluded)
    return kept, excluded


def game_html(game: Game, tokenizer, max_height_px: int = 420, **template_kwargs) -> str:
    """The rendered chat of ``game`` as HTML, with the target rewrite's before / reward / after
    spans highlighted (the spans vaxis reads, located structurally). Text after the target is
    dimmed: the model is never run past it."""
    import html

    rendered = render_game(game, tokenizer, **template_kwargs)
    text = rendered.text
    try:
        spans = target_spans(game, tokenizer, rendered=rendered).char_spans
    except TargetSpanError:
        spans = {}
    colours = {"before": "#cde", "reward": "#c9f", "after": "#fdb"}
    marks = sorted((s, e, name) for name, ranges in spans.items() for s, e in ranges)
    end = max((e for _, e, _ in marks), default=len(text))
    parts, cursor = [], 0
    for s, e, name in marks:
        parts.append(html.escape(text[cursor:s]))
        parts.append(f"<span style='background:{colours[name]}' title='{name}'>{html.escape(text[s:e])}</span>")
        cursor = e
    parts.append(html.escape(text[cursor:end]))
    parts.append(f"<span style='color:#999'>{html.escape(text[end:])}</span>")
    return (
        f"<div style='font-family:monospace;font-size:11px;white-space:pre-wrap;max-height:{max_height_px}px;"
        f"overflow-y:auto;border:1px solid #ccc;padding:6px;color:#000;background:#fff'>{''.join(parts)}</div>"
    )
