"""Where the shared tokenizers and corpora live (tests, benchmarks, examples).

``TOKALIGN_SHARED`` overrides the default ``../shared`` relative to the repository root.
"""
from pathlib import Path

from .settings import get_path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    return get_path("TOKALIGN_SHARED") or (REPO_ROOT.parent / "shared")


def shared_tokenizers() -> Path:
    return get_path("TOKALIGN_TOKENIZER_DIR") or shared_dir() / "tokenizers"


def shared_corpora() -> Path:
    return shared_dir() / "corpora"
