"""Benchmark: vaxis.generate (batched, KV cache, steered) vs the authors' one-prompt-at-a-time loop, and long rollouts.

Pipeline step: steered generation (METHOD.md section 0; the steering notebooks). Builds its
prompts in memory: short, varied chat questions (topics x question forms, deterministic). Every
call is steered alike: a random unit direction at the middle residual index, scaled to --percent
of that layer's mean residual norm, measured on the prompts; positions="all", so prompt and every
generated token (--percent 0: no steering).

Short case (``--case short``, the default), greedy decoding, on the same model and prompts:
  (b) vaxis: vaxis.generate (left-padded batches under a token budget, own decode loop with a
      KV cache, cache off), run first so that (a) cannot inflate its peak memory;
  (a) sequential: the authors' way: Hugging Face model.generate on one prompt at a time inside
      vaxis.steer.
It reports the exact-match rate of the generated tokens and texts (batched greedy can differ
from one-at-a-time greedy where padding changes float rounding and a near-tie argmax flips; for
each such prompt it prints how many tokens in the two first differ), tokens/s of each, and peak
memory. (b) is timed with vaxis.generate's defaults and again with each slower path it offers
(ALTERNATIVES: compile=False where it has ``compile``, engine="dynamic" where it has ``engine``).
The batch budget is vaxis.generate's own unless --max-batch-tokens sets it.

Long case (``--case long``): sampled rollouts (temperature 0.7, top_p 1.0) of at most
--long-max-new-tokens (default 2048 on a GPU, 256 on a CPU), half of them per batch (unless
--max-batch-tokens says otherwise), so that the rest wait and refilling has work to do. Random-weight
models almost never sample their EOS, so the run adds to ``model.generation_config.eos_token_id``
a seeded random subset of a fraction f of the vocabulary (--long-eos-fraction, default 3 / cap;
restored afterwards; the model's own EOS ids stay): under near-uniform sampling a row then stops
after a geometric number of tokens of mean 1/f, about a third of the cap, so lengths vary as real
rollouts do. On a real model the subset stops a row only when the model samples one of those
(mostly rare) tokens, and its own EOS ends most answers first. SmolLM2-135M on this repository's
2-core CPU machine (2026-12-04), 16 prompts, cap 256: with the default subset (576 of 49,152 ids)
lengths mean 49, max 256; 12 rows ended at its own EOS, 3 at the subset, 1 at the cap; with a
one-id subset (--long-eos-fraction 1e-9) mean 56, max 137, all 16 at its own EOS. It prints the
length distribution and what ended the rows. When vaxis.generate has a ``refill`` keyword
(continuous batching: finished rows replaced by waiting sequences), the same rollouts are timed
with refill=True and refill=False and the ratio printed; without it, the one way it has.

Warm-up, so that no timed call runs cold shapes: vaxis.generate is first called with the same
chats, batch budget and max_new_tokens as the timed call (short case: the identical call; long
case: the identical call with half the vocabulary as EOS, so rows stop after a few tokens: the
batch shapes, compilation and refills are warmed, the long KV lengths are not; a CUDA graph that
the engine captures per call is captured again in the timed call, part of its cost); the sequential
loop on one chat at the timed max_new_tokens (its shape: one row). The warm-up time is printed.

Decode steps (DecodeSteps): replays of a CUDA graph (torch.cuda.CUDAGraph.replay, wrapped while
timing), else forward calls whose token ids are one column wide (one new token per row), seen by
forward pre-hooks on the model and on its input embedding (which every forward calls, also one that
calls the model's body directly); wider calls are prompt passes (prefills, refills), reported
apart. The hooks skip calls being traced by torch.compile (no graph break, no recompilation) or
captured into a CUDA graph; a forward compiled as a whole (a compiled ``model.__call__``) is not
seen and "not observed" is printed, and the short case then takes the count of a run of a slower
path in which every sequence got as many tokens. steps/s = decode steps / the call's wall time
(prompt passes, sampling, bookkeeping included).
Floor: a decode step reads every weight once, so floor steps/s = memory bandwidth / weight bytes,
weight bytes = sum of p.numel() * p.element_size() over the parameters (quantized weights as
stored; the input embedding table counts in full although a step gathers only a few rows of it;
KV-cache reads are not counted, so for long rollouts the floor is above what any engine reaches).
Bandwidth: --bandwidth-gbs, default the nominal figure of the GPU in BANDWIDTH_GBS (by
torch.cuda.get_device_name()); on a CPU or another GPU the floor is unknown and not printed.

The last line printed is exactly (fields may be appended at its end, never reordered)
  generate: speedup_vs_sequential=X tokens_per_s=Y peak_rss_mb=Z decode_steps_per_s=S floor_share=F
with X = sequential time / vaxis time, Y = vaxis's generated tokens per second, Z = peak resident
memory of the process after the vaxis phase, S = vaxis's decode steps per second, F = S / floor
steps/s ("unknown" without a bandwidth); then LABEL_tokens_per_s=E for each slower path timed
(eager_tokens_per_s for compile=False, dynamic_tokens_per_s for engine="dynamic").
The long case ends with
  generate_long: tokens_per_s=Y decode_steps_per_s=S floor_share=F mean_len=M max_len=L refill_speedup=R peak_rss_mb=Z
(Y, S, F of refill=True where refill exists; R = refill=False time / refill=True time, or n/a: the two
calls as made, so where vaxis.generate picks its engine by ``refill`` (engine="auto"), R includes that choice).

Usage:
  python benchmarks/generate.py                                   # embedded SmolLM2 on CPU, 64 x 64
  python benchmarks/generate.py --case long --n-prompts 8         # long sampled rollouts, cap 256 on CPU
  python benchmarks/generate.py --model qwen3-8b-random           # GPU only: random Qwen3-8B, bf16
  python benchmarks/generate.py --model qwen3-8b-random --case long   # 64 rollouts, cap 2048
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from extract import load, peak_rss_mb, timed  # noqa: E402  (benchmarks/extract.py: same model loading)

import vaxis  # noqa: E402
from vaxis.core.generate import generate  # noqa: E402

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


# ---------------------------------------------------------------------------- decode steps and the floor

# Nominal memory bandwidth (GB/s, NVIDIA datasheets) by words in torch.cuda.get_device_name(); first match wins.
BANDWIDTH_GBS = [
    (("H200",), 4800.0),
    (("H100", "PCIE"), 2000.0),
    (("H100", "NVL"), 3900.0),
    (("H100",), 3350.0),  # SXM
    (("A100", "80GB", "PCIE"), 1935.0),
    (("A100", "80GB"), 2039.0),  # SXM
]


def nominal_bandwidth_gbs(device_name: str) -> float | None:
    """The nominal bandwidth of the GPU named ``device_name`` in :data:`BANDWIDTH_GBS`, else ``None``."""
    name = device_name.upper()
    return next((gbs for words, gbs in BANDWIDTH_GBS if all(w in name for w in words)), None)


def weight_bytes(model) -> int:
    """Bytes of the model's parameters as stored (a tied matrix once; 4-bit weights as their packed bytes)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def decode_floor(model, device, bandwidth_gbs: float | None) -> float | None:
    """Floor steps/s = bandwidth / weight bytes (``None`` when no bandwidth is known); prints how it was got."""
    gb = weight_bytes(model) / 1e9
    where = "--bandwidth-gbs"
    if bandwidth_gbs is None and device.type == "cuda":
        where = torch.cuda.get_device_name(device)
        bandwidth_gbs = nominal_bandwidth_gbs(where)
    if bandwidth_gbs is None:
        print(f"floor unknown, pass --bandwidth-gbs (weights {gb:.2f} GB read per decode step)", flush=True)
        return None
    floor = bandwidth_gbs / gb
    print(
        f"floor: {floor:.1f} decode steps/s = {bandwidth_gbs:.0f} GB/s ({where}) / {gb:.2f} GB of weights read per "
        "step (KV-cache reads not counted)",
        flush=True,
    )
    return floor


