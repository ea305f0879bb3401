"""Notebook 06: what the axis reads in code, and what steering it changes (METHOD.md section 4, Fig 4).

* **After the bug.** Each problem's canonical solution and its verified corruptions
  (:mod:`vaxis.experiments.corruptions`) are prefilled as the assistant's answer, inside a
  ```` ```python ```` fence, after the authors' system prompt and the problem. The projection (mean
  per-token cosine, METHOD.md) is read over the tokens from the bug to the end of the code, and over
  the same character range of the correct solution (the tokens "after the bug" there). Per corruption
  kind: Cohen's d (correct minus corrupted, pooled SD) and the share of problems where the correct
  solution projects higher, each with a bootstrap CI over problems. Nulls: random unit directions read
  in the same pass, and the ``harmless`` edit (code that still passes), which shows how far any edit
  moves the projection.
* **Verbosity steering.** Code written for the problem prompts (the fence prefilled, generation stopped
  at the closing fence) under steering: non-blank lines, comment lines and type-hinted parameters and
  returns (counted with ``tokenize`` and ``ast``) over syntactically valid outputs only, and the pass
  rate in the sandbox (:func:`vaxis.code.run_tests`; model-written code never runs in this process).
  A strength where over half the outputs do not parse is dropped and reported.
"""

from __future__ import annotations

import ast
import io
import tokenize
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..codedata import CodeProblem

SYSTEM = "You are a helpful coding assistant. Write clean, correct Python code."
FENCE = "```python\n"
CLOSE = "\n```"
METRICS = ("lines", "comments", "type_hints")


def task_chat(problem: CodeProblem) -> list[dict]:
    """The authors' system prompt and the problem as the user's turn."""
    if problem.source == "humaneval":
        user = f"Complete this Python function.\n\n```python\n{problem.prompt.rstrip()}\n```"
    else:
        user = f"{problem.prompt.strip()}\n\nWrite the function in Python."
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def prefilled_chat(problem: CodeProblem, code: str) -> list[dict]:
    """:func:`task_chat` with ``code`` (fenced) as the assistant's answer; the code starts at
    character ``len(FENCE)`` of the last message."""
    return task_chat(problem) + [{"role": "assistant", "content": FENCE + code + CLOSE}]


def make_corruptions(problems: Sequence[CodeProblem], seed: int = 0, timeout: float = 5.0, kinds=None):
    """Verified corruptions of each problem's canonical solution, checked in the sandbox:
    ``({problem id: [Corruption]}, counts)`` where ``counts`` is a DataFrame of kept and rejected per
    kind (a kind that cannot be made for a problem is skipped and counted, never faked)."""
    import pandas as pd

    from ..code import run_tests
    from .corruptions import KINDS, corrupt

    kinds = list(kinds or KINDS)
    made, rows = {}, {k: {"kept": 0, "rejected": 0, "original fails": 0} for k in kinds}
    for i, p in enumerate(problems):
        check = lambda code, p=p: run_tests(code, p.tests, p.entry_point, timeout=timeout).passed  # noqa: E731
        out, report = corrupt(p.canonical_solution, check, seed=seed + i, entry_point=p.entry_point, kinds=kinds)
        made[p.id] = out
        for k in kinds:
            if not report.original_passes:
                rows[k]["original fails"] += 1
            else:
                rows[k]["kept" if report.kept[k] else "rejected"] += 1
    return made, pd.DataFrame(rows).T


def probe_directions(axis, n_random: int, seed: int) -> dict:
    """``{layer: (1 + n_random, d)}``: the axis's unit vector first, then ``n_random`` random unit
    directions per layer (the null; isotropic, seeded, drawn without looking at any data)."""
    from ..axis import random_directions

    rand = random_directions(n_random, len(axis.layers), axis.hidden_size, seed) if n_random else None
    out = {}
    for j, layer in enumerate(axis.layers):
        rows = [axis.vector(layer) / axis.vector(layer).norm()]
        if rand is not None:
            rows.extend(rand[:, j])
        out[layer] = torch.stack(rows).float()
    return out


