"""Extraction equals a naive per-text computation, batches and caches correctly, rejects bad input."""

from __future__ import annotations

import importlib

import pytest
import torch

import vaxis
from vaxis.core.extract import extract
from vaxis.core.spans import SpanError
from vaxis.core.spanstats import CacheError

items_mod = importlib.import_module("vaxis.core.extract_items")
forward_mod = importlib.import_module("vaxis.core.extract_forward")
stats_mod = importlib.import_module("vaxis.core.spanstats")

TEXTS = [
    "Hello there, the river flows through the valley (a bus).",
    "Mathematics studies numbers: shapes and change; its theorems are proved.",
    "Short one here.",
    "In 1969, 3 astronauts flew to the Moon; 2 of them walked on its surface.",
]
SPANS = [
    {"before": [(0, 5)], "after": [(13, 40)]},
    {"before": [(0, 11)], "after": [(20, 40)]},
    {"before": [(0, 5)], "after": [(6, 14)]},
    {"before": [(0, 8), (10, 20)], "after": [(40, 60)]},
]


def _naive(model, tokenizer, text, idx, layers):
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad(), vaxis.capture(model, layers) as acts:
        model(**enc)
    return {layer: acts[layer][0, idx] for layer in layers}


def test_matches_naive_per_text(tiny):
    model, tokenizer = tiny
    dirs = {layer: torch.randn(3, 64) for layer in range(4)}
    stats = extract(model, tokenizer, TEXTS, SPANS, directions=dirs, use_cache=False, progress=False)
    assert stats.layers == [0, 1, 2, 3]
    for i, text in enumerate(TEXTS):
        for name in ("before", "after"):
            idx = stats.token_indices[name][i]
            assert len(idx) == stats.counts[name][i] > 0
            naive = _naive(model, tokenizer, text, idx, stats.layers)
            for li, layer in enumerate(stats.layers):
                h = naive[layer]
                torch.testing.assert_close(stats.sums[name][i, li], h.sum(0), atol=1e-4, rtol=1e-5)
                torch.testing.assert_close(stats.norm_sums[name][i, li], h.norm(dim=-1).sum(), atol=1e-4, rtol=1e-5)
                unit = dirs[layer] / dirs[layer].norm(dim=-1, keepdim=True)
                cos = (h @ unit.T) / h.norm(dim=-1, keepdim=True)
                torch.testing.assert_close(stats.projections[name][i][:, li], cos, atol=1e-5, rtol=1e-4)
    means = stats.means("after")
    torch.testing.assert_close(means[0], stats.sums["after"][0] / stats.counts["after"][0])


def test_batched_equals_one_at_a_time(tiny):
    model, tokenizer = tiny
    batched = extract(model, tokenizer, TEXTS, SPANS, use_cache=False, progress=False)
    single = extract(model, tokenizer, TEXTS, SPANS, use_cache=False, progress=False, max_batch_size=1)
    for name in ("before", "after"):
        torch.testing.assert_close(batched.sums[name], single.sums[name], atol=1e-4, rtol=1e-5)


def test_stops_at_last_needed_token(tiny):
    model, tokenizer = tiny
    stats = extract(model, tokenizer, TEXTS, SPANS, use_cache=False, progress=False)
    assert stats.info["tokens_processed"] < stats.info["tokens_total"]


