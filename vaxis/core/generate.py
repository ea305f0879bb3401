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
and the complete file is written atomically at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from . import distributed
from .cache import atomic_write_text, cache_root, stable_hash
from .chat import render_chat
from .engine import Decoder, Job, generation_budget, plan_rows, say_once
from .engine_static import StaticDecoder
from .extract import CacheError, input_device, plan_batches, tokenizer_identity
from .identity import model_identity
from .layout import find_layout
from .timings import record_pass

GENERATE_VERSION = 1


@dataclass
class Generation:
    """One generated continuation.

    ``prompt`` is the rendered chat (with the generation prompt), ``prefill`` the assistant
    prefix fed after it, ``text`` the decoded new tokens (special tokens skipped, cut before
    the first stop string), ``token_ids`` the new tokens (the EOS token included when
    ``finish_reason == "eos"``; the tokens that completed a stop string included when
    ``"stop"``), ``finish_reason`` one of ``"eos"``, ``"length"``, ``"stop"``; ``scores``, when
    :func:`generate` was given ``score``, the log-probability of each named answer at the first
    generated position (``log`` of the summed probabilities of its token ids, before temperature):
    the length-free readout of the same forward pass that sampled the first token.
    """

    conversation: int
    sample: int
    prompt: str
    prefill: str
    text: str
    token_ids: list[int]
    n_new_tokens: int
    finish_reason: str
    scores: dict | None = None


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


