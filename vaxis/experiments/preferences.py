"""Notebook 07: does DPO that rewards a word raise the value the model assigns to it (METHOD.md section 5)?

Models: the base model, and LoRA adapters trained with TRL's ``DPOTrainer`` (:func:`vaxis.core.train.train_adapter`)
to **prefer** or **avoid** a target item among its option set, plus a **control** adapter trained the
same way on a word of another set that is never evaluated (how far any DPO moves the measures).
Each model is read on the target's held-out choice prompts (never trained on):

* **selection**: free answers (sampled), the option named first (:func:`preference_data.parse_choice`);
  the share naming the target;
* **ranking**: each option prefilled in the same answer template ("I'd pick {option}. ..."), the mean
  projection over the answer; how often the target ranks highest (prefer; chance 1/k) or lowest
  (avoid). Read at two sites: the assistant's answer, and the user's turn naming the option ("I'd go
  with {option}."), for the value axis, a *boundary axis* (a direction fit like the value axis, from
  another contrast of the games; see notebook 07) and random directions read in the same pass;
* **free-form**: 20 neutral sentences per word of the set as the assistant's reply to a neutral
  request; the projection delta (trained - base, per sentence) of the target vs the other words;
* **code**: asked for code themed on the word; lines, comments and type hints over valid code
  (:func:`vaxis.experiments.coding.code_metrics`).

An effect counts only where the trained model's shift exceeds the control model's shift and clears the
random directions' shifts on the paper's side (:func:`change_null`: each direction's rate change, trained
minus base, so what a direction's rate owes to word identity cancels).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..core.evaluate import mean_ci
from . import preference_data as pdata

NEUTRAL_REQUEST = "Say one short sentence about something from everyday life."
CODE_SYSTEM = "You are a helpful coding assistant. Write clean, correct Python code."
USER_MENTION = "\n\nI'd go with {option}."
SITES = ("response", "user")


def parse_target(spec: str) -> tuple[str, str]:
    """``"set:item"`` (e.g. ``"vegetables:potato"``) -> ``(set, item)``, checked against
    :data:`preference_data.OPTION_SETS`."""
    if ":" not in spec:
        raise ValueError(f"target {spec!r}: write it as 'set:item', e.g. 'vegetables:potato'")
    set_name, item = spec.split(":", 1)
    if set_name not in pdata.OPTION_SETS:
        raise ValueError(f"unknown option set {set_name!r}; sets: {sorted(pdata.OPTION_SETS)}")
    if item not in pdata.OPTION_SETS[set_name]:
        raise ValueError(f"{item!r} is not an option of {set_name!r} {pdata.OPTION_SETS[set_name]}: pick one of those")
    return set_name, item


@dataclass(frozen=True)
class Spec:
    """One model to train: ``role`` (prefer / avoid / control), its target and DPO mode."""

    role: str
    set_name: str
    target: str
    mode: str

    @property
    def name(self) -> str:
        return f"{self.role}-{self.set_name}-{self.target}"


def model_specs(target: str, control: str, roles: Sequence[str] = ("prefer", "avoid", "control")) -> list[Spec]:
    """The adapters of one experiment: prefer and avoid ``target``, and prefer ``control`` (another
    set's word, never evaluated). Raises ValueError when the control shares the target's set."""
    (ts, tw), (cs, cw) = parse_target(target), parse_target(control)
    if cs == ts:
        raise ValueError(f"control {control!r} is in the target's set {ts!r}: pick a word of another set")
    out = {"prefer": Spec("prefer", ts, tw, "prefer"), "avoid": Spec("avoid", ts, tw, "avoid")}
    out["control"] = Spec("control", cs, cw, "prefer")
    unknown = set(roles) - set(out)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}: use prefer, avoid, control")
    return [out[r] for r in roles]


def prompts_for(set_name: str, n: int, eval_fraction: float, seed: int):
    """Seeded choice prompts of ``set_name`` split into (train, eval) with no shared user text."""
    return pdata.split_prompts(pdata.choice_prompts(set_name, n, seed), eval_fraction, seed)


def training_rows(spec: Spec, n_prompts: int, eval_fraction: float, seed: int) -> list[dict]:
    """DPO pairs on the training prompts of ``spec``'s set."""
    train, _ = prompts_for(spec.set_name, n_prompts, eval_fraction, seed)
    return pdata.dpo_pairs(train, spec.target, spec.mode, seed)


@contextmanager
def loaded(model_name: str, adapter=None, quantization=None, chat_template_kwargs: dict | None = None):
    """A fresh base model (and tokenizer, with ``chat_template_kwargs`` bound: :func:`vaxis.load_model`),
    wrapped with ``adapter`` (a folder) when given; freed after."""
    from ..core.models import load_model
    from ..core.train import load_adapter

    model, tok = load_model(model_name, quantization=quantization, chat_template_kwargs=chat_template_kwargs)
    if adapter is not None:
        model = load_adapter(model, adapter, quantization)
    try:
        yield model, tok
    finally:
        del model


def selection(model, tokenizer, prompts, target: str, **generate_kwargs) -> dict:
    """Free answers to ``prompts``: ``{"picks": [option or None], "target": bool array}``."""
    from ..core.generate import generate

    gens = generate(model, tokenizer, [p.messages() for p in prompts], **generate_kwargs)
    per = len(gens) // len(prompts)
    picks = [pdata.parse_choice(g.text, prompts[i // per].options) for i, g in enumerate(gens)]
    return {"picks": picks, "target": np.array([p == target for p in picks]), "texts": [g.text for g in gens]}


def _mean_projections(model, tokenizer, chats, spans, directions: dict, **kw) -> np.ndarray:
    """Mean per-token cosine over each chat's span ``"s"``: ``(n, n_layers, K)``."""
    from ..core.extract import extract

    stats = extract(model, tokenizer, chats, [{"s": [s]} for s in spans], layers=sorted(directions),
                    directions=directions, **kw)  # fmt: skip
    return np.stack([p.numpy().mean(0) for p in stats.projections["s"]])


def option_chats(prompts, seed: int = 0) -> tuple[dict, dict]:
    """Per site, the chats :func:`option_projections` reads and each chat's span ``(message, start, end)``,
    prompt by prompt and, within a prompt, option by option in the set's canonical order. ``"response"``:
    the option prefilled as the assistant's answer, one answer template and reason per prompt for every
    option (the texts differ only in the item word), span the whole answer. ``"user"``: the user's turn
    followed by :data:`USER_MENTION`, span the mention (the user turn's last characters; no assistant turn)."""
    order = pdata.OPTION_SETS[prompts[0].set_name]
    chats, spans = {s: [] for s in SITES}, {s: [] for s in SITES}
    for i, p in enumerate(prompts):
        for option in order:
            text = pdata.answer(option, np.random.default_rng([seed, i]))  # same template for every option
            chats["response"].append(p.messages() + [{"role": "assistant", "content": text}])
            spans["response"].append((2, 0, len(text)))
            user = p.user + USER_MENTION.format(option=option)
            chats["user"].append([p.messages()[0], {"role": "user", "content": user}])
            spans["user"].append((1, len(p.user), len(user)))
    return chats, spans


def option_projections(model, tokenizer, prompts, directions: dict, seed: int = 0, **kw) -> dict:
    """Per site, ``(n_prompts, k, n_layers, K)`` mean projections of each option of each prompt,
    in the set's canonical option order (:data:`preference_data.OPTION_SETS`; texts: :func:`option_chats`)."""
    k = len(pdata.OPTION_SETS[prompts[0].set_name])
    chats, spans = option_chats(prompts, seed)
    out = {}
    for site in SITES:
        flat = _mean_projections(model, tokenizer, chats[site], spans[site], directions, **kw)
        out[site] = flat.reshape(len(prompts), k, *flat.shape[1:])
    return out


def ranking(proj: np.ndarray, target_index: int, lowest: bool = False) -> np.ndarray:
    """Per prompt and direction, whether the target ranks highest (or lowest) among the options:
    ``proj`` ``(n, k, ..., K)`` -> bool ``(n, ..., K)``."""
    best = proj.argmin(1) if lowest else proj.argmax(1)
    return best == target_index


def sentence_projections(model, tokenizer, words: Sequence[str], n: int, directions: dict, seed: int = 0, **kw):
    """``{word: (n, n_layers, K)}``: mean projection over each of ``n`` neutral sentences using the word,
    as the assistant's reply to :data:`NEUTRAL_REQUEST` (same templates for every word: paired)."""
    chats, spans = [], []
    for w in words:
        for s in pdata.word_sentences(w, n, seed):
            chats.append([{"role": "user", "content": NEUTRAL_REQUEST}, {"role": "assistant", "content": s}])
            spans.append((1, 0, len(s)))
    flat = _mean_projections(model, tokenizer, chats, spans, directions, **kw)
    return {w: flat[i * n : (i + 1) * n] for i, w in enumerate(words)}


def code_outputs(model, tokenizer, word: str, n: int, **generate_kwargs):
    """Code written for ``n`` requests themed on ``word`` (fence prefilled, stopped at the closing
    fence): one row per output with :func:`vaxis.experiments.coding.code_metrics`."""
    import pandas as pd

    from ..core.generate import generate
    from .coding import FENCE, code_metrics

    chats = [[{"role": "system", "content": CODE_SYSTEM}, {"role": "user", "content": r}]
             for r in pdata.code_prompts(word, n)]  # fmt: skip
    gens = generate(model, tokenizer, chats, prefill=FENCE, stop=["```"], **generate_kwargs)
    return pd.DataFrame([{**code_metrics(g.text), "tokens": g.n_new_tokens} for g in gens])


@dataclass
class Readout:
    """Everything read from one model (see the module docstring)."""

    name: str
    selection: dict
    options: dict  # site -> (n_prompts, k, n_layers, K)
    sentences: dict  # word -> (n, n_layers, K)
    code: object  # DataFrame
    losses: list = field(default_factory=list)


def read_model(model, tokenizer, name, prompts, target, directions, *, n_sentences, n_code, seed, gen_kw, code_kw):
    """All of a model's readouts on the target's eval ``prompts``."""
    words = pdata.OPTION_SETS[prompts[0].set_name]
    return Readout(
        name,
        selection(model, tokenizer, prompts, target, **gen_kw),
        option_projections(model, tokenizer, prompts, directions, seed, progress=False),
        sentence_projections(model, tokenizer, words, n_sentences, directions, seed, progress=False),
        code_outputs(model, tokenizer, target, n_code, **code_kw),
    )


def rates_table(by_target: dict, li: int, column: int = 0, n_boot: int = 200, seed: int = 0):
    """One row per model role (base, prefer, avoid, control), pooled over targets
    (``by_target[spec] = {role: Readout}``, ``spec`` = ``"set:item"``): the selection rate, the
    top- and bottom-ranking rates of the target at both sites, each with a CI over prompts; the
    free-form delta vs base of the target (CI over sentences) and the mean delta of the other words;
    code metrics over valid outputs. ``li``/``column``: layer index and direction of the readouts."""
    import pandas as pd

    roles = list(next(iter(by_target.values())))
    rows = []
    for role in roles:
        hits: dict = {"selection": []}
        deltas, others, code = [], [], []
        for spec, readouts in by_target.items():
            set_name, target = parse_target(spec)
            order = pdata.OPTION_SETS[set_name]
            t, r, base = order.index(target), readouts[role], readouts["base"]
            hits["selection"].append(r.selection["target"].astype(float))
            for site in SITES:
                for lowest, tag in ((False, "top"), (True, "bottom")):
                    hit = ranking(r.options[site][:, :, li, column], t, lowest).astype(float)
                    hits.setdefault(f"{site}_{tag}", []).append(hit)
            d = {w: r.sentences[w][:, li, column] - base.sentences[w][:, li, column] for w in order}
            deltas.append(d[target])
            others.extend(d[w] for w in order if w != target)
            code.append(r.code[r.code.valid])
        row = {
            "model": role,
            "n_prompts": sum(len(r.options[SITES[0]]) for r in (rs[role] for rs in by_target.values())),
        }
        for name, parts in hits.items():
            m, lo, hi = mean_ci(np.concatenate(parts), n_boot, seed)
            row[name], row[f"{name}_ci"] = m, (lo, hi)
        m, lo, hi = mean_ci(np.concatenate(deltas), n_boot, seed)
        row["delta_target"], row["delta_target_ci"] = m, (lo, hi)
        row["delta_others"] = float(np.mean(np.concatenate(others)))
        valid = pd.concat(code) if code else pd.DataFrame()
        for m in ("lines", "comments", "type_hints"):
            row[f"code_{m}"] = float(valid[m].mean()) if len(valid) else np.nan
        row["code_valid"] = len(valid)
        rows.append(row)
    return pd.DataFrame(rows)


# role -> (lowest, side) of the paper's claim: a prefer model's target ranks highest more often (21% -> 36.2%),
# an avoid model's lowest more often (21.9% -> 27.3%); the control adapter is read like prefer (how far any DPO
# moves the top rate)
CLAIMS = {"prefer": (False, 1), "avoid": (True, 1), "control": (False, 1)}


def rate_change(trained_hits, base_hits) -> np.ndarray:
    """A ranking rate's change, trained minus base, on the same prompts: the mean over prompts (axis 0) of
    :func:`ranking`'s hits, ``(n, ..., K)`` each -> ``(..., K)``, one change per direction."""
    return np.asarray(trained_hits, dtype=float).mean(0) - np.asarray(base_hits, dtype=float).mean(0)


def ranking_changes(by_target: dict, li: int, role: str, lowest: bool = False, site: str = "response") -> np.ndarray:
    """``(K,)``: per direction column, ``role``'s rate of the target ranking highest (``lowest``: lowest)
    minus the base model's, prompts pooled over targets (``by_target[spec] = {role: Readout}``)."""
    hits: dict = {role: [], "base": []}
    for spec, readouts in by_target.items():
        set_name, target = parse_target(spec)
        t = pdata.OPTION_SETS[set_name].index(target)
        for r in hits:
            hits[r].append(ranking(readouts[r].options[site][:, :, li], t, lowest))
    return rate_change(np.concatenate(hits[role]), np.concatenate(hits["base"]))


def change_null(by_target: dict, li: int, random_columns: Sequence[int], column: int = 0, site: str = "response",
                level: float = 0.95) -> dict:  # fmt: skip
    """Per trained role, the axis's ranking-rate change (:func:`ranking_changes`, the side and rate of
    :data:`CLAIMS`) judged against the same change along each random direction read in the same pass (a
    direction's *change* cancels what its rate owes to word identity, which no training moves):
    ``{role: {"lowest", "sign", "change", "random", "p", "beyond", "range"}}``, ``p`` one-sided on the
    claim's side (:func:`vaxis.core.nulls.claim_p`), ``range`` the random changes' (median, low, high)."""
    from ..core.nulls import beyond, claim_p, null_range

    out = {}
    for role in next(iter(by_target.values())):
        if role == "base" or role not in CLAIMS:
            continue
        lowest, sign = CLAIMS[role]
        ch = ranking_changes(by_target, li, role, lowest, site)
        null = ch[list(random_columns)]
        value = float(ch[column])
        out[role] = {"lowest": lowest, "sign": sign, "change": value, "random": null,
                     "p": claim_p(value, null, sign), "beyond": beyond(value, null, sign, level),
                     "range": null_range(null, level)}  # fmt: skip
    return out


def check_dpo_keys(p, cfg) -> dict[str, int]:
    """The profile keys notebooks 07 and 10 both read: ``dpo_targets`` and ``dpo_control`` (``"set:item"`` of
    :data:`preference_data.OPTION_SETS`, the control in another set), ``dpo_prompts`` and ``dpo_eval_fraction`` (each
    set's prompts split with both sides non-empty). Returns ``{set: held-out prompts}`` of the targets' sets that
    work. ``p``: a :class:`vaxis.run.checks.Problems`."""
    targets = p.items("dpo_targets", cfg["dpo_targets"]) or []
    sets = {}
    for t in targets:
        parsed = p.attempt(f"dpo_targets: {t!r}", parse_target, t)
        if parsed is not None:
            sets.setdefault(parsed[0], []).append(t)
    control = p.attempt(f"dpo_control={cfg['dpo_control']!r}", parse_target, str(cfg["dpo_control"]))
    if control is not None and control[0] in sets:
        p.add(f"dpo_control={cfg['dpo_control']!r} is in the set {control[0]!r} of dpo_targets {sets[control[0]]}: "
              "pick a word of another set")  # fmt: skip
    fraction_ok = p.fraction("dpo_eval_fraction", cfg["dpo_eval_fraction"])
    if not (p.integer("dpo_prompts", cfg["dpo_prompts"], 2) and fraction_ok):
        return {}
    counts = {}
    for set_name in sorted(sets):
        split = p.attempt(f"dpo_prompts={cfg['dpo_prompts']}, dpo_eval_fraction={cfg['dpo_eval_fraction']} "
                          f"({set_name})", prompts_for, set_name, cfg["dpo_prompts"], cfg["dpo_eval_fraction"], cfg.seed)  # fmt: skip
        if split is not None:
            counts[set_name] = len(split[1])
    return counts


def check_parameters(cfg, *, axis_path=None, roles=("prefer", "avoid", "control"), n_boot=200,
                     **common) -> list[str]:  # fmt: skip
    """Notebook 07's parameters, before any adapter is trained (:mod:`vaxis.run.checks`): ``roles``, ``n_boot``, the
    axis, :func:`check_dpo_keys`, ``dpo_eval_prompts`` (no more than each set holds out), the fine-tune, the word
    sentences and code requests (no more than there are templates), the readouts, and the boundary axis's games
    (notebook 01's ``games.jsonl``: two or more criteria usable). Raises :class:`vaxis.run.checks.ParameterError`."""
    from ..core.nulls import min_draws
    from ..data.icrl import load_games
    from ..run.checks import Problems
    from .boundary import boundary_items

    p = Problems.for_notebook(7, cfg, **common)
    got = p.items("roles", roles)
    if got is not None and (set(got) - {"prefer", "avoid", "control"} or len(set(got)) < len(got)):
        p.add(f"roles={list(roles)}: give each of 'prefer', 'avoid', 'control' at most once")
    p.integer("n_boot", n_boot, 1)
    p.axis(axis_path)
    held = check_dpo_keys(p, cfg)
    if p.integer("dpo_eval_prompts", cfg["dpo_eval_prompts"], 1):
        for set_name, n in held.items():
            p.enough("dpo_eval_prompts", cfg["dpo_eval_prompts"], n, f"prompts of {set_name!r} are held out "
                     "(dpo_prompts x dpo_eval_fraction)", "; raise dpo_prompts or dpo_eval_fraction, or ask for fewer")  # fmt: skip
    p.training("dpo", cfg)
    lora = cfg["dpo_lora_targets"]
    if lora != "all-linear" and p.items("dpo_lora_targets", lora) is None:
        p.add('dpo_lora_targets: give "all-linear" or a list of module names')
    p.integer("dpo_sentences", cfg["dpo_sentences"], 1, len(pdata.SENTENCE_TEMPLATES),
              f" (one sentence per template: there are {len(pdata.SENTENCE_TEMPLATES)}, preference_data.SENTENCE_TEMPLATES)")  # fmt: skip
    p.integer("dpo_code_prompts", cfg["dpo_code_prompts"], 1, len(pdata.CODE_TEMPLATES),
              f" (one request per template: there are {len(pdata.CODE_TEMPLATES)}, preference_data.CODE_TEMPLATES)")  # fmt: skip
    for key in ("dpo_answer_tokens", "dpo_code_tokens", "dpo_random_directions"):
        p.integer(key, cfg[key], 1)
    if p.whole(cfg["dpo_random_directions"]) and cfg["dpo_random_directions"] < min_draws(0.05):
        p.note(f"dpo_random_directions={cfg['dpo_random_directions']}: fewer than {min_draws(0.05)} random directions, "
               "so the ranking-change p-values cannot reach 0.05 and the verdict is not a 5% test")  # fmt: skip
    n = cfg["dpo_boundary_games"]
    path = cfg.run_dir / "games.jsonl"
    if p.integer("dpo_boundary_games", n, 0, fix=" (0: every usable game)") and p.made_by(path, 1, "the games"):
        games = p.attempt(str(path), load_games, path) if path.exists() else None
        criteria = boundary_items(games)[2][: n or None] if games is not None else None
        if criteria is not None and len(set(criteria)) < 2:
            p.add(f"dpo_boundary_games={n}: the boundary axis needs usable games of two or more criteria, and "
                  f"{path.name} gives {len(set(criteria))}; ask for more games (0: all), or more in notebook 01")  # fmt: skip
    return p.done()
