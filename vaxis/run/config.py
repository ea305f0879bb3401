"""Run profiles: one small TOML file per profile in ``vaxis/run/profiles/``.

A notebook's parameters cell sets ``profile`` plus overrides (``model``,
``quantization``, ``run_dir``, ``seed``, ...); :func:`resolve` merges them: a
parameter left at ``None`` takes the profile's value. ``quantization`` takes
``"4bit"`` or ``"none"`` (``None`` means "whatever the profile says").

A profile may start from another: ``inherit = "paper"`` takes every setting of ``paper.toml`` and
replaces the keys the profile sets itself (``scale.toml`` does this). ``requires = "cuda"`` marks a
profile that only runs on a CUDA GPU (``python -m vaxis run`` refuses it on a CPU).

``chat_template_kwargs`` (a profile key and a notebook parameter; e.g. ``{"enable_thinking": False}`` in
``paper.toml``) are the chat-template arguments every render uses (:func:`vaxis.core.chat.bind_template_kwargs`);
unset (``None``), a template that takes ``enable_thinking`` gets ``False``, as the authors render Qwen3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from ..core.cache import REPO_ROOT  # noqa: F401 (the repository's root, read by the run machinery from here)

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"


def available_profiles() -> list[str]:
    """Names of the profiles shipped with vaxis."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def own_model_of(profile: str) -> tuple[str, str | None]:
    """``(model, quantization)`` that profile ``profile`` names itself (quantization ``None`` for none): the only
    runs whose figures and report are published into the repository."""
    own = load_profile(profile)
    return own["model"], (None if own.get("quantization", "none") in ("none", None) else own["quantization"])


def load_profile(name: str, folder: Path | None = None) -> dict:
    """The settings of profile ``name`` (``folder``: default :data:`PROFILE_DIR`) as a dict.

    A profile that says ``inherit = "other"`` gets ``other``'s settings updated with its own keys (the
    ``inherit`` key itself is dropped); chains are followed, and a cycle or an unknown parent is an error.
    """
    folder = PROFILE_DIR if folder is None else Path(folder)
    chain: list[str] = []
    layers: list[dict] = []
    current: str | None = name
    while current is not None:
        if current in chain:
            raise ValueError(f"profile {name!r}: inheritance cycle {' -> '.join([*chain, current])}")
        path = folder / f"{current}.toml"
        if not path.exists():
            known = sorted(p.stem for p in folder.glob("*.toml"))
            if chain:
                raise ValueError(
                    f"profile {chain[-1]!r} says inherit = {current!r}, which is not a profile: choose one of {known}"
                )
            raise ValueError(f"unknown profile {name!r}: choose one of {known}")
        with open(path, "rb") as handle:
            settings = tomllib.load(handle)
        parent = settings.pop("inherit", None)
        if parent is not None and not isinstance(parent, str):
            raise ValueError(f"profile {current!r}: inherit = {parent!r} must be a profile name (a string)")
        chain.append(current)
        layers.append(settings)
        current = parent
    merged: dict = {}
    for settings in reversed(layers):
        merged.update(settings)
    return merged


@dataclass
class RunConfig:
    """Resolved settings of one notebook run. ``extra`` holds profile keys that
    are not fields here (e.g. ``n_random_directions``)."""

    profile: str
    model: str
    quantization: str | None
    run_dir: Path
    seed: int
    extra: dict = field(default_factory=dict)
    chat_template_kwargs: dict | None = None

    def __getitem__(self, key: str):
        return self.extra[key]

    def get(self, key: str, default=None):
        return self.extra.get(key, default)

    def describe(self) -> str:
        """One line naming the profile, model and run folder, for notebook outputs."""
        q = self.quantization or "no quantization"
        chat = "" if self.chat_template_kwargs is None else f" chat_template_kwargs={self.chat_template_kwargs}"
        return f"profile={self.profile} model={self.model} ({q}){chat} seed={self.seed} run_dir={self.run_dir}"


def resolve(
    profile: str = "demo",
    model: str | None = None,
    quantization: str | None = None,
    run_dir: str | Path | None = None,
    seed: int | None = 0,
    chat_template_kwargs: dict | None = None,
    **overrides,
) -> RunConfig:
    """Merge notebook parameters over profile ``profile`` and create ``run_dir``.

    ``run_dir`` defaults to ``runs/<profile>`` at the repository root. Keyword
    ``overrides`` whose value is not ``None`` replace profile keys (unknown keys are
    an error, to catch typos). ``chat_template_kwargs``: a dict of chat-template arguments over the profile's
    (``None``: the profile's, which may be unset: then the template's default, see the module docstring).
    """
    settings = load_profile(profile)
    unknown = sorted(k for k in overrides if k not in settings)
    if unknown:
        raise ValueError(f"unknown parameters {unknown}: profile keys are {sorted(settings)}")
    for key, value in overrides.items():
        if value is not None:
            settings[key] = value
    q = quantization if quantization is not None else settings.get("quantization", "none")
    if q in ("none", "None", "", None):
        q = None
    elif q != "4bit":
        raise ValueError(f"quantization={q!r}: use '4bit' or 'none'")
    run = Path(run_dir) if run_dir else REPO_ROOT / "runs" / profile
    run.mkdir(parents=True, exist_ok=True)
    chat = chat_template_kwargs if chat_template_kwargs is not None else settings.get("chat_template_kwargs")
    if chat is not None and (not isinstance(chat, dict) or not all(isinstance(k, str) for k in chat)):
        raise ValueError(
            f"chat_template_kwargs={chat!r}: give a dict of chat-template arguments, e.g. "
            '{"enable_thinking": False}, or None for the default'
        )
    fields = {"model", "quantization", "description", "chat_template_kwargs"}
    extra = {k: v for k, v in settings.items() if k not in fields}
    extra["description"] = settings.get("description", "")
    return RunConfig(
        profile=profile,
        model=model or settings["model"],
        quantization=q,
        run_dir=run,
        seed=int(seed if seed is not None else 0),
        extra=extra,
        chat_template_kwargs=None if chat is None else dict(chat),
    )


