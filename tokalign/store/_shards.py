"""Direct reads and writes of sharded Zarr v3 arrays, bypassing zarr's async codec pipeline.

zarr's pipeline costs far more than the codec itself on our hot paths (an asyncio task and a thread hop per
chunk, a copy of every decoded chunk into the output, and a read-modify-write of a whole shard when a write
covers part of it). The token arrays of a store have one simple layout, written by zarr itself at creation:

* a regular chunk grid along axis 0 only (trailing axes whole), codec ``sharding_indexed`` with
  ``index_location = "end"``;
* inner codecs ``bytes`` (little endian) + ``blosc`` (any cname: zstd, lz4, ...), optionally followed by
  ``crc32c`` (format version 2: every chunk's payload carries its checksum, checked here on every read and
  written here on every write), index codecs ``bytes`` + ``crc32c``.

For exactly that layout (:meth:`ShardLayout.from_array` returns None for anything else; callers then use
zarr) this module reads rows by parsing the shard index (``chunks_per_shard`` pairs of uint64
``(offset, nbytes)`` at the end of the shard object, then a crc32c of those bytes; ``2**64 - 1`` marks a
chunk that holds only the fill value) and decoding each blosc chunk straight into the output array, and writes
whole shards by encoding the chunks itself and putting the shard object in one store call. Shards written
here are ordinary Zarr v3 shards: zarr reads them (and read-modify-writes them) like its own; the tests check
both directions. Spec: https://zarr-specs.readthedocs.io/en/latest/v3/codecs/sharding-indexed/v1.0.html

About 600 lines on purpose: reading, writing and the integrity checks (missing objects, chunk checksums, the
shard scan of ``inspect --scan``) share the layout parsing and the index format, and keeping them together keeps
the directions byte-compatible and the checks identical on every path.
"""
from __future__ import annotations

import os
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import TokalignError

MAX_UINT64 = np.uint64(2**64 - 1)
_SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}

#: what may be absent under committed rows (``Geometry.absent``): format 2 writes every chunk of every shard
#: (zarr's ``write_empty_chunks``), so absence is loss; format 1 left chunks (and whole shards) holding only
#: the fill value out, so there a missing chunk reads as the fill value and, for arrays that can legitimately
#: be all fill value, a missing shard too (docs/store.md, "Integrity")
ABSENT_NOTHING, ABSENT_CHUNKS, ABSENT_ANY = 0, 1, 2


@dataclass(frozen=True)
class Geometry:
    """Where the shards and chunks of one array sharded along axis 0 lie (any inner codecs): what presence
    checks and ``inspect --scan`` need."""

    path: str  # the array's key prefix in its store ("part-00000/topk_ids")
    ndim: int
    chunk_rows: int
    shard_rows: int
    checksum: bool  # the inner codec chain ends with crc32c: each chunk's last 4 bytes are its payload's crc32c
    absent: int = ABSENT_NOTHING

    @property
    def chunks_per_shard(self) -> int:
        return self.shard_rows // self.chunk_rows

    @property
    def index_bytes(self) -> int:
        return self.chunks_per_shard * 16 + 4

    def shard_key(self, shard: int) -> str:
        """Object key of shard ``shard`` (zarr's default chunk key encoding with '/')."""
        return "%s/c/%d%s" % (self.path, shard, "/0" * (self.ndim - 1))

    @classmethod
    def from_array(cls, array: Any) -> Optional["Geometry"]:
        """The geometry of a zarr v3 array sharded along axis 0 with the index at the end, else None."""
        try:
            meta = array.metadata.to_dict()
            shape = tuple(int(s) for s in array.shape)
            found = _sharded_along_rows(meta, shape)
            if found is None:
                return None
            conf, shard, chunk = found
            return cls(path=array.path, ndim=len(shape), chunk_rows=chunk[0], shard_rows=shard[0],
                       checksum=conf["codecs"][-1]["name"] == "crc32c")
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            return None


