"""Offline, seeded generator of in-context RL games (METHOD.md section 1).

A game: a system prompt with the rules; 3 to 8 real paragraphs, one per user turn;
up to 5 attempts per paragraph, each answered ``+1`` / ``-1``; a discovery paragraph
drawn from the 2nd to the 6th (always followed by at least one more paragraph).
Before discovery the player tests plausible wrong hypotheses and fails; at discovery
it may fail a few more times, then states the true criterion and succeeds; after it,
it succeeds at the first try and says so confidently. Every assistant turn is
``<thinking>...</thinking>`` followed by the rewritten paragraph.

Guarantees (tested):

- every attempt is checked with the criterion's checker: failed rewrites fail it,
  successful ones pass it; a failed rewrite also satisfies the wrong hypothesis it
  tested, at the recorded ``targeted_span``;
- a game whose attempts cannot all be verified is regenerated (new sub-seed) up to
  ``max_regenerations`` times, then dropped; both counts are reported;
- only paragraphs whose original text does NOT satisfy the criterion are used;
- the same seed gives the same games, byte for byte (one ``random.Random`` per game,
  seeded from ``(seed, criterion, k, regeneration)``; no global random state).

This module is the generation loop and its report; one game is built in :mod:`vaxis.data.icrl.build`, its attempts
written by a player of :mod:`vaxis.data.icrl.players`.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .build import GENERATOR, EditChecks, GameContext, GameSize, Regenerate, build_game
from .criteria import SPLITS, Criterion, load_criteria, load_rules
from .edits import EditEngine
from .gamefile import Game
from .paragraphs import load_paragraphs
from .players import GameText, Player, TemplatePlayer
from .text import sentence_spans, word_count

MIN_WORDS_SIDE = 3


class GenerationError(RuntimeError):
    """The generator cannot build games with the given criteria and paragraphs."""


def _derive_seed(*parts) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()
    return int(digest[:15], 16)


def eligible_paragraphs(criterion: Criterion, paragraphs: Iterable[Mapping]) -> list[Mapping]:
    """Paragraphs usable for ``criterion``: the original text does not satisfy it (so an
    unedited paragraph would get -1) and it has at least two sentences."""
    return [p for p in paragraphs if _n_sentences(p["text"]) >= 2 and not criterion.check(p["text"])]


@functools.lru_cache(maxsize=16384)
def _n_sentences(text: str) -> int:
    return len(sentence_spans(text))


def generate_games(
    n_games: int,
    seed: int = 0,
    criteria: Mapping[str, Criterion] | Iterable[str] | None = None,
    paragraphs: Sequence[Mapping] | str | Path | None = None,
    splits: Iterable[str] = SPLITS,
    *,
    data_dir: str | Path | None = None,
    player: Player | None = None,
    max_regenerations: int = 20,
    min_words_side: int = MIN_WORDS_SIDE,
    proposals_per_attempt: int = 30,
    size: GameSize | None = None,
) -> tuple[list[Game], dict]:
    """Generate ``n_games`` verified ICRL games, deterministically from ``seed``.

    Games are allocated round-robin over the selected criteria, sorted by name (so every
    criterion gets at least one game once ``n_games >= len(criteria)``); the ``k``-th game
    of a criterion depends only on ``(seed, criterion, k)``, so a smaller run is a subset
    of a larger one with the same seed.

    Args:
        n_games: number of games to request.
        seed: run seed.
        criteria: ``{name: Criterion}`` or names; default: all criteria of ``splits``.
        paragraphs: list of ``{"id", "title", "topic", "text"}``, or a path for
            :func:`~vaxis.data.icrl.paragraphs.load_paragraphs`; default: the shipped Wikipedia paragraphs.
        splits: ``"construction"`` and/or ``"held_out"``; filters ``criteria``.
        data_dir: directory with ``criteria/`` (default: the repository's ``data/``).
        player: an optional :class:`~vaxis.data.icrl.players.Player` (e.g.
            :class:`~vaxis.data.icrl.player.LLMPlayer`); its answers are verified like the template player's, which
            is the fallback.
        max_regenerations: new sub-seeds to try before a game is dropped.
        min_words_side: words required before the first and after the last key/reward
            occurrence of every rewrite (so the target keeps >= 3 tokens a side).
        proposals_per_attempt: edit proposals tried per attempt before giving up on it.
        size: a :class:`~vaxis.data.icrl.build.GameSize` (default: the paper's game sizes).

    Returns:
        ``(games, report)``; ``report`` has ``requested``, ``generated``, ``dropped``,
        ``dropped_games`` (id and reason), ``regenerated`` (games that needed another
        sub-seed), ``regeneration_reasons``, ``edit_checks`` (proposals and why rejected),
        ``by_split``, ``by_criterion``, ``eligible_paragraphs`` per criterion, ``seconds``.
    """
    t0 = time.perf_counter()
    splits = tuple(splits)
    if n_games < 0:
        raise ValueError(f"n_games must be >= 0, got {n_games}")
    rules = load_rules(data_dir)
    chosen = _chosen_criteria(criteria, rules, splits, data_dir)
    paragraphs, ctx = _game_context(paragraphs, data_dir, rules, player, min_words_side, proposals_per_attempt, size)
    order = sorted(chosen)
    pools: dict[str, list[Mapping]] = {}
    games: list[Game] = []
    dropped: list[dict] = []
    regenerated = 0
    reasons: Counter = Counter()
    for i in range(n_games):
        name = order[i % len(order)]
        k = i // len(order)
        if name not in pools:
            pools[name] = eligible_paragraphs(chosen[name], paragraphs)
        game_id = f"{name}-{k:03d}"
        game, r, game_reasons = _first_verified(chosen[name], pools[name], game_id, (seed, name, k), ctx,
                                                max_regenerations)  # fmt: skip
        reasons.update(game_reasons)
        if game is None:
            dropped.append({"game_id": game_id, "criterion": name, "reasons": dict(sorted(game_reasons.items()))})
            continue
        if r > 0:
            regenerated += 1
        games.append(game)
    report = {"requested": n_games, "generated": len(games), "dropped": len(dropped), "dropped_games": dropped,
              "regenerated": regenerated, "regeneration_reasons": dict(sorted(reasons.items()))}  # fmt: skip
    report.update(_games_counts(games, ctx, pools))
    report.update(seed=seed, generator=GENERATOR if player is None else f"llm:{getattr(player, 'name', 'player')}",
                  seconds=round(time.perf_counter() - t0, 3))  # fmt: skip
    return games, report


def _chosen_criteria(criteria, rules: Mapping[str, Criterion], splits: tuple, data_dir) -> dict[str, Criterion]:
    """:func:`generate_games`'s ``criteria`` (default: every criterion) as ``{name: Criterion}``, of ``splits``."""
    if criteria is None:
        chosen = load_criteria(data_dir, splits)
    elif isinstance(criteria, Mapping):
        chosen = {n: c for n, c in criteria.items() if c.split in splits}
    else:
        names = list(criteria)
        unknown = [n for n in names if n not in rules or not rules[n].is_criterion]
        if unknown:
            raise ValueError(f"unknown criteria {unknown}; see vaxis.data.icrl.load_criteria() for the names")
        chosen = {n: rules[n] for n in names if rules[n].split in splits}
    if not chosen:
        raise GenerationError(f"no criteria selected (splits={splits}); check `criteria` and `splits`")
    return chosen


def _game_context(paragraphs, data_dir, rules, player, min_words_side: int, proposals_per_attempt: int,
                  size: GameSize | None) -> tuple[list[Mapping], GameContext]:  # fmt: skip
    """The paragraphs (loaded when given as a path or not at all; those longer than ``size.max_words`` left out)
    and the :class:`~vaxis.data.icrl.build.GameContext` every game of a :func:`generate_games` call is written in."""
    if paragraphs is None or isinstance(paragraphs, (str, Path)):
        paragraphs = load_paragraphs(paragraphs)
    paragraphs = list(paragraphs)
    engine = EditEngine(data_dir)
    engine.set_vocabulary(p["text"] for p in paragraphs)
    text = GameText.load(data_dir)
    fallback = TemplatePlayer(engine, text)
    size = size or GameSize()
    if size.max_words < 200:
        paragraphs = [p for p in paragraphs if word_count(p["text"]) <= size.max_words]
    ctx = GameContext(
        rules, player or fallback, fallback, text, min_words_side, proposals_per_attempt, EditChecks(), size
    )
    return paragraphs, ctx


def _first_verified(
    criterion: Criterion, pool, game_id: str, seed_parts: tuple, ctx: GameContext, max_regenerations: int
):
    """``(game or None, sub-seed used, reasons)``: the first game :func:`~vaxis.data.icrl.build.build_game`
    verifies, with sub-seeds ``0..max_regenerations`` (each derived from ``seed_parts`` and the sub-seed), and why
    the others failed."""
    game, reasons = None, Counter()
    for r in range(max_regenerations + 1):
        try:
            game = build_game(criterion, pool, game_id, _derive_seed(*seed_parts, r), ctx)
            break
        except Regenerate as exc:
            reasons[str(exc).split(" on paragraph")[0]] += 1
    return game, r, reasons


def _games_counts(games: list[Game], ctx: GameContext, pools: Mapping[str, list]) -> dict:
    """The edit checks, games per split and per criterion, and eligible paragraphs per criterion of a report."""
    return {
        "edit_checks": ctx.counters.as_dict(),
        "by_split": dict(sorted(Counter(g.split for g in games).items())),
        "by_criterion": dict(sorted(Counter(g.criterion for g in games).items())),
        "eligible_paragraphs": {n: len(p) for n, p in sorted(pools.items())},
    }


def generate_dataset(plan: int | Mapping[str, int], seed: int = 0, **kwargs) -> tuple[list[Game], dict]:
    """:func:`generate_games` for an int (games round-robin over all criteria) or a per-split plan
    such as ``{"construction": 300, "held_out": 250}`` (the paper's sizes). Reports are merged:
    counts add up, ``by_split`` and ``dropped_games`` are combined."""
    if isinstance(plan, int):
        return generate_games(plan, seed=seed, **kwargs)
    unknown = sorted(set(plan) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown splits {unknown} in n_games; use {list(SPLITS)}")
    games, report = (
        [],
        {
            "requested": 0,
            "generated": 0,
            "dropped": 0,
            "regenerated": 0,
            "seconds": 0.0,
            "by_split": {},
            "dropped_games": [],
            "per_split": {},
        },
    )
    for split, n in plan.items():
        part, rep = generate_games(int(n), seed=seed, splits=(split,), **kwargs)
        games.extend(part)
        for key in ("requested", "generated", "dropped", "regenerated", "seconds"):
            report[key] += rep[key]
        report["by_split"].update(rep["by_split"])
        report["dropped_games"].extend(rep.get("dropped_games", []))
        report["per_split"][split] = rep
    return games, report
