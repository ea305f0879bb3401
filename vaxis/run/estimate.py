"""The cost of a run before a GPU is rented: ``python -m vaxis run --profile P --estimate``.

For each notebook, the heavy passes it will make, built from the inputs the notebook builds (notebook 01's games,
the shipped problems and prompts, the same chats; :mod:`vaxis.run.estimate_passes` and :mod:`vaxis.run.estimate_adapters`
mirror each notebook) and planned by :class:`vaxis.run.estimate_planner.Planner` with the profile's tokenizer only, no
weights: per pass its kind, sequences, tokens, batches (the engine's own planner, :func:`vaxis.core.extract.plan_batches`),
decode steps and optimizer steps, and per notebook its model loads; then the hours at the rates of a named device
(``vaxis/run/rates.toml``, or ``--rates FILE``). Readouts (:mod:`vaxis.core.readout`) are estimated but not recorded by a
run, so :func:`compare` leaves them out.

What the numbers are:

* extraction and readouts: the tokens and batches the run computes;
* generation: ``tokens`` are planned tokens (each sequence's prompt plus ``max_new_tokens``) and decode steps
  ``max_new_tokens`` per batch: upper bounds, because a batch stops when its longest row stops and rows may end
  early (EOS, a stop string);
* training: every sequence the trainer reads over all epochs, and TRL's optimizer steps
  (:func:`vaxis.core.train.training_plan`);
* inputs that only a model can make (rollout texts read by later passes) are modelled by their planned size,
  ``max_new_tokens`` tokens of filler text, and the pass says so;
* a pass with the same inputs as an earlier pass of the run (same model, texts and settings) is read from the
  cache: it is listed, costs nothing, and counts as a pass (a run records it too).

:func:`compare` checks an estimate against a real run's ``timings.json``: per notebook the recorded passes
(extraction, generation, training) must be as many as estimated and their tokens within 5 %; a pass over texts a
model makes (notebook 05's per-token projections over its rollouts) is estimated as a range, from one generated
token per rollout to the rollouts' limit, and the run's tokens must fall inside it (widened by the same 5 %).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tomllib

from .estimate_planner import NotebookEstimate, Pass

RATES_FILE = Path(__file__).resolve().parent / "rates.toml"
RECORDED = ("extract", "generate", "train")  # the kinds a run records in timings.json (vaxis.core.timings.record_pass)
TOLERANCE = 0.05
_KEYS = ("device", "extract_tokens_per_s", "decode_steps_per_s", "train_tokens_per_s", "model_load_s")


@dataclass(frozen=True)
class Rate:
    """One row of the rate table (see ``vaxis/run/rates.toml`` for what each field means)."""

    name: str
    precision: str
    device: str
    extract_tokens_per_s: float
    decode_steps_per_s: float
    train_tokens_per_s: float
    model_load_s: float
    source: str = ""
    generation_budget_tokens: int | None = None  # the KV-cache tokens a generation batch may hold there
    kv_bytes_per_token: int = 0  # of the model the rates were measured with
    bandwidth_gbs: float = 0.0  # memory bandwidth: reading the KV cache adds kv_read_tokens * bytes / bandwidth

    def seconds(self, p: Pass) -> float:
        """Seconds of pass ``p`` at these rates (0 for a pass read from the cache)."""
        if p.cached:
            return 0.0
        if p.kind in ("extract", "readout"):
            return p.tokens / self.extract_tokens_per_s
        if p.kind == "generate":
            kv = p.kv_read_tokens * self.kv_bytes_per_token / (self.bandwidth_gbs * 1e9) if self.bandwidth_gbs else 0.0
            return p.forward_tokens / self.extract_tokens_per_s + p.decode_steps / self.decode_steps_per_s + kv
        if p.kind == "train":
            return p.tokens / self.train_tokens_per_s + p.forward_tokens / self.extract_tokens_per_s
        raise ValueError(f"unknown pass kind {p.kind!r}")

    def hours(self, book: NotebookEstimate) -> float:
        """Hours of a notebook: its passes and its model loads."""
        return (sum(self.seconds(p) for p in book.passes) + book.loads * self.model_load_s) / 3600


def load_rates(path: str | Path | None = None) -> dict:
    """The rate table ``{device: {precision: {...}}}`` of ``path`` (default: the shipped ``vaxis/run/rates.toml``)."""
    path = Path(path) if path else RATES_FILE
    if not path.exists():
        raise SystemExit(f"rate file {path} not found: pass --rates with a TOML file laid out as {RATES_FILE}")
    with open(path, "rb") as handle:
        try:
            return tomllib.load(handle)
        except tomllib.TOMLDecodeError as err:
            raise SystemExit(f"rate file {path} is not valid TOML ({err}); see {RATES_FILE} for the layout") from err


def rate_for(table: dict, gpu: str, quantization: str | None) -> Rate:
    """The row of device ``gpu`` for a profile's ``quantization`` ("4bit": ``nf4``; none: ``bf16``, or ``fp32``
    on a device without bf16); SystemExit naming the rows there are when it is missing or incomplete."""
    if gpu not in table:
        raise SystemExit(f"no rates for --gpu {gpu!r}: the rate file has {sorted(table)} (add a table [{gpu}.bf16])")
    rows = table[gpu]
    wanted = ["nf4"] if quantization == "4bit" else ["bf16", "fp32"]
    precision = next((p for p in wanted if p in rows), None)
    if precision is None:
        raise SystemExit(f"--gpu {gpu!r} has rates for {sorted(rows)}, not {' or '.join(wanted)}, which this profile "
                         f"needs (quantization {quantization or 'none'}): add [{gpu}.{wanted[0]}] or choose another GPU")  # fmt: skip
    row = rows[precision]
    missing = [k for k in _KEYS if k not in row]
    if missing:
        raise SystemExit(f"rates [{gpu}.{precision}] lack {missing}; every row needs {list(_KEYS)}")
    numbers = {k: float(row[k]) for k in _KEYS[1:]}
    if any(v <= 0 for v in numbers.values()):
        raise SystemExit(f"rates [{gpu}.{precision}]: every rate must be positive, got {numbers}")
    extras = {k: type_(row[k]) for k, type_ in (("generation_budget_tokens", int), ("kv_bytes_per_token", int),
                                                ("bandwidth_gbs", float)) if k in row}  # fmt: skip
    return Rate(gpu, precision, str(row["device"]), **numbers, source=str(row.get("source", "")), **extras)


# ------------------------------------------------------------------------------------------ the estimate


@dataclass
class Estimate:
    """Every selected notebook's passes, the rate row they are priced at, and the tokenizer used."""

    profile: str
    rate: Rate
    notebooks: list[NotebookEstimate]
    tokenizer_note: str = ""

    def hours(self) -> float:
        return sum(self.rate.hours(b) for b in self.notebooks)


