"""Verified corruptions of canonical code solutions (METHOD.md section 4, "Code correctness").

The paper prefills correct and corrupted solutions and compares the mean projection *after the bug*.
This module makes the corrupted versions from a canonical solution (a complete function definition)
and a ``check(code) -> bool`` (True when the code passes the problem's tests; in the notebook,
``lambda c: vaxis.data.code.run_tests(c, tests, entry_point).passed``), keeping only verified ones:

* ``logical``: one AST mutation (comparison negated ``<``<->``>=``, ``==``<->``!=``, ``in``<->``not in``,
  ``is``<->``is not``; an integer constant off by one; the operands of a non-commutative binary operator
  swapped; a returned local name replaced by another local or argument), the first applicable one in a
  seeded order. Kept if it parses, changes the AST, and fails ``check`` (equivalent mutants rejected).
* ``syntax``: delete a closing bracket or a colon, or insert a stray ``)``, at a seeded token. Kept if
  ``ast.parse`` fails (no ``check`` needed).
* ``shuffled``: the body's lines (after the ``def`` header and docstring) in a seeded random order. Kept
  if it does not parse or fails ``check``.
* ``obfuscated``: arguments and locals renamed to ``v0``, ``v1``... consistently. Kept if ``check`` passes.
* ``harmless`` (the null): one local renamed to another meaningful name or, failing that, a blank line
  inserted in the body. Kept if ``check`` passes.

Every edit is spliced into the original *text* (nodes located by their line/column, names by
``tokenize``), never ``ast.unparse``-d, so formatting is kept and ``bug_offset`` (the character offset
where the corrupted text first differs from the original, :func:`first_difference`) is where the
edit is. Mutations, syntax errors and shuffles touch only the target function's body after its
docstring. Deterministic for a given seed.

Limits: on Python < 3.12 names inside f-strings are one STRING token and are not renamed (the
renamed code then fails ``check`` and is rejected, with the reason). Names bound by ``import``,
declared ``global``/``nonlocal``, or equal to a builtin are never renamed; a keyword argument at a
call site is renamed only when the callee is the target function itself or a function defined in it.
"""

from __future__ import annotations

import ast
import builtins
import io
import os
import re
import tokenize
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

KINDS = ("logical", "syntax", "shuffled", "obfuscated", "harmless")
_NEGATE = {"<": ">=", ">=": "<", ">": "<=", "<=": ">", "==": "!=", "!=": "==", "in": "not in", "not in": "in"}
_NEGATE |= {"is": "is not", "is not": "is"}
_CMP_TEXT = {ast.Lt: "<", ast.GtE: ">=", ast.Gt: ">", ast.LtE: "<=", ast.Eq: "==", ast.NotEq: "!="}
_CMP_TEXT |= {ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}
_NON_COMMUTATIVE = (ast.Sub, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift, ast.MatMult)
_HARMLESS_NAMES = ("value", "result", "current", "total", "item", "temp", "acc", "output", "count", "answer")
_BUILTINS = frozenset(dir(builtins))
_Func = ast.FunctionDef | ast.AsyncFunctionDef
_Check = Callable[[str], bool]
_Rng = np.random.Generator
_Made = tuple[str, str] | None  # (corrupted code, description), or None when no candidate was kept


@dataclass(frozen=True)
class Corruption:
    """A verified corrupted (or, for ``harmless``, equivalent) version of a solution."""

    kind: str
    code: str
    bug_offset: int
    detail: str = ""


@dataclass
class CorruptionReport:
    """What was kept and rejected per kind, with reasons."""

    entry_point: str
    original_passes: bool
    kept: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    rejected: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})


def first_difference(a: str, b: str) -> int:
    """Character offset where ``a`` and ``b`` first differ (the common prefix's length)."""
    return len(os.path.commonprefix([a, b]))