def _sharded_along_rows(meta: Dict[str, Any], shape: Tuple[int, ...]):
    """``(sharding configuration, shard shape, chunk shape)`` of zarr v3 array metadata sharded along axis 0 only
    (regular grid, default '/' keys, one ``sharding_indexed`` codec, index at the end with a crc32c), else None.
    Raises KeyError / TypeError / ValueError / IndexError on malformed metadata (callers treat it as None)."""
    if meta.get("zarr_format") != 3 or meta["chunk_grid"]["name"] != "regular":
        return None
    cke = meta["chunk_key_encoding"]
    if cke["name"] != "default" or cke.get("configuration", {}).get("separator", "/") != "/":
        return None
    codecs = meta["codecs"]
    if len(codecs) != 1 or codecs[0]["name"] != "sharding_indexed":
        return None
    conf = codecs[0]["configuration"]
    if conf.get("index_location", "end") != "end":
        return None
    if [c["name"] for c in conf["index_codecs"]] != ["bytes", "crc32c"]:
        return None
    shard = tuple(int(s) for s in meta["chunk_grid"]["configuration"]["chunk_shape"])
    chunk = tuple(int(s) for s in conf["chunk_shape"])
    if len(shape) < 1 or shard[1:] != shape[1:] or chunk[1:] != shape[1:] or shard[0] % chunk[0]:
        return None
    return conf, shard, chunk


def chunk_error(where: str, key: str, c: int, what: str) -> TokalignError:
    """The one-line error of a damaged chunk: store, shard object, chunk number and what is wrong."""
    return TokalignError("store %s is damaged: chunk %d of %s %s; restore the store from a good copy or "
                         "re-create it" % (where, c, key, what))


@dataclass(frozen=True)
class ShardLayout(Geometry):
    """What is needed to locate, decode and encode the chunks of one sharded array (the direct path)."""

    tail: Tuple[int, ...] = ()  # trailing shape (whole in every chunk)
    dtype: np.dtype = np.dtype("uint8")
    fill_value: Any = 0
    cname: str = "zstd"
    clevel: int = 5
    shuffle: int = 1
    typesize: int = 1
    blocksize: int = 0

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.tail, dtype=np.int64)) * self.dtype.itemsize

    @property
    def chunk_bytes(self) -> int:
        return self.chunk_rows * self.row_bytes

    @classmethod
    def from_array(cls, array: Any) -> Optional["ShardLayout"]:
        """The layout of a zarr v3 ``Array`` when this module handles it, else None (use zarr)."""
        try:
            meta = array.metadata.to_dict()
        except Exception:
            return None
        try:
            if meta.get("storage_transformers"):
                return None
            shape = tuple(int(s) for s in array.shape)
            found = _sharded_along_rows(meta, shape)
            if found is None:
                return None
            conf, shard, chunk = found
            inner = conf["codecs"]
            index_codecs = conf["index_codecs"]
            names = [c["name"] for c in inner]
            if names not in (["bytes", "blosc"], ["bytes", "blosc", "crc32c"]):
                return None
            for c in (inner[0], index_codecs[0]):
                if (c.get("configuration") or {}).get("endian", "little") != "little":
                    return None
            dtype = np.dtype(array.dtype)
            if dtype.kind not in "biuf" or dtype.byteorder == ">":
                return None
            blosc = inner[1]["configuration"]
            shuffle = blosc.get("shuffle", "shuffle")
            if shuffle not in _SHUFFLES:
                return None
            fill = np.asarray(meta.get("fill_value", 0), dtype=dtype)
            return cls(path=array.path, ndim=len(shape), tail=shape[1:], dtype=dtype, fill_value=fill[()],
                       chunk_rows=chunk[0], shard_rows=shard[0], checksum=len(names) == 3, cname=str(blosc["cname"]),
                       clevel=int(blosc["clevel"]), shuffle=_SHUFFLES[shuffle],
                       typesize=int(blosc.get("typesize") or dtype.itemsize), blocksize=int(blosc.get("blocksize", 0)))
        except (KeyError, TypeError, ValueError, IndexError):
            return None


