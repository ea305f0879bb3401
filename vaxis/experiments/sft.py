"""Notebook 08: does supervised fine-tuning on a task raise the value the model assigns to answers in
that task, and only there (METHOD.md section 6, the SFT result)?

Adapters are trained with TRL's ``SFTTrainer`` (:func:`vaxis.core.train.train_adapter`, prompt-completion rows,
loss on the completion only) on an 80 % split of GSM8K and, separately, of ARC-Challenge, plus a
**control** adapter trained the same way on an unrelated task (giving a Wikipedia paragraph its title,
``data/paragraphs.jsonl``). Every model is read on the held-out 20 % of each set and on MATH-500: the
mean projection over the reference answer's tokens, prefilled as the assistant's turn (GSM8K and MATH-500:
the reference solution; ARC: "The answer is C: ..."), with the trained - base delta per item and a CI
over items; random directions read in the same pass are the null. Accuracy of greedy answers sits
beside it (GSM8K: the final number; ARC: the letter), on held-out items only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.evaluate import mean_ci

DATASETS = ("gsm8k", "arc", "math500")
MATH_SYSTEM = "You are a helpful assistant. Solve the problem step by step and give the final answer."
ARC_SYSTEM = "You are a helpful assistant. Answer the multiple-choice question."
TITLE_PROMPT = "Give this paragraph a short title.\n\n{text}"
_CALC = re.compile(r"<<[^>]*>>")


@dataclass(frozen=True)
class Item:
    """One question: the prompt messages, the reference answer, and what grades a free answer."""

    id: str
    dataset: str
    messages: tuple
    reference: str
    source: object  # the Problem / ArcQuestion, for grading

    def chat(self, answer: str | None = None) -> list[dict]:
        msgs = [dict(m) for m in self.messages]
        return msgs + ([{"role": "assistant", "content": answer}] if answer is not None else [])


def gsm8k_reference(solution: str) -> str:
    """A GSM8K solution as an answer: calculator annotations ``<<...>>`` removed and the final
    ``#### N`` line written as "The answer is N."."""
    text = _CALC.sub("", solution)
    return re.sub(r"\n?####\s*(.+)\s*$", lambda m: f"\nThe answer is {m.group(1).strip()}.", text).strip()


def load_items(dataset: str, n: int | None, seed: int = 0) -> list[Item]:
    """``n`` items of ``gsm8k``, ``arc`` or ``math500`` (all shipped), seeded."""
    if dataset == "arc":
        from ..data.arcdata import format_question, load_arc

        return [Item(q.id, "arc", ({"role": "system", "content": ARC_SYSTEM},
                                    {"role": "user", "content": format_question(q)}), q.solution, q)
                for q in load_arc(n, seed)]  # fmt: skip
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    from ..data.mathdata import load_problems

    out = []
    for p in load_problems(dataset, n, seed):
        ref = gsm8k_reference(p.solution) if dataset == "gsm8k" else p.solution
        msgs = ({"role": "system", "content": MATH_SYSTEM}, {"role": "user", "content": p.question})
        out.append(Item(p.id, dataset, msgs, ref, p))
    return out


