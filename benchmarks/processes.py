"""Benchmark: one process vs N processes under ``accelerate launch`` (vaxis.core.distributed) for extraction and generation.

Pipeline steps: activation extraction (METHOD.md section 2) and steered generation (sections 3-4), the passes
that ``processes=N`` shards. Runs the same workload as benchmarks/extract.py (ICRL games, before/after spans)
and benchmarks/generate.py's prompts (greedy), each once in this process and once on N processes, every time
with an empty cache folder, and checks that the results are identical. The N-process time includes what a
notebook pays per launch: starting N Python processes that each load the model.

The last line printed is exactly
  processes: n=N extract_ratio=X generate_ratio=Y identical=True
with X and Y = one-process time / N-process time (above 1: the processes pay off).

Usage:
  python benchmarks/processes.py                      # embedded SmolLM2 on the CPU, 2 processes (1 core each)
  python benchmarks/processes.py --processes 4        # e.g. 4 GPUs of one machine
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vaxis  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="a vaxis model name")
    parser.add_argument("--quantization", default=None)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--n-texts", type=int, default=48)
    parser.add_argument("--games", default="demo", help="game sizes of this profile (demo, paper)")
    parser.add_argument("--n-prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="default: 2048 on a CPU, 65536 on a GPU")
    args = parser.parse_args()

    from extract import workload  # benchmarks/extract.py: the same texts and spans
    from generate import prompts  # benchmarks/generate.py: the same prompts

    model, tokenizer = vaxis.load_model(args.model, quantization=args.quantization)
    on_gpu = model.get_input_embeddings().weight.is_cuda
    budget = args.max_batch_tokens or (65536 if on_gpu else 2048)
    texts, spans, what = workload(tokenizer, args.n_texts, 0, None, args.games)
    chats = prompts(args.n_prompts)
    machine = torch.cuda.get_device_name() if on_gpu else f"CPU, {os.cpu_count()} cores"
    print(
        f"{args.model} on {machine}; {len(texts)} texts ({what}); {len(chats)} prompts x {args.max_new_tokens} tokens"
    )

    models = vaxis.core.cache.cache_root() / "models"  # the converted models, shared with the empty caches
    results = {}
    for n in (1, args.processes):
        with tempfile.TemporaryDirectory(prefix="vaxis-bench-") as cache:
            os.environ["VAXIS_CACHE"] = cache
            if models.exists():
                (Path(cache) / "models").symlink_to(models)
            t_ex, stats = timed(lambda n=n: vaxis.extract(model, tokenizer, texts, spans, max_batch_tokens=budget,
                                                          processes=n, progress=False))  # fmt: skip
            t_gen, gens = timed(lambda n=n: vaxis.generate(model, tokenizer, chats, max_new_tokens=args.max_new_tokens,
                                                           processes=n, progress=False))  # fmt: skip
        results[n] = (t_ex, t_gen, stats, [g.token_ids for g in gens])
        tokens = stats.info["tokens_processed"]
        print(f"{n} process(es): extraction {t_ex:.1f} s ({tokens / t_ex:.0f} tokens/s), generation {t_gen:.1f} s "
              f"({sum(len(g) for g in results[n][3]) / t_gen:.1f} new tokens/s)")  # fmt: skip
    (ex1, gen1, s1, g1), (exn, genn, sn, gn) = results[1], results[args.processes]
    identical = g1 == gn and all(torch.equal(s1.sums[k], sn.sums[k]) for k in s1.names)
    print(f"processes: n={args.processes} extract_ratio={ex1 / exn:.2f} generate_ratio={gen1 / genn:.2f} "
          f"identical={identical}")  # fmt: skip


if __name__ == "__main__":
    main()
