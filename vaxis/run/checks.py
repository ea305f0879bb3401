"""Parameter checks that run before a notebook loads its model or starts any heavy work.

Every notebook's setup cell calls :func:`check_notebook` right after :func:`vaxis.resolve_config`: one call that
checks *all* of the notebook's parameters (the profile keys it reads through ``cfg[...]`` and its own parameters
such as ``strengths``, ``n_boot``, ``axis_path``) and the data they select (enough templates, problems, prompts and
games for the counts asked; known dataset names; fractions in range; non-empty lists; the outputs of earlier
notebooks it reads). Every problem found is listed in one :class:`ParameterError`, each with what to do;
``notes`` say where a notebook will do less than asked (a cap) without failing.

The checks live beside the code of each notebook (``check_parameters`` in the module the notebook uses; see
:data:`CHECKS`); :class:`Problems` holds the shared validators. ``python -m vaxis run --dry-run`` runs the same
checks for the profile and the ``-p`` parameters given (:func:`dry_run_check`), so they are found without running
anything.
"""

from __future__ import annotations

import ast
import importlib
import json
import math
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

#: notebook number -> the module whose ``check_parameters(cfg, **notebook_params)`` checks it
CHECKS = {
    1: "vaxis.experiments.games_checks",
    2: "vaxis.experiments.extraction_checks",
    3: "vaxis.experiments.axis_checks",
    4: "vaxis.experiments.confidence_checks",
    5: "vaxis.experiments.backtracking",
    6: "vaxis.experiments.coding",
    7: "vaxis.experiments.preferences",
    8: "vaxis.experiments.sft",
    9: "vaxis.experiments.wild",
    10: "vaxis.experiments.confound",
}
#: parameters every notebook's parameters cell has that :func:`vaxis.resolve_config` takes itself
RESOLVED = ("profile", "model", "quantization", "run_dir", "seed", "chat_template_kwargs")


class ParameterError(ValueError):
    """One or more parameters of a notebook cannot work; ``problems`` lists each with what to do."""

    def __init__(self, where: str, problems: Sequence[str]):
        self.where, self.problems = where, list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{where}: {len(self.problems)} problem(s) with the parameters, found before anything ran:\n{lines}\n"
            "Fix them in the notebook's parameters cell, with `python -m vaxis run -p NAME VALUE`, or in the "
            "profile (vaxis/profiles/<profile>.toml); `python -m vaxis run --profile P --dry-run` checks again."
        )


def _span(low, high) -> str:
    if high is None:
        return f" >= {low}"
    return f" from {low} to {high}"