_compiling = getattr(torch.compiler, "is_compiling", lambda: False)


class DecodeSteps:
    """Counts decode steps while active: replays of a CUDA graph (``torch.cuda.CUDAGraph.replay``, wrapped), and
    forward calls seen by pre-hooks on the model and on its input embedding (which every forward calls, also one
    that calls the model's body directly): ``decode`` those whose token ids are one column wide (one new token per
    row), ``prompt`` the others; each kind's count is the larger of the two hooks'. The hooks skip calls being
    traced by torch.compile (no graph break, no recompilation) or captured into a CUDA graph (nothing computed).
    When graphs were replayed, ``decode`` is the replays and the one-column forwards run eagerly besides are
    reported apart (a capture's warm-up). Installed before the warm-up (adding a hook later would make a
    compiled model recompile), :meth:`reset` before the timed call."""

    def __init__(self, model):
        self.modules = [model, model.get_input_embeddings()]
        self.cuda = torch.cuda.is_available()
        self.handles, self.graph_class = [], getattr(torch.cuda, "CUDAGraph", None)
        self.reset()

    def _hook(self, which: int, module, args, kwargs) -> None:
        if _compiling() or (self.cuda and torch.cuda.is_current_stream_capturing()):
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        if isinstance(ids, torch.Tensor) and ids.dim() >= 2:
            self.counts[which][0 if ids.shape[1] == 1 else 1] += 1

    def reset(self) -> None:
        self.counts, self.replays = [[0, 0], [0, 0]], 0  # per hooked module: [one-column calls, others]

    @property
    def eager(self) -> int:
        return max(c[0] for c in self.counts)

    @property
    def decode(self) -> int:
        return self.replays or self.eager

    @property
    def prompt(self) -> int:
        return max(c[1] for c in self.counts)

    @property
    def note(self) -> str:
        return f" (CUDA-graph replays; {self.eager} eager one-column forwards besides)" if self.replays else ""

    def __enter__(self):
        for which, module in enumerate(self.modules):
            hook = functools.partial(self._hook, which)
            self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
        if self.graph_class is not None:
            self.own_replay = vars(self.graph_class).get("replay")
            replay = self.graph_class.replay

            def counted(graph, *args, **kwargs):
                self.replays += 1
                return replay(graph, *args, **kwargs)

            self.graph_class.replay = counted
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        if self.graph_class is not None:
            if self.own_replay is None:
                del self.graph_class.replay
            else:
                self.graph_class.replay = self.own_replay


