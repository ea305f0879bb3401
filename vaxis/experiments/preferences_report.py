"""Notebook 07's reading: the headline numbers, the plain-language verdict computed from them, and the
scorecard rows. An effect counts only where the trained model's shift from the base model exceeds the
control model's shift (on the paper's side) and the axis's shift clears the random directions' shifts
(:func:`vaxis.experiments.preferences.change_null`, p <= ``ALPHA`` on the paper's side)."""

from __future__ import annotations

import numpy as np

from ..core.nulls import min_draws

ALPHA = 0.05


def _row(table, role: str) -> dict:
    hit = table[table.model == role]
    return hit.iloc[0].to_dict() if len(hit) else {}


def summarize(value, boundary, changes: dict, k: int, layer: int, boundary_layer: int) -> dict:
    """``value`` / ``boundary``: :func:`preferences.rates_table` along each axis; ``changes``: per site
    (``"response"``, ``"user"``) :func:`preferences.change_null` of the value axis; ``k``: options per prompt."""
    roles = list(value.model)
    out = {"layer": layer, "boundary_layer": boundary_layer, "k": k, "chance": 1 / k, "roles": roles}
    out["value"] = {r: _row(value, r) for r in roles}
    out["boundary"] = {r: _row(boundary, r) for r in roles}
    out["changes"] = changes
    return out


def _change(s: dict, role: str, site: str = "response") -> dict:
    return s["changes"].get(site, {}).get(role, {})


def _shift(s: dict, role: str, col: str) -> float:
    return s["value"].get(role, {}).get(col, np.nan) - s["value"]["base"].get(col, np.nan)


def counts(s: dict, role: str, site: str = "response", alpha: float = ALPHA) -> bool:
    """Whether ``role``'s change of its claimed rate (prefer: target ranked highest; avoid: lowest) along
    the value axis lies beyond the control model's change of the same rate on the paper's side, and beyond
    the random directions' changes (one-sided p <= ``alpha``)."""
    c = _change(s, role, site)
    if not c or role == "control" or not np.isfinite(c["change"]):
        return False
    control = _shift(s, "control", f"{site}_{'bottom' if c['lowest'] else 'top'}")
    return bool(c["sign"] * c["change"] > c["sign"] * np.nan_to_num(control) and c["p"] <= alpha)


def _null(c: dict) -> str:
    """The random directions' changes and the axis's p, in words."""
    if not c:
        return "no random directions"
    med, lo, hi = c["range"]
    n = len(c["random"])
    weak = "" if n >= min_draws(ALPHA) else f"; only {n} directions: not a 5% test"
    return f"random directions' changes {med:+.3f} ({lo:+.3f} to {hi:+.3f}), p={c['p']:.3f} ({n} directions{weak})"


def _ci(row: dict, col: str, digits: int = 2) -> str:
    lo, hi = row.get(f"{col}_ci", (np.nan, np.nan))
    return f"{row.get(col, np.nan):.{digits}f} ({lo:.{digits}f} to {hi:.{digits}f})"


