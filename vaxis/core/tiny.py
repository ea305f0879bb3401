"""Tiny, randomly initialised chat models built offline, for tests and the ``smoke`` profile.

Nothing here touches the network: the tokenizer is a byte-level BPE trained in
memory on a short built-in corpus (so every string tokenizes, with character
offsets), and carries a ChatML chat template; the model is a Qwen3 (or another
architecture) with a few layers and a hidden size of 64, initialised from a seed.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# ChatML that behaves like Qwen3's template where it matters to vaxis: the generation prompt gets an empty
# reasoning block when ``enable_thinking`` is false (the model answers at once) and none otherwise (the model
# would think first); an assistant turn after the last user turn is rendered with its reasoning block (empty if
# it has none); an earlier assistant turn loses its ``<think>...</think>`` block. The ``tiny-qwen3-think``
# alias and the ``paper_ci`` profile use it, so CI renders every chat the way Qwen3-8B's non-thinking mode does.
QWEN3_LIKE_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "{%- set content = m['content'] -%}{%- set reasoning = '' -%}"
    "{%- if '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\n') -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\n') -%}"
    "{%- endif -%}"
    "{%- if loop.index0 > ns.last_user -%}"
    "{{- '<|im_start|>assistant\n<think>\n' + reasoning + '\n</think>\n\n' + content.lstrip('\n') + '<|im_end|>\n' -}}"
    "{%- else -%}{{- '<|im_start|>assistant\n' + content + '<|im_end|>\n' -}}{%- endif -%}"
    "{%- else -%}{{- '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\n\n</think>\n\n' -}}{%- endif -%}"
    "{%- endif -%}"
)
TEMPLATES = {"chatml": CHATML_TEMPLATE, "qwen3-like": QWEN3_LIKE_TEMPLATE}

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = """
The assistant rewrites each paragraph so that it satisfies a hidden criterion.
The river flows through the valley, past the old mill and the stone bridge.
A violin, a trumpet and a drum played in the square while the ship left the harbour.
Mathematics studies numbers, shapes, structures and change; its theorems are proved.
The empire traded silk, spices and silver across deserts, mountains and seas.
Is this the right answer? Yes: the feedback was +1. No, the feedback was -1.
<thinking>I think the criterion is about punctuation, so I will add a colon.</thinking>
Photosynthesis converts light into chemical energy in plants, algae and bacteria.
In 1969, 3 astronauts flew to the Moon; 2 of them walked on its surface (for hours).
"Wait," she said, "let me reconsider." Actually, the first attempt failed!
"""


def tiny_tokenizer(vocab_size: int = 512, template: str = "chatml") -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with a ChatML template (``template="qwen3-like"``:
    :data:`QWEN3_LIKE_TEMPLATE`), trained in memory.

    Returns a fast tokenizer (so ``return_offsets_mapping`` works) with
    ``<|im_start|>``, ``<|im_end|>`` and ``<|endoftext|>`` as special tokens;
    ``<|endoftext|>`` doubles as the padding token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    if template not in TEMPLATES:
        raise ValueError(f"template={template!r}: choose one of {sorted(TEMPLATES)}")
    fast.chat_template = TEMPLATES[template]
    fast.padding_side = "left"
    return fast


_ARCH_DEFAULTS = {
    "qwen3": dict(head_dim=16),
    "llama": dict(),
    "qwen2": dict(),
    "mistral": dict(),
    "gemma3_text": dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=8),
    "gpt2": dict(),
}


def tiny_config(arch: str = "qwen3", vocab_size: int = 512, n_layers: int = 3, hidden_size: int = 64):
    """A small config of architecture ``arch`` (one of ``_ARCH_DEFAULTS``)."""
    if arch not in _ARCH_DEFAULTS:
        raise ValueError(f"unknown tiny architecture {arch!r}: choose one of {sorted(_ARCH_DEFAULTS)}")
    if arch == "gpt2":
        return AutoConfig.for_model(
            "gpt2",
            vocab_size=vocab_size,
            n_embd=hidden_size,
            n_layer=n_layers,
            n_head=4,
            n_positions=4096,
            bos_token_id=0,
            eos_token_id=0,
        )
    return AutoConfig.for_model(
        arch,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        **_ARCH_DEFAULTS[arch],
    )


def tiny_model(arch: str = "qwen3", seed: int = 0, n_layers: int = 3, vocab_size: int = 512):
    """A randomly initialised causal LM of architecture ``arch``, float32, eval mode."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, vocab_size=vocab_size, n_layers=n_layers))
    return model.eval()


def tiny_model_and_tokenizer(arch: str = "qwen3", seed: int = 0, n_layers: int = 3, template: str = "chatml"):
    """(model, tokenizer) pair: a tiny random ``arch`` model and :func:`tiny_tokenizer` with ``template``."""
    tokenizer = tiny_tokenizer(template=template)
    model = tiny_model(arch, seed=seed, n_layers=n_layers, vocab_size=len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer
