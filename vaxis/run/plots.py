"""Figures of the notebooks (matplotlib/seaborn), each returning the figure and saving it."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


def _save(fig, paths):
    for path in paths or []:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=130, bbox_inches="tight")
    return fig


def _finish(fig, ax, xlabel: str, ylabel: str, title: str, save_to):
    """Axis labels, title, a small legend, tight layout, then :func:`_save`."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, save_to)


def auroc_by_layer_figure(
    layers,
    real,
    real_ci=None,
    random_aurocs=None,
    shuffled_aurocs=None,
    position_auroc=None,
    split_mean=None,
    split_std=None,
    mean_level=None,
    position_matched=None,
    main_layer=None,
    title="",
    save_to=None,
):
    """Held-out token AUROC by layer with its CI, beside the controls: random directions
    (band: min-max over directions), shuffled-label axes (band: 5th-95th percentile), the
    position-only baseline (horizontal line), the AUROC among tokens at equal position
    (``position_matched``: one curve, or ``{rule: curve}``), and the construction split
    analysis (mean +/- std)."""
    layers = np.asarray(layers)
    fig, ax = plt.subplots(figsize=(8, 5.6))
    if random_aurocs is not None:
        r = np.asarray(random_aurocs)
        ax.fill_between(layers, r.min(0), r.max(0), color="grey", alpha=0.3, label=f"random directions (n={len(r)})")
    if shuffled_aurocs is not None:
        s = np.asarray(shuffled_aurocs)
        ax.fill_between(
            layers,
            np.quantile(s, 0.05, axis=0),
            np.quantile(s, 0.95, axis=0),
            color="tab:purple",
            alpha=0.25,
            label=f"balanced shuffled-label axes, 5-95% (n={len(s)})",
        )
    if split_mean is not None:
        m, sd = np.asarray(split_mean), np.asarray(split_std)
        ax.plot(
            layers, m, color="tab:green", lw=1.2, label="construction splits, held-out criteria of each (mean ± sd)"
        )
        ax.fill_between(layers, m - sd, m + sd, color="tab:green", alpha=0.15)
    if mean_level is not None:
        ax.plot(layers, mean_level, color="tab:orange", lw=1, ls="--", label="reference sign test (per criterion)")
    if position_matched is not None:
        curves = position_matched if isinstance(position_matched, dict) else {"equal position": position_matched}
        for (rule, curve), color in zip(curves.items(), ("tab:red", "tab:brown", "tab:pink")):
            ax.plot(layers, curve, color=color, lw=1.2, ls="-.", label=f"value axis among tokens with {rule}")
    ax.plot(layers, real, color="tab:blue", lw=2, marker="o", ms=3, label="value axis, held-out token AUROC")
    if real_ci is not None:
        ax.fill_between(
            layers, real_ci[0], real_ci[1], color="tab:blue", alpha=0.2, label="95% CI (criteria bootstrap)"
        )
    if position_auroc is not None:
        ax.axhline(position_auroc, color="black", ls=":", label=f"position-only baseline ({position_auroc:.2f})")
    if main_layer is not None:
        ax.axvline(main_layer, color="tab:blue", ls=":", lw=1)
    ax.axhline(0.5, color="grey", lw=0.8)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("residual index L (hidden_states[L])")
    ax.set_ylabel("AUROC: after vs before tokens")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    return _save(fig, save_to)


