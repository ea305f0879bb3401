"""Edit operators: rewrite a real paragraph so that it satisfies a rule.

Each rule (criterion or decoy hypothesis) has edit operators, given as data
(``data/criteria/*.json``; lexicon rules get theirs from their frame in
``frames.json``). An operator keeps the original paragraph and adds or changes one
small thing, at a position drawn at random so the key word is not always in the same
place:

- ``insert_sentence``: a new sentence at a random sentence boundary (start, middle, end);
- ``append_clause``: a clause before the final full stop of a random sentence;
- ``prefix_sentence``: a phrase in front of a random sentence (its first word is
  lower-cased only if it is a common function word);
- ``append_after``: something (an emoji, a hashtag) right after a random sentence;
- ``replace`` / ``replace_map``: one random occurrence of a pattern or word replaced
  (" and " -> " & ", "three" -> "3");
- ``join_sentences``: two adjacent sentences joined (with "; " or " - ");
- ``end_sentence``: a sentence's full stop replaced ("!" or "...");
- ``question_first``: the first sentence turned into a question;
- ``wrap_word`` / ``upper_word``: a random word emphasised ("*word*", "WORD").

:meth:`EditEngine.propose` returns an :class:`Edit` with the rewrite, the character
span of the key (what the player targets) and a phrase describing the edit for the
player's thinking. It does not verify the rule: the game generator does.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .criteria import CriteriaError, Criterion, default_data_dir
from .text import (
    Span,
    capitalize_first,
    fill_template,
    lower_first_word,
    lowercase_vocabulary,
    sentence_spans,
)

_OP_WEIGHTS = {"insert_sentence": 3, "append_clause": 2, "prefix_sentence": 1}
_WORD_FOR_EMPHASIS = re.compile(r"(?<![\w'\-])[a-z]{5,}(?![\w'\-])")


@dataclass(frozen=True)
class Edit:
    """A proposed rewrite.

    Attributes:
        rewrite: the whole rewritten paragraph.
        key_span: ``(start, end)`` in ``rewrite`` of the word/edit that is meant to satisfy the rule.
        operator: the edit operator's name.
        action: what the player says it will do, e.g. "add a sentence that mentions a violin".
    """

    rewrite: str
    key_span: Span
    operator: str
    action: str

    @property
    def key_text(self) -> str:
        """The text at ``key_span``."""
        return self.rewrite[self.key_span[0] : self.key_span[1]]


def clean_key_boundaries(text: str, start: int, end: int) -> bool:
    """True if the span ``[start, end)`` can be tokenized on its own by a regex pre-tokenizer.

    A span that begins with punctuation must follow whitespace, a letter/digit or the
    start; one that ends with punctuation must precede whitespace, a letter/digit or the
    end ("(aside)." fails: byte-level BPE merges ")." into one token, so the span would
    share a token with what follows). A span starting or ending with a letter must not
    continue a word.
    """
    if not 0 <= start < end <= len(text):
        return False
    first, last = text[start], text[end - 1]
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    if first.isalnum():
        if before.isalnum():
            return False
    elif not (before.isspace() or before.isalnum()):
        return False
    if last.isalnum():
        if after.isalnum():
            return False
    elif not (after.isspace() or after.isalnum()):
        return False
    return True


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise CriteriaError(f"{path} is missing; vaxis ships it under data/criteria/")
    return json.loads(path.read_text(encoding="utf-8"))


class EditEngine:
    """Builds and applies edit operators for rules.

    Args:
        data_dir: directory containing ``criteria/frames.json`` and ``criteria/syntactic.json``
            (for fillers); default: the repository's ``data/``.
    """

    def __init__(self, data_dir: str | Path | None = None):
        criteria_dir = Path(data_dir or default_data_dir()).resolve() / "criteria"
        frames_doc = _load_json(criteria_dir / "frames.json")
        self.frames: dict = frames_doc["frames"]
        self.default_actions: dict = frames_doc.get("default_actions", {})
        self.fillers: dict = _load_json(criteria_dir / "syntactic.json").get("fillers", {})
        self._ops_cache: dict[str, list[dict]] = {}
        self.vocabulary: frozenset[str] = frozenset()

    def set_vocabulary(self, texts: Iterable[str]) -> None:
        """Learn which capitalised sentence openers are ordinary words ("Embroidery is ...")
        from lower-case occurrences in ``texts`` (see :func:`~vaxis.data.icrl.text.lower_first_word`)."""
        self.vocabulary = lowercase_vocabulary(texts)

    # ------------------------------------------------------------------ operator lists

    def operators(self, rule: Criterion) -> list[dict]:
        """The operator specifications of ``rule`` (each a dict with ``op``, ``weight``,
        ``action`` and op-specific fields). Lexicon rules get theirs from their frame."""
        if rule.name in self._ops_cache:
            return self._ops_cache[rule.name]
        if rule.lexicon is None:
            ops = [dict(spec) for spec in rule.edits]
        else:
            ops = self._lexicon_ops(rule)
        if not ops:
            raise CriteriaError(f"rule {rule.name!r} has no usable edit operators; add templates or edits to its data")
        self._ops_cache[rule.name] = ops
        return ops

    def _lexicon_ops(self, rule: Criterion) -> list[dict]:
        if rule.frame not in self.frames:
            raise CriteriaError(f"rule {rule.name!r} uses frame {rule.frame!r}, not defined in frames.json")
        frame = self.frames[rule.frame]
        generic = self.frames["noun"] if frame.get("generic") else {}
        pos = frame.get("pos", "noun")
        keys = {"insert_sentence": "sentences", "append_clause": "clauses", "prefix_sentence": "prefixes"}
        ops = []
        for op, key in keys.items():
            templates = list(frame.get(key, [])) + list(generic.get(key, [])) + list(rule.templates.get(key, []))
            if not templates:
                continue
            action = (
                frame.get("actions", {}).get(op)
                or generic.get("actions", {}).get(op)
                or self.default_actions.get(pos, {}).get(op)
                or self.default_actions["noun"][op]
            )
            spec = {"op": op, "weight": _OP_WEIGHTS[op], "templates": templates, "action": action, "pos": pos}
            if op == "prefix_sentence" and frame.get("prefix_positions"):
                spec["positions"] = frame["prefix_positions"]
            ops.append(spec)
        return ops

    # ------------------------------------------------------------------ values

    def _values(self, rule: Criterion, rng: random.Random, title: str):
        """Placeholder values and key fields for one edit of ``rule``."""
        values = {
            "n": str(rng.randint(2, 95)),
            "year": str(rng.randint(1500, 2015)),
            "title": lower_first_word(title, self.vocabulary),
            "emoji": rng.choice(self.fillers.get("emoji", ["🙂"])),
            "tag": rng.choice(self.fillers.get("tag", ["history"])),
            "handle": rng.choice(self.fillers.get("handle", ["reader"])),
        }
        key_fields: dict[str, Span] = {}
        if rule.lexicon is not None:
            entry = rng.choice(rule.lexicon.entries)
            head_start = len(entry.np) - len(entry.head)
            if rule.lexicon.inflect == "verb":
                v, vs, ved, ving = entry.forms[:4]
                values.update(v=v, vs=vs, ved=ved, ving=ving, Ving=capitalize_first(ving))
                for k in ("v", "vs", "ved", "ving", "Ving"):
                    key_fields[k] = (0, len(values[k]))
            else:
                values.update(x=entry.np, X=capitalize_first(entry.np), w=entry.head, W=capitalize_first(entry.head))
                key_fields.update(
                    x=(head_start, len(entry.np)),
                    X=(head_start, len(entry.np)),
                    w=(0, len(entry.head)),
                    W=(0, len(entry.head)),
                )
        return values, key_fields

    # ------------------------------------------------------------------ propose

    def propose(self, rule: Criterion, text: str, rng: random.Random, title: str = "it") -> Edit | None:
        """One random edit of ``text`` meant to satisfy ``rule``, or ``None`` if the drawn
        operator does not apply to this paragraph (e.g. no " and " to replace).

        The result is not verified; callers check it with the rules.
        """
        ops = self.operators(rule)
        spec = rng.choices(ops, weights=[o.get("weight", 1) for o in ops])[0]
        values, key_fields = self._values(rule, rng, title)
        result = _apply(spec, text, rng, values, key_fields, self.vocabulary)
        if result is None:
            return None
        rewrite, key = result
        if key is None or rewrite == text:
            return None
        action_tmpl = rng.choice(spec["action"]) if isinstance(spec["action"], list) else spec["action"]
        action, _ = fill_template(action_tmpl, values)
        return Edit(rewrite=rewrite, key_span=key, operator=spec["op"], action=action)


def _ends_with_plain_stop(text: str, span: Span) -> bool:
    s, e = span
    return (
        e - s >= 2 and text[e - 1] == "." and (text[e - 2].isalnum() or text[e - 2] == ")") and text[e - 3 : e] != "..."
    )


def _apply(spec: Mapping, text: str, rng: random.Random, values: dict, key_fields: dict, vocab=frozenset()):
    """Apply operator ``spec`` to ``text``; returns ``(rewrite, key_span)`` or ``None``."""
    op = spec["op"]
    sents = sentence_spans(text)
    if not sents:
        return None

    def fill(template: str, extra: Mapping | None = None):
        return fill_template(template, {**values, **(extra or {})}, key_fields)

    if op not in _OPERATORS:
        raise CriteriaError(f"unknown edit operator {op!r}; see vaxis/data/icrl/edits.py for the list")
    return _OPERATORS[op](spec, text, sents, rng, fill, vocab)


# Each operator: (spec, text, its sentence spans, rng, fill, vocabulary) -> (rewrite, key span) or None. ``fill``
# fills a template with the edit's values and returns the filled text with its key span (or None).


def _insert_sentence(spec, text, sents, rng, fill, vocab):
    positions = spec.get("positions", "any")
    slots = {"first": [0], "not_first": list(range(1, len(sents) + 1))}.get(positions, list(range(len(sents) + 1)))
    k = rng.choice(slots)
    sentence, key = fill(rng.choice(spec["templates"]))
    if key is None:
        return None
    if k < len(sents):
        p = sents[k][0]
        return text[:p] + sentence + " " + text[p:], (p + key[0], p + key[1])
    p = sents[-1][1]
    return text[:p] + " " + sentence + text[p:], (p + 1 + key[0], p + 1 + key[1])


def _append_clause(spec, text, sents, rng, fill, vocab):
    options = [sp for sp in sents if _ends_with_plain_stop(text, sp)]
    if not options:
        return None
    _, e = rng.choice(options)
    clause, key = fill(rng.choice(spec["templates"]))
    if key is None:
        return None
    p = e - 1
    return text[:p] + clause + text[p:], (p + key[0], p + key[1])


def _prefix_sentence(spec, text, sents, rng, fill, vocab):
    options = sents[1:] if spec.get("positions") == "not_first" else sents
    if not options:
        return None
    s, e = rng.choice(options)
    if not text[s].isalpha():
        return None
    prefix, key = fill(rng.choice(spec["templates"]))
    if key is None:
        return None
    return text[:s] + prefix + lower_first_word(text[s:], vocab), (s + key[0], s + key[1])


def _append_after(spec, text, sents, rng, fill, vocab):
    s, e = rng.choice(sents)
    thing, key = fill(rng.choice(spec["templates"]))
    if key is None:
        return None
    return text[:e] + " " + thing + text[e:], (e + 1 + key[0], e + 1 + key[1])


def _replace(spec, text, sents, rng, fill, vocab):
    found = list(re.finditer(spec["pattern"], text))
    if not found:
        return None
    m = rng.choice(found)
    new, key = fill(spec["replacement"])
    return text[: m.start()] + new + text[m.end() :], (m.start() + key[0], m.start() + key[1])


def _replace_map(spec, text, sents, rng, fill, vocab):
    mapping = spec["map"]
    rx = re.compile(r"(?<![\w-])(" + "|".join(re.escape(w) for w in sorted(mapping)) + r")(?![\w-])")
    found = list(rx.finditer(text))
    if not found:
        return None
    m = rng.choice(found)
    new = mapping[m.group(1)]
    return text[: m.start()] + new + text[m.end() :], (m.start(), m.start() + len(new))


def _join_sentences(spec, text, sents, rng, fill, vocab):
    options = [i for i in range(len(sents) - 1) if _ends_with_plain_stop(text, sents[i])]
    if not options:
        return None
    i = rng.choice(options)
    e, nxt = sents[i][1], sents[i + 1][0]
    joiner, key = fill(spec["joiner"])
    p = e - 1
    return text[:p] + joiner + lower_first_word(text[nxt:], vocab), (p + key[0], p + key[1])


def _end_sentence(spec, text, sents, rng, fill, vocab):
    options = [sp for sp in sents if _ends_with_plain_stop(text, sp)]
    if not options:
        return None
    _, e = rng.choice(options)
    mark, key = fill(spec["mark"])
    p = e - 1
    return text[:p] + mark + text[e:], (p + key[0], p + key[1])


def _question_first(spec, text, sents, rng, fill, vocab):
    s, e = sents[0]
    if not _ends_with_plain_stop(text, sents[0]):
        return None
    body = lower_first_word(text[s : e - 1], vocab)
    question, key = fill(rng.choice(spec["templates"]), {"s": body})
    return text[:s] + question + text[e:], (s + key[0], s + key[1])


def _emphasise_word(spec, text, sents, rng, fill, vocab):  # wrap_word and upper_word
    starts = {s for s, _ in sents}
    found = [m for m in _WORD_FOR_EMPHASIS.finditer(text) if m.start() not in starts]
    if not found:
        return None
    m = rng.choice(found)
    if spec["op"] == "upper_word":
        new, key = m.group().upper(), (0, len(m.group()))
    else:
        new, key = fill(spec["template"], {"word": m.group()})
    return text[: m.start()] + new + text[m.end() :], (m.start() + key[0], m.start() + key[1])


_OPERATORS = {
    "insert_sentence": _insert_sentence,
    "append_clause": _append_clause,
    "prefix_sentence": _prefix_sentence,
    "append_after": _append_after,
    "replace": _replace,
    "replace_map": _replace_map,
    "join_sentences": _join_sentences,
    "end_sentence": _end_sentence,
    "question_first": _question_first,
    "wrap_word": _emphasise_word,
    "upper_word": _emphasise_word,
}
