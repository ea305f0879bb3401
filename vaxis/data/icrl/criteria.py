"""The hidden criteria of the ICRL games, their checkers, and the wrong hypotheses.

Definitions live in data files (``data/criteria/*.json``), not in code:

- ``syntactic.json``: the 23 syntactic criteria (15 construction, 8 held-out). Each
  names a checker from :data:`MATCHERS` (exact string/regex functions, defined
  here because they are code), the edit operators that satisfy it, and its wrong
  hypotheses.
- ``semantic.json``: the 52 semantic criteria (35 construction, 17 held-out). Each has
  a curated lexicon of at least 20 real words or phrases, matched on word boundaries
  with case awareness and inflected forms (see :class:`Lexicon`).
- ``decoys.json``: extra hypotheses a player may try that are not criteria ("mentions a
  place", "uses the passive voice", ...), checked the same way.
- ``frames.json``: sentence/clause templates per lexicon frame (how a lexicon word is
  worked into a paragraph) and the phrases the player uses to describe its edits.

A rule (criterion or decoy) exposes ``matches(text) -> [(start, end), ...]`` (the
character spans that satisfy it, sorted, non-overlapping) and ``check(text) ->
bool``; ``check(text) == bool(matches(text))`` always.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ...core.cache import REPO_ROOT
from .text import COMMON_STARTERS, Span, capitalize_first, is_sentence_start, sentence_spans, word_count

KINDS = ("syntactic", "semantic")
SPLITS = ("construction", "held_out")
DECOY = "decoy"
MIN_LEXICON = 20
MIN_WRONG_HYPOTHESES = 6
DATA_FILES = ("syntactic.json", "semantic.json", "decoys.json")


class CriteriaError(ValueError):
    """A criteria data file is missing, malformed, or inconsistent."""


def default_data_dir() -> Path:
    """The repository's ``data`` directory (``vaxis`` is installed editable)."""
    return REPO_ROOT / "data"


# ----------------------------------------------------------------------------- syntactic checkers


def _regex(pattern: str, flags: int = 0) -> Callable[[str], list[Span]]:
    rx = re.compile(pattern, flags)

    def matcher(text: str) -> list[Span]:
        return [m.span() for m in rx.finditer(text) if m.end() > m.start()]

    matcher.pattern = pattern  # type: ignore[attr-defined]
    return matcher


_EMOJI = (
    "(?:[\U0001f1e6-\U0001f1ff]{2}"  # flags
    "|[\U0001f300-\U0001faff\u2600-\u27bf\u2b50\u2b55\u2b1b\u2b1c\u231a\u231b\u23e9-\u23f3]"
    "[\ufe0f\U0001f3fb-\U0001f3ff]?(?:\u200d[\U0001f300-\U0001faff\u2600-\u27bf]\ufe0f?)*)"
)

_PRONOUNS = ("I", "me", "my", "we", "us", "our", "ours", "myself", "ourselves")
_PRONOUN_RE = re.compile(r"(?<!\w)(" + "|".join(_PRONOUNS + tuple(p.capitalize() for p in _PRONOUNS[1:])) + r")(?!\w)")
_NOT_NUMERAL_PREV = COMMON_STARTERS | {
    "and",
    "but",
    "if",
    "so",
    "yet",
    "or",
    "than",
    "because",
    "perhaps",
    "honestly",
}


def _first_person(text: str) -> list[Span]:
    """First-person pronouns (I, me, my, we, us, our, ours, myself, ourselves).

    Case-aware: "US" is not "us"; a capitalised "Us"/"My"/... counts only at a sentence
    start. "I" counts unless it is a Roman numeral: directly after a capitalised word that
    is not a common sentence opener ("World War I", "Elizabeth I"), or followed by a
    hyphen or digit ("I-95"). Word boundaries: "us" in "bus", "my" in "myth" do not count.
    """
    out = []
    for m in _PRONOUN_RE.finditer(text):
        word, s, e = m.group(1), m.start(), m.end()
        if word == "I":
            if e < len(text) and (text[e] == "-" or text[e].isdigit()):
                continue
            prev = re.search(r"([A-Z][A-Za-z]*)\s$", text[max(0, s - 40) : s])
            if prev and prev.group(1).lower() not in _NOT_NUMERAL_PREV:
                continue
        elif word[0].isupper() and not is_sentence_start(text, s):
            continue
        out.append((s, e))
    return out


def _first_sentence_question(text: str) -> list[Span]:
    """The ``?`` that ends the first sentence, if the first sentence is a question."""
    spans = sentence_spans(text)
    if not spans:
        return []
    s, e = spans[0]
    sentence = text[s:e].rstrip('"\u201d\u2019)]')
    if sentence.endswith("?"):
        q = s + len(sentence) - 1
        return [(q, q + 1)]
    return []


