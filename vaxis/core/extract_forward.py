"""The forward passes of an extraction: one planned batch in, the span tokens' statistics out.

:func:`run_batch` runs a batch of :func:`vaxis.core.extract.plan_batches` (distinct texts, longest first) as one
forward pass, or as a few consecutive pieces where that cuts padding (:func:`pieces`), each right-padded to its own
longest row with no attention mask. Hooks on the residual stream (:func:`vaxis.core.hooks.register_residual_hook`)
reduce the span tokens' activations on the device (float32 sums, norms, per-token cosines with given directions,
kept activations) and stop the pass after the deepest requested block; only the reduced tensors come back to the
CPU.
"""

from __future__ import annotations

import torch

from .hooks import StopForward, register_residual_hook

# Fewest padded tokens a forward pass of a split batch keeps (see :func:`pieces`), by device type; 8192 elsewhere:
# on a GPU a forward of a few thousand tokens of a large model runs near the speed of a larger one, on a CPU even
# one text at a time does.
PIECE_MIN_TOKENS = {"cpu": 1024}


def piece_min_tokens(device: torch.device) -> int:
    """The fewest padded tokens a piece of a split batch keeps on ``device`` (:data:`PIECE_MIN_TOKENS`)."""
    return PIECE_MIN_TOKENS.get(device.type, 8192)


def pieces(widths: list[int], min_tokens: int) -> list[tuple[int, int]]:
    """Split one planned batch, rows sorted longest first with ``widths`` tokens each, into runs of consecutive
    rows ``[(first, stop), ...]``, each one forward pass padded to its own longest row.

    The split minimises the padded tokens computed plus ``min_tokens // 8`` for each extra forward, with every run
    keeping at least ``min_tokens`` padded tokens (so that it still fills the device); a batch of fewer than
    ``2 * min_tokens`` padded tokens runs whole. The planned batches (:func:`vaxis.core.extract.plan_batches`) stay
    what they are, so cache files, keys and estimates do not change; only the padding is cut (the rows' values are
    independent of their neighbours in a batch up to rounding, as in any batching)."""
    n = len(widths)
    if n < 2 or n * widths[0] < 2 * min_tokens:
        return [(0, n)]
    bounds = sorted({round(k * n / min(n, 64)) for k in range(min(n, 64) + 1)})  # at most 64 runs: O(64^2)
    extra = min_tokens // 8
    best = {n: (0, n)}  # start bound -> (cost of the rows from it on, end of its first run)
    for a in reversed(bounds[:-1]):
        options = [
            ((b - a) * widths[a] + extra + best[b][0], b)
            for b in bounds
            if b > a and b in best and ((b - a) * widths[a] >= min_tokens or (a == 0 and b == n))
        ]
        if options:
            best[a] = min(options)
    runs, a = [], 0
    while a < n:
        runs.append((a, best[a][1]))
        a = best[a][1]
    return runs


@torch.no_grad()
def run_batch(model, layout, layers, tokenized, needed, batch, by_text, dir_matrix, device, keep=False):
    """The forward passes over ``batch`` (distinct-text indices, longest first); returns reduced tensors on the CPU.

    The batch runs as one forward pass, or as a few where that cuts padding (:func:`pieces`). Rows are
    right-padded and get no attention mask: attention is causal, so no real token attends to the pads after it
    (their values are never read), and without a mask SDPA runs its causal kernel, which skips the masked-out half
    of the scores (on a GPU: flash attention, grouped-query heads not repeated, no mask built, no host sync)."""
    groups = [(r, g) for r, u in enumerate(batch) for g in by_text.get(u, [])]
    sizes = [len(g[2]) for _, g in groups]
    owners = [j for j, (_, g) in enumerate(groups) if g[3]]
    n_tokenwise, n_layers, d = sum(sizes[j] for j in owners), len(layers), layout.hidden_size
    out = {"sums": torch.zeros(len(groups), n_layers, d, device=device),
           "norms": torch.zeros(len(groups), n_layers, device=device)}  # fmt: skip
    dirs, has_dirs = None, []
    if dir_matrix is not None:
        dirs, has_dirs = dir_matrix.to(device), [not bool(torch.isnan(m).any()) for m in dir_matrix]
        out["proj"] = torch.full((n_tokenwise, n_layers, dirs.shape[1]), torch.nan, device=device)
    if keep:
        out["act"] = torch.zeros(n_tokenwise, n_layers, d, device=device)
    for first, stop in pieces([needed[u] for u in batch], piece_min_tokens(device)):
        inputs, offset = _piece_inputs(tokenized, needed, batch, groups, first, stop, device)
        _forward_piece(model, layout, layers, inputs, offset, out, dirs, has_dirs)
    result = {"sums": out["sums"].cpu().contiguous(), "norms": out["norms"].cpu().contiguous()}
    for prefix in ("proj", "act"):
        if prefix in out:
            for j, chunk in zip(owners, torch.split(out[prefix].cpu(), [sizes[j] for j in owners])):
                result[f"{prefix}{j}"] = chunk.contiguous()
    return result


def _piece_inputs(tokenized, needed, batch, groups, first: int, stop: int, device):
    """The tensors of one forward over rows ``first..stop-1`` of ``batch``, on ``device``: right-padded
    ``input_ids`` and, per span token, its row, column and group; ``tokenwise``: the positions of the
    per-token outputs among the piece's span tokens. Also the number of per-token outputs of earlier rows."""
    width = max(needed[u] for u in batch[first:stop])
    input_ids = torch.zeros((stop - first, width), dtype=torch.long)  # pad id 0: pads are never attended to
    for r, u in enumerate(batch[first:stop]):
        input_ids[r, : needed[u]] = torch.tensor(tokenized[u][0][: needed[u]])
    mine = [(j, r, g) for j, (r, g) in enumerate(groups) if first <= r < stop]
    offset = sum(len(g[2]) for r, g in groups if r < first and g[3])
    per_token = torch.cat([torch.full((len(g[2]),), g[3]) for _, _, g in mine])
    inputs = {
        "input_ids": input_ids,
        "rows": torch.cat([torch.full((len(g[2]),), r - first) for _, r, g in mine]),
        "cols": torch.cat([g[2] for _, _, g in mine]),
        "group_of": torch.cat([torch.full((len(g[2]),), j) for j, _, g in mine]),
        "tokenwise": per_token.nonzero().squeeze(-1),  # on the CPU: no device sync
    }
    if device.type == "cuda":  # pinned and asynchronous: the copy does not wait for the forward before it
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in inputs.items()}, offset
    return {k: v.to(device) for k, v in inputs.items()}, offset


def _forward_piece(model, layout, layers, inputs, offset: int, out, dirs, has_dirs) -> None:
    """One forward pass over ``inputs`` (:func:`_piece_inputs`), adding the span tokens' statistics at each of
    ``layers`` into ``out`` (float32, on the device) from a hook, and stopping after the deepest of them (no later
    block, no final norm, no unembedding)."""
    rows, cols, group_of, tokenwise = inputs["rows"], inputs["cols"], inputs["group_of"], inputs["tokenwise"]
    lo, hi = offset, offset + len(tokenwise)
    last = max(layers)

    def reducer(li, layer):
        def fn(hidden):
            if hidden.device != rows.device:  # model spread over several devices
                h = hidden[rows.to(hidden.device), cols.to(hidden.device)].to(rows.device).float()
            else:
                h = hidden[rows, cols].float()
            out["sums"][:, li].index_add_(0, group_of, h)
            norms = h.norm(dim=-1)
            out["norms"][:, li].index_add_(0, group_of, norms)
            if dirs is not None and has_dirs[li]:
                sel = h[tokenwise]
                out["proj"][lo:hi, li] = (sel @ dirs[li].T) / norms[tokenwise].clamp_min(1e-12).unsqueeze(-1)
            if "act" in out:
                out["act"][lo:hi, li] = h[tokenwise]
            if layer == last:
                raise StopForward
            return None

        return fn

    handles = [register_residual_hook(layout, layer, reducer(li, layer)) for li, layer in enumerate(layers)]
    try:
        model(input_ids=inputs["input_ids"], use_cache=False)
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
