"""Notebook 02's parameter check (:mod:`vaxis.run.checks`), beside :mod:`vaxis.experiments.extraction` (which is long
already): run before the model is loaded."""

from __future__ import annotations


def check_parameters(cfg, *, n_test_criteria=15, **common) -> list[str]:
    """Notebook 02: ``max_batch_tokens``, ``n_splits`` (0: none), ``n_shuffles`` and ``n_random_directions`` (at
    least one each: notebook 03 reads its nulls from them), ``keep_construction_activations``, ``n_test_criteria``
    (fewer than the construction criteria, so every split has criteria to fit on) and ``games.jsonl`` of notebook
    01 in ``run_dir``. Raises :class:`vaxis.run.checks.ParameterError`; returns notes."""
    from ..data.icrl import load_criteria, load_games
    from ..run.checks import Problems

    p = Problems.for_notebook(2, cfg, **common)
    p.integer("max_batch_tokens", cfg["max_batch_tokens"], 1)
    p.integer("n_splits", cfg["n_splits"], 0)
    p.integer("n_shuffles", cfg["n_shuffles"], 1)
    p.integer("n_random_directions", cfg["n_random_directions"], 1)
    p.flag("keep_construction_activations", cfg["keep_construction_activations"])
    n_construction = len(load_criteria(splits=("construction",)))
    ok = p.integer("n_test_criteria", n_test_criteria, 1, n_construction - 1,
                   f" (the construction criteria held out of each split's fit; there are {n_construction})")  # fmt: skip
    path = cfg.run_dir / "games.jsonl"
    if p.made_by(path, 1, "the games") and path.exists():
        games = p.attempt(str(path), load_games, path)
        if games is not None:
            have = len({g.criterion for g in games if g.split == "construction"})
            if have < 2:
                p.add(f"{path}: {have} construction criteria have games; the axis needs games of two or more (notebook "
                      "01's n_games)")  # fmt: skip
            elif ok and cfg["n_splits"] and n_test_criteria >= have:
                p.note(f"n_test_criteria={n_test_criteria}: the games cover only {have} construction criteria, so no "
                       "construction splits are made (n_splits is ignored)")  # fmt: skip
    return p.done()
