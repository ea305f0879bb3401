"""Notebook 09 (in the wild) building blocks: which prompts get low value (METHOD.md section 6).

* :func:`prompt_projections`: each user prompt rendered with the assistant header (as the model sees it
  right before answering); the projection of the rendered prompt's last token (the paper's "last token
  before generation", often the header's closing newline), at every layer, through :func:`vaxis.extract`.
* :func:`quartile_table`: each category's share of the top and of the bottom quartile of the
  projections, with bootstrap CIs over prompts and a permutation p-value (category labels shuffled) for
  top share minus bottom share.
* :func:`length_residuals`: the projection with prompt length (log tokens) regressed out, so the same
  table can be read with length explained away.
* :func:`association_null`: Cramér's V of category x quartile along the axis against the V of the random
  directions read in the same pass (a p-value on the paper's side, high V), since the residual stream sorts
  prompt categories along any direction and a chi-square p along one direction cannot tell them apart.

Evaluation awareness reuses :func:`vaxis.experiments.coding.effects` (Cohen's d with CIs over paired
items) on the same prompts wrapped in evaluation-style and deployment-style contexts.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import numpy as np


def fit_to_context(tokenizer, prompts: Sequence[str], max_tokens: int, chat_template_kwargs: dict | None = None):
    """``(prompts, n_truncated)``: each prompt whose rendered chat (user turn plus assistant header) would
    exceed ``max_tokens`` loses tokens from its *left* (the end of a prompt, where the question usually
    is, is kept) until it fits; the count is returned so the notebook can report it."""
    from ..core.chat import render_chat

    kw = chat_template_kwargs or {}
    overhead = len(tokenizer(render_chat(tokenizer, [{"role": "user", "content": "x"}], True, **kw).text,
                             add_special_tokens=False)["input_ids"]) - 1  # fmt: skip
    room = max_tokens - overhead - 2  # 2 tokens of slack for merges at the cut
    if room < 8:
        raise ValueError(f"max_tokens={max_tokens} leaves no room for a prompt after the chat template's "
                         f"{overhead} tokens; pass a larger context")  # fmt: skip
    out, n = [], 0
    for p in prompts:
        ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        if len(ids) > room:
            p, n = tokenizer.decode(ids[-room:]), n + 1
        out.append(p)
    return out, n


def prompt_projections(
    model,
    tokenizer,
    prompts: Sequence[str],
    directions: dict,
    chunk_size: int = 2048,
    chat_template_kwargs: dict | None = None,
    **extract_kwargs,
):
    """``(projections, n_tokens)``: ``(n, n_layers, K)`` cosines at the last token of each rendered prompt
    (user turn plus assistant header), and each rendered prompt's length in tokens.

    The prompts go through :func:`vaxis.extract` ``chunk_size`` at a time, so memory stays bounded for any
    number of prompts (55K Arena prompts) and, extraction being cached per chunk, an interrupted run
    resumes at the first chunk not yet done."""
    from ..core.chat import render_chat
    from ..core.extract import extract

    kw = chat_template_kwargs or {}
    proj, lengths = [], []
    for lo in range(0, len(prompts), chunk_size):
        texts, spans = [], []
        for p in prompts[lo : lo + chunk_size]:
            r = render_chat(tokenizer, [{"role": "user", "content": p}], add_generation_prompt=True, **kw)
            texts.append(r.text)
            spans.append({"header": [(r.message_spans[0][1], len(r.text))]})
        stats = extract(model, tokenizer, texts, spans, layers=sorted(directions), directions=directions,
                        **extract_kwargs)  # fmt: skip
        empty = [lo + i for i, c in enumerate(stats.counts["header"].tolist()) if c == 0]
        if empty:
            raise ValueError(f"prompts {empty[:5]} have no readable token after the user turn: does the chat "
                             "template add an assistant header?")  # fmt: skip
        proj.append(np.stack([p.numpy()[-1] for p in stats.projections["header"]]))
        lengths.append(stats.text_lengths.numpy())
    return np.concatenate(proj), np.concatenate(lengths)


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


def share_gaps(scores: np.ndarray, categories: Sequence[str]) -> dict[str, np.ndarray]:
    """Top-quartile share minus bottom-quartile share of each category, for every column of ``scores``
    (``(n,)`` or ``(n, K)``): ``{category: (K,)}``. Same quartile rule as :func:`quartile_table`."""
    s = np.asarray(scores, dtype=float)
    s = s[:, None] if s.ndim == 1 else s
    cats = np.asarray(categories)
    top, bottom = s >= np.quantile(s, 0.75, axis=0), s <= np.quantile(s, 0.25, axis=0)
    out = {}
    for k in sorted(set(cats.tolist())):
        is_k = (cats == k)[:, None]
        out[k] = (is_k & top).sum(0) / top.sum(0) - (is_k & bottom).sum(0) / bottom.sum(0)
    return out


def category_effects(proj: np.ndarray, n_tokens: np.ndarray, categories: Sequence[str], n_boot: int = 200,
                     n_perm: int = 1000, seed: int = 0, alpha: float = 0.05):  # fmt: skip
    """The quartile table of the axis (column 0 of ``proj``, ``(n, K)`` at one layer) with its two
    confounds beside it: the same table after regressing prompt length out (``*_len`` columns) and the
    random directions' 95 % range of top - bottom share (columns 1.., read in the same pass). ``reading``
    says whether a category's effect is significant (permutation p < ``alpha``), beyond every random
    direction's range, and still there once length is explained away."""
    proj = np.asarray(proj, dtype=float)
    table = quartile_table(proj[:, 0], categories, n_boot, n_perm, seed)
    resid = quartile_table(length_residuals(proj[:, 0], n_tokens), categories, n_boot, n_perm, seed)
    resid = resid.set_index("category").loc[table["category"]].reset_index()
    table["gap"] = table["top_share"] - table["bottom_share"]
    table["gap_len"] = (resid["top_share"] - resid["bottom_share"]).to_numpy()
    table["p_len"] = resid["permutation_p"].to_numpy()
    rand = share_gaps(proj[:, 1:], categories) if proj.shape[1] > 1 else {}
    lo = [np.quantile(rand[k], 0.025) if k in rand else np.nan for k in table["category"]]
    hi = [np.quantile(rand[k], 0.975) if k in rand else np.nan for k in table["category"]]
    table["random_gap_2.5%"], table["random_gap_97.5%"] = lo, hi

    def reading(r):
        if r["permutation_p"] >= alpha:
            return "no effect"
        beyond = not np.isfinite(r["random_gap_2.5%"]) or not r["random_gap_2.5%"] <= r["gap"] <= r["random_gap_97.5%"]
        if not beyond:
            return "within the random band"
        if r["p_len"] >= alpha or np.sign(r["gap_len"]) != np.sign(r["gap"]):
            return "explained by length"
        return "beyond random, survives length"

    table["reading"] = table.apply(reading, axis=1)
    return table


