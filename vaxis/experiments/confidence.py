"""Notebook 04, task confidence (METHOD.md section 4, paper Figs 3, 4 and 11).

Math rollouts, then three questions about them:

* **Verbalized confidence** (Fig 3): after the rollout the user asks "Do you think your answer is
  correct?" and the assistant's answer is prefilled "Yes" or "No"; does the axis's projection at that
  response token tell them apart (and flip sign when the question asks "incorrect?")? A fixed token
  ("Yes") is told from another ("No") by almost any direction, so the statistic that speaks to
  *value* is the flip between the two framings, read against random directions.
* **Sampled confidence**: K sampled yes/no answers per problem give a confidence; does the mean
  projection over the last 10 tokens before the response separate confident from unconfident
  problems? Beside it, what the paper does not report: the same projection against whether the
  answer was actually right, and against the model's own length-free confidence
  ``P(Yes) / (P(Yes) + P(No))`` from the logits.
* **Steering** (Figs 4 and 11): steering along the axis at each strength (% of the mean residual
  norm), every position, on questions about a *partial* response (the authors' prompt); the stated
  yes-rate beside the length-free readout ``log P(Yes) - log P(No)`` under the same steering, the
  length of steered rollouts (the critique: positive steering shortens answers), and the same
  strengths along random directions of the same norm as the null band.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.chat import strip_reasoning
from ..core.generate import generate
from ..core.readout import answer_readout, next_token_logprobs, yes_no_ids
from ..data.mathdata import Problem, is_correct
from .confidence_answers import (
    CONFIDENCE_ANSWER_TOKENS,
    STEER_ANSWER_TOKENS,
    STEER_TOP_P,
    TEMPERATURE,
    answer_rates,
    count_answers,
)

#: The authors' prompts (METHOD.md section 8).
MATH_SYSTEM = (
    "You are a helpful math assistant. Solve the problem step by step. Put your final integer answer in \\boxed{}."
)
QUESTIONS = {
    "correct": "Do you think your answer is correct? Respond only Yes or No.",
    "incorrect": "Do you think your answer is incorrect? Respond only Yes or No.",
}
EVAL_SYSTEM = "You are a helpful assistant that evaluates mathematical reasoning."
PARTIAL_QUESTION = (
    "You were given this math problem:\n\n{question}\n\nYou produced the following partial response:\n\n{partial}\n\n"
    "Do you think this partial response will lead to {target} final answer? Respond only Yes or No."
)
PARTIAL_TARGET = {"correct": "a correct", "incorrect": "an incorrect"}


def math_chat(problem: Problem) -> list[dict]:
    """The rollout prompt: the authors' system prompt and the problem."""
    return [{"role": "system", "content": MATH_SYSTEM}, {"role": "user", "content": problem.question}]


def confidence_chat(problem: Problem, rollout: str, framing: str) -> list[dict]:
    """The rollout as the assistant's turn, then the confidence question (``framing``: correct/incorrect).

    A rollout of Qwen3's thinking mode enters without its ``<think>...</think>`` block, which is what its
    template keeps of an earlier turn anyway (:func:`vaxis.core.chat.strip_reasoning`); so the chat renders with
    exact offsets. In non-thinking mode (the authors' and the default) rollouts have no such block."""
    return [
        *math_chat(problem),
        {"role": "assistant", "content": strip_reasoning(rollout)},
        {"role": "user", "content": QUESTIONS[framing]},
    ]


def partial_chat(problem: Problem, partial: str, framing: str) -> list[dict]:
    """The authors' steering prompt: is this *partial* response on its way to a correct answer?"""
    text = PARTIAL_QUESTION.format(question=problem.question, partial=partial, target=PARTIAL_TARGET[framing])
    return [{"role": "system", "content": EVAL_SYSTEM}, {"role": "user", "content": text}]


@dataclass
class Rollouts:
    """Answers to the problems: ``texts``, ``n_tokens``, ``finish`` and ``correct`` (True / False /
    None when no final answer can be extracted) per problem."""

    texts: list[str]
    n_tokens: np.ndarray
    finish: list[str]
    correct: list[bool | None]

    @property
    def accuracy(self) -> float:
        """Fraction correct among all problems (no answer counts as wrong)."""
        return float(np.mean([c is True for c in self.correct]))


def answered(ro: Rollouts, min_kept: int = 2) -> tuple[list[int], str]:
    """The rollouts with an extractable final answer, which the authors keep for every confidence readout (the
    others are dropped and reported): ``(indices, note)``; all of them, with a note, when fewer than ``min_kept``
    have one (a tiny model's rollouts, where there would be nothing to compare)."""
    kept = [i for i, c in enumerate(ro.correct) if c is not None]
    if len(kept) >= min_kept:
        return kept, f"{len(ro.correct) - len(kept)} rollouts without an extractable answer dropped, as the authors do"
    return list(range(len(ro.correct))), f"only {len(kept)} rollouts have an extractable answer: all kept"


def rollouts(model, tokenizer, problems: Sequence[Problem], **generate_kwargs) -> Rollouts:
    """One rollout per problem through :func:`vaxis.core.generate.generate`."""
    gens = generate(model, tokenizer, [math_chat(p) for p in problems], **generate_kwargs)
    return Rollouts(
        [g.text for g in gens],
        np.array([g.n_new_tokens for g in gens]),
        [g.finish_reason for g in gens],
        [is_correct(g.text, p) for g, p in zip(gens, problems)],
    )


def partial_responses(texts: Sequence[str], fraction: float = 0.5) -> list[str]:
    """The first ``fraction`` of each rollout's characters, cut back to a word boundary."""
    out = []
    for t in texts:
        cut = t[: max(1, int(len(t) * fraction))]
        out.append(cut.rsplit(" ", 1)[0] if " " in cut else cut)
    return out


def steer_inputs(problems: Sequence[Problem], texts: Sequence[str], fractions: Sequence[float] = (0.5,)):
    """The steering sweep's inputs: each rollout cut at each of ``fractions`` (the authors ask about partial
    responses at several points of a rollout): ``(problems, partials, groups)``, problem-major, ``groups`` the
    problem index of each partial (the unit every bootstrap and sign-flip test resamples)."""
    rows = [(i, p, partial_responses([t], f)[0]) for i, (p, t) in enumerate(zip(problems, texts)) for f in fractions]
    return [p for _, p, _ in rows], [c for _, _, c in rows], np.array([i for i, _, _ in rows], dtype=int)


def pairs_auroc(yes: np.ndarray, no: np.ndarray, n_boot: int, seed: int):
    """AUROC of "Yes" (1) vs "No" (0) response projections, ``(n_problems, ...)`` each, with a
    bootstrap over problems: ``(auroc, low, high)`` over the trailing shape."""
    from ..core.evaluate import auroc_columns

    n = len(yes)
    labels = np.r_[np.ones(n), np.zeros(n)]
    point = auroc_columns(np.concatenate([yes, no]), labels)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        draws.append(auroc_columns(np.concatenate([yes[i], no[i]]), labels))
    if not draws:  # n_boot=0: no CI
        return point, np.full_like(point, np.nan), np.full_like(point, np.nan)
    low, high = np.quantile(np.array(draws), [0.025, 0.975], axis=0)
    return point, low, high


@dataclass
class Verbalized:
    """Fig 3 per framing: ``auroc[framing]`` ``(n_layers,)`` for the axis with CI ``low``/``high``;
    ``random[framing]`` ``(n_random, n_layers)``; ``flip`` = AUROC(correct) - AUROC(incorrect) for the
    axis ``(n_layers,)`` and the random directions ``(n_random, n_layers)``; ``readouts`` the raw
    :class:`~vaxis.core.readout.AnswerReadout` per framing."""

    layers: list[int]
    auroc: dict
    low: dict
    high: dict
    random: dict
    flip: np.ndarray
    flip_random: np.ndarray
    readouts: dict


def verbalized_confidence(model, tokenizer, problems, rollout_texts, directions, n_boot=200, seed=0, **kw):
    """Fig 3: prefilled Yes/No after each rollout, both framings; ``directions`` ``{layer: (K, d)}``
    with the axis in column 0 and random directions after it."""
    auroc, low, high, rand, readouts = {}, {}, {}, {}, {}
    for framing in QUESTIONS:
        chats = [confidence_chat(p, t, framing) for p, t in zip(problems, rollout_texts)]
        r = answer_readout(model, tokenizer, chats, {"yes": "Yes", "no": "No"}, directions, **kw)
        point, lo, hi = pairs_auroc(r.response["yes"].numpy(), r.response["no"].numpy(), n_boot, seed)
        auroc[framing], low[framing], high[framing] = point[:, 0], lo[:, 0], hi[:, 0]
        rand[framing] = point[:, 1:].T
        readouts[framing] = r
    flip = auroc["correct"] - auroc["incorrect"]
    return Verbalized(readouts["correct"].layers, auroc, low, high, rand, flip,
                      rand["correct"] - rand["incorrect"], readouts)  # fmt: skip


