"""No command runs a model's custom code or unpickles a checkpoint unless the user asks.

transformers' defaults are not safe for a tool: ``trust_remote_code`` unset makes it *prompt* on a terminal
for a repository with ``auto_map`` (answering "y" runs the repository's Python), and ``use_safetensors`` unset
falls back to ``pytorch_model.bin`` (a pickle). So every ``from_pretrained`` call in the code base (library,
CLIs, benchmarks) passes ``trust_remote_code`` explicitly, and every model load passes ``use_safetensors``
too, the way test_dependencies.py checks imports.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("tokalign", "fusion_train", "benchmarks")
# loaders of weights (their from_pretrained may read a pickle); config / tokenizer loaders read no weights
WEIGHT_LOADERS = ("Model", "ForCausalLM", "PreTrainedModel")


def _calls():
    for pkg in SCANNED:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "from_pretrained"):
                    owner = ast.unparse(node.func.value)
                    keywords = {k.arg for k in node.keywords}
                    yield "%s:%d %s" % (path.relative_to(ROOT), node.lineno, owner), owner, keywords


def test_from_pretrained_calls_exist():
    # the scan must see the loaders it guards (a refactor that renames them must update this test)
    assert sum(1 for _ in _calls()) >= 3


def test_every_from_pretrained_is_explicit_about_remote_code():
    missing = [where for where, _, kw in _calls() if "trust_remote_code" not in kw]
    assert not missing, "from_pretrained without an explicit trust_remote_code=: %s" % missing


def test_every_model_load_is_explicit_about_pickles():
    missing = [where for where, owner, kw in _calls()
               if any(s in owner for s in WEIGHT_LOADERS) and "use_safetensors" not in kw]
    assert not missing, "model from_pretrained without an explicit use_safetensors=: %s" % missing
