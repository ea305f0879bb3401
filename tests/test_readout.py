"""Length-free readouts and the answer-position readout equal the slow, obvious computation."""

from __future__ import annotations

import pytest
import torch

from vaxis.core.chat import render_chat
from vaxis.core.extract import extract
from vaxis.core.readout import answer_readout, answer_token_ids, next_token_logprobs, yes_no_ids

CHATS = [
    [{"role": "user", "content": "Is the river long?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is two plus two four, do you think?"}],
    [{"role": "user", "content": "Yes or no: the moon is made of cheese, and the sea is dry."}],
]


def _full_logprobs(model, tokenizer, chat, steer=None):
    """One chat alone, no padding: log-softmax at the last prompt position."""
    from vaxis.core.hooks import steer as steer_ctx

    text = render_chat(tokenizer, chat, add_generation_prompt=True).text
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with steer_ctx(model, steer) if steer else torch.no_grad():
        with torch.no_grad():
            return torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)


def test_yes_no_ids_are_disjoint_first_tokens(tiny):
    _, tokenizer = tiny
    ids = yes_no_ids(tokenizer)
    assert ids["yes"] and ids["no"] and not set(ids["yes"]) & set(ids["no"])
    assert answer_token_ids(tokenizer, ["Yes", "Yes"]) == answer_token_ids(tokenizer, ["Yes"])


@pytest.mark.parametrize("steered", [False, True])
def test_next_token_logprobs_equal_one_chat_at_a_time(tiny, steered, tmp_cache):
    """Batched with left padding (and position ids counted over real tokens), the log-probabilities
    equal one unpadded forward per chat, with and without steering at every position."""
    model, tokenizer = tiny
    model = model.double()
    try:
        steer = (
            {2: torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))} if steered else None
        )
        ids = yes_no_ids(tokenizer)
        got = next_token_logprobs(model, tokenizer, CHATS, ids, steer=steer, max_batch_tokens=4096)
        for i, chat in enumerate(CHATS):
            full = _full_logprobs(model, tokenizer, chat, steer)
            for name, tokens in ids.items():
                torch.testing.assert_close(
                    got[name][i], torch.logsumexp(full[tokens], -1).float(), atol=1e-5, rtol=1e-5
                )
    finally:
        model.float()


def test_answer_readout_equals_extraction_of_the_prefilled_text(tiny, tmp_cache):
    """The response-token projections from one prompt pass plus a cached step equal an extraction of
    the whole prefilled text; the pre-response projections equal the last n_pre prompt tokens'."""
    model, tokenizer = tiny
    gen = torch.Generator().manual_seed(1)
    directions = {layer: torch.randn(3, 64, generator=gen) for layer in (1, 3)}
    r = answer_readout(model, tokenizer, CHATS, {"yes": "Yes", "no": "No"}, directions, n_pre=4)
    assert r.pre.shape == (3, 2, 3) and r.response["yes"].shape == (3, 2, 3)
    for name, text in (("yes", "Yes"), ("no", "No")):
        prompts = [render_chat(tokenizer, c, add_generation_prompt=True).text for c in CHATS]
        full = [p + text for p in prompts]
        spans = [{"answer": [(len(p), len(f))], "pre": [(_last_tokens_start(tokenizer, p, 4), len(p))]}
                 for p, f in zip(prompts, full)]  # fmt: skip
        stats = extract(model, tokenizer, full, spans, layers=[1, 3], directions=directions, use_cache=False,
                        progress=False)  # fmt: skip
        for i in range(3):
            torch.testing.assert_close(
                r.response[name][i], stats.projections["answer"][i].mean(0), atol=1e-5, rtol=1e-4
            )
            torch.testing.assert_close(r.pre[i], stats.projections["pre"][i].mean(0), atol=1e-5, rtol=1e-4)
    lp = next_token_logprobs(model, tokenizer, CHATS, yes_no_ids(tokenizer))
    torch.testing.assert_close(r.logprobs["yes"], lp["yes"], atol=1e-5, rtol=1e-5)


def _last_tokens_start(tokenizer, text, n):
    offsets = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    return offsets[-n][0]


def test_readout_bad_input(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="at least one"):
        next_token_logprobs(model, tokenizer, [], yes_no_ids(tokenizer))
    with pytest.raises(ValueError, match="n_pre"):
        answer_readout(model, tokenizer, CHATS, {"yes": "Yes"}, {1: torch.randn(1, 64)}, n_pre=0)


