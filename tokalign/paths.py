"""Where the shared tokenizers and corpora live (tests, benchmarks, examples).

``TOKALIGN_SHARED`` overrides the default ``../shared`` relative to the repository root.
"""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    env = os.environ.get("TOKALIGN_SHARED")
    return Path(env) if env else (REPO_ROOT.parent / "shared")


def shared_tokenizers() -> Path:
    return Path(os.environ.get("TOKALIGN_TOKENIZER_DIR") or shared_dir() / "tokenizers")


def shared_corpora() -> Path:
    return shared_dir() / "corpora"
