"""Chat-template arguments (Qwen3's ``enable_thinking``) reach every render.

The tokenizer of ``tiny-qwen3-think`` carries :data:`vaxis.core.tiny.QWEN3_LIKE_TEMPLATE`, which behaves like
Qwen3's where it matters: the generation prompt gets an empty reasoning block when ``enable_thinking`` is
false and none otherwise; an earlier assistant turn loses its ``<think>`` block. A spy on the tokenizer's
``apply_chat_template`` records every render each entry point makes, so an entry point that renders
without the bound arguments (or around :func:`vaxis.render_chat`) fails here.
"""

from __future__ import annotations

import pytest
import torch

import vaxis
from vaxis.core import chat as vchat
from vaxis.core import readout, train
from vaxis.data.icrl import generate_games, load_paragraphs
from vaxis.data.icrl.player import hf_client
from vaxis.data.icrl.spans import render_game
from vaxis.data.mathdata import Problem
from vaxis.experiments import confidence as conf
from vaxis.experiments import endofturn, wild
from vaxis.experiments import preference_data as pdata

MODEL = "tiny-qwen3-think"
NO_THINKING = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Spy:
    """Wraps a tokenizer's ``apply_chat_template``: every call's arguments and output, in order."""

    def __init__(self, tokenizer):
        self.calls: list[tuple[dict, str]] = []
        self.real = tokenizer.apply_chat_template
        tokenizer.apply_chat_template = self

    def __call__(self, *args, **kwargs):
        out = self.real(*args, **kwargs)
        self.calls.append((kwargs, out))
        return out

    def check(self, min_calls: int = 1) -> None:
        """Every render had ``enable_thinking=False``; every generation prompt ends non-thinking."""
        assert len(self.calls) >= min_calls, "the entry point rendered no chat"
        for kwargs, out in self.calls:
            assert kwargs.get("enable_thinking") is False, kwargs
            if kwargs.get("add_generation_prompt") and isinstance(out, str):
                assert out.endswith(NO_THINKING), out[-80:]


@pytest.fixture
def lm_tok():
    model, tok = vaxis.load_model(MODEL, dtype=torch.float64)
    return model, tok, Spy(tok)


def test_default_binds_no_thinking_and_says_so_once(capsys):
    vchat._said_default.clear()
    _, tok = vaxis.load_model(MODEL)
    again = vaxis.load_tokenizer(MODEL)
    assert vchat.bound_template_kwargs(tok) == {"enable_thinking": False}
    assert vchat.bound_template_kwargs(again) == {"enable_thinking": False}
    assert capsys.readouterr().out.count("enable_thinking=False") == 1
    assert vaxis.render_chat(tok, CHAT, add_generation_prompt=True).text.endswith(NO_THINKING)


def test_explicit_arguments_win_and_other_templates_get_none():
    tok = vaxis.load_tokenizer(MODEL, chat_template_kwargs={"enable_thinking": True})
    text = vaxis.render_chat(tok, CHAT, add_generation_prompt=True).text
    assert text.endswith("<|im_start|>assistant\n") and "<think>" not in text
    plain = vaxis.load_tokenizer("tiny-qwen3")  # ChatML: no switch, so nothing is bound
    assert vchat.bound_template_kwargs(plain) == {}
    for bad in ([1], {1: True}, {"x": object()}):
        with pytest.raises(ValueError, match="chat_template_kwargs"):
            vaxis.load_tokenizer(MODEL, chat_template_kwargs=bad)


def test_arguments_enter_the_tokenizer_identity_only_when_set():
    from vaxis.core.extract_items import tokenizer_identity

    off = vaxis.load_tokenizer(MODEL, chat_template_kwargs={"enable_thinking": False})
    on = vaxis.load_tokenizer(MODEL, chat_template_kwargs={"enable_thinking": True})
    none = vaxis.load_tokenizer(MODEL, chat_template_kwargs={})
    assert len({tokenizer_identity(t) for t in (off, on, none)}) == 3
    plain = vaxis.load_tokenizer("tiny-qwen3")
    backend = plain.backend_tokenizer.to_str()
    import hashlib

    assert tokenizer_identity(plain) == hashlib.sha256(backend.encode()).hexdigest()[:32]  # caches stay valid


def test_generate_renders_non_thinking(lm_tok):
    model, tok, spy = lm_tok
    gens = vaxis.generate(model, tok, [CHAT], max_new_tokens=3, cache=False, progress=False)
    assert gens[0].prompt.endswith(NO_THINKING)
    spy.check()


