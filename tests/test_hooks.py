"""Reading and steering hit exactly hidden_states[L], in every supported architecture."""

from __future__ import annotations

import pytest
import torch

import vaxis
from vaxis.core.layout import LayoutError, find_layout
from vaxis.core.tiny import tiny_model_and_tokenizer

ARCHS = ["qwen3", "llama", "qwen2", "mistral", "gemma3_text", "gpt2"]
TEXT = "The river flows through the valley: 3 ships (and a drum)!"


def _hf_states(model, tokenizer, text):
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    return enc, out.hidden_states


def _check_capture_matches_hidden_states(model, tokenizer, text=TEXT, atol=1e-5):
    layout = find_layout(model)
    enc, hs = _hf_states(model, tokenizer, text)
    assert len(hs) == layout.n_layers + 1
    with torch.no_grad(), vaxis.capture(model, layout.residual_indices) as acts:
        model(**enc)
    for layer in range(layout.n_layers):
        torch.testing.assert_close(acts[layer], hs[layer], atol=atol, rtol=1e-4, msg=f"layer {layer}")
    last = layout.n_layers
    # Hugging Face's last entry is after the final norm; vaxis reads before it.
    torch.testing.assert_close(layout.final_norm(acts[last]), hs[last], atol=atol, rtol=1e-4)
    assert not torch.allclose(acts[last], hs[last])


@pytest.mark.parametrize("arch", ARCHS)
def test_capture_equals_hidden_states(arch):
    model, tokenizer = tiny_model_and_tokenizer(arch, seed=1)
    _check_capture_matches_hidden_states(model, tokenizer)


def test_capture_through_peft_lora(tiny):
    peft = pytest.importorskip("peft")
    model, tokenizer = tiny_model_and_tokenizer("qwen3", seed=2)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    wrapped = peft.get_peft_model(model, config)
    layout = find_layout(wrapped)
    assert layout.n_layers == 3
    _check_capture_matches_hidden_states(wrapped, tokenizer)


def test_capture_equals_hidden_states_on_embedded_model(smol):
    model, tokenizer = smol
    _check_capture_matches_hidden_states(model, tokenizer, atol=1e-4)


def test_layer_out_of_range_message(tiny):
    model, _ = tiny
    with pytest.raises(LayoutError, match=r"layer 40 is out of range: this model has residual indices 0\.\.3"):
        with vaxis.capture(model, [40]):
            pass


def test_blocks_path_override(tiny):
    model, _ = tiny
    assert find_layout(model, blocks_path="model.layers").n_layers == 3
    with pytest.raises(LayoutError, match="no submodule"):
        find_layout(model, blocks_path="model.nope")


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_steer_adds_vector_at_every_position(tiny, layer):
    model, tokenizer = tiny
    enc = tokenizer(TEXT, return_tensors="pt", add_special_tokens=False)
    v = torch.randn(64)
    with torch.no_grad():
        with vaxis.capture(model, [layer]) as base:
            base_logits = model(**enc).logits
        with vaxis.steer(model, {layer: v}), vaxis.capture(model, [layer]) as steered:
            steered_logits = model(**enc).logits
    torch.testing.assert_close(steered[layer], base[layer] + v, atol=1e-5, rtol=0)
    assert not torch.allclose(steered_logits, base_logits)


def test_hooks_removed_after_exception(tiny):
    model, tokenizer = tiny
    enc = tokenizer(TEXT, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        before = model(**enc).logits
        with pytest.raises(RuntimeError, match="boom"):
            with vaxis.steer(model, {1: torch.ones(64) * 5}), vaxis.capture(model, [2]):
                model(**enc)
                raise RuntimeError("boom")
        after = model(**enc).logits
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    layout = find_layout(model)
    assert all(not b._forward_hooks and not b._forward_pre_hooks for b in layout.blocks)


def test_batched_left_padding_equals_unbatched(tiny):
    model, tokenizer = tiny
    texts = [TEXT, "Short text.", "Mathematics studies numbers, shapes and change."]
    v = torch.randn(64)
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert tokenizer.padding_side == "left"
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad(), vaxis.steer(model, {1: v}), vaxis.capture(model, [2]) as acts:
        model(**batch, position_ids=position_ids)
    for i, text in enumerate(texts):
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad(), vaxis.steer(model, {1: v}), vaxis.capture(model, [2]) as one:
            model(**enc)
        n = enc.input_ids.shape[1]
        torch.testing.assert_close(acts[2][i, -n:], one[2][0], atol=1e-4, rtol=1e-4)


def _generate(model, tokenizer, prompts, **kw):
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id, **kw)
    return batch, out


