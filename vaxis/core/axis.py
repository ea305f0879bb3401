"""The value axis: fitting it (Eq. 1), saving it, and using it.

Fit (METHOD.md section 2): for each game ``g`` with criterion ``c(g)`` and each residual
index ``L``, the contrast is ``d_{g,L} = mean_{t in after} h_{t,L} - mean_{t in before} h_{t,L}``
on the first post-discovery rewrite. The axis is

    v_L = mean over criteria c of [ mean over games g of c of d_{g,L} ]     (weighting="criterion")
    v_L = mean over games g of d_{g,L}                                     (weighting="conversation", Eq. 1 as written)

An :class:`Axis` holds ``v_L`` for every extracted layer with the metadata needed to use it
again: model, layer convention, per-layer mean residual norm (for steering strengths in %
of norm), the chosen main layer, data hash, seed and evaluation table. It is saved as
safetensors plus a JSON sidecar.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .cache import atomic_write, atomic_write_json

LAYER_CONVENTION = (
    "residual index L = hidden_states[L]: 0 = embedding output, k = output of decoder block k-1, "
    "always before the final norm"
)


def game_contrasts(after_means: torch.Tensor, before_means: torch.Tensor) -> torch.Tensor:
    """``d_g = mean(after) - mean(before)`` per game: ``(n_games, n_layers, d)``."""
    if after_means.shape != before_means.shape:
        raise ValueError(f"after {tuple(after_means.shape)} and before {tuple(before_means.shape)} differ in shape")
    if torch.isnan(after_means).any() or torch.isnan(before_means).any():
        raise ValueError("some games have an empty before or after span (NaN means): drop them before fitting")
    return after_means - before_means


def fit_axis(
    contrasts: torch.Tensor,
    groups: Sequence[str] | None = None,
    weighting: str = "criterion",
    signs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Average per-game contrasts into ``v_L`` (see the module docstring).

    Args:
        contrasts: ``(n_games, n_layers, d)`` from :func:`game_contrasts`.
        groups: criterion of each game (needed for ``weighting="criterion"``).
        weighting: ``"criterion"`` (each criterion counts once) or ``"conversation"``.
        signs: optional ``(n_games,)`` of +1/-1: flips a game's before/after labels
            (used for the shuffled-label null).

    Returns:
        ``(n_layers, d)`` axis (not normalised).
    """
    if contrasts.dim() != 3 or len(contrasts) == 0:
        raise ValueError(f"contrasts must be (n_games > 0, n_layers, d), got {tuple(contrasts.shape)}")
    x = contrasts.double()
    if signs is not None:
        x = x * signs.double().view(-1, 1, 1)
    if weighting == "conversation":
        return x.mean(0).float()
    if weighting != "criterion":
        raise ValueError(f"weighting={weighting!r}: use 'criterion' or 'conversation'")
    if groups is None or len(groups) != len(contrasts):
        raise ValueError("weighting='criterion' needs one criterion name per game (groups=)")
    names = sorted(set(groups))
    index = torch.tensor([names.index(g) for g in groups])
    per_group = torch.zeros(len(names), *x.shape[1:], dtype=torch.float64).index_add_(0, index, x)
    counts = torch.bincount(index, minlength=len(names)).double().view(-1, 1, 1)
    return (per_group / counts).mean(0).float()


def balanced_signs(groups: Sequence[str], generator: torch.Generator) -> torch.Tensor:
    """Random before/after label swaps, one sign per game, balanced so that a real shift cancels.

    Inside each criterion exactly half of the games are swapped (``-1``), chosen at random; for
    a criterion with an odd number of games the left-over game's sign alternates over the
    odd-sized criteria (in random order), so the swaps stay balanced overall. With contrasts
    ``d_g = mu + mu_c + e_g`` (a shift shared by all games, a per-criterion shift, noise), a
    criterion's signed mean is ``sum_g s_g e_g / n_c``: ``mu`` and ``mu_c`` cancel exactly for
    even-sized criteria, so the null axis is fit from noise alone. Flipping signs
    independently per game (the naive null) leaves ``(net sign) * mu`` in every null axis,
    which is leaked signal, not chance. Returns ``(n_games,)`` of +1/-1.
    """
    groups = list(groups)
    signs = torch.ones(len(groups))
    leftovers = []
    for name in sorted(set(groups)):
        members = torch.tensor([i for i, g in enumerate(groups) if g == name])
        members = members[torch.randperm(len(members), generator=generator)]
        half = len(members) // 2
        signs[members[:half]] = -1.0
        if len(members) % 2:
            leftovers.append(int(members[-1]))
    order = torch.randperm(len(leftovers), generator=generator).tolist()
    start = int(torch.randint(0, 2, (1,), generator=generator))
    for rank, j in enumerate(order):
        signs[leftovers[j]] = 1.0 if (rank + start) % 2 == 0 else -1.0
    return signs


