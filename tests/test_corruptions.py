"""Code corruptions (METHOD.md section 4, "Code correctness"): each kind's invariants, offsets, determinism.

The fake ``check`` exec-s the code and runs assert statements in this process: acceptable here only
because both the solutions and the asserts are trusted, hand-written test code. The notebook uses the
sandbox (``vaxis.data.code.run_tests``), exercised by the last test when that module exists.
"""

from __future__ import annotations

import ast
import io
import tokenize

import pytest

from vaxis.experiments.corruptions import KINDS, Corruption, corrupt, first_difference, parses

SOLUTIONS = {
    "below_zero": (
        '''from typing import List


def below_zero(operations: List[int]) -> bool:
    """Whether the running balance ever drops below zero."""
    balance = 0
    for op in operations:
        balance += op
        if balance < 0:
            return True
    return False
''',
        "assert below_zero([1, 2, -4, 5]) is True\nassert below_zero([1, 2, 3]) is False\nassert not below_zero([])",
    ),
    "largest_divisor": (
        """def largest_divisor(n: int) -> int:
    for i in reversed(range(n)):
        if n % i == 0:
            return i
""",
        "assert largest_divisor(15) == 5\nassert largest_divisor(49) == 7\nassert largest_divisor(10) == 5",
    ),
    "count_pairs": (
        """def count_pairs(xs, target):
    def ok(a, b, *, total):
        return a + b == total

    seen = sorted(xs, key=abs)
    count = 0
    for i in range(len(seen)):
        for j in range(i + 1, len(seen)):
            if ok(seen[i], seen[j], total=target):
                count = count + 1
    return count
""",
        "assert count_pairs([1, 2, 3, 4], 5) == 2\nassert count_pairs([1, 1], 3) == 0\nassert count_pairs([2, 3, 0], 3) == 1",
    ),
    "mean_gap": (
        """def mean_gap(values):
    \"\"\"Mean of consecutive differences (é in a docstring: byte columns differ from characters).\"\"\"
    diffs = [b - a for a, b in zip(values, values[1:])]
    total = sum(diffs)
    return total / len(diffs)
""",
        "assert mean_gap([1, 3, 7]) == 3.0\nassert mean_gap([5, 2]) == -3.0",
    ),
}


def fake_check(tests: str):
    """``code -> passes`` by exec in-process (trusted test code only)."""

    def check(code: str) -> bool:
        env: dict = {}
        try:
            exec(compile(code, "<solution>", "exec"), env)  # noqa: S102 - trusted test code
            exec(compile(tests, "<tests>", "exec"), env)  # noqa: S102
        except Exception:
            return False
        return True

    return check


def name_tokens(code: str) -> set[str]:
    return {t.string for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type == tokenize.NAME}