def association(scores: np.ndarray, categories: Sequence[str]) -> dict:
    """How strongly category and quartile go together: a chi-square test of the category x (top, bottom)
    count table and its Cramér's V (0 = flat trends, as the paper reports for base models)."""
    from scipy.stats import chi2_contingency

    s = np.asarray(scores, dtype=float)
    cats = np.asarray(categories)
    names = sorted(set(cats.tolist()))
    top, bottom = s >= np.quantile(s, 0.75), s <= np.quantile(s, 0.25)
    counts = np.array([[np.sum(top & (cats == k)), np.sum(bottom & (cats == k))] for k in names])
    counts = counts[counts.sum(1) > 0]
    if len(counts) < 2:
        return {"chi2": np.nan, "p": np.nan, "cramers_v": np.nan, "n": int(counts.sum())}
    chi2, p, _, _ = chi2_contingency(counts)
    return {
        "chi2": float(chi2),
        "p": float(p),
        "cramers_v": float(np.sqrt(chi2 / counts.sum())),
        "n": int(counts.sum()),
    }


def association_null(scores: np.ndarray, categories: Sequence[str], level: float = 0.95, n_boot: int = 0,
                     seed: int = 0) -> dict:  # fmt: skip
    """Cramér's V of the axis (column 0 of ``scores``, ``(n, K)``) judged against the V of each random
    direction read in the same pass (columns 1..): a residual stream sorts prompt categories in any
    direction, so the chi-square p (category vs quartile along one direction) cannot say the axis sorts
    them more than a random direction does. The paper's side is high V (the post-trained model's value
    sorts categories). Returns :func:`association` of the axis plus ``random_v`` (the random directions'
    V), ``v_p`` (:func:`vaxis.core.nulls.claim_p`, one-sided), ``v_beyond``, ``random_v_range`` (median, low,
    high; NaN without random columns) and ``v_ci``, the axis V's bootstrap CI over prompts (``n_boot``
    resamples; NaN with 0)."""
    from ..core.nulls import beyond, claim_p, null_range

    s = np.asarray(scores, dtype=float)
    s = s[:, None] if s.ndim == 1 else s
    out = association(s[:, 0], categories)
    null = np.array([association(s[:, j], categories)["cramers_v"] for j in range(1, s.shape[1])])
    v = out["cramers_v"]
    rng, cats = np.random.default_rng(seed), np.asarray(categories)
    boots = [
        association(s[i, 0], cats[i])["cramers_v"] for i in (rng.integers(0, len(s), len(s)) for _ in range(n_boot))
    ]
    a = (1 - level) / 2
    ci = tuple(np.nanquantile(boots, [a, 1 - a]).tolist()) if n_boot else (np.nan, np.nan)
    out.update(random_v=null, v_p=claim_p(v, null, 1), v_beyond=beyond(v, null, 1, level),
               random_v_range=null_range(null, level), v_ci=ci)  # fmt: skip
    return out


