"""Notebook 10's verdict table, plain reading and scorecard rows.

A row of the verdict table is ``{"claim", "n", <axis name>: (value, low, high) | value, ..., "random": (median,
2.5 %, 97.5 %)}``; :func:`verdict_table` formats them side by side. A claim *survives* for an axis when its
value lies beyond the random directions' range on the same side as the value axis's.
"""

from __future__ import annotations

import numpy as np


def _cell(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, tuple):
        point, lo, hi = (float(x) for x in v[:3])
        return f"{point:+.3f} ({lo:+.3f}..{hi:+.3f})" if np.isfinite([lo, hi]).all() else f"{point:+.3f}"
    return f"{float(v):+.3f}" if isinstance(v, (int, float, np.floating)) else str(v)


def _point(v) -> float:
    return float(v[0]) if isinstance(v, tuple) else float(v) if v is not None else np.nan


def survives(row: dict, name: str, baseline: str) -> bool | None:
    """Whether ``row[name]`` lies beyond the random range on the side where ``row[baseline]`` lies (None
    without a random range)."""
    rand = row.get("random")
    if rand is None or not np.isfinite([rand[1], rand[2]]).all():
        return None
    v, ref = _point(row.get(name)), _point(row.get(baseline))
    if not np.isfinite(v):
        return None
    mid = rand[0]
    return bool(v > rand[2]) if ref >= mid else bool(v < rand[1])


def verdict_table(rows: list[dict], names: list[str]):
    """The claims (rows) by axes (columns) with the random directions' null and the sample size; a mark
    ``*`` after a value that lies beyond the random range on the value axis's side."""
    import pandas as pd

    out = []
    for r in rows:
        line = {"claim": r["claim"], "n": r.get("n", "")}
        for name in names:
            mark = "*" if survives(r, name, names[0]) else ""
            line[name] = _cell(r.get(name)) + mark
        line["random directions (median, 95% range)"] = _cell(r.get("random"))
        out.append(line)
    return pd.DataFrame(out).set_index("claim")


def reading(rows: list[dict], names: list[str], model: str, profile: str, layer: int) -> str:
    """Plain reading: per axis, the claims that survive the random null."""
    lines = [f"**{model}, profile `{profile}`, layer {layer}.** A claim survives for an axis when its number lies "
             "beyond the random directions' 95% range, on the value axis's side (marked * in the table)."]  # fmt: skip
    for name in names:
        kept = [r["claim"] for r in rows if survives(r, name, names[0])]
        lines.append(
            f"- {name}: {len(kept)} of {len(rows)} claims survive" + (f" ({'; '.join(kept)})." if kept else ".")
        )
    return "\n".join(lines)


def scorecard_rows(rows: list[dict], names: list[str], model: str, profile: str, layer: int) -> list[dict]:
    """One scorecard row per (claim, axis other than the first: the value axis's numbers are the other
    notebooks' rows), keyed ``sec7.verdict.<claim>.<axis>``."""
    import re

    out = []
    for r in rows:
        for name in names[1:]:
            v = r.get(name)
            if v is None:
                continue
            slug = re.sub(r"[^a-z0-9]+", "_", f"{r['claim']}.{name}".lower()).strip("_")
            rand = r.get("random")
            out.append({"key": f"sec7.verdict.{slug}", "section": "Critique (notebook 10)",
                        "metric": f"{r['claim']}, read on the {name} axis", "value": _point(v),
                        "ci": (float(v[1]), float(v[2])) if isinstance(v, tuple) else (np.nan, np.nan),
                        "n": str(r.get("n", "")), "null": f"random directions {_cell(rand)}" if rand else "n/a",
                        "context": f"{model}, profile {profile}, L={layer}"})  # fmt: skip
    return out
