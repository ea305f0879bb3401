"""Notebook 06: what the axis reads in code, and what steering it changes (METHOD.md section 4, Fig 4).

* **After the bug.** Each problem's canonical solution and its verified corruptions
  (:mod:`vaxis.experiments.corruptions`) are prefilled as the assistant's answer, inside a
  ```` ```python ```` fence, after the authors' system prompt and the problem. The projection (mean
  per-token cosine, METHOD.md) is read in one pass over three windows (:data:`WINDOWS`): from the bug to
  the end of the code (``to_end``), the authors' window of the bug's token and the
  :data:`AUTHORS_TOKENS` after it (``authors_10``), and the whole code (``whole``), each over the same
  character range of the correct solution. Per corruption kind: Cohen's d (correct minus corrupted,
  pooled SD), the paired d_z and the share of problems where the correct solution projects higher, each
  with a bootstrap CI that resamples whole correct/corrupted pairs (problems). Nulls: random unit
  directions read in the same pass (:mod:`vaxis.experiments.coding_stats`), and the ``harmless`` edit
  (code that still passes), which shows how far any edit moves the projection.
* **Verbosity steering.** Code written for the problem prompts (the fence prefilled, generation stopped
  at the closing fence) under steering: non-blank lines, comment lines and type-hinted parameters and
  returns (counted with ``tokenize`` and ``ast``) over syntactically valid outputs only, and the pass
  rate in the sandbox (:func:`vaxis.data.code.run_tests`; model-written code never runs in this process).
  A strength where over half the outputs do not parse is dropped and reported.
"""

from __future__ import annotations

import ast
import io
import tokenize
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.codedata import CodeProblem

SYSTEM = "You are a helpful coding assistant. Write clean, correct Python code."
FENCE = "```python\n"
CLOSE = "\n```"
METRICS = ("lines", "comments", "type_hints")
#: the after-bug windows read in one pass: bug to end of code, the authors' bug + 10 tokens, the whole code
WINDOWS = ("to_end", "authors_10", "whole")
AUTHORS_TOKENS = 10  # the authors' window: the bug's first token and the 10 tokens after it


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

    from ..data.code import run_tests
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
    from ..core.axis import random_directions

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
    """Mean projection after the bug in ``window`` (one of :data:`WINDOWS`). ``correct[kind]`` /
    ``corrupted[kind]``: ``(n, n_layers, K)`` (column 0 the axis, then random directions); ``ids[kind]``:
    the problems; ``tokens[kind]``: ``(n, 2)`` tokens averaged (correct, corrupted). ``windows[w]``:
    ``{"correct", "corrupted", "tokens"}`` of every window read in the same pass (:meth:`at`)."""

    layers: list[int]
    correct: dict
    corrupted: dict
    ids: dict
    tokens: dict
    window: str = "to_end"
    windows: dict = field(default_factory=dict)

    def at(self, window: str) -> AfterBug:
        """The same pairs read in another ``window`` (no new pass)."""
        w = self.windows[window]
        return AfterBug(self.layers, w["correct"], w["corrupted"], self.ids, w["tokens"], window, self.windows)


def after_bug_items(problems, corruptions: dict):
    """``(chats, spans, keys)`` of the after-bug pass: per corruption, the correct then the corrupted solution
    prefilled; spans ``before`` (code start to the bug, when not empty) and ``after`` (bug to end of code, in
    message 2); ``keys[j] = (kind, problem id)`` for the pair at items ``2j, 2j + 1``. A bug at the very end
    (empty ``after``) is skipped."""
    by_id = {p.id: p for p in problems}
    chats, spans, keys = [], [], []
    for pid, cs in corruptions.items():
        p = by_id[pid]
        for c in cs:
            start = len(FENCE) + c.bug_offset
            ends = (len(FENCE) + len(p.canonical_solution), len(FENCE) + len(c.code))
            if start >= min(ends):
                continue
            for code, end in zip((p.canonical_solution, c.code), ends):
                chats.append(prefilled_chat(p, code))
                span = {"after": [(2, start, end)]}
                if start > len(FENCE):
                    span["before"] = [(2, len(FENCE), start)]
                spans.append(span)
            keys.append((c.kind, pid))
    return chats, spans, keys


