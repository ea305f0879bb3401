"""Notebook 03's parameter check (:mod:`vaxis.run.checks`), beside :mod:`vaxis.experiments.axis` (which is long
already): run before the extraction is read and the model loaded."""

from __future__ import annotations

import json

WEIGHTINGS = ("criterion", "conversation")


def check_parameters(cfg, *, axis_path=None, weighting="criterion", n_boot=200, n_bins=20, lens_k=30,
                     monitor_tokens=24, **common) -> list[str]:  # fmt: skip
    """Notebook 03: ``weighting``, ``main_layer`` (``"auto"`` or a residual index the extraction has), ``n_boot``,
    ``n_bins``, ``lens_k``, ``monitor_tokens`` (0 skips the live monitor; else notebook 01's games are read),
    ``max_batch_tokens``, ``n_random_directions``, ``axis_path`` (an axis, when given) and notebook 02's extraction
    in ``run_dir``. Raises :class:`vaxis.run.checks.ParameterError`; returns notes."""
    from ..run.checks import Problems

    p = Problems.for_notebook(3, cfg, **common)
    p.choice("weighting", weighting, WEIGHTINGS)
    p.integer("n_boot", n_boot, 1)
    p.integer("n_bins", n_bins, 2)
    p.integer("lens_k", lens_k, 1)
    if p.integer("monitor_tokens", monitor_tokens, 0) and monitor_tokens:
        p.made_by(cfg.run_dir / "games.jsonl", 1, "the games; the live monitor continues a held-out one")
    p.integer("max_batch_tokens", cfg["max_batch_tokens"], 1)
    p.integer("n_random_directions", cfg["n_random_directions"], 1)
    main = cfg["main_layer"]
    main_ok = main == "auto" or p.integer("main_layer", main, 0, fix=' or "auto" (chosen on construction splits)')
    meta_path = cfg.run_dir / "extraction" / "meta.json"
    if p.made_by(meta_path, 2, "the extraction") and meta_path.exists() and main_ok and main != "auto":
        layers = json.loads(meta_path.read_text()).get("layers", [])
        if layers and main not in layers:
            p.add(f"main_layer={main}: the extraction has residual indices {layers[0]}..{layers[-1]}; pick one of "
                  'them or "auto"')  # fmt: skip
    if axis_path is not None:
        p.axis(axis_path)
    return p.done()
