"""Read corpora for alignment and dumping: JSON Lines with ``messages`` or ``text``, or plain text files.

Formats (chosen by extension: ``.jsonl`` / ``.json`` are JSON Lines, anything else is plain text):

* JSON Lines, one object per line, with ``messages`` (``[{"role": "user"|"assistant"|"system", "content": str}]``)
  or ``text`` (str). The sample id is the ``id`` field when present, else ``<file>:<line>``.
* Plain text: one item per non-empty line, id ``<file>:<line>``.

Rendering of ``messages``:

* ``template="plain"``: the turn contents joined by ``"\\n\\n"``;
* ``template="chat"``: the tokenizer's chat template (``Tokenizer.apply_chat_template``);
* ``assistant_only=True`` (plain only): just the assistant turns, joined by ``"\\n\\n"`` -- FuseChat aligns
  the responses. Items without turns (``text`` objects, plain-text lines) are yielded unchanged.

Every item carries ``assistant_spans``: character spans of the assistant contents in ``text`` (found by
searching the rendered text in order; a turn the template altered, e.g. trimmed, is left out).

Bad input raises :class:`~tokalign.errors.TokalignError` naming ``file:line`` (invalid JSON, not UTF-8, no
``messages``/``text``, empty or malformed ``messages``); with ``skip_bad=True`` such lines are skipped and
counted in :class:`CorpusStats`. ``builtin:sample`` names the small corpus shipped in ``tokalign/data``.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .errors import TokalignError

BUILTIN_PREFIX = "builtin:"
DATA_DIR = Path(__file__).resolve().parent / "data"
BUILTIN = {"sample": DATA_DIR / "sample.jsonl"}
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PathSpec = Union[str, "os.PathLike[str]"]


@dataclass
class CorpusItem:
    """One text to tokenize."""

    sample_id: str
    text: str
    file: str
    line: int
    messages: Optional[List[Dict[str, str]]] = None
    assistant_spans: List[Tuple[int, int]] = field(default_factory=list)


@dataclass
class CorpusStats:
    """Counts gathered while iterating (skips are only possible with ``skip_bad=True``)."""

    items: int = 0
    skipped_bad_json: int = 0
    skipped_bad_utf8: int = 0
    skipped_bad_schema: int = 0
    skipped_empty: int = 0
    truncated: int = 0
    chars: int = 0
    synthesized_ids: int = 0  # items without an "id" field: their id is "file:line", which other files never share

    @property
    def skipped(self) -> int:
        return self.skipped_bad_json + self.skipped_bad_utf8 + self.skipped_bad_schema + self.skipped_empty

    def summary(self) -> str:
        return ("%d items, %d chars; skipped %d (bad JSON %d, bad UTF-8 %d, bad fields %d, empty %d); truncated %d"
                % (self.items, self.chars, self.skipped, self.skipped_bad_json, self.skipped_bad_utf8,
                   self.skipped_bad_schema, self.skipped_empty, self.truncated))


def file_sha256(path: PathSpec) -> str:
    """sha256 hex of a file's bytes (corpus provenance)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_paths(spec: Union[PathSpec, Sequence[PathSpec]]) -> List[Path]:
    """Expand ``builtin:<name>``, globs and directories (their ``*.jsonl``/``*.json``/``*.txt``) into files."""
    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not specs:
        raise TokalignError("no corpus files given")
    out: List[Path] = []
    for s in specs:
        s = os.fspath(s)
        if s.startswith(BUILTIN_PREFIX):
            name = s[len(BUILTIN_PREFIX):]
            if name not in BUILTIN:
                raise TokalignError("unknown built-in corpus %r (have: %s)"
                                    % (s, ", ".join(BUILTIN_PREFIX + k for k in BUILTIN)))
            out.append(BUILTIN[name])
            continue
        if any(c in s for c in "*?["):
            hits = sorted(glob.glob(os.path.expanduser(s), recursive=True))
            files = [Path(h) for h in hits if os.path.isfile(h)]
            if not files:
                raise TokalignError("%s: no files match" % s)
            out.extend(files)
            continue
        p = Path(s).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in JSONL_SUFFIXES + (".txt",))
            if not files:
                raise TokalignError("%s: directory has no .jsonl/.json/.txt files" % p)
            out.extend(files)
        elif p.is_file():
            out.append(p)
        else:
            raise TokalignError("%s: no such corpus file" % s)
    return out


class _BadLine(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _check_messages(msgs, where: str) -> List[Dict[str, str]]:
    if not isinstance(msgs, list):
        raise _BadLine("schema", "%s: 'messages' must be a list" % where)
    if not msgs:
        raise _BadLine("schema", "%s: 'messages' is empty" % where)
    out = []
    for k, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise _BadLine("schema", "%s: messages[%d] is not an object" % (where, k))
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str):
            raise _BadLine("schema", "%s: messages[%d].role missing or not a string" % (where, k))
        if not isinstance(content, str):
            raise _BadLine("schema", "%s: messages[%d].content missing or not a string" % (where, k))
        out.append({"role": role, "content": content})
    return out


def _render_plain(msgs: List[Dict[str, str]], assistant_only: bool) -> Tuple[str, List[Tuple[int, int]]]:
    parts: List[str] = []
    spans: List[Tuple[int, int]] = []
    pos = 0
    for m in msgs:
        if (assistant_only and m["role"] != "assistant") or not m["content"]:
            continue  # empty turns add no text (and no blank-line separator)
        if parts:
            pos += 2  # "\n\n"
        if m["role"] == "assistant":
            spans.append((pos, pos + len(m["content"])))
        parts.append(m["content"])
        pos += len(m["content"])
    return "\n\n".join(parts), spans


