"""Content hashing and atomic file writes.

Everything vaxis computes and keeps on disk is keyed by a hash of what it was
computed from, and written to a temporary file first and moved into place with
``os.replace``, so an interrupted write never leaves a half-written file that a
later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

#: the repository's root (this file is vaxis/core/cache.py): data/, figures/ and runs/ live there
REPO_ROOT = Path(__file__).resolve().parents[2]


def stable_hash(obj, length: int = 16) -> str:
    """Hex SHA-256 of a JSON-serialisable object (keys sorted), truncated to ``length``."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def current_umask() -> int:
    """The process umask: from ``/proc/self/status`` where it exists (Linux; no side effect), else by
    setting and restoring it (not thread-safe, so only as the fallback)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path``.

    The temporary file lives in the same folder (so the move is atomic) and is
    removed if ``write`` fails. The file gets the permissions a plain ``open`` would give it
    (``0o666`` less the umask), not ``mkstemp``'s owner-only ``0o600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    return atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, records) -> Path:
    """Write ``records`` to ``path`` atomically as JSON Lines: one compact object per line, UTF-8, ``\\n``
    endings, key order as given (the shipped data files are written this way, byte for byte)."""
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def cache_root() -> Path:
    """vaxis's cache folder: ``$VAXIS_CACHE``, else ``$XDG_CACHE_HOME/vaxis``, else ``~/.cache/vaxis``."""
    if os.environ.get("VAXIS_CACHE"):
        return Path(os.environ["VAXIS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vaxis"


def cached_tensors(kind: str, key: dict, compute: Callable[[], dict], enabled: bool = True) -> dict:
    """``compute()`` (a flat ``{name: tensor}``), cached under ``<cache_root>/<kind>/<hash of key>.safetensors``:
    a later call with the same key reads the file instead of computing (atomic write, so a torn file
    is never read). ``key`` must name everything the tensors depend on."""
    import torch
    from safetensors.torch import load_file, save_file

    path = cache_root() / kind / f"{stable_hash(key, 24)}.safetensors"
    if enabled and path.exists():
        return load_file(str(path))
    out = compute()
    if enabled:
        atomic_write(path, lambda tmp: save_file({k: torch.as_tensor(v).contiguous() for k, v in out.items()}, tmp))
    return out


def read_jsonl(path: str | os.PathLike, error: type[Exception] = ValueError, where: str = "{path}:{n}"):
    """Each non-blank line of a JSON Lines file as ``(where, object)``. ``where`` (formatted with the
    file's ``path``, ``name`` and the line number ``n``) names the line and starts every error message;
    a line that is not JSON, or not a JSON object, raises ``error``."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            at = where.format(path=path, name=path.name, n=n)
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{at}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(obj, dict):
                raise error(f"{at}: expected a JSON object, got {type(obj).__name__}")
            yield at, obj
