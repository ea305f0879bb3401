"""Notebooks 07-10 as :mod:`vaxis.run.estimate` sees them: the notebooks that train LoRA adapters and read the base
model and each adapter (a model load each), mirrored from their cells and the :mod:`vaxis.experiments`
functions they call. Notebooks 01-06 and the shared :class:`~vaxis.run.estimate_passes.Context`:
:mod:`vaxis.run.estimate_passes`.

Three counts follow fixes other changes make to the notebooks, each in one function here: notebook 07's code
requests capped at the shipped code templates (:func:`code_prompt_count`), notebook 10's ``eot_wild_prompts = 0``
meaning every shipped prompt as in notebook 09 (:func:`wild_prompt_count`), and notebook 09's
evaluation-awareness prompts drawn from the shipped prompts when a user's file has too few (:func:`aware_prompts`,
which calls the notebook's own :func:`vaxis.experiments.evalaware.organism_prompts`).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .estimate_passes import (
    ALL,
    YES_NO,
    Context,
    after_bug,
    backtracking_rollouts,
    heldout,
    presumed_corruptions,
    rollouts,
    sweep,
)
from .estimate_planner import Planner

#: rows of ``lmsys/chatbot_arena_conversations`` (what ``vaxis.data.prompts.load_arena(None)`` reads)
ARENA_PROMPTS = 33_000


def code_prompt_count(cfg) -> int:
    """Notebook 07's code requests per model: ``dpo_code_prompts``, at most one per shipped code template."""
    from ..experiments.preference_data import CODE_TEMPLATES

    return min(cfg["dpo_code_prompts"], len(CODE_TEMPLATES))


def wild_prompt_count(cfg) -> int | None:
    """Notebook 10's in-the-wild prompts: ``eot_wild_prompts``, where 0 means every shipped prompt (``None``)."""
    return cfg["eot_wild_prompts"] or None


def aware_prompts(ctx: Context, cfg, source: str) -> tuple[list[str], list[str]]:
    """Notebook 09's evaluation-awareness prompts ``(train, held_out)``, by the notebook's own call
    (:func:`vaxis.experiments.evalaware.organism_prompts`: the prompt file's, or the shipped ones when it has too
    few, prompts of at most a third of ``aware_max_length`` tokens)."""
    from ..experiments.evalaware import organism_prompts

    train, held, _ = organism_prompts(source, lambda p: len(ctx.tok(p)["input_ids"]), cfg["aware_max_length"] // 3,
                                      cfg["aware_train_prompts"], cfg["aware_eval_prompts"], cfg.seed)  # fmt: skip
    return train, held


def prompt_projections(ctx: Context, plan: Planner, what: str, prompts, tag, chunk_size: int = 2048,
                       **extract_kwargs) -> None:  # fmt: skip
    """:func:`vaxis.experiments.wild.prompt_projections`: one extraction pass per chunk of ``chunk_size`` (the
    chunks rendered once, whichever models read them)."""
    from ..core.chat import render_chat

    def chunks() -> list[tuple[list, list]]:
        out = []
        for lo in range(0, len(prompts), chunk_size):
            rendered = [render_chat(ctx.tok, [{"role": "user", "content": p}], add_generation_prompt=True)
                        for p in prompts[lo : lo + chunk_size]]  # fmt: skip
            out.append(
                ([r.text for r in rendered], [{"header": [(r.message_spans[0][1], len(r.text))]} for r in rendered])
            )
        return out

    for texts, spans in ctx.once(["header chunks", list(prompts), chunk_size], chunks):
        plan.extract(what, texts, spans, tag=tag, **extract_kwargs)


def option_projections(plan: Planner, prompts, seed: int, tag, **extract_kwargs) -> None:
    """:func:`vaxis.experiments.preferences.option_projections`: one pass per site (answer, user turn)."""
    from ..experiments.preferences import SITES, option_chats

    chats, spans = option_chats(prompts, seed)
    for site in SITES:
        plan.extract(f"option ranking ({site})", chats[site], [{"s": [s]} for s in spans[site]], tag=tag,
                     **extract_kwargs)  # fmt: skip


def read_model(ctx: Context, plan: Planner, cfg, prompts, word: str, tag) -> None:
    """:func:`vaxis.experiments.preferences.read_model`'s passes on one model."""
    from ..experiments import preference_data as pdata
    from ..experiments.coding import FENCE
    from ..experiments.preferences import CODE_SYSTEM, NEUTRAL_REQUEST

    seed = cfg.seed
    plan.generate("choices (free answers)", [p.messages() for p in prompts], cfg["dpo_answer_tokens"], temperature=0.7,
                  seed=seed)  # fmt: skip
    option_projections(plan, prompts, seed, tag)
    chats, spans = [], []
    for w in pdata.OPTION_SETS[prompts[0].set_name]:
        for s in pdata.word_sentences(w, cfg["dpo_sentences"], seed):
            chats.append([{"role": "user", "content": NEUTRAL_REQUEST}, {"role": "assistant", "content": s}])
            spans.append({"s": [(1, 0, len(s))]})
    plan.extract("free-form sentences", chats, spans, tag=tag)
    code = [[{"role": "system", "content": CODE_SYSTEM}, {"role": "user", "content": r}]
            for r in pdata.code_prompts(word, code_prompt_count(cfg))]  # fmt: skip
    plan.generate("code requests", code, cfg["dpo_code_tokens"], tag="```", temperature=0.7, seed=seed, prefill=FENCE)