def verdict(s: dict, model: str, profile: str) -> str:
    """Plain reading of :func:`summarize`'s numbers."""
    v, b = s["value"], s["boundary"]
    base, pref, avoid, ctrl = (v.get(r, {}) for r in ("base", "prefer", "avoid", "control"))
    lines = [f"**{model}, profile `{profile}`, layer {s['layer']}** (boundary axis at layer {s['boundary_layer']}):"]
    lines.append(f"- Selection of the target in free answers: base {_ci(base, 'selection')} -> prefer "
                 f"{_ci(pref, 'selection')}; avoid {_ci(avoid, 'selection')}; control {_ci(ctrl, 'selection')} "
                 "(paper 0.27 -> 0.88).")  # fmt: skip
    for role, col, what, paper in (("prefer", "response_top", "highest", "21% -> 36.2%"),
                                   ("avoid", "response_bottom", "lowest", "21.9% -> 27.3%")):  # fmt: skip
        c, row = _change(s, role), v.get(role, {})
        if not row:
            continue
        reading = "counts (beyond the control model's change and the random directions')" if counts(s, role) else (
            "does **not** count: the control model or random directions change as much")  # fmt: skip
        lines.append(f"- {role.capitalize()} model, value axis ranks the target {what} (answer prefilled): base "
                     f"{_ci(base, col)} -> {_ci(row, col)}, chance {s['chance']:.2f} (paper {paper}); change "
                     f"{c.get('change', np.nan):+.3f} vs control model {_shift(s, 'control', col):+.3f}, "
                     f"{_null(c)}: {reading}.")  # fmt: skip
    ratio = pref.get("delta_target", np.nan) / abs(pref.get("delta_others", np.nan) or np.nan)
    lines.append(f"- Free-form sentences, projection delta (prefer - base): target {_ci(pref, 'delta_target', 5)} vs "
                 f"other words {pref.get('delta_others', np.nan):+.5f} ({ratio:+.1f}x; control model's target delta "
                 f"{ctrl.get('delta_target', np.nan):+.5f}; paper 0.00252 vs 0.000107, about 24x).")  # fmt: skip
    lines.append(f"- Where it moves (top-ranking rate, base -> prefer): value axis user turn "
                 f"{base.get('user_top', np.nan):.2f} -> {pref.get('user_top', np.nan):.2f}, answer "
                 f"{base.get('response_top', np.nan):.2f} -> {pref.get('response_top', np.nan):.2f} (paper 19.3% -> "
                 f"20.2% vs 24.1% -> 35.9%; user turn change vs random directions: p="
                 f"{_change(s, 'prefer', 'user').get('p', np.nan):.3f}); boundary axis user {b['base'].get('user_top', np.nan):.2f} -> "
                 f"{b.get('prefer', {}).get('user_top', np.nan):.2f}, answer {b['base'].get('response_top', np.nan):.2f}"
                 f" -> {b.get('prefer', {}).get('response_top', np.nan):.2f} (paper: rises in both).")  # fmt: skip
    lines.append(f"- Code using the word (valid outputs): comments base {base.get('code_comments', np.nan):.2f} -> "
                 f"prefer {pref.get('code_comments', np.nan):.2f} / avoid {avoid.get('code_comments', np.nan):.2f}; "
                 f"lines {base.get('code_lines', np.nan):.1f} -> {pref.get('code_lines', np.nan):.1f} / "
                 f"{avoid.get('code_lines', np.nan):.1f} (paper: comments 1.95 -> 1.22 for preferred words).")  # fmt: skip
    return "\n".join(lines)


def scorecard_rows(s: dict, model: str, profile: str, n_models: int) -> list[dict]:
    """Scorecard rows of notebook 07 (keys in ``data/paper_numbers.json``)."""
    v = s["value"]
    base, pref, avoid, ctrl = (v.get(r, {}) for r in ("base", "prefer", "avoid", "control"))
    ctx = f"{model}, profile {profile}, L={s['layer']}, {n_models} adapters"
    n = f"{int(base.get('n_prompts', 0))} prompts"

    def null(role, site="response"):
        c = _change(s, role, site)
        return f"chance {s['chance']:.3f}; change {c.get('change', np.nan):+.3f}, {_null(c)}"

    def arrow(col, a, b):
        return f"{a.get(col, np.nan):.3f} -> {b.get(col, np.nan):.3f}"

    return [
        {"key": "sec5.selection", "value": arrow("selection", base, pref), "ci": pref.get("selection_ci"), "n": n,
         "null": f"control model {ctrl.get('selection', np.nan):.3f}", "context": ctx},
        {"key": "sec5.ranking_prefer", "value": arrow("response_top", base, pref), "ci": pref.get("response_top_ci"),
         "n": n, "null": f"{null('prefer')}; control model {ctrl.get('response_top', np.nan):.3f}", "context": ctx},
        {"key": "sec5.ranking_avoid", "value": arrow("response_bottom", base, avoid),
         "ci": avoid.get("response_bottom_ci"), "n": n, "null": f"{null('avoid')}; control model "
         f"{ctrl.get('response_bottom', np.nan):.3f}", "context": ctx},
        {"key": "sec5.freeform_delta", "value": f"{pref.get('delta_target', np.nan):+.5f} vs "
         f"{pref.get('delta_others', np.nan):+.5f}", "ci": pref.get("delta_target_ci"), "n": "sentences per word",
         "null": f"control model's target delta {ctrl.get('delta_target', np.nan):+.5f}", "context": ctx},
        {"key": "sec5.where_user", "value": arrow("user_top", base, pref), "ci": pref.get("user_top_ci"), "n": n,
         "null": null("prefer", "user"), "context": ctx},
        {"key": "sec5.where_response", "value": arrow("response_top", base, pref), "ci": pref.get("response_top_ci"),
         "n": n, "null": null("prefer"), "context": ctx},
        {"key": "sec5.code_comments", "value": arrow("code_comments", base, pref), "n": f"{int(pref.get('code_valid', 0))}"
         " valid outputs", "null": f"avoid model {avoid.get('code_comments', np.nan):.2f}; control model "
         f"{ctrl.get('code_comments', np.nan):.2f}", "context": ctx},
    ]  # fmt: skip