def split(items: Sequence[Item], eval_fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """A seeded (train, held-out) split; ValueError when either side would be empty."""
    from ..data.arcdata import split_indices

    train, held = split_indices(len(items), eval_fraction, seed)
    return [items[i] for i in train], [items[i] for i in held]


def sft_rows(items: Sequence[Item]) -> list[dict]:
    """TRL prompt-completion rows: the question as the prompt, the reference as the completion."""
    return [{"prompt": it.chat(), "completion": [{"role": "assistant", "content": it.reference}], "id": it.id}
            for it in items]  # fmt: skip


def control_rows(n: int, seed: int = 0) -> list[dict]:
    """An unrelated task for the control adapter: a Wikipedia paragraph -> its title (``n`` rows)."""
    from ..data.icrl.paragraphs import load_paragraphs

    paragraphs = load_paragraphs()
    pick = np.random.default_rng(seed).choice(len(paragraphs), size=min(n, len(paragraphs)), replace=False)
    return [{"prompt": [{"role": "user", "content": TITLE_PROMPT.format(text=paragraphs[i]["text"])}],
             "completion": [{"role": "assistant", "content": paragraphs[i]["title"]}], "id": paragraphs[i]["id"]}
            for i in sorted(pick)]  # fmt: skip


def reference_projections(model, tokenizer, items: Sequence[Item], directions: dict, **extract_kwargs) -> np.ndarray:
    """Mean per-token cosine over each item's prefilled reference answer: ``(n, n_layers, K)``."""
    from ..core.extract import extract

    chats = [it.chat(it.reference) for it in items]
    spans = [{"answer": [(len(it.messages), 0, len(it.reference))]} for it in items]
    stats = extract(model, tokenizer, chats, spans, layers=sorted(directions), directions=directions, **extract_kwargs)
    return np.stack([p.numpy().mean(0) for p in stats.projections["answer"]])


def accuracy(model, tokenizer, items: Sequence[Item], max_new_tokens: int, **generate_kwargs) -> np.ndarray:
    """Greedy free answers graded against the source: ``1.0`` right, ``0.0`` wrong, NaN unparseable."""
    from ..core.generate import generate
    from ..data.arcdata import is_correct as arc_correct
    from ..data.mathdata import is_correct as math_correct

    gens = generate(model, tokenizer, [it.chat() for it in items], max_new_tokens=max_new_tokens, **generate_kwargs)
    out = []
    for it, g in zip(items, gens):
        ok = arc_correct(g.text, it.source) if it.dataset == "arc" else math_correct(g.text, it.source)
        out.append(np.nan if ok is None else float(ok))
    return np.array(out)


def deltas_table(proj: dict, li: int, n_boot: int = 200, seed: int = 0):
    """``proj[model][dataset]``: ``(n, n_layers, K)`` for the same items across models (``"base"``
    among them). One row per (model, dataset): the mean trained - base delta along the axis (column 0)
    with a CI over items, the base projection, and the random directions' deltas (columns 1..K-1:
    median and 95 % range)."""
    import pandas as pd

    rows = []
    for name, per in proj.items():
        if name == "base":
            continue
        for ds, p in per.items():
            if p.shape != proj["base"][ds].shape:
                raise ValueError(f"{name} on {ds}: {p.shape} projections vs the base model's {proj['base'][ds].shape}; "
                                 "every model must read the same items")  # fmt: skip
            d = p[:, li] - proj["base"][ds][:, li]  # (n, K)
            m, lo, hi = mean_ci(d[:, 0], n_boot, seed)
            rand = d[:, 1:].mean(0)
            rows.append({
                "model": name, "dataset": ds, "n": len(d), "delta": m, "delta_low": lo, "delta_high": hi,
                "base_projection": float(proj["base"][ds][:, li, 0].mean()),
                "random_delta_median": float(np.median(rand)) if len(rand) else np.nan,
                "random_delta_2.5%": float(np.quantile(rand, 0.025)) if len(rand) else np.nan,
                "random_delta_97.5%": float(np.quantile(rand, 0.975)) if len(rand) else np.nan,
            })  # fmt: skip
    return pd.DataFrame(rows)


def check_parameters(cfg, *, axis_path=None, control=True, n_boot=200, **common) -> list[str]:
    """Notebook 08's parameters, before any adapter is trained (:mod:`vaxis.run.checks`): ``sft_datasets``, ``control``,
    ``n_boot``, the axis, ``sft_items`` (0: all; no more than GSM8K and ARC each have, both being read) with
    ``sft_eval_fraction`` (both sides non-empty), ``sft_other_items`` (MATH-500), the fine-tune, the control rows
    and accuracy items (caps, noted), the readouts. Raises :class:`vaxis.run.checks.ParameterError`; returns notes."""
    from ..data.arcdata import load_arc, split_indices
    from ..data.icrl.paragraphs import load_paragraphs
    from ..data.mathdata import load_problems
    from ..run.checks import Problems

    p = Problems.for_notebook(8, cfg, **common)
    names = p.items("sft_datasets", cfg["sft_datasets"])
    if names is not None and (set(names) - {"gsm8k", "arc"} or len(set(names)) < len(names)):
        p.add(f"sft_datasets={names}: fine-tune on 'gsm8k' and/or 'arc', each once")
    p.flag("control", control)
    p.integer("n_boot", n_boot, 1)
    p.axis(axis_path)
    sizes = {"gsm8k": len(load_problems("gsm8k")), "arc": len(load_arc()), "math500": len(load_problems("math500"))}
    n, fraction = cfg["sft_items"], cfg["sft_eval_fraction"]
    held = {}
    if p.integer("sft_items", n, 0, fix=" (0: every item)") and p.fraction("sft_eval_fraction", fraction):
        for ds in ("gsm8k", "arc"):
            if p.enough("sft_items", n, sizes[ds], f"{ds} items ship"):
                split = p.attempt(f"sft_items={n}, sft_eval_fraction={fraction} ({ds})", split_indices,
                                  n or sizes[ds], fraction, cfg.seed)  # fmt: skip
                held[ds] = None if split is None else len(split[1])
    if p.integer("sft_other_items", cfg["sft_other_items"], 0, fix=" (0: every MATH-500 item)"):
        p.enough("sft_other_items", cfg["sft_other_items"], sizes["math500"], "MATH-500 items ship")
    p.training("sft", cfg)
    if p.integer("sft_control_rows", cfg["sft_control_rows"], 1):
        p.cap("sft_control_rows", cfg["sft_control_rows"], len(load_paragraphs()), "paragraphs for the control task")
    if p.integer("sft_accuracy_items", cfg["sft_accuracy_items"], 1):
        for ds, k in held.items():
            if k is not None:
                p.cap("sft_accuracy_items", cfg["sft_accuracy_items"], k, f"held-out {ds} items")
    for key in ("sft_random_directions", "sft_math_tokens", "sft_arc_tokens"):
        p.integer(key, cfg[key], 0 if key == "sft_random_directions" else 1)
    return p.done()