def check_offset(original: str, c: Corruption) -> None:
    assert c.code != original
    assert c.bug_offset == first_difference(original, c.code)
    assert original[: c.bug_offset] == c.code[: c.bug_offset]
    assert original[c.bug_offset : c.bug_offset + 1] != c.code[c.bug_offset : c.bug_offset + 1]


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corruption_invariants(name, seed):
    code, tests = SOLUTIONS[name]
    check = fake_check(tests)
    assert check(code)
    out, report = corrupt(code, check, seed=seed)
    assert report.original_passes and report.entry_point == name
    by_kind = {c.kind: c for c in out}
    assert set(by_kind) == set(KINDS), report.rejected
    assert all(report.kept[k] == 1 for k in KINDS)
    for c in out:
        check_offset(code, c)
    assert parses(by_kind["logical"].code) and not check(by_kind["logical"].code)
    assert not parses(by_kind["syntax"].code)
    shuffled = by_kind["shuffled"].code
    assert not parses(shuffled) or not check(shuffled)
    assert sorted(shuffled.splitlines()) == sorted(code.splitlines())
    obf = by_kind["obfuscated"].code
    assert check(obf)
    func = [n for n in ast.parse(code).body if isinstance(n, ast.FunctionDef)][-1]
    renamed = {a.arg for a in ast.walk(func) if isinstance(a, ast.arg)}
    renamed |= {n.id for n in ast.walk(func) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    assert not renamed & name_tokens(obf), renamed & name_tokens(obf)
    assert name in name_tokens(obf)  # the function's own name is kept
    assert check(by_kind["harmless"].code)
    # the header and docstring stay ahead of the logical bug, the syntax error and the shuffle
    body = func.body[1:] if isinstance(func.body[0], ast.Expr) else func.body
    body_start = sum(len(line) for line in code.splitlines(keepends=True)[: body[0].lineno - 1])
    for kind in ("logical", "syntax", "shuffled"):
        assert by_kind[kind].bug_offset >= body_start, kind


def test_non_ascii_columns():
    # ast columns are UTF-8 bytes; the splice must land on the operator, not two characters off
    code = 'def h(x):\n    return len("éé") < x\n'
    out, _ = corrupt(code, fake_check("assert h(3) is True\nassert h(1) is False"), kinds=["logical", "syntax"])
    logical = next(c for c in out if c.kind == "logical")
    assert logical.code == 'def h(x):\n    return len("éé") >= x\n'
    assert logical.bug_offset == code.index("<")


def test_deterministic_and_seed_dependent():
    code, tests = SOLUTIONS["count_pairs"]
    check = fake_check(tests)
    a, _ = corrupt(code, check, seed=7)
    b, _ = corrupt(code, check, seed=7)
    assert a == b
    variants = {tuple(c.code for c in corrupt(code, check, seed=s)[0]) for s in range(6)}
    assert len(variants) > 1
    # one kind's draws do not depend on which other kinds run
    only = corrupt(code, check, seed=7, kinds=["shuffled"])[0]
    assert only == [c for c in a if c.kind == "shuffled"]


def test_format_kept_outside_the_edit():
    code, tests = SOLUTIONS["below_zero"]
    out, _ = corrupt(code, fake_check(tests), seed=0, kinds=["logical", "obfuscated"])
    for c in out:
        # text splices, not ast.unparse: the import block, blank lines and docstring are untouched
        assert c.code.startswith("from typing import List\n\n\ndef below_zero(")
        assert '    """Whether the running balance ever drops below zero."""\n' in c.code
    obf = next(c for c in out if c.kind == "obfuscated")
    assert "List[int]" in obf.code and obf.code.count("\n") == code.count("\n")


def test_external_keyword_arguments_and_attributes_not_renamed():
    code = """def f(key, items):
    out = sorted(items, key=key)
    out.sort(reverse=False)
    return out
"""
    check = fake_check("assert f(abs, [2, -3, 1]) == [-3, 1, 2]")
    out, report = corrupt(code, check, kinds=["obfuscated"])
    assert report.kept["obfuscated"] == 1
    obf = out[0].code
    assert "key=v0" in obf and "reverse=False" in obf and ".sort(" in obf
    assert obf.startswith("def f(v0, v1):")
    assert out[0].bug_offset == code.index("key")


def test_renamer_leaves_attribute_names_after_a_dot_and_builtins():
    """A check that accepts anything shows the renamer itself: ``count`` is an argument *and* a method name, ``list``
    a local that shadows a builtin; only the argument and the other locals are renamed."""
    code = """def f(items, count):
    total = 0
    for x in items:
        total += items.count(x) * count
    list = sorted(items)
    return total + len(list) + items .index(x)
"""
    out, report = corrupt(code, lambda c: True, kinds=["obfuscated"])
    assert report.kept["obfuscated"] == 1
    obf = out[0].code
    assert obf.startswith("def f(v0, v1):")
    assert "v0.count(v3) * v1" in obf  # the method after the dot keeps its name, the argument is renamed
    assert "list = sorted(v0)" in obf and "len(list)" in obf  # a builtin's name is never renamed, even as a local
    assert "v0 .index(v3)" in obf and "v2 += " in obf
    assert not {"items", "total", "x"} & name_tokens(obf)
    # and with the real check, the renamed code still passes
    kept, _ = corrupt(code, fake_check("assert f([1, 1, 2], 2) == 10 + 3 + 2"), kinds=["obfuscated"])
    assert kept and kept[0].code == obf


def test_logical_rejects_equivalent_mutants():
    code = """def g(x):
    y = x * 0
    return y
"""
    # every mutation is either a no-op or equivalent except the constant; a check that always passes rejects all
    out, report = corrupt(code, lambda c: True, kinds=["logical"])
    assert out == [] and report.kept["logical"] == 0
    assert any("equivalent mutant" in r for r in report.rejected["logical"])


def test_original_failing_yields_nothing():
    code, _ = SOLUTIONS["below_zero"]
    out, report = corrupt(code, lambda c: False)
    assert out == [] and not report.original_passes
    assert all(r == ["original fails check"] for r in report.rejected.values())


def test_errors():
    with pytest.raises(ValueError, match="unknown"):
        corrupt("def f():\n    return 1\n", lambda c: True, kinds=["nope"])
    with pytest.raises(ValueError, match="no top-level function"):
        corrupt("x = 1\n", lambda c: True)


def test_with_sandbox_if_available():
    code_mod = pytest.importorskip("vaxis.data.code")
    run_tests = getattr(code_mod, "run_tests", None)
    if run_tests is None:
        pytest.skip("vaxis.data.code.run_tests not there yet")
    code, tests = SOLUTIONS["largest_divisor"]
    out, report = corrupt(code, lambda c: run_tests(c, tests, entry_point="largest_divisor").passed, seed=0)
    assert report.original_passes
    kinds = {c.kind for c in out}
    assert {"logical", "syntax", "obfuscated"} <= kinds, report.rejected


def test_renamer_leaves_names_imported_inside_the_function():
    """A module imported inside the function keeps its name even where the function also binds it (the optional
    import pattern): renaming it would rename the module in the import statement too."""
    code = """def f(x):
    try:
        import json
    except ImportError:
        json = None
    y = json.dumps(x)
    return y
"""
    out, report = corrupt(code, lambda c: True, kinds=["obfuscated"])
    assert report.kept["obfuscated"] == 1
    obf = out[0].code
    assert "import json" in obf and "json = None" in obf and "json.dumps(v0)" in obf
    assert not {"x", "y"} & name_tokens(obf)
