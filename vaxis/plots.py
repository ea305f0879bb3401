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
    (band: min-max over directions), shuffled-label axes (band), the position-only baseline
    (horizontal line), the AUROC within bins of equal position, and the construction split
    analysis (mean +/- std)."""
    layers = np.asarray(layers)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if random_aurocs is not None:
        r = np.asarray(random_aurocs)
        ax.fill_between(layers, r.min(0), r.max(0), color="grey", alpha=0.3, label=f"random directions (n={len(r)})")
    if shuffled_aurocs is not None:
        s = np.asarray(shuffled_aurocs)
        ax.fill_between(
            layers, s.min(0), s.max(0), color="tab:purple", alpha=0.25, label=f"shuffled-label axes (n={len(s)})"
        )
    if split_mean is not None:
        m, sd = np.asarray(split_mean), np.asarray(split_std)
        ax.plot(layers, m, color="tab:green", lw=1.2, label="construction splits 35/15 (mean ± sd)")
        ax.fill_between(layers, m - sd, m + sd, color="tab:green", alpha=0.15)
    if mean_level is not None:
        ax.plot(layers, mean_level, color="tab:orange", lw=1, ls="--", label="paper-style mean-level metric")
    if position_matched is not None:
        ax.plot(layers, position_matched, color="tab:red", lw=1.2, ls="-.", label="value axis, position-matched AUROC")
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
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, save_to)


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