def _eos_ids(model, tokenizer) -> list[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        ids = getattr(model.config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(ids))


def resolve_steer(model, layout, steer) -> dict[int, torch.Tensor]:
    """``{layer: float32 CPU vector}`` from a mapping or an ``(Axis, percent_of_norm)`` pair."""
    if steer is None:
        return {}
    if isinstance(steer, tuple):
        if len(steer) != 2 or not hasattr(steer[0], "steering_vector"):
            raise TypeError("steer= takes {layer: vector} or an (Axis, percent_of_norm) pair")
        axis, percent = steer
        axis.check_model(model)
        return {axis.main_layer: axis.steering_vector(float(percent)).float().cpu()}
    if not hasattr(steer, "items"):
        raise TypeError(
            f"steer= takes {{layer: vector}} or an (Axis, percent_of_norm) pair, not {type(steer).__name__}"
        )
    layout.check_layers(list(steer))
    vectors = {}
    for layer, vector in steer.items():
        vector = torch.as_tensor(vector).detach().float().cpu()
        if vector.shape != (layout.hidden_size,):
            raise ValueError(
                f"steering vector for layer {layer} has shape {tuple(vector.shape)}; this model needs "
                f"({layout.hidden_size},)"
            )
        vectors[int(layer)] = vector.contiguous()
    return vectors


def _positions_key(positions):
    if isinstance(positions, str):
        if positions not in ("all", "prompt", "generated"):
            raise ValueError(f"positions={positions!r}: use 'all', 'prompt', 'generated', an int or a 1-D bool mask")
        return positions
    if isinstance(positions, int) and not isinstance(positions, bool) and positions >= 0:
        return positions
    if isinstance(positions, torch.Tensor) and positions.dim() == 1:
        return {"mask": hashlib.sha256(positions.bool().cpu().numpy().tobytes()).hexdigest()}
    raise ValueError(
        f"positions={positions!r}: generate() takes 'all', 'prompt', 'generated', an int p >= 0 (each sequence's "
        "own tokens from p on) or a 1-D bool mask over each sequence's own tokens (prompt, then generated)"
    )


def _seed(seed: int, text: str, sample: int) -> int:
    return int(stable_hash([seed, text, sample], 16), 16) & ((1 << 63) - 1)


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
    if isinstance(conversations, (str, dict)) or not len(conversations):
        raise ValueError("conversations must be a non-empty list of chats (lists of {'role', 'content'} messages)")
    if isinstance(conversations[0], dict):
        raise ValueError("conversations must be a list of chats: wrap a single chat as [messages]")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: give an int >= 1")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples={n_samples!r}: give an int >= 1")
    if temperature < 0:
        raise ValueError(f"temperature={temperature}: use 0 for greedy decoding or a positive value to sample")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p}: give a value in (0, 1]; 1 turns nucleus sampling off")
    n = len(conversations)
    prefills = [prefill or ""] * n if prefill is None or isinstance(prefill, str) else list(prefill)
    if len(prefills) != n or not all(isinstance(p, str) for p in prefills):
        raise ValueError(f"prefill: give one string, or a list of {n} strings (one per conversation)")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if not all(isinstance(s, str) and s for s in stops):
        raise ValueError("stop: give a list of non-empty strings")
    layout = find_layout(model)
    vectors = resolve_steer(model, layout, steer)
    _positions_key(positions)  # validates
    kwargs = chat_template_kwargs or {}
    prompts = [render_chat(tokenizer, c, add_generation_prompt=True, **kwargs).text for c in conversations]
    device = input_device(model)
    static = _static(engine, device, refill)  # validates engine=
    budget = max_batch_tokens or generation_budget(model, device)
    sampling = temperature > 0

    def plan() -> dict:  # the planned sizes, in every timing record of this pass
        return generation_plan(tokenizer, [p + f for p, f in zip(prompts, prefills)], max_new_tokens, budget,
                               n_samples, sampling, static)  # fmt: skip

    cfg = dict(
        max_new_tokens=max_new_tokens,
        temperature=float(temperature),
        top_p=float(top_p) if sampling else 1.0,
        eos=_eos_ids(model, tokenizer),
        stop=stops,
        positions=positions,
        vectors=vectors,
        score={str(k): [int(t) for t in v] for k, v in (score or {}).items()},
    )

    where = distributed.shard()
    if not cache and (where is not None or (processes or 1) > 1):
        raise ValueError("processes > 1 merges the processes' sequences through the cache: keep cache=True")
    if cache:  # the key needs the model's weight digest: skipped when the cache is off
        key = _cache_key(model, tokenizer, prompts, prefills, cfg, n_samples, seed)
        if expect_key is not None and expect_key != key:
            raise distributed.DistributedError(
                f"this process's generation inputs hash to {key}, the launching process's to {expect_key}: it "
                "loaded another model or read other inputs; nothing was merged"
            )
        distributed.same_everywhere(key, "generation cache keys")
        final = cache_root() / "generate" / f"{key}.jsonl"
        partial = final.with_name(final.name + ".partial")
        if final.exists():
            out = _load_final(final, n * n_samples)
            if where is None:
                record_pass("generate", sum(g.n_new_tokens for g in out), 0.0, cached=True, **plan())
            return out

    # Greedy samples are identical: compute sample 0 and copy it.
    todo = [(i, s) for i in range(n) for s in range(n_samples if sampling else 1)]
    done = _read_partials(partial, set(todo)) if cache else {}
    todo = [seq for seq in todo if seq not in done]
    texts = {i: prompts[i] + prefills[i] for i in {i for i, _ in todo}}
    ids = {i: tokenizer(t, add_special_tokens=False)["input_ids"] for i, t in texts.items()}
    batches = plan_batches([len(ids[i]) + max_new_tokens for i, _ in todo], budget, 1 << 30)
    n_proc = distributed.processes_for(processes, sum(len(ids[i]) + max_new_tokens for i, _ in todo))
    if n_proc > 1 and todo:
        kwargs = dict(
            conversations=list(conversations), max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            n_samples=n_samples, seed=seed, steer=vectors or None, positions=positions, prefill=prefills, stop=stops,
            max_batch_tokens=budget, progress=progress, chat_template_kwargs=chat_template_kwargs, score=score,
            refill=refill, engine=engine,
        )  # fmt: skip
        job = {"model": distributed.model_source(model), "kwargs": kwargs}
        start = time.perf_counter()
        distributed.run_job("generate", job, key, n_proc, progress=progress)
        if not final.exists():
            raise distributed.DistributedError(f"the sharded generation finished without writing {final}")
        out = _load_final(final, n * n_samples)
        record_pass("generate", sum(g.n_new_tokens for g in out), time.perf_counter() - start, cached=False,
                    processes=n_proc, **plan())  # fmt: skip
        return out
    if where is not None:  # a process of a sharded job: every process has read the same finished sequences
        distributed.barrier()
        partial = partial.with_name(f"{partial.name}.rank{where[0]}")
        batches = [batches[b] for b in distributed.my_batches(len(batches))]
    bar = tqdm(total=len(todo), unit="seq", desc="generate", disable=not progress, mininterval=10)
    start, n_tokens = time.perf_counter(), 0
    jobs = [Job(todo[j], ids[todo[j][0]], _seed(seed, texts[todo[j][0]], todo[j][1])) for b in batches for j in b]
    decoder = _decoder(model, tokenizer, layout, cfg, device, budget, refill, engine, [j.ids for j in jobs])
    with open(partial, "a", encoding="utf-8") if cache else contextlib.nullcontext() as handle:

        def finished(results: list) -> None:  # written (flushed, fsynced) as sequences finish
            nonlocal n_tokens
            for job, (token_ids, text, reason, scores) in results:
                i, s = job.key
                done[job.key] = Generation(
                    i, s, prompts[i], prefills[i], text, token_ids, len(token_ids), reason, scores
                )
                n_tokens += len(token_ids)
            if handle is not None:
                handle.write("".join(json.dumps(asdict(done[job.key])) + "\n" for job, _ in results))
                handle.flush()
                os.fsync(handle.fileno())
            bar.update(len(results))
            bar.set_postfix_str(f"{n_tokens / (time.perf_counter() - start):.1f} tok/s", refresh=False)

        decoder.run(jobs, finished)
    bar.close()
    if where is not None:  # process 0 merges every process's sequences; the others read its file
        distributed.note_share(sequences_this_process=sum(len(b) for b in batches))
        distributed.barrier()
        if where[0] != 0:
            distributed.barrier()
            return _load_final(final, n * n_samples)
        partial = final.with_name(final.name + ".partial")
        done.update(_read_partials(partial, set(todo)))
    picks = [(i, s, done[(i, s if sampling else 0)]) for i in range(n) for s in range(n_samples)]
    out = [Generation(**{**asdict(g), "sample": s}) for i, s, g in picks]
    if cache:
        atomic_write_text(final, "".join(json.dumps(asdict(g)) + "\n" for g in out))
        for leftover in [partial, *partial.parent.glob(f"{partial.name}.rank*")]:
            leftover.unlink(missing_ok=True)
    if where is not None:
        distributed.barrier()
    else:
        record_pass("generate", n_tokens, time.perf_counter() - start, cached=False, processes=1,
                    decode_steps_run=decoder.steps, **plan())  # fmt: skip
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


