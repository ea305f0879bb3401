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
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .criteria import SPLITS, Criterion, default_data_dir, load_criteria, load_rules
from .edits import Edit, EditEngine, clean_key_boundaries
from .paragraphs import load_paragraphs
from .schema import MAX_ATTEMPTS, SCHEMA_VERSION, THINK_CLOSE, THINK_OPEN, Attempt, Game
from .text import sentence_spans, word_count

GENERATOR = "template/1"
MIN_WORDS_SIDE = 3


class GenerationError(RuntimeError):
    """The generator cannot build games with the given criteria and paragraphs."""


class _Regenerate(Exception):
    """Internal: this draw of a game failed verification; try another sub-seed."""


# ----------------------------------------------------------------------------- game text


@dataclass(frozen=True)
class GameText:
    """The prose of a game (``data/criteria/game_text.json``)."""

    system: tuple[str, ...]
    paragraph: tuple[str, ...]
    thinking: Mapping[str, tuple[str, ...]]

    @classmethod
    def load(cls, data_dir: str | Path | None = None) -> GameText:
        """Read ``criteria/game_text.json`` under ``data_dir`` (default: the repository's ``data/``)."""
        path = Path(data_dir or default_data_dir()).resolve() / "criteria" / "game_text.json"
        doc = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            system=tuple(doc["system"]),
            paragraph=tuple(doc["user"]["paragraph"]),
            thinking={k: tuple(v) for k, v in doc["thinking"].items()},
        )


def _join_descriptions(descs: Sequence[str]) -> str:
    descs = list(descs)
    if len(descs) <= 1:
        return "".join(descs)
    return ", ".join(descs[:-1]) + " or " + descs[-1]


# ----------------------------------------------------------------------------- players


@dataclass(frozen=True)
class AttemptRequest:
    """What the generator asks a player to write for one attempt.

    Attributes:
        rule: the rule the rewrite must satisfy: a wrong hypothesis before discovery, the
            true criterion from the discovery success on.
        criterion: the game's true criterion (a player must not reveal it before discovery).
        paragraph: the original paragraph text; ``title``: its title.
        phase: thinking phase, one of ``first``, ``retry``, ``new_paragraph``, ``revisit``,
            ``discovery``, ``confirm_first``, ``confirm_later``.
        context: descriptions for the thinking: ``hyp``, ``prev``, ``tried``, ``crit``.
        history: the chat so far (list of ``{"role", "content"}``), for LLM players.
    """

    rule: Criterion
    criterion: Criterion
    paragraph: str
    title: str
    phase: str
    context: Mapping[str, str]
    history: Sequence[Mapping[str, str]] = field(default=(), repr=False)


@dataclass(frozen=True)
class Written:
    """A player's answer: the thinking text and the edit (rewrite + key span)."""

    thinking: str
    edit: Edit
    author: str = "template"


class Player(Protocol):
    """Anything that writes attempts; the generator verifies every answer."""

    def write(self, request: AttemptRequest, rng: random.Random) -> Written | None:
        """Return thinking and a rewrite for ``request``, or ``None`` to pass."""


class TemplatePlayer:
    """The offline player: edit operators for the rewrite, phase templates for the thinking."""

    name = "template"

    def __init__(self, engine: EditEngine, text: GameText):
        self.engine = engine
        self.text = text

    def write(self, request: AttemptRequest, rng: random.Random) -> Written | None:
        """One proposal: a random edit for ``request.rule`` and a thinking text for its phase."""
        edit = self.engine.propose(request.rule, request.paragraph, rng, title=request.title or "this subject")
        if edit is None:
            return None
        template = rng.choice(self.text.thinking[request.phase])
        thinking = template.format(action=edit.action, **request.context)
        return Written(thinking=thinking, edit=edit, author="template")


# ----------------------------------------------------------------------------- verification