def window_tokens(before: np.ndarray, after: np.ndarray, window: str) -> np.ndarray:
    """The per-token cosines ``(n_tokens, ...)`` of one text that ``window`` averages: ``to_end`` the tokens
    from the bug on, ``authors_10`` the bug's token and the :data:`AUTHORS_TOKENS` after it, ``whole`` every
    token of the code (``before`` then ``after``)."""
    if window == "to_end":
        return after
    if window == "authors_10":
        return after[: AUTHORS_TOKENS + 1]
    if window == "whole":
        return np.concatenate([before, after])
    raise ValueError(f"window={window!r}: one of {WINDOWS}")


def after_bug_projections(model, tokenizer, problems, corruptions: dict, directions: dict, window: str = "to_end",
                          **extract_kwargs):  # fmt: skip
    """Read :class:`AfterBug` through :func:`vaxis.extract` (one pass; per-token cosines reduced on the
    device) in every one of :data:`WINDOWS`; ``correct`` / ``corrupted`` hold ``window``'s. An empty span
    (a bug at the very end) is skipped."""
    from ..core.extract import extract

    if window not in WINDOWS:
        raise ValueError(f"window={window!r}: one of {WINDOWS}")
    chats, spans, keys = after_bug_items(problems, corruptions)
    layers = sorted(directions)
    out = AfterBug(layers, {}, {}, {}, {}, window, {w: {"correct": {}, "corrupted": {}, "tokens": {}} for w in WINDOWS})
    if not chats:
        return out.at(window)
    stats = extract(model, tokenizer, chats, spans, layers=layers, directions=directions, **extract_kwargs)
    after = [p.numpy() for p in stats.projections["after"]]
    before = stats.projections.get("before") or [None] * len(after)
    before = [np.zeros((0, *a.shape[1:]), a.dtype) if b is None else b.numpy() for a, b in zip(after, before)]
    for w, store in out.windows.items():
        toks = [window_tokens(b, a, w) for b, a in zip(before, after)]
        for j, (kind, _) in enumerate(keys):
            store["correct"].setdefault(kind, []).append(toks[2 * j].mean(0))
            store["corrupted"].setdefault(kind, []).append(toks[2 * j + 1].mean(0))
            store["tokens"].setdefault(kind, []).append([len(toks[2 * j]), len(toks[2 * j + 1])])
        for part in store.values():
            for kind in part:
                part[kind] = np.stack(part[kind])
    for kind, pid in keys:
        out.ids.setdefault(kind, []).append(pid)
    return out.at(window)


def cohens_d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cohen's d of ``a - b`` along axis 0 with the pooled SD (NaN where it is 0 or n < 2)."""
    na, nb = len(a), len(b)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # n < 2: NaN variance, no warning
        pooled = ((na - 1) * a.var(0, ddof=1) + (nb - 1) * b.var(0, ddof=1)) / max(na + nb - 2, 1)
        return np.where(pooled > 0, (a.mean(0) - b.mean(0)) / np.sqrt(pooled), np.nan)


def paired_dz(correct: np.ndarray, corrupted: np.ndarray) -> np.ndarray:
    """:func:`vaxis.core.nulls.paired_d` (``d_z`` of correct minus corrupted, pairs kept) per trailing index of
    ``(n, ...)`` arrays."""
    from ..core.nulls import paired_d

    a, b = correct.reshape(len(correct), -1), corrupted.reshape(len(corrupted), -1)
    return np.array([paired_d(a[:, j], b[:, j]) for j in range(a.shape[1])]).reshape(correct.shape[1:])