@dataclass
class AfterBug:
    """Mean projection after the bug. ``correct[kind]`` / ``corrupted[kind]``: ``(n, n_layers, K)``
    (column 0 the axis, then random directions); ``ids[kind]``: the problems; ``tokens[kind]``:
    ``(n, 2)`` tokens averaged (correct, corrupted)."""

    layers: list[int]
    correct: dict
    corrupted: dict
    ids: dict
    tokens: dict


def after_bug_projections(model, tokenizer, problems, corruptions: dict, directions: dict, **extract_kwargs):
    """Read :class:`AfterBug` through :func:`vaxis.extract` (one pass; per-token cosines reduced on the
    device). An empty span (a bug at the very end) is skipped."""
    from ..extract import extract

    by_id = {p.id: p for p in problems}
    chats, spans, keys = [], [], []
    for pid, cs in corruptions.items():
        p = by_id[pid]
        for c in cs:
            start, code_end, bad_end = (
                len(FENCE) + c.bug_offset,
                len(FENCE) + len(p.canonical_solution),
                len(FENCE) + len(c.code),
            )
            if start >= min(code_end, bad_end):
                continue
            chats += [prefilled_chat(p, p.canonical_solution), prefilled_chat(p, c.code)]
            spans += [{"after": [(2, start, code_end)]}, {"after": [(2, start, bad_end)]}]
            keys.append((c.kind, pid))
    layers = sorted(directions)
    out = AfterBug(layers, {}, {}, {}, {})
    if not chats:
        return out
    stats = extract(model, tokenizer, chats, spans, layers=layers, directions=directions, **extract_kwargs)
    means = np.stack([p.numpy().mean(0) for p in stats.projections["after"]])  # (2 * pairs, n_layers, K)
    counts = stats.counts["after"].numpy()
    for j, (kind, pid) in enumerate(keys):
        for store, value in ((out.correct, means[2 * j]), (out.corrupted, means[2 * j + 1])):
            store.setdefault(kind, []).append(value)
        out.ids.setdefault(kind, []).append(pid)
        out.tokens.setdefault(kind, []).append(counts[2 * j : 2 * j + 2])
    for store in (out.correct, out.corrupted, out.tokens):
        for kind in store:
            store[kind] = np.stack(store[kind])
    return out


def cohens_d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cohen's d of ``a - b`` along axis 0 with the pooled SD (NaN where it is 0 or n < 2)."""
    na, nb = len(a), len(b)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # n < 2: NaN variance, no warning
        pooled = ((na - 1) * a.var(0, ddof=1) + (nb - 1) * b.var(0, ddof=1)) / max(na + nb - 2, 1)
        return np.where(pooled > 0, (a.mean(0) - b.mean(0)) / np.sqrt(pooled), np.nan)