def test_items_sharing_a_text_run_it_once(tiny, monkeypatch):
    """N items that share one text run that text once: one tokenization, one row of one forward
    pass, and each item still gets the values of its own spans.

    Guards against losing the de-duplication (e.g. keying texts by item index, so every item is
    its own text): the values would still be right, only the work multiplied, so the test counts
    tokenizer calls, ``_run_batch`` calls and the rows that reach the embedding layer."""
    model, tokenizer = tiny
    texts = [TEXTS[0], TEXTS[2], TEXTS[0], TEXTS[0]]
    spans = [
        {"before": [(0, 5)], "after": [(6, 12)]},
        {"before": [(0, 5)], "after": [(6, 14)]},
        {"before": [(13, 20)], "after": [(21, 40)]},
        {"before": [(0, 12)], "after": [(41, 50)]},
    ]
    real_tokenize, real_run = items_mod._tokenize, forward_mod.run_batch
    calls = {"tokenize": 0, "run": 0, "rows": 0}

    def tokenize(*args, **kwargs):
        calls["tokenize"] += 1
        return real_tokenize(*args, **kwargs)

    def run_batch(*args, **kwargs):
        calls["run"] += 1
        return real_run(*args, **kwargs)

    def count_rows(module, args):
        calls["rows"] += args[0].shape[0]

    monkeypatch.setattr(items_mod, "_tokenize", tokenize)
    monkeypatch.setattr(forward_mod, "run_batch", run_batch)
    handle = model.get_input_embeddings().register_forward_pre_hook(count_rows)
    try:
        stats = extract(model, tokenizer, texts, spans, use_cache=False, progress=False, max_batch_size=1)
    finally:
        handle.remove()
    assert calls == {"tokenize": 2, "run": 2, "rows": 2}
    needed = [int(torch.cat([stats.token_indices[n][i] for n in stats.names]).max()) + 1 for i in range(4)]
    assert stats.info["tokens_processed"] == max(needed[0], needed[2], needed[3]) + needed[1]
    assert stats.text_lengths[0] == stats.text_lengths[2] == stats.text_lengths[3]
    monkeypatch.undo()
    separate = [extract(model, tokenizer, [t], [s], use_cache=False, progress=False) for t, s in zip(texts, spans)]
    for i in range(4):
        for name in ("before", "after"):
            torch.testing.assert_close(stats.sums[name][i], separate[i].sums[name][0], atol=1e-5, rtol=0)
            assert torch.equal(stats.token_indices[name][i], separate[i].token_indices[name][0])


def test_chat_input_spans_in_message_coordinates(tiny):
    model, tokenizer = tiny
    chat = [{"role": "user", "content": "Rewrite this."}, {"role": "assistant", "content": "The river: flows."}]
    stats = extract(model, tokenizer, [chat], [{"reward": [(1, 9, 10)]}], use_cache=False, progress=False)
    rendered = vaxis.render_chat(tokenizer, chat)
    start, _ = rendered.message_spans[1]
    enc = tokenizer(rendered.text, return_offsets_mapping=True, add_special_tokens=False)
    tokens = [rendered.text[s:e] for s, e in enc["offset_mapping"]]
    picked = "".join(tokens[i] for i in stats.token_indices["reward"][0])
    assert picked == ":" and start > 0


