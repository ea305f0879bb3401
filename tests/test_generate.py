"""vaxis.generate: batched greedy equals one at a time (steered too), seeded sampling does not
depend on batching or order, stop strings / EOS / prefill, and the on-disk cache (hits, misses,
resume after an interruption)."""

from __future__ import annotations

import contextlib
import copy
import json
import random

import pytest
import torch

import vaxis
from vaxis.core.generate import Generation, generate
from vaxis.core.tiny import tiny_model_and_tokenizer

QUESTIONS = [
    "Why is the sky blue?",
    "Name three rivers.",
    "The river flows through the valley, past the old mill and the stone bridge. Where does it go?",
    "Is this the right answer?",
    "Mathematics studies numbers, shapes, structures and change. What is a theorem?",
    "Hi",
]
CHATS = [[{"role": "user", "content": q}] for q in QUESTIONS]
FAST = dict(progress=False, cache=False)


@pytest.fixture(scope="module")
def tiny64(tiny):
    """The tiny model in float64: padding changes matrix shapes, and float32 rounding could flip
    a near-tie argmax of a random model; float64 makes batched == one at a time exact."""
    model, tokenizer = tiny
    return copy.deepcopy(model).double(), tokenizer


def _vector(seed=1, scale=0.01):
    """A random steering vector; the tiny model's residual norms are about 0.2, so 0.01 * randn(64)
    (norm about 0.08) changes its outputs without collapsing them to one repeated token."""
    return scale * torch.randn(64, generator=torch.Generator().manual_seed(seed))


def _count_forwards(model):
    """Pre-hook counting prefill calls (more than one input column) and all calls."""
    counts = {"prefill": 0, "calls": 0}

    def hook(module, args, kwargs):
        counts["calls"] += 1
        counts["prefill"] += kwargs["input_ids"].shape[1] > 1

    return counts, model.register_forward_pre_hook(hook, with_kwargs=True)


def hf_one_at_a_time(model, tokenizer, chats, max_new_tokens, vectors=None, positions="all", prefill=""):
    """The authors' way: Hugging Face generate on one prompt at a time, under vaxis.steer."""
    out = []
    for chat in chats:
        text = vaxis.render_chat(tokenizer, chat, add_generation_prompt=True).text + prefill
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with vaxis.steer(model, vectors, positions=positions) if vectors else contextlib.nullcontext():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        out.append(ids[0, enc.input_ids.shape[1] :].tolist())
    return out


@pytest.fixture(scope="module")
def gpt2_64():
    """A tiny GPT-2 (learned absolute positions, so position ids must count real tokens only)."""
    model, tokenizer = tiny_model_and_tokenizer("gpt2", seed=0)
    return model.double(), tokenizer


@pytest.mark.parametrize("arch, steered", [("qwen3", False), ("qwen3", True), ("gpt2", True)])
def test_greedy_batched_equals_one_at_a_time_and_hf(tiny64, gpt2_64, arch, steered):
    model, tokenizer = tiny64 if arch == "qwen3" else gpt2_64
    steer = {2: _vector()} if steered else None
    batched = generate(model, tokenizer, CHATS, max_new_tokens=10, steer=steer, **FAST)
    single = generate(model, tokenizer, CHATS, max_new_tokens=10, steer=steer, max_batch_tokens=1, **FAST)
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.token_ids for g in batched] == hf_one_at_a_time(model, tokenizer, CHATS, 10, steer)
    g = batched[2]
    assert (g.conversation, g.sample, g.n_new_tokens, g.finish_reason) == (2, 0, 10, "length")
    assert g.prompt == vaxis.render_chat(tokenizer, CHATS[2], add_generation_prompt=True).text
    assert g.text == tokenizer.decode(g.token_ids, skip_special_tokens=True)
    if steered:  # the vector is large enough to change what the model says
        plain = generate(model, tokenizer, CHATS, max_new_tokens=10, **FAST)
        assert sum(a.token_ids != b.token_ids for a, b in zip(plain, batched)) >= 3


