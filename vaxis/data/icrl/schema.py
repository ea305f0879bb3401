"""The ICRL games file: one game per line (JSON Lines), versioned and validated.

Schema ``vaxis.icrl.games/1`` (the name predates the layout of vaxis/data/; kept so that written games stay
readable). Each line is one JSON object with these fields, in
this order (all character offsets are Python ``str`` indices, end-exclusive):

``schema_version`` (str)
    ``"vaxis.icrl.games/1"``.
``game_id`` (str)
    ``"<criterion>-<k>"``, unique within a file; ``k`` counts games per criterion.
``criterion`` (str), ``criterion_kind`` ("syntactic" | "semantic"), ``criterion_description`` (str)
    The hidden criterion, e.g. ``"musical_instrument"``, ``"semantic"``, ``"names a musical instrument"``.
``split`` ("construction" | "held_out")
    Construction criteria build the axis; held-out criteria evaluate it.
``seed`` (int)
    The game's own seed (derived from the run seed, the criterion and ``k``).
``generator`` (str)
    ``"template/1"`` for the offline generator, ``"llm:<model>"`` for :class:`~vaxis.data.icrl.player.LLMPlayer`.
``discovery_index`` (int)
    0-based index of the discovery paragraph (1..5, i.e. the 2nd to 6th paragraph), always
    followed by at least one more paragraph.
``target_attempt`` (int)
    Index into ``attempts`` of the successful rewrite of the FIRST post-discovery paragraph:
    the target span of METHOD.md section 2.
``paragraphs`` (list of {id, title, topic})
    The real paragraphs used, in order (3 to 8).
``messages`` (list of {role, content})
    The chat: a ``system`` message with the rules, then alternating ``user`` / ``assistant``
    turns. User turns carry the paragraph and/or the feedback ``+1`` / ``-1``; every
    assistant turn is ``<thinking>...</thinking>\\n\\n<rewrite>``. Contents are stripped.
``attempts`` (list, one per assistant message, in order)
    ``message_index`` (int): index of the assistant message in ``messages``;
    ``paragraph_index`` (int, 0-based); ``attempt_index`` (int, 0-based within the paragraph, < 5);
    ``phase``: ``"explore"`` (before discovery, fails), ``"discovery"`` (discovery paragraph),
    ``"exploit"`` (after discovery, succeeds first try);
    ``hypothesis`` (str): the rule the player was testing (the criterion itself on success);
    ``success`` (bool): the feedback was +1;
    ``operator`` (str): the edit operator (``insert_sentence``, ``append_clause``, ...);
    ``rewrite_span`` ([start, end]): the rewritten paragraph inside the message content
    (after ``</thinking>``; ``end`` is the content length);
    ``reward_spans`` ([[start, end], ...]): relative to the rewrite, every occurrence that
    satisfies the criterion (``criterion.matches``); empty for failed attempts;
    ``targeted_span`` ([start, end]) and ``targeted_text`` (str): relative to the rewrite, the
    word or edit the player was targeting (for failed attempts: the placebo cut point);
    ``author``: ``"template"`` or ``"llm"``.

:func:`validate_game_record` checks one record against this schema (every field and consistency rule) and reports
the field of the first problem; :func:`vaxis.data.icrl.gamefile.load_games` runs it on every line of a games file
and names the line too, e.g. ``games.jsonl line 7: field 'attempts[3].rewrite_span': ...``. The records in memory
(:class:`~vaxis.data.icrl.gamefile.Game`) and the file's reading and writing are in :mod:`vaxis.data.icrl.gamefile`.
"""

from __future__ import annotations

from collections.abc import Mapping

SCHEMA_VERSION = "vaxis.icrl.games/1"
PHASES = ("explore", "discovery", "exploit")
MAX_ATTEMPTS = 5
MIN_PARAGRAPHS, MAX_PARAGRAPHS = 3, 8
THINK_OPEN, THINK_CLOSE = "<thinking>", "</thinking>"


class GameSchemaError(ValueError):
    """A game record does not follow the schema; the message names the line and field."""


# ----------------------------------------------------------------------------- validation

_ATTEMPT_FIELDS = {
    "message_index": int,
    "paragraph_index": int,
    "attempt_index": int,
    "phase": str,
    "hypothesis": str,
    "success": bool,
    "operator": str,
    "rewrite_span": list,
    "reward_spans": list,
    "targeted_span": list,
    "targeted_text": str,
    "author": str,
}
_GAME_FIELDS = {
    "schema_version": str,
    "game_id": str,
    "criterion": str,
    "criterion_kind": str,
    "criterion_description": str,
    "split": str,
    "seed": int,
    "generator": str,
    "discovery_index": int,
    "target_attempt": int,
    "paragraphs": list,
    "messages": list,
    "attempts": list,
}


def field_error(where: str, path: str, problem: str) -> GameSchemaError:
    """The error for field ``path`` of the record at ``where``: ``"<where>: field '<path>': <problem>"``."""
    return GameSchemaError(f"{where}: field '{path}': {problem}")


def _type_ok(value, typ) -> bool:
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


