"""Character spans -> token indices (vaxis.core.spans), with hand-written offsets and no tokenizer.

The rule under test: a token belongs to the span that contains its first non-whitespace
character; an all-whitespace token is placed by its first character; a token with an empty
offset range belongs to no span; span ends are exclusive.
"""

from __future__ import annotations

import pytest

from vaxis.core.spans import SpanError, token_anchor, tokens_in_spans, validate_spans


def _tokens(text: str, offsets) -> list[str]:
    """The token strings, after checking the hand-written offsets lie in the text, in order."""
    assert all(0 <= s <= e <= len(text) for s, e in offsets)
    assert all(s1 <= s2 for (s1, _), (s2, _) in zip(offsets, offsets[1:]))
    return [text[s:e] for s, e in offsets]


def test_leading_space_token_belongs_to_the_span_of_its_word():
    """The token " colon" goes with "colon", not with the span before it that holds its space.

    Guards against anchoring a token at its first character (``anchor = s``), which would put
    " colon" in ``before``, and against an inclusive span end (``<= end``), which would put the
    ":" that starts exactly where ``reward`` ends into ``reward``."""
    text = "add a colon: now"
    offsets = [(0, 3), (3, 5), (5, 11), (11, 12), (12, 16)]
    assert _tokens(text, offsets) == ["add", " a", " colon", ":", " now"]
    spans = {"before": [(0, 6)], "reward": [(6, 11)], "after": [(13, 16)]}
    assert text[6:11] == "colon" and text[0:6] == "add a "
    result = tokens_in_spans(text, offsets, spans)
    assert result == {"before": [0, 1], "reward": [2], "after": [4]}