def nb07(ctx: Context, plan: Planner) -> None:
    from ..core.train import TrainSettings
    from ..experiments import preferences as pref
    from ..experiments.boundary import boundary_items

    cfg = ctx.cfg()
    roles = list(ctx.param("roles"))
    specs = [
        s
        for t in cfg["dpo_targets"]
        for s in pref.model_specs(t, cfg["dpo_control"], [r for r in roles if r != "control"])
    ]
    if "control" in roles:
        specs += pref.model_specs(cfg["dpo_targets"][0], cfg["dpo_control"], ["control"])
    settings = TrainSettings(method="dpo", epochs=cfg["dpo_epochs"], learning_rate=cfg["dpo_learning_rate"],
                             batch_size=cfg["dpo_batch_size"], max_length=cfg["dpo_max_length"],
                             target_modules=cfg["dpo_lora_targets"], seed=cfg.seed)  # fmt: skip
    for s in specs:
        rows = pref.training_rows(s, cfg["dpo_prompts"], cfg["dpo_eval_fraction"], cfg.seed)
        plan.train("DPO adapter", rows, settings, tag=s.name)
        ctx.adapters.append(s.name)
    plan.load()
    chats, spans, _ = boundary_items(ctx.games())
    n = cfg["dpo_boundary_games"] or None
    plan.extract("boundary axis (construction games)", chats[:n], spans[:n], tag=ALL, token_spans=[])
    tag = (ctx.axis_name(), "L and the boundary axis's layer", cfg["dpo_random_directions"], cfg.seed)
    for t in cfg["dpo_targets"]:
        set_name, word = pref.parse_target(t)
        prompts = pref.prompts_for(set_name, cfg["dpo_prompts"], cfg["dpo_eval_fraction"], cfg.seed)[1]
        models = {"base": "base", **{s.role: s.name for s in specs if s.target == word or s.role == "control"}}
        for model in models.values():
            plan.load()
            plan.model = model
            read_model(ctx, plan, cfg, prompts[: cfg["dpo_eval_prompts"]], word, tag)
        plan.model = "base"


def nb08(ctx: Context, plan: Planner) -> None:
    from ..core.train import TrainSettings
    from ..experiments import sft

    cfg = ctx.cfg()
    settings = TrainSettings(method="sft", epochs=cfg["sft_epochs"], learning_rate=cfg["sft_learning_rate"],
                             batch_size=cfg["sft_batch_size"], max_length=cfg["sft_max_length"], seed=cfg.seed)  # fmt: skip
    n_items = cfg["sft_items"] or None
    train, held = {}, {}
    for ds in ("gsm8k", "arc"):
        train[ds], held[ds] = sft.split(sft.load_items(ds, n_items, cfg.seed), cfg["sft_eval_fraction"], cfg.seed)
    held["math500"] = sft.load_items("math500", cfg["sft_other_items"] or None, cfg.seed)
    jobs = {f"sft-{ds}": sft.sft_rows(train[ds]) for ds in cfg["sft_datasets"]}
    if ctx.param("control"):
        jobs["control"] = sft.control_rows(cfg["sft_control_rows"], cfg.seed)
    for name, rows in jobs.items():
        plan.train("SFT adapter", rows, settings, tag=name)
        ctx.adapters.append(name)
    tokens = {"gsm8k": cfg["sft_math_tokens"], "arc": cfg["sft_arc_tokens"]}
    tag = (ctx.axis_name(), "L", "probe", cfg["sft_random_directions"], cfg.seed)
    for model in ["base", *jobs]:
        plan.load()
        plan.model = model
        for ds, items in held.items():
            chats = [it.chat(it.reference) for it in items]
            spans = [{"answer": [(len(it.messages), 0, len(it.reference))]} for it in items]
            plan.extract(f"reference answers ({ds})", chats, spans, tag=tag)
        for ds in ("gsm8k", "arc"):
            items = held[ds][: cfg["sft_accuracy_items"]]
            plan.generate(f"accuracy ({ds})", [it.chat() for it in items], tokens[ds])
    plan.model = "base"