@pytest.mark.parametrize("positions", ["generated", "prompt", "all"])
def test_steer_under_generate_with_kv_cache(tiny, positions):
    """Each generated token's residual is steered (including the first generated one) iff the
    scope says so, and the cached run equals one full forward pass over the final sequence."""
    model, tokenizer = tiny
    v = torch.randn(64) * 3
    prompts = ["The river flows", "Mathematics studies numbers and"]
    with torch.no_grad():
        with vaxis.steer(model, {1: v}, positions=positions), vaxis.capture(model, [1]) as acts:
            batch, out = _generate(model, tokenizer, prompts)
        prompt_len = batch.input_ids.shape[1]
        total = out.shape[1]
        captured = acts[1][:, :total]
        assert captured.shape[1] == total - 1  # the last sampled token is never fed back
        full_mask = torch.cat([batch.attention_mask, torch.ones(len(prompts), total - prompt_len, dtype=torch.long)], 1)
        position_ids = (full_mask.cumsum(-1) - 1).clamp_min(0)
        with vaxis.capture(model, [1]) as base:
            model(out, attention_mask=full_mask, position_ids=position_ids)
    delta = captured - base[1][:, : total - 1]
    gen = torch.arange(total - 1) >= prompt_len
    expected = {"generated": gen, "prompt": ~gen, "all": torch.ones_like(gen)}[positions]
    real = full_mask[:, : total - 1].bool()
    for col in range(total - 1):
        for row in range(len(prompts)):
            if not real[row, col]:
                continue
            if expected[col]:
                torch.testing.assert_close(delta[row, col], v, atol=1e-4, rtol=0)
            else:
                torch.testing.assert_close(delta[row, col], torch.zeros(64), atol=1e-4, rtol=0)
    assert gen[prompt_len]  # the first generated token is covered


def test_steer_with_explicit_mask_matches_full_forward(tiny):
    model, tokenizer = tiny
    v = torch.randn(64) * 3
    enc = tokenizer(TEXT, return_tensors="pt", add_special_tokens=False)
    n = enc.input_ids.shape[1]
    mask = torch.zeros(1, n, dtype=torch.bool)
    mask[0, 5:9] = True
    with torch.no_grad():
        with vaxis.capture(model, [1]) as base:
            model(**enc)
        with vaxis.steer(model, {1: v}, positions=mask), vaxis.capture(model, [1]) as st:
            model(**enc)
    diff = (st[1] - base[1])[0]
    assert torch.allclose(diff[5:9], v.expand(4, -1), atol=1e-5)
    assert torch.allclose(diff[:5], torch.zeros(5, 64)) and torch.allclose(diff[9:], torch.zeros(n - 9, 64))


def test_steering_vector_percent_of_norm():
    direction = torch.tensor([3.0, 4.0])
    v = vaxis.steering_vector(direction, percent_of_norm=10, mean_norm=50.0)
    torch.testing.assert_close(v.norm(), torch.tensor(5.0))
    torch.testing.assert_close(v / v.norm(), direction / 5)
    with pytest.raises(ValueError, match="mean residual norm"):
        vaxis.steering_vector(direction, percent_of_norm=10)
    with pytest.raises(ValueError, match="zero vector"):
        vaxis.steering_vector(torch.zeros(2), coefficient=1.0)


def test_steer_rejects_wrong_vector_size(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match=r"needs \(64,\)"):
        with vaxis.steer(model, {1: torch.ones(10)}):
            pass


def test_blocks_returning_tuples_are_read_and_steered():
    """Older/other architectures return (hidden, extras...) from a block: both paths work."""
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return (x + self.lin(x), "extra")

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"num_hidden_layers": 2, "hidden_size": 4})()
            self.layers = nn.ModuleList([Block(), Block()])

        def forward(self, x):
            for block in self.layers:
                x, extra = block(x)
                assert extra == "extra"
            return x

    model = Model()
    x = torch.randn(1, 3, 4)
    with torch.no_grad(), vaxis.capture(model, [0, 1, 2]) as acts:
        out = model(x)
    torch.testing.assert_close(acts[0], x)
    torch.testing.assert_close(acts[2], out)
    v = torch.ones(4)
    with torch.no_grad(), vaxis.steer(model, {2: v}):
        steered = model(x)
    torch.testing.assert_close(steered, out + v)


def _steering_delta(model, enc, v, positions, layer=1):
    """Per-column change of the residual at ``layer`` when steering there with ``positions``."""
    with torch.no_grad():
        with vaxis.capture(model, [layer]) as base:
            model(**enc)
        with vaxis.steer(model, {layer: v}, positions=positions), vaxis.capture(model, [layer]) as steered:
            model(**enc)
    return (steered[layer] - base[layer])[0]


@pytest.mark.parametrize("k", [0, 1, 5])
def test_steer_int_position_changes_exactly_columns_from_k(tiny, k):
    """``positions=k`` steers columns ``k..`` and nothing before: guards against comparing the
    column with ``>`` instead of ``>=`` (which would leave column ``k`` unsteered)."""
    model, tokenizer = tiny
    enc = tokenizer(TEXT, return_tensors="pt", add_special_tokens=False)
    n = enc.input_ids.shape[1]
    assert n > k + 2
    v = torch.randn(64) * 3
    delta = _steering_delta(model, enc, v, positions=k)
    for col in range(n):
        expected = v if col >= k else torch.zeros(64)
        torch.testing.assert_close(delta[col], expected, atol=1e-5, rtol=0, msg=f"column {col}, k={k}")


