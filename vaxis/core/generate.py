"""Batched, steerable, seeded and cached text generation from chats.

:func:`generate` renders each conversation with the model's chat template (plus an optional
assistant ``prefill``), and decodes greedily or by sampling, optionally under
:func:`vaxis.steer`. Results come back in input order, ``n_samples`` per conversation.

Why a hand-written decode loop instead of Hugging Face ``model.generate`` (the loop is
:class:`vaxis.core.engine.Decoder`; its docstring has the details):

* per-sequence stopping and refilling: a sequence ends at EOS, at a stop string or at
  ``max_new_tokens``; finished rows leave the batch and the KV cache (in groups, so the cache is
  not copied every step) and waiting sequences take their places (continuous batching), where
  ``generate`` keeps computing finished rows until the longest ends;
* per-sequence randomness: each sequence samples from its own ``torch.Generator`` seeded from
  ``(seed, prompt + prefill, sample index)``, so a sample does not depend on the batch it
  landed in, the batch size or the order of the conversations (``generate`` shares one RNG);
* exact control: left padding with position ids counted over real tokens only (as
  ``generate`` does), the logits of the last position only, and a steering mask computed per
  row from its own token index, so every position is steered, generated tokens included.

Batching: sequences are sorted by prompt length (longest first); at most
``rows * (longest prompt + max_new_tokens) <= max_batch_tokens`` rows run at once (on a GPU the
default budget is sized by free memory: :func:`vaxis.core.engine.generation_budget`). An ``int``
position (or a 1-D mask) counts each row's own tokens from its first real token; ``"prompt"``
is the prompt and prefill of each row, ``"generated"`` its new tokens. Padded columns may be
steered: attention never reads them. Greedy results equal one-at-a-time results up to float
rounding: padding changes matrix shapes, so in float32 or bfloat16 a near-tie argmax can flip
(the tests check equality in float64).

Cache: ``cache_root()/generate/<key>.jsonl``, one :class:`Generation` per line, in input
order; the key hashes the model and tokenizer identities, the rendered prompts and prefills,
every sampling parameter, the stop strings, the positions and the steering vectors' bytes.
While running, finished sequences are appended to ``<key>.jsonl.partial`` (flushed and
fsynced as they finish); an interrupted run resumes from it (a torn last line is dropped)

Beside this module: :mod:`vaxis.core.generate_settings` checks and resolves the arguments (steering, positions,
EOS ids, seeds) and :mod:`vaxis.core.generate_cache` holds :class:`~vaxis.core.generate_cache.Generation`, the
cache key and the cache files.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from . import distributed
from .cache import cache_root
from .chat import render_chat
from .engine import Decoder, Job, generation_budget, plan_rows, say_once
from .engine_static import StaticDecoder
from .extract import input_device, plan_batches
from .generate_cache import Generation, cache_key, jsonl_lines, load_final, read_partials, write_final
from .generate_settings import check_arguments, eos_ids, positions_key, resolve_steer, sequence_seed
from .layout import find_layout
from .timings import record_pass


def generation_plan(
    tokenizer,
    texts: Sequence[str],
    max_new_tokens: int,
    budget: int,
    n_samples: int = 1,
    sampling: bool = False,
    static: bool = False,
) -> dict:
    """What a generation pass plans before it decodes, the same whether it then runs or is read from the cache
    (its timing record, and :mod:`vaxis.run.estimate` before a model is loaded): ``sequences`` (conversations x
    ``n_samples`` when sampling; greedy samples are computed once), ``planned_tokens`` (each sequence's
    ``texts`` tokens, i.e. rendered prompt plus prefill, plus ``max_new_tokens``), ``rows`` and ``width`` of the
    running batch (:func:`vaxis.core.engine.plan_rows`; ``static``: the static-slot engine), ``batches`` (batches of
    :func:`vaxis.core.extract.plan_batches` under ``budget``; static: sequences / rows) and ``decode_steps`` and
    ``kv_read_tokens`` (cache columns that attention reads over all steps, rows x width a step), upper bounds:
    every sequence is taken to run to ``max_new_tokens``, where rows that stop sooner make room for others."""
    per = n_samples if sampling else 1
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if len(texts) else []  # one batched call
    prompts = [len(i) for i in ids for _ in range(per)]
    rows, width = plan_rows(prompts, max_new_tokens, budget, static)
    if static:
        n_batches = -(-len(prompts) // rows)
    else:
        n_batches = len(plan_batches([n + max_new_tokens for n in prompts], budget, 1 << 30))
    steps = n_batches * max_new_tokens
    return {"sequences": len(prompts), "planned_tokens": sum(prompts) + len(prompts) * max_new_tokens,
            "batches": n_batches, "rows": rows, "width": width, "decode_steps": steps,
            "kv_read_tokens": steps * min(rows, len(prompts)) * width}  # fmt: skip


def generate(
    model,
    tokenizer,
    conversations: Sequence[list[dict]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    n_samples: int = 1,
    seed: int = 0,
    steer=None,
    positions="all",
    prefill: str | Sequence[str] | None = None,
    stop: Sequence[str] | None = None,
    max_batch_tokens: int | None = None,
    cache: bool = True,
    progress: bool = True,
    chat_template_kwargs: dict | None = None,
    score: dict | None = None,
    processes: int | None = None,
    refill: bool = True,
    engine: str = "auto",
    expect_key: str | None = None,
) -> list[Generation]:
    """Generate ``n_samples`` continuations of each conversation (see the module docstring).

    Args:
        model, tokenizer: a causal LM and its fast tokenizer (with a chat template).
        conversations: chats, each a list of ``{"role", "content"}`` messages.
        max_new_tokens: most new tokens per sequence (>= 1).
        temperature: 0 for greedy decoding, else sampling at this temperature.
        top_p: nucleus sampling mass (1 = off); ignored when greedy.
        n_samples: continuations per conversation (greedy ones are computed once and copied).
        seed: base seed; each sequence's generator is seeded from (seed, prompt + prefill, sample).
        steer: ``{residual index: vector}`` as for :func:`vaxis.steer`, or ``(axis, percent_of_norm)``
            to steer at the axis's main layer with ``axis.steering_vector(percent_of_norm)``.
        positions: what to steer: ``"all"``, ``"prompt"`` (prompt and prefill), ``"generated"``, an
            int p (each sequence's tokens from p on), or a 1-D bool mask over each sequence's tokens.
        prefill: assistant prefix after the generation prompt: one string for all, or one per
            conversation. The returned ``text`` excludes it.
        stop: stop strings; the text is cut before the first one and that sequence ends.
        max_batch_tokens: ``rows * (longest prompt + max_new_tokens)`` budget of the running batch
            (default :func:`vaxis.core.engine.generation_budget`: by free memory on a GPU, 8192 on a CPU).
        cache: read and write the on-disk cache.
        progress: show a tqdm bar (sequences, tokens/s).
        chat_template_kwargs: passed to the chat template (e.g. ``{"enable_thinking": False}``).
        score: ``{name: [token ids]}``: record each answer's log-probability at the first generated
            position in ``Generation.scores`` (e.g. :func:`vaxis.core.readout.yes_no_ids`).
        processes: decode on this many processes with ``accelerate launch`` (:mod:`vaxis.core.distributed`:
            the same batches, so the same results); ``None``: :func:`vaxis.core.distributed.use_processes`'s setting.
        refill: continuous batching: a finished row's place goes to the next waiting sequence
            (:mod:`vaxis.core.engine`); ``False`` runs each batch until its longest row ends. Results are the same.
        engine: ``"auto"`` (on a CUDA device, rows in a static cache with the decode step in a CUDA graph,
            :mod:`vaxis.core.engine_static`; elsewhere the dynamic cache), ``"static"`` (static slots; a CUDA graph
            only on a CUDA device) or ``"dynamic"``. Results are the same.
        expect_key: internal (a process of a sharded job): the launching process's cache key.

    Returns:
        ``len(conversations) * n_samples`` :class:`Generation`, conversation-major, in input order.
    """
    run = _prepare(model, tokenizer, conversations, max_new_tokens, temperature, top_p, n_samples, seed, steer,
                   positions, prefill, stop, max_batch_tokens, chat_template_kwargs, score, refill, engine, progress)  # fmt: skip
    found = run.from_cache(cache, processes, expect_key)
    return found if found is not None else run.compute(processes, cache)


def _prepare(model, tokenizer, conversations, max_new_tokens, temperature, top_p, n_samples, seed, steer, positions,
             prefill, stop, max_batch_tokens, chat_template_kwargs, score, refill, engine, progress):  # fmt: skip
    """:func:`generate`'s arguments checked and its conversations rendered: the :class:`_GenerationPass` to run."""
    prefills, stops = check_arguments(conversations, max_new_tokens, n_samples, temperature, top_p, prefill, stop)
    layout = find_layout(model)
    vectors = resolve_steer(model, layout, steer)
    positions_key(positions)  # validates
    kwargs = chat_template_kwargs or {}
    prompts = [render_chat(tokenizer, c, add_generation_prompt=True, **kwargs).text for c in conversations]
    device = input_device(model)
    static = _static(engine, device, refill)  # validates engine=
    budget = max_batch_tokens or generation_budget(model, device)
    sampling = temperature > 0
    cfg = dict(
        max_new_tokens=max_new_tokens,
        temperature=float(temperature),
        top_p=float(top_p) if sampling else 1.0,
        eos=eos_ids(model, tokenizer),
        stop=stops,
        positions=positions,
        vectors=vectors,
        score={str(k): [int(t) for t in v] for k, v in (score or {}).items()},
    )
    job_kwargs = dict(  # what each process of a sharded job calls generate with
        conversations=list(conversations), max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
        n_samples=n_samples, seed=seed, steer=vectors or None, positions=positions, prefill=prefills, stop=stops,
        max_batch_tokens=budget, progress=progress, chat_template_kwargs=chat_template_kwargs, score=score,
        refill=refill, engine=engine,
    )  # fmt: skip
    return _GenerationPass(model, tokenizer, prompts, prefills, cfg, n_samples, seed, layout, device, budget, refill,
                           engine, static, progress, job_kwargs, where=distributed.shard())  # fmt: skip


@dataclass
class _GenerationPass:
    """One call of :func:`generate` once its arguments are checked: the rendered prompts, the decode settings
    (``cfg``, as :class:`vaxis.core.engine.Decoder` takes them), where it runs (``where``:
    :func:`vaxis.core.distributed.shard`) and, with the cache on, its key and files."""

    model: object
    tokenizer: object
    prompts: list[str]
    prefills: list[str]
    cfg: dict
    n_samples: int
    seed: int
    layout: object
    device: object
    budget: int
    refill: bool
    engine: str
    static: bool
    progress: bool
    job_kwargs: dict
    where: tuple[int, int] | None = None
    key: str | None = None
    final: Path | None = None
    partial: Path | None = None
    start: float = 0.0

    @property
    def sampling(self) -> bool:
        return self.cfg["temperature"] > 0

    def plan(self) -> dict:  # the planned sizes, in every timing record of this pass
        return generation_plan(self.tokenizer, [p + f for p, f in zip(self.prompts, self.prefills)],
                               self.cfg["max_new_tokens"], self.budget, self.n_samples, self.sampling, self.static)  # fmt: skip

    def load_final(self) -> list[Generation]:
        return load_final(self.final, len(self.prompts) * self.n_samples)

    def from_cache(self, cache: bool, processes: int | None, expect_key: str | None) -> list[Generation] | None:
        """With ``cache``: the pass's key (checked against ``expect_key`` and the other processes' keys) and files,
        and its result when the cache has it (else None). Without: None, after checking that no job needs it."""
        if not cache and (self.where is not None or (processes or 1) > 1):
            raise ValueError("processes > 1 merges the processes' sequences through the cache: keep cache=True")
        if not cache:  # the key needs the model's weight digest: skipped when the cache is off
            return None
        self.key = cache_key(self.model, self.tokenizer, self.prompts, self.prefills, self.cfg, self.n_samples,
                              self.seed)  # fmt: skip
        if expect_key is not None and expect_key != self.key:
            raise distributed.DistributedError(
                f"this process's generation inputs hash to {self.key}, the launching process's to {expect_key}: it "
                "loaded another model or read other inputs; nothing was merged"
            )
        distributed.same_everywhere(self.key, "generation cache keys")
        self.final = cache_root() / "generate" / f"{self.key}.jsonl"
        self.partial = self.final.with_name(self.final.name + ".partial")
        if not self.final.exists():
            return None
        out = self.load_final()
        if self.where is None:
            record_pass("generate", sum(g.n_new_tokens for g in out), 0.0, cached=True, **self.plan())
        return out

    def compute(self, processes: int | None, cache: bool) -> list[Generation]:
        """The sequences not yet in the cache (nor in its partial files): decoded here (in a process of a job, its
        share of the batches), or by a sharded job on ``processes`` processes; then the whole result."""
        # Greedy samples are identical: compute sample 0 and copy it.
        todo = [(i, s) for i in range(len(self.prompts)) for s in range(self.n_samples if self.sampling else 1)]
        done = read_partials(self.partial, set(todo)) if cache else {}
        todo = [seq for seq in todo if seq not in done]
        texts = {i: self.prompts[i] + self.prefills[i] for i in {i for i, _ in todo}}
        ids = {i: self.tokenizer(t, add_special_tokens=False)["input_ids"] for i, t in texts.items()}
        sizes = [len(ids[i]) + self.cfg["max_new_tokens"] for i, _ in todo]
        batches = plan_batches(sizes, self.budget, 1 << 30)
        n_proc = distributed.processes_for(processes, sum(sizes))
        if n_proc > 1 and todo:
            return self.launch(n_proc)
        partial = self.partial if cache else None
        if self.where is not None:  # a process of a sharded job: every process has read the same finished sequences
            distributed.barrier()
            partial = partial.with_name(f"{partial.name}.rank{self.where[0]}")
            batches = [batches[b] for b in distributed.my_batches(len(batches))]
        bar = tqdm(total=len(todo), unit="seq", desc="generate", disable=not self.progress, mininterval=10)
        self.start = time.perf_counter()
        jobs = [
            Job(todo[j], ids[todo[j][0]], sequence_seed(self.seed, texts[todo[j][0]], todo[j][1]))
            for b in batches
            for j in b
        ]
        n_tokens, decoder = self.decode(jobs, done, partial, bar)
        bar.close()
        return self.finish(todo, done, len(jobs), n_tokens, decoder, cache)

    def launch(self, n_proc: int) -> list[Generation]:
        """Run the pass as a sharded job on ``n_proc`` processes and read its merged result from the cache."""
        job = {"model": distributed.model_source(self.model), "kwargs": self.job_kwargs}
        if self.key is None:  # cache=False, with use_processes' setting above 1
            raise ValueError("processes > 1 merges the processes' sequences through the cache: keep cache=True")
        start = time.perf_counter()
        distributed.run_job("generate", job, self.key, n_proc, progress=self.progress)
        if not self.final.exists():
            raise distributed.DistributedError(f"the sharded generation finished without writing {self.final}")
        out = self.load_final()
        record_pass("generate", sum(g.n_new_tokens for g in out), time.perf_counter() - start, cached=False,
                    processes=n_proc, **self.plan())  # fmt: skip
        return out

    def decode(self, jobs: list[Job], done: dict, partial: Path | None, bar) -> tuple[int, Decoder]:
        """Decode ``jobs`` here; each finished sequence goes into ``done`` and (flushed and fsynced as it finishes)
        into ``partial``. Returns the tokens generated and the decoder."""
        decoder = _decoder(self.model, self.tokenizer, self.layout, self.cfg, self.device, self.budget, self.refill,
                           self.engine, [j.ids for j in jobs])  # fmt: skip
        n_tokens = 0
        with open(partial, "a", encoding="utf-8") if partial is not None else contextlib.nullcontext() as handle:

            def finished(results: list) -> None:
                nonlocal n_tokens
                for job, (token_ids, text, reason, scores) in results:
                    i, s = job.key
                    done[job.key] = Generation(
                        i, s, self.prompts[i], self.prefills[i], text, token_ids, len(token_ids), reason, scores
                    )
                    n_tokens += len(token_ids)
                if handle is not None:
                    handle.write(jsonl_lines(done[job.key] for job, _ in results))
                    handle.flush()
                    os.fsync(handle.fileno())
                bar.update(len(results))
                bar.set_postfix_str(f"{n_tokens / (time.perf_counter() - self.start):.1f} tok/s", refresh=False)

            decoder.run(jobs, finished)
        return n_tokens, decoder

    def finish(self, todo: list, done: dict, n_mine: int, n_tokens: int, decoder, cache: bool) -> list[Generation]:
        """Every sequence in input order (greedy samples copied), written to the cache; in a process of a job,
        process 0 merges every process's sequences and the others read its file."""
        if self.where is not None:
            distributed.note_share(sequences_this_process=n_mine)
            distributed.barrier()
            if self.where[0] != 0:
                distributed.barrier()
                return self.load_final()
            done.update(read_partials(self.partial, set(todo)))
        n = len(self.prompts)
        picks = [(i, s, done[(i, s if self.sampling else 0)]) for i in range(n) for s in range(self.n_samples)]
        out = [Generation(**{**asdict(g), "sample": s}) for i, s, g in picks]
        if cache:
            write_final(self.final, self.partial, out)
        if self.where is not None:
            distributed.barrier()
        else:
            record_pass("generate", n_tokens, time.perf_counter() - self.start, cached=False, processes=1,
                        decode_steps_run=decoder.steps, **self.plan())  # fmt: skip
        return out


def _static(engine: str, device, refill: bool) -> bool:
    """Whether ``generate(engine=...)`` runs the static-slot engine on ``device``."""
    if engine not in ("auto", "static", "dynamic"):
        raise ValueError(f"engine={engine!r}: use 'auto', 'static' or 'dynamic'")
    return engine == "static" or (engine == "auto" and refill and torch.device(device).type == "cuda")


def _decoder(model, tokenizer, layout, cfg, device, budget, refill, engine, prompt_ids) -> Decoder:
    """The decode engine ``engine`` asks for (see :func:`generate`), saying once why an "auto" run has no CUDA
    graph."""
    cuda = torch.device(device).type == "cuda"
    if _static(engine, device, refill):
        return StaticDecoder(model, tokenizer, layout, cfg, device, budget, [len(i) for i in prompt_ids], graphs=cuda)
    if engine == "auto":
        why = f"CUDA graphs need a CUDA device, this model runs on {device}" if not cuda else "refill=False"
        say_once(f"vaxis.generate: decoding eagerly ({why})")
    return Decoder(model, tokenizer, layout, cfg, device, budget, refill=refill)
