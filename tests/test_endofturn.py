"""The end-of-turn confound (vaxis.experiments.endofturn): planted directions are recovered, the controlled
axes are what their recipes say, prefill pairs share their tail tokens, counts come with honest nulls."""

from __future__ import annotations

import dataclasses
import sys
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from vaxis.core.axis import Axis
from vaxis.core.chat import render_chat
from vaxis.core.spans import tokens_in_spans
from vaxis.data.icrl import GameSize, generate_games
from vaxis.experiments import endofturn as eot
from vaxis.experiments import prefill_conflict as pc
from vaxis.experiments.extraction import items_from_games, run_extraction

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D, ALPHA = 64, 1.0
PARAGRAPHS = [
    {"id": f"p{i}", "title": title, "text": text}
    for i, (title, text) in enumerate([
        ("Rivers", "The river flows through the valley, past the old mill and the stone bridge, to the sea."),
        ("Music", "A violin, a trumpet and a drum played in the square while the ship left the harbour at dawn."),
        ("Maths", "Mathematics studies numbers, shapes, structures and change; its theorems are proved with care."),
        ("Trade", "The empire traded silk, spices and silver across deserts, mountains and seas for centuries."),
        ("Plants", "Photosynthesis converts light into chemical energy in plants, algae and many kinds of bacteria."),
        ("Moon", "In 1969, 3 astronauts flew to the Moon; 2 of them walked on its surface for a few hours."),
        ("Bridges", "The stone bridge over the river was built by the old empire and still carries traffic today."),
        ("Harbours", "Ships left the harbour at dawn with silk and spices, and came back with silver and stories."),
    ])
]  # fmt: skip


@pytest.fixture(scope="module")
def games():
    games, _ = generate_games(16, seed=3, size=GameSize(max_discovery=2, max_attempts=2, max_words=60))
    return games


def _unit(seed: int, d: int = D) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


@contextmanager
def planted_turn_ramp(model, tokenizer, u: torch.Tensor, alpha: float = ALPHA):
    """Add ``alpha * (tokens since the last <|im_start|>) * u`` to the embedding output (residual 0): a
    direction that grows with progress through the current turn, i.e. with proximity to its end."""
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")

    def hook(module, args, output):
        ids = args[0]
        pos = torch.arange(ids.shape[1]).expand_as(ids)
        last = torch.cummax(torch.where(ids == start, pos, torch.zeros_like(pos)), dim=1).values
        return output + alpha * (pos - last).unsqueeze(-1).to(output.dtype) * u

    handle = model.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _axis(vectors: torch.Tensor, kind: str, main: int = 1) -> Axis:
    n = len(vectors)
    return Axis(vectors.float(), list(range(n)), torch.ones(n), main, "tiny", vectors.shape[1], n - 1, {"kind": kind})


# ------------------------------------------------------------------------------------------ end-of-turn items / fit


def test_end_of_turn_items_split_the_turn_into_first_and_last_fraction(tiny):
    _, tok = tiny
    chats, spans = eot.end_of_turn_items(PARAGRAPHS[:3] + ["A paragraph with no title at all, just text."], tok, 0.25)
    for chat, item in zip(chats, spans):
        assert [m["role"] for m in chat] == ["user", "assistant"]
        rendered = render_chat(tok, chat)
        enc = tok(rendered.text, return_offsets_mapping=True, add_special_tokens=False)
        mapped = {k: [rendered.span_in_message(*r) for r in v] for k, v in item.items()}
        got = tokens_in_spans(rendered.text, enc["offset_mapping"], mapped)
        whole = tokens_in_spans(rendered.text, enc["offset_mapping"], {"t": [rendered.message_spans[1]]})["t"]
        k = int(0.25 * len(whole))
        assert got["early"] == whole[:k] and got["late"] == whole[-k:] and got["middle"] == whole[k:-k]
    assert spans[3]["early"][0][1] == 0 and spans[3]["late"][0][2] == len(chats[3][1]["content"])
    assert [c[0]["content"] for c in chats] == [
        f"Write a paragraph about {t}." for t in ("Rivers", "Music", "Maths")
    ] + ["Write a paragraph."]  # a neutral request, nothing about success
    custom, _ = eot.end_of_turn_items(PARAGRAPHS[:1], tok, 0.5, request="Describe {title}.")
    assert custom[0][0]["content"] == "Describe Rivers."