@pytest.mark.parametrize("offset", [-2, 0, 2])
def test_steer_int_position_under_generate_with_kv_cache(tiny, offset):
    """Under ``generate`` with the KV cache, ``positions=k`` steers absolute columns ``k..`` (in the
    prompt or among the generated tokens, k itself included) and not ``k - 1``; the cached run
    equals one full forward pass over the final sequence. Guards against ``>`` instead of ``>=``."""
    model, tokenizer = tiny
    v = torch.randn(64) * 3
    prompts = ["The river flows", "Mathematics studies numbers and"]
    prompt_len = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).input_ids.shape[1]
    k = prompt_len + offset
    with torch.no_grad():
        with vaxis.steer(model, {1: v}, positions=k), vaxis.capture(model, [1]) as acts:
            batch, out = _generate(model, tokenizer, prompts, min_new_tokens=6)
        total = out.shape[1]
        assert total == prompt_len + 6
        captured = acts[1]
        assert captured.shape[1] == total - 1
        full_mask = torch.cat([batch.attention_mask, torch.ones(len(prompts), total - prompt_len, dtype=torch.long)], 1)
        position_ids = (full_mask.cumsum(-1) - 1).clamp_min(0)
        with vaxis.capture(model, [1]) as base:
            model(out, attention_mask=full_mask, position_ids=position_ids)
        with vaxis.steer(model, {1: v}, positions=k), vaxis.capture(model, [1]) as full:
            model(out, attention_mask=full_mask, position_ids=position_ids)
    torch.testing.assert_close(captured, full[1][:, : total - 1], atol=1e-4, rtol=1e-4)
    delta = captured - base[1][:, : total - 1]
    real = full_mask.bool()
    for col in range(total - 1):
        for row in range(len(prompts)):
            if not real[row, col]:
                continue
            expected = v if col >= k else torch.zeros(64)
            torch.testing.assert_close(delta[row, col], expected, atol=1e-4, rtol=0, msg=f"row {row} column {col}")


def test_steer_explicit_mask_under_generate_uses_absolute_columns(tiny):
    """A ``(batch, total_length)`` mask that differs between prompt and generated columns (and
    between generated tokens) is read at absolute columns during ``generate``: the cached run must
    equal a full no-cache forward over the final sequence with the same mask.

    Guards against slicing the mask without the KV-cache offset (``positions[:, :stop - start]`` or
    ``positions[:, 0:length]``). The older test_steer_with_explicit_mask_matches_full_forward runs
    one plain forward, where the offset is 0 and both slices coincide, so it cannot see that bug;
    here column 0 is unsteered while some generated columns are steered (and others not), so a
    slice that ignores the offset steers the wrong generated tokens."""
    model, tokenizer = tiny
    v = torch.randn(64) * 3
    prompts = ["The river flows", "Mathematics studies numbers and"]
    new = 6
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    prompt_len = batch.input_ids.shape[1]
    total = prompt_len + new
    mask = torch.zeros(len(prompts), total, dtype=torch.bool)
    mask[:, prompt_len - 3 : prompt_len - 1] = True  # two prompt columns, not the last one
    mask[0, prompt_len + 1] = True  # row 0: generated tokens 1 and 3
    mask[0, prompt_len + 3] = True
    mask[1, prompt_len] = True  # row 1: generated tokens 0, 2 and 4
    mask[1, prompt_len + 2] = True
    mask[1, prompt_len + 4] = True
    assert not mask[:, 0].any()
    with torch.no_grad():
        with vaxis.steer(model, {1: v}, positions=mask), vaxis.capture(model, [1, 2]) as acts:
            gen = model.generate(
                **batch,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                use_cache=True,
                pad_token_id=tokenizer.pad_token_id,
                return_dict_in_generate=True,
                output_logits=True,
            )
        out = gen.sequences
        assert out.shape[1] == total
        full_mask = torch.cat([batch.attention_mask, torch.ones(len(prompts), new, dtype=torch.long)], 1)
        position_ids = (full_mask.cumsum(-1) - 1).clamp_min(0)
        with vaxis.capture(model, [1]) as base:
            model(out, attention_mask=full_mask, position_ids=position_ids, use_cache=False)
        with vaxis.steer(model, {1: v}, positions=mask), vaxis.capture(model, [1, 2]) as full:
            logits = model(out, attention_mask=full_mask, position_ids=position_ids, use_cache=False).logits
    # The logits that chose each generated token equal the full forward's at the same column.
    for step, step_logits in enumerate(gen.logits):
        torch.testing.assert_close(step_logits, logits[:, prompt_len - 1 + step], atol=1e-4, rtol=1e-4)
    for layer in (1, 2):
        torch.testing.assert_close(acts[layer], full[layer][:, : total - 1], atol=1e-4, rtol=1e-4)
    delta = acts[1] - base[1][:, : total - 1]
    for row in range(len(prompts)):
        for col in range(total - 1):
            if not full_mask[row, col]:
                continue
            expected = v if mask[row, col] else torch.zeros(64)
            torch.testing.assert_close(delta[row, col], expected, atol=1e-4, rtol=0, msg=f"row {row} column {col}")