@dataclass
class _Counters:
    proposals: int = 0
    not_applicable: int = 0
    satisfied_true_criterion: int = 0
    missed_hypothesis: int = 0
    missed_criterion: int = 0
    token_boundary: int = 0
    too_close_to_edge: int = 0
    bad_thinking: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _verify(
    written: Written, request: AttemptRequest, success: bool, min_words: int, counters: _Counters
) -> list[tuple[int, int]] | None:
    """Check a written attempt; returns the reward spans (``[]`` for a failure) or ``None``."""
    rewrite, (ks, ke) = written.edit.rewrite, written.edit.key_span
    if rewrite != rewrite.strip() or rewrite == request.paragraph or not 0 <= ks < ke <= len(rewrite):
        counters.not_applicable += 1
        return None
    criterion = request.criterion
    if "<" in written.thinking or ">" in written.thinking:
        counters.bad_thinking += 1
        return None
    if success:
        spans = criterion.matches(rewrite)
        if not spans or not any(s < ke and ks < e for s, e in spans):
            counters.missed_criterion += 1
            return None
        if not all(clean_key_boundaries(rewrite, s, e) for s, e in spans):
            counters.token_boundary += 1
            return None
        first, last = spans[0][0], spans[-1][1]
    else:
        if criterion.check(rewrite):
            counters.satisfied_true_criterion += 1
            return None
        if not any(s < ke and ks < e for s, e in request.rule.matches(rewrite)):
            counters.missed_hypothesis += 1
            return None
        if not clean_key_boundaries(rewrite, ks, ke):
            counters.token_boundary += 1
            return None
        spans, first, last = [], ks, ke
    if word_count(rewrite[:first]) < min_words or word_count(rewrite[last:]) < min_words:
        counters.too_close_to_edge += 1
        return None
    return [tuple(s) for s in spans]


# ----------------------------------------------------------------------------- one game


def _derive_seed(*parts) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()
    return int(digest[:15], 16)


@dataclass(frozen=True)
class GameSize:
    """How long games are. The defaults are the paper's: the discovery paragraph is the 2nd to
    6th (0-based index 1..5), 3 to 8 paragraphs, up to 5 attempts per paragraph, paragraphs of
    50-200 words. Smaller games (e.g. the ``demo`` profile's) keep every rule of the game but
    make the text before the target shorter, which is what extraction time scales with.
    """

    min_discovery: int = 1
    max_discovery: int = 5
    max_paragraphs: int = 8
    max_attempts: int = MAX_ATTEMPTS
    max_words: int = 200

    def __post_init__(self):
        if not 1 <= self.min_discovery <= self.max_discovery <= 5:
            raise ValueError(
                f"discovery index must satisfy 1 <= min_discovery <= max_discovery <= 5 (2nd to 6th paragraph), "
                f"got {self.min_discovery}..{self.max_discovery}"
            )
        if self.max_paragraphs < max(3, self.max_discovery + 2) or self.max_paragraphs > 8:
            raise ValueError(
                f"max_paragraphs={self.max_paragraphs}: need at least 3 and max_discovery + 2 "
                f"(one paragraph after discovery), at most 8"
            )
        if not 1 <= self.max_attempts <= MAX_ATTEMPTS:
            raise ValueError(f"max_attempts must be 1..{MAX_ATTEMPTS}, got {self.max_attempts}")
        if self.max_words < 50:
            raise ValueError(f"max_words={self.max_words}: paragraphs have at least 50 words")


@dataclass
class _Context:
    rules: Mapping[str, Criterion]
    player: Player
    fallback: TemplatePlayer
    text: GameText
    min_words: int
    proposals_per_attempt: int
    counters: _Counters
    size: GameSize = GameSize()


def _write_verified(ctx: _Context, request: AttemptRequest, success: bool, rng: random.Random):
    players = [ctx.player] if ctx.player is ctx.fallback else [ctx.player, ctx.fallback]
    for player in players:
        for _ in range(ctx.proposals_per_attempt):
            ctx.counters.proposals += 1
            written = player.write(request, rng)
            if written is None:
                ctx.counters.not_applicable += 1
                continue
            spans = _verify(written, request, success, ctx.min_words, ctx.counters)
            if spans is not None:
                return written, spans
    return None


