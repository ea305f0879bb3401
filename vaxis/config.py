"""Run profiles: one small TOML file per profile in ``vaxis/profiles/``.

A notebook's parameters cell sets ``profile`` plus overrides (``model``,
``quantization``, ``run_dir``, ``seed``, ...); :func:`resolve` merges them: a
parameter left at ``None`` takes the profile's value. ``quantization`` takes
``"4bit"`` or ``"none"`` (``None`` means "whatever the profile says").

A profile may start from another: ``inherit = "paper"`` takes every setting of ``paper.toml`` and
replaces the keys the profile sets itself (``scale.toml`` does this). ``requires = "cuda"`` marks a
profile that only runs on a CUDA GPU (``python -m vaxis run`` refuses it on a CPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import tomllib

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"
REPO_ROOT = Path(__file__).resolve().parents[1]


def available_profiles() -> list[str]:
    """Names of the profiles shipped with vaxis."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


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

    def __getitem__(self, key: str):
        return self.extra[key]

    def get(self, key: str, default=None):
        return self.extra.get(key, default)

    def describe(self) -> str:
        """One line naming the profile, model and run folder, for notebook outputs."""
        q = self.quantization or "no quantization"
        return f"profile={self.profile} model={self.model} ({q}) seed={self.seed} run_dir={self.run_dir}"


def resolve(
    profile: str = "demo",
    model: str | None = None,
    quantization: str | None = None,
    run_dir: str | Path | None = None,
    seed: int | None = 0,
    **overrides,
) -> RunConfig:
    """Merge notebook parameters over profile ``profile`` and create ``run_dir``.

    ``run_dir`` defaults to ``runs/<profile>`` at the repository root. Keyword
    ``overrides`` whose value is not ``None`` replace profile keys (unknown keys are
    an error, to catch typos).
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
    extra = {k: v for k, v in settings.items() if k not in {"model", "quantization", "description"}}
    extra["description"] = settings.get("description", "")
    return RunConfig(
        profile=profile,
        model=model or settings["model"],
        quantization=q,
        run_dir=run,
        seed=int(seed if seed is not None else 0),
        extra=extra,
    )
