"""vaxis.core.engine: continuous batching (finished rows refilled by waiting sequences) returns exactly what one
sequence at a time returns, greedy and sampled, under every steering position and with scores; it decodes in
fewer steps than batches run to their longest row; the KV cache stays within the budget; a cache that cannot be
merged runs without refilling; the default budget on a GPU follows free memory and KV-cache bytes per token."""

from __future__ import annotations

import copy
import types

import pytest
import torch
from test_generate import QUESTIONS as GENERATE_QUESTIONS
from test_generate import hf_one_at_a_time

from vaxis.core import engine, engine_static
from vaxis.core.engine_static import StaticDecoder
from vaxis.core.generate import generate

QUESTIONS = [
    *GENERATE_QUESTIONS,
    "What do bees make?",
    "Count to five, slowly, and then tell me which number came third.",
]
CHATS = [[{"role": "user", "content": q}] for q in QUESTIONS]
FAST = dict(progress=False, cache=False)
NEW = 14
BUDGET = 3 * (60 + NEW)  # about three rows at a time: prompts have 15..60 tokens


@pytest.fixture(scope="module")
def tiny64(tiny):
    model, tokenizer = tiny
    return copy.deepcopy(model).double(), tokenizer


def _varied(model, tokenizer, **kw):
    """A copy of ``model`` whose EOS ids end the rows of ``generate(model, tokenizer, CHATS, **kw)`` after
    different numbers of tokens: tokens of its free rows, added one by one while they spread the rows' lengths
    (a row ends at its first EOS id, and the same settings give the same rows up to there)."""
    free = [g.token_ids for g in generate(model, tokenizer, CHATS, **{**kw, "max_batch_tokens": 1})]

    def lengths(ids):
        return [next((k + 1 for k, t in enumerate(row) if t in ids), NEW) for row in free]

    eos: set = set()
    for k in range(2, NEW):
        for row in (r for r in free if k < len(r)):
            trial = eos | {row[k]}
            if min(lengths(trial)) >= 3 and len(set(lengths(trial))) > len(set(lengths(eos))):
                eos = trial
    other = copy.deepcopy(model)
    other.generation_config.eos_token_id = sorted(eos)
    return other


@pytest.fixture(scope="module")
def varied(tiny64):
    model, tokenizer = tiny64
    return _varied(model, tokenizer, max_new_tokens=NEW, **FAST), tokenizer


def _vector(seed=2, scale=0.01):
    return scale * torch.randn(64, generator=torch.Generator().manual_seed(seed))


def _spy(monkeypatch):
    """Record the decoders that run, their refills (new rows merged into a running batch) and cache widths."""
    seen = {"decoders": [], "refills": 0, "widths": []}
    for cls in (engine.Decoder, StaticDecoder):
        real_merge, real_step = cls._merge, cls._step

        def merge(self, rows, kv, state, pads, real=real_merge):
            seen["refills"] += bool(self.rows)
            if self not in seen["decoders"]:
                seen["decoders"].append(self)
            return real(self, rows, kv, state, pads)

        def step(self, real=real_step):
            seen["widths"].append((self.mask.shape[1], max(len(r.job.ids) + len(r.out) for r in self.rows)))
            return real(self)

        monkeypatch.setattr(cls, "_merge", merge)
        monkeypatch.setattr(cls, "_step", step)
    return seen