def _wild_prompts(ctx: Context, plan: Planner, cfg) -> tuple[list[str], str]:
    """Notebook 09's prompts and their source; Chatbot Arena is not fetched: modelled by the shipped prompts."""
    from ..data.prompts import load_prompts

    source, n = cfg["wild_prompts_file"], cfg["wild_prompts"] or None
    if source != "arena":
        return [p.prompt for p in load_prompts(None if source == "shipped" else source, n, cfg.seed)], source
    shipped = [p.prompt for p in load_prompts(None)]
    n = min(n or ARENA_PROMPTS, ARENA_PROMPTS)
    plan.note(f"Chatbot Arena is not fetched: {n} prompts modelled by the {len(shipped)} shipped ones, numbered so "
              f"they differ (offline, the notebook uses the {len(shipped)} shipped prompts instead)")  # fmt: skip
    return [f"{i}. {shipped[i % len(shipped)]}" for i in range(n)], "arena"


def nb09(ctx: Context, plan: Planner) -> None:
    from ..core.train import TrainSettings
    from ..data.prompts import load_contexts
    from ..experiments import evalaware as ea
    from ..experiments.wild import fit_to_context

    cfg = ctx.cfg()
    prompts, source = _wild_prompts(ctx, plan, cfg)
    plan.load()
    plan.note("prompts are cut to wild_context_tokens (the model's own context is taken to be longer)")
    texts, _ = fit_to_context(ctx.tok, prompts, cfg["wild_context_tokens"])
    probe = (ctx.axis_name(), ALL, "probe", cfg["wild_random_directions"], cfg.seed)
    kw = dict(max_batch_tokens=cfg["max_batch_tokens"])
    prompt_projections(ctx, plan, "prompts, last token", texts, probe, **kw)
    base_model = ctx.param("base_model")
    if base_model:
        plan.load()
        plan.model = f"base model {base_model}"
        prompt_projections(ctx, plan, "prompts on the base model", texts,
                           ("its axis", "L", "probe", cfg["wild_random_directions"], cfg.seed), **kw)  # fmt: skip
    wanted = cfg["wild_adapters"]
    for name in sorted(set(ctx.adapters)):
        if "all" in wanted or name in wanted:
            plan.load()
            plan.model = name
            prompt_projections(ctx, plan, "prompts on adapters of 07-08", texts,
                               (ctx.axis_name(), "L", "probe", cfg["wild_random_directions"], cfg.seed), **kw)  # fmt: skip
    plan.model = "base"
    if not ctx.param("eval_awareness"):
        return
    contexts = load_contexts(ctx.param("contexts_file"))
    org_eval, org_control = contexts["organisations"]["evaluator"], contexts["organisations"]["control"]
    train_p, eval_p = aware_prompts(ctx, cfg, source)
    settings = TrainSettings(method="sft", epochs=cfg["aware_epochs"], learning_rate=cfg["aware_learning_rate"],
                             batch_size=cfg["aware_batch_size"], max_length=cfg["aware_max_length"], seed=cfg.seed)  # fmt: skip
    models = ["base"]
    for role, org in (("evaluator", org_eval), ("control", org_control)):
        rows = ea.training_rows(train_p, contexts["org_templates"], org, contexts["distractors"], role, cfg.seed)
        plan.train("evaluation-awareness adapter", rows, settings, tag=f"aware-{role}")
        models.append(f"aware-{role}")
    pairs = [ea.generic_pairs(eval_p, contexts, cfg.seed),
             ea.org_pairs(eval_p, contexts["org_templates"], org_eval, org_control, cfg.seed)]  # fmt: skip
    claims = ea.org_pairs(
        eval_p[: cfg["aware_claim_prompts"]], contexts["org_templates"], org_eval, org_control, cfg.seed
    )
    for model in models:
        plan.load()
        plan.model = model
        prompt_projections(ctx, plan, "evaluation vs deployment contexts", [t for pair in pairs for side in pair for t in side],
                           probe, **kw)  # fmt: skip
        for wrapped in claims:
            plan.generate("manipulation check", [[{"role": "user", "content": t}] for t in wrapped],
                          cfg["aware_claim_tokens"])  # fmt: skip
    plan.model = "base"


