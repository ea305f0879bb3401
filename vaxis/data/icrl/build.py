"""Building one verified ICRL game from its seed (the rules of a game: :mod:`vaxis.data.icrl.games`).

:func:`build_game` draws a game's shape from its seed (the discovery paragraph, the paragraphs, the failures per
paragraph), then writes each attempt in order: the user turn, a player's answer (:mod:`vaxis.data.icrl.players`)
for the rule the attempt tests, and the checks every answer must pass (a failed rewrite fails the criterion and
satisfies the wrong hypothesis it tests at its targeted span, a success satisfies the criterion there, with enough
words on either side). An attempt no player can write raises :class:`Regenerate`, and the generator tries another
sub-seed. :class:`GameSize` bounds a game's length; :class:`EditChecks` counts why answers were rejected.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .criteria import Criterion
from .edits import clean_key_boundaries
from .gamefile import Attempt, Game
from .players import AttemptRequest, GameText, Player, TemplatePlayer, Written
from .schema import MAX_ATTEMPTS, SCHEMA_VERSION, THINK_CLOSE, THINK_OPEN
from .text import word_count

GENERATOR = "template/1"


class Regenerate(Exception):
    """This draw of a game failed verification; the generator tries another sub-seed."""


def _join_descriptions(descs: Sequence[str]) -> str:
    descs = list(descs)
    if len(descs) <= 1:
        return "".join(descs)
    return ", ".join(descs[:-1]) + " or " + descs[-1]


@dataclass
class EditChecks:
    """Answers proposed, and those rejected by each check of an attempt's verification (a report's
    ``edit_checks``)."""

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
    written: Written, request: AttemptRequest, success: bool, min_words: int, counters: EditChecks
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
class GameContext:
    """What every game of one :func:`vaxis.data.icrl.generate_games` call is written with: the rules, the
    player (and the template player it falls back on), the game text, the checks' settings and counters, the size."""

    rules: Mapping[str, Criterion]
    player: Player
    fallback: TemplatePlayer
    text: GameText
    min_words: int
    proposals_per_attempt: int
    counters: EditChecks
    size: GameSize = GameSize()


def _write_verified(ctx: GameContext, request: AttemptRequest, success: bool, rng: random.Random):
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
    ctx: GameContext,
) -> Game:
    """Build one verified game for ``criterion`` from paragraphs in ``pool`` (none of which
    satisfies the criterion). Raises :class:`Regenerate` if an attempt cannot be verified."""
    rng = random.Random(game_seed)
    size = ctx.size
    discovery = rng.randint(size.min_discovery, size.max_discovery)
    n_par = rng.randint(max(3, discovery + 2), size.max_paragraphs)
    if len(pool) < n_par:
        raise Regenerate(f"only {len(pool)} eligible paragraphs, need {n_par}")
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

    def __init__(self, criterion: Criterion, ctx: GameContext, rng: random.Random, discovery: int):
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
            raise Regenerate(f"no verified success edit on paragraph {p_idx}")
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
            raise Regenerate(f"no verified wrong-hypothesis edit on paragraph {p_idx}")
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
