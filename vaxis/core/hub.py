"""Reaching the Hugging Face hub, failing fast when it cannot be reached.

:func:`hub_offline` says which offline switch is set (``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``),
:func:`hub_reachable` whether a connection to the hub opens within seconds, and :func:`load_hub_dataset` loads a
dataset from the hub with an error that names what failed and what to do instead (used by the datasets of
:mod:`vaxis.data`; :func:`vaxis.core.models.load_model` checks the offline switch before downloading a model).
"""

from __future__ import annotations

import os


def hub_offline(variables=("HF_HUB_OFFLINE",)) -> str | None:
    """The first of ``variables`` set to a true value (``1``/``true``/``yes``/``on``), or None."""
    for var in variables:
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return var
    return None


def load_hub_dataset(dataset: str, what: str, error: type[Exception], hint: str, reachable=None, split: str = "train",
                     note: str = "it needs network access"):  # fmt: skip
    """``datasets.load_dataset(dataset, split=split)`` for a loader that fails fast offline: raises ``error``
    at once, its message naming ``what`` and ending in ``hint``, when ``HF_HUB_OFFLINE`` /
    ``HF_DATASETS_OFFLINE`` is set, when ``datasets`` (not a vaxis dependency) is missing, when the hub
    cannot be reached (``reachable()``, default :func:`hub_reachable`), or when loading fails (``note``
    says what it needs)."""
    var = hub_offline(("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if var is not None:
        raise error(
            f"{what} comes from the Hugging Face hub ({dataset}), which cannot be reached: {var} is set; {hint}"
        )
    try:
        from datasets import load_dataset
    except ImportError as err:
        raise error(f"{what} needs the `datasets` library to read {dataset} from the Hugging Face hub, which vaxis "
                    f"does not depend on (`pip install datasets`, plus network access); {hint}") from err  # fmt: skip
    if not (reachable or hub_reachable)():
        raise error(f"the Hugging Face hub cannot be reached from this machine (no connection within 3 s), so "
                    f"{dataset} cannot be loaded; {hint}")  # fmt: skip
    try:
        return load_dataset(dataset, split=split)
    except Exception as err:  # the hub raises many kinds (connection, gated, offline mode, not found)
        raise error(f"could not load {dataset} from the Hugging Face hub ({type(err).__name__}: {err}); {note}; "
                    f"{hint}") from err  # fmt: skip


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub (``HF_ENDPOINT`` or huggingface.co) opens within ``timeout``
    seconds, so an offline machine fails fast instead of waiting on a library's retries."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
