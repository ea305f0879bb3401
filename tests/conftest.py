"""Shared fixtures: tiny random models (seconds, offline) and the embedded SmolLM2."""

from __future__ import annotations

import pytest
import torch

from vaxis.core.tiny import tiny_model_and_tokenizer


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): a 3-block random Qwen3 with a ChatML byte-level BPE tokenizer."""
    torch.manual_seed(0)
    return tiny_model_and_tokenizer("qwen3", seed=0)


@pytest.fixture(scope="session")
def smol():
    """(model, tokenizer): the embedded SmolLM2-135M-Instruct (installed by `make install`)."""
    from vaxis.core.models import load_model

    return load_model("smollm2-135m", device="cpu")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """Point VAXIS_CACHE at a fresh folder (the embedded model folder is linked in)."""
    from vaxis.core.cache import cache_root

    real = cache_root()
    monkeypatch.setenv("VAXIS_CACHE", str(tmp_path / "cache"))
    models = real / "models"
    if models.exists():
        (tmp_path / "cache").mkdir()
        (tmp_path / "cache" / "models").symlink_to(models)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module's tests: the tiny models gain nothing from more, and on a shared CPU
    (another job running) spinning OpenMP threads make training many times slower. The count is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The notebooks' smoke run (tests/test_notebooks.py) and the nbval pass over notebooks/ that `make test` runs after
# it share one group: under pytest-xdist (`-n 2 --dist loadgroup`, as `make test` runs) they go to one worker, in
# this order, so that nbval reads the smoke run's passes and adapters from the cache instead of computing them a
# second time beside it; the other worker takes everything else.
NOTEBOOK_GROUP = "notebooks"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.startswith("notebooks/") or "test_smoke_run_of_all_notebooks" in item.nodeid:
            item.add_marker(pytest.mark.xdist_group(NOTEBOOK_GROUP))
