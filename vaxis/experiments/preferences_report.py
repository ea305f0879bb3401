"""Notebook 07's reading: the headline numbers, the plain-language verdict computed from them, and the
scorecard rows. An effect counts only where the trained model's shift from the base model exceeds the
control model's shift and the axis's rate lies beyond the random directions' range."""

from __future__ import annotations

import numpy as np


def _row(table, role: str) -> dict:
    hit = table[table.model == role]
    return hit.iloc[0].to_dict() if len(hit) else {}


def summarize(value, boundary, random_rank: dict, k: int, layer: int, boundary_layer: int) -> dict:
    """``value`` / ``boundary``: :func:`preferences.rates_table` along each axis; ``random_rank``: per
    role the random directions' top-ranking rates; ``k``: options per prompt."""
    roles = list(value.model)
    out = {"layer": layer, "boundary_layer": boundary_layer, "k": k, "chance": 1 / k, "roles": roles}
    out["value"] = {r: _row(value, r) for r in roles}
    out["boundary"] = {r: _row(boundary, r) for r in roles}
    out["random"] = {r: (float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))) if len(v) else (np.nan, np.nan)
                     for r, v in random_rank.items()}  # fmt: skip
    return out


def _shift(s: dict, axis: str, role: str, col: str) -> float:
    return s[axis].get(role, {}).get(col, np.nan) - s[axis]["base"].get(col, np.nan)


def counts(s: dict, role: str, col: str = "response_top") -> bool:
    """Whether ``role``'s shift of ``col`` along the value axis exceeds the control model's shift and
    its rate lies beyond the random directions' range (same sign as the shift)."""
    shift, control = _shift(s, "value", role, col), _shift(s, "value", "control", col)
    lo, hi = s["random"].get(role, (np.nan, np.nan))
    rate = s["value"].get(role, {}).get(col, np.nan)
    beyond = rate > hi if shift > 0 else rate < lo
    return bool(np.isfinite(shift) and abs(shift) > abs(control if np.isfinite(control) else 0) and beyond)


def _ci(row: dict, col: str, digits: int = 2) -> str:
    lo, hi = row.get(f"{col}_ci", (np.nan, np.nan))
    return f"{row.get(col, np.nan):.{digits}f} ({lo:.{digits}f} to {hi:.{digits}f})"


def verdict(s: dict, model: str, profile: str) -> str:
    """Plain reading of :func:`summarize`'s numbers."""
    v, b = s["value"], s["boundary"]
    base, pref, avoid, ctrl = (v.get(r, {}) for r in ("base", "prefer", "avoid", "control"))
    lo, hi = s["random"].get("prefer", (np.nan, np.nan))
    lines = [f"**{model}, profile `{profile}`, layer {s['layer']}** (boundary axis at layer {s['boundary_layer']}):"]
    lines.append(f"- Selection of the target in free answers: base {_ci(base, 'selection')} -> prefer "
                 f"{_ci(pref, 'selection')}; avoid {_ci(avoid, 'selection')}; control {_ci(ctrl, 'selection')} "
                 "(paper 0.27 -> 0.88).")  # fmt: skip
    reading = "counts (beyond the control model and the random directions)" if counts(s, "prefer") else (
        "does **not** count: the control model or random directions move it as far")  # fmt: skip
    lines.append(f"- Value axis ranks the target highest (answer prefilled): base {_ci(base, 'response_top')} -> prefer "
                 f"{_ci(pref, 'response_top')}, control {_ci(ctrl, 'response_top')}, random directions "
                 f"{lo:.2f}-{hi:.2f}, chance {s['chance']:.2f} (paper 21% -> 36.2%): the rise {reading}.")  # fmt: skip
    lines.append(f"- Avoid model, target ranked lowest: base {_ci(base, 'response_bottom')} -> "
                 f"{_ci(avoid, 'response_bottom')} (paper 21.9% -> 27.3%).")  # fmt: skip
    ratio = pref.get("delta_target", np.nan) / abs(pref.get("delta_others", np.nan) or np.nan)
    lines.append(f"- Free-form sentences, projection delta (prefer - base): target {_ci(pref, 'delta_target', 5)} vs "
                 f"other words {pref.get('delta_others', np.nan):+.5f} ({ratio:+.1f}x; control model's target delta "
                 f"{ctrl.get('delta_target', np.nan):+.5f}; paper 0.00252 vs 0.000107, about 24x).")  # fmt: skip
    lines.append(f"- Where it moves (top-ranking rate, base -> prefer): value axis user turn "
                 f"{base.get('user_top', np.nan):.2f} -> {pref.get('user_top', np.nan):.2f}, answer "
                 f"{base.get('response_top', np.nan):.2f} -> {pref.get('response_top', np.nan):.2f} (paper 19.3% -> "
                 f"20.2% vs 24.1% -> 35.9%); boundary axis user {b['base'].get('user_top', np.nan):.2f} -> "
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
    lo, hi = s["random"].get("prefer", (np.nan, np.nan))

    def arrow(col, a, b):
        return f"{a.get(col, np.nan):.3f} -> {b.get(col, np.nan):.3f}"

    return [
        {"key": "sec5.selection", "value": arrow("selection", base, pref), "ci": pref.get("selection_ci"), "n": n,
         "null": f"control model {ctrl.get('selection', np.nan):.3f}", "context": ctx},
        {"key": "sec5.ranking_prefer", "value": arrow("response_top", base, pref), "ci": pref.get("response_top_ci"),
         "n": n, "null": f"chance {s['chance']:.3f}; random directions {lo:.3f}-{hi:.3f}; control model "
         f"{ctrl.get('response_top', np.nan):.3f}", "context": ctx},
        {"key": "sec5.ranking_avoid", "value": arrow("response_bottom", base, avoid),
         "ci": avoid.get("response_bottom_ci"), "n": n, "null": f"chance {s['chance']:.3f}", "context": ctx},
        {"key": "sec5.freeform_delta", "value": f"{pref.get('delta_target', np.nan):+.5f} vs "
         f"{pref.get('delta_others', np.nan):+.5f}", "ci": pref.get("delta_target_ci"), "n": "sentences per word",
         "null": f"control model's target delta {ctrl.get('delta_target', np.nan):+.5f}", "context": ctx},
        {"key": "sec5.where_user", "value": arrow("user_top", base, pref), "ci": pref.get("user_top_ci"), "n": n,
         "null": f"chance {s['chance']:.3f}", "context": ctx},
        {"key": "sec5.where_response", "value": arrow("response_top", base, pref), "ci": pref.get("response_top_ci"),
         "n": n, "null": f"chance {s['chance']:.3f}", "context": ctx},
        {"key": "sec5.code_comments", "value": arrow("code_comments", base, pref), "n": f"{int(pref.get('code_valid', 0))}"
         " valid outputs", "null": f"avoid model {avoid.get('code_comments', np.nan):.2f}; control model "
         f"{ctrl.get('code_comments', np.nan):.2f}", "context": ctx},
    ]  # fmt: skip
