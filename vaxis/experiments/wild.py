"""Notebook 09 (in the wild) building blocks: which prompts get low value (METHOD.md section 6).

* :func:`prompt_projections`: each user prompt rendered with the assistant header (as the model sees it
  right before answering); the projection of the rendered prompt's last token (the paper's "last token
  before generation", often the header's closing newline), at every layer, through :func:`vaxis.extract`.
* :func:`quartile_table`: each category's share of the top and of the bottom quartile of the
  projections, with bootstrap CIs over prompts and a permutation p-value (category labels shuffled) for
  top share minus bottom share.
* :func:`length_residuals`: the projection with prompt length (log tokens) regressed out, so the same
  table can be read with length explained away.

Evaluation awareness reuses :func:`vaxis.experiments.coding.effects` (Cohen's d with CIs over paired
items) on the same prompts wrapped in evaluation-style and deployment-style contexts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def prompt_projections(model, tokenizer, prompts: Sequence[str], directions: dict, **extract_kwargs):
    """``(projections, n_tokens)``: ``(n, n_layers, K)`` cosines at the last token of each rendered prompt
    (user turn plus assistant header), and each rendered prompt's length in tokens."""
    from ..chat import render_chat
    from ..extract import extract

    texts, spans = [], []
    for p in prompts:
        r = render_chat(tokenizer, [{"role": "user", "content": p}], add_generation_prompt=True)
        texts.append(r.text)
        spans.append({"header": [(r.message_spans[0][1], len(r.text))]})
    stats = extract(model, tokenizer, texts, spans, layers=sorted(directions), directions=directions, **extract_kwargs)
    empty = [i for i, c in enumerate(stats.counts["header"].tolist()) if c == 0]
    if empty:
        raise ValueError(f"prompts {empty[:5]} have no readable token after the user turn: does the chat template "
                         "add an assistant header?")  # fmt: skip
    proj = np.stack([p.numpy()[-1] for p in stats.projections["header"]])
    return proj, stats.text_lengths.numpy()


def quartile_table(scores: np.ndarray, categories: Sequence[str], n_boot: int = 200, n_perm: int = 1000, seed: int = 0):
    """Per category: prompts, share of the top and of the bottom quartile (CIs over prompts), and a
    two-sided permutation p for top share - bottom share. Ties at a quartile edge count on the inside."""
    import pandas as pd

    scores = np.asarray(scores, dtype=float)
    cats = np.asarray(categories)
    names = sorted(set(cats.tolist()))
    rng = np.random.default_rng(seed)

    def shares(s, c):
        top, bottom = s >= np.quantile(s, 0.75), s <= np.quantile(s, 0.25)
        return {k: ((c[top] == k).mean(), (c[bottom] == k).mean()) for k in names}

    real = shares(scores, cats)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(scores), len(scores))
        boots.append(shares(scores[i], cats[i]))
    perm = [shares(scores, rng.permutation(cats)) for _ in range(n_perm)]
    rows = []
    for k in names:
        top, bottom = real[k]
        tb = np.array([b[k] for b in boots]) if boots else np.full((1, 2), np.nan)
        diff = np.array([p[k][0] - p[k][1] for p in perm])
        p = (1 + np.sum(np.abs(diff) >= abs(top - bottom) - 1e-12)) / (1 + len(diff))
        rows.append({"category": k, "n": int((cats == k).sum()), "top_share": top,
                     "top_ci": tuple(np.quantile(tb[:, 0], [0.025, 0.975])), "bottom_share": bottom,
                     "bottom_ci": tuple(np.quantile(tb[:, 1], [0.025, 0.975])), "permutation_p": float(p)})  # fmt: skip
    return pd.DataFrame(rows).sort_values("top_share", ascending=False, ignore_index=True)


def length_residuals(scores: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
    """``scores`` minus their OLS fit on ``log(n_tokens)`` (with an intercept): what length does not explain."""
    from sklearn.linear_model import LinearRegression

    x = np.log(np.asarray(n_tokens, dtype=float)).reshape(-1, 1)
    y = np.asarray(scores, dtype=float)
    return y - LinearRegression().fit(x, y).predict(x)


def extremes(scores: np.ndarray, prompts: Sequence, k: int = 10):
    """The ``k`` highest and lowest prompts: ``(top, bottom)`` lists of ``(score, prompt)``."""
    order = np.argsort(scores)
    top = [(float(scores[i]), prompts[i]) for i in order[::-1][:k]]
    bottom = [(float(scores[i]), prompts[i]) for i in order[:k]]
    return top, bottom
