"""A generation's cache: the :class:`Generation` record, the cache key and the JSON Lines files.

``cache_root()/generate/<key>.jsonl`` holds one :class:`Generation` per line, in input order (:func:`write_final`,
atomically); while a pass runs, finished sequences are appended to ``<key>.jsonl.partial`` (and, in a sharded
job, ``<key>.jsonl.partial.rank<i>``) as :func:`jsonl_lines`, and :func:`read_partials` takes them back after an
interruption (a torn last line is dropped). :func:`cache_key` hashes everything a generation depends on (see
:mod:`vaxis.core.generate`); a damaged file is a :class:`vaxis.core.spanstats.CacheError` that says what to delete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from .cache import atomic_write_text, stable_hash
from .extract_items import tokenizer_identity
from .generate_settings import positions_key
from .identity import model_identity
from .spanstats import CacheError

GENERATE_VERSION = 1


@dataclass
class Generation:
    """One generated continuation.

    ``prompt`` is the rendered chat (with the generation prompt), ``prefill`` the assistant
    prefix fed after it, ``text`` the decoded new tokens (special tokens skipped, cut before
    the first stop string), ``token_ids`` the new tokens (the EOS token included when
    ``finish_reason == "eos"``; the tokens that completed a stop string included when
    ``"stop"``), ``finish_reason`` one of ``"eos"``, ``"length"``, ``"stop"``; ``scores``, when
    :func:`generate` was given ``score``, the log-probability of each named answer at the first
    generated position (``log`` of the summed probabilities of its token ids, before temperature):
    the length-free readout of the same forward pass that sampled the first token.
    """

    conversation: int
    sample: int
    prompt: str
    prefill: str
    text: str
    token_ids: list[int]
    n_new_tokens: int
    finish_reason: str
    scores: dict | None = None


def cache_key(model, tokenizer, prompts, prefills, cfg, n_samples, seed) -> str:
    """Hash of everything a generation depends on (the :mod:`vaxis.core.generate` docstring); 24 hex digits."""
    vectors = cfg["vectors"]
    return stable_hash(
        {
            "v": GENERATE_VERSION,
            "model": model_identity(model),
            "tokenizer": tokenizer_identity(tokenizer),
            "prompts": stable_hash(prompts, 32),
            "prefills": stable_hash(prefills, 32),
            "sampling": [cfg["max_new_tokens"], cfg["temperature"], cfg["top_p"], n_samples, seed],
            "eos": cfg["eos"],
            "stop": cfg["stop"],
            "positions": positions_key(cfg["positions"]),
            "steer": {str(k): hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in sorted(vectors.items())},
            **({"score": cfg["score"]} if cfg["score"] else {}),
        },
        24,
    )


def read_partials(path: Path, wanted: set) -> dict:
    """Finished sequences of an interrupted run: ``path`` and the per-process files of a sharded one."""
    done = {}
    for part in [path, *sorted(path.parent.glob(f"{path.name}.rank*"))]:
        done.update(_read_partial(part, wanted))
    return done


def _read_partial(path: Path, wanted: set) -> dict:
    """Finished sequences of an interrupted run; a torn last line is dropped (and truncated away)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        return {}
    done, good_bytes = {}, 0
    with open(path, "rb") as handle:
        lines = handle.readlines()
    for k, line in enumerate(lines):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("torn line")
            g = Generation(**json.loads(line))
        except (ValueError, TypeError) as err:
            if k == len(lines) - 1:
                break
            raise CacheError(f"{path} line {k + 1} is damaged ({err}); delete the file to recompute") from err
        if (g.conversation, g.sample) in wanted:
            done[(g.conversation, g.sample)] = g
        good_bytes += len(line)
    if good_bytes < path.stat().st_size:
        os.truncate(path, good_bytes)
    return done


def load_final(path: Path, expected: int) -> list[Generation]:
    """The generations of a finished pass's file, checked to number ``expected``."""
    try:
        with open(path, encoding="utf-8") as handle:
            out = [Generation(**json.loads(line)) for line in handle]
    except (ValueError, TypeError) as err:
        raise CacheError(f"{path} is damaged ({err}); delete it to recompute") from err
    if len(out) != expected:
        raise CacheError(f"{path} holds {len(out)} generations, not {expected}; delete it to recompute")
    return out


def jsonl_lines(generations: Iterable[Generation]) -> str:
    """The generations as lines of a cache file: one JSON object each, newline-terminated."""
    return "".join(json.dumps(asdict(g)) + "\n" for g in generations)


def write_final(final: Path, partial: Path, generations: list[Generation]) -> None:
    """Write a finished pass's file atomically and remove its partial files (the per-process ones too)."""
    atomic_write_text(final, jsonl_lines(generations))
    for leftover in [partial, *partial.parent.glob(f"{partial.name}.rank*")]:
        leftover.unlink(missing_ok=True)