def compare_models(scores: dict, categories: Sequence[str], focus: Sequence[str] = (), n_boot: int = 0, seed: int = 0):
    """One row per model (``scores[model]``: ``(n,)`` axis projections of the same prompts, or ``(n, K)``
    with random directions read in the same pass in columns 1..): the chi-square association of category
    and quartile along the axis, its Cramér's V against the random directions' (:func:`association_null`:
    ``v_p``, ``random_v_median`` / ``_2.5%`` / ``_97.5%``, ``n_random``; ``v_ci`` over ``n_boot`` resamples of
    prompts), and top - bottom share of each ``focus`` category along the axis."""
    import pandas as pd

    rows = []
    for name, s in scores.items():
        s = np.asarray(s, dtype=float)
        gaps = share_gaps(s[:, 0] if s.ndim == 2 else s, categories)
        a = association_null(s, categories, n_boot=n_boot, seed=seed)
        null, (med, lo, hi) = a.pop("random_v"), a.pop("random_v_range")
        row = {"model": name, **a, "random_v_median": med, "random_v_2.5%": lo, "random_v_97.5%": hi,
               "n_random": len(null)}  # fmt: skip
        row.update({f"gap {k}": float(gaps[k][0]) for k in focus if k in gaps})
        rows.append(row)
    return pd.DataFrame(rows)


def check_organism_keys(p, cfg, source, contexts_file=None) -> None:
    """Notebook 09's ``aware_*`` keys and ``contexts_file`` (organisations, distractors and org templates given),
    and whether :func:`vaxis.experiments.evalaware.organism_prompts` will take its prompts from the shipped set or
    fewer (noted). ``source``: the prompts file in use (``"shipped"``, ``"arena"`` or a path); ``p``: a
    :class:`vaxis.run.checks.Problems`."""
    from ..data.prompts import PROMPTS_FILE, load_contexts, read_prompts

    if contexts_file is not None and p.file("contexts_file", contexts_file) is None:
        return
    ctx = p.attempt("contexts_file", load_contexts, None if contexts_file is None else p.path(contexts_file))
    if ctx is not None:
        orgs = ctx.get("organisations") or {}
        if not {"evaluator", "control"} <= set(orgs) or not ctx.get("distractors") or not ctx.get("org_templates"):
            p.add(f"contexts_file={contexts_file!r}: the evaluation-awareness organism needs 'organisations' "
                  "(evaluator and control), 'distractors' and 'org_templates' (see data/prompts/contexts.json)")  # fmt: skip
    p.training("aware", cfg)
    n_train, n_eval = cfg["aware_train_prompts"], cfg["aware_eval_prompts"]
    fine = p.integer("aware_train_prompts", n_train, 1) & p.integer("aware_eval_prompts", n_eval, 2)
    if p.integer("aware_claim_prompts", cfg["aware_claim_prompts"], 1) and p.whole(n_eval):
        p.cap("aware_claim_prompts", cfg["aware_claim_prompts"], n_eval, "held-out prompts (aware_eval_prompts)")
    p.integer("aware_claim_tokens", cfg["aware_claim_tokens"], 1)
    if not fine:
        return
    shipped = len(read_prompts(PROMPTS_FILE))
    if source not in ("shipped", "arena") and p.path(source).is_file():
        have = len(read_prompts(p.path(source)))
        if have < n_train + n_eval:
            p.note(f"prompts_file has {have} prompts, fewer than the {n_train} training + {n_eval} held-out prompts "
                   "of the evaluation-awareness organism: it draws them from the shipped prompts")  # fmt: skip
    if n_train + n_eval > shipped:
        p.note(f"aware_train_prompts + aware_eval_prompts = {n_train + n_eval}, more than the {shipped} shipped "
               "prompts: the organism scales both down in proportion")  # fmt: skip


