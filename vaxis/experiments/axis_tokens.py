"""Notebook 03's per-token view of the evaluation pass, and the AUROC among tokens at the same position.

:func:`token_table` flattens the before/after tokens of chosen items into a :class:`TokenTable`: each token's
cosines with the directions, its label (after = 1) and its position covariates (:data:`POSITION_FEATURES`: where it
sits in the rewrite, tokens from the rewrite's start and to its end or to the end of the turn).
:func:`matched_aurocs` scores the axis only among tokens at the same position (:func:`match_rules`: bins of
relative position, exact distances to the rewrite's end and to the end of the turn), beside what position alone
still knows inside those strata and the random directions (:class:`Matched`). The evaluation that uses them is
:func:`vaxis.experiments.axis.evaluate`; notebook 10's controls (:mod:`vaxis.experiments.confound`) use them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .extraction_files import Item

#: Position covariates of every token (see :class:`TokenTable`); the sign makes "after" score higher.
POSITION_FEATURES = {
    "relative position in the rewrite": ("position", 1.0),
    "tokens from the rewrite's start": ("from_start", 1.0),
    "tokens to the rewrite's end": ("to_rewrite_end", -1.0),
    "tokens to the end of the turn": ("to_turn_end", -1.0),
}


@dataclass
class TokenTable:
    """Flat per-token view of an evaluation pass.

    ``scores``: ``(n_tokens, n_layers, K)`` cosines; ``labels``: 1 after / 0 before; ``item``:
    index into the item list; ``position``: relative position of the token's anchor (its first
    non-space character) in the rewrite (0 = first character, 1 = last); ``from_start``: tokens
    of the rewrite before it; ``to_rewrite_end`` / ``to_turn_end``: tokens after it up to the end
    of the rewrite / of the assistant message's content (the end-of-turn marker follows).
    """

    scores: np.ndarray
    labels: np.ndarray
    item: np.ndarray
    position: np.ndarray
    from_start: np.ndarray
    to_rewrite_end: np.ndarray
    to_turn_end: np.ndarray

    def feature(self, name: str) -> np.ndarray:
        """A position covariate of :data:`POSITION_FEATURES`, signed so that larger means "later"."""
        attr, sign = POSITION_FEATURES[name]
        return sign * getattr(self, attr).astype(np.float64)


def token_table(stats, items: list[Item], indices: list[int], tokenizer) -> TokenTable:
    """Gather before/after token projections of ``items[indices]`` from extraction ``stats``
    (the stats of the evaluation pass, one row per item) with each token's position covariates."""
    import bisect

    from ..core.spans import token_anchor

    cols: dict[str, list] = {k: [] for k in ("scores", "labels", "item", "position", "start", "rw", "turn")}
    anchors_cache: dict[str, list] = {}
    for i in indices:
        item = items[i]
        if item.text not in anchors_cache:
            enc = tokenizer(item.text, return_offsets_mapping=True, add_special_tokens=False)
            anchors_cache[item.text] = [token_anchor(item.text, s, e) for s, e in enc["offset_mapping"]]
        anchors = anchors_cache[item.text]
        start, end = item.rewrite
        turn_end = item.turn[1] if item.turn else end
        # tokens are placed by their anchor (first non-space character), as everywhere in vaxis
        first = bisect.bisect_left(anchors, start)
        last_rw, last_turn = bisect.bisect_left(anchors, end) - 1, bisect.bisect_left(anchors, turn_end) - 1
        for label, name in ((0, "before"), (1, "after")):
            toks = np.asarray(stats.token_indices[name][i].tolist(), dtype=np.int64)
            cols["scores"].append(stats.projections[name][i].numpy())
            cols["labels"].append(np.full(len(toks), label))
            cols["item"].append(np.full(len(toks), i))
            where = np.asarray([anchors[t] for t in toks], dtype=np.float64)
            cols["position"].append((where - start) / max(end - start, 1))
            cols["start"].append(toks - first)
            cols["rw"].append(last_rw - toks)
            cols["turn"].append(last_turn - toks)
    c = {k: np.concatenate(v) for k, v in cols.items()}
    return TokenTable(
        c["scores"].astype(np.float64), c["labels"], c["item"], c["position"], c["start"], c["rw"], c["turn"]
    )


@dataclass
class Matched:
    """The AUROC among tokens at the same position (one matching rule), per layer.

    ``axis``: the value axis, ``(n_layers,)``; ``baselines``: each position covariate's own
    AUROC inside the same strata (the measured baseline: what position alone still knows
    there); ``random``: random directions, ``(n_random, n_layers)``; ``coverage``: fraction of
    tokens in strata with enough of both classes."""

    rule: str
    axis: np.ndarray
    baselines: dict
    random: np.ndarray
    coverage: float
    ci_main: tuple[float, float] = (float("nan"), float("nan"))

    @property
    def baseline(self) -> float:
        """The best position covariate inside these strata."""
        return max(self.baselines.values())


def match_rules(table: TokenTable, n_bins: int = 20) -> dict[str, np.ndarray]:
    """Strata of each matching rule: bins of relative position, exact tokens to the rewrite's end,
    exact tokens to the end of the turn (one rule when the two coincide for every token)."""
    from ..core.evaluate import position_strata

    rules = {
        f"relative position ({n_bins} bins)": position_strata(table.position, n_bins),
        "tokens to the rewrite's end": table.to_rewrite_end,
        "tokens to the end of the turn": table.to_turn_end,
    }
    if np.array_equal(table.to_rewrite_end, table.to_turn_end):  # every rewrite ends its turn: one rule
        rules["tokens to the rewrite's end (= to the end of the turn)"] = rules.pop("tokens to the rewrite's end")
        del rules["tokens to the end of the turn"]
    return rules


def matched_aurocs(table: TokenTable, random_cols: list[int], n_bins: int = 20, min_per_class: int = 10) -> dict:
    """:class:`Matched` for three rules: ``n_bins`` bins of relative position, and exact counts of
    tokens to the end of the rewrite and to the end of the turn. In each, the axis (column 0),
    every position covariate and the random directions are scored inside the same strata."""
    from ..core.evaluate import stratified_auroc

    out = {}
    for rule, strata in match_rules(table, n_bins).items():
        axis, coverage = stratified_auroc(table.scores[:, :, 0], table.labels, strata, min_per_class)
        baselines = {
            name: float(stratified_auroc(table.feature(name), table.labels, strata, min_per_class)[0])
            for name in POSITION_FEATURES
        }
        rand = stratified_auroc(table.scores[:, :, random_cols], table.labels, strata, min_per_class)[0]
        out[rule] = Matched(rule, axis, baselines, rand.T if len(random_cols) else np.zeros((0, len(axis))), coverage)
    return out