@pytest.mark.parametrize("positions", ["all", "prompt", "generated", 20, "mask"])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_refilled_rows_equal_one_at_a_time(tiny64, monkeypatch, positions, temperature, kind):
    model, tokenizer = tiny64
    if positions == "mask":
        positions = torch.zeros(120, dtype=torch.bool)
        positions[[2, 5, 6, *range(30, 120, 3)]] = True
    kw = dict(max_new_tokens=NEW, temperature=temperature, steer={1: _vector()}, positions=positions, n_samples=2,
              seed=5, score={"a": [3], "b": [5, 7]}, **FAST)  # fmt: skip
    model = _varied(model, tokenizer, **kw)
    alone = generate(model, tokenizer, CHATS, max_batch_tokens=1, engine="dynamic", **kw)
    seen = _spy(monkeypatch)
    refilled = generate(model, tokenizer, CHATS, max_batch_tokens=BUDGET, engine=kind, **kw)
    assert refilled == alone
    if temperature == 0:  # and both are what Hugging Face generate gives one chat at a time
        assert [g.token_ids for g in alone[::2]] == hf_one_at_a_time(model, tokenizer, CHATS, NEW, kw["steer"],
                                                                      positions)  # fmt: skip
    assert seen["refills"] >= 2  # waiting sequences did join running batches
    assert len({g.n_new_tokens for g in alone}) >= 4 and any(g.finish_reason == "eos" for g in alone)
    if kind == "dynamic":
        batches = generate(model, tokenizer, CHATS, max_batch_tokens=BUDGET, refill=False, **kw)
        assert batches == alone
    if positions != "all":  # the steering reaches the outputs in these settings
        plain = generate(model, tokenizer, CHATS, max_batch_tokens=BUDGET, **{**kw, "steer": None})
        assert [g.token_ids for g in plain] != [g.token_ids for g in refilled]


def test_refilling_takes_fewer_steps_and_keeps_the_cache_inside_the_budget(varied, monkeypatch):
    model, tokenizer = varied
    seen = _spy(monkeypatch)
    kw = dict(max_new_tokens=NEW, max_batch_tokens=BUDGET, engine="dynamic", **FAST)
    generate(model, tokenizer, CHATS, refill=False, **kw)
    (grouped,), steps_grouped = seen["decoders"], len(seen["widths"])
    seen["decoders"].clear()
    seen["widths"].clear()
    out = generate(model, tokenizer, CHATS, **kw)
    (refilling,) = seen["decoders"]
    assert refilling.steps == len(seen["widths"]) and grouped.steps == steps_grouped
    assert refilling.steps < grouped.steps
    # the cache is never wider than its widest row (leading columns no row uses are cut) plus what padding
    # a refill adds, and never holds more than the budget
    longest = max(len(tokenizer(g.prompt, add_special_tokens=False)["input_ids"]) for g in out)
    assert all(width <= longest + NEW for width, _ in seen["widths"])
    assert max(w - need for w, need in seen["widths"]) < longest  # cut: not just growing
    rows = [len(d.rows) for d in seen["decoders"]]
    assert all(r * (longest + NEW) <= BUDGET for r in rows)


def test_a_cache_that_cannot_merge_runs_without_refilling(varied, monkeypatch, capsys):
    model, tokenizer = varied
    kw = dict(max_new_tokens=NEW, temperature=0.7, seed=1, max_batch_tokens=BUDGET, engine="dynamic", **FAST)
    reference = generate(model, tokenizer, CHATS, **kw)
    monkeypatch.setattr(engine, "_mergeable", lambda kv: False)
    engine._SAID.clear()
    seen = _spy(monkeypatch)
    assert generate(model, tokenizer, CHATS, **kw) == reference
    assert seen["refills"] == 0
    generate(model, tokenizer, CHATS[:5], **kw)
    assert capsys.readouterr().out.count("cannot be merged") == 1  # said once


def test_steering_columns_follow_each_rows_own_tokens():
    own = torch.tensor([[-1, -1, 0, 1, 2], [0, 1, 2, 3, 4]])
    assert engine.steering_columns("all", own, True) is None
    assert (
        engine.steering_columns("prompt", own, True).all() and not engine.steering_columns("prompt", own, False).any()
    )
    assert engine.steering_columns("generated", own, False).all()
    assert not engine.steering_columns("generated", own, True).any()
    assert engine.steering_columns(2, own, True).tolist() == [[False] * 4 + [True], [False, False, True, True, True]]
    mask = torch.tensor([True, False, True])
    assert engine.steering_columns(mask, own, True).tolist() == [
        [False, False, True, False, True],
        [True, False, True, False, False],
    ]


