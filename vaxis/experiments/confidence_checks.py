"""Notebook 04's parameter check (:mod:`vaxis.run.checks`), beside :mod:`vaxis.experiments.confidence` (which is long
already): run before the model is loaded. Notebook 10 re-reads the same keys (:func:`check_confidence_keys`)."""

from __future__ import annotations

import importlib.util

AIME_PROBLEMS = 30  # each AIME year on the hub (vaxis.data.mathdata.AIME_DATASETS)


def available_problems(p, name: str) -> int | None:
    """How many problems data set ``name`` has (None, with a problem, when it cannot be read here)."""
    from ..core.hub import hub_offline, hub_reachable
    from ..data.mathdata import AIME_DATASETS, DATA_FILES, load_problems

    known = [*DATA_FILES, *(f"aime{year}" for year in AIME_DATASETS)]
    if not p.choice("confidence_dataset", name, known):
        return None
    if name in DATA_FILES:
        problems = p.attempt(f"confidence_dataset={name!r}", load_problems, name)
        return None if problems is None else len(problems)
    offline = hub_offline(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if offline:
        why = f"{offline} is set"
    elif importlib.util.find_spec("datasets") is None:
        why = "the `datasets` library is not installed"
    elif not hub_reachable():
        why = "the Hugging Face hub cannot be reached"
    else:
        return AIME_PROBLEMS
    p.add(f"confidence_dataset={name!r} comes from the Hugging Face hub, but {why}; use 'gsm8k' or 'math500' (shipped)")
    return None


def check_confidence_keys(p, cfg, strengths) -> None:
    """The profile keys notebooks 04 and 10 both read: the data set and its counts, the rollouts, and the steering
    sweep (its random and length strengths among ``strengths``, the axis's strengths)."""
    n = cfg["confidence_problems"]
    have = available_problems(p, cfg["confidence_dataset"])
    if p.integer("confidence_problems", n, 1) and have is not None:
        p.enough("confidence_problems", n, have, f"problems in {cfg['confidence_dataset']}")
    p.integer("confidence_max_new_tokens", cfg["confidence_max_new_tokens"], 1)
    for key in ("steer_problems", "steer_length_problems"):
        if p.integer(key, cfg[key], 1) and p.whole(n):
            p.enough(key, cfg[key], n, "problems are read (confidence_problems)", f"; ask for at most {n}")
    p.integer("steer_samples", cfg["steer_samples"], 1)
    if p.integer("steer_random_directions", cfg["steer_random_directions"], 0):
        draws_note(p, "steer_random_directions", 2 * cfg["steer_random_directions"],
                   " (each random direction read at +-s also gives its negation: 2 draws of the +s minus -s contrast)")  # fmt: skip
    fractions = p.items("steer_fractions", cfg["steer_fractions"], (int, float))
    for f in fractions or []:
        p.fraction("steer_fractions", f, closed=True)
    p.integer("steer_length_tokens", cfg["steer_length_tokens"], 1)
    for key in ("steer_random_strengths", "steer_length_strengths"):
        p.subset(key, p.numbers(key, cfg[key]), strengths, "the steering strengths")


def draws_note(p, name: str, draws: int, how: str = "") -> None:
    """A note (not an error: the smoke and CI profiles run on purpose with few) when ``draws`` null draws cannot
    give a one-sided p <= 0.05 (:func:`vaxis.core.nulls.min_draws`)."""
    from ..core.nulls import min_draws

    if 0 < draws < min_draws(0.05):
        p.note(f"{name}: {draws} null draws{how}; a 5% test needs at least {min_draws(0.05)}: its p-values cannot "
               "reach 0.05, read them as descriptive")  # fmt: skip


def check_parameters(cfg, *, axis_path=None, strengths=(-16.8, -8.4, 0.0, 8.4, 16.8), n_boot=200,
                     **common) -> list[str]:  # fmt: skip
    """Notebook 04: ``strengths`` (numbers, with 0), ``n_boot``, the axis (``axis_path``, or notebook 03's),
    ``confidence_samples``, ``confidence_random_directions`` (read in the same pass as the axis: the nulls of the
    prefilled AUROCs, the flip and the sampled-confidence AUROC), the Fig 11 slopes (``slope_layers``: those the axis lacks are noted; ``slope_strengths``
    with 0; ``slope_framings``) and every key of :func:`check_confidence_keys`. Raises
    :class:`vaxis.run.checks.ParameterError`; returns notes."""
    from ..run.checks import Problems
    from .confidence import QUESTIONS

    p = Problems.for_notebook(4, cfg, **common)
    strengths = p.numbers("strengths", strengths, zero=True)
    p.integer("n_boot", n_boot, 1)
    meta = p.axis(axis_path)
    check_confidence_keys(p, cfg, strengths)
    p.integer("confidence_samples", cfg["confidence_samples"], 1, fix=" (sampled answers per problem)")
    if p.integer("confidence_random_directions", cfg["confidence_random_directions"], 0):
        draws_note(p, "confidence_random_directions", cfg["confidence_random_directions"])
    p.numbers("slope_strengths", cfg["slope_strengths"], zero=True)
    framings = p.items("slope_framings", cfg["slope_framings"])
    if framings is not None and set(framings) - set(QUESTIONS):
        p.add(f"slope_framings={framings}: choose among {list(QUESTIONS)}")
    p.layers_in_axis("slope_layers", cfg["slope_layers"], meta)
    return p.done()