def _tokenizer(cfg) -> tuple[object, str]:
    """The profile model's tokenizer (no weights) with its chat-template arguments, and a note. A hub model
    that cannot be reached and is not in the local cache is stood in for by the embedded model's tokenizer."""
    from ..core import hub, models

    kwargs = getattr(cfg, "chat_template_kwargs", None)
    if models.resolve(cfg.model)[0] == "hub":
        if hub.hub_reachable():
            try:
                tok = models.load_tokenizer(cfg.model, chat_template_kwargs=kwargs, quiet=True)
                return tok, f"Tokens are counted with the tokenizer of {cfg.model}."
            except models.ModelLoadError:  # HF_HUB_OFFLINE, a gated repository: the local cache, or a stand-in
                pass
        try:
            from transformers import AutoTokenizer

            from ..core.chat import bind_template_kwargs

            tok = AutoTokenizer.from_pretrained(models.resolve(cfg.model)[1], local_files_only=True)
            tok = models._prepare_tokenizer(tok, cfg.model)
            bind_template_kwargs(tok, kwargs, quiet=True)
            return tok, f"Tokens are counted with the tokenizer of {cfg.model} (from the local cache)."
        except (OSError, ValueError):
            stand_in = "smollm2-135m"
            tok = models.load_tokenizer(stand_in, chat_template_kwargs=kwargs, quiet=True)
            return tok, (f"Tokens are counted with the embedded {stand_in} tokenizer and chat template: {cfg.model}'s "
                         "tokenizer could not be loaded from the hub or the local cache (its counts will differ "
                         "somewhat).")  # fmt: skip
    tok = models.load_tokenizer(cfg.model, chat_template_kwargs=kwargs, quiet=True)
    return tok, f"Tokens are counted with the tokenizer of {cfg.model}."