class Problems:
    """The problems (:meth:`add`) and notes (:meth:`note`) found in one notebook's parameters.

    ``planned``: numbers of notebooks that run before this one in the same ``python -m vaxis run`` (a dry run),
    whose outputs need not exist yet; ``cwd``: the folder relative paths are read from (the notebook's own folder
    when the runner runs it; default: the current folder). :meth:`done` raises :class:`ParameterError` listing
    every problem, or returns the notes."""

    def __init__(self, where: str, cfg=None, planned: Iterable[int] = (), cwd=None):
        self.where, self.cfg, self.planned = where, cfg, set(planned)
        self.cwd = Path.cwd() if cwd is None else Path(cwd)
        self.errors: list[str] = []
        self.notes: list[str] = []

    @classmethod
    def for_notebook(cls, number: int, cfg, *, planned=(), cwd=None, processes=1, accelerate_config=None,
                     publish_figures=False) -> Problems:  # fmt: skip
        """A collector for notebook ``number`` with the parameters every notebook shares already checked."""
        p = cls(f"notebook {number:02d} ({cfg.profile} profile)", cfg, planned, cwd)
        if p.integer("processes", processes, 1) and accelerate_config is None:
            from ..core.distributed import DistributedError, check_processes

            try:
                check_processes(processes)
            except DistributedError as err:
                p.add(str(err))
        if accelerate_config is not None:
            p.file("accelerate_config", accelerate_config)
        p.flag("publish_figures", publish_figures)
        p.integer("shard_min_tokens", cfg.get("shard_min_tokens", 0), 0)
        return p

    # -- collecting

    def add(self, message: str) -> bool:
        self.errors.append(message)
        return False

    def note(self, message: str) -> None:
        self.notes.append(message)

    def done(self) -> list[str]:
        if self.errors:
            raise ParameterError(self.where, self.errors)
        return list(self.notes)

    # -- single values (each returns whether the value is fine, so a caller can go on with it)

    @staticmethod
    def whole(value) -> bool:
        """Whether ``value`` is a whole number (not a bool), e.g. before it bounds another count."""
        return isinstance(value, int) and not isinstance(value, bool)

    def integer(self, name: str, value, low: int = 1, high: int | None = None, fix: str = "") -> bool:
        if isinstance(value, bool) or not isinstance(value, int):
            return self.add(f"{name}={value!r}: give a whole number{_span(low, high)}{fix}")
        if value < low or (high is not None and value > high):
            return self.add(f"{name}={value}: give a whole number{_span(low, high)}{fix}")
        return True

    def number(self, name: str, value, low: float | None = None, positive: bool = False) -> bool:
        ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
        if not ok or (positive and value <= 0) or (low is not None and value < low):
            need = "a number > 0" if positive else "a number" + (f" >= {low}" if low is not None else "")
            return self.add(f"{name}={value!r}: give {need}")
        return True

    def fraction(self, name: str, value, high: float = 1.0, closed: bool = False) -> bool:
        ok = not isinstance(value, bool) and isinstance(value, (int, float))
        if not ok or not (0 < value < high or (closed and value == high)):
            end = f"{high:g}]" if closed else f"{high:g})"
            return self.add(f"{name}={value!r}: give a fraction in (0, {end}, e.g. 0.2")
        return True

    def flag(self, name: str, value) -> bool:
        return isinstance(value, bool) or self.add(f"{name}={value!r}: give True or False")

    def text(self, name: str, value) -> bool:
        return (isinstance(value, str) and bool(value.strip())) or self.add(
            f"{name}={value!r}: give a non-empty string"
        )

    def choice(self, name: str, value, options: Sequence) -> bool:
        if value not in options:
            return self.add(f"{name}={value!r} is not known: choose one of {list(options)}")
        return True

    def training(self, prefix: str, cfg) -> None:
        """``{prefix}_epochs``, ``_learning_rate``, ``_batch_size`` and ``_max_length`` of an adapter fine-tune, and
        the libraries it needs (the ``train`` extra)."""
        import importlib.util

        self.number(f"{prefix}_epochs", cfg[f"{prefix}_epochs"], positive=True)
        self.number(f"{prefix}_learning_rate", cfg[f"{prefix}_learning_rate"], positive=True)
        self.integer(f"{prefix}_batch_size", cfg[f"{prefix}_batch_size"], 1)
        self.integer(f"{prefix}_max_length", cfg[f"{prefix}_max_length"], 16)
        missing = [m for m in ("peft", "trl") if importlib.util.find_spec(m) is None]
        if missing:
            self.add(
                f"training adapters needs {' and '.join(missing)}, not installed here: `pip install 'vaxis[train]'`"
            )

    # -- lists

    def items(self, name: str, values, kind: type | tuple = str) -> list | None:
        """``values`` as a list when it is a non-empty list (or tuple) of ``kind``; else a problem and None."""
        if isinstance(values, (list, tuple)) and values:
            if all(isinstance(v, kind) and not isinstance(v, bool) for v in values):
                return list(values)
        what = "strings" if kind is str else "numbers" if kind == (int, float) else "whole numbers"
        self.add(f"{name}={values!r}: give a non-empty list of {what}")
        return None

    def numbers(self, name: str, values, zero: bool = False) -> list[float] | None:
        """A non-empty list of numbers as floats (``zero``: that includes 0, the unsteered reference; the list is
        returned even when it lacks 0, so values checked against it are checked too)."""
        got = self.items(name, values, (int, float))
        if got is None:
            return None
        if zero and 0 not in [float(v) for v in got]:
            self.add(f"{name}={values}: include 0, the unsteered run every effect is read against")
        return [float(v) for v in got]

    def subset(self, name: str, values, of, of_name: str) -> bool:
        if values is None or of is None:
            return False
        extra = [v for v in values if float(v) not in {float(s) for s in of}]
        if extra:
            return self.add(f"{name}: {extra} not among {of_name} {list(of)}: steering there is never run; "
                            f"use values of {of_name} (or add them to it)")  # fmt: skip
        return True

    def enough(self, name: str, asked: int, available: int, what: str, fix: str = "") -> bool:
        """``asked`` (already a valid int) must not exceed ``available``."""
        if asked > available:
            return self.add(f"{name}={asked}: only {available} {what}{fix or f'; ask for at most {available}'}")
        return True

    def cap(self, name: str, asked: int, available: int, what: str) -> None:
        """A count that is a cap: asking for more than there is runs on everything there is (a note)."""
        if asked > available:
            self.note(f"{name}={asked}: there are {available} {what}, so all {available} are used")

    # -- files and the outputs of earlier notebooks

    def path(self, value) -> Path:
        path = Path(str(value)).expanduser()
        return path if path.is_absolute() else self.cwd / path

    def relative(self, value) -> str:
        """Where a relative ``value`` is read from, for a message ("" for an absolute path)."""
        return "" if Path(str(value)).expanduser().is_absolute() else f" (a relative path is read from {self.cwd})"

    def file(self, name: str, value, folder: bool = False) -> Path | None:
        path = self.path(value)
        if folder and path.is_dir() or not folder and path.is_file():
            return path
        kind = "folder" if folder else "file"
        self.add(f"{name}={str(value)!r}: {kind} not found{self.relative(value)}; give an existing path")
        return None

    def made_by(self, path: Path, notebook: int, what: str) -> bool:
        """An output of an earlier notebook: fine when it exists or that notebook is planned before this one."""
        if notebook in self.planned or path.exists():
            return True
        return self.add(f"{path} ({what}) is missing: run notebook {notebook:02d} first with this run_dir "
                        f"(`python -m vaxis run --profile {getattr(self.cfg, 'profile', '...')} --only {notebook:02d}`)")  # fmt: skip

    def axis(self, axis_path, name: str = "axis_path") -> dict | None:
        """The sidecar of the axis the notebook reads: ``axis_path``, or (None) ``run_dir/value_axis`` of notebook
        03. None when it is missing (a problem), or not written yet (notebook 03 planned before)."""
        if axis_path is None:
            base = self.cfg.run_dir / "value_axis"
            if not self.made_by(base.with_suffix(".json"), 3, f"the value axis; or pass {name}"):
                return None
            if 3 in self.planned and not base.with_suffix(".json").exists():
                return None
        else:
            base = self.path(axis_path)
            base = base.with_suffix("") if base.suffix in {".safetensors", ".json"} else base
            missing = [p.name for p in (base.with_suffix(".safetensors"), base.with_suffix(".json")) if not p.exists()]
            if missing:
                self.add(f"{name}={str(axis_path)!r}: {', '.join(missing)} not found in {base.parent}"
                         f"{self.relative(axis_path)}; an axis is saved as <name>.safetensors plus <name>.json "
                         "(vaxis.Axis.save)")  # fmt: skip
                return None
        try:
            meta = json.loads(base.with_suffix(".json").read_text())
        except (OSError, ValueError) as err:
            self.add(f"{base.with_suffix('.json')}: not readable as an axis sidecar ({err})")
            return None
        if not isinstance(meta, dict) or meta.get("format") != "vaxis-axis/1" or "layers" not in meta:
            self.add(f"{base.with_suffix('.json')} is not a vaxis axis (format {meta.get('format')!r}): write one "
                     "with vaxis.Axis.save")  # fmt: skip
            return None
        return meta

    def layers_in_axis(self, name: str, layers, meta: dict | None) -> None:
        """Layers (a list of whole numbers >= 0); those the axis does not have are noted (they are skipped)."""
        got = self.items(name, layers, int)
        if got is None or any(v < 0 for v in got):
            if got is not None:
                self.add(f"{name}={layers}: residual indices are >= 0")
            return
        if meta is not None:
            absent = [v for v in got if v not in meta["layers"]]
            if absent:
                self.note(f"{name}: the axis has no layer {absent} (its layers: {meta['layers'][0]}..{meta['layers'][-1]}); "
                          "those are skipped")  # fmt: skip

    def attempt(self, what: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, or None with its ValueError / OSError as a problem (a loader that checks)."""
        try:
            return fn(*args, **kwargs)
        except (ValueError, OSError, RuntimeError) as err:
            self.add(f"{what}: {err}")
            return None


def check_function(number: int):
    """Notebook ``number``'s ``check_parameters`` function (see :data:`CHECKS`)."""
    if number not in CHECKS:
        raise ValueError(f"no notebook numbered {number}: checks exist for {sorted(CHECKS)}")
    return importlib.import_module(CHECKS[number]).check_parameters


def check_notebook(number: int, cfg, *, quiet: bool = False, **notebook_params) -> list[str]:
    """Check notebook ``number``'s parameters (``cfg`` from :func:`vaxis.resolve_config`, plus the notebook's own
    parameters by name) before anything heavy runs. Raises :class:`ParameterError` listing every problem; returns
    the notes (printed unless ``quiet``)."""
    notes = check_function(number)(cfg, **notebook_params)
    if not quiet:
        for n in notes:
            print(f"note: {n}", flush=True)
    return notes


# -- the dry run: the same checks with a notebook's parameter defaults, running nothing


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def resolve_overrides(notebook: Path) -> dict[str, str]:
    """``{notebook parameter: profile key}`` from the keyword arguments of the notebook's
    ``vaxis.resolve_config(...)`` call (e.g. ``{"dataset": "confidence_dataset"}`` in notebook 04)."""
    import nbformat

    out = {}
    for cell in nbformat.read(str(notebook), as_version=4).cells:
        if cell.cell_type != "code" or "resolve_config" not in cell.source:
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            func = getattr(node, "func", None)
            if isinstance(node, ast.Call) and getattr(func, "attr", getattr(func, "id", None)) == "resolve_config":
                out.update({k.value.id: k.arg for k in node.keywords
                            if k.arg not in RESOLVED and isinstance(k.value, ast.Name)})  # fmt: skip
    return out


def dry_run_check(notebook: Path, profile: str, params: dict, planned: Iterable[int] = ()) -> tuple[list, list]:
    """``(problems, notes)`` of notebook ``notebook``'s check for ``profile`` and the runner's ``params`` (``-p``
    values, ``run_dir``), every other parameter at its parameters cell's default (``papermill.inspect_notebook``;
    a default that is not a literal counts as None). ``planned``: notebooks that run before it. Runs nothing."""
    import papermill as pm

    from .config import resolve

    notebook = Path(notebook)
    defaults = {k: _literal(v["default"]) for k, v in pm.inspect_notebook(str(notebook)).items()}
    values = {**defaults, **{k: v for k, v in params.items() if k in defaults}}
    overrides = resolve_overrides(notebook)
    try:
        with tempfile.TemporaryDirectory(prefix="vaxis-dry-run-") as scratch:
            cfg = resolve(profile, model=values.get("model"), quantization=values.get("quantization"), run_dir=scratch,
                          seed=values.get("seed"), chat_template_kwargs=values.get("chat_template_kwargs"),
                          **{key: values.get(name) for name, key in overrides.items()})  # fmt: skip
    except (ValueError, TypeError) as err:
        return [f"{notebook.stem}: {err}"], []
    if values.get("run_dir"):
        cfg = replace(cfg, run_dir=Path(values["run_dir"]))
    own = {k: v for k, v in values.items() if k not in RESOLVED and k not in overrides}
    try:
        notes = check_notebook(int(notebook.name[:2]), cfg, quiet=True, planned=planned, cwd=notebook.parent, **own)
    except ParameterError as err:
        return [f"{notebook.stem}: {p}" for p in err.problems], []
    return [], [f"{notebook.stem}: {n}" for n in notes]
