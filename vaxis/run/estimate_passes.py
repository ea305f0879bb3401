"""Notebooks 01-06 as :mod:`vaxis.run.estimate` sees them: the heavy passes each makes, mirrored from the notebook's
cells and the :mod:`vaxis.experiments` functions it calls, down to their ``extract`` / ``generate`` /
``readout`` calls, with the same inputs and settings. Notebooks 07-10: :mod:`vaxis.run.estimate_adapters`.

A mirror must follow its notebook: when a notebook changes a pass (a new readout, another size), change the
mirror here, and the smoke test (``tests/test_notebooks.py``) compares the two on a real run.

:class:`Context` resolves each notebook's config as the notebook does (its parameters cell's defaults, the
``-p`` parameters, the profile) and holds what later notebooks read from earlier ones (games, span items,
adapter names).
"""

from __future__ import annotations

import ast
import json
import tempfile
from pathlib import Path

import numpy as np

from .estimate_planner import Planner, filler

ALL = "every residual index"
YES_NO = {"yes": "Yes", "no": "No"}
#: notebook parameter -> profile key, as each notebook's ``vaxis.resolve_config(...)`` call passes them
OVERRIDES = {
    "01": {"n_games": "n_games"},
    "02": {k: k for k in ("max_batch_tokens", "n_splits", "n_shuffles", "n_random_directions")},
    "03": {"main_layer": "main_layer"},
    "04": {"dataset": "confidence_dataset", "n_problems": "confidence_problems", "n_samples": "confidence_samples",
           "layers_for_slopes": "slope_layers"},
    "05": {"n_problems": "backtracking_problems", "n_samples": "backtracking_samples", "band": "backtracking_band",
           "window": "backtracking_window"},
    "06": {"dataset": "code_dataset", "n_problems": "code_problems", "n_steer_problems": "verbosity_problems"},
    "07": {"targets": "dpo_targets", "control": "dpo_control"},
    "08": {"datasets": "sft_datasets"},
    "09": {"prompts_file": "wild_prompts_file", "adapters": "wild_adapters"},
    "10": {},
}  # fmt: skip


def notebook_defaults(path: Path) -> dict:
    """The literal defaults of a notebook's parameters cell (``name = value`` lines; others are skipped)."""
    cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    out = {}
    for node in ast.parse("".join(cell["source"])).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue
    return out


class Context:
    """What the mirrors share: the profile, the ``-p`` parameters, each notebook's defaults, and the inputs
    that later notebooks read from earlier ones (computed once, on first use)."""

    def __init__(self, profile: str, params: dict, notebook_paths: list[Path], run_dir: Path | None = None):
        self.profile, self.params, self.run_dir = profile, dict(params), run_dir
        self.defaults = {p.name[:2]: notebook_defaults(p) for p in notebook_paths}
        self.nb = "01"
        self.adapters: list[str] = []  # finished adapters of the run so far (notebooks 07-09 train them)
        self._scratch = tempfile.TemporaryDirectory(prefix="vaxis-estimate-")
        self._memo: dict = {}
        self.tok = None

    def once(self, key, compute):
        """``compute()`` the first time ``key`` (JSON-serialisable) is asked for, then the same value."""
        from ..core.cache import stable_hash

        key = stable_hash(["once", key], 32)
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def param(self, name: str, nb: str | None = None):
        """Notebook ``nb``'s (default: the current one's) parameter: the ``-p`` value, else its default."""
        nb = nb or self.nb
        return self.params[name] if name in self.params else self.defaults.get(nb, {}).get(name)

    def cfg(self, nb: str | None = None):
        """Notebook ``nb``'s resolved config, as its ``vaxis.resolve_config(...)`` call makes it."""
        from .config import resolve

        nb = nb or self.nb
        if nb not in self._memo:
            overrides = {key: self.param(name, nb) for name, key in OVERRIDES[nb].items()}
            self._memo[nb] = resolve(self.profile, model=self.param("model", nb), quantization=self.param("quantization", nb),
                                     run_dir=self._scratch.name, seed=self.param("seed", nb) or 0,
                                     chat_template_kwargs=self.param("chat_template_kwargs", nb), **overrides)  # fmt: skip
        return self._memo[nb]

    def main_layer(self):
        """The main layer when it is known before notebook 03 runs: fixed by the profile, or read from the
        ``value_axis.json`` of the run folder given; else ``None`` (chosen on the data)."""
        fixed = self.cfg("03")["main_layer"]
        if isinstance(fixed, int) and not isinstance(fixed, bool):
            return fixed
        found = Path(self.run_dir) / "value_axis.json" if self.run_dir else None
        return int(json.loads(found.read_text())["main_layer"]) if found is not None and found.exists() else None

    def other_layers(self, plan: Planner, layers) -> list:
        """The slope layers a notebook sweeps besides the main layer (``sorted({L, *layers})`` without L)."""
        main = self.main_layer()
        if main is None:
            plan.note("the main layer is chosen on the data (notebook 03): assumed to be none of the slope layers, "
                      "so every slope layer gets its own sweep (an upper bound)")  # fmt: skip
        return [layer for layer in sorted(set(layers)) if layer != main]

    def games(self):
        """Notebook 01's games (its synthesis code, its seed and sizes)."""
        if "games" not in self._memo:
            from ..data import icrl

            cfg = self.cfg("01")
            size = icrl.GameSize(**cfg.get("game_size", {}))
            games, _ = icrl.generate_dataset(cfg["n_games"], seed=cfg.seed, paragraphs=self.param("paragraphs_file", "01"),
                                             size=size)  # fmt: skip
            self._memo["games"] = games
        return self._memo["games"]

    def items(self):
        """Notebook 02's span items of the games (:func:`vaxis.experiments.extraction.items_from_games`)."""
        if "items" not in self._memo:
            from ..experiments.extraction import items_from_games

            self._memo["items"] = items_from_games(self.games(), self.tok)
        return self._memo["items"]

    def fit_items(self) -> list:
        """Notebook 02's fit-pass items: construction targets and norms."""
        spans = self.items()
        return [
            it for it in spans.items if spans.game_split[it.game] == "construction" and it.kind in ("target", "norm")
        ]

    def axis_name(self) -> str:
        """The axis a notebook reads (``axis_path`` or the run's value axis): part of every steering's identity."""
        return str(self.param("axis_path") or "value_axis")


def steer_tags(axis: str, layer, strengths, n_random: int, seed: int, random_strengths=None) -> dict:
    """:func:`vaxis.experiments.confidence.steering_vectors`'s keys, each with what identifies its vector
    (``None`` for strength 0: no steering)."""
    out = {}
    names = ["axis", *(f"random{j}" for j in range(n_random))]
    for s in strengths:
        if s == 0:
            out[("none", 0.0)] = None
            continue
        for name in names:
            if name != "axis" and random_strengths is not None and float(s) not in map(float, random_strengths):
                continue
            out[(name, float(s))] = (axis, layer, name, float(s), seed if name != "axis" else None)
    return out


def sweep(plan: Planner, axis: str, layer, problems, partials, strengths, *, n_random: int, n_samples: int, seed: int,
          length_problems=(), length_tokens: int = 1, random_strengths=None, length_strengths=None,
          framings=("correct", "incorrect"), yes_rates_too: bool = True) -> None:  # fmt: skip
    """:func:`vaxis.experiments.confidence.steering_sweep`'s passes."""
    from ..experiments.confidence import math_chat, partial_chat
    from ..experiments.confidence_answers import STEER_ANSWER_TOKENS, TEMPERATURE

    vectors = steer_tags(axis, layer, [float(s) for s in strengths], n_random, seed, random_strengths)
    axis_only = {k: v for k, v in vectors.items() if k[0] in ("none", "axis")}
    for framing in framings:
        chats = [partial_chat(p, t, framing) for p, t in zip(problems, partials)]
        rest = vectors
        if yes_rates_too:
            for tag in axis_only.values():
                plan.generate(f"yes-rates under steering ({framing}?)", chats, STEER_ANSWER_TOKENS, tag=(tag, "score"),
                              n_samples=n_samples, temperature=TEMPERATURE, seed=seed)  # fmt: skip
            rest = {k: v for k, v in vectors.items() if k not in axis_only}
        for tag in rest.values():
            plan.readout(f"log-odds under steering ({framing}?)", chats, tag=tag)
    if yes_rates_too and length_problems:
        for (_, s), tag in axis_only.items():
            if length_strengths is None or s in map(float, length_strengths):
                plan.generate(
                    "steered rollout lengths", [math_chat(p) for p in length_problems], length_tokens, tag=tag
                )