def estimate(profile: str, only: list[str] | None = None, parameters: dict | None = None, gpu: str = "h200",
             rates: str | Path | None = None, run_dir: str | Path | None = None) -> Estimate:  # fmt: skip
    """The passes of the selected notebooks (``only``: numbers or names, as ``python -m vaxis run --only``) for
    ``profile`` with the ``-p`` ``parameters``, priced at row ``gpu`` of ``rates``. Every notebook up to the
    last selected one is mirrored (later ones read what earlier ones make; a pass an earlier notebook made is
    cached). ``run_dir``: a run folder whose ``value_axis.json`` names the main layer, which is otherwise
    unknown before notebook 03 has run."""
    from .estimate_adapters import nb07, nb08, nb09, nb10
    from .estimate_passes import Context, nb01, nb02, nb03, nb04, nb05, nb06
    from .estimate_planner import Planner
    from .notebooks import notebooks

    mirrors = {"01": nb01, "02": nb02, "03": nb03, "04": nb04, "05": nb05, "06": nb06, "07": nb07, "08": nb08,
               "09": nb09, "10": nb10}  # fmt: skip
    every, selected = notebooks(), {p.stem for p in notebooks(only)}
    ctx = Context(profile, {k: v for k, v in (parameters or {}).items() if k not in ("profile", "run_dir")}, every,
                  Path(run_dir) if run_dir else None)  # fmt: skip
    cfg = ctx.cfg("01")
    rate = rate_for(load_rates(rates), gpu, cfg.quantization)
    ctx.tok, note = _tokenizer(cfg)
    plan, books = Planner(ctx.tok, rate.device, rate.generation_budget_tokens), []
    last = max(p.name[:2] for p in every if p.stem in selected)
    for path in every:
        number = path.name[:2]
        if number > last:
            break
        if number not in mirrors:
            raise SystemExit(f"{path.name} has no mirror in vaxis.run.estimate_passes / estimate_adapters: add one")
        ctx.nb, plan.book, plan.model = number, NotebookEstimate(path.stem), "base"
        mirrors[number](ctx, plan)
        if path.stem in selected:
            books.append(plan.book)
    return Estimate(profile, rate, books, note)


def _n(value: float) -> str:
    return f"{value:,.0f}"


