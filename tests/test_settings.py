"""tokalign.settings: the one table of TOKALIGN_* environment variables and its typed accessors.

* every ``TOKALIGN_*`` name in tokalign/, fusion_train/ and setup.py is declared, and every declared name is
  read somewhere (no stale rows); the build-time rows are exactly setup.py's;
* modules read them through the accessors, not ``os.environ`` (the store, owned elsewhere, is listed below
  until it switches);
* a bad value is a one-line TokalignError naming the variable; the README's table is the generated one.
"""
import re
from pathlib import Path

import pytest

from tokalign import settings
from tokalign.errors import TokalignError

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"TOKALIGN_[A-Z_]+\b")
# modules that still read their variables from os.environ (tokalign/store is being reworked in parallel)
READS_ENVIRON_DIRECTLY: set = set()


def _sources():
    for pkg in ("tokalign", "fusion_train"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path.name != "settings.py" or path.parent.name != "tokalign":
                yield path


def _names_in(paths) -> dict:
    found = {}
    for path in paths:
        for name in NAME.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name.rstrip("_"), str(path.relative_to(ROOT)))
    return found


def test_every_variable_in_the_code_is_declared():
    found = _names_in(list(_sources()) + [ROOT / "setup.py"])
    undeclared = {n: where for n, where in found.items() if n not in settings.SETTINGS}
    assert undeclared == {}, "declare these in tokalign/settings.py: %s" % undeclared
    stale = set(settings.SETTINGS) - set(found)
    assert stale == set(), "declared but read nowhere: %s" % sorted(stale)


def test_build_time_rows_are_setup_py_variables():
    in_setup = set(_names_in([ROOT / "setup.py"]))
    build_time = {s.name for s in settings.SETTINGS.values() if s.build_time}
    assert build_time == in_setup


def test_modules_read_through_the_accessors():
    direct = re.compile(r"(os\.environ(\.get)?\s*[\[(]\s*|os\.getenv\(\s*)[\"']TOKALIGN_")
    offenders = [rel for rel, p in ((str(p.relative_to(ROOT)), p) for p in _sources())
                 if direct.search(p.read_text(encoding="utf-8")) and rel not in READS_ENVIRON_DIRECTLY]
    assert offenders == []


def test_defaults_and_parsing(monkeypatch):
    for name in settings.SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert settings.get_int("TOKALIGN_DEVICE_INDEX") == 0
    assert settings.get_int("TOKALIGN_STORE_THREADS") is None  # the reader / writer decide
    assert settings.get_bool("TOKALIGN_MERGE_NATIVE") is True
    assert settings.get_bool("TOKALIGN_NATIVE") is False
    assert settings.get_path("TOKALIGN_TOKENIZER_DIR") is None
    assert settings.get_str("TOKALIGN_CUDA") == "auto"
    assert settings.get_str("TOKALIGN_CUDA_ARCHS") == "90"
    monkeypatch.setenv("TOKALIGN_DEVICE_INDEX", " 3 ")
    monkeypatch.setenv("TOKALIGN_MERGE_NATIVE", "Off")
    monkeypatch.setenv("TOKALIGN_STORE_DIRECT", "")  # empty: unset
    monkeypatch.setenv("TOKALIGN_TOKENIZER_DIR", "~/toks")
    monkeypatch.setenv("TOKALIGN_CUDA", "AUTO")
    assert settings.get_int("TOKALIGN_DEVICE_INDEX") == 3
    assert settings.get_bool("TOKALIGN_MERGE_NATIVE") is False
    assert settings.get_bool("TOKALIGN_STORE_DIRECT") is True
    assert settings.get_path("TOKALIGN_TOKENIZER_DIR") == Path("~/toks").expanduser()
    assert settings.get_str("TOKALIGN_CUDA") == "auto"


@pytest.mark.parametrize("name,value,reader", [
    ("TOKALIGN_DEVICE_INDEX", "first", settings.get_int),
    ("TOKALIGN_DEVICE_INDEX", "-1", settings.get_int),
    ("TOKALIGN_STORE_THREADS", "0", settings.get_int),
    ("TOKALIGN_STORE_THREADS", "2.5", settings.get_int),
    ("TOKALIGN_STORE_DIRECT", "maybe", settings.get_bool),
    ("TOKALIGN_MERGE_NATIVE", "2", settings.get_bool),
    ("TOKALIGN_CUDA", "sometimes", settings.get_str),
])
def test_bad_values_are_one_line_errors_naming_the_variable(monkeypatch, name, value, reader):
    monkeypatch.setenv(name, value)
    with pytest.raises(TokalignError) as exc:
        reader(name)
    msg = str(exc.value)
    assert msg.startswith(name + " ") and "\n" not in msg


def test_bad_values_reach_users_through_the_modules(monkeypatch):
    from fusion_train.merge import native
    from tokalign.device import device_index

    monkeypatch.setenv("TOKALIGN_DEVICE_INDEX", "gpu0")
    with pytest.raises(TokalignError, match=r"^TOKALIGN_DEVICE_INDEX must be an integer, got 'gpu0'$"):
        device_index()
    monkeypatch.setenv("TOKALIGN_MERGE_NATIVE", "maybe")
    with pytest.raises(TokalignError, match="TOKALIGN_MERGE_NATIVE"):
        native.enabled()
    monkeypatch.setenv("TOKALIGN_MERGE_NATIVE", "false")
    assert native.enabled() is False


def test_misuse_of_the_table_fails_loudly():
    with pytest.raises(KeyError, match="not declared"):
        settings.get_bool("TOKALIGN_NOT_A_SETTING")
    with pytest.raises(TypeError):
        settings.get_int("TOKALIGN_MERGE_NATIVE")  # a bool setting


def test_readme_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert settings.markdown_table() in readme, "regenerate README's table: python -m tokalign.settings"
    listed = re.findall(r"^\| `(TOKALIGN_[A-Z_]+)` \|", readme, flags=re.M)
    assert listed == list(settings.SETTINGS)