def rollouts(ctx: Context, plan: Planner):
    """Notebook 04's math rollouts (notebook 10 reads them from the cache): ``(problems, texts)``, each text
    ``confidence_max_new_tokens`` tokens of filler."""
    from ..experiments.confidence import load_dataset, math_chat

    cfg = ctx.cfg()
    problems = load_dataset(cfg["confidence_dataset"], cfg["confidence_problems"], cfg.seed)
    n = cfg["confidence_max_new_tokens"]
    plan.generate("math rollouts", [math_chat(p) for p in problems], n, temperature=0.7, seed=cfg.seed)
    plan.note(f"math rollouts, read by later passes, are modelled as {n} tokens each (their limit)")
    return problems, [filler(ctx.tok, n, i) for i in range(len(problems))]


def backtracking_rollouts(ctx: Context, plan: Planner, cfg, **extract_kwargs) -> None:
    """Notebook 05's sampled rollouts, then per-token projections over them (notebook 10 repeats both: the
    rollouts from the cache, the projections on its own directions)."""
    from ..core.chat import render_chat
    from ..experiments.confidence import load_dataset, math_chat

    problems = load_dataset("gsm8k", cfg["backtracking_problems"], cfg.seed)
    n, k = cfg["backtracking_max_new_tokens"], cfg["backtracking_samples"]
    chats = [math_chat(p) for p in problems]
    plan.generate("backtracking rollouts", chats, n, n_samples=k, temperature=0.7, seed=cfg.seed)
    plan.note(f"backtracking rollouts, read by the projection pass, are modelled as {n} tokens each (their limit)")
    prompts = [render_chat(ctx.tok, c, add_generation_prompt=True).text for c in chats]
    texts = [prompt + filler(ctx.tok, n, j) for prompt in prompts for j in range(k)]
    spans = [{"rollout": [(len(prompt), len(t))]} for prompt, t in zip([p for p in prompts for _ in range(k)], texts)]
    tag = extract_kwargs.pop("tag")
    low = sum(len(i) + 1 for i in ctx.tok(prompts, add_special_tokens=False)["input_ids"]) * k  # one token each
    plan.extract("per-token projections over the rollouts", texts, spans, tag=tag, tokens_low=low, **extract_kwargs)


def presumed_corruptions(problems, seed: int) -> dict:
    """:func:`vaxis.experiments.coding.make_corruptions` without the sandbox: each kind's first candidate is
    taken as verified (a bug that fails the tests, an edit that passes them), as the sandbox mostly finds."""
    from ..experiments.corruptions import KINDS, corrupt

    out = {}
    for i, p in enumerate(problems):
        made = []
        for kind in KINDS:  # each kind draws from its own generator: one call per kind gives the same edits
            check = (lambda code: True) if kind in ("obfuscated", "harmless") else (
                lambda code, original=p.canonical_solution: code == original)  # fmt: skip
            made += corrupt(p.canonical_solution, check, seed=seed + i, entry_point=p.entry_point, kinds=[kind])[0]
        out[p.id] = made
    return out