def markdown(est: Estimate) -> str:
    """Per notebook a table of its passes (grouped by kind and purpose), its model loads and hours; then a
    table of the notebooks and the total."""
    r = est.rate
    lines = [f"# What profile `{est.profile}` costs on {r.name} ({r.precision})", "",
             f"Rates: {r.extract_tokens_per_s:,.0f} forward tokens/s, {r.decode_steps_per_s:g} decode steps/s, "
             f"{r.train_tokens_per_s:,.0f} training tokens/s, {r.model_load_s:g} s a model load ({r.source}). "
             f"{est.tokenizer_note} Generation tokens are planned tokens (prompt + max_new_tokens "
             "per sequence) and decode steps max_new_tokens per batch: upper bounds, rows may stop early. A pass "
             "an earlier one already made is read from the cache (counted, no hours).", ""]  # fmt: skip
    head = "| kind | what | passes (cached) | sequences | tokens | batches | decode steps | optimizer steps | hours |"
    for book in est.notebooks:
        lines += [f"## {book.name}: {len(book.passes)} passes, {book.loads} model loads, {r.hours(book):.2f} h", ""]
        groups: dict[tuple, list[Pass]] = {}
        for p in book.passes:
            groups.setdefault((p.kind, p.what), []).append(p)
        if groups:
            lines += [head, "|---|---|---|---|---|---|---|---|---|"]
        for (kind, what), ps in groups.items():
            lines.append(f"| {kind} | {what} | {len(ps)} ({sum(p.cached for p in ps)}) | {_n(sum(p.sequences for p in ps))} "
                         f"| {_n(sum(p.tokens for p in ps))} | {_n(sum(p.batches for p in ps))} "
                         f"| {_n(sum(p.decode_steps for p in ps))} | {_n(sum(p.optimizer_steps for p in ps))} "
                         f"| {sum(r.seconds(p) for p in ps) / 3600:.2f} |")  # fmt: skip
        lines += [""] + [f"- {note}" for note in book.notes] + ([""] if book.notes else [])
    lines += ["## Total", "", "| notebook | passes | model loads | tokens | decode steps | optimizer steps | hours |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for b in est.notebooks:
        lines.append(f"| {b.name} | {len(b.passes)} | {b.loads} | {_n(sum(p.tokens for p in b.passes))} "
                     f"| {_n(sum(p.decode_steps for p in b.passes))} | {_n(sum(p.optimizer_steps for p in b.passes))} "
                     f"| {r.hours(b):.2f} |")  # fmt: skip
    books = est.notebooks
    lines.append(f"| all | {sum(len(b.passes) for b in books)} | {sum(b.loads for b in books)} "
                 f"| {_n(sum(p.tokens for b in books for p in b.passes))} "
                 f"| {_n(sum(p.decode_steps for b in books for p in b.passes))} "
                 f"| {_n(sum(p.optimizer_steps for b in books for p in b.passes))} | **{est.hours():.2f}** |")  # fmt: skip
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ against a real run


def load_timings(path: str | Path) -> dict:
    """A run's ``timings.json``, given the file or its run folder."""
    from ..core.timings import load_run_timings

    path = Path(path)
    return load_run_timings(path.parent if path.suffix == ".json" else path)


def _recorded_tokens(kind: str, record: dict, where: str) -> int:
    field_name = "planned_tokens" if kind == "generate" else "tokens"
    if field_name not in record or (kind != "train" and "sequences" not in record):
        raise SystemExit(f"{where}: a {kind} pass recorded without {field_name!r} and 'sequences' (a run made before "
                         "vaxis recorded planned sizes): rerun the notebook to compare it")  # fmt: skip
    return int(record[field_name])


def compare(est: Estimate, timings: dict, tolerance: float = TOLERANCE) -> list[str]:
    """Differences between an estimate and a real run's ``timings`` (:func:`load_timings`): per notebook and per
    recorded kind (extraction, generation, training), the number of passes must be equal and their tokens
    (generation: planned tokens) within ``tolerance``; adapters take the optimizer steps estimated. Returns one
    line per difference; ``[]`` when they agree."""
    problems = []
    recorded = timings.get("notebooks", {})
    for book in est.notebooks:
        entry = recorded.get(book.name)
        if entry is None:
            problems.append(f"{book.name}: not in the run's timings.json (compare with --only the notebooks it ran)")
            continue
        if entry.get("status") != "ok":
            problems.append(
                f"{book.name}: the run's notebook ended {entry.get('status')!r}, so its passes are incomplete"
            )
            continue
        for kind in RECORDED:
            mine = [p for p in book.passes if p.kind == kind]
            records = [r for r in entry.get("passes", []) if r.get("kind") == kind]
            theirs = [_recorded_tokens(kind, r, book.name) for r in records]
            want, got = sum(p.tokens for p in mine), sum(theirs)
            low = sum(p.tokens if p.tokens_low is None else p.tokens_low for p in mine)
            steps = [r.get("optimizer_steps") for r in records]
            if kind == "train" and len(mine) == len(theirs) and steps != [p.optimizer_steps for p in mine]:
                problems.append(f"{book.name}: train: optimizer steps estimated {[p.optimizer_steps for p in mine]}, "
                                f"run {steps}")  # fmt: skip
            if len(mine) != len(theirs):
                problems.append(f"{book.name}: {kind}: {len(mine)} passes estimated, {len(theirs)} in the run; tokens "
                                f"estimated {[p.tokens for p in mine]} ({[p.what for p in mine]}), run {theirs}")  # fmt: skip
            elif low < want and not low * (1 - tolerance) <= got <= want * (1 + tolerance):
                problems.append(f"{book.name}: {kind}: {_n(got)} tokens in the run, outside the estimated range "
                                f"{_n(low)}-{_n(want)} (tolerance {tolerance:.0%}); per pass estimated "
                                f"{[(p.tokens_low, p.tokens) for p in mine]}, run {theirs}")  # fmt: skip
            elif low == want and abs(want - got) > tolerance * max(got, 1):
                problems.append(f"{book.name}: {kind}: {_n(want)} tokens estimated, {_n(got)} in the run "
                                f"({(want - got) / max(got, 1):+.1%}; tolerance {tolerance:.0%}); per pass estimated "
                                f"{[p.tokens for p in mine]}, run {theirs}")  # fmt: skip
    return problems


def run_estimate(profile: str, only=None, parameters=None, gpu: str = "h200", rates=None, against=None,
                 run_dir=None) -> Estimate:  # fmt: skip
    """``python -m vaxis run --estimate``: print the estimate; with ``against`` (a run folder or its
    ``timings.json``) compare it with that run and SystemExit(1) with the differences when they disagree."""
    folder = None if against is None else (Path(against).parent if Path(against).suffix == ".json" else Path(against))
    est = estimate(profile, only, parameters, gpu, rates, run_dir=folder or run_dir)
    print(markdown(est), flush=True)
    if against is not None:
        problems = compare(est, load_timings(against))
        if problems:
            raise SystemExit(f"the estimate differs from the run in {against}:\n  " + "\n  ".join(problems))
        print(f"the estimate agrees with the run in {against}: per notebook the same extraction, generation and "
              f"training passes, tokens within {TOLERANCE:.0%}", flush=True)  # fmt: skip
    return est