def _cache_key(model, tokenizer, prompts, prefills, cfg, n_samples, seed) -> str:
    """Hash of everything a generation depends on (module docstring); 24 hex digits."""
    vectors = cfg["vectors"]
    return stable_hash(
        {
            "v": GENERATE_VERSION,
            "model": model_identity(model),
            "tokenizer": tokenizer_identity(tokenizer),
            "prompts": stable_hash(prompts, 32),
            "prefills": stable_hash(prefills, 32),
            "sampling": [cfg["max_new_tokens"], cfg["temperature"], cfg["top_p"], n_samples, seed],
            "eos": cfg["eos"],
            "stop": cfg["stop"],
            "positions": _positions_key(cfg["positions"]),
            "steer": {str(k): hashlib.sha256(v.numpy().tobytes()).hexdigest() for k, v in sorted(vectors.items())},
            **({"score": cfg["score"]} if cfg["score"] else {}),
        },
        24,
    )


def _read_partials(path: Path, wanted: set) -> dict:
    """Finished sequences of an interrupted run: ``path`` and the per-process files of a sharded one."""
    done = {}
    for part in [path, *sorted(path.parent.glob(f"{path.name}.rank*"))]:
        done.update(_read_partial(part, wanted))
    return done


def _read_partial(path: Path, wanted: set) -> dict:
    """Finished sequences of an interrupted run; a torn last line is dropped (and truncated away)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        return {}
    done, good_bytes = {}, 0
    with open(path, "rb") as handle:
        lines = handle.readlines()
    for k, line in enumerate(lines):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("torn line")
            g = Generation(**json.loads(line))
        except (ValueError, TypeError) as err:
            if k == len(lines) - 1:
                break
            raise CacheError(f"{path} line {k + 1} is damaged ({err}); delete the file to recompute") from err
        if (g.conversation, g.sample) in wanted:
            done[(g.conversation, g.sample)] = g
        good_bytes += len(line)
    if good_bytes < path.stat().st_size:
        os.truncate(path, good_bytes)
    return done


def _load_final(path: Path, expected: int) -> list[Generation]:
    try:
        with open(path, encoding="utf-8") as handle:
            out = [Generation(**json.loads(line)) for line in handle]
    except (ValueError, TypeError) as err:
        raise CacheError(f"{path} is damaged ({err}); delete it to recompute") from err
    if len(out) != expected:
        raise CacheError(f"{path} holds {len(out)} generations, not {expected}; delete it to recompute")
    return out