# ---------------------------------------------------------------------------- the paper_ci rule
# `paper_ci.toml` is `paper.toml` on the tiny model with smaller sizes, by this one rule, so that CI executes every
# code path the paper profile takes (0 meaning "all", "arena" offline, "both", ["all"], the n_games table, non-thinking
# chat rendering, 51 adapters' worth of bookkeeping) in minutes. tests/test_profiles.py checks that the two files
# differ exactly as the rule says, so they cannot drift apart.
CI_MODEL = {"model": "tiny-qwen3-think", "quantization": "none"}
CI_COUNT_DIVISOR = 10  # counts: ceil(v / 10), at least 2; 0 ("all") stays 0
CI_TOKEN_DIVISOR = 20  # generated-token lengths, and the bands and windows read over them: ceil(v / 20), at least 2
CI_DIRECTION_DIVISOR = 5  # random directions, shuffles and splits: ceil(v / 5), at least 2
CI_TARGET_STEP = 20  # training-target lists: every 20th, from the first (25 DPO targets -> 2 targets, 5 models)
CI_COUNTS = (
    "n_games", "confidence_problems", "confidence_samples", "steer_problems", "steer_samples", "steer_length_problems",
    "backtracking_problems", "backtracking_samples", "backtracking_steer_problems", "code_problems",
    "verbosity_problems", "verbosity_samples", "dpo_prompts", "dpo_eval_prompts", "dpo_sentences", "dpo_code_prompts",
    "dpo_boundary_games", "sft_items", "sft_other_items", "sft_control_rows", "sft_accuracy_items", "wild_prompts",
    "aware_train_prompts", "aware_eval_prompts", "aware_claim_prompts", "eot_paragraphs", "eot_conflict_games",
    "eot_math_pairs", "eot_heldout_games", "eot_verbal_problems", "eot_steer_problems", "eot_code_problems",
    "eot_dpo_prompts", "eot_wild_prompts",
)  # fmt: skip
CI_TOKENS = (
    "confidence_max_new_tokens", "steer_length_tokens", "backtracking_max_new_tokens", "backtracking_band",
    "backtracking_window", "backtracking_steer_tokens", "verbosity_max_new_tokens", "dpo_answer_tokens",
    "dpo_code_tokens", "sft_math_tokens", "sft_arc_tokens", "aware_claim_tokens",
)  # fmt: skip
CI_DIRECTIONS = (
    "n_random_directions", "n_shuffles", "n_splits", "steer_random_directions", "backtracking_random_directions",
    "code_random_directions", "verbosity_random_directions", "dpo_random_directions", "sft_random_directions",
    "wild_random_directions", "eot_random_directions",
)  # fmt: skip
CI_EPOCHS = ("dpo_epochs", "sft_epochs", "aware_epochs")  # one epoch
CI_TARGET_LISTS = ("dpo_targets",)


def _shrunk(value, divisor: int):
    if isinstance(value, dict):
        return {k: _shrunk(v, divisor) for k, v in value.items()}
    return 0 if value == 0 else max(2, -(-int(value) // divisor))


def ci_settings(paper: dict) -> dict:
    """``paper``'s settings shrunk by the paper_ci rule (the constants above); every other key is unchanged
    (strengths, layers, fractions, learning rates, batch sizes, training and context lengths, dataset choices,
    chat-template arguments). ``description`` is left to the caller."""
    out = dict(paper)
    out.update(CI_MODEL)
    for keys, divisor in ((CI_COUNTS, CI_COUNT_DIVISOR), (CI_TOKENS, CI_TOKEN_DIVISOR)):
        for key in keys:
            if key in out:
                out[key] = _shrunk(out[key], divisor)
    for key in CI_DIRECTIONS:
        if key in out:
            out[key] = _shrunk(out[key], CI_DIRECTION_DIVISOR)
    for key in CI_EPOCHS:
        if key in out:
            out[key] = 1.0
    for key in CI_TARGET_LISTS:
        if key in out:
            out[key] = list(out[key][::CI_TARGET_STEP])
    return out