def _check_fields(obj, fields: Mapping[str, type], where: str, prefix: str) -> None:
    if not isinstance(obj, Mapping):
        raise field_error(where, prefix or "<record>", f"expected a JSON object, got {type(obj).__name__}")
    for name, typ in fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if name not in obj:
            raise field_error(where, path, "missing")
        if not _type_ok(obj[name], typ):
            raise field_error(where, path, f"expected {typ.__name__}, got {type(obj[name]).__name__} {obj[name]!r:.60}")
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise field_error(where, f"{prefix}.{unknown[0]}" if prefix else unknown[0], "unknown field (schema mismatch?)")


def _check_span(span, length: int, where: str, path: str, what: str, allow_empty: bool = False) -> tuple[int, int]:
    if not (
        isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in span)
    ):
        raise field_error(where, path, f"expected [start, end] with two integers, got {span!r:.60}")
    s, e = span
    if not (0 <= s <= e <= length) or (s == e and not allow_empty):
        raise field_error(where, path, f"span [{s}, {e}] must satisfy 0 <= start < end <= {length} ({what})")
    return s, e


def validate_game_record(record: Mapping, where: str = "game") -> None:
    """Check one game record against schema ``vaxis.icrl.games/1``.

    Checks types, value ranges and the consistency rules of a game (alternating roles,
    one attempt per assistant message, spans inside their text, reward spans only on
    successes, at most 5 attempts per paragraph, discovery in paragraphs 2-6 with a
    paragraph after it, the target attempt being the first post-discovery success).

    Raises:
        GameSchemaError: ``"<where>: field '<path>': <problem>"``.
    """
    _check_header(record, where)
    messages = record["messages"]
    _check_messages(messages, where)
    attempts = record["attempts"]
    assistant_idx = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if len(attempts) != len(assistant_idx):
        raise field_error(
            where,
            "attempts",
            f"expected one attempt per assistant message ({len(assistant_idx)}), got {len(attempts)}",
        )
    n_par = len(record["paragraphs"])
    d = record["discovery_index"]
    if not (1 <= d <= 5 and d <= n_par - 2):
        raise field_error(
            where,
            "discovery_index",
            f"must be 1..5 (2nd to 6th paragraph) and leave a paragraph after it; got {d} with {n_par} paragraphs",
        )
    per_paragraph: dict[int, int] = {}  # paragraph -> attempts seen
    prev_par = -1
    for k, (a, mi) in enumerate(zip(attempts, assistant_idx)):
        _check_attempt_place(a, k, mi, prev_par, per_paragraph, n_par, d, where)
        prev_par = a["paragraph_index"]
        _check_attempt_text(a, f"attempts[{k}]", messages[mi]["content"], mi, record["criterion"], where)
    _check_game_course(record, per_paragraph, where)


def _check_header(record, where: str) -> None:
    """The record's schema version, top-level fields, criterion kind, split and paragraphs."""
    if not isinstance(record, Mapping):
        raise field_error(where, "<record>", f"expected a JSON object, got {type(record).__name__}")
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise field_error(
            where,
            "schema_version",
            f"this vaxis reads {SCHEMA_VERSION!r}, the record says {version!r}; regenerate the games "
            "with vaxis.data.icrl.generate_games",
        )
    _check_fields(record, _GAME_FIELDS, where, "")
    if record["criterion_kind"] not in ("syntactic", "semantic"):
        raise field_error(
            where, "criterion_kind", f"must be 'syntactic' or 'semantic', got {record['criterion_kind']!r}"
        )
    if record["split"] not in ("construction", "held_out"):
        raise field_error(where, "split", f"must be 'construction' or 'held_out', got {record['split']!r}")

    paragraphs = record["paragraphs"]
    if not MIN_PARAGRAPHS <= len(paragraphs) <= MAX_PARAGRAPHS:
        raise field_error(
            where,
            "paragraphs",
            f"a game has {MIN_PARAGRAPHS} to {MAX_PARAGRAPHS} paragraphs, got {len(paragraphs)}",
        )
    for i, p in enumerate(paragraphs):
        _check_fields(p, {"id": str, "title": str, "topic": str}, where, f"paragraphs[{i}]")


def _check_messages(messages, where: str) -> None:
    """The messages' fields, their stripped contents and the alternating roles after an optional system prompt."""
    if not messages:
        raise field_error(where, "messages", "is empty")
    for i, m in enumerate(messages):
        _check_fields(m, {"role": str, "content": str}, where, f"messages[{i}]")
        if m["content"] != m["content"].strip():
            raise field_error(where, f"messages[{i}].content", "must not start or end with whitespace")
    first = 1 if messages[0]["role"] == "system" else 0
    for i, m in enumerate(messages[first:], start=first):
        expected = "user" if (i - first) % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise field_error(
                where,
                f"messages[{i}].role",
                f"expected {expected!r} (roles alternate after the system prompt), got {m['role']!r}",
            )


