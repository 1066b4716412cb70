"""The native boundary (tokalign._native) and the typed stubs of the extensions (tokalign/_core.pyi, _cuda.pyi).

* every public name the built extension exports is in its stub and vice versa, and each function's and
  method's parameter names match the binding's signature (pybind11 writes it in the docstring);
* a missing extension is one line that says how to build it -- from the boundary, from a stage that needs
  it, and from the CLI (exit 2) -- simulated in a subprocess by blocking the import;
* :func:`tokalign._native.call` turns the bindings' input and runtime errors into TokalignError and leaves
  other exceptions alone.
"""
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tokalign import _core, _native
from tokalign.errors import TokalignError

ROOT = Path(__file__).resolve().parent.parent
_cuda, _ = _native.load("_cuda")


# ---- stubs ------------------------------------------------------------------------------------------------
def _stub(name: str) -> ast.Module:
    return ast.parse((ROOT / "tokalign" / (name + ".pyi")).read_text(encoding="utf-8"))


def _stub_names(tree: ast.Module) -> set:
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


def _public(module) -> set:
    return {n for n in dir(module) if not n.startswith("_")}


def _binding_params(fn) -> list:
    """Parameter names from pybind11's signature line ``name(a: T, b: U = ...) -> R`` (``self`` dropped)."""
    first = (fn.__doc__ or "").strip().splitlines()[0]
    inside = first[first.index("(") + 1:first.rindex(") ->")]
    depth, parts, cur = 0, [], ""
    for ch in inside:  # split on top-level commas only (annotations hold brackets)
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    names = [p.split(":")[0].split("=")[0].strip() for p in parts if p.strip()]
    return [n for n in names if n != "self"]


def _stub_params(node: ast.FunctionDef) -> list:
    return [a.arg for a in node.args.args if a.arg != "self"]


def _check_stub(module, name: str) -> None:
    tree = _stub(name)
    in_stub, in_module = _stub_names(tree), _public(module)
    assert in_module - in_stub == set(), "exported by tokalign.%s but missing from %s.pyi" % (name, name)
    assert in_stub - in_module == set(), "in %s.pyi but not exported by tokalign.%s" % (name, name)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            assert _stub_params(node) == _binding_params(getattr(module, node.name)), node.name
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            cls = getattr(module, node.name)
            stub_members = {m.name for m in node.body if isinstance(m, ast.FunctionDef)}
            public_members = {m for m in dir(cls) if not m.startswith("_")}
            assert public_members - stub_members == set(), "%s.%s members missing from the stub" % (name, node.name)
            for m in node.body:
                if isinstance(m, ast.FunctionDef) and m.name in ("__init__",) + tuple(public_members):
                    if isinstance(getattr(cls, m.name), property):
                        continue
                    assert _stub_params(m) == _binding_params(getattr(cls, m.name)), "%s.%s" % (node.name, m.name)


def test_core_stub_matches_the_extension():
    _check_stub(_core, "_core")


@pytest.mark.skipif(_cuda is None, reason="tokalign._cuda not built (no nvcc at install time)")
def test_cuda_stub_matches_the_extension():
    _check_stub(_cuda, "_cuda")


def test_stubs_are_package_data():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    line = next(x for x in text.splitlines() if x.startswith("tokalign = ["))
    assert '"*.pyi"' in line and '"py.typed"' in line
    assert (ROOT / "tokalign" / "py.typed").is_file()


# ---- a missing extension ----------------------------------------------------------------------------------
def _blocked(name: str, body: str, *args: str) -> subprocess.CompletedProcess:
    """Runs ``body`` in a fresh interpreter where ``import tokalign.<name>`` fails as if it was never built."""
    code = "import sys\nsys.modules[%r] = None\n%s" % ("tokalign." + name, body)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=str(ROOT),
                          timeout=300)