def parses(code: str) -> bool:
    """Whether ``code`` is syntactically valid Python."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


class _Source:
    """Maps ast (line, UTF-8 byte column) and tokenize (line, character column) to string offsets."""

    def __init__(self, code: str):
        self.code = code
        self.lines = code.splitlines(keepends=True)
        self.starts = np.cumsum([0] + [len(line) for line in self.lines]).tolist()

    def char(self, lineno: int, col: int) -> int:
        return self.starts[lineno - 1] + col

    def node(self, lineno: int, col_bytes: int) -> int:
        line = self.lines[lineno - 1] if lineno <= len(self.lines) else ""
        return self.starts[lineno - 1] + len(line.encode()[:col_bytes].decode(errors="replace"))

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.node(node.lineno, node.col_offset), self.node(node.end_lineno, node.end_col_offset)


def _splice(code: str, start: int, end: int, new: str) -> str:
    return code[:start] + new + code[end:]


def _target(tree: ast.Module, entry_point: str | None) -> _Func:
    funcs = [n for n in tree.body if isinstance(n, _Func)]
    if entry_point is not None:
        funcs = [f for f in funcs if f.name == entry_point]
    if not funcs:
        raise ValueError(f"no top-level function {entry_point or ''} in the solution".replace("  ", " "))
    return funcs[-1]


def _body(func: _Func) -> list[ast.stmt]:
    """The function's statements after its docstring."""
    body = func.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        if isinstance(body[0].value.value, str):
            return body[1:]
    return body


def _bound_names(func: _Func) -> dict[str, bool]:
    """Names bound in ``func`` (arguments, locals, nested defs), name -> is an argument of ``func``.

    Excludes imports, global/nonlocal declarations, builtins and the function's own name.
    """
    excluded = {func.name} | _BUILTINS
    names: dict[str, bool] = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Global | ast.Nonlocal):
            excluded |= set(node.names)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            excluded |= {(a.asname or a.name).split(".")[0] for a in node.names}
    own_args = {a.arg for a in ast.walk(func.args) if isinstance(a, ast.arg)}
    for node in ast.walk(func):
        name = None
        if isinstance(node, ast.arg):
            name = node.arg
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            name = node.id
        elif isinstance(node, ast.ExceptHandler) and node.name:
            name = node.name
        elif isinstance(node, _Func | ast.ClassDef) and node is not func:
            name = node.name
        if name and name not in excluded:
            names[name] = name in own_args
    return names


def _rename(code: str, func: _Func, mapping: dict[str, str]) -> str:
    """Rename NAME tokens inside ``func`` by ``mapping``, by text replacement (formatting kept).

    Skips attributes (after ``.``) and keyword names at calls to functions not renamed consistently
    (callees other than ``func`` itself or functions defined in it).
    """
    src = _Source(code)
    lo, hi = src.span(func)
    local_funcs = {n.name for n in ast.walk(func) if isinstance(n, _Func)}
    keep: set[int] = set()
    for call in ast.walk(func):
        if isinstance(call, ast.Call):
            ours = isinstance(call.func, ast.Name) and call.func.id in local_funcs
            for kw in call.keywords:
                if kw.arg is not None and not ours:
                    keep.add(src.node(kw.lineno, kw.col_offset))
    edits = []
    prev = None
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.NAME and tok.string in mapping:
            at = src.char(*tok.start)
            if lo <= at < hi and at not in keep and not (prev is not None and prev.string == "."):
                edits.append((at, at + len(tok.string), mapping[tok.string]))
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            prev = tok
    for start, end, new in reversed(edits):
        code = _splice(code, start, end, new)
    return code


def _logical_candidates(
    src: _Source, func: _Func, names: dict[str, bool], rng: np.random.Generator
) -> list[tuple[int, int, str, str]]:
    """(start, end, replacement, description) for each applicable logical mutation in the body."""
    code = src.code
    out = []
    for node in (n for stmt in _body(func) for n in ast.walk(stmt)):
        if isinstance(node, ast.Compare):
            prev = node.left
            for op, right in zip(node.ops, node.comparators):
                a, b = src.span(prev)[1], src.span(right)[0]
                gap = code[a:b]
                old = _CMP_TEXT[type(op)]
                pattern = r"\s+".join(old.split()) if old[0].isalpha() else re.escape(old)
                m = re.search(rf"(?<![\w<>=!]){pattern}(?![\w<>=])", gap)
                if m:
                    desc = f"comparison {old!r} -> {_NEGATE[old]!r} (line {node.lineno})"
                    out.append((a + m.start(), a + m.end(), _NEGATE[old], desc))
                prev = right
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            new = node.value + 1 if node.value == 0 or rng.random() < 0.5 else node.value - 1
            s, e = src.span(node)
            out.append((s, e, str(new), f"constant {node.value} -> {new} (line {node.lineno})"))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, _NON_COMMUTATIVE):
            (ls, le), (rs, re_) = src.span(node.left), src.span(node.right)
            new = code[rs:re_] + code[le:rs] + code[ls:le]
            out.append((ls, re_, new, f"swapped operands of {type(node.op).__name__} (line {node.lineno})"))
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Name) and node.value.id in names:
            others = sorted(n for n in names if n != node.value.id)
            if others:
                other = others[int(rng.integers(len(others)))]
                s, e = src.span(node.value)
                out.append((s, e, other, f"return {node.value.id} -> {other} (line {node.lineno})"))
    return out


