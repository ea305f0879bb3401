"""Notebook 10's verdict table, plain reading and scorecard rows.

A row of the verdict table is ``{"claim", "n", "section", "sign", <axis name>: (value, low, high) | value, ...,
"null": <the random directions' values of the same readout>}``, optionally with ``"bar"`` (a number every axis
must also pass on the row's side, e.g. :func:`equal_position_bar`) and ``"bar_name"``.

* ``section``: ``"paper"`` (a claim of the paper: counted in the reading), ``"critique"`` (a test the
  replication proposes: its side is the critique's claim) or ``"null"`` (a pure null, e.g. the harmless code
  edit: its side is that of the paper's claims on the same readout, and nothing should come out beyond the null
  there). Only ``"paper"`` rows count among the paper's claims.
* ``sign``: the side fixed by the claim, never by the observed number: ``+1`` the claim says the number is high,
  ``-1`` low.

A cell *survives* when its p-value against the random directions on the row's side
(:func:`vaxis.core.nulls.claim_p`) is at most ``alpha`` and, where the row has a ``bar``, it lies beyond the bar on
that side; an effect on the side opposite to the claim has a large p and never survives. With ``n`` null draws
the smallest p is ``1 / (n + 1)``: fewer than :func:`vaxis.core.nulls.min_draws` draws cannot make a 5 % test, and the
table says so.
"""

from __future__ import annotations

import numpy as np

from ..core.nulls import claim_p, min_draws, null_range

SECTIONS = {"paper": "claims of the paper", "critique": "the critique's tests", "null": "pure nulls"}
ALPHA = 0.05


def _cell(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, tuple):
        point, lo, hi = (float(x) for x in v[:3])
        return f"{point:+.3f} ({lo:+.3f}..{hi:+.3f})" if np.isfinite([lo, hi]).all() else f"{point:+.3f}"
    return f"{float(v):+.3f}" if isinstance(v, (int, float, np.floating)) else str(v)


def _point(v) -> float:
    return float(v[0]) if isinstance(v, tuple) else float(v) if v is not None else np.nan


def _null(row: dict) -> np.ndarray:
    x = np.asarray(row.get("null", ()), dtype=float).ravel()
    return x[np.isfinite(x)]


def equal_position_bar(position: float, null, level: float = 0.975) -> float:
    """What an AUROC among tokens of equal position must beat: the larger of the position covariates' own
    AUROC inside the same strata (``position``) and the ``level`` quantile of the random directions' AUROCs."""
    x = np.asarray(null, dtype=float).ravel()
    x = x[np.isfinite(x)]
    q = float(np.quantile(x, level)) if len(x) else np.nan
    finite = [v for v in (float(position), q) if np.isfinite(v)]
    return max(finite) if finite else np.nan


def side_text(sign: int) -> str:
    return {1: "high", -1: "low"}[sign]


def cell_p(row: dict, name: str) -> float:
    """The p-value of ``row[name]`` against the row's null draws, one-sided on the row's side
    (:func:`vaxis.core.nulls.claim_p`; NaN without a finite value or draws)."""
    return claim_p(_point(row.get(name)), _null(row), row["sign"])


def survives(row: dict, name: str, alpha: float = ALPHA) -> bool | None:
    """Whether ``row[name]`` clears the null on the row's side: ``p <= alpha`` (:func:`cell_p`) and beyond the
    row's ``bar`` where it has one (for a pure null: whether it comes out beyond the null, which it should
    not). None without null draws or a finite value."""
    v = _point(row.get(name))
    if not len(_null(row)) or not np.isfinite(v):
        return None
    ok = cell_p(row, name) <= alpha
    bar = row.get("bar")
    if ok and bar is not None and np.isfinite(bar):
        ok = row["sign"] * v > row["sign"] * bar
    return bool(ok)


def _null_text(row: dict) -> str:
    x = _null(row)
    if not len(x):
        return "n/a"
    med, lo, hi = null_range(x)
    text = f"random directions {med:+.3f} ({lo:+.3f}..{hi:+.3f}), {len(x)} draws"
    if len(x) < min_draws(ALPHA):
        text += f" (fewer than {min_draws(ALPHA)}: not a 5% test)"
    if row.get("bar") is not None:
        text += f"; bar {row['bar']:+.3f} ({row.get('bar_name', 'bar')})"
    return text