def check_parameters(cfg, *, axis_path=None, contexts_file=None, base_model=None, base_axis_path=None,
                     eval_awareness=True, n_boot=200, **common) -> list[str]:  # fmt: skip
    """Notebook 09's parameters, before the model is loaded (:mod:`vaxis.run.checks`): ``wild_prompts_file``
    (``"shipped"``, ``"arena"`` or a file in :func:`vaxis.data.prompts.read_prompts`'s schema), ``wild_prompts`` (0: all;
    a cap), the readouts, ``wild_adapters`` (names not found are noted), ``base_model`` / ``base_axis_path``, the axis,
    ``n_boot`` and, with ``eval_awareness``, :func:`check_organism_keys`. Raises
    :class:`vaxis.run.checks.ParameterError`; returns notes."""
    from ..core.hub import hub_offline
    from ..core.models import resolve
    from ..core.nulls import min_draws
    from ..core.train import finished_adapters
    from ..data.prompts import read_prompts
    from ..run.checks import Problems

    p = Problems.for_notebook(9, cfg, **common)
    p.axis(axis_path)
    p.integer("n_boot", n_boot, 1)
    source, prompts = cfg["wild_prompts_file"], None
    if source == "arena":
        if hub_offline(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")) or importlib.util.find_spec("datasets") is None:
            p.note("wild_prompts_file='arena': Chatbot Arena cannot be read here (offline, or no `datasets`), so the "
                   "shipped prompts are used")  # fmt: skip
    elif source == "shipped":
        prompts = read_prompts()
    elif not isinstance(source, str) or p.file("wild_prompts_file", source) is None:
        source = "shipped"
    else:
        prompts = p.attempt(f"wild_prompts_file={source!r}", read_prompts, p.path(source))
        source = source if prompts is not None else "shipped"
    n = cfg["wild_prompts"]
    if p.integer("wild_prompts", n, 0, fix=" (0: every prompt)") and 0 < n < 4:
        p.add(f"wild_prompts={n}: the quartile analysis needs 4 prompts or more (0: every prompt)")
    elif prompts is not None and p.whole(n):
        p.cap("wild_prompts", n, len(prompts), "prompts in the file")
    if (
        p.integer("wild_random_directions", cfg["wild_random_directions"], 1)
        and cfg["wild_random_directions"] < min_draws()
    ):
        p.note(f"wild_random_directions={cfg['wild_random_directions']}: fewer than {min_draws()} random directions, so "
               "the Cramér's V p-value against them cannot reach 0.05 and its verdict is not a 5% test")  # fmt: skip
    p.integer("wild_context_tokens", cfg["wild_context_tokens"], 16)
    p.integer("max_batch_tokens", cfg["max_batch_tokens"], 1)
    wanted = cfg["wild_adapters"]
    if not isinstance(wanted, (list, tuple)) or not all(isinstance(w, str) for w in wanted):
        p.add(f'wild_adapters={wanted!r}: give a list of adapter names, ["all"], or [] for none')
    elif "all" not in wanted and wanted and not {7, 8} & p.planned:
        found = finished_adapters(cfg.run_dir / "adapters", base_model=cfg.model)
        absent = [w for w in wanted if w not in found]
        if absent:
            p.note(f"wild_adapters: {absent} not found in {cfg.run_dir / 'adapters'} (notebooks 07-08 train them): "
                   "compared without them")  # fmt: skip
    if base_model is not None:
        p.attempt(f"base_model={base_model!r}", resolve, base_model)
    if base_axis_path is not None:
        p.axis(base_axis_path, "base_axis_path")
    if p.flag("eval_awareness", eval_awareness) and eval_awareness:
        check_organism_keys(p, cfg, source, contexts_file)
    return p.done()
