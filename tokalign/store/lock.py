"""One writer per part: a lock file beside a local store (``X.zarr.part-00000.lock``), created atomically.

Two writers on one part (two ``dump-logits`` at once, a second ``remap`` into the same ``--out``) would both
"succeed" and interleave rows and commits. :meth:`PartLock.acquire` creates the lock file with ``O_CREAT |
O_EXCL`` (atomic on local filesystems) holding the owner's host, pid and start time; a second writer is refused
with those. A lock whose pid is no longer alive on this host is stale (the writer was killed): it is taken over
with a message. A lock from another host cannot be checked from here: the refusal says how to remove it.
Within one process a newer writer of the same part takes over from the older one (a notebook cell re-run
while the failed writer is still referenced, a test that simulates an interrupted run): the older writer is
marked superseded and refuses to write from then on, so the two never interleave either.

The file lies beside the store, not in it: zarr warns about every object in a store it does not know.
Stores on other fsspec filesystems (s3://, gs://, memory://) get no lock: object stores have no portable
create-if-absent; run one writer per part there (docs/store.md, "Integrity").
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

from ..errors import TokalignError


def lock_path(store_path: Path, part_name: str) -> Path:
    """``/data/x.zarr`` + ``part-00000`` -> ``/data/x.zarr.part-00000.lock``."""
    p = Path(store_path).expanduser().absolute()
    return p.parent / ("%s.%s.lock" % (p.name, part_name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user holds that pid
        return True
    except (OverflowError, ValueError):
        return False
    return True


#: locks this process holds, by lock path (a newer writer of the same part supersedes the older one)
_HELD: Dict[str, "PartLock"] = {}


class PartLock:
    """A held lock file; :meth:`release` removes it (only while it is still ours)."""

    def __init__(self, path: Path, token: str) -> None:
        self.path = path
        self.token = token
        #: True once a newer writer of this process took the part over: the holder must not write any more
        self.superseded = False

    @classmethod
    def acquire(cls, store_path: Path, part_name: str, where: str) -> "PartLock":
        path = lock_path(store_path, part_name)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex,
              "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "store": where, "part": part_name}
        for _ in range(3):  # a stale lock taken over, or one released while we looked: try again
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _read(path)
                if owner is None:  # released meanwhile
                    continue
                mine = _HELD.get(str(path))
                if mine is not None and owner.get("token") == mine.token:
                    mine.superseded = True  # an older writer of this process: it refuses to write from now on
                    _HELD.pop(str(path), None)
                    path.unlink(missing_ok=True)
                    continue
                if not _stale(owner):
                    raise TokalignError(_refusal(where, part_name, path, owner))
                if _read(path) == owner:  # still the stale one (not replaced by a writer that took it over)
                    path.unlink(missing_ok=True)
                    print("tokalign: %s/%s: taking over the stale lock %s of pid %s on %s (started %s; that "
                          "process is gone)" % (where, part_name, path, owner.get("pid"), owner.get("host"),
                                                owner.get("started_at")), file=sys.stderr)
                continue
            except OSError as exc:
                raise TokalignError("cannot create the writer lock %s for %s/%s (%s); check the folder's "
                                    "permissions" % (path, where, part_name, exc.strerror or exc)) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            lock = cls(path, me["token"])
            _HELD[str(path)] = lock
            return lock
        raise TokalignError("cannot take the writer lock %s for %s/%s: other writers keep taking it"
                            % (path, where, part_name))

    def release(self) -> None:
        if _HELD.get(str(self.path)) is self:
            _HELD.pop(str(self.path), None)
        owner = _read(self.path)
        if owner is not None and owner.get("token") == self.token:
            self.path.unlink(missing_ok=True)


def _read(path: Path) -> Optional[Dict[str, Any]]:
    """The lock's owner; None when the file is gone; {} when it is unreadable (written only in part)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _stale(owner: Dict[str, Any]) -> bool:
    pid = owner.get("pid")
    if owner.get("host") != socket.gethostname() or isinstance(pid, bool) or not isinstance(pid, int):
        return False  # cannot tell from here
    return not _alive(pid)


def _refusal(where: str, part_name: str, path: Path, owner: Dict[str, Any]) -> str:
    if not owner:
        return ("%s/%s is locked by %s, whose content is unreadable; if no writer is running, delete that file and "
                "retry" % (where, part_name, path))
    if owner.get("host") == socket.gethostname() and owner.get("pid") == os.getpid():
        return ("%s/%s is already being written by another writer of this process (since %s; lock %s): close or "
                "abort that writer first" % (where, part_name, owner.get("started_at"), path))
    if owner.get("host") == socket.gethostname():
        return ("%s/%s is being written by another process (pid %s on this host, since %s; lock %s): wait for it "
                "to finish, or stop it and resume" % (where, part_name, owner.get("pid"), owner.get("started_at"),
                                                      path))
    return ("%s/%s is locked by a writer on another host (%s, pid %s, since %s); if that writer is no longer "
            "running, delete %s and retry" % (where, part_name, owner.get("host"), owner.get("pid"),
                                              owner.get("started_at"), path))
