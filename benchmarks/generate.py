"""Benchmark: vaxis.generate (batched, KV cache, steered) vs the authors' one-prompt-at-a-time loop.

Pipeline step: steered generation (METHOD.md section 0; the steering notebooks). Builds its
prompts in memory: short, varied chat questions (topics x question forms, deterministic).

Measures, on the same model and prompts, in one run, greedy decoding under the same steering
(a random unit direction at the middle residual index, scaled to --percent of that layer's mean
residual norm, measured on the prompts; positions="all", so prompt and every generated token):
  (b) vaxis: vaxis.generate (left-padded batches under a token budget, own decode loop with a
      KV cache, cache off), run first so that (a) cannot inflate its peak memory;
  (a) sequential: the authors' way: Hugging Face model.generate on one prompt at a time inside
      vaxis.steer.
It reports the exact-match rate of the generated tokens and texts (batched greedy can differ
from one-at-a-time greedy where padding changes float rounding and a near-tie argmax flips; for
each such prompt it prints how many tokens in the two first differ), tokens/s of each, and peak
memory. The last line printed is exactly
  generate: speedup_vs_sequential=X tokens_per_s=Y peak_rss_mb=Z
with X = sequential time / vaxis time, Y = vaxis's generated tokens per second, Z = peak resident
memory of the process after the vaxis phase.

Usage:
  python benchmarks/generate.py                                   # embedded SmolLM2 on CPU, 64 x 64
  python benchmarks/generate.py --model qwen3-8b-random           # GPU only: random Qwen3-8B, bf16
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from extract import load, peak_rss_mb, timed  # noqa: E402  (benchmarks/extract.py: same model loading)

import vaxis  # noqa: E402
from vaxis.generate import default_max_batch_tokens, generate  # noqa: E402

TOPICS = [
    "photosynthesis",
    "the French Revolution",
    "black holes",
    "compound interest",
    "the violin",
    "volcanoes",
    "machine learning",
    "the Silk Road",
    "honeybees",
    "prime numbers",
    "the water cycle",
    "jazz",
    "the Moon landing",
    "sourdough bread",
    "plate tectonics",
    "chess openings",
]
FORMS = [
    "What is {}?",
    "Explain {} to a ten-year-old.",
    "Give me two surprising facts about {}.",
    "Why does {} matter?",
]


def prompts(n: int) -> list[list[dict]]:
    """``n`` one-turn chats: question form ``i % 4`` about topic ``i // 4`` (cycling)."""
    out = []
    for i in range(n):
        topic = TOPICS[(i // len(FORMS)) % len(TOPICS)]
        out.append([{"role": "user", "content": FORMS[i % len(FORMS)].format(topic)}])
    return out


def steering(model, tokenizer, chats, percent: float, seed: int) -> dict[int, torch.Tensor]:
    """``{L: v}``: a random unit direction at the middle residual index, scaled to ``percent`` of
    the mean residual norm there (measured over the prompts' tokens)."""
    layout = vaxis.find_layout(model)
    layer = layout.n_layers // 2
    texts = [vaxis.render_chat(tokenizer, c, add_generation_prompt=True).text for c in chats[:8]]
    device = model.get_input_embeddings().weight.device
    norms = []
    for text in texts:
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
        with torch.no_grad(), vaxis.capture(model, [layer]) as acts:
            model(**enc)
        norms.append(acts[layer][0].float().norm(dim=-1))
    mean_norm = float(torch.cat(norms).mean())
    direction = torch.randn(layout.hidden_size, generator=torch.Generator().manual_seed(seed))
    return {layer: vaxis.steering_vector(direction, percent_of_norm=percent, mean_norm=mean_norm)}


def sequential(model, tokenizer, chats, vectors, max_new_tokens: int) -> list[list[int]]:
    """The authors' loop: one prompt per ``model.generate`` call, steered with ``vaxis.steer``."""
    device = model.get_input_embeddings().weight.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for chat in chats:
        text = vaxis.render_chat(tokenizer, chat, add_generation_prompt=True).text
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(device)
        with vaxis.steer(model, vectors, positions="all") if vectors else contextlib.nullcontext():
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        out.append(ids[0, enc.input_ids.shape[1] :].tolist())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="vaxis model name, or qwen3-8b-random")
    parser.add_argument("--quantization", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--n-prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--percent", type=float, default=8.0, help="steering strength, %% of the mean residual norm")
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="(prompt + new tokens) * batch size budget of vaxis.generate (default: its own, "
        "8192 on a CPU, 65536 on a GPU)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = args.device or vaxis.models.default_device()
    if args.model == "qwen3-8b-random" and not str(device_name).startswith("cuda"):
        sys.exit(
            "refusing --model qwen3-8b-random on a CPU: 8B parameters in bfloat16 decode at well under one token "
            "per second there, so 64 x 64 tokens (twice) would take hours. Run it on a GPU, or use the default "
            "--model smollm2-135m on a CPU."
        )
    model, tokenizer = load(args)
    if model.generation_config.eos_token_id is None:  # random weights: stop both loops at the tokenizer's EOS
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    device = model.get_input_embeddings().weight.device
    chats = prompts(args.n_prompts)
    vectors = steering(model, tokenizer, chats, args.percent, args.seed)
    budget = args.max_batch_tokens or default_max_batch_tokens(device)
    lengths = [
        len(
            tokenizer(vaxis.render_chat(tokenizer, c, add_generation_prompt=True).text, add_special_tokens=False)[
                "input_ids"
            ]
        )
        for c in chats
    ]
    (layer,) = vectors
    print(
        f"model={args.model} device={device} dtype={model.dtype} prompts={len(chats)} "
        f"prompt_tokens={min(lengths)}..{max(lengths)} max_new_tokens={args.max_new_tokens} "
        f"steer=L{layer} {args.percent}% of norm (|v|={float(vectors[layer].norm()):.2f}) "
        f"max_batch_tokens={budget} threads={torch.get_num_threads()}",
        flush=True,
    )

    # warm-up (kernels, allocator), not timed
    kw = dict(steer=vectors, positions="all", cache=False, progress=False, max_batch_tokens=budget)
    generate(model, tokenizer, chats[:2], max_new_tokens=4, **kw)
    sequential(model, tokenizer, chats[:1], vectors, 4)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    t_vaxis, batched = timed(
        lambda: generate(model, tokenizer, chats, max_new_tokens=args.max_new_tokens, **kw), device
    )
    rss = peak_rss_mb()
    gpu_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    n_vaxis = sum(g.n_new_tokens for g in batched)
    finish = {r: sum(g.finish_reason == r for g in batched) for r in ("eos", "length", "stop")}
    print(f"vaxis:      {t_vaxis:8.2f} s  {n_vaxis / t_vaxis:9.1f} tokens/s  ({n_vaxis} tokens, {finish})", flush=True)
    if gpu_peak is not None:
        print(f"gpu peak during vaxis: {gpu_peak:.0f} MiB", flush=True)
    if args.skip_sequential:
        t_seq = float("nan")
    else:
        t_seq, seq = timed(lambda: sequential(model, tokenizer, chats, vectors, args.max_new_tokens), device)
        n_seq = sum(len(s) for s in seq)
        print(f"sequential: {t_seq:8.2f} s  {n_seq / t_seq:9.1f} tokens/s  ({n_seq} tokens)", flush=True)
        same_tokens = sum(g.token_ids == s for g, s in zip(batched, seq))
        same_text = sum(g.text == tokenizer.decode(s, skip_special_tokens=True) for g, s in zip(batched, seq))
        first_diff = [
            next((k for k, (a, b) in enumerate(zip(g.token_ids, s)) if a != b), min(len(g.token_ids), len(s)))
            for g, s in zip(batched, seq)
            if g.token_ids != s
        ]
        print(
            f"exact match: tokens {same_tokens}/{len(chats)} ({same_tokens / len(chats):.1%}), "
            f"texts {same_text}/{len(chats)}; first differing token of the others: {sorted(first_diff)}",
            flush=True,
        )
    print(
        f"generate: speedup_vs_sequential={t_seq / t_vaxis:.2f} tokens_per_s={n_vaxis / t_vaxis:.1f} peak_rss_mb={rss:.0f}"
    )


if __name__ == "__main__":
    main()
