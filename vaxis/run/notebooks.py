"""The numbered notebooks a run executes (``notebooks/NN_name.ipynb``), read by the runner and by the estimate."""

from __future__ import annotations

from pathlib import Path

from .config import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def notebooks(only: list[str] | None = None, folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """Numbered notebooks in ``folder``, in order; ``only`` keeps those whose number
    (``"02"``) or name stem is listed."""
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = set(only)
        unknown = wanted - {p.name[:2] for p in found} - {p.stem for p in found}
        if unknown:
            raise SystemExit(f"no notebook numbered {sorted(unknown)}; have {[p.name for p in found]}")
        found = [p for p in found if p.name[:2] in wanted or p.stem in wanted]
    if not found:
        raise SystemExit(f"no numbered notebooks found in {folder}")
    return found
