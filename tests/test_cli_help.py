"""fusion-train's --help and argument errors come from a cached copy of the parser (tokalign.cli.parser_cache),
without importing torch; the copy prints the same help as the real parser and never decides what runs."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = r"""
import sys
from fusion_train.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("torch-imported=%s" % ("torch" in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def _run(cache, *argv):
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    return subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("argv", [("fuse", "--help"), ("merge", "--help"), ("--help",)])
def test_cached_help_equals_real_help_without_torch(tmp_path, argv):
    cold = _run(tmp_path, *argv)  # builds the real parser (imports torch for fuse) and caches it
    warm = _run(tmp_path, *argv)
    assert cold.returncode == warm.returncode == 0, cold.stderr
    assert warm.stdout == cold.stdout and "examples:" in warm.stdout
    assert "torch-imported=False" in warm.stderr


def test_cached_parser_rejects_bad_flags_without_torch(tmp_path):
    _run(tmp_path, "fuse", "--help")
    bad = _run(tmp_path, "fuse", "--model", "m", "--pivot-store", "p", "--output-dir", "o", "--no-such-flag")
    assert bad.returncode == 2 and "unrecognized arguments: --no-such-flag" in bad.stderr
    assert "torch-imported=False" in bad.stderr
    choice = _run(tmp_path, "fuse", "--model", "m", "--pivot-store", "p", "--output-dir", "o", "--tail", "nope")
    assert choice.returncode == 2 and "invalid choice: 'nope'" in choice.stderr
    assert "torch-imported=False" in choice.stderr


def test_a_command_line_that_parses_goes_to_the_real_parser(tmp_path):
    """A value the copy cannot check (a transformers bool flag) is checked by the real parser: still one clear
    error; plain float flags are checked by the copy already."""
    _run(tmp_path, "fuse", "--help")
    res = _run(tmp_path, "fuse", "--model", "m", "--pivot-store", "p", "--output-dir", "o", "--disable-tqdm", "maybe")
    assert res.returncode == 2 and "--disable-tqdm" in res.stderr and "torch-imported=True" in res.stderr
    res = _run(tmp_path, "fuse", "--model", "m", "--pivot-store", "p", "--output-dir", "o", "--learning-rate", "x")
    assert res.returncode == 2 and "invalid float value: 'x'" in res.stderr and "torch-imported=False" in res.stderr
