"""Notebook 02's run files, read back by notebook 03: the span items, the directions and the two passes' results.

An :class:`Item` is one text with named character spans (a game's target, a placebo or the assistant turns for the
norms); :class:`Directions` are every direction the evaluation pass projects on. :func:`save_run` writes the fit
and evaluation passes' statistics (:func:`vaxis.core.spanstats.save_stats`), the directions, the items and the run's
metadata under ``run_dir/extraction`` (atomically, file by file); :func:`load_run` reads them back as a
:class:`Run`. The passes themselves are in :mod:`vaxis.experiments.extraction`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Item:
    """Spans over one game's rendered text.

    ``kind`` is ``"target"`` (the first post-discovery rewrite: spans ``before``, ``reward``,
    ``after``), ``"placebo"`` (a failed attempt: ``before``, ``reward`` = the targeted word,
    ``after``) or ``"norm"`` (span ``assistant``: assistant contents up to the target, for the
    mean residual norm). ``rewrite`` is the rewrite's character span in ``text``; ``turn`` the
    character span of the content of the assistant message that holds it (its end is where
    the assistant turn ends, for the distance-to-end-of-turn controls).
    """

    game: int
    kind: str
    text: str
    spans: dict
    rewrite: tuple[int, int] | None = None
    attempt: int | None = None
    turn: tuple[int, int] | None = None


@dataclass
class Directions:
    """Every direction projected on in the evaluation pass.

    ``vectors``: ``(K, n_layers, d)``; ``names[k]`` says what column ``k`` is:
    ``axis``, ``split{i}``, ``shuffled{i}``, ``random{i}``.
    """

    vectors: torch.Tensor
    names: list[str]
    splits: list[tuple[list[str], list[str]]] = field(default_factory=list)

    def columns(self, prefix: str) -> list[int]:
        """Column indices whose name starts with ``prefix`` (``"split"``, ``"random"``...)."""
        return [k for k, n in enumerate(self.names) if n.rstrip("0123456789") == prefix]

    def as_extract_directions(self, layers: list[int]) -> dict[int, torch.Tensor]:
        """``{layer: (K, d)}`` for :func:`vaxis.extract`."""
        return {layer: self.vectors[:, i] for i, layer in enumerate(layers)}


@dataclass
class Run:
    """What notebook 02 wrote into ``run_dir/extraction``, loaded back for notebook 03."""

    fit_stats: object
    eval_stats: object
    directions: Directions
    items: list[Item]
    fit_items: list[Item]
    game_criterion: list[str]
    game_split: list[str]
    meta: dict
    tokenizer: object = None

    @property
    def mean_norms(self) -> torch.Tensor:
        """Mean residual norm per layer over assistant tokens (the ``norm`` items)."""
        return self.eval_stats.mean_norms("assistant")

    def fit_contrasts(self) -> tuple[torch.Tensor, list[str]]:
        """Per-game ``mean(after) - mean(before)`` of the fit pass and each game's criterion."""
        from ..core.axis import game_contrasts

        rows = [j for j, it in enumerate(self.fit_items) if it.kind == "target"]
        contrasts = game_contrasts(self.fit_stats.means("after")[rows], self.fit_stats.means("before")[rows])
        return contrasts, [self.game_criterion[self.fit_items[j].game] for j in rows]


def _item_rows(items: list[Item]) -> tuple[list[str], list[dict]]:
    texts: dict[str, int] = {}
    rows = []
    for it in items:
        rows.append(
            {
                "game": it.game,
                "kind": it.kind,
                "text": texts.setdefault(it.text, len(texts)),
                "spans": it.spans,
                "rewrite": it.rewrite,
                "attempt": it.attempt,
                "turn": it.turn,
            }
        )
    return list(texts), rows


def _items_from_rows(texts: list[str], rows: list[dict]) -> list[Item]:
    return [
        Item(
            r["game"],
            r["kind"],
            texts[r["text"]],
            {k: [tuple(s) for s in v] for k, v in r["spans"].items()},
            tuple(r["rewrite"]) if r["rewrite"] else None,
            r["attempt"],
            tuple(r["turn"]) if r.get("turn") else None,
        )
        for r in rows
    ]


def save_run(run_dir, fit_stats, fit_items, eval_stats, eval_items, directions, game_criterion, game_split, meta):
    """Write the extraction outputs under ``run_dir/extraction`` (atomically, file by file)."""
    from pathlib import Path

    from safetensors.torch import save_file

    from ..core.cache import atomic_write, atomic_write_json
    from ..core.spanstats import save_stats

    out = Path(run_dir) / "extraction"
    save_stats(out / "fit_pass.safetensors", fit_stats)
    save_stats(out / "eval_pass.safetensors", eval_stats)
    atomic_write(
        out / "directions.safetensors", lambda tmp: save_file({"vectors": directions.vectors.contiguous()}, tmp)
    )
    texts, fit_rows = _item_rows(fit_items)
    eval_texts, eval_rows = _item_rows(eval_items)
    atomic_write_json(
        out / "items.json",
        {
            "fit": {"texts": texts, "items": fit_rows},
            "eval": {"texts": eval_texts, "items": eval_rows},
            "game_criterion": game_criterion,
            "game_split": game_split,
            "directions": {"names": directions.names, "splits": directions.splits},
        },
    )
    atomic_write_json(out / "meta.json", meta)
    return out


def load_run(run_dir, tokenizer=None) -> Run:
    """Read what :func:`save_run` wrote; loads the tokenizer of the run's model if not given."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from ..core.spanstats import load_stats

    out = Path(run_dir) / "extraction"
    if not (out / "meta.json").exists():
        raise FileNotFoundError(f"{out} has no extraction results: run notebook 02 with run_dir={run_dir} first")
    meta = json.loads((out / "meta.json").read_text())
    data = json.loads((out / "items.json").read_text())
    directions = Directions(
        load_file(str(out / "directions.safetensors"))["vectors"],
        data["directions"]["names"],
        [tuple(s) for s in data["directions"]["splits"]],
    )
    if tokenizer is None:
        from ..core.models import load_tokenizer

        tokenizer = load_tokenizer(
            meta["model_name"], chat_template_kwargs=meta.get("chat_template_kwargs"), quiet=True
        )
    return Run(
        fit_stats=load_stats(out / "fit_pass.safetensors"),
        eval_stats=load_stats(out / "eval_pass.safetensors"),
        directions=directions,
        items=_items_from_rows(data["eval"]["texts"], data["eval"]["items"]),
        fit_items=_items_from_rows(data["fit"]["texts"], data["fit"]["items"]),
        game_criterion=data["game_criterion"],
        game_split=data["game_split"],
        meta=meta,
        tokenizer=tokenizer,
    )
