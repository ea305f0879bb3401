"""Seed paragraphs for the ICRL games.

The default file, ``data/paragraphs.jsonl``, holds 1,200 lead paragraphs of English
Wikipedia vital articles (50-200 words, 100 per topic), extracted by
``scripts/extract_paragraphs.py``; the text is CC BY-SA 4.0 (see data/LICENSES.md).
Users may pass their own file: JSON Lines with at least a ``text`` field per line
(``id``, ``title``, ``topic`` optional), or plain text with paragraphs separated by
blank lines.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .criteria import default_data_dir

_RESERVED = "\u2063"  # vaxis.core.chat's placeholder character


class ParagraphsError(ValueError):
    """A paragraphs file is missing or malformed."""


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def load_paragraphs(path: str | Path | None = None) -> list[dict]:
    """Load seed paragraphs as ``[{"id", "title", "topic", "text"}, ...]`` in file order.

    Args:
        path: a ``.jsonl`` file (one JSON object per line with a ``text`` field, and optionally
            ``id``, ``title``, ``topic``) or a ``.txt`` file (paragraphs separated by blank
            lines). Default: the repository's ``data/paragraphs.jsonl``.

    Whitespace inside a paragraph is collapsed to single spaces. Missing ids become
    ``"p<line>"``, missing titles ``""``, missing topics ``"unknown"``.

    Raises:
        ParagraphsError: missing file, bad JSON, empty text, duplicate id, or a reserved character.
    """
    path = Path(path) if path is not None else default_data_dir() / "paragraphs.jsonl"
    if not path.is_file():
        raise ParagraphsError(
            f"paragraph file {path} not found; pass path= to a .jsonl/.txt file, or rebuild the "
            "default with `python scripts/extract_paragraphs.py`"
        )
    raw = path.read_text(encoding="utf-8")
    records: list[tuple[int, dict]] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ParagraphsError(f"{path.name} line {n}: not valid JSON ({exc.msg})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise ParagraphsError(f"{path.name} line {n}: field 'text' must be a string")
            records.append((n, rec))
    else:
        n = 1
        for block in re.split(r"\n\s*\n", raw):
            if block.strip():
                records.append((n, {"text": block}))
            n += block.count("\n") + 2
    out, seen = [], {}
    for n, rec in records:
        text = _clean(rec["text"])
        if not text:
            raise ParagraphsError(f"{path.name} line {n}: field 'text' is empty")
        if _RESERVED in text:
            raise ParagraphsError(f"{path.name} line {n}: field 'text' contains the reserved character U+2063")
        pid = str(rec.get("id") or f"p{n}")
        if pid in seen:
            raise ParagraphsError(f"{path.name} line {n}: field 'id' {pid!r} duplicates line {seen[pid]}")
        seen[pid] = n
        out.append(
            {
                "id": pid,
                "title": _clean(str(rec.get("title") or "")),
                "topic": str(rec.get("topic") or "unknown"),
                "text": text,
            }
        )
    if not out:
        raise ParagraphsError(f"{path} holds no paragraphs")
    return out
