"""Notebook 01's parameter check (:mod:`vaxis.run.checks`): run before any game is generated."""

from __future__ import annotations

from dataclasses import fields

from ..data.icrl.build import GameSize
from ..data.icrl.criteria import SPLITS, load_criteria
from ..data.icrl.paragraphs import load_paragraphs
from ..data.icrl.text import sentence_spans, word_count


def check_parameters(cfg, *, paragraphs_file=None, **common) -> list[str]:
    """Notebook 01: ``n_games`` (an int over all criteria, or games per split, each split given at least one:
    notebooks 02-03 fit on construction games and test on held-out ones), ``game_size`` (:class:`GameSize`'s
    fields and rules) and ``paragraphs_file`` (its schema, and enough paragraphs of at most ``max_words`` words and
    two or more sentences to fill a game). Raises :class:`vaxis.run.checks.ParameterError`; returns notes."""
    from ..run.checks import Problems

    p = Problems.for_notebook(1, cfg, **common)
    criteria = load_criteria()
    plan = cfg["n_games"]
    if isinstance(plan, dict):
        unknown = sorted(set(plan) - set(SPLITS))
        if unknown:
            p.add(
                f"n_games: unknown split(s) {unknown}; give games per split, e.g. {{construction = 300, held_out = 250}}"
            )
        for split in SPLITS:
            p.integer(f"n_games[{split!r}]", plan.get(split, 0), 1, fix=" (notebooks 02-03 need games of both splits)")
    elif p.integer("n_games", plan, 1):
        first = sorted(criteria)[:plan]  # games go round-robin over the criteria sorted by name
        missing = [s for s in SPLITS if s not in {criteria[n].split for n in first}]
        if missing:
            p.add(f"n_games={plan}: the first {plan} criteria (games go round-robin over them) hold no {missing[0]} "
                  f"criterion; ask for at least {len(criteria)} games (one per criterion) or give games per split")  # fmt: skip
        elif plan < len(criteria):
            p.note(f"n_games={plan}: {len(criteria) - plan} of the {len(criteria)} criteria get no game")
    size = cfg.get("game_size", {})
    known = {f.name for f in fields(GameSize)}
    if not isinstance(size, dict) or set(size) - known:
        p.add(f"game_size={size!r}: give a table of {sorted(known)} (an empty table: the paper's sizes)")
        size = None
    else:
        size = p.attempt(f"game_size={size}", GameSize, **size)
    if paragraphs_file is not None and p.file("paragraphs_file", paragraphs_file) is None:
        return p.done()
    paragraphs = p.attempt(
        "paragraphs_file", load_paragraphs, None if paragraphs_file is None else p.path(paragraphs_file)
    )
    if paragraphs is not None and size is not None:
        usable = sum(
            word_count(x["text"]) <= size.max_words and len(sentence_spans(x["text"])) >= 2 for x in paragraphs
        )
        if usable < size.max_paragraphs:
            source = "the shipped paragraphs" if paragraphs_file is None else str(paragraphs_file)
            p.add(f"paragraphs_file: {usable} paragraphs of {source} have at most {size.max_words} words and two or "
                  f"more sentences, and a game needs up to {size.max_paragraphs}: give more paragraphs or raise "
                  "game_size.max_words")  # fmt: skip
    return p.done()