# -- byte access -----------------------------------------------------------------------------------------
class ByteIO:
    """Whole objects, byte ranges and object tails of one Zarr store, plus whole-object puts.

    Local stores are read with plain file reads (no event loop); any other store goes through zarr's store
    API, with all requests of one call gathered into one event-loop round trip. Puts are atomic: local
    stores get a temporary file renamed over the key (what zarr's LocalStore does), any other store a
    whole-object ``set`` (PUT).
    """

    def __init__(self, store: Any, where: str = "") -> None:
        from zarr.storage import LocalStore

        self.store = store
        self.where = where or str(store)  # the store's URL, for error messages
        self.root: Optional[Path] = Path(store.root) if isinstance(store, LocalStore) else None

    # each request: (key, start, length) with start=None for the whole object, length<0 for the last -length
    # bytes; the result is a bytes-like object or None when the object does not exist
    def get_many(self, requests: Sequence[Tuple[str, Optional[int], int]]) -> List[Optional[Any]]:
        if not requests:
            return []
        if self.root is not None:
            return [self._get_local(*r) for r in requests]
        import asyncio

        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync
        from zarr.abc.store import RangeByteRequest, SuffixByteRequest

        proto = default_buffer_prototype()

        def byte_range(start: Optional[int], length: int):
            if start is None:
                return None
            if length < 0:
                return SuffixByteRequest(-length)
            return RangeByteRequest(start, start + length)

        async def gather() -> List[Any]:
            return list(await asyncio.gather(*(self.store.get(k, proto, byte_range(s, n)) for k, s, n in requests)))

        return [None if b is None else b.as_numpy_array() for b in sync(gather())]

    def _get_local(self, key: str, start: Optional[int], length: int) -> Optional[Any]:
        try:
            with open(self.root / key, "rb", buffering=0) as f:
                if start is None:
                    return f.read()
                if length < 0:
                    size = os.fstat(f.fileno()).st_size
                    f.seek(max(0, size + length))
                    return f.read()
                f.seek(start)
                return f.read(length)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def put_many(self, items: Sequence[Tuple[str, Sequence[bytes]]]) -> None:
        """Whole objects, each given as its consecutive byte strings (written one after the other locally,
        joined for other stores)."""
        if self.root is not None:
            for key, parts in items:
                self._put_local(key, parts)
            return
        import asyncio

        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        proto = default_buffer_prototype()

        async def gather() -> None:
            await asyncio.gather(*(self.store.set(k, proto.buffer.from_bytes(b"".join(v))) for k, v in items))

        sync(gather())

    def _put_local(self, key: str, parts: Sequence[bytes]) -> None:
        """Atomic like zarr's LocalStore: a temporary file in the same folder, then renamed over the key."""
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("%s.%s.partial" % (path.name, uuid.uuid4().hex))
        try:
            with open(tmp, "wb") as f:
                for part in parts:
                    f.write(part)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def parse_index(layout: Geometry, raw: Any, key: str, where: str = "") -> np.ndarray:
    """(chunks_per_shard, 2) uint64 (offset, nbytes) from the last ``index_bytes`` of a shard; crc32c checked."""
    import google_crc32c

    buf = memoryview(raw).cast("B")
    n = layout.index_bytes
    at = " of store %s" % where if where else ""
    if len(buf) < n:
        raise TokalignError("corrupt shard %s%s: %d bytes, shorter than its index (%d bytes)" % (key, at, len(buf), n))
    idx = buf[len(buf) - n: len(buf) - 4]
    crc = int(np.frombuffer(buf[len(buf) - 4:], dtype="<u4")[0])
    if google_crc32c.value(bytes(idx)) != crc:
        raise TokalignError("corrupt shard %s%s: the checksum of its chunk index does not match" % (key, at))
    return np.frombuffer(idx, dtype="<u8").reshape(-1, 2).copy()


def missing_shard(where: str, geom: Geometry, shard: int) -> TokalignError:
    a, b = shard * geom.shard_rows, (shard + 1) * geom.shard_rows
    return TokalignError("store %s is damaged: shard object %s (rows %d-%d of %s) is missing; restore the store "
                         "from a good copy or re-create it" % (where, geom.shard_key(shard), a, b - 1, geom.path))