def shuffled_label_axes(
    contrasts: torch.Tensor, groups: Sequence[str] | None, n: int, seed: int, weighting: str = "criterion"
) -> torch.Tensor:
    """``n`` null axes fit after swapping the before/after labels of a balanced half of the games
    (:func:`balanced_signs`; all games count as one criterion when ``groups`` is None):
    ``(n, n_layers, d)``. Under the null hypothesis (no before/after difference) every game's
    contrast is symmetric, so the real axis is one draw from this distribution, and a
    permutation p-value compares the real axis's AUROC with the null axes'."""
    gen = torch.Generator().manual_seed(seed)
    labels = list(groups) if groups is not None else ["all"] * len(contrasts)
    if len(labels) != len(contrasts):
        raise ValueError(f"{len(labels)} criteria for {len(contrasts)} games")
    return torch.stack([fit_axis(contrasts, groups, weighting, signs=balanced_signs(labels, gen)) for _ in range(n)])


def random_directions(n: int, n_layers: int, d: int, seed: int) -> torch.Tensor:
    """``n`` random unit directions per layer (isotropic Gaussian): ``(n, n_layers, d)``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_layers, d, generator=gen)
    return x / x.norm(dim=-1, keepdim=True)


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity of ``(n_layers, d)`` vectors: ``(n_layers, n_layers)``."""
    unit = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return unit @ unit.T