def _find_spans(text: str, msgs: List[Dict[str, str]]) -> List[Tuple[int, int]]:
    spans = []
    cursor = 0
    for m in msgs:
        c = m["content"]
        if not c:
            continue
        i = text.find(c, cursor)
        if i < 0:
            continue
        if m["role"] == "assistant":
            spans.append((i, i + len(c)))
        cursor = i + len(c)
    return spans


class Corpus:
    """Iterable over :class:`CorpusItem` of one or more files (see the module docstring).

    >>> for item in Corpus("builtin:sample", assistant_only=True):
    ...     pass
    """

    def __init__(self, paths: Union[PathSpec, Sequence[PathSpec]], *, template: str = "plain", tokenizer=None,
                 assistant_only: bool = False, max_chars: Optional[int] = None, skip_bad: bool = False):
        if template not in ("plain", "chat"):
            raise TokalignError("template must be 'plain' or 'chat', not %r" % template)
        if template == "chat" and tokenizer is None:
            raise TokalignError("template='chat' needs a tokenizer (its chat template renders the messages)")
        if template == "chat" and assistant_only:
            raise TokalignError("assistant_only applies to template='plain' (a chat template renders whole "
                                "conversations; use CorpusItem.assistant_spans to find the responses)")
        if max_chars is not None and max_chars <= 0:
            raise TokalignError("max_chars must be positive, not %r" % max_chars)
        self.files = resolve_paths(paths)
        self.template = template
        self.tokenizer = tokenizer
        self.assistant_only = assistant_only
        self.max_chars = max_chars
        self.skip_bad = skip_bad
        self.stats = CorpusStats()

    def provenance(self) -> List[Dict[str, object]]:
        """``[{"path", "sha256", "bytes"}]`` for every file (record it next to what is built from the corpus)."""
        return [{"path": str(f), "sha256": file_sha256(f), "bytes": f.stat().st_size} for f in self.files]

    def __iter__(self) -> Iterator[CorpusItem]:
        self.stats = CorpusStats()
        for f in self.files:
            yield from self._iter_file(f)

    def texts(self) -> Iterator[str]:
        for item in self:
            yield item.text

    # ------------------------------------------------------------------------------------------------
    def _bad(self, kind: str, message: str) -> None:
        if not self.skip_bad:
            raise TokalignError(message)
        if kind == "json":
            self.stats.skipped_bad_json += 1
        elif kind == "utf8":
            self.stats.skipped_bad_utf8 += 1
        else:
            self.stats.skipped_bad_schema += 1

    def _iter_file(self, path: Path) -> Iterator[CorpusItem]:
        is_jsonl = path.suffix.lower() in JSONL_SUFFIXES
        display = str(path)
        try:
            fh = open(path, "rb")
        except OSError as e:
            raise TokalignError("%s: cannot read: %s" % (path, e.strerror or e))
        with fh:
            for lineno, raw in enumerate(fh, 1):
                where = "%s:%d" % (display, lineno)
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    self._bad("utf8", "%s: not valid UTF-8 (byte 0x%02x at column %d)"
                              % (where, raw[e.start], e.start + 1))
                    continue
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                try:
                    item = self._item_jsonl(line, where, path, lineno) if is_jsonl else \
                        CorpusItem(where, line, display, lineno)
                except _BadLine as e:
                    self._bad(e.kind, str(e))
                    continue
                if not item.text:
                    self.stats.skipped_empty += 1
                    continue
                if self.max_chars is not None and len(item.text) > self.max_chars:
                    item.text = item.text[: self.max_chars]
                    item.assistant_spans = [(s, min(e, self.max_chars)) for s, e in item.assistant_spans
                                            if s < self.max_chars]
                    self.stats.truncated += 1
                self.stats.items += 1
                self.stats.chars += len(item.text)
                yield item

    def _item_jsonl(self, line: str, where: str, path: Path, lineno: int) -> CorpusItem:
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise _BadLine("json", "%s: invalid JSON: %s" % (where, e))
        if not isinstance(obj, dict):
            raise _BadLine("schema", "%s: expected a JSON object, got %s" % (where, type(obj).__name__))
        sid = obj.get("id")
        if isinstance(sid, (str, int)) and not isinstance(sid, bool):
            sample_id = str(sid)
        else:
            sample_id = where
            self.stats.synthesized_ids += 1
        if "messages" in obj:
            msgs = _check_messages(obj["messages"], where)
            if self.template == "chat":
                try:
                    text = self.tokenizer.apply_chat_template(msgs)
                except TokalignError as e:
                    raise _BadLine("schema", "%s: %s" % (where, e))
                spans = _find_spans(text, msgs)
            else:
                text, spans = _render_plain(msgs, self.assistant_only)
            return CorpusItem(sample_id, text, str(path), lineno, msgs, spans)
        if "text" in obj:
            if not isinstance(obj["text"], str):
                raise _BadLine("schema", "%s: 'text' must be a string" % where)
            return CorpusItem(sample_id, obj["text"], str(path), lineno)
        raise _BadLine("schema", "%s: object has neither 'messages' nor 'text'" % where)


def iter_corpus(paths: Union[PathSpec, Sequence[PathSpec]], **options) -> Iterator[CorpusItem]:
    """Shorthand for ``iter(Corpus(paths, **options))``."""
    return iter(Corpus(paths, **options))
