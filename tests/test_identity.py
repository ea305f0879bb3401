"""model_identity covers every weight, buffer, adapter and dtype, and its memo never hides a change."""

from __future__ import annotations

import copy

import pytest
import torch

import vaxis
import vaxis.core.identity as identity
from vaxis.core.identity import ModelIdentityError, adapter_identity, model_identity, weights_digest
from vaxis.core.tiny import tiny_model_and_tokenizer

peft = pytest.importorskip("peft")

TEXTS = [
    "Hello there, the river flows through the valley (a bus).",
    "Mathematics studies numbers: shapes and change; its theorems are proved.",
]
SPANS = [{"before": [(0, 5)], "after": [(13, 40)]}, {"before": [(0, 11)], "after": [(20, 40)]}]


def _lora(model, **kwargs):
    """A LoRA-wrapped deep copy of ``model`` (get_peft_model rewires the model it is given)."""
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], **kwargs)
    return peft.get_peft_model(copy.deepcopy(model), config)


def _train_lora_b(peft_model, seed=0):
    """Stand-in for a training step: LoRA B away from its zero initialisation."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)


def _deep_weight(model):
    return model.model.layers[-1].mlp.down_proj.weight


def test_reloaded_model_has_same_identity_other_seed_differs():
    a, _ = tiny_model_and_tokenizer("qwen3", seed=0)
    b, _ = tiny_model_and_tokenizer("qwen3", seed=0)
    c, _ = tiny_model_and_tokenizer("qwen3", seed=1)
    assert model_identity(a) == model_identity(b)
    assert model_identity(a)["weights"] != model_identity(c)["weights"]
    assert model_identity(a) == model_identity(b)  # memoised calls agree with the first


def test_one_changed_deep_weight_is_seen_even_after_memo(tiny):
    model = copy.deepcopy(tiny[0])
    before = model_identity(model)
    assert before == model_identity(tiny[0])
    weight = _deep_weight(model)
    version = weight._version
    with torch.no_grad():
        weight[3, 5] += 1e-3
    assert weight._version > version  # torch bumps the counter on in-place ops through a view
    after = model_identity(model)
    assert after["weights"] != before["weights"]
    assert after == model_identity(copy.deepcopy(model), refresh=True)  # the memo returned the new digest


def test_other_in_place_routes_are_seen(tiny):
    model = copy.deepcopy(tiny[0])
    seen = {model_identity(model)["weights"]}
    layer = model.model.layers[1]
    with torch.no_grad():
        layer.self_attn.k_proj.weight.copy_(torch.randn_like(layer.self_attn.k_proj.weight))  # copy_
    seen.add(model_identity(model)["weights"])
    layer.self_attn.o_proj.weight.data = layer.self_attn.o_proj.weight.data * 1.5  # rebinding .data
    seen.add(model_identity(model)["weights"])
    layer.mlp.up_proj.weight.data.mul_(0.5)  # in place through .data: no version bump, the probes see it
    seen.add(model_identity(model)["weights"])
    optimizer = torch.optim.SGD([layer.mlp.gate_proj.weight], lr=0.1)
    layer.mlp.gate_proj.weight.grad = torch.ones_like(layer.mlp.gate_proj.weight)
    optimizer.step()
    seen.add(model_identity(model)["weights"])
    layer.input_layernorm.weight.data[7] += 1.0  # .data, one element: only refresh=True is sure to see it
    seen.add(model_identity(model, refresh=True)["weights"])
    assert len(seen) == 6


def test_buffers_are_part_of_identity(tiny):
    model = copy.deepcopy(tiny[0])
    base = model_identity(model)
    with torch.no_grad():
        model.model.rotary_emb.inv_freq[1] *= 1.01  # a non-persistent buffer the forward pass reads
    assert model_identity(model)["weights"] != base["weights"]


def test_config_values_hash_the_same_in_any_set_order():
    assert identity._jsonable({"t": {"v_proj", "q_proj", "k_proj"}, "d": torch.bfloat16}) == {
        "t": ["k_proj", "q_proj", "v_proj"],
        "d": "torch.bfloat16",
    }


def test_one_ulp_of_bfloat16_changes_identity_with_both_schemes(tiny, monkeypatch):
    model = copy.deepcopy(tiny[0]).to(torch.bfloat16)
    base = weights_digest(model)
    bits = _deep_weight(model).view(torch.int16)  # shares the version counter with the weight
    with torch.no_grad():
        bits[3, 5] += 1  # the next bfloat16 value: one ulp
    assert weights_digest(model) != base
    monkeypatch.setattr(identity, "_on_device_sketch", lambda device: True)  # the GPU scheme, run on the CPU
    sketched = weights_digest(model, refresh=True)
    with torch.no_grad():
        bits[3, 5] -= 1
    assert weights_digest(model) != sketched
    assert weights_digest(model) != base  # a different scheme, a different digest


def test_dtype_changes_identity(tiny):
    model = tiny[0]
    identities = {
        model_identity(copy.deepcopy(model).to(dtype))["weights"]
        for dtype in (torch.float32, torch.float64, torch.bfloat16)
    }
    assert len(identities) == 3
    assert model_identity(copy.deepcopy(model).to(torch.bfloat16))["dtype"] == "torch.bfloat16"


def test_lora_wrapped_model_differs_from_base(tiny):
    base = model_identity(tiny[0])
    wrapped = _lora(tiny[0])
    fresh = model_identity(wrapped)
    # LoRA B starts at zero, so the forward pass is still the base model's; the identity differs
    # anyway (adapter weights and config are part of it, and training will change them).
    assert fresh["weights"] != base["weights"]
    assert fresh["adapters"] is not None and fresh["adapters"]["active"] == ["default"]
    _train_lora_b(wrapped)
    trained = model_identity(wrapped)
    assert trained["weights"] not in (base["weights"], fresh["weights"])


def test_adapter_config_and_state_are_part_of_identity(tiny):
    torch.manual_seed(0)
    a = _lora(tiny[0])
    torch.manual_seed(0)
    b = _lora(tiny[0])
    b.peft_config["default"].lora_alpha = 16  # same weights, another config
    assert weights_digest(a) == weights_digest(b)
    assert model_identity(a) != model_identity(b)
    # lists and sets of target modules in any order give one identity (sets are sorted before hashing)
    torch.manual_seed(0)
    d = peft.get_peft_model(
        copy.deepcopy(tiny[0]), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["v_proj", "q_proj"])
    )
    assert model_identity(d) == model_identity(a)
    enabled = model_identity(a)
    with a.disable_adapter():
        disabled = model_identity(a)
    assert disabled != enabled and disabled["weights"] == enabled["weights"]
    assert model_identity(a) == enabled
    assert adapter_identity(tiny[0]) is None


def test_merged_fine_tune_differs_from_base(tiny):
    base = model_identity(tiny[0])
    wrapped = _lora(tiny[0])
    _train_lora_b(wrapped)
    merged = wrapped.merge_and_unload()
    ident = model_identity(merged)
    assert ident["adapters"] is None and ident["weights"] != base["weights"]
    untrained = _lora(tiny[0]).merge_and_unload()  # B = 0: merging changes nothing
    assert model_identity(untrained) == base


def test_merge_into_a_memoised_base_object_is_seen(tiny):
    """peft merges with ``weight.data += delta``: no version bump, same storage. The memo must still miss."""
    model = copy.deepcopy(tiny[0])
    base = model_identity(model)  # memoised on this object
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    _train_lora_b(wrapped)
    merged = wrapped.merge_and_unload()
    assert merged is model
    assert model_identity(merged)["weights"] != base["weights"]
    assert model_identity(merged) == model_identity(merged, refresh=True)


def test_device_sketch_detects_single_changes_and_swaps(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    n = 3 * identity._SKETCH_PERIOD + 123  # three full rows and a tail
    words = torch.randint(-(2**31), 2**31 - 1, (n,), generator=gen, dtype=torch.int64).to(torch.int32)
    base = identity._device_sketch(words)
    assert base.shape == (2, 4)
    for pos in (0, 1, identity._SKETCH_PERIOD - 1, 2 * identity._SKETCH_PERIOD + 7, n - 1):
        for delta in (1, -1, 1 << 16, identity._SKETCH_PRIMES[0], identity._SKETCH_PRIMES[1]):
            changed = words.clone()
            changed[pos] = int(changed[pos]) + delta if abs(int(changed[pos]) + delta) < 2**31 else changed[pos] - delta
            assert not torch.equal(identity._device_sketch(changed), base), (pos, delta)
    swapped = words.clone()
    swapped[[10, 20]] = words[[20, 10]]
    assert not torch.equal(identity._device_sketch(swapped), base)
    monkeypatch.setattr(identity, "_SKETCH_BATCH_WORDS", identity._SKETCH_PERIOD)  # one row per pass
    assert torch.equal(identity._device_sketch(words), base)
    assert identity._device_sketch(words[:0]).shape == (2, 1)


class _FakeQuantState:
    """The attributes of a bitsandbytes QuantState that the digest reads."""

    def __init__(self):
        self.absmax = torch.rand(8)
        self.code = torch.linspace(-1, 1, 16)
        self.blocksize = 64
        self.quant_type = "nf4"
        self.dtype = torch.bfloat16
        self.shape = torch.Size([32, 32])
        self.offset = None
        self.state2 = None


class _FakeParams4bit(torch.nn.Parameter):
    """Packed uint8 storage with a quant_state, like bitsandbytes' Params4bit."""