def test_cache_reuses_and_resumes_identically(tiny, tmp_cache, monkeypatch):
    model, tokenizer = tiny
    kw = dict(use_cache=True, progress=False, max_batch_size=1, cache_dir=tmp_cache / "x")
    reference = extract(model, tokenizer, TEXTS, SPANS, use_cache=False, progress=False, max_batch_size=1)

    real = forward_mod.run_batch
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("interrupted")
        return real(*args, **kwargs)

    monkeypatch.setattr(forward_mod, "run_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        extract(model, tokenizer, TEXTS, SPANS, **kw)
    monkeypatch.setattr(forward_mod, "run_batch", real)
    parts = list((tmp_cache / "x").glob("*.parts/*.safetensors"))
    assert len(parts) == 2  # two batches survived the interruption

    counted = {"n": 0}

    def counting(*args, **kwargs):
        counted["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(forward_mod, "run_batch", counting)
    resumed = extract(model, tokenizer, TEXTS, SPANS, **kw)
    assert counted["n"] == len(TEXTS) - 2
    again = extract(model, tokenizer, TEXTS, SPANS, **kw)
    assert again.info["cached"] and counted["n"] == len(TEXTS) - 2
    for name in ("before", "after"):
        assert torch.equal(resumed.sums[name], again.sums[name])
        torch.testing.assert_close(resumed.sums[name], reference.sums[name], atol=0, rtol=0)


def test_another_process_running_the_same_extraction_is_left_alone(tiny, tmp_cache, monkeypatch):
    """Two processes may run the same extraction into one cache at once (two notebooks, two test workers): the one
    that finishes first removes its batch files but leaves what the other is still writing (an atomic write's
    temporary file in the same folder), and a batch file that the other removed meanwhile is computed again, not
    reported as damaged."""
    model, tokenizer = tiny
    reference = extract(model, tokenizer, TEXTS, SPANS, use_cache=False, progress=False, max_batch_size=1)
    real = forward_mod.run_batch

    def beside_a_neighbour(*args, **kwargs):
        for parts in (tmp_cache / "n").glob("*.parts"):  # there from the second batch written on
            (parts / ".000000.safetensors.neighbour.tmp").write_bytes(b"")
        return real(*args, **kwargs)

    monkeypatch.setattr(forward_mod, "run_batch", beside_a_neighbour)
    stats = extract(model, tokenizer, TEXTS, SPANS, use_cache=True, progress=False, max_batch_size=1,
                    cache_dir=tmp_cache / "n")  # fmt: skip
    for name in ("before", "after"):
        torch.testing.assert_close(stats.sums[name], reference.sums[name], atol=0, rtol=0)
    (parts,) = (tmp_cache / "n").glob("*.parts")
    assert [p.name for p in parts.iterdir()] == [".000000.safetensors.neighbour.tmp"]
    assert stats_mod.load_part(parts / "000000.safetensors") is None  # removed by the other process: recompute


def test_changed_inputs_are_not_reused(tiny, tmp_cache):
    model, tokenizer = tiny
    kw = dict(progress=False, cache_dir=tmp_cache / "y")
    first = extract(model, tokenizer, TEXTS, SPANS, **kw)
    other = [dict(s) for s in SPANS]
    other[0] = {"before": [(0, 6)], "after": [(13, 40)]}
    second = extract(model, tokenizer, TEXTS, other, **kw)
    assert second.info["cache_key"] != first.info["cache_key"] and not second.info["cached"]
    third = extract(model, tokenizer, TEXTS, SPANS, layers=[1, 2], **kw)
    assert third.info["cache_key"] != first.info["cache_key"]
    model2, _ = vaxis.load_model("tiny-qwen3", seed=5)
    fourth = extract(model2, tokenizer, TEXTS, SPANS, **kw)
    assert fourth.info["cache_key"] != first.info["cache_key"]
    assert len(list((tmp_cache / "y").glob("*.safetensors"))) == 4  # nothing overwritten


def _assert_fresh(changed, fresh, first):
    """``changed`` (cache on, one input changed) is a cache miss whose values equal ``fresh``
    (the same inputs with ``use_cache=False``) and differ from ``first`` (before the change)."""
    assert changed.info["cached"] is False
    assert changed.info["cache_key"] != first.info["cache_key"]
    assert torch.equal(changed.text_lengths, fresh.text_lengths)
    for name in fresh.names:
        torch.testing.assert_close(changed.sums[name], fresh.sums[name], atol=0, rtol=0)
        torch.testing.assert_close(changed.norm_sums[name], fresh.norm_sums[name], atol=0, rtol=0)
        if fresh.projections is not None:
            for a, b in zip(changed.projections[name], fresh.projections[name]):
                torch.testing.assert_close(a, b, atol=0, rtol=0, equal_nan=True)


def test_cache_key_covers_text_content(tiny, tmp_cache):
    """A text replaced by another of the same length (same spans, same count of texts) is a
    cache miss. Guards against a key that hashes the number or length of the texts, not their
    content (e.g. ``len(unique)``)."""
    model, tokenizer = tiny
    kw = dict(progress=False, max_batch_size=1)
    first = extract(model, tokenizer, TEXTS, SPANS, cache_dir=tmp_cache / "t", **kw)
    texts = list(TEXTS)
    texts[2] = TEXTS[2].replace("one", "two")
    assert texts[2] != TEXTS[2] and len(texts[2]) == len(TEXTS[2])
    changed = extract(model, tokenizer, texts, SPANS, cache_dir=tmp_cache / "t", **kw)
    fresh = extract(model, tokenizer, texts, SPANS, use_cache=False, **kw)
    _assert_fresh(changed, fresh, first)
    assert not torch.equal(changed.sums["after"][2], first.sums["after"][2])
    torch.testing.assert_close(changed.sums["after"][:2], first.sums["after"][:2], atol=0, rtol=0)


def test_cache_key_covers_directions(tiny, tmp_cache):
    """Other directions of the same shape, at the same layers, are a cache miss (the cosines
    change). Guards against leaving the directions out of the key."""
    model, tokenizer = tiny
    kw = dict(progress=False, cache_dir=tmp_cache / "d")
    generator = torch.Generator().manual_seed(3)
    dirs = {layer: torch.randn(2, 64, generator=generator) for layer in (1, 2)}
    other = {layer: torch.randn(2, 64, generator=generator) for layer in (1, 2)}
    first = extract(model, tokenizer, TEXTS, SPANS, directions=dirs, **kw)
    changed = extract(model, tokenizer, TEXTS, SPANS, directions=other, **kw)
    fresh = extract(model, tokenizer, TEXTS, SPANS, directions=other, progress=False, use_cache=False)
    _assert_fresh(changed, fresh, first)
    assert not torch.allclose(changed.projections["after"][0][:, 1], first.projections["after"][0][:, 1])


def _tokenizer_with_bos():
    """The tiny tokenizer, but ``add_special_tokens=True`` prepends ``<|im_start|>`` as a BOS
    (the plain tiny tokenizer adds nothing, so the option would make no difference)."""
    from tokenizers import processors

    from vaxis.core.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    bos = tokenizer.convert_tokens_to_ids("<|im_start|>")
    tokenizer.backend_tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|im_start|> $A", special_tokens=[("<|im_start|>", bos)]),
        ]
    )
    return tokenizer


