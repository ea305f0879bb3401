"""The scorecard: each paper number this run can measure, beside this run's value.

Paper numbers live in one data file, ``data/paper_numbers.json`` (quoted from
METHOD.md). Notebooks call :func:`record` with the rows they measured; rows are
kept in ``<run_dir>/scorecard.json`` (one row per key, replaced on re-run) and
rendered to ``<run_dir>/scorecard.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.cache import atomic_write_json, atomic_write_text
from .config import REPO_ROOT

PAPER_NUMBERS = REPO_ROOT / "data" / "paper_numbers.json"


def paper_numbers(path: str | Path = PAPER_NUMBERS) -> dict:
    """``{key: {"section", "metric", "value", "context"}}`` from the paper-numbers file."""
    return json.loads(Path(path).read_text())["numbers"]


def record(run_dir: str | Path, rows: list[dict], replace_prefix: str | None = None) -> Path:
    """Add or replace scorecard rows and re-render ``scorecard.md``. ``replace_prefix``: first drop every stored
    row whose key starts with it (a notebook whose keys are built from names, e.g. ``"sec7.verdict."``, so rows of
    names it no longer writes do not linger from an earlier run).

    Each row: ``{"key": <paper-number key or a new key>, "value": <this run's value or text>,
    "context": "model M, profile P, layer L, ..."}``; optional ``"ci"`` (a ``(low, high)`` pair),
    ``"n"`` (the sample size, as text), ``"null"`` (the null control's value, as text), and
    ``"metric"`` and ``"section"`` for keys without a paper number. Returns the markdown path.
    """
    run_dir = Path(run_dir)
    paper = paper_numbers()
    store = run_dir / "scorecard.json"
    current = json.loads(store.read_text()) if store.exists() else {}
    if replace_prefix:
        current = {k: v for k, v in current.items() if not k.startswith(replace_prefix)}
    for row in rows:
        key = row["key"]
        if key not in paper and "metric" not in row:
            raise KeyError(f"{key!r} is not in {PAPER_NUMBERS.name}; give 'metric' and 'section' for a new row")
        if "ci" in row and (len(row["ci"]) != 2):
            raise ValueError(f"{key!r}: ci must be a (low, high) pair, got {row['ci']!r}")
        current[key] = {k: row[k] for k in ("value", "ci", "n", "null", "context", "metric", "section") if k in row}
    atomic_write_json(store, current)
    return atomic_write_text(run_dir / "scorecard.md", render(current, paper))


def _fmt(value) -> str:
    """A table cell: floats to 3 decimals; pipes and line breaks escaped so a row stays a row."""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\r", "").replace("\n", "⏎")


def _ci(ci) -> str:
    if not ci or any(v is None or v != v for v in ci):  # missing or NaN
        return ""
    return f"{ci[0]:.3f}-{ci[1]:.3f}"


def render(current: dict, paper: dict) -> str:
    """Markdown table of the scorecard, ordered by the paper-numbers file."""
    lines = [
        "# Scorecard: paper vs this run",
        "",
        "Paper numbers are for Qwen3-8B (Jiang, Kauvar & Lindsey 2026) as quoted in METHOD.md; each value "
        "of this run names the model, profile, layer and sample size it came from, with its 95% CI and the "
        "null control it is read against where it has them.",
        "",
        "| section | metric | paper | paper context | this run | 95% CI | n | null control | this run's context |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = [k for k in paper if k in current] + sorted(k for k in current if k not in paper)
    for key in order:
        row, ref = current[key], paper.get(key, {})
        lines.append(
            f"| {row.get('section', ref.get('section', ''))} | {row.get('metric', ref.get('metric', key))} | "
            f"{_fmt(ref['value']) if 'value' in ref else '—'} | {ref.get('context', '')} | "
            f"{_fmt(row['value'])} | {_ci(row.get('ci'))} | {_fmt(row.get('n', ''))} | {_fmt(row.get('null', ''))} | "
            f"{_fmt(row.get('context', ''))} |"
        )
    return "\n".join(lines) + "\n"
