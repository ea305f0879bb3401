"""Character spans -> token indices, through a fast tokenizer's offsets.

The single rule used everywhere in vaxis: **a token belongs to the span that
contains its first non-whitespace character** (a token that is all whitespace
is placed by its first character). Byte-level BPE tokens usually carry their
leading space (" colon"), so this puts " colon" in the span of "colon" and
never in the span before it; every token lands in at most one span, so named
spans of one text never share a token. Tokens with an empty offset range
(some special tokens) belong to no span.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Span = tuple[int, int]


class SpanError(ValueError):
    """A span is empty, out of range, or overlaps another."""


def validate_spans(spans: Mapping[str, Sequence[Span]], text_length: int, where: str = "") -> None:
    """Check that every span is non-empty, inside ``[0, text_length]``, and that
    spans (of all names together) do not overlap. ``where`` prefixes messages."""
    flat = []
    for name, ranges in spans.items():
        for start, end in ranges:
            if not (isinstance(start, int) and isinstance(end, int)):
                raise SpanError(f"{where}span {name!r} ({start}, {end}) must have integer bounds")
            if start >= end:
                raise SpanError(f"{where}span {name!r} ({start}, {end}) is empty: start must be < end")
            if start < 0 or end > text_length:
                raise SpanError(
                    f"{where}span {name!r} ({start}, {end}) lies outside the text, which has {text_length} characters"
                )
            flat.append((start, end, name))
    flat.sort()
    for (s1, e1, n1), (s2, e2, n2) in zip(flat, flat[1:]):
        if s2 < e1:
            raise SpanError(f"{where}spans {n1!r} ({s1}, {e1}) and {n2!r} ({s2}, {e2}) overlap")


def token_anchor(text: str, start: int, end: int) -> int:
    """Character position that decides a token's span: its first non-whitespace
    character, or ``start`` if the token is all whitespace."""
    for pos in range(start, end):
        if not text[pos].isspace():
            return pos
    return start


def tokens_in_spans(
    text: str, offsets: Sequence[Span], spans: Mapping[str, Sequence[Span]], validate: bool = True
) -> dict[str, list[int]]:
    """Token indices of each named span.

    Args:
        text: the string that was tokenized.
        offsets: ``(start, end)`` character offsets per token (``return_offsets_mapping``).
        spans: name -> list of ``(start, end)`` character ranges (a name may cover
            several disjoint ranges).
        validate: run :func:`validate_spans` first.

    Returns:
        name -> sorted token indices (possibly empty).
    """
    if validate:
        validate_spans(spans, len(text))
    bounds = sorted((s, e, name) for name, ranges in spans.items() for s, e in ranges)
    result: dict[str, list[int]] = {name: [] for name in spans}
    if not bounds:
        return result
    import bisect

    starts = [b[0] for b in bounds]
    for t, (s, e) in enumerate(offsets):
        if e <= s:
            continue
        anchor = token_anchor(text, s, e)
        k = bisect.bisect_right(starts, anchor) - 1
        if k >= 0 and bounds[k][0] <= anchor < bounds[k][1]:
            result[bounds[k][2]].append(t)
    return result