def null_distribution_figure(real, nulls: dict, title="", save_to=None):
    """Histograms of null AUROCs (``{name: values}``) at one layer, with the real axis's AUROC
    marked: how far the real number sits from what chance and the nulls give."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for (name, values), color in zip(nulls.items(), ("tab:purple", "grey", "tab:green")):
        values = np.asarray(values)
        if len(values):
            ax.hist(values, bins=20, range=(0, 1), color=color, alpha=0.5, label=f"{name} (n={len(values)})")
    ax.axvline(real, color="tab:blue", lw=2, label=f"value axis ({real:.3f})")
    ax.axvline(0.5, color="black", lw=0.8, ls=":")
    return _finish(fig, ax, "held-out token AUROC", "count", title, save_to)


def cosine_heatmap_figure(matrix, layers, title="", save_to=None):
    """Cross-layer cosine similarity of ``v_L``."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6, 5))
    step = max(1, len(layers) // 12)
    sns.heatmap(
        np.asarray(matrix),
        ax=ax,
        vmin=-1,
        vmax=1,
        cmap="RdBu_r",
        square=True,
        xticklabels=step,
        yticklabels=step,
        cbar_kws={"label": "cos(v_i, v_j)"},
    )
    ticks = np.arange(0, len(layers), step)
    ax.set_xticks(ticks + 0.5, [layers[i] for i in ticks])
    ax.set_yticks(ticks + 0.5, [layers[i] for i in ticks])
    ax.set_xlabel("residual index")
    ax.set_ylabel("residual index")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, save_to)


def histogram_figure(values, bins=20, xlabel="", title="", save_to=None):
    """A plain histogram (e.g. the reward word's relative position)."""
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(values, bins=bins, color="tab:blue", alpha=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, save_to)


def publish(cfg, files: list, requested: bool) -> list[Path]:
    """Copy run files (figures, HTML) into the repository's ``figures/`` as ``<profile>_<name>``, the
    copies the README shows, but only when ``requested`` (``make reproduce`` asks; a plain run never
    does) and only for the profile's own model and quantization: a run with ``-p model <other>`` or
    any ad-hoc run never overwrites what the README shows. Returns the paths written."""
    import shutil

    from .config import REPO_ROOT, own_model_of

    if not requested or (cfg.model, cfg.quantization) != own_model_of(cfg.profile):
        return []
    written = []
    for src in files:
        src = Path(src)
        dst = REPO_ROOT / "figures" / f"{cfg.profile}_{src.name}"
        dst.parent.mkdir(exist_ok=True)
        shutil.copy(src, dst)
        written.append(dst)
    return written


def verbalized_figure(layers, auroc: dict, low: dict, high: dict, random: dict, title="", save_to=None):
    """Fig 3: AUROC of prefilled Yes vs No at the response token by layer, one line per framing with
    its CI, and the random directions' range per framing (a fixed token pair is told apart by many
    directions; what matters is whether the axis flips with the framing)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for (framing, values), color in zip(auroc.items(), ("tab:blue", "tab:red")):
        r = np.asarray(random[framing])
        if len(r):
            ax.fill_between(layers, r.min(0), r.max(0), color=color, alpha=0.12, label=f"random directions, {framing}?")
        ax.plot(layers, values, color=color, lw=2, marker="o", ms=3, label=f'value axis, "{framing}?"')
        ax.fill_between(layers, low[framing], high[framing], color=color, alpha=0.25)
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set_ylim(-0.02, 1.02)
    return _finish(fig, ax, "residual index L", "AUROC: prefilled Yes vs No", title, save_to)


def steering_figure(table, band: dict, title="", save_to=None):
    """Fig 4 with the critique's controls: per strength, the stated yes-rate (left), the length-free
    log-odds with the random-direction band (middle) and the rollout length (right)."""
    s = table["strength_%"].to_numpy()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for framing, color in (("correct", "tab:blue"), ("incorrect", "tab:red")):
        axes[0].plot(s, table[f"yes_rate[{framing}]"], color=color, marker="o", label=f'"{framing}?"')
        axes[1].plot(s, table[f"log_odds[{framing}]"], color=color, marker="o", label=f'axis, "{framing}?"')
        lo, hi = np.asarray(band[framing][0], dtype=float), np.asarray(band[framing][1], dtype=float)
        ok = np.isfinite(lo) & np.isfinite(hi)  # random directions may be read at some strengths only
        shift = 0.4 if framing == "incorrect" else -0.4
        axes[1].vlines(s[ok] + shift, lo[ok], hi[ok], color=color, alpha=0.35, lw=6,
                       label=f"random directions' range, \"{framing}?\"")  # fmt: skip
    axes[2].plot(s, table["rollout_tokens"], color="black", marker="o")
    axes[0].set_ylabel("yes-rate (parseable answers)")
    axes[0].set_ylim(-0.02, 1.02)
    axes[1].set_ylabel("log P(Yes) - log P(No)")
    axes[2].set_ylabel("rollout length (new tokens)")
    for ax in axes:
        ax.set_xlabel("steering strength (% of mean residual norm)")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, save_to)


def slopes_figure(layers, slopes: dict, title="", save_to=None):
    """Fig 11: OLS slope of each metric against steering strength, per layer, with CIs
    (``slopes[metric] = (values, low, high)``)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (metric, (v, lo, hi)), color in zip(slopes.items(), ("tab:blue", "tab:red", "tab:green", "tab:orange")):
        v, lo, hi = map(np.asarray, (v, lo, hi))
        ax.errorbar(layers, v, yerr=[v - lo, hi - v], color=color, marker="o", capsize=3, label=metric)
    ax.axhline(0, color="grey", lw=0.8)
    return _finish(fig, ax, "steering layer (residual index)", "slope per % of norm", title, save_to)