@dataclass
class Run:
    """One timed vaxis.generate call (after its warm-up)."""

    seconds: float
    gens: list
    decode: int
    prompt: int
    warmup_s: float
    gpu_peak_mb: float | None = None
    steps_note: str = ""  # where ``decode`` came from when not from this call's own hooks
    tokens: int = field(init=False)

    def __post_init__(self):
        self.tokens = sum(g.n_new_tokens for g in self.gens)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def steps_per_s(self) -> float | None:
        return self.decode / self.seconds if self.decode else None

    def describe(self, floor: float | None) -> str:
        """``T s, tokens/s, decode steps, steps/s (share of the floor), prompt passes, warm-up``."""
        if self.decode:
            share = f" = {self.steps_per_s / floor:.1%} of the floor" if floor else ""
            steps = f"{self.decode} decode steps{self.steps_note} {self.steps_per_s:7.1f} steps/s{share}"
        else:
            steps = "decode steps not observed (compiled call)"
        return (
            f"{self.seconds:8.2f} s  {self.tokens_per_s:9.1f} tokens/s  {steps}  ({self.tokens} tokens, "
            f"{self.prompt} prompt passes; warm-up {self.warmup_s:.2f} s)"
        )


def share(run: Run, floor: float | None) -> str:
    return f"{run.steps_per_s / floor:.3f}" if floor and run.steps_per_s else "unknown"