def after_bug(plan: Planner, problems, corruptions: dict, tag, **extract_kwargs) -> None:
    """:func:`vaxis.experiments.coding.after_bug_projections`'s one extraction pass (its texts and spans, from
    :func:`vaxis.experiments.coding.after_bug_items`)."""
    from ..experiments.coding import after_bug_items

    chats, spans, _ = after_bug_items(problems, corruptions)
    plan.note("code corruptions are not run in the sandbox: each kind's first candidate counts as verified")
    if chats:
        plan.extract("code after the bug", chats, spans, tag=tag, **extract_kwargs)


# ------------------------------------------------------------------------------------------ notebooks 01-06


def nb01(ctx: Context, plan: Planner) -> None:
    """Games are synthesized and tokenized: no model, no heavy pass."""
    ctx.games()
    plan.note("no model: the games are synthesized and tokenized")


def nb02(ctx: Context, plan: Planner) -> None:
    cfg = ctx.cfg()
    plan.load()
    spans = ctx.items()
    keep = cfg["keep_construction_activations"]
    kw = dict(max_batch_tokens=cfg["max_batch_tokens"], token_spans=["before", "after"])
    fit = ctx.fit_items()
    plan.extract("fit pass (construction games)", [it.text for it in fit], [it.spans for it in fit], tag=ALL, keep=keep,
                 **kw)  # fmt: skip
    second = [it for it in spans.items if spans.game_split[it.game] == "held_out"] if keep else spans.items
    directions = ("02", cfg["n_splits"], cfg["n_shuffles"], cfg["n_random_directions"], cfg.seed)
    plan.extract(
        "evaluation pass", [it.text for it in second], [it.spans for it in second], tag=(ALL, directions), **kw
    )


def heldout(ctx: Context, plan: Planner, kind: str, n_games, seed: int, tag, **extract_kwargs) -> None:
    """:func:`vaxis.experiments.confound.heldout_table`'s extraction pass."""
    spans = ctx.items()
    games = sorted({it.game for it in spans.items if it.kind == kind and spans.game_split[it.game] == "held_out"})
    if n_games is not None and n_games < len(games):
        games = sorted(np.random.default_rng(seed).choice(games, n_games, replace=False).tolist())
    chosen = [it for it in spans.items if it.kind == kind and it.game in set(games)]
    plan.extract(f"held-out games, {kind} items", [it.text for it in chosen], [it.spans for it in chosen], tag=tag,
                 token_spans=["before", "after"], **extract_kwargs)  # fmt: skip


def nb03(ctx: Context, plan: Planner) -> None:
    from ..experiments.axis_report import trace_example

    cfg = ctx.cfg()
    plan.load()
    spans = ctx.items()
    plan.forward("value trace (one held-out game)", [trace_example(spans.items, spans.game_split).text],
                 tag=(ctx.axis_name(), "L"))  # fmt: skip
    plan.note("the logit lens reads the axis through the unembedding: no forward pass")
    if ctx.param("axis_path"):
        tag = ("fitted and given axes", str(ctx.param("axis_path")), cfg["n_random_directions"], cfg.seed)
        for kind in ("target", "placebo"):
            heldout(ctx, plan, kind, None, cfg.seed, tag, max_batch_tokens=cfg["max_batch_tokens"])