def _check_attempt_place(a, k: int, mi: int, prev_par: int, per_paragraph: dict, n_par: int, d: int, where: str):
    """Attempt ``k``'s fields and its place in the game (its message, paragraph, index within the paragraph,
    phase and the success its phase demands); counts it in ``per_paragraph``."""
    p = f"attempts[{k}]"
    _check_fields(a, _ATTEMPT_FIELDS, where, p)
    if a["message_index"] != mi:
        raise field_error(
            where,
            f"{p}.message_index",
            f"expected {mi} (the {k + 1}th assistant message), got {a['message_index']}",
        )
    pi = a["paragraph_index"]
    if not (0 <= pi < n_par) or pi < prev_par:
        raise field_error(where, f"{p}.paragraph_index", f"must be in 0..{n_par - 1} and non-decreasing, got {pi}")
    if pi > prev_par + 1:
        raise field_error(where, f"{p}.paragraph_index", f"skips paragraph {prev_par + 1}")
    if a["attempt_index"] != per_paragraph.get(pi, 0):
        raise field_error(where, f"{p}.attempt_index", f"expected {per_paragraph.get(pi, 0)}, got {a['attempt_index']}")
    per_paragraph[pi] = a["attempt_index"] + 1
    if per_paragraph[pi] > MAX_ATTEMPTS:
        raise field_error(where, f"{p}.attempt_index", f"at most {MAX_ATTEMPTS} attempts per paragraph")
    phase = "explore" if pi < d else "discovery" if pi == d else "exploit"
    if a["phase"] != phase:
        raise field_error(where, f"{p}.phase", f"paragraph {pi} with discovery at {d} is {phase!r}, got {a['phase']!r}")
    if phase == "explore" and a["success"]:
        raise field_error(where, f"{p}.success", "attempts before the discovery paragraph must fail")
    if phase == "exploit" and (not a["success"] or a["attempt_index"] != 0):
        raise field_error(where, f"{p}.success", "after discovery every paragraph succeeds at the first attempt")


def _check_attempt_text(a, p: str, content: str, mi: int, criterion: str, where: str) -> None:
    """Attempt ``p``'s assistant turn (``content``, message ``mi``): its thinking block, rewrite span, reward spans
    (only on a success), targeted span and text, and the hypothesis it tests."""
    if not content.startswith(THINK_OPEN) or THINK_CLOSE not in content:
        raise field_error(
            where,
            f"messages[{mi}].content",
            f"an assistant turn must start with {THINK_OPEN} and contain {THINK_CLOSE}",
        )
    rs, re_ = _check_span(
        a["rewrite_span"],
        len(content),
        where,
        f"{p}.rewrite_span",
        f"message {mi} has {len(content)} characters",
    )
    close = content.index(THINK_CLOSE) + len(THINK_CLOSE)
    if rs < close or re_ != len(content) or content[close:rs].strip():
        raise field_error(
            where,
            f"{p}.rewrite_span",
            f"must cover exactly the text after {THINK_CLOSE} ({close}..{len(content)}), got [{rs}, {re_}]",
        )
    length = re_ - rs
    last = 0
    for j, span in enumerate(a["reward_spans"]):
        s, e = _check_span(span, length, where, f"{p}.reward_spans[{j}]", f"the rewrite has {length} characters")
        if s < last:
            raise field_error(where, f"{p}.reward_spans[{j}]", "reward spans must be sorted and must not overlap")
        last = e
    if a["success"] != bool(a["reward_spans"]):
        raise field_error(
            where,
            f"{p}.reward_spans",
            "successful attempts need reward spans; failed attempts must have none",
        )
    ts, te = _check_span(
        a["targeted_span"], length, where, f"{p}.targeted_span", f"the rewrite has {length} characters"
    )
    if content[rs + ts : rs + te] != a["targeted_text"]:
        raise field_error(
            where,
            f"{p}.targeted_text",
            f"does not equal the rewrite's text at targeted_span ({content[rs + ts : rs + te]!r})",
        )
    if a["success"] and a["hypothesis"] != criterion:
        raise field_error(where, f"{p}.hypothesis", "a successful attempt tests the criterion itself")
    if not a["success"] and a["hypothesis"] == criterion:
        raise field_error(where, f"{p}.hypothesis", "a failed attempt must test a wrong hypothesis")


def _check_game_course(record, per_paragraph: dict, where: str) -> None:
    """Every paragraph attempted, the target attempt the first one after the discovery paragraph, and the
    discovery paragraph ending with its only success."""
    attempts, d = record["attempts"], record["discovery_index"]
    if sorted(per_paragraph) != list(range(len(record["paragraphs"]))):
        raise field_error(
            where,
            "attempts",
            f"every paragraph needs at least one attempt; got paragraphs {sorted(per_paragraph)}",
        )
    t = record["target_attempt"]
    expected_t = next((k for k, a in enumerate(attempts) if a["paragraph_index"] == d + 1), None)
    if t != expected_t:
        raise field_error(
            where, "target_attempt", f"must be {expected_t} (the first attempt on paragraph {d + 1}), got {t}"
        )
    disc = [a for a in attempts if a["paragraph_index"] == d]
    if not disc[-1]["success"] or any(a["success"] for a in disc[:-1]):
        raise field_error(where, "attempts", f"the discovery paragraph {d} must end with its only success")