def _names_in_order(code: str, names: Iterable[str]) -> list[str]:
    """``names`` in order of first appearance as NAME tokens in ``code``."""
    wanted, seen = set(names), []
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.NAME and tok.string in wanted and tok.string not in seen:
            seen.append(tok.string)
    return seen


def _all_names(code: str) -> set[str]:
    return {t.string for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type == tokenize.NAME}


def _logical(code: str, func: _Func, check: _Check, rng: _Rng, max_checks: int, reasons: list[str]) -> _Made:
    src = _Source(code)
    candidates = _logical_candidates(src, func, _bound_names(func), rng)
    if not candidates:
        reasons.append("no applicable node")
    tree_dump = ast.dump(ast.parse(code))
    checks = 0
    for k in rng.permutation(len(candidates)):
        start, end, new, desc = candidates[k]
        mutated = _splice(code, start, end, new)
        if not parses(mutated):
            reasons.append(f"{desc}: does not parse")
        elif ast.dump(ast.parse(mutated)) == tree_dump:
            reasons.append(f"{desc}: no change to the AST")
        elif checks >= max_checks:
            reasons.append(f"check budget ({max_checks}) spent")
            break
        else:
            checks += 1
            if check(mutated):
                reasons.append(f"{desc}: passes check (equivalent mutant)")
            else:
                return mutated, desc
    return None


def _syntax(code: str, func: _Func, check: _Check, rng: _Rng, max_checks: int, reasons: list[str]) -> _Made:
    src, body = _Source(code), _body(func)
    lo, hi = (src.span(body[0])[0], src.span(func)[1]) if body else (0, 0)
    candidates = []
    for t in tokenize.generate_tokens(io.StringIO(code).readline):
        at = src.char(*t.start)
        if not lo <= at < hi:
            continue
        if t.type == tokenize.OP and t.string in (")", "]", "}", ":"):
            candidates.append((at, at + len(t.string), "", f"deleted {t.string!r} (line {t.start[0]})"))
        elif t.type == tokenize.NAME:
            end = at + len(t.string)
            candidates.append((end, end, ")", f"inserted ')' after {t.string!r} (line {t.start[0]})"))
    if not candidates:
        reasons.append("no token to edit in the body")
    for k in rng.permutation(len(candidates))[: max(max_checks, 20)]:
        start, end, new, desc = candidates[k]
        mutated = _splice(code, start, end, new)
        if not parses(mutated):
            return mutated, desc
        reasons.append(f"{desc}: still parses")
    return None


def _shuffled(code: str, func: _Func, check: _Check, rng: _Rng, max_checks: int, reasons: list[str]) -> _Made:
    body = _body(func)
    if not body or body[0].lineno == func.lineno:
        reasons.append("no body lines apart from the header")
        return None
    lines = code.splitlines(keepends=True)
    first, last = body[0].lineno - 1, func.end_lineno
    block = [line if line.endswith("\n") else line + "\n" for line in lines[first:last]]
    if len(set(block)) < 2:
        reasons.append("fewer than two distinct body lines")
        return None
    for _ in range(max_checks):
        order = rng.permutation(len(block))
        new_block = "".join(block[i] for i in order)
        if not lines[last - 1].endswith("\n") and last == len(lines):
            new_block = new_block[:-1]
        mutated = "".join(lines[:first]) + new_block + "".join(lines[last:])
        if mutated == code:
            reasons.append("shuffle left the text unchanged")
            continue
        if not parses(mutated):
            return mutated, "shuffled body lines (does not parse)"
        if not check(mutated):
            return mutated, "shuffled body lines (parses, fails check)"
        reasons.append("shuffled body passes check")
    return None


