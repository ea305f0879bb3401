"""Notebook 08's reading: headline deltas, the plain verdict and the scorecard rows. A trained model's
delta counts only where its CI excludes 0, it lies beyond the random directions' range, and it exceeds
the control adapter's delta on the same items."""

from __future__ import annotations

import numpy as np

PAPER = {("sft-gsm8k", "gsm8k"): "+0.0211", ("sft-arc", "arc"): "+0.0333", ("sft-gsm8k", "math500"): "+0.004"}
KEYS = {("sft-gsm8k", "gsm8k"): "sec6.sft_gsm8k", ("sft-arc", "arc"): "sec6.sft_arc",
        ("sft-gsm8k", "math500"): "sec6.sft_math500"}  # fmt: skip


def summarize(deltas, accuracy: dict, layer: int) -> dict:
    """``deltas``: :func:`vaxis.experiments.sft.deltas_table`; ``accuracy[model][dataset]``: per-item
    0/1/NaN arrays (held-out items)."""
    rows = {(r["model"], r["dataset"]): r for r in deltas.to_dict("records")}
    return {"layer": layer, "rows": rows, "accuracy": _accuracy(accuracy)}


def _accuracy(accuracy: dict) -> dict:
    """``{model: {dataset: (accuracy over parseable answers, n parseable)}}``."""
    return {m: {d: (float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else np.nan, int(np.isfinite(v).sum()))
                for d, v in per.items()} for m, per in accuracy.items()}  # fmt: skip


def accuracy_table(accuracy: dict):
    """Accuracy per model (rows) and dataset (columns), as "0.25 (8 of 12 parseable)"."""
    import pandas as pd

    return pd.DataFrame({m: {d: f"{a:.2f} ({n} of {len(accuracy[m][d])} parseable)" for d, (a, n) in per.items()}
                         for m, per in _accuracy(accuracy).items()}).T  # fmt: skip


def counts(s: dict, model: str, dataset: str) -> bool:
    """Whether ``model``'s delta on ``dataset`` clears its CI, the random range and the control's delta."""
    r = s["rows"].get((model, dataset))
    if r is None:
        return False
    control = s["rows"].get(("control", dataset), {}).get("delta", 0.0)
    clear = r["delta_low"] > 0 or r["delta_high"] < 0
    if not np.isfinite([r["random_delta_2.5%"], r["random_delta_97.5%"]]).all():
        beyond = True  # no random directions were read: the CI and the control decide
    else:
        beyond = r["delta"] > r["random_delta_97.5%"] if r["delta"] > 0 else r["delta"] < r["random_delta_2.5%"]
    return bool(clear and beyond and abs(r["delta"]) > abs(control))


def verdict(s: dict, model: str, profile: str) -> str:
    """Plain reading of :func:`summarize`'s numbers."""
    lines = [f"**{model}, profile `{profile}`, layer {s['layer']}** (delta = trained - base, mean projection over the "
             "prefilled reference answer, held-out items):"]  # fmt: skip
    for (m, d), r in sorted(s["rows"].items()):
        paper = f" (paper {PAPER[(m, d)]})" if (m, d) in PAPER else ""
        reading = ("the null for any fine-tuning" if m == "control" else "counts" if counts(s, m, d)
                   else "does not count")  # fmt: skip
        lines.append(f"- {m} on {d}: {r['delta']:+.4f} ({r['delta_low']:+.4f}..{r['delta_high']:+.4f}), n={r['n']}; "
                     f"random directions {r['random_delta_2.5%']:+.4f}..{r['random_delta_97.5%']:+.4f}{paper}: "
                     f"{reading}.")  # fmt: skip
    acc = []
    for m, per in s["accuracy"].items():
        acc.append(f"{m}: " + ", ".join(f"{d} {a:.2f} (n={n})" for d, (a, n) in per.items()))
    lines.append("- Accuracy of greedy answers on held-out items (parseable answers): " + "; ".join(acc) + ".")
    return "\n".join(lines)


def scorecard_rows(s: dict, model: str, profile: str) -> list[dict]:
    """Scorecard rows of notebook 08 (keys in ``data/paper_numbers.json``)."""
    ctx = f"{model}, profile {profile}, L={s['layer']}"
    out = []
    for (m, d), key in KEYS.items():
        r = s["rows"].get((m, d))
        if r is None:
            continue
        control = s["rows"].get(("control", d), {}).get("delta")
        control = "n/a" if control is None else f"{control:+.4f}"
        out.append({"key": key, "value": r["delta"], "ci": (r["delta_low"], r["delta_high"]), "n": f"{r['n']} items",
                    "null": f"random directions {r['random_delta_2.5%']:+.4f}..{r['random_delta_97.5%']:+.4f}; "
                    f"control adapter {control}", "context": ctx})  # fmt: skip
    return out