def nb04(ctx: Context, plan: Planner) -> None:
    from ..experiments.confidence import QUESTIONS, confidence_chat, steer_inputs
    from ..experiments.confidence_answers import CONFIDENCE_ANSWER_TOKENS, TEMPERATURE

    cfg = ctx.cfg()
    plan.load()
    problems, texts = rollouts(ctx, plan)
    plan.note(
        "rollouts without an extractable answer leave the confidence statistics, not the passes (sampled confidence reads all)"
    )
    directions = (ctx.axis_name(), ALL, "axis and random", cfg["confidence_random_directions"], cfg.seed + 7)
    for framing in QUESTIONS:
        chats = [confidence_chat(p, t, framing) for p, t in zip(problems, texts)]
        plan.readout(f"verbalized confidence ({framing}?)", chats, tag=directions, answers=YES_NO)
    chats = [confidence_chat(p, t, "correct") for p, t in zip(problems, texts)]
    plan.generate("sampled confidence", chats, CONFIDENCE_ANSWER_TOKENS, n_samples=cfg["confidence_samples"],
                  temperature=TEMPERATURE, seed=cfg.seed)  # fmt: skip
    n_steer = cfg["steer_problems"]
    steer, partials, _ = steer_inputs(problems[:n_steer], texts[:n_steer], cfg["steer_fractions"])
    main = ctx.main_layer() if ctx.main_layer() is not None else "L"
    sweep(plan, ctx.axis_name(), main, steer, partials, ctx.param("strengths"), n_random=cfg["steer_random_directions"],
          n_samples=cfg["steer_samples"], seed=cfg.seed, random_strengths=cfg["steer_random_strengths"],
          length_problems=problems[: cfg["steer_length_problems"]], length_tokens=cfg["steer_length_tokens"],
          length_strengths=cfg["steer_length_strengths"])  # fmt: skip
    for layer in ctx.other_layers(plan, cfg["slope_layers"]):
        sweep(plan, ctx.axis_name(), layer, steer, partials, cfg["slope_strengths"], n_random=0, n_samples=1,
              seed=cfg.seed, framings=cfg["slope_framings"], yes_rates_too=False)  # fmt: skip


def nb05(ctx: Context, plan: Planner) -> None:
    from ..experiments.confidence import load_dataset, math_chat

    cfg = ctx.cfg()
    plan.load()
    backtracking_rollouts(ctx, plan, cfg, tag=(ctx.axis_name(), ALL, "axis"))
    problems = load_dataset("gsm8k", cfg["backtracking_problems"], cfg.seed)[: cfg["backtracking_steer_problems"]]
    main = ctx.main_layer() if ctx.main_layer() is not None else "L"
    vectors = steer_tags(ctx.axis_name(), main, ctx.param("strengths"), cfg["backtracking_random_directions"], cfg.seed,
                         cfg["backtracking_random_strengths"])  # fmt: skip
    for tag in vectors.values():
        plan.generate("steered rollouts", [math_chat(p) for p in problems], cfg["backtracking_steer_tokens"], tag=tag,
                      temperature=0.7, seed=cfg.seed)  # fmt: skip


def nb06(ctx: Context, plan: Planner) -> None:
    from ..data.codedata import load_code_problems
    from ..experiments.coding import FENCE, task_chat

    cfg = ctx.cfg()
    plan.load()
    problems, _ = load_code_problems(cfg["code_dataset"], cfg["code_problems"], cfg.seed)
    after_bug(plan, problems, presumed_corruptions(problems, cfg.seed),
              (ctx.axis_name(), ALL, "probe", cfg["code_random_directions"], cfg.seed))  # fmt: skip
    chats = [task_chat(p) for p in problems[: cfg["verbosity_problems"]]]
    kw = dict(n_samples=cfg["verbosity_samples"], temperature=0.7, seed=cfg.seed, prefill=FENCE)
    main = ctx.main_layer() if ctx.main_layer() is not None else "L"
    sweeps = [(main, steer_tags(ctx.axis_name(), main, ctx.param("strengths"), cfg["verbosity_random_directions"],
                                cfg.seed, cfg["verbosity_random_strengths"]))]  # fmt: skip
    strengths = sorted(float(s) for s in cfg["verbosity_slope_strengths"])
    sweeps += [(layer, steer_tags(ctx.axis_name(), layer, strengths, 0, cfg.seed))
               for layer in ctx.other_layers(plan, cfg["verbosity_slope_layers"])]  # fmt: skip
    for layer, vectors in sweeps:
        for tag in vectors.values():
            what = "verbosity sweep" if layer == main else "verbosity slopes (other layers)"
            plan.generate(what, chats, cfg["verbosity_max_new_tokens"], tag=(tag, "```"), **kw)