def test_the_default_budget_follows_free_gpu_memory(tiny, monkeypatch):
    model, _ = tiny
    config = model.config
    per_token = config.num_hidden_layers * 2 * config.num_key_value_heads * config.head_dim * 4  # float32
    assert engine.kv_bytes_per_token(model) == per_token
    assert engine.generation_budget(model, "cpu") == engine.default_max_batch_tokens("cpu") == 8192
    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 * gib, 140 * gib))
    expected = (100 * gib - int(0.15 * 140 * gib)) // per_token
    assert engine.generation_budget(model, "cuda") == expected
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (5 * gib, 140 * gib))
    assert engine.generation_budget(model, "cuda") == 65536  # never below the old constant
    bf16 = types.SimpleNamespace(config=config, get_input_embeddings=lambda: types.SimpleNamespace(
        weight=torch.zeros(1, dtype=torch.bfloat16)))  # fmt: skip
    assert engine.kv_bytes_per_token(bf16) == per_token // 2


def test_rows_and_width_of_a_batch():
    assert engine.plan_rows([10] * 5, 10, 39) == (1, 20)  # one row at a time
    assert engine.plan_rows([10] * 5, 10, 40) == (2, 20)
    assert engine.plan_rows([10] * 5, 10, 10_000) == (500, 20)  # the dynamic engine sizes by the budget only...
    assert engine.plan_rows([10] * 5, 10, 10_000, static=True) == (5, 36)  # ...static slots no more than sequences
    assert engine.plan_rows([10] * 5, 100, 10_000, static=True) == (5, 135)  # margin: a quarter of the new tokens


def test_static_slots_move_when_the_cache_is_full_and_free_at_once(varied, monkeypatch):
    """Many short rows through two slots: the write column reaches the cache's end, every row moves left by the
    columns none uses, and results stay those of one at a time; each finished row frees its slot at once."""
    model, tokenizer = varied
    chats = CHATS * 3
    kw = dict(max_new_tokens=NEW, temperature=0.8, seed=2, steer={2: _vector(4)}, positions=18, **FAST)
    alone = generate(model, tokenizer, chats, max_batch_tokens=1, engine="dynamic", **kw)
    moves, real_move, real_compact = [], StaticDecoder._move, StaticDecoder._compact

    def starts_are_the_first_real_columns(self):
        for slot in self.row_slots:
            assert self.starts[slot] == int(self.mask[slot].nonzero()[0]), (slot, self.starts, moves)

    def compact(self):
        real_compact(self)
        starts_are_the_first_real_columns(self)
        assert min(self.starts[s] for s in self.row_slots) == 0  # every column no live row uses was cut

    monkeypatch.setattr(StaticDecoder, "_move", lambda self, shift: (moves.append(shift), real_move(self, shift)))
    monkeypatch.setattr(StaticDecoder, "_compact", compact)
    seen = _spy(monkeypatch)
    spied_step = StaticDecoder._step
    monkeypatch.setattr(
        StaticDecoder, "_step", lambda self: (starts_are_the_first_real_columns(self), spied_step(self))
    )
    longest = max(len(tokenizer(g.prompt, add_special_tokens=False)["input_ids"]) for g in alone)
    slots = 2 * (longest + NEW + 16)  # two slots
    assert generate(model, tokenizer, chats, max_batch_tokens=slots, engine="static", **kw) == alone
    (decoder,) = seen["decoders"]
    assert decoder.n_slots == 2 and any(m < 0 for m in moves) and decoder.steps < sum(g.n_new_tokens for g in alone)
    assert all(width == decoder.width for width, _ in seen["widths"])  # fixed buffers