def test_cache_key_covers_add_special_tokens(tiny, tmp_cache):
    """With a tokenizer that adds a BOS, ``add_special_tokens=True`` after a cached run with
    ``False`` is a cache miss: every token has one more token before it, so the values differ.
    Guards against leaving ``add_special_tokens`` out of the key."""
    model, plain = tiny
    tokenizer = _tokenizer_with_bos()
    assert tokenizer("abc", add_special_tokens=True).input_ids[1:] == plain("abc").input_ids
    kw = dict(progress=False, cache_dir=tmp_cache / "s")
    first = extract(model, tokenizer, TEXTS, SPANS, add_special_tokens=False, **kw)
    changed = extract(model, tokenizer, TEXTS, SPANS, add_special_tokens=True, **kw)
    fresh = extract(model, tokenizer, TEXTS, SPANS, add_special_tokens=True, progress=False, use_cache=False)
    _assert_fresh(changed, fresh, first)
    torch.testing.assert_close(changed.text_lengths, first.text_lengths + 1, atol=0, rtol=0)
    for name in ("before", "after"):
        assert torch.equal(changed.counts[name], first.counts[name])  # the BOS (offset (0, 0)) is in no span
        assert not torch.allclose(changed.sums[name], first.sums[name])


def test_cache_key_covers_the_tokenizer(tiny, tmp_cache):
    """Same model, same texts, same options, but a tokenizer that splits the text differently (it
    prepends a BOS): a cache miss. Guards against a key that names the model but not the tokenizer."""
    model, plain = tiny
    kw = dict(progress=False, cache_dir=tmp_cache / "t", add_special_tokens=True)
    first = extract(model, plain, TEXTS, SPANS, **kw)
    changed = extract(model, _tokenizer_with_bos(), TEXTS, SPANS, **kw)
    fresh = extract(
        model, _tokenizer_with_bos(), TEXTS, SPANS, progress=False, use_cache=False, add_special_tokens=True
    )
    _assert_fresh(changed, fresh, first)