def test_span_end_is_exclusive():
    """A token whose anchor is exactly a span's end is outside it (nothing starts there).

    Guards against an inclusive span end (``anchor <= bounds[k][1]``)."""
    text = "ab  cd:"
    offsets = [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert _tokens(text, offsets) == ["ab", "  ", "cd", ":"]
    # the all-whitespace token "  " is anchored at 2 == end of x; ":" at 6 == end of y
    result = tokens_in_spans(text, offsets, {"x": [(0, 2)], "y": [(4, 6)]})
    assert result == {"x": [0], "y": [2]}
    # adjacent spans: a token anchored at the shared boundary belongs to the second one
    result = tokens_in_spans(text, offsets, {"x": [(0, 4)], "y": [(4, 7)]})
    assert result == {"x": [0, 1], "y": [2, 3]}


def test_token_crossing_a_span_boundary_goes_where_its_first_non_space_char_is():
    """A token that runs past a span's end stays in the span of its first non-space character;
    one that starts outside a span and runs into it belongs to no span.

    Guards against anchoring at the first character (the leading space of " riverbank" lies in
    ``gap``, its "r" in ``a``) and against an inclusive end."""
    text = "the riverbank flows"
    offsets = [(0, 3), (3, 13), (13, 19)]
    assert _tokens(text, offsets) == ["the", " riverbank", " flows"]
    spans = {"gap": [(0, 4)], "a": [(4, 9)], "b": [(9, 19)]}
    assert text[4:9] == "river"
    assert tokens_in_spans(text, offsets, spans) == {"gap": [0], "a": [1], "b": [2]}

    text = "foobar baz"
    offsets = [(0, 6), (6, 10)]
    assert _tokens(text, offsets) == ["foobar", " baz"]
    assert tokens_in_spans(text, offsets, {"x": [(3, 10)]}) == {"x": [1]}


def test_all_whitespace_token_is_placed_by_its_first_character():
    """A token made only of whitespace has no non-space character: its first character decides
    (here it starts in ``x`` and ends in ``y``, and goes to ``x``)."""
    text = "ab   cd"
    offsets = [(0, 2), (2, 5), (5, 7)]
    assert _tokens(text, offsets) == ["ab", "   ", "cd"]
    assert tokens_in_spans(text, offsets, {"x": [(0, 3)], "y": [(3, 7)]}) == {"x": [0, 1], "y": [2]}
    # a newline-and-tab token before any span belongs to none
    text = "\n\tword"
    offsets = [(0, 2), (2, 6)]
    assert tokens_in_spans(text, offsets, {"w": [(1, 6)]}) == {"w": [1]}
    assert token_anchor(text, 0, 2) == 0


def test_token_anchor():
    """The first non-whitespace position of ``text[start:end]``, else ``start``."""
    text = "a \t\nb   "
    assert token_anchor(text, 0, 1) == 0
    assert token_anchor(text, 1, 5) == 4  # space, tab, newline, then "b"
    assert token_anchor(text, 5, 8) == 5  # all whitespace
    assert token_anchor(text, 1, 4) == 1  # all whitespace


def test_empty_special_tokens_belong_to_no_span():
    """Tokens with an empty offset range (a BOS at (0, 0), a special token at (s, s) inside a
    span) are in no span, even when their position lies inside one."""
    text = "abcdef"
    offsets = [(0, 0), (0, 3), (3, 3), (3, 6), (6, 6)]
    result = tokens_in_spans(text, offsets, {"x": [(0, 6)]})
    assert result == {"x": [1, 3]}
    result = tokens_in_spans(text, offsets, {"x": [(0, 3)], "y": [(3, 6)]})
    assert result == {"x": [1], "y": [3]}


def test_a_name_may_cover_several_disjoint_ranges():
    """Every range of a name collects tokens, the indices come back sorted, and a name whose
    ranges catch no token's anchor is present with an empty list."""
    text = "one two three four five"
    offsets = [(0, 3), (3, 7), (7, 13), (13, 18), (18, 23)]
    assert _tokens(text, offsets) == ["one", " two", " three", " four", " five"]
    spans = {"a": [(14, 18), (0, 3)], "b": [(4, 7)], "d": [(9, 13)], "c": [(19, 23)]}
    assert text[9:13] == "hree"  # the anchor of " three" is its "t" at 8, outside d
    result = tokens_in_spans(text, offsets, spans)
    assert result == {"a": [0, 3], "b": [1], "d": [], "c": [4]}
    assert tokens_in_spans(text, offsets, {}) == {}


@pytest.mark.parametrize(
    "spans,match",
    [
        ({"a": [(0, 4)], "b": [(3, 6)]}, r"spans 'a' \(0, 4\) and 'b' \(3, 6\) overlap"),
        ({"a": [(0, 4), (2, 5)]}, "overlap"),
        ({"a": [(0, 6)], "b": [(2, 3)]}, "overlap"),
        ({"a": [(2, 2)]}, r"span 'a' \(2, 2\) is empty"),
        ({"a": [(4, 2)]}, "is empty"),
        ({"a": [(3, 8)]}, "lies outside the text, which has 7 characters"),
        ({"a": [(-1, 2)]}, "lies outside the text"),
        ({"a": [(0.0, 2)]}, "integer bounds"),
    ],
)
def test_bad_spans_are_rejected(spans, match):
    """Overlapping, empty, out-of-range and non-integer spans raise SpanError (a ValueError)."""
    text = "abc def"
    with pytest.raises(SpanError, match=match):
        tokens_in_spans(text, [(0, 3), (3, 7)], spans)
    with pytest.raises(ValueError, match="^text 4: "):
        validate_spans(spans, len(text), where="text 4: ")


def test_valid_spans_pass_and_validation_can_be_skipped():
    """Adjacent spans and spans ending at the text's end are valid; ``validate=False`` skips the check."""
    validate_spans({"a": [(0, 3)], "b": [(3, 7)]}, 7)
    validate_spans({}, 0)
    overlapping = {"a": [(0, 4)], "b": [(3, 7)]}
    result = tokens_in_spans("abc def", [(0, 3), (3, 7)], overlapping, validate=False)
    assert set(result) == {"a", "b"}