@dataclass
class Axis:
    """A fitted value axis. ``vectors[i]`` is ``v_L`` for ``L = layers[i]``."""

    vectors: torch.Tensor
    layers: list[int]
    mean_norms: torch.Tensor
    main_layer: int
    model: str
    hidden_size: int
    n_blocks: int
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.vectors.shape != (len(self.layers), self.hidden_size):
            raise ValueError(
                f"vectors {tuple(self.vectors.shape)} do not match {len(self.layers)} layers x {self.hidden_size}"
            )
        if self.main_layer not in self.layers:
            raise ValueError(f"main layer {self.main_layer} is not among the axis layers {self.layers}")

    def vector(self, layer: int | None = None) -> torch.Tensor:
        """``v_L`` at residual index ``layer`` (default: the main layer)."""
        layer = self.main_layer if layer is None else layer
        if layer not in self.layers:
            raise KeyError(
                f"the axis has no layer {layer}; it has residual indices {self.layers[0]}..{self.layers[-1]}"
            )
        return self.vectors[self.layers.index(layer)]

    def unit(self, layer: int | None = None) -> torch.Tensor:
        """``v_L / |v_L|``."""
        v = self.vector(layer)
        return v / v.norm()

    def mean_norm(self, layer: int | None = None) -> float:
        """Mean residual-stream norm at ``layer``, measured on the model when the axis was fit."""
        layer = self.main_layer if layer is None else layer
        return float(self.mean_norms[self.layers.index(layer)])

    def steering_vector(self, percent_of_norm: float, layer: int | None = None) -> torch.Tensor:
        """``alpha * v_L / |v_L|`` with ``alpha = percent_of_norm / 100 * mean residual norm at L``."""
        from .hooks import steering_vector

        return steering_vector(self.vector(layer), percent_of_norm=percent_of_norm, mean_norm=self.mean_norm(layer))

    def check_model(self, model) -> None:
        """Raise if ``model`` has a different hidden size or number of blocks."""
        from .layout import find_layout

        layout = find_layout(model)
        if layout.hidden_size != self.hidden_size or layout.n_layers != self.n_blocks:
            raise ValueError(
                f"this axis was fit on {self.model} ({self.n_blocks} blocks, hidden size {self.hidden_size}); "
                f"the given model has {layout.n_layers} blocks and hidden size {layout.hidden_size}. "
                "Fit an axis for this model (notebooks 02-03) instead."
            )

    def project(self, model, tokenizer, texts, spans=None, layers=None, **extract_kwargs) -> torch.Tensor:
        """Mean over each span's tokens of ``cos(h_t, v_L)`` (METHOD.md section 0).

        Args:
            texts: strings or chats; ``spans``: per text ``{"span": [(s, e)]}`` (default: whole text).
            layers: residual indices (default: the main layer).

        Returns:
            ``(n_texts, n_layers)`` mean projections (NaN where a span has no tokens).
        """
        from .extract import extract

        self.check_model(model)
        layers = [self.main_layer] if layers is None else list(layers)
        if spans is None:
            if any(not isinstance(t, str) for t in texts):
                raise ValueError("for chats, give spans=[{'span': [(message_index, start, end)]}, ...]")
            spans = [{"span": [(0, len(t))]} for t in texts]
        names = {n for s in spans for n in s}
        if len(names) != 1:
            raise ValueError(f"project() takes one span name per text, got {sorted(names)}")
        name = names.pop()
        stats = extract(
            model,
            tokenizer,
            texts,
            spans,
            layers=layers,
            directions={layer: self.vector(layer).unsqueeze(0) for layer in layers},
            **extract_kwargs,
        )
        return torch.stack(
            [p[:, :, 0].mean(0) if len(p) else torch.full((len(layers),), torch.nan) for p in stats.projections[name]]
        )

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write ``<path>.safetensors`` (vectors, norms) and ``<path>.json`` (metadata)."""
        path = Path(path)
        base = path.with_suffix("") if path.suffix in {".safetensors", ".json"} else path
        tensors = {"vectors": self.vectors.float().contiguous(), "mean_norms": self.mean_norms.float().contiguous()}
        st = atomic_write(base.with_suffix(".safetensors"), lambda tmp: save_file(tensors, tmp))
        sidecar = {
            "format": "vaxis-axis/1",
            "model": self.model,
            "hidden_size": self.hidden_size,
            "n_blocks": self.n_blocks,
            "layers": self.layers,
            "main_layer": self.main_layer,
            "layer_convention": LAYER_CONVENTION,
            "mean_residual_norm": {str(layer): float(n) for layer, n in zip(self.layers, self.mean_norms)},
            **self.meta,
        }
        js = atomic_write_json(base.with_suffix(".json"), sidecar)
        return st, js

    @classmethod
    def load(cls, path: str | Path) -> Axis:
        """Read an axis written by :meth:`save` (give either file, or the common stem)."""
        path = Path(path)
        base = path.with_suffix("") if path.suffix in {".safetensors", ".json"} else path
        st, js = base.with_suffix(".safetensors"), base.with_suffix(".json")
        for p in (st, js):
            if not p.exists():
                raise FileNotFoundError(f"{p} is missing: an axis is saved as {st.name} plus {js.name}")
        meta = json.loads(js.read_text())
        if meta.get("format") != "vaxis-axis/1":
            raise ValueError(f"{js} is not a vaxis axis sidecar (format {meta.get('format')!r})")
        tensors = load_file(str(st))
        known = {
            "format",
            "model",
            "hidden_size",
            "n_blocks",
            "layers",
            "main_layer",
            "layer_convention",
            "mean_residual_norm",
        }
        return cls(
            vectors=tensors["vectors"],
            layers=list(meta["layers"]),
            mean_norms=tensors["mean_norms"],
            main_layer=int(meta["main_layer"]),
            model=meta["model"],
            hidden_size=int(meta["hidden_size"]),
            n_blocks=int(meta["n_blocks"]),
            meta={k: v for k, v in meta.items() if k not in known},
        )
