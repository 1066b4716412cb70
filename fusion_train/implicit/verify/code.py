"""Pass/fail of a code response against its prompt's tests, run in a sandboxed subprocess
(``fusion-train score --verify code``).

The program is the response's extracted code followed by the prompt's ``tests`` (Python statements, usually
``assert``s); it passes when it exits 0 within the wall-clock timeout. Protection, outermost first (the
report of a scoring run says which layers were available):

* ``unshare --net --pid --fork --kill-child`` (util-linux; needs root or unprivileged user namespaces,
  then with ``--map-root-user``): no network interface but a downed loopback, and an own PID namespace:
  when the sandbox is killed the kernel kills every process left in it;
* a new session (process group) killed with SIGKILL on timeout (also where ``unshare`` is unavailable);
* :mod:`.sandbox_runner` inside the child: memory (RLIMIT_AS), CPU (RLIMIT_CPU), file size (RLIMIT_FSIZE),
  process count (RLIMIT_NPROC) limits; when run as root, the uid/gid of ``nobody``; an audit hook against
  sockets, new processes and writes outside the working directory;
* a fresh temporary working directory (owned by the sandbox user), removed afterwards; stdout/stderr go to
  files in it (capped by RLIMIT_FSIZE) and their tails come back.

A response that hangs, crashes, exhausts memory or is killed is a fail, never an error of the scorer.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["SandboxOptions", "extract_code", "run_sandboxed", "verify_code", "sandbox_layers", "SandboxResult"]

RUNNER = Path(__file__).with_name("sandbox_runner.py")
CODE_BLOCKS = ("all", "first", "last", "longest")
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


@dataclass
class SandboxOptions:
    """Limits of one run. ``timeout`` is wall-clock seconds; CPU time is capped at ``ceil(timeout)`` too.
    ``user`` is the account to drop to when running as root (``nobody``); ``network_namespace`` chooses
    whether to try ``unshare`` (``auto``: when it works here)."""

    timeout: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 64
    file_mb: int = 16
    user: str = "nobody"
    network_namespace: str = "auto"  # auto | never
    code_blocks: str = "all"
    output_chars: int = 2000
    python: Optional[str] = None  # None: the first of sys.executable, /usr/bin/python3 that works as ``user``


@dataclass
class SandboxResult:
    passed: bool
    verdict: str  # pass | fail (exit N) | timeout | killed by signal ...
    returncode: Optional[int]
    seconds: float
    stdout: str
    stderr: str


def extract_code(text: str, mode: str = "all") -> str:
    """The Python code in a response: its fenced blocks tagged python/py (or untagged) -- all joined, the
    first, the last or the longest (``mode``) -- or the whole text when it has no fence."""
    if mode not in CODE_BLOCKS:
        raise ValueError("code_blocks must be one of %s" % ", ".join(CODE_BLOCKS))
    blocks = [body for lang, body in _FENCE.findall(text) if lang.lower() in ("", "python", "py", "python3")]
    if not blocks:
        return text
    if mode == "first":
        return blocks[0]
    if mode == "last":
        return blocks[-1]
    if mode == "longest":
        return max(blocks, key=len)
    return "\n\n".join(blocks)


_LAYERS: Dict[str, Optional[List[str]]] = {}


def _namespace_prefix(mode: str) -> Optional[List[str]]:
    """The ``unshare`` command prefix that works on this machine (probed once), or None."""
    if mode == "never":
        return None
    if "prefix" in _LAYERS:
        return _LAYERS["prefix"]
    found = None
    exe = shutil.which("unshare")
    if exe:
        base = [exe, "--net", "--pid", "--fork", "--kill-child"]
        for candidate in (base, base[:1] + ["--map-root-user"] + base[1:]):
            try:
                ok = subprocess.run(candidate + ["true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, timeout=10).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            if ok:
                found = candidate
                break
    _LAYERS["prefix"] = found
    return found


def _user_ids(name: str) -> Tuple[Optional[int], Optional[int]]:
    if os.geteuid() != 0:
        return None, None
    import pwd

    try:
        entry = pwd.getpwnam(name)
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


_PROBE = "import json, re, math, collections, itertools, functools, heapq, fractions, socket, typing\n"


def _interpreter(options: "SandboxOptions") -> Tuple[str, bool]:
    """``(python, drop_privileges)``: an interpreter whose standard library the sandbox user can read (a
    Python installed under root's 0700 home cannot import anything once the uid is dropped), probed once.
    Where none can, the caller's interpreter runs without the uid drop (the report says so)."""
    if options.python:
        return options.python, True
    key = "python:" + options.user
    if key not in _LAYERS:
        chosen = (sys.executable, False)
        if _user_ids(options.user)[0] is None:
            chosen = (sys.executable, True)  # not root: nothing to drop
        else:
            for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
                if candidate and os.path.exists(candidate):
                    probe = SandboxOptions(timeout=20, user=options.user, python=candidate,
                                           network_namespace=options.network_namespace)
                    if run_sandboxed(_PROBE, probe).passed:
                        chosen = (candidate, True)
                        break
        _LAYERS[key] = [chosen[0], "drop" if chosen[1] else "keep"]  # type: ignore[assignment]
    python, drop = _LAYERS[key]  # type: ignore[misc]
    return python, drop == "drop"


def sandbox_layers(options: Optional[SandboxOptions] = None) -> Dict[str, object]:
    """Which protections a run gets here (for reports and docs)."""
    options = options or SandboxOptions()
    prefix = _namespace_prefix(options.network_namespace)
    python, drop = _interpreter(options)
    uid = _user_ids(options.user)[0] if drop else None
    return {
        "python": python,
        "namespaces": " ".join(prefix[1:]) if prefix else None,
        "network": "no network namespace (unshare --net)" if prefix else "audit hook blocks sockets",
        "user": ("uid %d (%s)" % (uid, options.user)) if uid is not None else (
            "the caller's own uid" + (" (root: no interpreter readable by %s)" % options.user
                                      if os.geteuid() == 0 else "")),
        "limits": {"wall_seconds": options.timeout, "memory_mb": options.memory_mb,
                   "max_processes": options.max_processes, "file_mb": options.file_mb},
        "audit_hook": "sockets, new processes, writes outside the working directory",
    }


def _tail(path: Path, chars: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4 * chars))
            return fh.read().decode("utf-8", "replace")[-chars:]
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_sandboxed(program: str, options: Optional[SandboxOptions] = None) -> SandboxResult:
    """Run ``program`` (Python source) in the sandbox; returns pass/fail, never raises for the program's
    behaviour."""
    options = options or SandboxOptions()
    python, drop = _interpreter(options)
    workdir = Path(tempfile.mkdtemp(prefix="fusion-verify-"))
    try:
        uid, gid = _user_ids(options.user) if drop else (None, None)
        (workdir / "solution.py").write_text(program, encoding="utf-8")
        out_path, err_path = workdir / ".stdout", workdir / ".stderr"
        if uid is not None:
            for p in (workdir, workdir / "solution.py"):
                os.chown(p, uid, gid)
        os.chmod(workdir, 0o700)
        cfg = {
            "workdir": str(workdir),
            "memory_bytes": options.memory_mb << 20,
            "cpu_seconds": max(1, int(options.timeout + 0.999)),
            "file_bytes": options.file_mb << 20,
            "max_processes": options.max_processes,
            "uid": uid,
            "gid": gid,
        }
        prefix = _namespace_prefix(options.network_namespace) or []
        cmd = prefix + [python, "-I", "-B", str(RUNNER), json.dumps(cfg)]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8",
               "PYTHONHASHSEED": "0"}
        start = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=str(workdir),
                                    env=env, start_new_session=True, close_fds=True)
            try:
                returncode: Optional[int] = proc.wait(timeout=options.timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out, returncode = True, None
            # whatever the program left behind in its process group goes too (the PID namespace, where there
            # is one, already took its processes with it)
            _kill_group(proc)
            if timed_out:
                proc.wait()
        seconds = time.monotonic() - start
        stdout, stderr = _tail(out_path, options.output_chars), _tail(err_path, options.output_chars)
        if timed_out:
            verdict = "timeout after %.1fs" % options.timeout
        elif returncode == 0:
            verdict = "pass"
        elif returncode is not None and returncode < 0:
            verdict = "killed by %s" % signal.Signals(-returncode).name
        else:
            last = [ln for ln in stderr.strip().splitlines() if ln.strip()]
            verdict = "fail (exit %s)%s" % (returncode, (": " + last[-1][:200]) if last else "")
        return SandboxResult(returncode == 0 and not timed_out, verdict, returncode, seconds, stdout, stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def build_program(text: str, tests: Sequence[str], code_blocks: str = "all") -> str:
    return extract_code(text, code_blocks).rstrip() + "\n\n\n# --- tests ---\n" + "\n".join(tests) + "\n"


def verify_code(text: str, tests: Sequence[str], options: Optional[SandboxOptions] = None) -> Tuple[bool, str]:
    """``(passed, verdict)`` of a response against its tests."""
    options = options or SandboxOptions()
    result = run_sandboxed(build_program(text, tests, options.code_blocks), options)
    return result.passed, result.verdict
