"""GPU check of the generation engines: the CUDA-graph engine returns what the dynamic engine returns.

The tests prove on the CPU that every engine equals one sequence at a time; only a CUDA device runs the decode
step as a captured CUDA graph (vaxis/core/engine_static.py). This script runs the tiny random Qwen3 in float64 on the
GPU (exact: no near-tie can flip) through ``vaxis.generate`` with ``engine="dynamic"`` and with the default
(static slots, CUDA graph), greedy and sampled, under every steering position, with several batch budgets (so
that rows are refilled and the cache moves), and compares the results exactly. It also says whether the graph
was captured (a capture failure decodes eagerly and prints why). Run by benchmarks/gpu_scale.sh; by hand:

    python benchmarks/gpu_engine_check.py            # needs a CUDA device
    python benchmarks/gpu_engine_check.py --cpu-stand-in   # on a CPU, graphs replayed by tests/graph_replay.py

Last line: ``engine check: N/N equal, graphs captured: yes|no``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaxis.core.engine_static import StaticDecoder  # noqa: E402
from vaxis.core.generate import generate  # noqa: E402
from vaxis.core.tiny import tiny_model_and_tokenizer  # noqa: E402

QUESTIONS = ["Why is the sky blue?", "Name three rivers.", "Hi", "What do bees make?",
             "The river flows through the valley, past the old mill and the stone bridge. Where does it go?",
             "Count to five, slowly, and then tell me which number came third."]  # fmt: skip


def use_stand_in() -> None:
    """CUDA's graphs and streams replaced by the CPU stand-in, and the static engine asked for graphs on a CPU."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import graph_replay

    graph_replay.capture_on_cpu(type("Patch", (), {"setattr": staticmethod(setattr)}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-stand-in", action="store_true", help="on a CPU, with tests/graph_replay.py")
    args = parser.parse_args(argv)
    if args.cpu_stand_in:
        use_stand_in()
    elif not torch.cuda.is_available():
        print("engine check: needs a CUDA device (or --cpu-stand-in)")
        return 2
    model, tokenizer = tiny_model_and_tokenizer("qwen3", seed=0)
    model = model.double().to("cpu" if args.cpu_stand_in else "cuda")
    graphed_engine = "static" if args.cpu_stand_in else "auto"  # "auto" is the dynamic engine on a CPU
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS * 4]
    vector = 0.01 * torch.randn(64, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(200, dtype=torch.bool)
    mask[[2, 5, *range(30, 200, 3)]] = True
    captured, real_capture = [], StaticDecoder._capture

    def capture(self):
        real_capture(self)
        captured.append(self.graph is not None)

    StaticDecoder._capture = capture
    cases, equal = 0, 0
    for positions in ("all", "prompt", "generated", 20, mask):
        for temperature in (0.0, 0.8):
            for budget in (None, 3 * 100):
                kw = dict(max_new_tokens=24, temperature=temperature, seed=1, steer={1: vector}, positions=positions,
                          n_samples=2, max_batch_tokens=budget, cache=False, progress=False)  # fmt: skip
                reference = generate(model, tokenizer, chats, engine="dynamic", **kw)
                graphed = generate(model, tokenizer, chats, engine=graphed_engine, **kw)
                cases, equal = cases + 1, equal + (graphed == reference)
                if graphed != reference:
                    name = positions if isinstance(positions, (str, int)) else "mask"
                    print(f"differs: positions={name} temperature={temperature} budget={budget}")
    print(f"engine check: {equal}/{cases} equal, graphs captured: {'yes' if captured and all(captured) else 'no'}")
    return 0 if equal == cases else 1


if __name__ == "__main__":
    raise SystemExit(main())