def build_game(
    criterion: Criterion,
    pool: Sequence[Mapping],
    game_id: str,
    game_seed: int,
    ctx: _Context,
) -> Game:
    """Build one verified game for ``criterion`` from paragraphs in ``pool`` (none of which
    satisfies the criterion). Raises ``_Regenerate`` if an attempt cannot be verified."""
    rng = random.Random(game_seed)
    size = ctx.size
    discovery = rng.randint(size.min_discovery, size.max_discovery)
    n_par = rng.randint(max(3, discovery + 2), size.max_paragraphs)
    if len(pool) < n_par:
        raise _Regenerate(f"only {len(pool)} eligible paragraphs, need {n_par}")
    paragraphs = rng.sample(list(pool), n_par)
    fails = [rng.randint(1, size.max_attempts) for _ in range(discovery)]
    fails.append(min(rng.choice([0, 0, 1, 1, 2, 3, 4]), size.max_attempts - 1))
    fails += [0] * (n_par - discovery - 1)
    game = _GameBuilder(criterion, ctx, rng, discovery)
    for p_idx, para in enumerate(paragraphs):
        n_attempts = fails[p_idx] + (1 if p_idx >= discovery else 0)
        for a_idx in range(n_attempts):
            game.attempt(para, p_idx, a_idx, n_attempts)
    return game.finish(game_id, game_seed, paragraphs)


class _GameBuilder:
    """One game while :func:`build_game` writes it: the messages and attempts so far, the wrong hypotheses still
    queued and those tried, and the game's RNG, drawn from in a fixed order so that a game depends on its seed
    alone."""

    def __init__(self, criterion: Criterion, ctx: _Context, rng: random.Random, discovery: int):
        self.criterion, self.ctx, self.rng, self.discovery = criterion, ctx, rng, discovery
        self.hyp_names = list(criterion.wrong_hypotheses)
        self.queue = rng.sample(self.hyp_names, len(self.hyp_names))
        self.tried: list[str] = []  # descriptions, most recent last
        self.messages = [{"role": "system", "content": rng.choice(ctx.text.system)}]
        self.para_fmt = rng.choice(ctx.text.paragraph)
        self.attempts: list[Attempt] = []
        self.feedback = None
        self.prev_desc = None

    def attempt(self, para: Mapping, p_idx: int, a_idx: int, n_attempts: int) -> None:
        """Attempt ``a_idx`` of ``n_attempts`` on paragraph ``p_idx``: the user turn, a verified rewrite (the
        last attempt from the discovery paragraph on succeeds, every other one tests a wrong hypothesis)."""
        title = para.get("title") or "this subject"
        body = self.para_fmt.format(k=p_idx + 1, text=para["text"])
        if a_idx == 0:
            user = body if self.feedback is None else f"{self.feedback}\n\n{body}"
        else:
            user = "-1"
        self.messages.append({"role": "user", "content": user})
        success = p_idx >= self.discovery and a_idx == n_attempts - 1
        if success:
            request, result = self._success(para, title, p_idx)
        else:
            request, result = self._wrong(para, title, p_idx, a_idx)
        self._record(request, result, p_idx, a_idx, success)
        self.feedback = "+1" if success else "-1"

    def _success(self, para: Mapping, title: str, p_idx: int):
        d = self.discovery
        phase = "discovery" if p_idx == d else "confirm_first" if p_idx == d + 1 else "confirm_later"
        context = {
            "crit": self.criterion.description,
            "tried": _join_descriptions(self.tried[-3:]) or self.criterion.description,
        }
        request = AttemptRequest(self.criterion, self.criterion, para["text"], title, phase, context,
                                 tuple(self.messages))  # fmt: skip
        result = _write_verified(self.ctx, request, True, self.rng)
        if result is None:
            raise _Regenerate(f"no verified success edit on paragraph {p_idx}")
        return request, result

    def _wrong(self, para: Mapping, title: str, p_idx: int, a_idx: int):
        result = None
        for _ in range(len(self.hyp_names)):
            revisit = not self.queue
            if revisit:
                self.queue = self.rng.sample(self.hyp_names, len(self.hyp_names))
            hyp = self.ctx.rules[self.queue.pop()]
            if not self.attempts:
                phase = "first"
            elif revisit or hyp.description in self.tried:
                phase = "revisit"
            elif a_idx == 0:
                phase = "new_paragraph" if self.tried else "retry"
            else:
                phase = "retry"
            context = {
                "hyp": hyp.description,
                "prev": self.prev_desc or hyp.description,
                "tried": _join_descriptions(self.tried[-3:]) or hyp.description,
            }
            request = AttemptRequest(hyp, self.criterion, para["text"], title, phase, context, tuple(self.messages))
            result = _write_verified(self.ctx, request, False, self.rng)
            if result is not None:
                break
        if result is None:
            raise _Regenerate(f"no verified wrong-hypothesis edit on paragraph {p_idx}")
        if hyp.description in self.tried:
            self.tried.remove(hyp.description)
        self.tried.append(hyp.description)
        self.prev_desc = hyp.description
        return request, result

    def _record(self, request: AttemptRequest, result, p_idx: int, a_idx: int, success: bool) -> None:
        written, reward_spans = result
        prefix = f"{THINK_OPEN}{written.thinking}{THINK_CLOSE}\n\n"
        content = prefix + written.edit.rewrite
        self.messages.append({"role": "assistant", "content": content})
        ks, ke = written.edit.key_span
        d = self.discovery
        self.attempts.append(
            Attempt(
                message_index=len(self.messages) - 1,
                paragraph_index=p_idx,
                attempt_index=a_idx,
                phase="explore" if p_idx < d else "discovery" if p_idx == d else "exploit",
                hypothesis=request.rule.name,
                success=success,
                operator=written.edit.operator,
                rewrite_span=(len(prefix), len(content)),
                reward_spans=list(reward_spans),
                targeted_span=(ks, ke),
                targeted_text=written.edit.rewrite[ks:ke],
                author=written.author,
            )
        )

    def finish(self, game_id: str, game_seed: int, paragraphs: list[Mapping]) -> Game:
        """The game: the last feedback appended, its target the first attempt after the discovery paragraph."""
        self.messages.append({"role": "user", "content": self.feedback})
        target = next(i for i, a in enumerate(self.attempts) if a.paragraph_index == self.discovery + 1)
        ctx, criterion = self.ctx, self.criterion
        generator = GENERATOR if ctx.player is ctx.fallback else f"llm:{getattr(ctx.player, 'name', 'player')}"
        return Game(
            game_id=game_id,
            criterion=criterion.name,
            criterion_kind=criterion.kind,
            criterion_description=criterion.description,
            split=criterion.split,
            seed=game_seed,
            generator=generator,
            discovery_index=self.discovery,
            target_attempt=target,
            paragraphs=[
                {"id": p["id"], "title": p.get("title", ""), "topic": p.get("topic", "unknown")} for p in paragraphs
            ],
            messages=self.messages,
            attempts=self.attempts,
            schema_version=SCHEMA_VERSION,
        )


# ----------------------------------------------------------------------------- many games


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
            :func:`load_paragraphs`; default: the shipped Wikipedia paragraphs.
        splits: ``"construction"`` and/or ``"held_out"``; filters ``criteria``.
        data_dir: directory with ``criteria/`` (default: the repository's ``data/``).
        player: an optional :class:`Player` (e.g. :class:`~vaxis.data.icrl.player.LLMPlayer`);
            its answers are verified like the template player's, which is the fallback.
        max_regenerations: new sub-seeds to try before a game is dropped.
        min_words_side: words required before the first and after the last key/reward
            occurrence of every rewrite (so the target keeps >= 3 tokens a side).
        proposals_per_attempt: edit proposals tried per attempt before giving up on it.
        size: a :class:`GameSize` (default: the paper's game sizes).

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
                  size: GameSize | None) -> tuple[list[Mapping], _Context]:  # fmt: skip
    """The paragraphs (loaded when given as a path or not at all; those longer than ``size.max_words`` left out)
    and the :class:`_Context` every game of a :func:`generate_games` call is written in."""
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
    ctx = _Context(rules, player or fallback, fallback, text, min_words_side, proposals_per_attempt, _Counters(), size)
    return paragraphs, ctx


def _first_verified(criterion: Criterion, pool, game_id: str, seed_parts: tuple, ctx: _Context, max_regenerations: int):
    """``(game or None, sub-seed used, reasons)``: the first game :func:`build_game` verifies, with sub-seeds
    ``0..max_regenerations`` (each derived from ``seed_parts`` and the sub-seed), and why the others failed."""
    game, reasons = None, Counter()
    for r in range(max_regenerations + 1):
        try:
            game = build_game(criterion, pool, game_id, _derive_seed(*seed_parts, r), ctx)
            break
        except _Regenerate as exc:
            reasons[str(exc).split(" on paragraph")[0]] += 1
    return game, r, reasons


def _games_counts(games: list[Game], ctx: _Context, pools: Mapping[str, list]) -> dict:
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
