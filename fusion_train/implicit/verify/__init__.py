"""Verifiers of ``fusion-train score --verify``: :mod:`.math` (final answer against the gold answer) and
:mod:`.code` (the prompt's tests in a sandboxed subprocess)."""
from .code import SandboxOptions, extract_code, run_sandboxed, sandbox_layers, verify_code
from .math import answers_match, extract_answer, verify_math

__all__ = ["SandboxOptions", "extract_code", "run_sandboxed", "sandbox_layers", "verify_code", "answers_match",
           "extract_answer", "verify_math"]