def test_readouts_are_cached_and_keyed(tiny, tmp_cache):
    """A repeated readout reads the disk cache (no forward pass); another steering vector or other texts
    compute again, and give what an uncached call gives."""
    model, tokenizer = tiny
    ids = yes_no_ids(tokenizer)
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        v = {2: torch.randn(64, generator=torch.Generator().manual_seed(3))}
        first = next_token_logprobs(model, tokenizer, CHATS, ids, steer=v)
        n = len(calls)
        again = next_token_logprobs(model, tokenizer, CHATS, ids, steer=v)
        assert len(calls) == n and torch.equal(first["yes"], again["yes"])
        other = {2: v[2] * 2}
        changed = next_token_logprobs(model, tokenizer, CHATS, ids, steer=other)
        assert len(calls) > n and not torch.equal(changed["yes"], first["yes"])
        fresh = next_token_logprobs(model, tokenizer, CHATS, ids, steer=other, cache=False)
        torch.testing.assert_close(changed["yes"], fresh["yes"])
        fewer = next_token_logprobs(model, tokenizer, CHATS[:2], ids, steer=v)
        torch.testing.assert_close(fewer["yes"], first["yes"][:2])
        d = {1: torch.randn(2, 64)}
        r1 = answer_readout(model, tokenizer, CHATS, {"yes": "Yes", "no": "No"}, d)
        n = len(calls)
        r2 = answer_readout(model, tokenizer, CHATS, {"yes": "Yes", "no": "No"}, d)
        assert len(calls) == n and torch.equal(r1.pre, r2.pre) and torch.equal(r1.response["no"], r2.response["no"])
        r3 = answer_readout(model, tokenizer, CHATS, {"yes": "Yes", "no": "No"}, {1: d[1] + 1})
        assert len(calls) > n and not torch.equal(r3.pre, r1.pre)
    finally:
        handle.remove()


def test_answer_readout_cache_key_holds_n_pre(tiny, tmp_cache):
    """Two readouts that differ only in ``n_pre`` do not share a cache entry: the second computes again and
    gives what an uncached call with its own ``n_pre`` gives (the pre-response mean over its own tokens)."""
    model, tokenizer = tiny
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        d = {1: torch.randn(2, 64, generator=torch.Generator().manual_seed(4))}
        answers = {"yes": "Yes", "no": "No"}
        two = answer_readout(model, tokenizer, CHATS, answers, d, n_pre=2)
        n = len(calls)
        six = answer_readout(model, tokenizer, CHATS, answers, d, n_pre=6)
        assert len(calls) > n and not torch.equal(six.pre, two.pre)
        fresh = answer_readout(model, tokenizer, CHATS, answers, d, n_pre=6, cache=False)
        torch.testing.assert_close(six.pre, fresh.pre)
        torch.testing.assert_close(six.response["yes"], two.response["yes"])  # the answer tokens are the same
        n = len(calls)
        again = answer_readout(model, tokenizer, CHATS, answers, d, n_pre=2)
        assert len(calls) == n and torch.equal(again.pre, two.pre)
    finally:
        handle.remove()


def test_generate_scores_equal_the_readout(tiny, tmp_cache):
    """``generate(..., score=...)`` records at its first step what the one-pass readout reads, under
    the same steering (so a sweep gets the yes-rate and the log-odds from one prompt pass)."""
    from vaxis.core.generate import generate

    model, tokenizer = tiny
    model = model.double()
    try:
        ids = yes_no_ids(tokenizer)
        steer = {2: torch.randn(64, dtype=torch.float64, generator=torch.Generator().manual_seed(4))}
        gens = generate(model, tokenizer, CHATS, max_new_tokens=2, temperature=0.7, n_samples=2, steer=steer,
                        score=ids, progress=False)  # fmt: skip
        lp = next_token_logprobs(model, tokenizer, CHATS, ids, steer=steer, cache=False)
        for g in gens:
            for name in ids:
                assert g.scores[name] == pytest.approx(float(lp[name][g.conversation]), abs=1e-6)
        again = generate(model, tokenizer, CHATS, max_new_tokens=2, temperature=0.7, n_samples=2, steer=steer,
                         score=ids, progress=False)  # fmt: skip
        assert [g.scores for g in again] == [g.scores for g in gens]  # read back from the cache
        plain = generate(model, tokenizer, CHATS, max_new_tokens=2, progress=False, cache=False)
        assert all(g.scores is None for g in plain)
    finally:
        model.float()


def test_readouts_that_differ_only_in_their_answers_do_not_share_a_cache_entry(tiny, tmp_cache):
    model, tokenizer = tiny
    d = {1: torch.randn(2, 64, generator=torch.Generator().manual_seed(5))}
    a = answer_readout(model, tokenizer, CHATS, {"yes": "Yes", "no": "No"}, d)
    b = answer_readout(model, tokenizer, CHATS, {"yes": "No", "no": "Yes"}, d)
    torch.testing.assert_close(b.response["yes"], a.response["no"])
    torch.testing.assert_close(b.response["no"], a.response["yes"])
    assert not torch.equal(a.response["yes"], b.response["yes"])
