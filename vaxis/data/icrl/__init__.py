"""In-context RL games: the construction data of the value axis (METHOD.md sections 1-2).

Offline and deterministic from a seed: real Wikipedia paragraphs (``data/paragraphs.jsonl``),
75 criteria with exact checkers (``data/criteria/``), edit operators that rewrite a
paragraph to satisfy a criterion or a plausible wrong hypothesis, and a generator that
verifies every attempt. Spans are located structurally in the rendered chat.

Typical use::

    from vaxis.data.icrl import generate_games, write_games, target_spans_many, summary_stats
    games, report = generate_games(150, seed=0)
    write_games("runs/demo/games.jsonl", games)
    kept, excluded = target_spans_many(games, tokenizer)
"""

from .build import GameSize
from .criteria import CriteriaError, Criterion, Lexicon, load_criteria, load_rules
from .edits import Edit, EditEngine
from .gamefile import Attempt, Game, games_hash, load_games, write_games
from .games import GenerationError, eligible_paragraphs, generate_dataset, generate_games
from .paragraphs import ParagraphsError, load_paragraphs
from .players import AttemptRequest, Player, TemplatePlayer, Written
from .schema import SCHEMA_VERSION, GameSchemaError, validate_game_record
from .spans import (
    RenderedGame,
    TargetSpanError,
    TargetSpans,
    game_html,
    placebo_spans,
    render_game,
    target_spans,
    target_spans_many,
)
from .stats import format_histogram, histogram, summary_stats

__all__ = [
    "SCHEMA_VERSION",
    "Attempt",
    "AttemptRequest",
    "CriteriaError",
    "Criterion",
    "Edit",
    "EditEngine",
    "Game",
    "GameSchemaError",
    "GameSize",
    "GenerationError",
    "Lexicon",
    "ParagraphsError",
    "Player",
    "RenderedGame",
    "TargetSpanError",
    "TargetSpans",
    "TemplatePlayer",
    "Written",
    "eligible_paragraphs",
    "format_histogram",
    "game_html",
    "games_hash",
    "generate_dataset",
    "generate_games",
    "histogram",
    "load_criteria",
    "load_games",
    "load_paragraphs",
    "load_rules",
    "placebo_spans",
    "render_game",
    "summary_stats",
    "target_spans",
    "target_spans_many",
    "validate_game_record",
    "write_games",
]