def effects(correct: np.ndarray, corrupted: np.ndarray, n_boot: int = 200, seed: int = 0) -> dict:
    """Cohen's d (pooled SD), the paired ``d_z`` and the share of problems with correct > corrupted, per layer
    and direction, with 2.5/97.5 % bootstrap quantiles that resample whole pairs (row ``i`` of ``correct`` and
    of ``corrupted`` together, :func:`vaxis.core.nulls.group_resamples`): ``{"d", "d_low", "d_high", "d_z",
    "d_z_low", "d_z_high", "share", "share_low", "share_high", "n"}``, each ``(n_layers, K)``. The ``d_z``
    CI is computed for the axis (column 0) only; the random directions' ``d_z`` are the null's draws."""
    from ..core.nulls import group_resamples

    n = len(correct)
    out = {"d": cohens_d(correct, corrupted), "d_z": paired_dz(correct, corrupted),
           "share": (correct > corrupted).mean(0), "n": n}  # fmt: skip
    draws = {"d": [], "share": [], "d_z": []}
    for i in group_resamples(np.arange(n), n_boot if n > 2 else 0, seed):
        draws["d"].append(cohens_d(correct[i], corrupted[i]))
        draws["share"].append((correct[i] > corrupted[i]).mean(0))
        dz = np.full(out["d_z"].shape, np.nan)
        dz[..., 0] = paired_dz(correct[i][..., 0], corrupted[i][..., 0])
        draws["d_z"].append(dz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, got in draws.items():
            if got:
                out[f"{name}_low"], out[f"{name}_high"] = np.nanquantile(np.array(got), [0.025, 0.975], axis=0)
            else:
                out[f"{name}_low"] = out[f"{name}_high"] = np.full_like(out[name], np.nan, dtype=float)
    return out


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

    from ..core.generate import generate
    from ..data.code import run_tests

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
    problems the data set has (None when it is unknown). ``p``: a :class:`vaxis.run.checks.Problems`."""
    from ..data.codedata import SOURCES, load_code_problems

    p.number("code_timeout", cfg["code_timeout"], positive=True)
    if not p.choice("code_dataset", cfg["code_dataset"], (*SOURCES, "both")):
        return None
    problems = p.attempt(f"code_dataset={cfg['code_dataset']!r}", load_code_problems, cfg["code_dataset"])
    return None if problems is None else len(problems[0])


def _note_few_draws(p, key: str, n: int, what: str) -> None:
    from ..core.nulls import min_draws

    if n < min_draws(0.05):
        p.note(f"{key}={n}: fewer than {min_draws(0.05)} random directions, so {what} against them are not 5% "
               "tests (the smallest p is 1/(n+1)); read them as descriptive")  # fmt: skip


def check_parameters(cfg, *, axis_path=None, strengths=(-10.1, -5.0, 0.0, 5.0, 10.1), n_boot=200,
                     **common) -> list[str]:  # fmt: skip
    """Notebook 06's parameters, before the model is loaded (:mod:`vaxis.run.checks`): ``strengths`` (with 0),
    ``n_boot``, the axis, :func:`check_code_keys`, ``code_problems`` (no more than the set has), ``code_window``,
    the verbosity sweep (problems among those read, random strengths among ``strengths``, slope strengths with 0).
    Noted: slope layers the axis lacks, fewer random directions than a 5% test needs, strengths not symmetric
    around 0 (the sign-flip test of per-problem slopes is exact for mirrored strengths). Raises
    :class:`vaxis.run.checks.ParameterError`; returns notes."""
    from ..run.checks import Problems

    p = Problems.for_notebook(6, cfg, **common)
    strengths = p.numbers("strengths", strengths, zero=True)
    p.integer("n_boot", n_boot, 1)
    meta = p.axis(axis_path)
    have, n = check_code_keys(p, cfg), cfg["code_problems"]
    if p.integer("code_problems", n, 1) and have is not None:
        p.enough("code_problems", n, have, f"usable problems in {cfg['code_dataset']}")
    if p.integer("verbosity_problems", cfg["verbosity_problems"], 1) and p.whole(n):
        p.enough("verbosity_problems", cfg["verbosity_problems"], n, "problems are read (code_problems)")
    if p.integer("code_random_directions", cfg["code_random_directions"], 0):
        _note_few_draws(p, "code_random_directions", cfg["code_random_directions"], "the after-bug verdicts")
    p.choice("code_window", cfg["code_window"], WINDOWS)
    p.integer("verbosity_samples", cfg["verbosity_samples"], 1)
    p.integer("verbosity_max_new_tokens", cfg["verbosity_max_new_tokens"], 1)
    p.integer("verbosity_random_directions", cfg["verbosity_random_directions"], 0)
    key = "verbosity_random_strengths"
    p.subset(key, p.numbers(key, cfg[key]), strengths, "the steering strengths")
    slope_strengths = p.numbers("verbosity_slope_strengths", cfg["verbosity_slope_strengths"], zero=True)
    for key, values in (("strengths", strengths), ("verbosity_slope_strengths", slope_strengths)):
        if values and sorted(values) != sorted(-v for v in values):
            p.note(f"{key}={values}: not symmetric around 0, so the per-problem sign-flip test of the steering "
                   "slopes is approximate (exact when the strengths mirror each other)")  # fmt: skip
    p.layers_in_axis("verbosity_slope_layers", cfg["verbosity_slope_layers"], meta)
    return p.done()
