"""ICRL games in memory and on disk: :class:`Game` and :class:`Attempt`, and the games file.

The file is JSON Lines, one game per line, in schema ``vaxis.icrl.games/1`` (its fields, their order and the
rules a game obeys: :mod:`vaxis.data.icrl.schema`). :func:`write_games` writes it atomically and byte for byte the
same for the same games (:func:`games_hash` hashes those bytes); :func:`load_games` reads it back, validating every
record (:func:`vaxis.data.icrl.schema.validate_game_record`) and naming the line and field of the first problem.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ...core.cache import read_jsonl
from .schema import SCHEMA_VERSION, GameSchemaError, field_error, validate_game_record


@dataclass
class Attempt:
    """One assistant turn of a game (see :mod:`vaxis.data.icrl.schema` for the fields)."""

    message_index: int
    paragraph_index: int
    attempt_index: int
    phase: str
    hypothesis: str
    success: bool
    operator: str
    rewrite_span: tuple[int, int]
    reward_spans: list[tuple[int, int]]
    targeted_span: tuple[int, int]
    targeted_text: str
    author: str = "template"


@dataclass
class Game:
    """One ICRL conversation (see :mod:`vaxis.data.icrl.schema` for the fields)."""

    game_id: str
    criterion: str
    criterion_kind: str
    criterion_description: str
    split: str
    seed: int
    generator: str
    discovery_index: int
    target_attempt: int
    paragraphs: list[dict]
    messages: list[dict]
    attempts: list[Attempt]
    schema_version: str = SCHEMA_VERSION

    def chat(self, upto_message: int | None = None) -> list[dict]:
        """The messages as ``[{"role", "content"}]`` (a copy), up to and including ``upto_message``."""
        msgs = self.messages if upto_message is None else self.messages[: upto_message + 1]
        return [{"role": m["role"], "content": m["content"]} for m in msgs]

    def rewrite(self, attempt_index: int) -> str:
        """The rewritten paragraph of ``attempts[attempt_index]``."""
        a = self.attempts[attempt_index]
        return self.messages[a.message_index]["content"][a.rewrite_span[0] : a.rewrite_span[1]]

    @property
    def target(self) -> Attempt:
        """The target attempt: the success on the first post-discovery paragraph."""
        return self.attempts[self.target_attempt]

    @property
    def failed_attempts(self) -> list[int]:
        """Indices (into ``attempts``) of the failed attempts."""
        return [i for i, a in enumerate(self.attempts) if not a.success]

    def to_dict(self) -> dict:
        """The JSON record, fields in schema order."""
        return {
            "schema_version": self.schema_version,
            "game_id": self.game_id,
            "criterion": self.criterion,
            "criterion_kind": self.criterion_kind,
            "criterion_description": self.criterion_description,
            "split": self.split,
            "seed": self.seed,
            "generator": self.generator,
            "discovery_index": self.discovery_index,
            "target_attempt": self.target_attempt,
            "paragraphs": [{"id": p["id"], "title": p["title"], "topic": p["topic"]} for p in self.paragraphs],
            "messages": [{"role": m["role"], "content": m["content"]} for m in self.messages],
            "attempts": [
                {
                    **asdict(a),
                    "rewrite_span": list(a.rewrite_span),
                    "reward_spans": [list(s) for s in a.reward_spans],
                    "targeted_span": list(a.targeted_span),
                }
                for a in self.attempts
            ],
        }

    @classmethod
    def from_dict(cls, record: Mapping, where: str = "game") -> Game:
        """Validate ``record`` (see :func:`validate_game_record`) and build a :class:`Game`."""
        validate_game_record(record, where)
        return cls(
            game_id=record["game_id"],
            criterion=record["criterion"],
            criterion_kind=record["criterion_kind"],
            criterion_description=record["criterion_description"],
            split=record["split"],
            seed=record["seed"],
            generator=record["generator"],
            discovery_index=record["discovery_index"],
            target_attempt=record["target_attempt"],
            paragraphs=[dict(p) for p in record["paragraphs"]],
            messages=[{"role": m["role"], "content": m["content"]} for m in record["messages"]],
            attempts=[
                Attempt(
                    **{
                        **a,
                        "rewrite_span": tuple(a["rewrite_span"]),
                        "reward_spans": [tuple(s) for s in a["reward_spans"]],
                        "targeted_span": tuple(a["targeted_span"]),
                    }
                )
                for a in record["attempts"]
            ],
        )


def game_to_json(game: Game | Mapping) -> str:
    """One JSONL line (without newline) for ``game``: deterministic key order, UTF-8 text."""
    record = game.to_dict() if isinstance(game, Game) else dict(game)
    return json.dumps(record, ensure_ascii=False)


def games_hash(games: Iterable[Game | Mapping]) -> str:
    """SHA-256 (hex) of the games' JSONL bytes: identical games give identical hashes."""
    h = hashlib.sha256()
    for g in games:
        h.update((game_to_json(g) + "\n").encode("utf-8"))
    return h.hexdigest()


def write_games(path: str | Path, games: Iterable[Game | Mapping]) -> Path:
    """Write games as JSON Lines, atomically (a temporary file, then ``os.replace``).

    Same games, same bytes: key order is fixed and nothing depends on set order.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for g in games:
                f.write(game_to_json(g) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_games(path: str | Path) -> list[Game]:
    """Read and validate a games file written by :func:`write_games`.

    Blank lines are skipped.

    Raises:
        FileNotFoundError: no such file.
        GameSchemaError: ``"<file> line <n>: field '<path>': <problem>"`` for the first bad record.
    """
    path = Path(path)
    games, seen = [], {}
    for where, record in read_jsonl(path, GameSchemaError, "{name} line {n}"):
        game = Game.from_dict(record, where)
        if game.game_id in seen:
            raise field_error(where, "game_id", f"duplicate of {seen[game.game_id]}")
        seen[game.game_id] = where
        games.append(game)
    return games