def _obfuscated(code: str, func: _Func, check: _Check, rng: _Rng, max_checks: int, reasons: list[str]) -> _Made:
    names = _names_in_order(code, _bound_names(func))
    if not names:
        reasons.append("no arguments or locals to rename")
        return None
    taken, fresh, i = _all_names(code), [], 0
    while len(fresh) < len(names):
        if f"v{i}" not in taken:
            fresh.append(f"v{i}")
        i += 1
    mapping = dict(zip(names, fresh))
    mutated = _rename(code, func, mapping)
    desc = ", ".join(f"{a}->{b}" for a, b in mapping.items())
    if not parses(mutated):
        reasons.append(f"{desc}: does not parse")
    elif not check(mutated):
        reasons.append(f"{desc}: fails check (e.g. a name in an f-string, or a keyword argument from the tests)")
    else:
        return mutated, f"renamed {desc}"
    return None


def _harmless(code: str, func: _Func, check: _Check, rng: _Rng, max_checks: int, reasons: list[str]) -> _Made:
    bound = _bound_names(func)
    locals_ = [n for n in _names_in_order(code, bound) if not bound[n]]
    taken = _all_names(code)
    pool = [n for n in _HARMLESS_NAMES if n not in taken]
    for k in rng.permutation(len(locals_))[: max(max_checks - 1, 1)]:
        if not pool:
            break
        old, new = locals_[k], pool[int(rng.integers(len(pool)))]
        mutated = _rename(code, func, {old: new})
        if parses(mutated) and check(mutated):
            return mutated, f"renamed local {old}->{new}"
        reasons.append(f"renamed local {old}->{new}: fails check or does not parse")
    body = _body(func)
    lines = code.splitlines(keepends=True)
    stmt_lines = [s.lineno for i, s in enumerate(body) if s.lineno > (body[i - 1].end_lineno if i else func.lineno)]
    if not stmt_lines:
        reasons.append("no statement on its own line for a blank line")
        return None
    at = stmt_lines[int(rng.integers(len(stmt_lines)))]
    mutated = "".join(lines[: at - 1]) + "\n" + "".join(lines[at - 1 :])
    if check(mutated):
        return mutated, f"blank line inserted before line {at}"
    reasons.append("blank line: fails check")
    return None


_MAKERS = dict(zip(KINDS, (_logical, _syntax, _shuffled, _obfuscated, _harmless)))


def corrupt(
    code: str,
    check: Callable[[str], bool],
    *,
    seed: int = 0,
    entry_point: str | None = None,
    kinds: Iterable[str] = KINDS,
    max_checks: int = 8,
) -> tuple[list[Corruption], CorruptionReport]:
    """Verified corruptions of one canonical solution, at most one per kind (see the module doc).

    ``code`` is the solution (a complete function definition, maybe with imports or helpers);
    ``check(code)`` is True when the code passes the problem's tests. The target function is
    ``entry_point`` or, when None, the last top-level function. ``max_checks`` bounds the calls to
    ``check`` per kind (each may run a sandboxed subprocess). Each kind draws from its own generator
    seeded by ``(seed, kind)``, so the result is deterministic and one kind does not shift another.
    If the original fails ``check``, nothing is produced and every kind records that reason.
    Raises ValueError for an unknown kind or a solution without the target function.
    """
    kinds = list(kinds)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown corruption kinds {sorted(unknown)}; known: {KINDS}")
    func = _target(ast.parse(code), entry_point)
    report = CorruptionReport(func.name, bool(check(code)))
    if not report.original_passes:
        for kind in kinds:
            report.rejected[kind].append("original fails check")
        return [], report
    out = []
    for kind in kinds:
        rng = np.random.default_rng([seed, KINDS.index(kind)])
        made = _MAKERS[kind](code, func, check, rng, max_checks, report.rejected[kind])
        if made is not None:
            mutated, detail = made
            out.append(Corruption(kind, mutated, first_difference(code, mutated), detail))
            report.kept[kind] += 1
    return out, report