def bands_figure(curves: dict, band: int, title="", save_to=None):
    """Fig 5: mean projection per band of tokens, backtracking vs other rollouts, with CIs."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for flag, color, name in (
        (True, "tab:red", "rollouts that backtrack"),
        (False, "tab:blue", "rollouts that do not"),
    ):
        if flag in curves:
            starts, mean, low, high, n = curves[flag]
            ax.plot(starts, mean, color=color, marker="o", ms=3, label=f"{name} (n={int(n.max()) if len(n) else 0})")
            ax.fill_between(starts, low, high, color=color, alpha=0.2)
    return _finish(fig, ax, f"token band start (bands of {band} tokens)", "mean projection on the axis", title, save_to)


def event_locked_figure(curves: dict, title="", save_to=None):
    """Fig 6 with its controls: mean projection at offsets around backtracking events, at matched token
    indices of non-backtracking rollouts, and around placebo words."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for (name, color) in (("backtracking", "tab:red"), ("matched index, no backtracking", "tab:blue"),
                          ("placebo words", "tab:grey")):  # fmt: skip
        offsets, mean, counts = curves[name]
        ax.plot(offsets, mean, color=color, label=f"{name} (n at 0: {int(counts[len(counts) // 2])})")
    ax.axvline(0, color="black", lw=0.8, ls=":")
    return _finish(fig, ax, "tokens relative to the event", "mean projection on the axis", title, save_to)


def code_effects_figure(layers, effects: dict, main_layer: int, title="", save_to=None,
                        ylabel="Cohen's d, correct - corrupted", share_label="share correct > corrupted"):  # fmt: skip
    """Code correctness (METHOD.md section 4): per corruption kind, Cohen's d of the after-bug projection
    (correct minus corrupted) by layer with its CI and the random directions' 95 % range (left), and the
    share of problems where the correct solution projects higher at ``main_layer`` (right). Any paired
    contrast of :func:`vaxis.experiments.coding.effects` draws the same way (with its own labels)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    colors = dict(zip(effects, ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:grey", "tab:orange")))
    rand = np.concatenate([e["d"][:, 1:] for e in effects.values()], axis=1)
    if rand.shape[1]:
        lo, hi = np.nanquantile(rand, [0.025, 0.975], axis=1)
        axes[0].fill_between(layers, lo, hi, color="black", alpha=0.12, label="random directions, 95% range")
    for kind, e in effects.items():
        axes[0].plot(layers, e["d"][:, 0], color=colors[kind], marker="o", ms=3, label=f"{kind} (n={e['n']})")
        axes[0].fill_between(layers, e["d_low"][:, 0], e["d_high"][:, 0], color=colors[kind], alpha=0.15)
    axes[0].axhline(0, color="grey", lw=0.8)
    axes[0].axvline(main_layer, color="black", lw=0.8, ls=":")
    axes[0].set_xlabel("residual index L")
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=7)
    li = list(layers).index(main_layer)
    kinds = list(effects)
    share = np.array([effects[k]["share"][li, 0] for k in kinds])
    err = np.array([[share[i] - effects[k]["share_low"][li, 0], effects[k]["share_high"][li, 0] - share[i]]
                    for i, k in enumerate(kinds)]).T  # fmt: skip
    axes[1].bar(kinds, share, yerr=err, color=[colors[k] for k in kinds], alpha=0.8, capsize=3)
    axes[1].axhline(0.5, color="grey", lw=0.8)
    axes[1].set_ylim(0, 1.02)
    axes[1].set_ylabel(f"{share_label} at L={main_layer}")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, save_to)


def verbosity_figure(table, bands: dict, title="", save_to=None):
    """Fig 4 (code): per steering strength along the axis, the mean of each metric over valid outputs
    with the random directions' range (``bands[metric] = (low, high)`` per strength), and the pass rate."""
    metrics = list(bands)
    axis = table[table.direction.isin(["axis", "none"])].sort_values("strength_%")
    s = axis["strength_%"].to_numpy()
    fig, axes = plt.subplots(1, len(metrics) + 1, figsize=(3.2 * (len(metrics) + 1), 3.4))
    for ax, metric in zip(axes, metrics):
        ax.plot(s, axis[metric], color="tab:blue", marker="o", label="value axis")
        lo, hi = map(lambda v: np.asarray(v, dtype=float), bands[metric])
        ok = np.isfinite(lo) & np.isfinite(hi)
        ax.vlines(s[ok], lo[ok], hi[ok], color="black", alpha=0.3, lw=6)
        ax.scatter(
            np.r_[s[ok], s[ok]],
            np.r_[lo[ok], hi[ok]],
            color="black",
            alpha=0.5,
            marker="_",
            s=120,
            label="random directions' range",
        )
        ax.set_ylabel(f"{metric} (valid outputs)")
    axes[-1].plot(s, axis["pass_rate"], color="tab:green", marker="o", label="pass rate (all outputs)")
    axes[-1].plot(s, axis["valid"], color="tab:grey", marker="o", ls="--", label="parses")
    axes[-1].set_ylim(-0.02, 1.02)
    axes[-1].legend(fontsize=7)
    axes[0].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("strength (% of norm)")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, save_to)