def test_readouts_render_non_thinking(lm_tok):
    model, tok, spy = lm_tok
    ids = readout.yes_no_ids(tok)
    readout.next_token_logprobs(model, tok, [CHAT], ids, prefill="Yes", cache=False)
    directions = {1: torch.randn(2, model.config.hidden_size, dtype=torch.float64)}
    readout.answer_readout(model, tok, [CHAT], {"yes": "Yes", "no": "No"}, directions, cache=False)
    spy.check(min_calls=2)


def test_extraction_of_chats_and_games_renders_with_the_arguments(lm_tok):
    model, tok, spy = lm_tok
    vaxis.extract(model, tok, [CHAT + [{"role": "assistant", "content": "Four."}]], [{"a": [(2, 0, 5)]}],
                  layers=[1], use_cache=False, progress=False)  # fmt: skip
    games, _ = generate_games(2, seed=0, paragraphs=load_paragraphs())
    rendered = render_game(games[0], tok)
    assert "<think>" not in rendered.text  # a game ends on the user's feedback: every assistant turn is earlier
    spy.check(min_calls=3)


def test_in_the_wild_prompts_render_non_thinking(lm_tok):
    model, tok, spy = lm_tok
    prompts, _ = wild.fit_to_context(tok, ["Is the sky blue?", "Name a bird."], 64)
    directions = {1: torch.randn(1, model.config.hidden_size, dtype=torch.float64)}
    wild.prompt_projections(model, tok, prompts, directions, use_cache=False, progress=False)
    spy.check(min_calls=3)


def test_end_of_turn_items_render_with_the_arguments(lm_tok):
    _, tok, spy = lm_tok
    endofturn.end_of_turn_items([{"text": "A river runs past the mill and the bridge.", "title": "River"}], tok)
    spy.check()


def test_player_client_renders_non_thinking(lm_tok):
    model, tok, spy = lm_tok
    hf_client(model, tok, max_new_tokens=2)(CHAT)
    spy.check()


class _Stop(Exception):
    pass


@pytest.mark.parametrize("method", ["dpo", "sft"])
def test_training_rows_render_non_thinking(tmp_path, monkeypatch, method):
    """TRL renders conversational rows itself; its prompt ids must end with the non-thinking header."""
    real, seen = train._trainer, []

    def capture(model, tokenizer, rows, settings, out):
        trainer = real(model, tokenizer, rows, settings, out)
        seen.append((tokenizer, trainer.train_dataset))
        raise _Stop

    monkeypatch.setattr(train, "_trainer", capture)
    rows = pdata.dpo_pairs(pdata.choice_prompts("vegetables", 2, seed=0), "potato", "prefer", seed=0)
    if method == "sft":
        rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows]
    settings = train.TrainSettings(method=method, epochs=1, batch_size=2, max_length=512)
    with pytest.raises(_Stop):
        train.train_adapter(MODEL, rows, settings, tmp_path, "think")
    tokenizer, data = seen[0]
    prompt = vaxis.render_chat(tokenizer, rows[0]["prompt"], add_generation_prompt=True).text
    assert prompt.endswith(NO_THINKING)
    if method == "dpo":
        assert tokenizer.decode(data[0]["prompt_ids"]) == prompt
    else:
        ids, labels = data[0]["input_ids"], data[0]["labels"]  # the prompt's labels are masked (-100)
        assert tokenizer.decode([i for i, label in zip(ids, labels) if label == -100]) == prompt


def test_adapter_key_and_sidecar_carry_the_arguments():
    rows = [{"prompt": [{"role": "user", "content": "x"}], "completion": [{"role": "assistant", "content": "y"}]}]
    s = train.TrainSettings(method="sft")
    keys = {train.adapter_key("b", rows, s, kw) for kw in (None, {}, {"enable_thinking": False})}
    assert len(keys) == 2  # none and {} are the same key as before the arguments existed


def test_confidence_chat_keeps_offsets_when_a_rollout_holds_reasoning():
    tok = vaxis.load_tokenizer(MODEL, chat_template_kwargs={"enable_thinking": True})
    problem = Problem(id="p", question="What is 2 + 2?", answer="4", source="test")
    rollout = "<think>\nAdd them.\n</think>\n\nThe answer is \\boxed{4}."
    chat = conf.confidence_chat(problem, rollout, "correct")
    rendered = vaxis.render_chat(tok, chat, add_generation_prompt=True)
    start, end = rendered.message_spans[2]
    assert rendered.text[start:end] == "The answer is \\boxed{4}."
    raw = [*conf.math_chat(problem), {"role": "assistant", "content": rollout}, {"role": "user", "content": "ok?"}]
    with pytest.raises(vaxis.ChatTemplateError, match="reasoning block"):
        vaxis.render_chat(tok, raw, add_generation_prompt=True)