def check_present(items: Sequence[Tuple[Geometry, int, int]], io: ByteIO) -> None:
    """Raise (one line: store, object) when an object that rows [lo, hi) of an array need is missing (``items``:
    (geometry, lo, hi) each): a shard object, or (``absent == ABSENT_NOTHING``) a chunk its index leaves out.
    For the reads zarr does itself, which would silently return the fill value. One gathered request."""
    requests = []
    for g, lo, hi in items:
        if hi <= lo or g.absent == ABSENT_ANY:
            continue
        for s in range(lo // g.shard_rows, (hi - 1) // g.shard_rows + 1):
            requests.append((g, s, lo, hi))
    raws = io.get_many([(g.shard_key(s), 0, -g.index_bytes) for g, s, _, _ in requests])
    for (g, s, lo, hi), raw in zip(requests, raws):
        if raw is None:
            raise missing_shard(io.where, g, s)
        if g.absent != ABSENT_NOTHING:
            continue
        idx = parse_index(g, raw, g.shard_key(s), io.where)
        c0 = max(lo, s * g.shard_rows) // g.chunk_rows
        c1 = (min(hi, (s + 1) * g.shard_rows) - 1) // g.chunk_rows + 1
        for c in range(c0, c1):
            if idx[c - s * g.chunks_per_shard, 0] == MAX_UINT64:
                raise chunk_error(io.where, g.shard_key(s), c, "is missing from the shard (its index has no entry)")


def shard_problems(geom: Geometry, raw: Any, s: int, nrows: int, where: str) -> List[str]:
    """One line per problem of shard ``s`` (its whole object ``raw``, None when missing) for the rows below
    ``nrows`` (the committed rows): missing object or chunk, index, checksums and, for a :class:`ShardLayout`,
    whether each chunk decodes to its size (``inspect --scan``; after zarr failed to read a range)."""
    key = geom.shard_key(s)
    if raw is None:
        return [str(missing_shard(where, geom, s))] if geom.absent != ABSENT_ANY else []
    try:
        idx = parse_index(geom, raw, key, where)
    except TokalignError as exc:
        return [str(exc)]
    buf = memoryview(raw).cast("B")
    out = []
    c0 = s * geom.chunks_per_shard
    c1 = min(c0 + geom.chunks_per_shard, -(-nrows // geom.chunk_rows))
    for c in range(c0, c1):
        off, nb = (int(x) for x in idx[c - c0])
        if idx[c - c0, 0] == MAX_UINT64:
            if geom.absent == ABSENT_NOTHING:
                out.append(str(chunk_error(where, key, c, "is missing from the shard (its index has no entry)")))
            continue
        if off + nb > len(buf) - geom.index_bytes:
            out.append(str(chunk_error(where, key, c, "lies outside the object")))
            continue
        try:
            src = verify_payload(geom, buf[off:off + nb], key, c, where)
            if isinstance(geom, ShardLayout):
                _decompress(src, np.empty(geom.chunk_bytes, dtype=np.uint8), geom, key, c, where)
        except TokalignError as exc:
            out.append(str(exc))
    return out


def verify_payload(geom: Geometry, src: Any, key: str, c: int, where: str) -> Any:
    """The chunk's payload without its checksum, after checking it (``geom.checksum``), else ``src``."""
    if not geom.checksum:
        return src
    import google_crc32c

    arr = np.frombuffer(src, dtype=np.uint8)
    if arr.size < 4:
        raise chunk_error(where, key, c, "is shorter than its checksum")
    if google_crc32c.value(arr[:-4]) != int(arr[-4:].view("<u4")[0]):
        raise chunk_error(where, key, c, "does not match its crc32c checksum (the bytes were altered)")
    return arr[:-4]


# -- reading -----------------------------------------------------------------------------------------------
class Carry:
    """The last chunk a read decoded only in part, per array: the next sequential read starts inside it."""

    def __init__(self) -> None:
        self.chunks: Dict[str, Tuple[int, np.ndarray]] = {}


def read_rows(layouts: Sequence[ShardLayout], io: ByteIO, lo: int, hi: int, nrows: Sequence[int], *,
              pool: Optional[Executor] = None, carry: Optional[Carry] = None,
              index_cache: Optional[Dict[Tuple[str, int], np.ndarray]] = None) -> List[np.ndarray]:
    """Rows [lo, hi) of several arrays (their current lengths ``nrows``), decoded with blosc directly.

    Chunks wholly inside the range are decoded in place into the output; the first and last chunk, when
    only partly needed, are decoded into a scratch buffer and copied (the last one is kept in ``carry`` so a
    following read that starts inside it does not decode it again). ``index_cache`` keeps shard indexes
    between calls: only pass one for arrays that no writer changes any more.
    """
    outs: List[np.ndarray] = []
    index_requests: List[Tuple[int, int, str]] = []  # (array i, shard, key)
    indexes: Dict[Tuple[int, int], Optional[np.ndarray]] = {}
    for i, (lay, n) in enumerate(zip(layouts, nrows)):
        if not 0 <= lo <= hi <= n:
            raise TokalignError("rows [%d, %d) outside array %s of %d rows" % (lo, hi, lay.path, n))
        outs.append(np.empty((hi - lo,) + lay.tail, dtype=lay.dtype))
        if hi == lo:
            continue
        for s in range(lo // lay.shard_rows, (hi - 1) // lay.shard_rows + 1):
            key = lay.shard_key(s)
            cached = None if index_cache is None else index_cache.get((key, s))
            if cached is not None:
                indexes[(i, s)] = cached
            else:
                index_requests.append((i, s, key))
    raws = io.get_many([(key, None if _whole_shard(layouts[i], s, lo, hi) else 0, -layouts[i].index_bytes)
                        for i, s, key in index_requests])
    whole: Dict[Tuple[int, int], Any] = {}
    for (i, s, key), raw in zip(index_requests, raws):
        if raw is None:
            if layouts[i].absent != ABSENT_ANY:
                raise missing_shard(io.where, layouts[i], s)
            indexes[(i, s)] = None
            continue
        idx = parse_index(layouts[i], raw, key, io.where)
        indexes[(i, s)] = idx
        if index_cache is not None:
            index_cache[(key, s)] = idx
        if _whole_shard(layouts[i], s, lo, hi):
            whole[(i, s)] = raw

    # byte requests: per array and shard, the span from the first to the last needed chunk
    tasks: List[Tuple[int, int, int]] = []  # (array i, chunk c, blob number; -1: fill value, -2: carried)
    blobs: List[Any] = []  # bytes-like, or None until fetched
    bases: List[int] = []  # byte offset of each blob in its shard object
    fetch: List[Tuple[int, Tuple[str, Optional[int], int]]] = []  # (blob number, request)
    for (i, s), idx in indexes.items():
        lay = layouts[i]
        cps = lay.chunks_per_shard
        c0 = max(lo, s * lay.shard_rows) // lay.chunk_rows
        c1 = (min(hi, (s + 1) * lay.shard_rows) - 1) // lay.chunk_rows + 1
        needed = []
        for c in range(c0, c1):
            if carry is not None and _carried(carry, lay, c, lo, hi):
                tasks.append((i, c, -2))
            elif idx is None or idx[c - s * cps, 0] == MAX_UINT64:
                if lay.absent == ABSENT_NOTHING:
                    raise chunk_error(io.where, lay.shard_key(s), c, "is missing from the shard (its index has no entry)")
                tasks.append((i, c, -1))
            else:
                needed.append(c)
        if not needed:
            continue
        if (i, s) in whole:  # the index request already brought the whole object
            blobs.append(whole[(i, s)])
            bases.append(0)
            tasks.extend((i, c, len(blobs) - 1) for c in needed)
            continue
        rows = idx[[c - s * cps for c in needed]]
        start = int(rows[:, 0].min())
        end = int((rows[:, 0] + rows[:, 1]).max())
        if end - start <= 2 * int(rows[:, 1].sum()) + (1 << 16):  # usual case: chunks stored in order
            groups = [(needed, start, end - start)]
        else:  # chunks scattered in the object: one request each
            groups = [([c], int(off), int(nb)) for c, (off, nb) in zip(needed, rows)]
        for cs, start, length in groups:
            blobs.append(None)
            bases.append(start)
            fetch.append((len(blobs) - 1, (lay.shard_key(s), start, length)))
            tasks.extend((i, c, len(blobs) - 1) for c in cs)
    for (b_i, (key, _, _)), raw in zip(fetch, io.get_many([r for _, r in fetch])):
        if raw is None:
            raise TokalignError("store %s: shard %s disappeared while it was read" % (io.where, key))
        blobs[b_i] = raw

    new_carry: Dict[str, Tuple[int, np.ndarray]] = {}

    def run(task: Tuple[int, int, int]) -> Optional[Tuple[str, int, np.ndarray]]:
        i, c, rq = task
        lay = layouts[i]
        out = outs[i].reshape(-1).view(np.uint8) if outs[i].size else None
        a, b = c * lay.chunk_rows, (c + 1) * lay.chunk_rows  # chunk rows
        ra, rb = max(a, lo), min(b, hi)  # rows of it we want
        rbytes = lay.row_bytes
        if rq == -1:
            outs[i][ra - lo: rb - lo] = lay.fill_value
            return None
        if rq == -2:
            chunk = carry.chunks[lay.path][1]
            out[(ra - lo) * rbytes:(rb - lo) * rbytes] = chunk[(ra - a) * rbytes:(rb - a) * rbytes]
            return (lay.path, c, chunk) if rb == hi and rb < b else None
        s = c // lay.chunks_per_shard
        idx = indexes[(i, s)]
        off, nb = (int(x) for x in idx[c - s * lay.chunks_per_shard])
        base = bases[rq]
        src = memoryview(blobs[rq]).cast("B")[off - base: off - base + nb]
        key = lay.shard_key(s)
        if len(src) != nb:
            raise chunk_error(io.where, key, c, "lies outside the object")
        src = verify_payload(lay, src, key, c, io.where)
        if ra == a and rb == b:
            _decompress(src, out[(ra - lo) * rbytes:(rb - lo) * rbytes], lay, key, c, io.where)
            return None
        chunk = np.empty(lay.chunk_bytes, dtype=np.uint8)
        _decompress(src, chunk, lay, key, c, io.where)
        out[(ra - lo) * rbytes:(rb - lo) * rbytes] = chunk[(ra - a) * rbytes:(rb - a) * rbytes]
        return (lay.path, c, chunk) if rb == hi and rb < b else None

    if pool is not None and len(tasks) > 1:
        results = list(pool.map(run, tasks))
    else:
        results = [run(t) for t in tasks]
    if carry is not None:
        for r in results:
            if r is not None:
                new_carry[r[0]] = (r[1], r[2])
        carry.chunks = new_carry
    return outs


def _decompress(src: Any, dest: np.ndarray, lay: ShardLayout, key: str, c: int, where: str) -> None:
    """blosc-decode one chunk into ``dest`` (exactly its size); an undecodable chunk is a one-line error."""
    from numcodecs import blosc

    header = np.frombuffer(src, dtype=np.uint8, count=min(16, len(src)))
    if header.size < 16 or int(header[4:8].view("<u4")[0]) != dest.nbytes:  # blosc header: nbytes at 4..8
        raise chunk_error(where, key, c, "has a blosc header that does not fit the chunk (%d bytes)" % dest.nbytes)
    try:
        blosc.decompress(src, dest)
    except Exception as exc:  # numcodecs raises RuntimeError / ValueError / TypeError for bad input
        raise chunk_error(where, key, c, "cannot be decoded (%s: %s)" % (lay.cname, exc)) from None


def _whole_shard(lay: ShardLayout, s: int, lo: int, hi: int) -> bool:
    """True when [lo, hi) covers every row of shard ``s``: read the whole object in one request."""
    return lo <= s * lay.shard_rows and (s + 1) * lay.shard_rows <= hi


def _carried(carry: Carry, lay: ShardLayout, c: int, lo: int, hi: int) -> bool:
    got = carry.chunks.get(lay.path)
    if got is None or got[0] != c:
        return False
    a, b = c * lay.chunk_rows, (c + 1) * lay.chunk_rows
    return not (lo <= a and b <= hi)  # a chunk wholly inside the range is decoded in place anyway


# -- writing -----------------------------------------------------------------------------------------------
class RowPieces:
    """Rows of one array kept as consecutive pieces (the batches a writer buffered), not concatenated: a row
    range inside one piece is a view, one that spans pieces is concatenated (a chunk at a batch boundary)."""

    def __init__(self, pieces: Sequence[np.ndarray]) -> None:
        if not len(pieces):
            raise ValueError("RowPieces needs at least one (possibly empty) piece")
        self.pieces = [p for p in pieces if p.shape[0]] or [pieces[0]]
        self.starts = np.concatenate([[0], np.cumsum([p.shape[0] for p in self.pieces])]).astype(np.int64)
        self.shape = (int(self.starts[-1]),) + tuple(self.pieces[0].shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, a: int, b: int) -> np.ndarray:
        """Rows [a, b) as one array: a view when they lie in one piece (0 <= a <= b <= len)."""
        return self.sub(a, b).array()

    def sub(self, a: int, b: int) -> "RowPieces":
        """Rows [a, b) as pieces (views of this one's)."""
        i = int(np.searchsorted(self.starts, a, side="right")) - 1
        parts = [self.pieces[0][:0]]
        while a < b:
            lo, hi = int(self.starts[i]), int(self.starts[i + 1])
            parts.append(self.pieces[i][a - lo:min(b, hi) - lo])
            a, i = min(b, hi), i + 1
        return RowPieces(parts)

    def array(self) -> np.ndarray:
        return self.pieces[0] if len(self.pieces) == 1 else np.concatenate(self.pieces)


def encode_shard(lay: ShardLayout, rows: Any, map_fn: Callable = map) -> List[bytes]:
    """The shard object holding ``rows`` (an array or :class:`RowPieces`, at most ``shard_rows``; the last chunk
    padded with the fill value), as its consecutive byte strings (chunks, index, crc32c): put them as one object."""
    import google_crc32c
    from numcodecs import Blosc

    if not isinstance(rows, RowPieces):
        rows = RowPieces([np.asarray(rows)])
    n = len(rows)
    if not 0 < n <= lay.shard_rows or tuple(rows.shape[1:]) != lay.tail:
        raise TokalignError("encode_shard %s: %s rows do not fit a shard of %d x %s"
                            % (lay.path, rows.shape, lay.shard_rows, lay.tail))
    codec = Blosc(cname=lay.cname, clevel=lay.clevel, shuffle=lay.shuffle, blocksize=lay.blocksize,
                  typesize=lay.typesize)
    chunk_rows = lay.chunk_rows

    def encode(c: int) -> bytes:
        part = np.ascontiguousarray(rows.rows(c * chunk_rows, min((c + 1) * chunk_rows, n)), dtype=lay.dtype)
        if part.shape[0] < chunk_rows:
            full = np.full((chunk_rows,) + lay.tail, lay.fill_value, dtype=lay.dtype)
            full[: part.shape[0]] = part
            part = full
        blob = codec.encode(part.reshape(-1).view(np.uint8))
        if lay.checksum:  # what zarr's crc32c codec appends: the payload's crc32c, little endian
            blob = blob + np.uint32(google_crc32c.value(blob)).astype("<u4").tobytes()
        return blob

    blobs = list(map_fn(encode, range(-(-n // chunk_rows))))
    index = np.full((lay.chunks_per_shard, 2), MAX_UINT64, dtype="<u8")
    offset = 0
    for c, b in enumerate(blobs):
        index[c] = (offset, len(b))
        offset += len(b)
    return _with_index(blobs, index)


def _with_index(blobs: List[bytes], index: np.ndarray) -> List[bytes]:
    import google_crc32c

    ib = index.tobytes()
    return blobs + [ib, np.uint32(google_crc32c.value(ib)).astype("<u4").tobytes()]
