"""Verifiers of ``fusion-train score``: math answer extraction / comparison and the code sandbox."""
from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from fusion_train.implicit.verify.code import SandboxOptions, extract_code, run_sandboxed, sandbox_layers, verify_code
from fusion_train.implicit.verify.math import answers_match, extract_answer, verify_math

TESTS = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]
TIMEOUT = 3.0


@pytest.mark.parametrize("text,answer", [
    ("so the result is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("\\boxed{x^{2}} and later \\boxed{42}", "42"),
    ("Adding up, the answer is 1,234. Done.", "1,234"),
    ("Janet makes 9 * 2 = 18.\n#### 18", "18"),
    ("first 3 then 7 and finally 12 apples", "12"),
    ("答案是 47", "47"),
    ("no digits here", None),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize("predicted,gold,same", [
    ("\\frac{1}{2}", "0.5", True), ("1/2", "\\dfrac{1}{2}", True), ("1,234", "1234", True), ("50\\%", "50", True),
    ("3e8", "3\\times 10^{8}", True), ("$18.00$", "18", True), ("x = 5", "5", True), ("17", "18", False),
    ("\\text{east}", "east", True), ("2.0001", "2", False),
])
def test_answers_match(predicted, gold, same):
    assert answers_match(predicted, gold) is same


def test_verify_math_on_gold_with_boxed_or_hashes():
    assert verify_math("It is \\boxed{1.6} cm", "s = \\boxed{1.6}")[0]
    assert verify_math("The answer is 18.", "She makes $18.\n#### 18")[0]
    assert verify_math("I do not know", "5") == (False, "no answer")


def test_extract_code_blocks():
    text = "Here:\n```python\ndef a():\n    return 1\n```\nand\n```\ndef b():\n    return 2\n```\n```bash\nls\n```"
    assert "def a" in extract_code(text) and "def b" in extract_code(text) and "ls" not in extract_code(text)
    assert extract_code(text, "first").startswith("def a") and extract_code(text, "last").startswith("def b")
    assert extract_code("def f(): pass") == "def f(): pass"


def _leftovers():
    """Processes still running the sandbox runner (nothing may outlive a run)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path("/proc", pid, "cmdline").read_bytes()
            except OSError:
                continue
            if b"sandbox_runner.py" in cmd:
                found.append(int(pid))
    return found


def _run(program, **kw):
    start = time.monotonic()
    result = run_sandboxed(program + "\n" + "\n".join(TESTS) + "\n", SandboxOptions(timeout=TIMEOUT, **kw))
    elapsed = time.monotonic() - start
    assert elapsed < TIMEOUT + 5, elapsed
    time.sleep(0.2)
    assert _leftovers() == []
    return result


def test_correct_solution_passes_wrong_fails():
    assert verify_code("```python\ndef add(a, b):\n    return a + b\n```", TESTS, SandboxOptions(timeout=TIMEOUT)) == (
        True, "pass")
    ok, verdict = verify_code("def add(a, b):\n    return a - b\n", TESTS, SandboxOptions(timeout=TIMEOUT))
    assert not ok and "AssertionError" in verdict
    ok, verdict = verify_code("def add(a, b) return", TESTS, SandboxOptions(timeout=TIMEOUT))
    assert not ok and "SyntaxError" in verdict


def test_infinite_loop_times_out():
    r = _run("def add(a, b):\n    while True:\n        pass")
    assert not r.passed and r.verdict.startswith("timeout")


@pytest.mark.parametrize("program", [
    "import os\nwhile True:\n    os.fork()",
    # past the audit hook: libc's fork through ctypes (the process limit and the PID namespace stop it)
    "import ctypes, time\nlibc = ctypes.CDLL(None)\nfor _ in range(500):\n    libc.fork()\ntime.sleep(60)",
    "import subprocess\nsubprocess.run(['sh', '-c', 'sleep 60 &'])",
])
def test_fork_bomb_fails_and_leaves_nothing(program):
    r = _run(program)
    assert not r.passed


def test_ten_gigabytes_fail():
    r = _run("x = bytearray(10 * 1024 ** 3)\ndef add(a, b):\n    return a + b")
    assert not r.passed and ("MemoryError" in r.verdict or "killed" in r.verdict)


def test_network_call_fails():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        r = _run("import socket\nsocket.create_connection(('127.0.0.1', %d), timeout=2).sendall(b'x')\n"
                 "def add(a, b):\n    return a + b" % port)
        assert not r.passed
        with pytest.raises(socket.timeout):
            server.accept()  # nobody connected
    finally:
        server.close()


def test_writes_outside_the_work_folder_fail(tmp_path):
    targets = [tmp_path / "escape.txt", Path("/tmp") / ("escape-%s.txt" % uuid.uuid4().hex)]
    for target in targets:
        for how in ("open(%r, 'w').write('x')", "import os\nos.close(os.open(%r, os.O_CREAT | os.O_WRONLY))",
                    "import pathlib\npathlib.Path(%r).write_text('x')"):
            r = _run((how % str(target)) + "\ndef add(a, b):\n    return a + b")
            assert not r.passed, (how, target)
            assert not target.exists()
    # inside its own folder a program may write
    r = _run("open('scratch.txt', 'w').write('x')\ndef add(a, b):\n    return a + b")
    assert r.passed


def test_layers_are_reported():
    layers = sandbox_layers(SandboxOptions(timeout=TIMEOUT))
    assert set(layers) >= {"python", "namespaces", "network", "user", "limits", "audit_hook"}
    if os.geteuid() == 0:
        assert layers["user"].startswith("uid ") or "root" in layers["user"]