def timed_generate(model, tokenizer, chats, device, warm_eos: list[int] | None = None, **kw) -> Run:
    """``generate(model, tokenizer, chats, **kw)`` warmed up by the same call (with ``warm_eos`` as the
    EOS ids when given), then timed with its decode steps counted."""
    with DecodeSteps(model) as steps:
        with eos_ids(model, warm_eos) if warm_eos is not None else contextlib.nullcontext():
            warmup_s, _ = timed(lambda: generate(model, tokenizer, chats, **kw), device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        steps.reset()
        seconds, gens = timed(lambda: generate(model, tokenizer, chats, **kw), device)
    gpu_peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return Run(seconds, gens, steps.decode, steps.prompt, warmup_s, gpu_peak, steps.note)


# ---------------------------------------------------------------------------- long rollouts


def vocab_size(model) -> int:
    """Width of the logits (the model's vocabulary; may exceed the tokenizer's)."""
    head = model.get_output_embeddings()
    return int(getattr(head, "out_features", 0) or model.config.get_text_config().vocab_size)


def own_eos(model) -> list[int]:
    ids = model.generation_config.eos_token_id
    return [] if ids is None else [ids] if isinstance(ids, int) else list(ids)


def random_stops(model, fraction: float, seed: int) -> list[int]:
    """A seeded random subset of ``fraction`` of the vocabulary (at least one id), sorted."""
    n = vocab_size(model)
    k = max(1, round(fraction * n))
    return sorted(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].tolist())


@contextlib.contextmanager
def eos_ids(model, ids: list[int]):
    """``model.generation_config.eos_token_id = ids`` inside the block, restored afterwards."""
    before = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = list(ids)
    try:
        yield
    finally:
        model.generation_config.eos_token_id = before


def lengths_summary(gens, own: set[int]) -> str:
    """Mean, median, p90 and max of the new tokens per rollout, and what ended them."""
    lengths = sorted(g.n_new_tokens for g in gens)
    p90 = lengths[min(len(lengths) - 1, int(0.9 * len(lengths)))]
    ends = {"own EOS": 0, "random stop": 0, "cap": 0, "stop string": 0}
    for g in gens:
        if g.finish_reason == "eos":
            ends["own EOS" if g.token_ids[-1] in own else "random stop"] += 1
        else:
            ends["cap" if g.finish_reason == "length" else "stop string"] += 1
    return (
        f"lengths mean {statistics.mean(lengths):.0f} median {statistics.median(lengths):.0f} p90 {p90} "
        f"max {lengths[-1]} min {lengths[0]}; ended by {', '.join(f'{k} {v}' for k, v in ends.items() if v)}"
    )


# ---------------------------------------------------------------------------- the two cases


# Keywords that turn vaxis.generate's fast path off, where it has them: (keyword, value, label). The short case
# times the default and each of these.
ALTERNATIVES = [("compile", False, "eager"), ("engine", "dynamic", "dynamic")]