def _fake_4bit_module():
    module = torch.nn.Module()
    module.weight = _FakeParams4bit(torch.randint(0, 256, (512, 1), dtype=torch.uint8), requires_grad=False)
    module.weight.quant_state = _FakeQuantState()
    return module


def test_4bit_quant_state_is_hashed_without_bitsandbytes():
    module = _fake_4bit_module()
    base = weights_digest(module)
    with torch.no_grad():
        module.weight.quant_state.absmax[3] *= 2  # in place, after the memo
    scaled = weights_digest(module)
    assert scaled != base
    module.weight.quant_state.blocksize = 128
    assert weights_digest(module) not in (base, scaled)
    nested = _FakeQuantState()
    module.weight.quant_state.state2 = nested
    with_nested = weights_digest(module)
    with torch.no_grad():
        nested.absmax[0] += 1
    assert weights_digest(module) != with_nested


def test_offloaded_weights_are_read_from_the_offload_map(tiny):
    accelerate = pytest.importorskip("accelerate")
    base = model_identity(tiny[0])
    offloaded = accelerate.cpu_offload(copy.deepcopy(tiny[0]), execution_device=torch.device("cpu"))
    assert offloaded.model.embed_tokens.weight.device.type == "meta"
    assert model_identity(offloaded) == base