@pytest.mark.parametrize("positions", [3, "prompt", "generated", "mask"])
def test_steering_positions_under_left_padding(tiny64, positions):
    """Each row's own tokens are counted from its first real token, whatever its padding."""
    model, tokenizer = tiny64
    vectors = {1: _vector(2)}
    hf_positions = positions
    if positions == "mask":  # steer own columns 2, 5, 6, ... (a 1-D mask over each sequence's tokens)
        positions = torch.zeros(200, dtype=torch.bool)
        positions[[2, 5, 6, *range(40, 200, 3)]] = True
        hf_positions = positions
    batched = generate(model, tokenizer, CHATS, max_new_tokens=8, steer=vectors, positions=positions, **FAST)
    expected = hf_one_at_a_time(model, tokenizer, CHATS, 8, vectors, positions=hf_positions)
    assert [g.token_ids for g in batched] == expected


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_finished_rows_leave_the_batch_without_changing_the_others(tiny64, temperature):
    """Rows ended early by stop strings are dropped from the batch and the KV cache; the rest go on
    exactly as alone (own steering columns, own random generator)."""
    model, tokenizer = tiny64
    # prompts have 15..52 tokens: from own column 20 on, the shortest is steered from its 6th new token
    kw = dict(max_new_tokens=12, temperature=temperature, steer={1: _vector(2)}, positions=20, **FAST)
    free = generate(model, tokenizer, CHATS, **kw)
    stops = []  # one stop string from each of rows 0-3 (at most its 6th character), none in rows 4-5
    for g in free[:4]:
        stops += [c for c in (g.text[k : k + 2] for k in range(1, 6)) if not any(c in h.text for h in free[4:])][:1]
    batched = generate(model, tokenizer, CHATS, stop=stops, **kw)
    single = generate(model, tokenizer, CHATS, stop=stops, max_batch_tokens=1, **kw)
    assert batched == single
    assert sum(g.finish_reason == "stop" for g in batched) >= 3  # enough to prune (a quarter of the rows)
    assert [g.finish_reason for g in batched[4:]] == ["length", "length"]


def test_sampling_is_seeded_per_sequence(tiny64):
    model, tokenizer = tiny64
    kw = dict(max_new_tokens=8, temperature=1.0, top_p=0.9, n_samples=3, seed=7, **FAST)
    first = generate(model, tokenizer, CHATS, **kw)
    assert [(g.conversation, g.sample) for g in first] == [(i, s) for i in range(len(CHATS)) for s in range(3)]
    order = list(range(len(CHATS)))
    random.Random(0).shuffle(order)
    shuffled = generate(model, tokenizer, [CHATS[i] for i in order], max_batch_tokens=120, **kw)  # 2-4 a batch
    again = {(order[g.conversation], g.sample): g.text for g in shuffled}
    assert {(g.conversation, g.sample): g.text for g in first} == again
    for i in range(len(CHATS)):  # different sample indices, different samples
        assert len({g.text for g in first[3 * i : 3 * i + 3]}) == 3
    other_seed = generate(model, tokenizer, CHATS, **{**kw, "seed": 8})
    assert [g.text for g in other_seed] != [g.text for g in first]


