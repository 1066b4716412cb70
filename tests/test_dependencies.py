"""Every third-party package the code imports is declared in pyproject.toml.

A test run in a full development environment cannot notice a missing declaration (something else installs
the package: mergekit pulled in sentencepiece + protobuf, so a fresh `pip install .` lacked them while every
test passed). This reads the imports of tokalign/ and fusion_train/ (also the lazy ones inside functions)
and checks each against the core dependencies and the extras.
"""
from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tokalign", "fusion_train")
# modules whose own imports need a package they do not declare: sentencepiece's model protobuf
IMPLIED = {"sentencepiece": {"protobuf"}}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _declared():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in meta.get("dependencies", [])}
    extras = {_name(r) for reqs in meta.get("optional-dependencies", {}).values() for r in reqs}
    return core, extras


def _imported_modules():
    found = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    core, extras = _declared()
    dists = md.packages_distributions()
    missing = []
    for module, where in sorted(_imported_modules().items()):
        if module not in dists:
            continue  # not installed here: an optional import guarded at run time (the tests cannot resolve it)
        needed = {d.lower().replace("_", "-") for d in dists[module]} | IMPLIED.get(module, set())
        for dist in sorted(needed):
            if dist not in core and dist not in extras:
                missing.append("%s (imported as %r in %s)" % (dist, module, where))
    assert not missing, "not declared in pyproject.toml: " + "; ".join(missing)


def test_torch_stays_out_of_the_core_install():
    core, extras = _declared()
    assert "torch" not in core and "torch" in extras