def short_case(args, model, tokenizer, chats, vectors, budget, floor, device) -> None:
    """Greedy 64 x 64 (by default): vaxis.generate (its default, and each of :data:`ALTERNATIVES` it has)
    against the sequential loop; ends with the ``generate:`` line."""
    kw = dict(steer=vectors or None, positions="all", cache=False, progress=False, max_batch_tokens=budget)
    kw["max_new_tokens"] = args.max_new_tokens
    params = inspect.signature(generate).parameters
    variants = [("", {})] + [(label, {k: v}) for k, v, label in ALTERNATIVES if k in params]
    absent = [k for k, _, _ in ALTERNATIVES if k not in params]
    if absent:
        print(f"vaxis.generate has no {' / '.join(absent)} keyword: timed as it is", flush=True)
    runs = {}
    for label, extra in variants:
        runs[label] = run = timed_generate(model, tokenizer, chats, device, **kw, **extra)
        said = "".join(f"  ({k}={v!r})" for k, v in extra.items())
        print(f"{' '.join(['vaxis', label]).strip() + ':':<15} {run.describe(floor)}{said}", flush=True)
    batched, lengths = runs[""], [g.n_new_tokens for g in runs[""].gens]
    twin = next((r for r in runs.values() if r.decode and [g.n_new_tokens for g in r.gens] == lengths), None)
    if not batched.decode and twin:
        batched.decode, batched.steps_note = twin.decode, " (counted in an eager run: same lengths)"
        print(f"{'vaxis:':<15} {batched.describe(floor)}", flush=True)
    rss = peak_rss_mb()
    finish = {r: sum(g.finish_reason == r for g in batched.gens) for r in ("eos", "length", "stop")}
    print(f"finish reasons: {finish}", flush=True)
    if batched.gpu_peak_mb is not None:
        print(f"gpu peak during vaxis: {batched.gpu_peak_mb:.0f} MiB", flush=True)
    t_seq = float("nan")
    if not args.skip_sequential:
        warm_s, _ = timed(lambda: sequential(model, tokenizer, chats[:1], vectors, args.max_new_tokens), device)
        t_seq, seq = timed(lambda: sequential(model, tokenizer, chats, vectors, args.max_new_tokens), device)
        n_seq = sum(len(s) for s in seq)
        print(
            f"sequential: {t_seq:8.2f} s  {n_seq / t_seq:9.1f} tokens/s  ({n_seq} tokens; warm-up on one chat "
            f"{warm_s:.2f} s)",
            flush=True,
        )
        print(exact_match(tokenizer, batched.gens, seq), flush=True)
    steps = f"{batched.steps_per_s:.1f}" if batched.steps_per_s else "unknown"
    others = "".join(f" {label}_tokens_per_s={run.tokens_per_s:.1f}" for label, run in runs.items() if label)
    print(
        f"generate: speedup_vs_sequential={t_seq / batched.seconds:.2f} tokens_per_s={batched.tokens_per_s:.1f} "
        f"peak_rss_mb={rss:.0f} decode_steps_per_s={steps} floor_share={share(batched, floor)}{others}"
    )


def exact_match(tokenizer, batched, seq) -> str:
    """How many prompts got the same tokens and texts in both, and where the others first differ."""
    n = len(batched)
    same_tokens = sum(g.token_ids == s for g, s in zip(batched, seq))
    same_text = sum(g.text == tokenizer.decode(s, skip_special_tokens=True) for g, s in zip(batched, seq))
    first_diff = [
        next((k for k, (a, b) in enumerate(zip(g.token_ids, s)) if a != b), min(len(g.token_ids), len(s)))
        for g, s in zip(batched, seq)
        if g.token_ids != s
    ]
    return (
        f"exact match: tokens {same_tokens}/{n} ({same_tokens / n:.1%}), texts {same_text}/{n}; "
        f"first differing token of the others: {sorted(first_diff)}"
    )


def long_case(args, model, tokenizer, chats, vectors, budget, floor, device) -> None:
    """Sampled rollouts up to the long cap with a random stop set; refill=True and False when vaxis.generate
    has ``refill``; ends with the ``generate_long:`` line."""
    cap = args.long_max_new_tokens
    fraction = args.long_eos_fraction or 3 / cap
    own = own_eos(model)
    stops = random_stops(model, fraction, args.seed)
    expected = (1 - (1 - fraction) ** cap) / fraction  # mean of min(geometric(f), cap)
    print(
        f"long: cap {cap} new tokens, temperature 0.7, top_p 1.0; stop set: {len(stops)} random ids of "
        f"{vocab_size(model)} (f={fraction:.5f}, seed {args.seed}; expected mean length {expected:.0f} under "
        f"uniform sampling) + the model's own EOS {own}",
        flush=True,
    )
    kw = dict(steer=vectors or None, positions="all", cache=False, progress=False, max_batch_tokens=budget)
    kw.update(max_new_tokens=cap, temperature=0.7, top_p=1.0, seed=args.seed)
    if "refill" in inspect.signature(generate).parameters:
        ways = [("refill=True", {"refill": True}), ("refill=False", {"refill": False})]
    else:
        print("vaxis.generate has no refill keyword: timed one way (grouped batches)", flush=True)
        ways = [("grouped", {})]
    dense = sorted(set(own + random_stops(model, 0.5, args.seed + 1)))  # warm-up: rows stop within a few tokens
    runs = []
    with eos_ids(model, sorted(set(own + stops))):
        for label, extra in ways:
            run = timed_generate(model, tokenizer, chats, device, warm_eos=dense, **kw, **extra)
            runs.append(run)
            peak = f"; gpu peak {run.gpu_peak_mb:.0f} MiB" if run.gpu_peak_mb is not None else ""
            print(f"long {label}: {run.describe(floor)}", flush=True)
            print(f"long {label}: {lengths_summary(run.gens, set(own))}{peak}", flush=True)
    ratio = f"{runs[1].seconds / runs[0].seconds:.2f}" if len(runs) == 2 else "n/a"
    if len(runs) == 2:
        print(f"long: refill speedup (refill=False time / refill=True time) {ratio}", flush=True)
    head, lengths = runs[0], [g.n_new_tokens for g in runs[0].gens]
    steps = f"{head.steps_per_s:.1f}" if head.steps_per_s else "unknown"
    print(
        f"generate_long: tokens_per_s={head.tokens_per_s:.1f} decode_steps_per_s={steps} "
        f"floor_share={share(head, floor)} mean_len={statistics.mean(lengths):.0f} max_len={max(lengths)} "
        f"refill_speedup={ratio} peak_rss_mb={peak_rss_mb():.0f}"
    )