def test_damaged_cache_file_is_reported(tiny, tmp_cache):
    model, tokenizer = tiny
    kw = dict(progress=False, cache_dir=tmp_cache / "z")
    stats = extract(model, tokenizer, TEXTS, SPANS, **kw)
    path = tmp_cache / "z" / f"{stats.info['cache_key']}.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CacheError, match="damaged.*delete it"):
        extract(model, tokenizer, TEXTS, SPANS, **kw)


def test_save_and_load_stats_round_trip(tiny, tmp_path):
    model, tokenizer = tiny
    stats = extract(model, tokenizer, TEXTS, SPANS, directions={2: torch.randn(2, 64)}, use_cache=False, progress=False)
    vaxis.save_stats(tmp_path / "s.safetensors", stats)
    back = vaxis.load_stats(tmp_path / "s.safetensors")
    assert back.layers == stats.layers and back.names == stats.names
    for n in stats.names:
        assert torch.equal(back.sums[n], stats.sums[n])
        assert all(torch.equal(a, b) for a, b in zip(back.token_indices[n], stats.token_indices[n]))
        for a, b in zip(back.projections[n], stats.projections[n]):
            torch.testing.assert_close(a, b, equal_nan=True, atol=0, rtol=0)


@pytest.mark.parametrize(
    "texts,spans,error,match",
    [
        ([], [], ValueError, "no texts given"),
        (["abc def"], [{"a": [(3, 100)]}], SpanError, "outside the text"),
        (["abc def"], [{"a": [(0, 4)], "b": [(3, 6)]}], SpanError, "overlap"),
        (["abc def"], [{"a": [(2, 2)]}], SpanError, "empty"),
        (["abc def"], [{}], ValueError, "non-empty mapping"),
        (["abc", "def"], [{"a": [(0, 1)]}], ValueError, "one span mapping per text"),
        ([""], [{"a": [(0, 1)]}], ValueError, "empty"),
    ],
)
def test_bad_input(tiny, texts, spans, error, match):
    model, tokenizer = tiny
    with pytest.raises(error, match=match):
        extract(model, tokenizer, texts, spans, use_cache=False, progress=False)


def test_bad_layer_and_slow_tokenizer(tiny):
    model, tokenizer = tiny
    with pytest.raises(vaxis.LayoutError, match="out of range"):
        extract(model, tokenizer, TEXTS, SPANS, layers=[7], use_cache=False, progress=False)

    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="fast tokenizer"):
        extract(model, Slow(), ["abc"], [{"a": [(0, 1)]}], use_cache=False, progress=False)


