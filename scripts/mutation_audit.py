"""Mutation audit: apply small deliberate bugs one at a time and check that a test notices each.

Each mutation in the list (default ``scripts/mutations.toml``) names a file, an exact snippet that occurs once in
it, its replacement, and the tests to run. The audit copies the working tree (tracked and untracked, not ignored
files) into a temporary folder, checks that every listed test passes there unmutated, then for each mutation
writes the bug, runs its tests, and restores the file. A mutation is *killed* when a test fails, *alive* when
every test passes. The checkout itself is never written.

    python scripts/mutation_audit.py                      # every mutation
    python scripts/mutation_audit.py --only nulls-side,dz  # some of them
    python scripts/mutation_audit.py --out runs/mutations.json

Exit status 1 when the share alive exceeds ``--max-alive`` (default 0.10), 2 on a malformed list (a snippet
that does not occur exactly once) or a baseline that fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def load(path: Path, only: set[str] | None) -> list[dict]:
    items = tomllib.loads(path.read_text())["mutation"]
    ids = [m["id"] for m in items]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{path}: duplicate mutation ids")
    if only:
        missing = only - set(ids)
        if missing:
            raise SystemExit(f"unknown mutation ids: {sorted(missing)}")
        items = [m for m in items if m["id"] in only]
    return items


def copy_tree(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def check_snippets(root: Path, items: list[dict]) -> None:
    bad = []
    for m in items:
        text = (root / m["file"]).read_text()
        if text.count(m["old"]) != 1:
            bad.append(f"{m['id']}: {m['file']} has the snippet {text.count(m['old'])} times (needs exactly 1)")
    if bad:
        raise SystemExit("malformed mutation list:\n  " + "\n  ".join(bad))


def run_tests(root: Path, tests: list[str], timeout: float) -> tuple[int, float]:
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]
    start = time.perf_counter()
    try:
        rc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        rc = -1
    return rc, time.perf_counter() - start


def audit(items: list[dict], timeout: float) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="vaxis-mutants-") as tmp:
        root = Path(tmp)
        copy_tree(root)
        check_snippets(root, items)
        probe = subprocess.run([sys.executable, "-c", "import vaxis; print(vaxis.__file__)"], cwd=root,
                               env=dict(os.environ, PYTHONPATH=str(root)), capture_output=True, text=True)  # fmt: skip
        if not probe.stdout.strip().startswith(str(root)):
            raise SystemExit(f"the copy's vaxis is not the one imported ({probe.stdout.strip()}{probe.stderr})")
        for tests in sorted({tuple(m["tests"]) for m in items}):
            rc, _ = run_tests(root, list(tests), timeout)
            if rc != 0:
                raise SystemExit(f"baseline fails (rc {rc}) for {' '.join(tests)}: fix the tests first")
        results = []
        for m in items:
            path = root / m["file"]
            original = path.read_text()
            path.write_text(original.replace(m["old"], m["new"], 1))
            try:
                rc, wall = run_tests(root, m["tests"], timeout)
            finally:
                path.write_text(original)
            state = "alive" if rc == 0 else "timeout" if rc == -1 else "killed"
            results.append({"id": m["id"], "file": m["file"], "what": m.get("what", ""), "state": state,
                            "seconds": round(wall, 1)})  # fmt: skip
            print(f"{state:7s} {m['id']:32s} {wall:6.1f} s  {m.get('what', '')}", flush=True)
        return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--list", default=str(REPO / "scripts" / "mutations.toml"), help="the mutation list (TOML)")
    p.add_argument("--only", default=None, help="comma-separated mutation ids")
    p.add_argument("--timeout", type=float, default=600, help="seconds per test run (a timeout counts as killed)")
    p.add_argument("--max-alive", type=float, default=0.10, help="largest share of mutations left alive")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    items = load(Path(args.list), only)
    results = audit(items, args.timeout)
    alive = [r for r in results if r["state"] == "alive"]
    share = len(alive) / max(len(results), 1)
    print(f"\n{len(alive)} of {len(results)} mutations alive ({share:.0%}); limit {args.max_alive:.0%}")
    for r in alive:
        print(f"  alive: {r['id']} ({r['file']}): {r['what']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"results": results, "alive_share": share}, indent=1))
    return 1 if share > args.max_alive else 0


if __name__ == "__main__":
    sys.exit(main())