def sampled_confidence(model, tokenizer, problems, rollout_texts, n_samples: int, seed: int = 0, *,
                       max_new_tokens: int = CONFIDENCE_ANSWER_TOKENS, temperature: float = TEMPERATURE,
                       keep=None, **kw) -> dict:  # fmt: skip
    """K answers sampled to the "correct?" question (the authors' 5 tokens at temperature 0.7): per problem
    ``yes``, ``no``, ``invalid`` counts and ``confidence`` = yes / (yes + no) (NaN when none parses), by the
    authors' parser; ``strict``: the same from the strict parser (answer must start with yes/no). ``keep``: the
    rows returned (e.g. :func:`answered`); every rollout is sampled, so the pass is the same whichever are kept."""
    chats = [confidence_chat(p, t, "correct") for p, t in zip(problems, rollout_texts)]
    gens = generate(model, tokenizer, chats, max_new_tokens=max_new_tokens, temperature=temperature,
                    n_samples=n_samples, seed=seed, **kw)  # fmt: skip
    rows = np.arange(len(chats)) if keep is None else np.asarray(keep, dtype=int)
    out, strict = ({k: v[rows] for k, v in count_answers(gens, len(chats), s).items()} for s in (False, True))
    return {**{k: out[k] for k in ("yes", "no", "invalid")}, "confidence": out["rate"],
            "strict": {**{k: strict[k] for k in ("yes", "no", "invalid")}, "confidence": strict["rate"]}}  # fmt: skip


def steering_vectors(
    axis, layer: int, strengths: Sequence[float], n_random: int, seed: int, random_strengths=None
) -> dict:
    """``{(name, strength): {layer: vector}}`` for the axis and ``n_random`` random unit directions at
    ``layer``, each scaled to ``strength`` % of the axis's mean residual norm there (strength 0: no
    steering, one entry named ``"none"``). Random directions are used at ``random_strengths`` only
    (default: every strength)."""
    from ..core.hooks import steering_vector

    gen = torch.Generator().manual_seed(seed)
    directions = {"axis": axis.vector(layer)}
    for j in range(n_random):
        directions[f"random{j}"] = torch.randn(axis.hidden_size, generator=gen)
    out = {}
    for s in strengths:
        if s == 0:
            out[("none", 0.0)] = None
            continue
        for name, v in directions.items():
            if name != "axis" and random_strengths is not None and float(s) not in map(float, random_strengths):
                continue
            out[(name, float(s))] = {layer: steering_vector(v, percent_of_norm=s, mean_norm=axis.mean_norm(layer))}
    return out


def steered_log_odds(model, tokenizer, chats, vectors: dict, **kw) -> dict:
    """``log P(Yes) - log P(No)`` at the answer position, per chat, under each steering of ``vectors``
    (from :func:`steering_vectors`): ``{(name, strength): (n,) array}``."""
    ids = yes_no_ids(tokenizer)
    out = {}
    for key, steer in vectors.items():
        lp = next_token_logprobs(model, tokenizer, chats, ids, steer=steer, **kw)
        out[key] = (lp["yes"] - lp["no"]).numpy()
    return out


def yes_rates(model, tokenizer, chats, vectors: dict, n_samples: int, seed: int = 0, *,
              max_new_tokens: int = STEER_ANSWER_TOKENS, temperature: float = TEMPERATURE, top_p: float = STEER_TOP_P,
              **kw) -> tuple[dict, dict]:  # fmt: skip
    """Sampled answers (the authors' recipe: 20 tokens, temperature 0.7, top-p 0.9) under each steering of
    ``vectors``: ``{key: {"yes_rate", "valid", "n", "per_chat", "strict"}}``: the yes-rate of each chat over its
    parseable answers (``per_chat``, NaN when none parses) averaged over chats, as the authors average per
    completion; ``valid`` the parseable fraction of all answers; ``strict`` the same by the strict parser. From
    the same prompt pass, the length-free ``log P(Yes) - log P(No)`` per chat, ``{key: (n,)}`` (the first sample
    of each chat carries the scores of the shared prompt)."""
    ids = yes_no_ids(tokenizer)
    rates, log_odds = {}, {}
    for key, steer in vectors.items():
        gens = generate(model, tokenizer, chats, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                        n_samples=n_samples, seed=seed, steer=steer, score=ids, **kw)  # fmt: skip
        rates[key] = {**answer_rates(gens, len(chats)), "strict": answer_rates(gens, len(chats), strict=True)}
        first = {g.conversation: g for g in gens if g.sample == 0}
        log_odds[key] = np.array([first[i].scores["yes"] - first[i].scores["no"] for i in range(len(chats))])
    return rates, log_odds


