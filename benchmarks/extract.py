"""Benchmark: vaxis span extraction vs the authors' naive extractor vs a plain batched forward.

Pipeline step: activation extraction (METHOD.md section 2). Reads nothing but the model
and builds its texts in memory: ICRL games from vaxis.data.icrl when available (the real
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
On a GPU, (b) and (c) are first run once untimed over the whole workload, so that the
timed runs meet warm kernels and a grown allocator at their own shapes.

--diagnose adds, before the last line, one line per variant that separates the causes of
a forward slower than its FLOP floor: the Hugging Face forward with its logits over the
whole vocabulary vs the base model without the unembedding, a padding mask vs none (SDPA's
causal kernel), SDPA vs eager attention, batches in the given order vs sorted by length,
several batch token budgets, vaxis.extract at those budgets (with and without splitting
batches to cut padding, with the cache written), optionally --compile (torch.compile of the
blocks), and a profile of one forward by kind of operation. Each variant runs once untimed
at its timed shapes first. Each line gives computed (real) tokens/s, the padding share and,
where the peak is known (--peak-tflops, or the GPU's name: H100/H200 SXM 989 bf16 dense TFLOP/s,
A100 312), the share of the FLOP floor 2 x non-embedding parameters x tokens / peak.

Usage:
  python benchmarks/extract.py                       # embedded SmolLM2 on CPU
  python benchmarks/extract.py --model qwen3-8b-random --quantization 4bit   # GPU, random weights
  python benchmarks/extract.py --model qwen3-8b-random --games paragraphs --n-texts 64 --tokens 1024 \
      --skip-naive --diagnose                        # GPU: why the forward is slower than its floor
  python benchmarks/extract.py --games paragraphs --n-texts 4 --tokens 256 --skip-naive --diagnose  # CPU check
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vaxis  # noqa: E402

EXTRACT = importlib.import_module("vaxis.core.extract")  # the module (``vaxis.extract`` is the function)
FORWARD = importlib.import_module("vaxis.core.extract_forward")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(args):
    """``vaxis.load_model`` of ``--model``: ``qwen3-8b-random`` is the vaxis alias (the Qwen3-8B architecture,
    ``vaxis.core.model_folders.QWEN3_8B``, random weights, the embedded SmolLM2 tokenizer; with ``--quantization 4bit`` its
    bf16 weights are saved once under the vaxis cache and reloaded in NF4)."""
    return vaxis.load_model(args.model, quantization=args.quantization, device=args.device)


def workload(tokenizer, n_texts: int, seed: int, target_tokens: int | None, games_profile: str):
    """(texts, spans): ICRL games (sized as in profile ``games_profile``) with before/after spans
    of the target rewrite, or paragraph concatenations when ``games_profile == "paragraphs"``."""
    try:
        if games_profile == "paragraphs":
            raise ImportError
        from vaxis.data.icrl import GameSize, generate_games, target_spans
        from vaxis.run.config import load_profile

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


# ------------------------------------------------------------------------------------------------ --diagnose

PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # bf16 dense, SXM parts


def peak_tflops(given: float | None, device: torch.device) -> float | None:
    """``--peak-tflops``, else the bf16 dense peak of the GPU by name (H100 PCIe and NVL: unknown)."""
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    if "H100" in name and ("PCIe" in name or "NVL" in name):  # 756 and 835: not the SXM part
        return None
    return next((value for key, value in PEAK_TFLOPS.items() if key in name), None)


def non_embedding_params(model) -> int:
    """Parameters less the input and output embeddings (4-bit weights counted unpacked)."""
    skip = {id(p) for p in model.get_input_embeddings().parameters()}
    if model.get_output_embeddings() is not None:
        skip |= {id(p) for p in model.get_output_embeddings().parameters()}
    total = 0
    for p in model.parameters():
        if id(p) not in skip:
            state = getattr(p, "quant_state", None)
            total += math.prod(state.shape) if state is not None else p.numel()
    return total


def batches_of(lengths: list[int], budget: int, sort: bool) -> list[list[int]]:
    """Row indices per forward under ``rows * longest <= budget``: longest first (vaxis's planner), or in the
    given order (what a plain loop over a dataset does)."""
    if sort:
        return EXTRACT.plan_batches(lengths, budget, 1 << 30)
    batches, current = [], []
    for i in range(len(lengths)):
        if current and (len(current) + 1) * max(lengths[j] for j in current + [i]) > budget:
            batches.append(current)
            current = []
        current.append(i)
    return batches + [current]


def forward_variant(model, ids: list[list[int]], batches, device, head: bool, mask: bool):
    """A function running the batches through the whole model (``head``: logits over the whole vocabulary) or
    its base model (no unembedding), right-padded, with a padding mask or none (then attention is causal only,
    which cannot show a real token the pads after it)."""
    inputs = []
    for batch in batches:
        width = max(len(ids[i]) for i in batch)
        x = torch.zeros(len(batch), width, dtype=torch.long)
        m = torch.zeros(len(batch), width, dtype=torch.long)
        for r, i in enumerate(batch):
            x[r, : len(ids[i])], m[r, : len(ids[i])] = torch.tensor(ids[i]), 1
        inputs.append((x.to(device), m.to(device) if mask else None))
    module = model if head else model.base_model

    def run():
        with torch.no_grad():
            for x, m in inputs:
                module(input_ids=x, attention_mask=m, use_cache=False)

    return run


class Diagnosis:
    """Times variants, each warmed up once at its own shapes, and prints one line per variant."""

    def __init__(self, model, device, peak: float | None):
        self.model, self.device, self.params, self.peak = model, device, non_embedding_params(model), peak
        floor = f"{peak * 1e12 / (2 * self.params):.0f} tokens/s at {peak:.0f} TFLOP/s" if peak else "peak unknown"
        print(f"diagnose: non-embedding parameters {self.params / 1e9:.3f} B; FLOP floor {floor}", flush=True)

    def time(self, name: str, run, tokens: int, padded: int) -> float | None:
        try:
            warm, _ = timed(run, self.device)  # warm-up at the timed shapes (compilation, if any, happens here)
            seconds, _ = timed(run, self.device)
        except torch.OutOfMemoryError:
            print(f"diagnose: {name:58s} out of memory", flush=True)
            return None
        finally:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        rate = tokens / seconds
        share = f"  {rate * 2 * self.params / (self.peak * 1e12):6.1%} of floor" if self.peak else ""
        print(f"diagnose: {name:58s} {seconds:8.2f} s {tokens:8d} tok  pad {1 - tokens / padded:5.1%}  "
              f"{rate:9.0f} tok/s{share}  (warm-up {warm:.1f} s)", flush=True)  # fmt: skip
        return rate

    def forward(self, name, ids, budget, sort=True, head=False, mask=False):
        batches = batches_of([len(i) for i in ids], budget, sort)
        padded = sum(len(b) * max(len(ids[i]) for i in b) for b in batches)
        run = forward_variant(self.model, ids, batches, self.device, head, mask)
        return self.time(f"{name} [{budget}]", run, sum(len(i) for i in ids), padded)

    def extract(self, name, tokenizer, texts, spans, budget, cache: str | None = None, **kwargs):
        """vaxis.extract, cache off, or (``cache``: a folder) written to a new folder each run."""
        runs = iter(range(1 << 30))
        kwargs.update(progress=False, max_batch_tokens=budget, use_cache=cache is not None)

        def run():
            folder = None if cache is None else Path(cache) / str(next(runs))
            return vaxis.extract(self.model, tokenizer, texts, spans, cache_dir=folder, **kwargs).info

        info = run()
        return self.time(f"{name} [{budget}]", run, info["tokens_processed"], info["tokens_padded"])


def attention_as(model, implementation: str) -> str:
    """Switch the model's attention implementation (``"sdpa"``, ``"eager"``); returns the one it had."""
    previous = model.config._attn_implementation
    model.set_attn_implementation(implementation)
    return previous


def diagnose(model, tokenizer, texts, spans, args, device) -> None:
    """The --diagnose lines (see the module docstring)."""
    d = Diagnosis(model, device, peak_tflops(args.peak_tflops, device))
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    budget = args.max_batch_tokens
    budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else (
        [8192, 16384, 32768, 65536] if device.type == "cuda" else [budget // 4, budget // 2, budget])  # fmt: skip
    d.forward("hf forward + logits, given order, mask", ids, budget, sort=False, head=True, mask=True)
    d.forward("hf forward + logits, sorted, mask", ids, budget, head=True, mask=True)
    d.forward("base model (no lm_head), sorted, mask", ids, budget, mask=True)
    d.forward("base model, sorted, no mask (causal kernel)", ids, budget)
    previous = attention_as(model, "eager")
    try:
        d.forward("hf forward + logits, sorted, mask, eager attention", ids, budget, head=True, mask=True)
        d.forward("base model, sorted, no mask, eager attention", ids, budget)
    finally:
        attention_as(model, previous)
    for b in budgets:
        d.forward("base model, sorted, no mask", ids, b)
    for b in budgets:
        d.extract("vaxis.extract (max_batch_size 32)", tokenizer, texts, spans, b)
    d.extract("vaxis.extract, max_batch_size unlimited", tokenizer, texts, spans, budget, max_batch_size=1 << 30)
    saved = dict(FORWARD.PIECE_MIN_TOKENS)
    FORWARD.PIECE_MIN_TOKENS[device.type] = 1 << 40
    try:
        d.extract("vaxis.extract, batches not split (_pieces off)", tokenizer, texts, spans, budget)
    finally:
        FORWARD.PIECE_MIN_TOKENS.clear()
        FORWARD.PIECE_MIN_TOKENS.update(saved)
    with tempfile.TemporaryDirectory() as folder:
        d.extract("vaxis.extract, cache on (parts written)", tokenizer, texts, spans, budget, cache=folder)
    profile_shares(model, ids, budget, device)
    if args.compile:
        compiled_variant(d, model, ids, budget)


def kind_of(op: str) -> str:
    if op in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_mm", "aten::linear"):
        return "matmul"
    if "bitsandbytes" in op:
        return "4-bit matmul"
    if "attention" in op or "scaled_dot_product" in op or "flash" in op:
        return "attention"
    if op in ("aten::copy_", "aten::_to_copy", "aten::cat", "aten::clone", "aten::contiguous", "aten::index"):
        return "copies/casts"
    return "elementwise/other"


def profile_shares(model, ids, budget: int, device) -> None:
    """One forward of the base model (sorted, no mask, the first batch) under torch.profiler: the share of device
    time (CPU time on a CPU) by kind of operation, the top operations, and how busy the device was."""
    import collections

    from torch.profiler import ProfilerActivity, profile

    batch = batches_of([len(i) for i in ids], budget, True)[:1]
    run = forward_variant(model, ids, batch, device, head=False, mask=False)
    run()
    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        wall, _ = timed(run, device)
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [(e.key, getattr(e, attr)) for e in prof.key_averages()]
    total = sum(t for _, t in events) or 1
    kinds = collections.Counter()
    for op, t in events:
        kinds[kind_of(op)] += t
    rows = sum(1 for _ in batch[0])
    print(f"diagnose: profile of one forward ({rows} rows, base model, no mask): "
          + ", ".join(f"{k} {v / total:.0%}" for k, v in kinds.most_common())
          + (f"; device busy {total / 1e6 / wall:.0%} of {wall:.2f} s" if cuda else ""), flush=True)  # fmt: skip
    top = sorted(events, key=lambda e: -e[1])[:8]
    print("diagnose: top operations: " + ", ".join(f"{op} {t / total:.0%}" for op, t in top), flush=True)


def compiled_variant(d: Diagnosis, model, ids, budget: int) -> None:
    """The base forward with every block's forward compiled (torch.compile, dynamic shapes): what fusing the
    blocks' elementwise work (norms computed in float32, rotary embedding, SiLU, residual adds) would give."""
    import torch._dynamo

    blocks = vaxis.find_layout(model).blocks
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 4 * len(blocks)))
    try:
        for block in blocks:
            block.forward = torch.compile(block.forward, dynamic=True)
        d.forward("base model, sorted, no mask, blocks compiled", ids, budget)
    except Exception as err:  # noqa: BLE001 - a diagnostic: report and go on
        print(f"diagnose: blocks compiled: failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})")
    finally:
        for block in blocks:
            block.__dict__.pop("forward", None)


def parse_args() -> argparse.Namespace:
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
    parser.add_argument("--diagnose", action="store_true", help="time the variants that separate the causes")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak FLOP/s of the device (bf16 dense)")
    parser.add_argument("--budgets", default=None, help="--diagnose: batch token budgets, comma-separated")
    parser.add_argument("--compile", action="store_true", help="--diagnose: also time the blocks compiled")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
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

    # warm-up, not timed: on a GPU over the whole workload, so that the timed runs find the kernels chosen and the
    # allocator grown at their own shapes; on a CPU (nothing of the kind to warm) on a couple of texts
    warm = len(texts) if device.type == "cuda" else 2
    vaxis.extract(model, tokenizer, texts[:warm], spans[:warm], use_cache=False, progress=False,
                  max_batch_tokens=args.max_batch_tokens)  # fmt: skip
    plain_forward(model, tokenizer, texts[:warm], args.max_batch_tokens)

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
        f"{stats.info['tokens_processed'] / t_vaxis:9.0f} computed tokens/s  "
        f"(ran {stats.info['tokens_processed']} of {stats.info['tokens_total']} tokens, "
        f"{stats.info['tokens_padded']} with padding)",
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
    if args.diagnose:
        diagnose(model, tokenizer, texts, spans, args, device)
    print(
        f"extract: speedup_vs_naive={t_naive / t_vaxis:.2f} overhead_vs_forward={t_vaxis / t_plain:.3f} "
        f"peak_rss_mb={rss:.0f}"
    )


if __name__ == "__main__":
    main()