def test_damaged_part_file_is_reported(tiny, tmp_cache):
    model, tokenizer = tiny
    folder = tmp_cache / "p"
    stats = extract(model, tokenizer, TEXTS, SPANS, progress=False, cache_dir=folder, max_batch_size=1)
    key = stats.info["cache_key"]
    (folder / f"{key}.safetensors").unlink()
    (folder / f"{key}.parts").mkdir()
    (folder / f"{key}.parts" / "000000.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(CacheError, match="000000.safetensors is damaged"):
        extract(model, tokenizer, TEXTS, SPANS, progress=False, cache_dir=folder, max_batch_size=1)


def test_token_spans_and_kept_activations(tiny):
    model, tokenizer = tiny
    dirs = {layer: torch.randn(2, 64) for layer in range(4)}
    stats = extract(
        model,
        tokenizer,
        TEXTS,
        SPANS,
        directions=dirs,
        token_spans=["after"],
        keep_activations=True,
        use_cache=False,
        progress=False,
    )
    assert set(stats.projections) == {"after"} and set(stats.activations) == {"after"}
    for i, text in enumerate(TEXTS):
        idx = stats.token_indices["after"][i]
        naive = _naive(model, tokenizer, text, idx, stats.layers)
        kept = stats.activations["after"][i]
        assert kept.shape == (len(idx), 4, 64)
        for li, layer in enumerate(stats.layers):
            torch.testing.assert_close(kept[:, li], naive[layer], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not span names"):
        extract(model, tokenizer, TEXTS, SPANS, token_spans=["nope"], use_cache=False, progress=False)


def test_kept_activations_survive_the_cache(tiny, tmp_cache):
    model, tokenizer = tiny
    kw = dict(token_spans=["before"], keep_activations=True, progress=False, cache_dir=tmp_cache / "k")
    first = extract(model, tokenizer, TEXTS, SPANS, **kw)
    again = extract(model, tokenizer, TEXTS, SPANS, **kw)
    assert again.info["cached"] and again.projections is None
    for a, b in zip(first.activations["before"], again.activations["before"]):
        assert torch.equal(a, b)


def test_pieces_cut_padding_where_it_pays():
    """``pieces`` splits a planned batch (rows longest first) into consecutive runs that cut padded tokens, each
    run keeping ``min_tokens``; small or even batches run whole. Guards against a split that loses or repeats
    rows, leaves a run under the minimum, or never splits."""
    pieces = forward_mod.pieces
    assert pieces([50, 40, 30], 1000) == [(0, 3)]  # under 2 * min_tokens: whole
    assert pieces([500] * 8, 1000) == [(0, 8)]  # no padding to cut: an extra forward only costs
    widths = [1000] * 4 + [100] * 40
    assert pieces(widths, 1000) == [(0, 4), (4, 44)]  # 8,000 padded tokens instead of 44,000
    widths = sorted(range(200, 1000, 7), reverse=True)
    runs = pieces(widths, 2000)
    assert runs[0][0] == 0 and runs[-1][1] == len(widths) and len(runs) > 1
    assert all(a[1] == b[0] for a, b in zip(runs, runs[1:]))  # consecutive, every row once
    assert all((stop - first) * widths[first] >= 2000 for first, stop in runs)
    assert sum((stop - first) * widths[first] for first, stop in runs) < len(widths) * widths[0]
    assert len(pieces(list(range(5000, 0, -1)), 100_000)) > 1  # thousands of rows: a bounded number of runs


def test_split_batches_equal_one_at_a_time(tiny, monkeypatch):
    """A planned batch run as several forward passes (forced here with a tiny minimum) gives every item what one
    text at a time gives, per-token outputs included (they are placed by an offset per piece), and computes fewer
    padded tokens. Guards against a piece reading another piece's rows or writing its cosines or kept activations
    at the wrong rows."""
    model, tokenizer = tiny
    texts = [TEXTS[1] * 3, TEXTS[2], TEXTS[0] * 2, TEXTS[3], TEXTS[2] + " " + TEXTS[0]]
    spans = [{"before": [(0, 11)], "after": [(150, 200)]}, SPANS[2], {"before": [(0, 5)], "after": [(80, 100)]},
             SPANS[3], {"before": [(0, 5)], "after": [(20, 40)]}]  # fmt: skip
    dirs = {layer: torch.randn(2, 64, generator=torch.Generator().manual_seed(layer)) for layer in range(4)}
    kw = dict(directions=dirs, keep_activations=True, token_spans=["after"], use_cache=False, progress=False)
    single = extract(model, tokenizer, texts, spans, max_batch_size=1, **kw)
    whole = extract(model, tokenizer, texts, spans, **kw)
    forwards = []
    handle = model.get_input_embeddings().register_forward_pre_hook(lambda m, args: forwards.append(args[0].shape))
    monkeypatch.setitem(forward_mod.PIECE_MIN_TOKENS, "cpu", 1)
    try:
        split = extract(model, tokenizer, texts, spans, **kw)
    finally:
        handle.remove()
    assert len(forwards) > 1  # one planned batch, run as several forwards
    assert split.info["tokens_padded"] == sum(rows * width for rows, width in forwards) < whole.info["tokens_padded"]
    assert split.info["tokens_processed"] == whole.info["tokens_processed"]
    for name in ("before", "after"):
        torch.testing.assert_close(split.sums[name], single.sums[name], atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(split.norm_sums[name], single.norm_sums[name], atol=1e-4, rtol=1e-5)
    for a, b in zip(split.projections["after"], single.projections["after"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for a, b in zip(split.activations["after"], single.activations["after"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_forward_runs_causal_attention_without_a_mask(tiny, monkeypatch):
    """A padded batch reaches SDPA with no mask and ``is_causal=True`` (its fast causal kernel; with a mask it
    computes every score, on a GPU with the slower masked kernel and grouped-query heads repeated). Guards against
    passing the padding mask again."""
    model, tokenizer = tiny
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
        seen.append((attn_mask is None, is_causal, query.shape[0]))
        return real(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    stats = extract(model, tokenizer, TEXTS, SPANS, use_cache=False, progress=False)
    assert stats.info["tokens_padded"] > stats.info["tokens_processed"]  # the batch was padded
    assert seen and all(s[:2] == (True, True) for s in seen) and max(s[2] for s in seen) == len(TEXTS)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gemma3_text", "gpt2"])
def test_unmasked_padded_batches_are_exact_for_each_architecture(arch):
    """Without a mask, right-padded batches equal one text at a time on every architecture vaxis supports
    (Gemma 3's sliding window of 8 tokens included: the texts are longer). Guards against pads that real tokens
    can see (e.g. left padding without a mask, or a model that is not causal)."""
    from vaxis.core.tiny import tiny_model_and_tokenizer

    model, tokenizer = tiny_model_and_tokenizer(arch, seed=1)
    kw = dict(use_cache=False, progress=False)
    batched = extract(model, tokenizer, TEXTS, SPANS, **kw)
    single = extract(model, tokenizer, TEXTS, SPANS, max_batch_size=1, **kw)
    assert batched.info["tokens_padded"] > batched.info["tokens_processed"]
    for name in ("before", "after"):
        torch.testing.assert_close(batched.sums[name], single.sums[name], atol=1e-4, rtol=1e-5)


def test_part_files_are_written_off_the_main_thread_and_failures_surface(tiny, tmp_cache, monkeypatch):
    """Batches are written to the cache by a background thread (the device runs the next batch meanwhile), and a
    write that fails fails the extraction. Guards against writes that block the loop or errors that vanish."""
    import threading

    model, tokenizer = tiny
    real_save, threads = stats_mod.save_file, []

    def save(tensors, path, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        return real_save(tensors, path, **kwargs)

    monkeypatch.setattr(stats_mod, "save_file", save)
    kw = dict(progress=False, max_batch_size=1)
    extract(model, tokenizer, TEXTS, SPANS, cache_dir=tmp_cache / "w", **kw)
    assert threads == [False] * len(TEXTS) + [True]  # the parts, then the merged file

    def broken(tensors, path, **kwargs):
        if ".parts" in str(path):  # the batches' files only: the merged file would fail on its own
            raise OSError("disk full")
        return real_save(tensors, path, **kwargs)

    monkeypatch.setattr(stats_mod, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        extract(model, tokenizer, TEXTS, SPANS, cache_dir=tmp_cache / "f", **kw)
    assert not list((tmp_cache / "f").glob("*.safetensors"))
