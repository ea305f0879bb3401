"""Small text helpers shared by the ICRL checkers and edit operators.

Everything here is deterministic string processing with no model: a sentence
splitter tuned to encyclopedic English (abbreviations and initials do not end a
sentence), helpers to change the case of a sentence's first word only when that
word is a common function word (so proper nouns keep their capital), and
template filling with a marked key span.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

Span = tuple[int, int]

#: Words followed by "." that do not end a sentence (compared lower-case, without the final dot).
ABBREVIATIONS = frozenset(
    """mr mrs ms dr st jr sr vs etc e.g i.e c ca no nos inc ltd co corp mt ft gen col lt sgt capt cmdr
    prof rev hon jan feb mar apr jun jul aug sep sept oct nov dec approx fig figs vol vols al u.s u.k
    b.c a.d b.c.e c.e op cf pp ed eds est dept univ assn bros gov sen rep pres adm maj""".split()
)

#: Abbreviations that only count as such before a number ("No. 5", "vol. 2"); "... and no." ends a sentence.
_NUMBER_ABBREVIATIONS = frozenset("no nos vol vols op pp fig figs".split())

#: Sentence-initial words that may safely be lower-cased when something is put in front of them.
COMMON_STARTERS = frozenset(
    """the a an it its this these those that there here in on at for from with by as after before during
    since although though while when whereas some many most several he she they his her their one today
    later both each such other unlike like despite according also because between among under over
    through following originally modern early traditional all any few its however more much no only
    other our so then thus what which who whose why how where now once""".split()
)

_BOUNDARY = re.compile(r"[.!?\u2026]+[\"\u201d\u2019)\]]*(?=\s|$)")
_OPENERS = '"\u201c\u2018(['


def sentence_spans(text: str) -> list[Span]:
    """Character spans of the sentences of ``text`` (each span ends with its terminal
    punctuation; whitespace between sentences belongs to none).

    A boundary is ``.``, ``!``, ``?`` or an ellipsis (optionally followed by closing
    quotes/brackets), followed by whitespace and then an upper-case letter, a digit or
    an opening quote/bracket, or by the end of the text. A ``.`` after a known
    abbreviation (``ABBREVIATIONS``) or a single letter (an initial, "Arthur C. Clarke")
    is not a boundary.
    """
    spans: list[Span] = []
    start = _skip_space(text, 0)
    for m in _BOUNDARY.finditer(text):
        if m.start() < start:
            continue
        end = m.end()
        nxt = _skip_space(text, end)
        if nxt < len(text):
            c = text[nxt]
            if not (c.isupper() or c.isdigit() or c in _OPENERS):
                continue
        if text[m.start()] == "." and m.group().startswith(".") and not m.group().startswith(".."):
            w = re.search(r"([A-Za-z][A-Za-z.]*)$", text[start : m.start()])
            if w:
                word = w.group(1).lower()
                before_number = nxt < len(text) and text[nxt].isdigit()
                if len(word) == 1 or (word in ABBREVIATIONS and (word not in _NUMBER_ABBREVIATIONS or before_number)):
                    continue
        spans.append((start, end))
        start = nxt
    if start < len(text) and text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def is_sentence_start(text: str, i: int) -> bool:
    """True if position ``i`` starts a sentence: only whitespace and opening quotes or
    brackets lie between it and the start of the text or a ``.``/``!``/``?``/ellipsis."""
    j = i - 1
    while j >= 0 and (text[j].isspace() or text[j] in _OPENERS):
        j -= 1
    return j < 0 or text[j] in ".!?\u2026"


def capitalize_first(s: str) -> str:
    """Upper-case the first character only (``"a violin"`` -> ``"A violin"``)."""
    return s[:1].upper() + s[1:]


def lower_first_word(sentence: str, vocabulary: frozenset[str] | set[str] | None = None) -> str:
    """Lower-case the sentence's first word when that is safe, so a phrase can go in front of it.

    The word is lower-cased if it is a common function word (``COMMON_STARTERS``: "The",
    "It", "In", ...), or if it appears in lower case in ``vocabulary`` (words seen in lower
    case in running text, e.g. "embroidery") and the next word is not capitalised (so
    "New York", "Citizen Kane" and names keep their capitals). "I" is never lower-cased.
    """
    m = re.match(r"([A-Z][a-z\-]*)\b", sentence)
    if not m or m.group(1) == "I":
        return sentence
    word = m.group(1)
    lower = word.lower()
    if lower not in COMMON_STARTERS:
        if vocabulary is None or lower not in vocabulary:
            return sentence
        nxt = re.match(r"\W*(\w)", sentence[m.end() :])
        if nxt and nxt.group(1).isupper():
            return sentence
    return lower + sentence[m.end() :]


def lowercase_vocabulary(texts: Iterable[str]) -> frozenset[str]:
    """Words (letters and hyphens) that occur in lower case anywhere in ``texts``."""
    vocab: set[str] = set()
    for t in texts:
        vocab.update(re.findall(r"(?<![\w-])[a-z][a-z-]*(?![\w-])", t))
    return frozenset(vocab)


def word_count(s: str) -> int:
    """Number of whitespace-separated words containing at least one letter or digit."""
    return sum(1 for w in s.split() if any(ch.isalnum() for ch in w))


_PLACEHOLDER = re.compile(r"\{(\w+)\}")
KEY_OPEN, KEY_CLOSE = "[[", "]]"


class TemplateError(ValueError):
    """A template names an unknown placeholder or has unbalanced ``[[ ]]`` key markers."""


def fill_template(
    template: str, values: Mapping[str, str], key_fields: Mapping[str, Span] | None = None
) -> tuple[str, Span | None]:
    """Fill ``{name}`` placeholders and locate the key span.

    The key span is marked in the template with ``[[ ... ]]`` (markers may enclose
    placeholders; ``[[[x]]]`` keys the bracketed ``[x]``), or, if there are no markers,
    is the part of the first placeholder named in ``key_fields`` given by its
    ``(start, end)`` offset inside that value (e.g.
    the head word "violin" inside the noun phrase "a violin").

    Returns:
        ``(text, (start, end))`` with the markers removed; the span is ``None`` if no key.

    Raises:
        TemplateError: unknown placeholder, or markers that are unbalanced or nested.
    """
    key_fields = key_fields or {}
    out: list[str] = []
    key_start = key_end = None
    pos = 0
    token_re = re.compile(r"\[\[|\]\](?!\])|\{(\w+)\}")
    for m in token_re.finditer(template):
        out.append(template[pos : m.start()])
        pos = m.end()
        length = sum(len(p) for p in out)
        if m.group() == KEY_OPEN:
            if key_start is not None:
                raise TemplateError(f"template {template!r} has more than one [[ marker")
            key_start = length
        elif m.group() == KEY_CLOSE:
            if key_start is None or key_end is not None:
                raise TemplateError(f"template {template!r} has an unbalanced ]] marker")
            key_end = length
        else:
            name = m.group(1)
            if name not in values:
                raise TemplateError(
                    f"template {template!r} uses placeholder {{{name}}}, which is not available here; "
                    f"available: {sorted(values)}"
                )
            value = values[name]
            if KEY_OPEN not in template and key_start is None and name in key_fields:
                s, e = key_fields[name]
                key_start, key_end = length + s, length + e
            out.append(value)
    out.append(template[pos:])
    text = "".join(out)
    if (key_start is None) != (key_end is None):
        raise TemplateError(f"template {template!r} has an unbalanced [[ marker")
    return text, (None if key_start is None else (key_start, key_end))


def placeholders(template: str) -> set[str]:
    """Names of the ``{name}`` placeholders used by ``template``."""
    return set(_PLACEHOLDER.findall(template))
