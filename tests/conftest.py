import os
from pathlib import Path

import pytest

from tokalign.paths import shared_corpora, shared_tokenizers

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tokenizers_dir() -> Path:
    d = shared_tokenizers()
    if not d.is_dir():
        pytest.skip("shared tokenizers not found at %s (set TOKALIGN_SHARED)" % d)
    return d


@pytest.fixture(scope="session")
def corpora_dir() -> Path:
    d = shared_corpora()
    if not d.is_dir():
        pytest.skip("shared corpora not found at %s (set TOKALIGN_SHARED)" % d)
    return d


@pytest.fixture()
def one_torch_thread():
    """torch on one thread for a test: tiny models gain nothing from threads, two threads oversubscribe a shared
    2-core machine (tests get ~20x slower), and one thread makes CPU results reproducible across processes.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