def verdict_table(rows: list[dict], names: list[str], alpha: float = ALPHA):
    """The claims (rows, grouped by section: the paper's claims, the critique's tests, pure nulls) by axes
    (columns): each cell ``value (CI) p=...``, marked ``*`` when it survives (:func:`survives`); the side, the
    null draws' median and 95 % range, and the sample size."""
    import pandas as pd

    out = []
    for section in SECTIONS:
        for r in (r for r in rows if r["section"] == section):
            line = {
                "section": SECTIONS[section],
                "claim": r["claim"],
                "side": side_text(r["sign"]),
                "n": r.get("n", ""),
            }
            for name in names:
                p = cell_p(r, name) if r.get(name) is not None and len(_null(r)) else np.nan
                mark = "*" if survives(r, name, alpha) else ""
                line[name] = _cell(r.get(name)) + (f" p={p:.3f}" if np.isfinite(p) else "") + mark
            line["null"] = _null_text(r)
            out.append(line)
    return pd.DataFrame(out).set_index(["section", "claim"])


def reading(rows: list[dict], names: list[str], model: str, profile: str, layer: int, alpha: float = ALPHA) -> str:
    """Plain reading: per axis, the paper's claims that survive; the critique's tests that hold; the pure nulls
    that (wrongly) come out beyond random."""
    paper, critique, null = ([r for r in rows if r["section"] == s] for s in SECTIONS)
    lines = [f"**{model}, profile `{profile}`, layer {layer}.** A claim survives for an axis when its p-value against "
             f"the random directions, on the side the claim fixes, is at most {alpha} (and it passes the row's bar "
             "where there is one; marked * in the table). An effect opposite to the claim never survives."]  # fmt: skip
    for name in names:
        kept = [r["claim"] for r in paper if survives(r, name, alpha)]
        held = [r["claim"] for r in critique if survives(r, name, alpha)]
        moved = [r["claim"] for r in null if survives(r, name, alpha)]
        lines.append(
            f"- {name}: {len(kept)} of {len(paper)} paper claims survive" + (f" ({'; '.join(kept)})" if kept else "")
            + f"; the critique's tests holding beyond random: {len(held)} of {len(critique)}"
            + f"; pure nulls beyond random (should be none): {len(moved)} of {len(null)}"
            + (f" ({'; '.join(moved)})." if moved else ".")
        )  # fmt: skip
    return "\n".join(lines)


def scorecard_rows(rows: list[dict], names: list[str], model: str, profile: str, layer: int,
                   alpha: float = ALPHA) -> list[dict]:  # fmt: skip
    """One scorecard row per (claim, axis), keyed ``sec7.verdict.<claim>.<axis>``: the value, its CI, n, and as
    the null the random directions' range with the row's side, the p-value and whether it survives."""
    import re

    out = []
    for r in rows:
        for name in names:
            v = r.get(name)
            if v is None:
                continue
            slug = re.sub(r"[^a-z0-9]+", "_", f"{r['claim']}.{name}".lower()).strip("_")
            p, ok = (cell_p(r, name), survives(r, name, alpha)) if len(_null(r)) else (np.nan, None)
            verdict = {True: "survives", False: "does not survive", None: "no null"}[ok]
            if r["section"] == "null":
                verdict = {True: "beyond the null (a pure null should not be)", False: "inside the null",
                           None: "no null"}[ok]  # fmt: skip
            out.append({"key": f"sec7.verdict.{slug}", "section": "Critique (notebook 10)",
                        "metric": f"{r['claim']}, read on the {name} axis ({SECTIONS[r['section']]}; side: "
                                  f"{side_text(r['sign'])})",
                        "value": _point(v),
                        "ci": (float(v[1]), float(v[2])) if isinstance(v, tuple) else (np.nan, np.nan),
                        "n": str(r.get("n", "")), "null": f"{_null_text(r)}; p = {p:.3f}: {verdict}",
                        "context": f"{model}, profile {profile}, L={layer}"})  # fmt: skip
    return out