_REPORT = """
import json
from tokalign.errors import TokalignError
out = {}
def attempt(key, fn):
    try:
        fn()
        out[key] = None
    except TokalignError as exc:
        out[key] = str(exc)
def from_boundary():
    from tokalign._native import _core
def stage():
    import tokalign.align
attempt("boundary", from_boundary)
attempt("stage", stage)
from tokalign import _native
import fusion_train.merge.native as merge_native
out["load"] = list(_native.load("_core"))
out["merge_enabled"] = merge_native.enabled()
print(json.dumps(out))
"""


def test_missing_core_is_one_line_that_says_how_to_build():
    proc = _blocked("_core", _REPORT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in ("boundary", "stage"):
        msg = out[key]
        assert msg is not None and "\n" not in msg, key
        assert msg.startswith("tokalign._core is not built") and "pip install -e ." in msg, msg
    assert out["load"][0] is None and out["load"][1] == out["boundary"]
    assert out["merge_enabled"] is False  # the merge kernels fall back to torch instead of failing


def test_missing_core_from_the_cli_is_one_line_exit_2(tokenizers_dir):
    body = "from tokalign.cli import main\nsys.exit(main(sys.argv[1:]))"
    proc = _blocked("_core", body, "align", "--pivot", "gpt2", "--source", "gpt2", "--text", "Hello world",
                    "--tokenizer-dir", str(tokenizers_dir))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokalign: error: tokalign._core is not built"), proc.stderr
    assert "pip install -e ." in lines[0]


def test_missing_cuda_is_a_reason_not_an_error():
    body = ("from tokalign.device import cuda_available, resolve_device\n"
            "ok, reason = cuda_available()\n"
            "print(ok, resolve_device('auto'))\nprint(reason)")
    proc = _blocked("_cuda", body)
    assert proc.returncode == 0, proc.stderr
    first, reason = proc.stdout.strip().splitlines()
    assert first == "False cpu"
    assert reason.startswith("tokalign._cuda is not built (no nvcc at install time")


# ---- call ----------------------------------------------------------------------------------------------
def test_call_maps_binding_errors_to_one_line():
    with pytest.raises(TokalignError, match=r"^align: path_result: path must run from"):
        _native.call(_core.path_result, np.array([0, 1], np.int32), np.array([0, 0], np.int32), 3, 1, what="align")
    with pytest.raises(TokalignError, match=r"^levenshtein_pairs: ia and ib"):  # no prefix without `what`
        _native.call(_core.levenshtein_pairs, [b"a"], [b"b"], np.array([0, 0]), np.array([0]))
    with pytest.raises(TokalignError, match="incompatible function arguments"):  # pybind11's TypeError
        _native.call(_core.levenshtein, "not bytes", b"b")


def test_call_maps_runtime_errors_without_prefix_and_keeps_others():
    def fail(exc):
        raise exc

    with pytest.raises(TokalignError, match=r"^CUDA error: out of memory$"):
        _native.call(fail, RuntimeError("CUDA error: out of memory"), what="cuda")
    with pytest.raises(IndexError):  # not an input problem the boundary knows how to word
        _native.call(_core.levenshtein_pairs, [b"a"], [b"b"], np.array([0]), np.array([1]))
    assert _native.call(_core.levenshtein, b"kitten", b"sitting") == 3


def test_unknown_extension_names_fail_loudly():
    with pytest.raises(KeyError):
        _native.load("_gpu")
    with pytest.raises(AttributeError):
        _native.__getattr__("_gpu")


def test_no_module_imports_the_extensions_directly():
    """Stages reach _core / _cuda only through tokalign._native (stubs, the device probe and tests aside)."""
    direct = re.compile(r"^\s*(from\s+(\.+|tokalign\.?)\s*import\s+.*\b_(core|cuda)\b"
                        r"|from\s+(\.+|tokalign\.)_(core|cuda)\s+import|import\s+tokalign\._(core|cuda))")
    offenders = []
    for pkg in ("tokalign", "fusion_train"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path.name == "_native.py":
                continue
            for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if direct.search(line) and "_native" not in line:
                    offenders.append("%s:%d: %s" % (path.relative_to(ROOT), k, line.strip()))
    assert offenders == []