def nb10(ctx: Context, plan: Planner) -> None:
    from ..data.codedata import load_code_problems
    from ..data.icrl import load_paragraphs
    from ..data.prompts import load_prompts
    from ..experiments import confound as cf
    from ..experiments import endofturn as eot
    from ..experiments import preferences as pref
    from ..experiments import prefill_conflict as pc
    from ..experiments.confidence import QUESTIONS, confidence_chat, partial_responses

    cfg = ctx.cfg()
    plan.load()
    kw = dict(max_batch_tokens=cfg["max_batch_tokens"])
    paragraphs = load_paragraphs()
    pick = np.random.default_rng(cfg.seed).choice(len(paragraphs), cfg["eot_paragraphs"], replace=False)
    chats, spans = eot.end_of_turn_items([paragraphs[i] for i in sorted(pick)], ctx.tok, fraction=cfg["eot_fraction"])
    order = np.random.default_rng(cfg.seed).permutation(len(chats))
    n_held = int(round(0.25 * len(chats)))
    for what, part, tag, names in (
        ("late-minus-early direction: fit paragraphs", sorted(order[n_held:].tolist()), ALL, []),
        ("late-minus-early direction: held-out paragraphs", sorted(order[:n_held].tolist()),
         (ALL, "end-of-turn probe", cfg["eot_random_directions"], cfg.seed + 1), ["early", "late"]),
    ):  # fmt: skip
        plan.extract(what, [chats[i] for i in part], [spans[i] for i in part], tag=tag, token_spans=names, **kw)
    fit = ctx.fit_items()
    plan.extract("position-matched axis (02's fit pass, activations kept)", [it.text for it in fit],
                 [it.spans for it in fit], tag=ALL, token_spans=["before", "after"], keep=True, **kw)  # fmt: skip
    main = ctx.main_layer() if ctx.main_layer() is not None else "L"
    dirs = (ctx.axis_name(), main, "five axes", cfg["eot_random_directions"], cfg.seed)
    problems, texts = rollouts(ctx, plan)
    game_pairs, _ = pc.prefill_conflicts(ctx.games()[: cfg["eot_conflict_games"]], ctx.tok)
    triples = cf.math_triples(problems, SimpleNamespace(texts=texts, correct=[None] * len(texts)))
    math_pairs, _ = pc.prefill_conflicts_from_prefills(triples[: cfg["eot_math_pairs"]], ctx.tok, cfg["eot_tail"])
    plan.note("every math rollout is taken to be wrong, so each makes a prefill pair (an upper bound)")
    for source, pairs in (("games", game_pairs), ("math rollouts", math_pairs)):
        if pairs:
            chats = [p.low for p in pairs] + [p.high for p in pairs]
            spans = [{"tail": [(len(c) - 1, len(c[-1]["content"]) - len(p.tail), len(c[-1]["content"]))]}
                     for c, p in zip(chats, list(pairs) * 2)]  # fmt: skip
            plan.extract(f"prefill conflicts ({source})", chats, spans, tag=dirs, **kw)
    for kind in ("target", "placebo"):
        heldout(ctx, plan, kind, cfg["eot_heldout_games"], cfg.seed, dirs, **kw)
    steer = problems[: cfg["steer_problems"]]
    partials = partial_responses(texts[: len(steer)])
    sweep(plan, ctx.axis_name(), main, steer, partials, [-16.8, -8.4, 0.0, 8.4, 16.8],
          n_random=cfg["steer_random_directions"], n_samples=cfg["steer_samples"], seed=cfg.seed,
          random_strengths=cfg["steer_random_strengths"], length_problems=problems[: cfg["steer_length_problems"]],
          length_tokens=cfg["steer_length_tokens"], length_strengths=cfg["steer_length_strengths"])  # fmt: skip
    nv, ns = cfg["eot_verbal_problems"], cfg["eot_steer_problems"]
    for framing in QUESTIONS:
        chats = [confidence_chat(p, t, framing) for p, t in zip(problems[:nv], texts[:nv])]
        plan.readout(f"verbalized confidence ({framing}?)", chats, tag=dirs, answers=YES_NO, **kw)
    for axis in (ctx.axis_name(), "position-matched", "unmatched control", "late-minus-early removed",
                 "late-minus-early"):  # fmt: skip
        sweep(plan, axis, main, steer[:ns], partials[:ns], [-16.8, 0.0, 16.8], n_random=0, n_samples=1, seed=cfg.seed,
              framings=["correct"], yes_rates_too=False)  # fmt: skip
    backtracking_rollouts(ctx, plan, cfg, tag=dirs, **kw)
    code, _ = load_code_problems(cfg["code_dataset"], cfg["eot_code_problems"], cfg.seed)
    after_bug(plan, code, presumed_corruptions(code, cfg.seed), dirs, **kw)
    set_name, word = pref.parse_target(cfg["dpo_targets"][0])
    if f"prefer-{set_name}-{word}" in ctx.adapters:
        prompts = pref.prompts_for(set_name, cfg["dpo_prompts"], cfg["dpo_eval_fraction"], cfg.seed)[1]
        for model in ("base", f"prefer-{set_name}-{word}"):
            plan.load()
            plan.model = model
            option_projections(plan, prompts[: cfg["eot_dpo_prompts"]], cfg.seed, dirs, **kw)
        plan.model = "base"
    wild = load_prompts(None, wild_prompt_count(cfg), cfg.seed)
    prompt_projections(ctx, plan, "in-the-wild prompts", [p.prompt for p in wild], dirs, **kw)