def loss_figure(losses: dict, title="", save_to=None):
    """Training loss per logged step for each adapter (``losses[name] = [{"step", "loss"}, ...]``)."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, rows in losses.items():
        rows = [r for r in rows if "loss" in r]
        ax.plot([r.get("step", i + 1) for i, r in enumerate(rows)], [r["loss"] for r in rows], marker="o", ms=3,
                label=name)  # fmt: skip
    return _finish(fig, ax, "optimizer step", "training loss", title, save_to)


def rates_figure(table, columns: dict, null: dict | None = None, title="", save_to=None):
    """Grouped bars: per model (rows of ``table``), each rate in ``columns`` (``{label: (value column,
    ci column)}``, the CI a ``(low, high)`` pair), with an optional horizontal null per label."""
    models = list(table["model"])
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(models), 3.6))
    width = 0.8 / max(len(columns), 1)
    for j, (label, (col, ci)) in enumerate(columns.items()):
        x = np.arange(len(models)) + (j - (len(columns) - 1) / 2) * width
        v = table[col].to_numpy(dtype=float)
        lo = np.array([c[0] for c in table[ci]], dtype=float)
        hi = np.array([c[1] for c in table[ci]], dtype=float)
        bars = ax.bar(x, v, width, label=label, alpha=0.85)
        ok = np.isfinite(lo) & np.isfinite(hi)
        ax.errorbar(x[ok], v[ok], yerr=[v[ok] - lo[ok], hi[ok] - v[ok]], fmt="none", color="black", capsize=2)
        if null and label in null:
            ax.axhline(null[label], color=bars.patches[0].get_facecolor(), ls=":", lw=1)
    ax.set_xticks(np.arange(len(models)), models, rotation=15)
    ax.set_ylim(0, 1.02)
    return _finish(fig, ax, "", "rate", title, save_to)


def deltas_figure(deltas, title="", save_to=None):
    """Notebook 08: per model and dataset, the projection delta (trained - base) with its CI, and the random
    directions' 95 % range as a grey bar behind it (``deltas``: :func:`vaxis.experiments.sft.deltas_table`)."""
    names, dss = list(deltas.model.unique()), list(deltas.dataset.unique())
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / max(len(dss), 1)
    for j, ds in enumerate(dss):
        sub = deltas[deltas.dataset == ds].set_index("model").reindex(names)
        x = np.arange(len(names)) + (j - (len(dss) - 1) / 2) * width
        err = np.nan_to_num([sub.delta - sub.delta_low, sub.delta_high - sub.delta])
        ax.bar(x, sub.delta, width, label=ds, yerr=err, capsize=2, alpha=0.85)
        ax.vlines(x, sub["random_delta_2.5%"], sub["random_delta_97.5%"], color="black", alpha=0.3, lw=5)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(np.arange(len(names)), names)
    return _finish(fig, ax, "", "projection delta (trained - base)", title, save_to)


def quartile_figure(table, title="", save_to=None):
    """In the wild (METHOD.md section 6): each category's share of the top and of the bottom quartile with
    bootstrap CIs (left), and top - bottom share beside the random directions' 95 % range and the gap left
    once prompt length is regressed out (right). ``table``: :func:`vaxis.experiments.wild.category_effects`."""
    t = table.sort_values("gap", ignore_index=True)
    y = np.arange(len(t))
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(t) + 1.6), sharey=True)
    for off, col, color in ((-0.2, "top", "tab:green"), (0.2, "bottom", "tab:red")):
        v = t[f"{col}_share"].to_numpy()
        ci = np.array(t[f"{col}_ci"].tolist())
        axes[0].barh(y + off, v, height=0.4, color=color, alpha=0.8, label=f"{col} quartile",
                     xerr=[v - ci[:, 0], ci[:, 1] - v], error_kw={"lw": 0.8})  # fmt: skip
    axes[0].set_yticks(y, [f"{c} (n={n})" for c, n in zip(t["category"], t["n"])])
    axes[0].set_xlabel("share of the quartile")
    axes[0].legend(fontsize=7)
    axes[1].barh(y, t["random_gap_97.5%"] - t["random_gap_2.5%"], left=t["random_gap_2.5%"], color="black",
                 alpha=0.12, label="random directions, 95% range")  # fmt: skip
    axes[1].scatter(t["gap"], y, color="tab:blue", zorder=3, label="axis")
    axes[1].scatter(t["gap_len"], y, color="tab:orange", marker="x", zorder=3, label="axis, length regressed out")
    axes[1].axvline(0, color="grey", lw=0.8)
    axes[1].set_xlabel("top share - bottom share")
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, save_to)


def cosine_by_layer_figure(layers, curves: dict, main_layer: int, title="", save_to=None):
    """Per-layer curves (e.g. the cosine of two axes and a held-out AUROC), the main layer dotted."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for name, values in curves.items():
        ax.plot(layers, values, marker="o", ms=3, label=name)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(main_layer, color="black", lw=0.8, ls=":")
    return _finish(fig, ax, "residual index L", "cosine / AUROC", title, save_to)
