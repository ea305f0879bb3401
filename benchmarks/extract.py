"""Benchmark: vaxis span extraction vs the authors' naive extractor vs a plain batched forward.

Pipeline step: activation extraction (METHOD.md section 2). Reads nothing but the model
and builds its texts in memory: ICRL games from vaxis.icrl when available (the real
workload: before/after spans in the first post-discovery rewrite), else real Wikipedia
paragraphs from data/paragraphs.jsonl joined into long texts with a span at a random place.

Measures, on the same model and texts, in one run:
  (a) naive: the authors' method: one text per forward, output_hidden_states=True, every
      layer's full hidden states copied to CPU float32, then the span positions gathered;
  (b) forward: a plain batched forward (sorted by length, padded) over the whole texts,
      no capture;
  (c) vaxis: vaxis.extract (span sums for every layer, cache off).
The last line printed is exactly
  extract: speedup_vs_naive=X overhead_vs_forward=Y peak_rss_mb=Z
with X = naive time / vaxis time, Y = vaxis time / forward time, Z = peak resident
memory of the process after the vaxis phase (run first, so (a) cannot inflate it).

Usage:
  python benchmarks/extract.py                       # embedded SmolLM2 on CPU
  python benchmarks/extract.py --model qwen3-8b-random --quantization 4bit   # GPU, random weights
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vaxis  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(args):
    """``vaxis.load_model`` of ``--model``: ``qwen3-8b-random`` is the vaxis alias (the Qwen3-8B architecture,
    ``vaxis.models.QWEN3_8B``, random weights, the embedded SmolLM2 tokenizer; with ``--quantization 4bit`` its
    bf16 weights are saved once under the vaxis cache and reloaded in NF4)."""
    return vaxis.load_model(args.model, quantization=args.quantization, device=args.device)


def workload(tokenizer, n_texts: int, seed: int, target_tokens: int | None, games_profile: str):
    """(texts, spans): ICRL games (sized as in profile ``games_profile``) with before/after spans
    of the target rewrite, or paragraph concatenations when ``games_profile == "paragraphs"``."""
    try:
        if games_profile == "paragraphs":
            raise ImportError
        from vaxis.config import load_profile
        from vaxis.icrl import GameSize, generate_games, target_spans

        size = GameSize(**load_profile(games_profile).get("game_size", {}))
        games, _ = generate_games(n_texts * 2, seed=seed, size=size)
        texts, spans = [], []
        for game in games:
            try:
                ts = target_spans(game, tokenizer)
            except Exception:  # noqa: BLE001 - excluded games are simply skipped here
                continue
            if ts is None or not getattr(ts, "ok", True):
                continue
            texts.append(ts.text)
            spans.append({"before": ts.char_spans["before"], "after": ts.char_spans["after"]})
            if len(texts) == n_texts:
                break
        if len(texts) == n_texts:
            return texts, spans, f"icrl games, {games_profile} sizes"
    except ImportError:
        pass
    rng = random.Random(seed)
    path = Path(__file__).resolve().parents[1] / "data" / "paragraphs.jsonl"
    paragraphs = (
        [json.loads(line)["text"] for line in path.open()]
        if path.exists()
        else ["The river flows through the valley, past the old mill and the stone bridge." * 5]
    )
    texts, spans = [], []
    for _ in range(n_texts):
        text = ""
        while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < (target_tokens or 1024):
            text += rng.choice(paragraphs) + "\n\n"
        cut = int(len(text) * rng.uniform(0.4, 0.8))
        start = text.rfind(" ", 0, cut - 200)
        texts.append(text)
        spans.append({"before": [(start, start + 100)], "after": [(start + 101, cut)]})
    return texts, spans, "paragraphs"


def naive_extract(model, tokenizer, texts, spans):
    """The authors' extractor: batch 1, all hidden states to CPU float32, then gather."""
    out = []
    for text, span in zip(texts, spans):
        enc = tokenizer(text, return_tensors="pt", return_offsets_mapping=True, add_special_tokens=False)
        offsets = enc.pop("offset_mapping")[0].tolist()
        idx = vaxis.tokens_in_spans(text, offsets, span)
        with torch.no_grad():
            result = model(**{k: v.to(model.device) for k, v in enc.items()}, output_hidden_states=True)
        states = [h[0].float().cpu() for h in result.hidden_states]
        out.append({name: torch.stack([h[i].mean(0) for h in states]) for name, i in idx.items()})
    return out