def test_the_engine_is_chosen_by_device(tiny, capsys):
    from vaxis.core.generate import _decoder

    model, tokenizer = tiny
    cfg = dict(max_new_tokens=4, temperature=0.0, top_p=1.0, eos=[2], stop=[], positions="all", vectors={}, score={})
    engine._SAID.clear()
    assert type(_decoder(model, tokenizer, None, cfg, "cpu", 100, True, "auto", [[1, 2]])) is engine.Decoder
    assert "CUDA graphs need a CUDA device" in capsys.readouterr().out
    static = _decoder(model, tokenizer, None, cfg, "cpu", 100, True, "static", [[1, 2]])
    assert isinstance(static, StaticDecoder) and not static.graphs
    cuda = _decoder(model, tokenizer, None, cfg, torch.device("cuda"), 100, True, "auto", [[1, 2]])
    assert isinstance(cuda, StaticDecoder) and cuda.graphs
    with pytest.raises(ValueError, match="engine="):
        _decoder(model, tokenizer, None, cfg, "cpu", 100, True, "fast", [[1, 2]])


def test_a_decode_step_that_cannot_be_captured_runs_eagerly_and_says_why(varied, monkeypatch, capsys):
    """On this CPU a CUDA graph cannot be captured: the static engine asked for one says why once, decodes
    eagerly, and gives the same results."""
    import sys

    gen = sys.modules["vaxis.core.generate"]  # the module (vaxis.generate is also the function)
    model, tokenizer = varied
    kw = dict(max_new_tokens=NEW, temperature=0.7, seed=3, steer={1: _vector()}, max_batch_tokens=BUDGET, **FAST)
    reference = generate(model, tokenizer, CHATS, engine="dynamic", **kw)
    real = gen._decoder

    def wants_graphs(*args):
        decoder = real(*args)
        decoder.graphs = True
        return decoder

    monkeypatch.setattr(gen, "_decoder", wants_graphs)
    tries, real_capture = [], StaticDecoder._capture
    monkeypatch.setattr(StaticDecoder, "_capture", lambda self: (tries.append(1), real_capture(self)))
    engine._SAID.clear()
    assert generate(model, tokenizer, CHATS, engine="static", **kw) == reference
    out = capsys.readouterr().out
    assert out.count("could not be captured in a CUDA graph") == 1 and "decoding eagerly" in out
    assert len(tries) == 1  # tried once, not at every step


@pytest.mark.parametrize("positions", ["all", "generated", 20])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_the_captured_decode_step_replays_exactly(tiny64, monkeypatch, positions, temperature):
    """The static engine with its decode step captured in a graph (CUDA's graphs replaced by the CPU stand-in of
    tests/graph_replay.py: operators replayed on the tensors captured, numbers kept as captured) returns exactly
    what one sequence at a time returns, while rows join, leave and move: so everything that changes between
    steps reaches the captured step through the buffers it reads in place, and nothing in it waits on the
    device. The step runs eagerly three times (two warm-ups and the capture), and every step is a replay."""
    import graph_replay

    model, tokenizer = tiny64
    kw = dict(max_new_tokens=NEW, temperature=temperature, seed=4, steer={1: _vector(), 2: _vector(5)},
              positions=positions, n_samples=2, score={"a": [3]}, **FAST)  # fmt: skip
    model = _varied(model, tokenizer, **kw)
    chats = CHATS * 3
    alone = generate(model, tokenizer, chats, max_batch_tokens=1, engine="dynamic", **kw)
    graphs = graph_replay.capture_on_cpu(monkeypatch)
    seen, eager, moves = _spy(monkeypatch), [], []
    real_forward, real_move = StaticDecoder._forward_static, StaticDecoder._move
    monkeypatch.setattr(StaticDecoder, "_forward_static", lambda self: (eager.append(1), real_forward(self))[1])
    monkeypatch.setattr(StaticDecoder, "_move", lambda self, shift: (moves.append(shift), real_move(self, shift)))
    # two slots, one column more than the longest row needs: rows move left often
    monkeypatch.setattr(engine_static, "plan_rows", lambda lengths, new, budget, static: (2, max(lengths) + new + 1))
    engine._SAID.clear()
    assert generate(model, tokenizer, chats, engine="static", **kw) == alone
    (decoder,), (graph,) = seen["decoders"], graphs
    assert decoder.graph is graph and len(eager) == 3 and graph.replays == decoder.steps
    assert seen["refills"] >= 2 and any(m < 0 for m in moves)  # rows joined a running batch, and moved left