# ---------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="vaxis model name, or qwen3-8b-random")
    parser.add_argument("--quantization", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--case", choices=("short", "long"), default="short", help="see the module docstring")
    parser.add_argument("--n-prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64, help="short case")
    parser.add_argument(
        "--long-max-new-tokens", type=int, default=None, help="long case's cap (default 2048 on a GPU, 256 on a CPU)"
    )
    parser.add_argument(
        "--long-eos-fraction",
        type=float,
        default=None,
        help="long case: share of the vocabulary made EOS ids (default 3 / cap: mean length ~cap/3 on random weights)",
    )
    parser.add_argument("--percent", type=float, default=8.0, help="steering strength, %% of the mean residual norm")
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="rows * (longest prompt + new tokens) budget of vaxis.generate's batches (default: short case, "
        "vaxis.generate's own; long case, half the rollouts per batch)",
    )
    parser.add_argument(
        "--bandwidth-gbs",
        type=float,
        default=None,
        help="memory bandwidth for the decode floor (default: the GPU's nominal figure, when known)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-sequential", action="store_true", help="short case")
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device_name = args.device or vaxis.core.models.default_device()
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
    if args.case == "long" and args.long_max_new_tokens is None:
        args.long_max_new_tokens = 2048 if device.type == "cuda" else 256
    new_tokens = args.max_new_tokens if args.case == "short" else args.long_max_new_tokens
    chats = prompts(args.n_prompts)
    vectors = steering(model, tokenizer, chats, args.percent, args.seed) if args.percent else {}
    texts = [vaxis.render_chat(tokenizer, c, add_generation_prompt=True).text for c in chats]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    budget = args.max_batch_tokens  # None: vaxis.generate's own default
    if args.case == "long" and budget is None:  # half the rollouts per batch: the others wait, so refill has work
        budget = (len(chats) + 1) // 2 * (max(lengths) + args.long_max_new_tokens)
    steer = "none"
    if vectors:
        ((layer, v),) = vectors.items()
        steer = f"L{layer} {args.percent}% of norm (|v|={float(v.norm()):.2f})"
    print(
        f"model={args.model} device={device} dtype={model.dtype} case={args.case} prompts={len(chats)} "
        f"prompt_tokens={min(lengths)}..{max(lengths)} max_new_tokens={new_tokens} steer={steer} "
        f"max_batch_tokens={budget or 'engine default'} threads={torch.get_num_threads()}",
        flush=True,
    )
    floor = decode_floor(model, device, args.bandwidth_gbs)
    case = short_case if args.case == "short" else long_case
    case(args, model, tokenizer, chats, vectors, budget, floor, device)


if __name__ == "__main__":
    main()
