"""Who writes a game's attempts: the request a player gets, its answer, and the offline template player.

The generator (:func:`vaxis.data.icrl.generate_games`) decides the script of a game (which rule each attempt
tests, when the player discovers the criterion) and asks a :class:`Player` for each attempt with an
:class:`AttemptRequest`; the player answers with a :class:`Written` (thinking and an edit), which the generator
verifies (:mod:`vaxis.data.icrl.build`). :class:`TemplatePlayer` is the offline player: an edit operator for the
rewrite and a phase template from :class:`GameText` (``data/criteria/game_text.json``) for the thinking. The
optional LLM player is :class:`vaxis.data.icrl.player.LLMPlayer`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .criteria import Criterion, default_data_dir
from .edits import Edit, EditEngine


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