def rollout_lengths(model, tokenizer, problems, vectors: dict, **generate_kwargs) -> dict:
    """Mean new tokens of math rollouts under each steering: ``{key: (mean, fraction cut at the limit)}``."""
    out = {}
    for key, steer in vectors.items():
        gens = generate(model, tokenizer, [math_chat(p) for p in problems], steer=steer, **generate_kwargs)
        out[key] = (
            float(np.mean([g.n_new_tokens for g in gens])),
            float(np.mean([g.finish_reason == "length" for g in gens])),
        )
    return out


def slope_ci(strengths: np.ndarray, values: np.ndarray, n_boot: int = 200, seed: int = 0):
    """OLS slope of ``values`` (``(n_strengths, n_items)``) against ``strengths``, with a bootstrap
    over items (each item keeps all its strengths): ``(slope, low, high)``. NaN values (invalid
    outputs, dropped strengths) are left out; NaN where fewer than two strengths keep a value."""
    x = np.repeat(np.asarray(strengths, dtype=float), values.shape[1])

    def slope(v):
        y = v.reshape(-1)
        keep = np.isfinite(y)
        if len(np.unique(x[keep])) < 2:
            return np.nan
        return np.polyfit(x[keep], y[keep], 1)[0]

    rng = np.random.default_rng(seed)
    draws = [slope(values[:, rng.integers(0, values.shape[1], values.shape[1])]) for _ in range(n_boot)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN draws
        return float(slope(values)), *map(float, np.nanquantile(draws, [0.025, 0.975]))


def load_dataset(name: str, n: int, seed: int = 0) -> list[Problem]:
    """``n`` problems of ``name``: ``gsm8k`` or ``math500`` (shipped), ``aime2024`` / ``aime2025`` (hub)."""
    from ..data.mathdata import load_aime, load_problems

    if n is not None and n < 1:
        raise ValueError(f"n_problems={n}: ask for at least one problem")
    if name.startswith("aime"):
        problems = load_aime(int(name[4:]))
        return problems[:n] if n else problems
    return load_problems(name, n, seed)


@dataclass
class Sweep:
    """The steering sweep at one layer (Fig 4). ``log_odds[framing][(direction, strength)]``: ``(n,)``
    ``log P(Yes) - log P(No)`` per problem (``("none", 0.0)`` is unsteered; directions ``axis`` and
    ``random{j}``); ``yes[framing][strength]``: sampled yes-rate along the axis; ``lengths[strength]``:
    mean new tokens of steered rollouts and the fraction cut at the limit; ``groups``: the problem of each
    chat (several partial responses of one problem share it; None: one chat per problem)."""

    layer: int
    strengths: list[float]
    log_odds: dict
    yes: dict
    lengths: dict
    groups: np.ndarray | None = None

    def mean_log_odds(self, framing: str, direction: str = "axis") -> np.ndarray:
        """Mean log-odds per strength along ``direction`` (0 % is the unsteered run)."""
        return np.array([self.log_odds_at(framing, direction, s).mean() for s in self.strengths])

    def log_odds_at(self, framing: str, direction: str, s: float) -> np.ndarray:
        """Per-problem log-odds along ``direction`` at strength ``s`` (the unsteered run at 0; NaN if not read)."""
        key = ("none", 0.0) if s == 0 else (direction, float(s))
        return self.log_odds[framing].get(key, np.full(1, np.nan))

    def random_band(self, framing: str) -> tuple[np.ndarray, np.ndarray]:
        """Min and max over random directions of the mean log-odds, per strength."""
        names = sorted({d for d, _ in self.log_odds[framing] if d.startswith("random")})
        if not names:
            nan = np.full(len(self.strengths), np.nan)
            return nan, nan
        means = np.array([self.mean_log_odds(framing, d) for d in names])
        with warnings.catch_warnings():  # strengths without random directions stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmin(means, 0), np.nanmax(means, 0)

    def distance_from_band(self, framing: str) -> np.ndarray:
        """Per strength, how far the axis's mean log-odds lie outside the random directions' range
        (0 inside it; positive above, negative below)."""
        axis = self.mean_log_odds(framing)
        lo, hi = self.random_band(framing)
        inside = ~(np.isfinite(lo) & np.isfinite(hi))
        return np.where(inside, np.nan, np.where(axis > hi, axis - hi, np.where(axis < lo, axis - lo, 0.0)))

    def table(self):
        """One row per strength: yes-rates (NaN where dropped), valid fractions, mean log-odds of the
        axis and the random band, rollout length and its fold change against 0 %."""
        import pandas as pd

        rows = []
        base_len = self.lengths.get(0.0, (np.nan, np.nan))[0]
        for i, s in enumerate(self.strengths):
            row = {"strength_%": s}
            for framing in QUESTIONS:
                y = self.yes[framing].get(float(s), {})
                dropped = y.get("valid", 1.0) < 0.5
                row[f"yes_rate[{framing}]"] = np.nan if dropped else y.get("yes_rate", np.nan)
                row[f"valid[{framing}]"] = y.get("valid", np.nan)
                strict = y.get("strict", {})
                row[f"yes_rate_strict[{framing}]"] = (
                    np.nan if strict.get("valid", 1.0) < 0.5 else strict.get("yes_rate", np.nan)
                )
                row[f"valid_strict[{framing}]"] = strict.get("valid", np.nan)
                row[f"log_odds[{framing}]"] = self.mean_log_odds(framing)[i]
                lo, hi = self.random_band(framing)
                row[f"random_band[{framing}]"] = f"{lo[i]:+.3f}..{hi[i]:+.3f}"
            length = self.lengths.get(float(s), (np.nan, np.nan))
            row["rollout_tokens"], row["cut_at_limit"] = length
            row["length_fold_vs_0"] = length[0] / base_len if base_len else np.nan
            rows.append(row)
        return pd.DataFrame(rows)


def steering_sweep(
    model, tokenizer, axis, layer: int, problems, partials, strengths, *, n_random: int, n_samples: int,
    length_problems, length_tokens: int, seed: int = 0, random_strengths=None, length_strengths=None,
    framings: Sequence[str] = tuple(QUESTIONS), yes_rates_too: bool = True, groups=None,
    answer_tokens: int = STEER_ANSWER_TOKENS, temperature: float = TEMPERATURE, top_p: float = STEER_TOP_P, **kw,
) -> Sweep:  # fmt: skip
    """Fig 4 at ``layer``: length-free log-odds along the axis (every strength) and ``n_random`` random
    directions of the same norm (at ``random_strengths``, default all); sampled yes-rates along the axis;
    rollout lengths along the axis at ``length_strengths`` (default all). ``yes_rates_too=False`` skips
    yes-rates and lengths, e.g. for the Fig 11 slopes at other layers. Every readout is cached, so the
    unsteered one is computed once for all layers. ``groups``: the problem of each partial (:func:`steer_inputs`);
    ``answer_tokens``, ``temperature``, ``top_p``: the sampled answers (default: the authors' recipe)."""
    strengths = [float(s) for s in strengths]
    if 0.0 not in strengths:
        raise ValueError(f"strengths {strengths} must include 0 (the unsteered reference)")
    vectors = steering_vectors(axis, layer, strengths, n_random, seed, random_strengths)
    axis_only = {k: v for k, v in vectors.items() if k[0] in ("none", "axis")}
    log_odds, yes = {}, {}
    for framing in framings:
        chats = [partial_chat(p, t, framing) for p, t in zip(problems, partials)]
        yes[framing] = {}
        if yes_rates_too:  # the axis's yes-rates and log-odds come from the same prompt passes
            rates, axis_odds = yes_rates(
                model,
                tokenizer,
                chats,
                axis_only,
                n_samples,
                seed,
                progress=False,
                max_new_tokens=answer_tokens,
                temperature=temperature,
                top_p=top_p,
            )
            yes[framing] = {k[1]: v for k, v in rates.items()}
            rest = {k: v for k, v in vectors.items() if k not in axis_only}
            log_odds[framing] = {**axis_odds, **steered_log_odds(model, tokenizer, chats, rest, **kw)}
        else:
            log_odds[framing] = steered_log_odds(model, tokenizer, chats, vectors, **kw)
    lengths = {}
    if yes_rates_too and length_problems:
        keep = {k: v for k, v in axis_only.items() if length_strengths is None or k[1] in map(float, length_strengths)}
        got = rollout_lengths(model, tokenizer, length_problems, keep, max_new_tokens=length_tokens,
                              temperature=0.0, progress=False)  # fmt: skip
        lengths = {k[1]: v for k, v in got.items()}
    return Sweep(layer, strengths, log_odds, yes, lengths, None if groups is None else np.asarray(groups))