def _short_sentence(text: str) -> list[Span]:
    """Sentences of at most four words."""
    return [(s, e) for s, e in sentence_spans(text) if 0 < word_count(text[s:e]) <= 4]


#: name -> matcher(text) -> sorted, non-overlapping character spans.
MATCHERS: dict[str, Callable[[str], list[Span]]] = {
    # construction criteria
    "colon": _regex(r":"),
    "digit": _regex(r"[0-9]+"),
    "emoji": _regex(_EMOJI),
    "quotation_marks": _regex('"[^"\\n]{1,200}"|\u201c[^\u201d\\n]{1,200}\u201d'),
    "exclamation": _regex("(?<=[^\\s!])!+(?=[\\s\"\u201d\u2019')\\]]|$)"),
    "first_person": _first_person,
    "parentheses": _regex(r"\([^()\n]{0,300}\)"),
    "first_sentence_question": _first_sentence_question,
    "semicolon": _regex(r";"),
    "dash": _regex("[\u2014\u2013]|(?<=\\s)--?(?=\\s)"),
    "ellipsis": _regex("\\.\\.\\.|\u2026"),
    "ampersand": _regex(r"&"),
    "slash": _regex(r"/"),
    "percent_sign": _regex(r"%"),
    "dollar_sign": _regex(r"\$"),
    # held-out criteria
    "hashtag": _regex(r"#\w*"),
    "at_sign": _regex(r"@\w*"),
    "asterisk": _regex(r"\*[^*\s][^*\n]{0,80}?\*|\*"),
    "square_brackets": _regex(r"\[[^\[\]\n]{0,200}\]"),
    "equals_sign": _regex(r"="),
    "plus_sign": _regex(r"\+"),
    "all_caps_word": _regex(r"(?<!\w)[A-Z]{3,}(?!\w)"),
    "degree_sign": _regex("\u00b0"),
    # decoy hypotheses
    "year": _regex(r"(?<!\d)(?:1[0-9]{3}|20[0-9]{2})(?!\d)"),
    "negation": _regex(r"\b(?:[Nn]ot|[Nn]ever|[Nn]o longer|[Nn]obody|[Nn]othing|[Nn]either|[Nn]or)\b|\b\w+n't\b"),
    "passive_voice": _regex(r"\b(?:is|are|was|were|been|being|be)\s+(?:\w+ly\s+)?\w+(?:ed|en)\b"),
    "apostrophe": _regex("\\b[A-Za-z]+['\u2019][A-Za-z]+\\b"),
    "hyphenated_word": _regex(r"\b[A-Za-z]+(?:-[A-Za-z]+)+\b"),
    "question_anywhere": _regex(r"\?"),
    "short_sentence": _short_sentence,
}


# ----------------------------------------------------------------------------- lexicons


def plural(phrase: str) -> str:
    """Regular English plural of a phrase's last word: box -> boxes, city -> cities, violin -> violins."""
    head, _, last = phrase.rpartition(" ")
    if re.search(r"(s|x|z|ch|sh)$", last):
        last += "es"
    elif re.search(r"[^aeiou]y$", last):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


@dataclass(frozen=True)
class LexEntry:
    """One lexicon entry: the noun phrase used when inserting it (``np``, e.g. "a violin"),
    its ``head`` ("violin", the part that satisfies the criterion), and every matched
    ``form`` (head, plural or listed inflections). Verb entries list base, 3rd person,
    past and -ing forms, in that order."""

    np: str
    head: str
    forms: tuple[str, ...]


def parse_entry(raw: str, inflect: str) -> LexEntry:
    """Parse a lexicon string.

    ``"a violin"`` -> np "a violin", head "violin", forms (violin, violins) when
    ``inflect == "noun"``; ``"a louse|lice"`` lists forms explicitly (no automatic
    plural); ``"bake|bakes|baked|baking"`` is a verb (``inflect == "verb"``).
    """
    parts = [p.strip() for p in raw.split("|")]
    if not parts[0] or any(not p for p in parts):
        raise CriteriaError(f"lexicon entry {raw!r} has an empty form")
    np = parts[0]
    head = re.sub(r"^(?:a|an|the)\s+", "", np)
    if inflect == "verb":
        if len(parts) < 4:
            raise CriteriaError(
                f"verb entry {raw!r} must list base|3rd-person|past|-ing forms (got {len(parts)} forms)"
            )
        forms = tuple(dict.fromkeys(parts))
    elif len(parts) > 1:
        forms = tuple(dict.fromkeys([head, *parts[1:]]))
    elif inflect == "noun":
        forms = (head, plural(head))
    else:
        forms = (head,)
    return LexEntry(np=np, head=head, forms=forms)


