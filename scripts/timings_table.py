"""Markdown tables of the time and memory of notebook runs, for benchmarks/RESULTS.md.

``python -m vaxis run`` writes ``<run_dir>/timings.json`` (vaxis.core.timings): per notebook its wall time,
status and heavy passes (tokens, seconds, peak GPU memory, peak RSS). This prints, for each run folder
given, the machine it ran on and one row per notebook: wall time, passes, tokens, tokens/s of the passes
that ran the model (cached passes left out), peak GPU memory, peak RSS::

    python scripts/timings_table.py runs/scale
    python scripts/timings_table.py runs/demo runs/scale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vaxis.core.timings import load_run_timings, markdown_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="folders written by `python -m vaxis run`")
    args = parser.parse_args(argv)
    tables = []
    for run_dir in args.run_dirs:
        try:
            data = load_run_timings(run_dir)
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(f"timings_table: {err}") from None
        tables.append(markdown_table(data, title=f"**{run_dir}**"))
    print("\n".join(tables), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