def test_samples_of_one_prompt_share_one_prompt_pass(tiny64):
    """The samples of a conversation run its prompt once (rows: distinct prompts, not samples), and
    give the same texts as a run where every sample sits alone in its batch, steered or not."""
    model, tokenizer = tiny64
    rows = []
    handle = model.register_forward_pre_hook(
        lambda m, a, kw: rows.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        kw = dict(max_new_tokens=5, temperature=1.0, n_samples=4, seed=3, steer={2: _vector()}, **FAST)
        shared = generate(model, tokenizer, CHATS[:2], **kw)
    finally:
        handle.remove()
    assert rows[0][0] == 2 and rows[1] == (8, 1)  # one prompt pass for 2 chats, then 8 sampled rows
    alone = generate(model, tokenizer, CHATS[:2], max_batch_tokens=1, **kw)  # one sequence a batch
    assert [g.text for g in shared] == [g.text for g in alone]
    assert len({g.text for g in shared[:4]}) > 1


def test_tiny_top_p_is_greedy_and_greedy_samples_are_copies(tiny64):
    model, tokenizer = tiny64
    greedy = generate(model, tokenizer, CHATS[:3], max_new_tokens=6, n_samples=2, **FAST)
    assert [g.sample for g in greedy] == [0, 1] * 3 and greedy[0].token_ids == greedy[1].token_ids
    nucleus = generate(model, tokenizer, CHATS[:3], max_new_tokens=6, temperature=2.0, top_p=1e-6, **FAST)
    assert [g.token_ids for g in nucleus] == [g.token_ids for g in greedy[::2]]


def test_stop_strings_eos_and_prefill(tiny64):
    model, tokenizer = tiny64
    base = generate(model, tokenizer, CHATS, max_new_tokens=12, **FAST)
    stop = base[1].text[5:8]
    cut = generate(model, tokenizer, CHATS, max_new_tokens=12, stop=[stop], **FAST)
    for a, b in zip(base, cut):
        if stop in a.text:
            assert b.finish_reason == "stop" and b.text == a.text[: a.text.find(stop)]
            assert b.token_ids == a.token_ids[: b.n_new_tokens] and b.n_new_tokens < 12
        else:
            assert b.token_ids == a.token_ids and b.finish_reason == "length"
    assert cut[1].finish_reason == "stop"

    eos_model = copy.deepcopy(model)
    eos_token = base[0].token_ids[3]
    eos_model.generation_config.eos_token_id = eos_token
    ended = generate(eos_model, tokenizer, CHATS[:1], max_new_tokens=12, **FAST)[0]
    first = base[0].token_ids.index(eos_token) + 1
    assert ended.finish_reason == "eos" and ended.token_ids == base[0].token_ids[:first]
    assert ended.text == tokenizer.decode(ended.token_ids[:-1], skip_special_tokens=True)

    filled = generate(model, tokenizer, CHATS, max_new_tokens=6, prefill="The river", **FAST)
    assert [g.token_ids for g in filled] == hf_one_at_a_time(model, tokenizer, CHATS, 6, prefill="The river")
    assert all(g.prefill == "The river" and not g.prompt.endswith("The river") for g in filled)
    per_chat = generate(model, tokenizer, CHATS[:2], max_new_tokens=6, prefill=["The river", "A"], **FAST)
    assert per_chat[0].token_ids == filled[0].token_ids and per_chat[1].prefill == "A"


def test_axis_steering_and_axis_from_another_model(tiny64):
    model, tokenizer = tiny64
    axis = vaxis.Axis(
        vectors=torch.randn(4, 64, generator=torch.Generator().manual_seed(3)),
        layers=[0, 1, 2, 3],
        mean_norms=torch.full((4,), 20.0),
        main_layer=2,
        model="tiny",
        hidden_size=64,
        n_blocks=3,
    )
    by_axis = generate(model, tokenizer, CHATS, max_new_tokens=6, steer=(axis, 30.0), **FAST)
    by_dict = generate(model, tokenizer, CHATS, max_new_tokens=6, steer={2: axis.steering_vector(30.0)}, **FAST)
    assert [g.token_ids for g in by_axis] == [g.token_ids for g in by_dict]
    other = vaxis.Axis(axis.vectors, axis.layers, axis.mean_norms, 2, "other", 64, n_blocks=30)
    with pytest.raises(ValueError, match="Fit an axis for this model"):
        generate(model, tokenizer, CHATS, max_new_tokens=6, steer=(other, 8.0), **FAST)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(conversations=[]), ValueError, "non-empty list of chats"),
        (dict(n_samples=0), ValueError, "n_samples=0: give an int >= 1"),
        (dict(max_new_tokens=0), ValueError, "max_new_tokens=0: give an int >= 1"),
        (dict(temperature=-0.5), ValueError, "use 0 for greedy"),
        (dict(top_p=0.0), ValueError, r"top_p=0.0: give a value in \(0, 1\]"),
        (dict(steer={9: torch.ones(64)}), vaxis.LayoutError, r"layer 9 is out of range.*0\.\.3"),
        (dict(steer={1: torch.ones(32)}), ValueError, r"this model needs \(64,\)"),
        (dict(prefill=["a"]), ValueError, "one per conversation"),
        (dict(positions="end"), ValueError, "'all', 'prompt', 'generated'"),
        (dict(conversations=CHATS[0]), ValueError, "wrap a single chat"),
    ],
)
def test_bad_input(tiny, kwargs, error, match):
    model, tokenizer = tiny
    kw = dict(conversations=CHATS[:2], max_new_tokens=4, **FAST) | kwargs
    with pytest.raises(error, match=match):
        generate(model, tokenizer, **kw)


def _interrupt_after(model, n_batches):
    """Make the model raise at the prefill of batch ``n_batches + 1``; returns the hook handle."""
    calls = []

    def hook(module, args, kwargs):
        if kwargs["input_ids"].shape[1] > 1:
            calls.append(1)
            if len(calls) > n_batches:
                raise RuntimeError("interrupted")

    return model.register_forward_pre_hook(hook, with_kwargs=True)


def test_cache_hit_runs_no_forward_and_resumes_after_interruption(tiny, tmp_cache):
    model, tokenizer = tiny
    kw = dict(max_new_tokens=6, temperature=0.8, n_samples=2, steer={1: _vector()}, max_batch_tokens=1)
    reference = generate(model, tokenizer, CHATS, progress=False, cache=False, **kw)
    for n_batches, torn in ((1, True), (1, False)):  # two interruptions, one batch done each time
        handle = _interrupt_after(model, n_batches)
        try:
            with pytest.raises(RuntimeError, match="interrupted"):
                generate(model, tokenizer, CHATS, progress=False, **kw)
        finally:
            handle.remove()
        if torn:  # a torn last line is dropped (and cut off, so the next append starts a clean line)
            (partial,) = (tmp_cache / "generate").glob("*.jsonl.partial")
            with open(partial, "a") as f:
                f.write('{"conversation": 3, "sample": 1, "pro')
    assert len(partial.read_text().splitlines()) == 2
    counts, handle = _count_forwards(model)
    try:
        resumed = generate(model, tokenizer, CHATS, progress=False, **kw)
        assert counts["prefill"] == len(CHATS) * 2 - 2  # one sequence per batch; two were kept
        assert resumed == reference
        assert not partial.exists()
        (final,) = (tmp_cache / "generate").glob("*.jsonl")
        assert [Generation(**json.loads(line)) for line in final.read_text().splitlines()] == reference
        counts["calls"] = 0
        assert generate(model, tokenizer, CHATS, progress=False, **kw) == reference
        assert counts["calls"] == 0
    finally:
        handle.remove()


def _changed_weights(model):
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.model.layers[1].mlp.down_proj.weight[3, 5] += 1e-3
    return other


@pytest.mark.parametrize(
    "change",
    [
        lambda m, kw: (m, {**kw, "conversations": [[{"role": "user", "content": "Why is the sky blue!"}], *CHATS[1:]]}),
        lambda m, kw: (m, {**kw, "temperature": 0.9}),
        lambda m, kw: (m, {**kw, "stop": ["zz"]}),
        lambda m, kw: (m, {**kw, "positions": "generated"}),
        lambda m, kw: (m, {**kw, "steer": {1: _vector() + torch.eye(64)[7] * 1e-4}}),
        lambda m, kw: (_changed_weights(m), kw),
    ],
    ids=["prompt", "temperature", "stop", "positions", "steering-vector", "model-weights"],
)
def test_any_changed_input_is_a_cache_miss(tiny, tmp_cache, change):
    model, tokenizer = tiny
    kw = dict(conversations=CHATS, max_new_tokens=4, temperature=0.8, steer={1: _vector()}, progress=False)
    generate(model, tokenizer, **kw)
    other_model, other_kw = change(model, kw)
    counts, handle = _count_forwards(other_model)
    try:
        generate(other_model, tokenizer, **other_kw)
    finally:
        handle.remove()
    assert counts["calls"] > 0
    assert len(list((tmp_cache / "generate").glob("*.jsonl"))) == 2


def test_progress_bar_shows_sequences_and_tokens_per_s(tiny, capsys):
    model, tokenizer = tiny
    generate(model, tokenizer, CHATS[:2], max_new_tokens=3, cache=False, progress=True)
    err = capsys.readouterr().err
    assert "2/2" in err and "seq" in err and "tok/s" in err


@pytest.mark.parametrize("engine", ["dynamic", "static", "static, captured"])
def test_smollm2_batched_greedy_matches_sequential_with_steering(smol, engine, monkeypatch):
    """In float32 on the real model, every engine (the static one also with its decode step captured, in the CPU
    stand-in for CUDA graphs) gives Hugging Face's one-at-a-time greedy tokens."""
    model, tokenizer = smol
    graphs = None
    if engine == "static, captured":
        import graph_replay

        graphs, engine = graph_replay.capture_on_cpu(monkeypatch), "static"
    chats = [[{"role": "user", "content": q}] for q in ("What is the capital of France?", "Name a fruit.", "Hi!")]
    direction = torch.randn(576, generator=torch.Generator().manual_seed(0))
    vectors = {15: 4.0 * direction / direction.norm()}
    batched = generate(model, tokenizer, chats, max_new_tokens=8, steer=vectors, engine=engine, **FAST)
    assert [g.token_ids for g in batched] == hf_one_at_a_time(model, tokenizer, chats, 8, vectors)
    if graphs is not None:
        assert len(graphs) == 1 and graphs[0].replays > 0
    assert "Paris" in batched[0].text