_WORD = re.compile(r"\w+")
_NEXT_CAPITALISED = re.compile(r"[ \t]+[A-Z]")


@functools.lru_cache(maxsize=8192)
def _word_set(text: str) -> frozenset[str]:
    """The set of ``\\w+`` tokens of ``text`` (cached: many lexicons check the same text)."""
    return frozenset(_WORD.findall(text))


class Lexicon:
    """A set of words/phrases matched on word boundaries, case-aware.

    Matching rules (tested in tests/test_icrl_criteria.py):

    - word boundaries: a form must not touch another letter or digit ("us" is not in
      "bus", "gold" is not in "golden"); a hyphen or apostrophe is a boundary;
    - case: a form written in lower case matches that lower-case text anywhere, and its
      capitalised variant only at a sentence start and not followed by another capitalised
      word ("mercury" matches "Mercury rises" at the start of a sentence but not "the planet
      Mercury" or "Robin Hood" for "robin"); a form written with capitals
      (a proper noun, "Mars") matches exactly; all-caps text ("GOLD") never matches a
      lower-case form;
    - whitespace inside a phrase matches any run of whitespace;
    - when forms overlap, the longest wins ("scarlet fever" before "scarlet").
    """

    def __init__(self, entries: Iterable[str], inflect: str = "noun"):
        if inflect not in ("noun", "verb", "none"):
            raise CriteriaError(f"lexicon inflect must be 'noun', 'verb' or 'none', got {inflect!r}")
        self.inflect = inflect
        self.entries: tuple[LexEntry, ...] = tuple(parse_entry(e, inflect) for e in entries)
        exact, gated = set(), set()
        for entry in self.entries:
            for form in entry.forms:
                exact.add(form)
                if form[0].islower():
                    gated.add(capitalize_first(form))
        self._gated = frozenset(gated - exact)
        self._first_words = frozenset(_WORD.match(f).group() for f in exact | gated if _WORD.match(f))
        alternatives = sorted(exact | gated, key=lambda f: (-len(f), f))
        alt = "|".join(r"\s+".join(re.escape(w) for w in f.split()) for f in alternatives)
        self._rx = re.compile(r"(?<!\w)(?:" + alt + r")(?!\w)")

    def __len__(self) -> int:
        return len(self.entries)

    def matches(self, text: str) -> list[Span]:
        """Spans of lexicon forms in ``text`` (see the class docstring for the rules)."""
        if self._first_words.isdisjoint(_word_set(text)):
            return []
        out = []
        for m in self._rx.finditer(text):
            form = " ".join(m.group().split())
            if form in self._gated and (
                not is_sentence_start(text, m.start()) or _NEXT_CAPITALISED.match(text, m.end())
            ):
                continue
            out.append(m.span())
        return out


# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True, eq=False)
class Criterion:
    """A hidden criterion (split "construction" or "held_out") or a decoy hypothesis
    (split "decoy").

    Attributes:
        name: identifier, e.g. ``"musical_instrument"``.
        kind: ``"syntactic"`` or ``"semantic"``.
        split: ``"construction"``, ``"held_out"`` or ``"decoy"``.
        description: verb phrase completing "the paragraph ...", e.g. "names a musical
            instrument"; the player states it in its thinking.
        wrong_hypotheses: names of rules a player plausibly tries before discovering this one.
        edits: edit-operator specifications (data, see :mod:`vaxis.data.icrl.edits`).
        lexicon: for lexicon rules; ``None`` for regex rules.
        checker: name in :data:`MATCHERS` for regex rules.
        frame: template frame for lexicon rules (see ``frames.json``).
    """

    name: str
    kind: str
    split: str
    description: str
    wrong_hypotheses: tuple[str, ...] = ()
    edits: tuple[Mapping, ...] = field(default=(), repr=False)
    lexicon: Lexicon | None = field(default=None, repr=False)
    checker: str | None = None
    frame: str | None = None
    templates: Mapping = field(default_factory=dict, repr=False)

    def matches(self, text: str) -> list[Span]:
        """Character spans of ``text`` that satisfy this rule (sorted, non-overlapping)."""
        if self.lexicon is not None:
            return self.lexicon.matches(text)
        return MATCHERS[self.checker](text)

    def check(self, text: str) -> bool:
        """True if ``text`` satisfies this rule; always equals ``bool(self.matches(text))``."""
        return bool(self.matches(text))

    @property
    def is_criterion(self) -> bool:
        """True for the 75 criteria, False for decoy hypotheses."""
        return self.split in SPLITS


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CriteriaError(
            f"criteria data file {path} is missing; vaxis ships it under data/criteria/. "
            "Pass data_dir= pointing at a directory with a criteria/ folder."
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CriteriaError(f"{path} is not valid JSON: {exc}") from exc


def _build_rule(raw: Mapping, where: str) -> Criterion:
    for key in ("name", "kind", "split", "description"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise CriteriaError(f"{where}: field {key!r} must be a non-empty string")
    name, kind, split = raw["name"], raw["kind"], raw["split"]
    where = f"{where} ({name})"
    if kind not in KINDS:
        raise CriteriaError(f"{where}: kind must be one of {KINDS}, got {kind!r}")
    if split not in (*SPLITS, DECOY):
        raise CriteriaError(f"{where}: split must be one of {(*SPLITS, DECOY)}, got {split!r}")
    lexicon = checker = None
    if "lexicon" in raw:
        entries = raw["lexicon"]
        minimum = MIN_LEXICON if split in SPLITS else 8
        if not isinstance(entries, list) or len(entries) < minimum:
            raise CriteriaError(f"{where}: lexicon must list at least {minimum} words or phrases")
        if len(set(entries)) != len(entries):
            dupes = sorted({e for e in entries if entries.count(e) > 1})
            raise CriteriaError(f"{where}: lexicon has duplicate entries {dupes}")
        lexicon = Lexicon(entries, raw.get("inflect", "noun"))
        if not raw.get("frame"):
            raise CriteriaError(f"{where}: a lexicon rule needs a 'frame' (see frames.json)")
    elif "checker" in raw:
        checker = raw["checker"]
        if checker not in MATCHERS:
            raise CriteriaError(f"{where}: unknown checker {checker!r}; known: {sorted(MATCHERS)}")
        if not raw.get("edits"):
            raise CriteriaError(f"{where}: a checker rule needs at least one entry in 'edits'")
    else:
        raise CriteriaError(f"{where}: give either a 'lexicon' or a 'checker'")
    wrong = raw.get("wrong_hypotheses", [])
    if split in SPLITS and len(wrong) < MIN_WRONG_HYPOTHESES:
        raise CriteriaError(f"{where}: needs at least {MIN_WRONG_HYPOTHESES} wrong_hypotheses, has {len(wrong)}")
    return Criterion(
        name=name,
        kind=kind,
        split=split,
        description=raw["description"],
        wrong_hypotheses=tuple(wrong),
        edits=tuple(raw.get("edits", ())),
        lexicon=lexicon,
        checker=checker,
        frame=raw.get("frame"),
        templates=raw.get("templates", {}),
    )


@functools.lru_cache(maxsize=8)
def _load_rules_cached(criteria_dir: str) -> tuple[Criterion, ...]:
    rules: dict[str, Criterion] = {}
    for fname in DATA_FILES:
        path = Path(criteria_dir) / fname
        doc = _read_json(path)
        items = doc.get("rules")
        if not isinstance(items, list):
            raise CriteriaError(f"{path}: top-level field 'rules' must be a list")
        for i, raw in enumerate(items):
            rule = _build_rule(raw, f"{path.name} rules[{i}]")
            if rule.name in rules:
                raise CriteriaError(f"{path.name} rules[{i}]: duplicate rule name {rule.name!r}")
            rules[rule.name] = rule
    for rule in rules.values():
        for hyp in rule.wrong_hypotheses:
            if hyp not in rules:
                raise CriteriaError(f"criterion {rule.name!r}: wrong hypothesis {hyp!r} is not a defined rule")
            if hyp == rule.name:
                raise CriteriaError(f"criterion {rule.name!r} lists itself as a wrong hypothesis")
            if rule.split == "construction" and rules[hyp].split == "held_out":
                raise CriteriaError(
                    f"construction criterion {rule.name!r} lists held-out criterion {hyp!r} as a wrong "
                    "hypothesis; held-out criteria must stay out of construction games"
                )
    return tuple(rules[name] for name in sorted(rules))


def load_rules(data_dir: str | Path | None = None) -> dict[str, Criterion]:
    """All rules (75 criteria + decoy hypotheses), name -> :class:`Criterion`, sorted by name.

    Args:
        data_dir: directory containing ``criteria/``; default: the repository's ``data/``.
    """
    criteria_dir = Path(data_dir or default_data_dir()).resolve() / "criteria"
    return {r.name: r for r in _load_rules_cached(str(criteria_dir))}


def load_criteria(data_dir: str | Path | None = None, splits: Iterable[str] = SPLITS) -> dict[str, Criterion]:
    """The hidden criteria (no decoys), name -> :class:`Criterion`, sorted by name.

    Args:
        data_dir: directory containing ``criteria/``; default: the repository's ``data/``.
        splits: which splits to return (``"construction"``, ``"held_out"``).
    """
    splits = tuple(splits)
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ValueError(f"unknown split(s) {bad}: choose from {SPLITS}")
    return {n: r for n, r in load_rules(data_dir).items() if r.split in splits}
