"""JSON Lines in and out: reading with ``file:line`` in every error, resumable appends, atomic writes.

Every stage reads and writes JSON Lines (docs/implicit.md). Reading never loads more than a line at a time;
a half-written last line (a run killed mid-write) is what :class:`Appender` cuts off before it appends, so a
resumed sampler continues exactly where the file's last complete line ends.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Tuple, Union

from tokalign.errors import TokalignError

__all__ = ["read_jsonl", "Appender", "write_jsonl_atomic", "write_json_atomic", "dumps"]

PathLike = Union[str, "os.PathLike[str]"]


def dumps(row: Dict[str, Any]) -> str:
    """One line: compact, UTF-8 kept as is, NaN refused (JSON has no NaN; a reader elsewhere would choke)."""
    return json.dumps(row, ensure_ascii=False, separators=(", ", ": "), allow_nan=False)


def _refuse_constant(name: str):
    raise ValueError("%s is not valid JSON" % name)


def read_jsonl(path: PathLike) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """Yield ``("FILE:LINE", object)`` for every non-blank line; a line that is not a JSON object, or holds
    NaN/Infinity, raises TokalignError naming ``FILE:LINE``."""
    path = Path(path)
    if not path.is_file():
        raise TokalignError("%s: no such file" % path)
    with open(path, "r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = "%s:%d" % (path, lineno)
            try:
                obj = json.loads(line, parse_constant=_refuse_constant)
            except ValueError as exc:
                raise TokalignError("%s: malformed JSON (%s)" % (where, str(exc).splitlines()[0])) from None
            if not isinstance(obj, dict):
                raise TokalignError("%s: expected a JSON object, got %s" % (where, type(obj).__name__))
            yield where, obj


class Appender:
    """Append rows to a JSON Lines file that may hold rows of an interrupted run.

    On open, a trailing partial line (no final newline: the writer was killed mid-line) is cut off, so the
    file holds only complete rows; :attr:`existing` lists them (as parsed objects) for the caller's resume
    logic. :meth:`write` appends whole lines and flushes them to the OS after each call (``fsync`` with
    ``durable=True``), so a SIGKILL loses at most the rows of the call in progress.
    """

    def __init__(self, path: PathLike, *, resume: bool = True, durable: bool = False) -> None:
        self.path = Path(path)
        self.durable = durable
        self.existing: List[Dict[str, Any]] = []
        if self.path.exists() and not resume:
            raise TokalignError("%s exists: pass --resume to continue it, or choose another --out" % self.path)
        if self.path.exists():
            self._cut_partial_line()
            self.existing = [obj for _, obj in read_jsonl(self.path)]
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def _cut_partial_line(self) -> None:
        with open(self.path, "rb+") as fh:
            data = fh.read()
            end = data.rfind(b"\n") + 1  # 0 when there is no complete line at all
            if end != len(data):
                fh.truncate(end)

    def write(self, rows: Iterable[Dict[str, Any]]) -> int:
        lines = [dumps(r) + "\n" for r in rows]
        if lines:
            self._fh.write("".join(lines))
            self._fh.flush()
            if self.durable:
                os.fsync(self._fh.fileno())
        return len(lines)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "Appender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_jsonl_atomic(path: PathLike, rows: Iterable[Dict[str, Any]]) -> int:
    """Write all rows to ``path`` through a temporary file renamed over it at the end: an error (bad input
    found late, a full disk) leaves any previous file untouched. Returns the number of rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(dumps(row) + "\n")
                n += 1
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n


def write_json_atomic(path: PathLike, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