def effects(correct: np.ndarray, corrupted: np.ndarray, n_boot: int = 200, seed: int = 0) -> dict:
    """Cohen's d and the share of problems with correct > corrupted, per layer and direction, with
    2.5/97.5 % bootstrap quantiles over problems (pairs kept together): ``{"d", "d_low", "d_high",
    "share", "share_low", "share_high", "n"}``, each ``(n_layers, K)``."""
    n = len(correct)
    out = {"d": cohens_d(correct, corrupted), "share": (correct > corrupted).mean(0), "n": n}
    rng = np.random.default_rng(seed)
    draws_d, draws_s = [], []
    for _ in range(n_boot if n > 2 else 0):
        i = rng.integers(0, n, n)
        draws_d.append(cohens_d(correct[i], corrupted[i]))
        draws_s.append((correct[i] > corrupted[i]).mean(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, draws in (("d", draws_d), ("share", draws_s)):
            if draws:
                out[f"{name}_low"], out[f"{name}_high"] = np.nanquantile(np.array(draws), [0.025, 0.975], axis=0)
            else:
                out[f"{name}_low"] = out[f"{name}_high"] = np.full_like(out[name], np.nan, dtype=float)
    return out


def effects_table(after: AfterBug, li: int, n_boot: int = 200, seed: int = 0):
    """One row per corruption kind at layer index ``li``: the axis's d and share with CIs, the random
    directions' d (median and 95 % range) and the axis's d minus the harmless edit's."""
    import pandas as pd

    rows = []
    harmless = np.nan
    if "harmless" in after.correct:
        harmless = effects(after.correct["harmless"], after.corrupted["harmless"], 0)["d"][li, 0]
    for kind in after.correct:
        e = effects(after.correct[kind], after.corrupted[kind], n_boot, seed)
        rand = e["d"][li, 1:]
        rows.append({
            "kind": kind, "n": e["n"], "d": e["d"][li, 0], "d_low": e["d_low"][li, 0], "d_high": e["d_high"][li, 0],
            "share_correct_higher": e["share"][li, 0], "share_low": e["share_low"][li, 0],
            "share_high": e["share_high"][li, 0],
            "random_d_median": float(np.nanmedian(rand)) if len(rand) else np.nan,
            "random_d_2.5%": float(np.nanquantile(rand, 0.025)) if len(rand) else np.nan,
            "random_d_97.5%": float(np.nanquantile(rand, 0.975)) if len(rand) else np.nan,
            "harmless_d": harmless, "tokens_after_bug": float(after.tokens[kind][:, 1].mean()),
        })  # fmt: skip
    return pd.DataFrame(rows)


def code_metrics(code: str) -> dict:
    """``valid`` (``ast.parse`` succeeds); over valid code, ``lines`` (non-blank lines), ``comments``
    (lines with a ``#`` comment token, so ``#`` inside strings does not count; docstrings are not
    comments) and ``type_hints`` (annotated parameters plus return annotations over every function);
    NaN when invalid."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return {"valid": False, **dict.fromkeys(METRICS, np.nan)}
    comment_lines = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.COMMENT:
                comment_lines.add(tok.start[0])
    except (tokenize.TokenError, SyntaxError):  # pragma: no cover - ast accepted it
        pass
    hints = 0
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *(x for x in (a.vararg, a.kwarg) if x)]
            hints += sum(p.annotation is not None for p in params) + (node.returns is not None)
    lines = sum(bool(line.strip()) for line in code.splitlines())
    return {"valid": True, "lines": float(lines), "comments": float(len(comment_lines)), "type_hints": float(hints)}


def verbosity_sweep(model, tokenizer, problems, vectors: dict, *, timeout: float = 5.0, **generate_kwargs):
    """Code for each problem under each steering of ``vectors`` (from
    :func:`vaxis.experiments.confidence.steering_vectors`): one row per output with the
    :func:`code_metrics`, ``passed`` (sandbox; False for invalid code), ``tokens`` and ``finish``."""
    import pandas as pd

    from ..code import run_tests
    from ..generate import generate

    chats = [task_chat(p) for p in problems]
    rows = []
    for (direction, strength), steer in vectors.items():
        gens = generate(model, tokenizer, chats, steer=steer, prefill=FENCE, stop=["```"], **generate_kwargs)
        per = len(gens) // len(problems)
        for j, g in enumerate(gens):
            p = problems[j // per]
            m = code_metrics(g.text)
            ok = m["valid"] and run_tests(g.text, p.tests, p.entry_point, timeout=timeout).passed
            rows.append({"direction": direction, "strength_%": float(strength), "problem": p.id, "sample": j % per,
                         **m, "passed": bool(ok), "tokens": g.n_new_tokens, "finish": g.finish_reason})  # fmt: skip
    return pd.DataFrame(rows)


def verbosity_table(rows):
    """Per direction and strength: outputs, valid share, the means of :data:`METRICS` over valid
    outputs, pass rate over all outputs, mean tokens, and ``dropped`` (over half invalid: the means
    are blanked)."""
    g = rows.groupby(["direction", "strength_%"])
    table = g.agg(n=("valid", "size"), valid=("valid", "mean"), **{m: (m, "mean") for m in METRICS},
                  pass_rate=("passed", "mean"), tokens=("tokens", "mean")).reset_index()  # fmt: skip
    table["dropped"] = table["valid"] < 0.5
    table.loc[table.dropped, list(METRICS)] = np.nan
    return table


def metric_matrix(rows, metric: str, strengths: Sequence[float], direction: str = "axis") -> np.ndarray:
    """``(n_strengths, n_outputs)`` values of ``metric`` along ``direction`` (the unsteered run at 0),
    NaN for invalid outputs and for strengths dropped as degenerate: the input of
    :func:`vaxis.experiments.confidence.slope_ci`."""
    table = verbosity_table(rows)
    cols = []
    for s in strengths:
        d = "none" if s == 0 else direction
        sel = rows[(rows.direction == d) & (rows["strength_%"] == float(s))].sort_values(["problem", "sample"])
        dropped = table[(table.direction == d) & (table["strength_%"] == float(s))].dropped.any()
        cols.append(np.full(len(sel), np.nan) if dropped else sel[metric].to_numpy(dtype=float))
    width = max(map(len, cols), default=0)
    return np.stack([np.pad(c, (0, width - len(c)), constant_values=np.nan) for c in cols])


def random_band(table, metric: str, strengths: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``metric``'s mean over random directions per strength (NaN where none was read)."""
    rand = table[table.direction.str.startswith("random")]
    lo, hi = [], []
    for s in strengths:
        v = rand[rand["strength_%"] == float(s)][metric].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        lo.append(v.min() if len(v) else np.nan)
        hi.append(v.max() if len(v) else np.nan)
    return np.array(lo), np.array(hi)


def check_code_keys(p, cfg) -> int | None:
    """The profile keys notebooks 06 and 10 both read (``code_dataset``, ``code_timeout``); returns how many usable
    problems the data set has (None when it is unknown). ``p``: a :class:`vaxis.checks.Problems`."""
    from ..codedata import SOURCES, load_code_problems

    p.number("code_timeout", cfg["code_timeout"], positive=True)
    if not p.choice("code_dataset", cfg["code_dataset"], (*SOURCES, "both")):
        return None
    problems = p.attempt(f"code_dataset={cfg['code_dataset']!r}", load_code_problems, cfg["code_dataset"])
    return None if problems is None else len(problems[0])


def check_parameters(cfg, *, axis_path=None, strengths=(-10.1, -5.0, 0.0, 5.0, 10.1), n_boot=200,
                     **common) -> list[str]:  # fmt: skip
    """Notebook 06's parameters, before the model is loaded (:mod:`vaxis.checks`): ``strengths`` (with 0),
    ``n_boot``, the axis, :func:`check_code_keys`, ``code_problems`` (no more than the set has), the verbosity sweep
    (problems among those read, random strengths among ``strengths``, slope strengths with 0; slope layers the axis
    lacks are noted). Raises :class:`vaxis.checks.ParameterError`; returns notes."""
    from ..checks import Problems

    p = Problems.for_notebook(6, cfg, **common)
    strengths = p.numbers("strengths", strengths, zero=True)
    p.integer("n_boot", n_boot, 1)
    meta = p.axis(axis_path)
    have, n = check_code_keys(p, cfg), cfg["code_problems"]
    if p.integer("code_problems", n, 1) and have is not None:
        p.enough("code_problems", n, have, f"usable problems in {cfg['code_dataset']}")
    if p.integer("verbosity_problems", cfg["verbosity_problems"], 1) and p.whole(n):
        p.enough("verbosity_problems", cfg["verbosity_problems"], n, "problems are read (code_problems)")
    p.integer("code_random_directions", cfg["code_random_directions"], 0)
    p.integer("verbosity_samples", cfg["verbosity_samples"], 1)
    p.integer("verbosity_max_new_tokens", cfg["verbosity_max_new_tokens"], 1)
    p.integer("verbosity_random_directions", cfg["verbosity_random_directions"], 0)
    key = "verbosity_random_strengths"
    p.subset(key, p.numbers(key, cfg[key]), strengths, "the steering strengths")
    p.numbers("verbosity_slope_strengths", cfg["verbosity_slope_strengths"], zero=True)
    p.layers_in_axis("verbosity_slope_layers", cfg["verbosity_slope_layers"], meta)
    return p.done()