def plain_forward(model, tokenizer, texts, max_batch_tokens):
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    batches, cur = [], []
    for i in order:
        if cur and (len(cur) + 1) * lengths[cur[0]] > max_batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    batches.append(cur)
    tokenizer.padding_side = "right"
    for b in batches:
        enc = tokenizer([texts[i] for i in b], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            model(**{k: v.to(model.device) for k, v in enc.items()}, use_cache=False)
    tokenizer.padding_side = "left"


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="vaxis model name, or qwen3-8b-random")
    parser.add_argument("--quantization", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--n-texts", type=int, default=24)
    parser.add_argument("--games", default="demo", help="game sizes of this profile (demo, paper) or 'paragraphs'")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per text (paragraph workload only)")
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="padded tokens per forward, for vaxis and the plain forward alike "
        "(default: 2048 on a CPU, where padding costs more than batching gains, as in the demo "
        "profile; 65536 on a GPU, as in the paper profile)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load(args)
    device = model.get_input_embeddings().weight.device
    if args.max_batch_tokens is None:
        args.max_batch_tokens = 65536 if device.type == "cuda" else 2048
    texts, spans, kind = workload(tokenizer, args.n_texts, args.seed, args.tokens, args.games)
    n_tok = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    print(
        f"model={args.model} device={device} texts={len(texts)} ({kind}) tokens={sum(n_tok)} "
        f"mean_len={sum(n_tok) / len(n_tok):.0f} threads={torch.get_num_threads()}",
        flush=True,
    )

    # warm-up on a couple of texts (kernels, allocator), not timed
    vaxis.extract(model, tokenizer, texts[:2], spans[:2], use_cache=False, progress=False)
    plain_forward(model, tokenizer, texts[:2], args.max_batch_tokens)

    t_vaxis, stats = timed(
        lambda: vaxis.extract(
            model, tokenizer, texts, spans, use_cache=False, progress=False, max_batch_tokens=args.max_batch_tokens
        ),
        device,
    )
    rss = peak_rss_mb()
    gpu_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    print(
        f"vaxis:   {t_vaxis:8.2f} s  {sum(n_tok) / t_vaxis:9.0f} text-tokens/s  "
        f"(ran {stats.info['tokens_processed']} of {stats.info['tokens_total']} tokens)",
        flush=True,
    )
    t_plain, _ = timed(lambda: plain_forward(model, tokenizer, texts, args.max_batch_tokens), device)
    print(f"forward: {t_plain:8.2f} s  {sum(n_tok) / t_plain:9.0f} tokens/s", flush=True)
    gc.collect()
    if args.skip_naive:
        t_naive = float("nan")
    else:
        t_naive, naive = timed(lambda: naive_extract(model, tokenizer, texts, spans), device)
        print(f"naive:   {t_naive:8.2f} s  {sum(n_tok) / t_naive:9.0f} tokens/s", flush=True)
        # the two extractors agree (parity), so the comparison is fair
        # (the last entry of HF hidden_states is after the final norm, vaxis reads before it: compare 0..n-1)
        means = stats.means("after")[:, :-1]
        worst = max(
            float((means[i] - naive[i]["after"][:-1]).abs().max() / naive[i]["after"][:-1].abs().max())
            for i in range(len(texts))
        )
        print(f"parity: max relative |vaxis - naive| over span means, layers 0..n-1: {worst:.1e}", flush=True)
    if gpu_peak is not None:
        print(f"gpu peak during vaxis: {gpu_peak:.0f} MiB", flush=True)
    print(
        f"extract: speedup_vs_naive={t_naive / t_vaxis:.2f} overhead_vs_forward={t_vaxis / t_plain:.3f} "
        f"peak_rss_mb={rss:.0f}"
    )


if __name__ == "__main__":
    main()