def test_end_of_turn_items_errors(tiny):
    _, tok = tiny
    with pytest.raises(ValueError, match="no paragraphs"):
        eot.end_of_turn_items([], tok)
    with pytest.raises(ValueError, match="paragraph 1 is empty"):
        eot.end_of_turn_items([PARAGRAPHS[0], {"text": "  "}], tok)
    for bad in (0.0, -0.1, 0.6):
        with pytest.raises(ValueError, match=r"must be in \(0, 0.5\]"):
            eot.end_of_turn_items(PARAGRAPHS, tok, bad)
    with pytest.raises(ValueError, match="is no token"):
        eot.end_of_turn_items(["Hi"], tok, 0.1)


def test_fit_end_of_turn_axis_recovers_a_planted_end_of_turn_direction(tiny, tmp_path):
    model, tok = tiny
    u = _unit(0)
    with planted_turn_ramp(model, tok, u):
        axis = eot.fit_end_of_turn_axis(model, tok, PARAGRAPHS, n_splits=3, n_random=8, n_boot=20, model_name="tiny",
                                        use_cache=False, progress=False)  # fmt: skip
    assert axis.layers == [0, 1, 2, 3] and axis.n_blocks == 3 and axis.hidden_size == D and axis.model == "tiny"
    assert float(torch.nn.functional.cosine_similarity(axis.vector(0), u, dim=0)) > 0.99
    m = axis.meta
    assert m["n_fit"] == 6 and m["n_held_out"] == 2 and len(m["held_out_ids"]) == 2
    assert m["heldout_auroc"]["0"] > 0.99 and m["heldout_random_q95"]["0"] < 0.9
    lo, hi = m["heldout_auroc_ci"]["0"]
    assert lo <= m["heldout_auroc"]["0"] <= hi and axis.main_layer in axis.layers
    assert set(m["fit_split_auroc"]) == {"0", "1", "2", "3"} and "last 25%" in m["recipe"]
    back = Axis.load(axis.save(tmp_path / "eot")[0])
    assert torch.equal(back.vectors, axis.vectors) and back.meta["heldout_auroc"] == m["heldout_auroc"]
    # held-out paragraphs never fit the axis: other held-out texts leave the vectors unchanged
    swapped = [p if p["id"] not in m["held_out_ids"] else {**p, "text": "Is this the right answer? Yes, it is."}
               for p in PARAGRAPHS]  # fmt: skip
    with planted_turn_ramp(model, tok, u):
        again = eot.fit_end_of_turn_axis(model, tok, swapped, n_splits=0, n_random=0, n_boot=0, use_cache=False,
                                         progress=False)  # fmt: skip
    assert torch.equal(again.vectors, axis.vectors) and again.meta["held_out_ids"] == m["held_out_ids"]
    assert again.meta["main_layer_rule"].startswith("no split analysis") and again.meta["heldout_random_q95"] == {}


def test_fit_end_of_turn_axis_errors(tiny):
    model, tok = tiny
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match=r"held_out=.* must be in \(0, 1\)"):
            eot.fit_end_of_turn_axis(model, tok, PARAGRAPHS, held_out=bad)
    with pytest.raises(ValueError, match="need at least 2 to fit and 1 held out"):
        eot.fit_end_of_turn_axis(model, tok, PARAGRAPHS[:2], held_out=0.5)


# ------------------------------------------------------------------------------------------ controlled axes


def test_project_out_leaves_an_orthogonal_axis_that_keeps_the_orthogonal_signal(tmp_path):
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(4, D, generator=gen)
    u = u / u.norm(dim=-1, keepdim=True)
    w = torch.randn(4, D, generator=gen)
    w = w - (w * u).sum(-1, keepdim=True) * u  # the value signal, orthogonal to the end-of-turn direction
    w = w / w.norm(dim=-1, keepdim=True)
    end = _axis(5.0 * u, "end-of-turn")
    value = _axis(3.0 * u + 2.0 * w, "value axis")
    np.testing.assert_allclose(eot.cosine_by_layer(value, end), 3 / np.sqrt(13), rtol=1e-5)
    controlled = eot.project_out(value, end)
    np.testing.assert_allclose(eot.cosine_by_layer(controlled, end), 0.0, atol=1e-6)
    np.testing.assert_allclose(torch.nn.functional.cosine_similarity(controlled.vectors, w, dim=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(controlled.vectors.norm(dim=-1), 2.0, rtol=1e-5)
    assert controlled.main_layer == value.main_layer and torch.equal(controlled.mean_norms, value.mean_norms)
    meta = controlled.meta
    assert meta["projected_out"] == "end-of-turn" and meta["source"]["kind"] == "value axis"
    assert meta["norm_kept"]["2"] == pytest.approx(2 / np.sqrt(13), abs=1e-4) and "u_L" in meta["recipe"]
    back = Axis.load(controlled.save(tmp_path / "controlled")[1])
    assert torch.equal(back.vectors, controlled.vectors) and back.meta["kind"] == controlled.meta["kind"]
    with pytest.raises(ValueError, match="the axes differ"):
        eot.project_out(value, _axis(torch.randn(3, D), "three layers"))
    with pytest.raises(ValueError, match="the axes differ"):
        eot.cosine_by_layer(value, _axis(torch.randn(4, 8), "other width"))


def _ramp_game(alpha=1.0, beta=2.0, n=60, reward=30):
    """Tokens 0..n-1 with the reward at ``reward``: h = alpha * position * u + beta * [after] * w."""
    u, w = _unit(1, 16), _unit(2, 16)
    w = (w - (w @ u) * u) / (w - (w @ u) * u).norm()
    pos = torch.arange(n, dtype=torch.float64)
    h = (alpha * pos[:, None] * u + beta * (pos > reward).double()[:, None] * w).float().unsqueeze(1)  # (n, 1, 16)
    to_end = (n - 1 - pos).numpy().astype(int)
    b, a = slice(0, reward), slice(reward + 1, n)
    return h[b], h[a], to_end[b], to_end[a], u, w


def test_matched_contrast_removes_most_of_a_planted_ramp_and_keeps_the_step():
    before, after, b_end, a_end, u, w = _ramp_game()
    contrast, gap, full_gap = eot.matched_contrast(before, after, b_end, a_end, bin_width=8)
    # bins of 8 tokens to the end: only bin 3 holds both (before: 30, 31 to the end; after: 24..28)
    assert gap == pytest.approx(np.mean([30, 31]) - np.mean([24, 25, 26, 27, 28])) and full_gap == pytest.approx(30.5)
    torch.testing.assert_close(contrast[0], (gap * u + 2.0 * w).float(), atol=1e-4, rtol=1e-4)
    unmatched = after.double().mean(0) - before.double().mean(0)
    assert float(unmatched[0] @ u.double()) == pytest.approx(30.5, rel=1e-5)  # what the plain contrast carries
    assert eot.matched_contrast(before, after, b_end, a_end, bin_width=8, min_tokens=3) is None  # 2 before tokens
    assert eot.matched_contrast(before, after, b_end, a_end, bin_width=1) is None  # no bin holds both


def test_unmatched_contrast_draws_the_given_numbers_of_tokens_at_random():
    eye = torch.eye(60)[:, None, :]  # token i: one-hot at i; before tokens 0..19, after tokens 30..54
    before, after = eye[:20], eye[30:55]
    rng = np.random.default_rng(0)
    picks = [eot.unmatched_contrast(before, after, 4, 6, rng)[0] for _ in range(300)]
    for c in picks:  # mean of 6 after one-hots minus mean of 4 before one-hots, each token once
        assert int((c > 0).sum()) == 6 and int((c < 0).sum()) == 4
        assert torch.allclose(c[c > 0], torch.tensor(1 / 6)) and torch.allclose(c[c < 0], torch.tensor(-1 / 4))
    hits = torch.stack([(p != 0).float() for p in picks]).mean(0)
    assert float(hits[:20].min()) > 0.05 and float(hits[30:55].min()) > 0.05  # any token can be drawn
    with pytest.raises(ValueError, match="cannot draw"):
        eot.unmatched_contrast(before[:3], after[:3], 4, 1, rng)


def test_with_norms_steers_at_the_norm_the_random_directions_use():
    from vaxis.experiments.confidence import steering_vectors

    value = _axis(torch.randn(4, D, generator=torch.Generator().manual_seed(0)), "value axis")
    value.mean_norms = torch.tensor([10.0, 20.0, 30.0, 40.0])
    end = _axis(torch.randn(4, D, generator=torch.Generator().manual_seed(1)), "late-minus-early")
    end.mean_norms = torch.tensor([1.0, 2.0, 3.0, 4.0])  # paragraphs' norms: not the games'
    random = steering_vectors(value, 2, [16.8], n_random=3, seed=0)
    same = steering_vectors(eot.with_norms(end, value), 2, [16.8], n_random=0, seed=0)
    own = steering_vectors(end, 2, [16.8], n_random=0, seed=0)
    norm = float(random[("random0", 16.8)][2].norm())
    assert float(same[("axis", 16.8)][2].norm()) == pytest.approx(norm, rel=1e-5)
    assert float(own[("axis", 16.8)][2].norm()) == pytest.approx(norm / 10, rel=1e-5)  # what the notebook did
    moved = eot.with_norms(end, value)
    assert torch.equal(moved.vectors, end.vectors) and "value axis" in moved.meta["steering_norm"]
    with pytest.raises(ValueError, match="the axes differ"):
        eot.with_norms(end, _axis(torch.randn(3, D), "three layers"))


def test_position_matched_axis_reads_notebook_02s_cache_and_matches_positions(tiny, tmp_cache, games, monkeypatch):
    model, tok = tiny
    u = _unit(3)
    spans = items_from_games(games, tok)
    layers = [0, 1, 2, 3]
    with planted_turn_ramp(model, tok, u):
        ex = run_extraction(model, tok, spans, layers, n_splits=0, n_test=1, n_shuffles=0, n_random=0, seed=0,
                            keep_construction_activations=True, progress=False)  # fmt: skip

        def no_forward(*args, **kwargs):
            raise AssertionError("position_matched_axis ran a forward pass instead of reading the fit pass's cache")

        monkeypatch.setattr(sys.modules["vaxis.core.extract_forward"], "run_batch", no_forward)
        value = _axis(ex.directions.vectors[0], "value axis", main=2)
        groups = ["a" if g % 3 else "b" for g in range(len(spans.game_criterion))]  # unequal criteria
        asked, drawn, real = [], [], eot.unmatched_contrast

        def spy_matched(before, after, b_end, a_end, bin_width, min_tokens):
            asked.append((len(before), len(after), np.asarray(b_end), np.asarray(a_end), bin_width, min_tokens))
            return real_matched(before, after, b_end, a_end, bin_width, min_tokens)

        def spy_control(before, after, n_before, n_after, rng):
            drawn.append((len(before), len(after), n_before, n_after))
            return real(before, after, n_before, n_after, rng)

        real_matched = eot.matched_contrast
        monkeypatch.setattr(eot, "matched_contrast", spy_matched)
        monkeypatch.setattr(eot, "unmatched_contrast", spy_control)
        matched, control = eot.position_matched_axes(model, tok, ex.fit_items, groups, value, bin_width=12,
                                                     weighting="conversation", seed=1, progress=False)  # fmt: skip
        monkeypatch.setattr(eot, "matched_contrast", real_matched)
        monkeypatch.setattr(eot, "unmatched_contrast", real)
    # the control draws, per game kept, as many before and after tokens as that game's matched bins hold
    expected = []
    for n_b, n_a, b_end, a_end, width, least in asked:
        assert (len(b_end), len(a_end)) == (n_b, n_a)  # token positions line up with the activations
        bins = [b for b in np.intersect1d(b_end // width, a_end // width)
                if (b_end // width == b).sum() >= least and (a_end // width == b).sum() >= least]  # fmt: skip
        if bins:
            expected.append((n_b, n_a, sum(int((b_end // width == b).sum()) for b in bins),
                             sum(int((a_end // width == b).sum()) for b in bins)))  # fmt: skip
    assert drawn == expected and len(drawn) == matched.meta["n_games"] == control.meta["n_games"]
    assert all(nb < b or na < a for b, a, nb, na in drawn)  # fewer tokens than the game has: a real subsample
    assert (
        matched.meta["n_tokens"]
        == control.meta["n_tokens"]
        == {"before": sum(d[2] for d in drawn), "after": sum(d[3] for d in drawn)}
    )
    # unmatched, the control keeps the full ramp (alpha x the full gap), the matched axis only the matched gap
    assert float(control.vector(0) @ u) > 2 * float(matched.vector(0) @ u)
    assert "unmatched control" in control.meta["kind"] and control.meta["seed"] == 1
    m = matched.meta
    n_targets = sum(it.kind == "target" for it in ex.fit_items)
    assert m["n_games"] + m["skipped_games"] == n_targets and m["n_games"] >= 3
    gap = m["position_gap_tokens"]
    assert 0 < gap["matched"] < 12 + 6 < gap["all_tokens"]  # within a bin (plus the reward tokens) vs the whole rewrite
    # the planted ramp's share of the matched contrast is alpha x the matched gap, not the full one
    assert float(matched.vector(0) @ u) == pytest.approx(ALPHA * gap["matched"], rel=0.02)
    assert (matched.layers, matched.main_layer, matched.model) == (value.layers, 2, "tiny")
    back = Axis.load(matched.save(tmp_cache / "matched")[0])
    assert torch.equal(back.vectors, matched.vectors) and back.meta["bin_width"] == 12
    with pytest.raises(ValueError, match="no usable games"):
        eot.position_matched_axis(model, tok, ex.fit_items, spans.game_criterion, value, bin_width=1, progress=False)
    with pytest.raises(ValueError, match="must be positive"):
        eot.position_matched_axis(model, tok, ex.fit_items, spans.game_criterion, value, bin_width=0)
    with pytest.raises(ValueError, match="no target items"):
        eot.position_matched_axis(model, tok, [it for it in ex.fit_items if it.kind == "norm"], [], value)


# ------------------------------------------------------------------------------------------ prefill conflicts


def _tail_ids_alone(chat, tok, tail):
    rendered = render_chat(tok, chat)
    enc = tok(rendered.text, return_offsets_mapping=True, add_special_tokens=False)
    end = rendered.message_spans[-1][1]
    idx = tokens_in_spans(rendered.text, enc["offset_mapping"], {"t": [(end - len(tail), end)]})["t"]
    return [enc["input_ids"][i] for i in idx]


def test_prefill_pairs_from_games(tiny, games):
    _, tok = tiny
    pairs, skipped = pc.prefill_conflicts(games, tok, tail_words=4, high_cut=0.25)
    assert len(pairs) + len(skipped) == len(games) and len(pairs) >= 8
    by_id = {g.game_id: g for g in games}
    for p in pairs:
        g = by_id[p.key]
        low_i = max(i for i, a in enumerate(g.attempts) if a.phase == "explore")
        low_a, high_a = g.attempts[low_i], g.target
        assert not low_a.success and high_a.success
        assert p.low[:-1] == g.chat()[: low_a.message_index] and p.high[:-1] == g.chat()[: high_a.message_index]
        assert p.low[-1] == g.messages[low_a.message_index]  # the complete failed turn: about to end
        assert p.low[-1]["content"].endswith(p.tail) and p.high[-1]["content"].endswith(p.tail)
        assert len(p.tail.split()) == 4 and g.rewrite(low_i).endswith(p.tail) and p.tail[0].isspace()
        head = p.high[-1]["content"][: -len(p.tail)]
        assert g.messages[high_a.message_index]["content"].startswith(head)
        n_words = len(g.rewrite(g.target_attempt).split())
        k = max(1, int(0.25 * n_words))
        assert len(head[high_a.rewrite_span[0] :].split()) == k  # the high turn is cut after its first k words
        assert p.words_left == (0, n_words - k) and p.words_left[1] > 0
        ids = _tail_ids_alone(p.low, tok, p.tail)
        assert ids == _tail_ids_alone(p.high, tok, p.tail) == list(p.tail_ids) and ids
    fixed, _ = pc.prefill_conflicts(games[:4], tok, tail=" and so on.")
    for p in fixed:
        g = by_id[p.key]
        assert p.tail == " and so on." and p.low[-1]["content"] == g.messages[len(p.low) - 1]["content"] + p.tail


def test_prefill_pairs_skip_and_errors(tiny, games):
    _, tok = tiny
    g = games[0]
    no_explore = dataclasses.replace(g, attempts=[dataclasses.replace(a, phase="discovery") for a in g.attempts])
    pairs, skipped = pc.prefill_conflicts([no_explore, g], tok)
    assert [p.key for p in pairs] == [g.game_id] and skipped == [
        {"key": g.game_id, "reason": "no_failed_pre_discovery_attempt"}
    ]
    _, skipped = pc.prefill_conflicts([g], tok, tail_words=10_000)
    assert skipped[0]["reason"] == "rewrite_too_short"
    for kwargs in ({"tail_words": 0}, {"high_cut": 0.0}, {"high_cut": 1.0}, {"tail": " "}):
        with pytest.raises(ValueError):
            pc.prefill_conflicts([g], tok, **kwargs)
    chat = [{"role": "user", "content": "Tell me about the river."}]
    triples = [(chat, "The river flows past the old mill.", "The river"), (chat, "The stone bridge.", "A drum.")]
    pairs, skipped = pc.prefill_conflicts_from_prefills(triples, tok, " It flows on.")
    assert [p.key for p in pairs] == ["0", "1"] and skipped == []
    # a tail that merges with the text before it ("rive" + "r flows") is no clean tail: skipped, never misread
    pairs2, skipped = pc.prefill_conflicts_from_prefills([(chat, "The rive", "A rive")], tok, "r flows")
    assert pairs2 == [] and skipped == [{"key": "0", "reason": "tail_tokens_differ", "tail": "r flows"}]
    assert pairs[0].low[:-1] == chat and pairs[0].words_left == (None, None)
    with pytest.raises(ValueError, match="tail is empty"):
        pc.prefill_conflicts_from_prefills([(chat, "a", "b")], tok, "")
    with pytest.raises(ValueError, match="no prefill pairs"):
        pc.conflict_projections(None, tok, [], {})


def test_conflict_table_counts_and_nulls_on_hand_made_projections():
    low = np.zeros((10, 2, 3))
    high = np.zeros((10, 2, 3))
    low[:8, 0, 0], high[:, 0, 0] = 1.0, 0.5  # layer 0: the low prefill is higher in 8 of 10 pairs (2 lower)
    low[:, 0, 1] = 1.0  # random direction 1: 10 of 10
    low[:3, 0, 2], high[:3, 0, 2] = 1.0, 0.5  # random direction 2: 3 of 10
    high[:, 1, :] = 1e-9  # layer 1: ties within the tolerance
    table = pc.conflict_table(pc.Conflicts([0, 5], [str(i) for i in range(10)], low, high, np.ones(10)), n_boot=50)
    row, tied = table.iloc[0], table.iloc[1]
    assert (row.layer, row.low_higher, row.ties, row.share) == (0, 8, 0, 0.8)
    assert row.p_sign == pytest.approx(binomtest(8, 10, 0.5).pvalue) and row.share_low <= 0.8 <= row.share_high
    assert row.mean_low_minus_high == pytest.approx(0.8 * 1.0 - 0.5)
    assert (row.random_median, row.p_random) == (6.5, pytest.approx(2 / 3))
    assert (tied.layer, tied.low_higher, tied.ties) == (5, 0, 10)
    shares = pc.conflict_shares(pc.Conflicts([0, 5], [str(i) for i in range(10)], low, high, np.ones(10)), 0)
    np.testing.assert_allclose(shares, [0.8, 1.0, 0.3])  # the verdict's null draws: every direction's share
    np.testing.assert_allclose(pc.conflict_shares(pc.Conflicts([0, 5], [], low, high, np.ones(10)), 1), [0, 0, 0])


def test_conflict_projections_count_a_planted_end_of_turn_direction(tiny, games):
    model, tok = tiny
    u = _unit(4)
    pairs, _ = pc.prefill_conflicts(games[:8], tok)
    directions = {0: torch.stack([u, _unit(5), _unit(6)]), 2: torch.stack([u, _unit(7), _unit(8)])}
    with planted_turn_ramp(model, tok, u, alpha=0.002):  # small: cosines far from saturating at 1
        conflicts = pc.conflict_projections(model, tok, pairs, directions, use_cache=False, progress=False)
    n = len(pairs)
    assert conflicts.layers == [0, 2] and conflicts.low.shape == conflicts.high.shape == (n, 2, 3)
    assert conflicts.keys == [p.key for p in pairs]
    assert (conflicts.tail_tokens == [len(p.tail_ids) for p in pairs]).all()
    row = pc.conflict_table(conflicts, n_boot=20).iloc[0]
    # the tail sits later in the low turn (complete) than in the high one (cut early): the planted direction,
    # which grows through the turn, puts the low prefill higher in every pair
    assert row.low_higher == n and row.p_sign == pytest.approx(2 * 0.5**n)
    with planted_turn_ramp(model, tok, u, alpha=0.002):
        again = pc.conflict_projections(model, tok, list(reversed(pairs)), directions, use_cache=False, progress=False)
    np.testing.assert_allclose(again.low[::-1], conflicts.low, atol=1e-5)