def test_unreachable_meta_weights_raise():
    with pytest.raises(ModelIdentityError, match="meta device.*use_cache=False"):
        weights_digest(torch.nn.Linear(4, 4, device="meta"))


def _extract(model, tokenizer, use_cache=True):
    return vaxis.extract(model, tokenizer, TEXTS, SPANS, use_cache=use_cache, progress=False)


@pytest.mark.parametrize("change", ["weight", "lora"])
def test_extract_cache_misses_for_a_changed_model(tiny, tmp_cache, change):
    base_model, tokenizer = tiny
    base = _extract(base_model, tokenizer)
    assert _extract(base_model, tokenizer).info["cached"] is True
    if change == "weight":
        model = copy.deepcopy(base_model)
        with torch.no_grad():
            model.model.layers[-1].self_attn.o_proj.weight.mul_(1.5)
    else:
        model = _lora(base_model)
        _train_lora_b(model)
    cached_run = _extract(model, tokenizer)
    assert cached_run.info["cached"] is False
    fresh = _extract(model, tokenizer, use_cache=False)
    for name in ("before", "after"):
        torch.testing.assert_close(cached_run.sums[name], fresh.sums[name])
    assert not torch.allclose(cached_run.sums["after"][:, -1], base.sums["after"][:, -1])
    assert _extract(model, tokenizer).info["cached"] is True
