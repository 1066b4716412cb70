"""URL -> Zarr store, array creation and small sync helpers shared by the writer, the reader and inspect."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import zarr
import zarr.codecs
from zarr.storage import FsspecStore, LocalStore

from ..errors import TokalignError

StoreURL = Union[str, Path]


def _local_path(url: StoreURL) -> Optional[Path]:
    """Local filesystem path for plain paths and ``file://`` URLs, else None."""
    if isinstance(url, Path):
        return url
    if url.startswith("file://"):
        return Path(url[len("file://"):])
    if "://" not in url:
        return Path(url)
    return None


def make_store(url: StoreURL, *, read_only: bool, storage_options: Optional[Dict[str, Any]] = None):
    """A Zarr store for any fsspec URL.

    Local paths and ``file://`` URLs use zarr's LocalStore because it writes every object to a temp file and
    renames it into place: a killed writer never leaves a torn chunk or metadata file behind (the resume
    protocol relies on that). Other schemes (``memory://``, ``s3://``, ``gs://``...) go through FsspecStore;
    object stores replace whole objects atomically as well.
    """
    path = _local_path(url)
    if path is not None:
        if storage_options:
            raise TokalignError("storage_options given for a local store %s" % url)
        return LocalStore(path.expanduser(), read_only=read_only)
    return FsspecStore.from_url(str(url), storage_options=storage_options, read_only=read_only)


class StoreNotFoundError(TokalignError):
    """Nothing (no Zarr group) at the URL; other open errors mean a store that is there but damaged."""


#: what zarr raises for a zarr.json that is not JSON (JSONDecodeError is a ValueError) or not valid metadata
METADATA_ERRORS = (ValueError, TypeError, KeyError)


def metadata_error(url: StoreURL, exc: BaseException, what: str = "zarr.json metadata") -> TokalignError:
    """The one line for unreadable Zarr metadata in the store at ``url``."""
    detail = str(exc).splitlines()[0] if str(exc) else ""
    return TokalignError("store %s: its %s is unreadable (%s: %s); restore the store from a good copy or re-create "
                         "it" % (url, what, type(exc).__name__, detail))


def members(root: zarr.Group, url: StoreURL) -> Dict[str, Any]:
    """Every group and array below ``root`` by path (one concurrent listing), or a one-line TokalignError
    when a part's or an array's zarr.json is unreadable."""
    try:
        return dict(root.members(max_depth=None))
    except METADATA_ERRORS as exc:
        raise metadata_error(url, exc, "part or array metadata (a zarr.json below the root)") from None


def open_root(url: StoreURL, *, mode: str, storage_options: Optional[Dict[str, Any]] = None) -> zarr.Group:
    """Open the root group (``mode`` 'r', 'r+' or 'a'); a missing store is a TokalignError naming the URL."""
    local = _local_path(url)
    if mode != "r" and local is not None:
        _refuse_foreign_folder(local.expanduser(), url)
    store = make_store(url, read_only=(mode == "r"), storage_options=storage_options)
    try:
        try:
            return zarr.open_group(store, mode=mode)
        except zarr.errors.ContainsGroupError:
            # mode "a": another rank created the root between zarr's existence check and its create
            return zarr.open_group(store, mode="r+")
    except (FileNotFoundError, zarr.errors.NodeNotFoundError, zarr.errors.NodeTypeValidationError,
            zarr.errors.ContainsArrayError) as exc:
        raise StoreNotFoundError("no tokalign store at %s (%s)" % (url, exc)) from None
    except METADATA_ERRORS as exc:
        raise metadata_error(url, exc) from None


def _refuse_foreign_folder(path: Path, url: StoreURL) -> None:
    """A writer never adds a store's objects into a folder that holds something else (a model, a dataset):
    an existing local folder must be a Zarr store (zarr.json at its top) or empty."""
    if path.exists() and not path.is_dir():
        raise TokalignError("%s: exists and is not a folder; choose another output path" % url)
    if path.is_dir() and not (path / "zarr.json").is_file() and any(path.iterdir()):
        raise TokalignError("%s: folder is not empty and is not a tokalign store; choose a new or empty output "
                            "folder" % url)


def exists(url: StoreURL, storage_options: Optional[Dict[str, Any]] = None) -> bool:
    """True when a Zarr group exists at ``url``."""
    try:
        open_root(url, mode="r", storage_options=storage_options)
        return True
    except StoreNotFoundError:
        return False


#: blosc block size for zstd level 1 (0 = blosc's own choice). blosc picks small blocks at low levels, so
#: zstd restarts every few ten KB; 256 KiB blocks encode top-k ids / logits 25-45 % faster, decode faster too,
#: and come out 4-6 % smaller (docs/store.md, "Chunks, shards, compression"). At levels 3 and 5 blosc's own
#: choice was as good or better, and lz4 does not care.
ZSTD1_BLOCKSIZE = 1 << 18


def compressor(clevel: int, dtype: str, cname: str = "zstd"):
    """Blosc (zstd or lz4) with byte shuffle: separates the high and low bytes of ids and 16-bit logits."""
    shuffle = "noshuffle" if dtype in ("bool", "uint8", "int8", "str") else "shuffle"
    blocksize = ZSTD1_BLOCKSIZE if cname == "zstd" and int(clevel) == 1 else 0
    return zarr.codecs.BloscCodec(cname=cname, clevel=int(clevel), shuffle=shuffle, blocksize=blocksize)


def resize_many(arrays: Sequence[zarr.Array], shapes: Sequence[Tuple[int, ...]]) -> None:
    """Resize several arrays in one event-loop call (each resize writes a metadata object)."""
    import asyncio

    from zarr.core.sync import sync

    todo = [(a, tuple(s)) for a, s in zip(arrays, shapes) if tuple(a.shape) != tuple(s)]
    if not todo:
        return

    async def gather() -> None:
        await asyncio.gather(*(a.async_array.resize(s) for a, s in todo))

    sync(gather())


#: zarr runtime config of every array a writer touches: write chunks (and shards) that hold only the fill value
#: too, so that under committed rows a missing object always means loss (format 2; docs/store.md, "Integrity")
WRITE_CONFIG = {"write_empty_chunks": True}


def writable(array: zarr.Array) -> zarr.Array:
    """``array`` with :data:`WRITE_CONFIG` (zarr's runtime config is not stored: every opener sets it)."""
    return array.with_config(WRITE_CONFIG)


def create_array(group: zarr.Group, name: str, dtype: str, tail: Tuple[int, ...], length: int,
                 chunk: int, shard: int, clevel: int, cname: str = "zstd", checksum: bool = True) -> zarr.Array:
    """A growable array chunked (and sharded) along its first axis; ``checksum``: each chunk ends with the
    crc32c of its compressed payload (zarr's ``crc32c`` codec, last in the chain; format 2)."""
    shape = (int(length),) + tuple(tail)
    chunks = (int(chunk),) + tuple(tail)
    shards = (int(shard),) + tuple(tail)
    crc = (zarr.codecs.Crc32cCodec(),) if checksum else ()
    if dtype == "str":
        return group.create_array(name, shape=shape, dtype=str, chunks=chunks, shards=shards,
                                  compressors=(zarr.codecs.ZstdCodec(level=int(clevel)),) + crc, fill_value="",
                                  config=WRITE_CONFIG if checksum else None)
    return group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, shards=shards,
                              compressors=(compressor(clevel, dtype, cname),) + crc, fill_value=0,
                              config=WRITE_CONFIG if checksum else None)


def stored_bytes(group: zarr.Group) -> int:
    """Bytes of every object under ``group`` (chunks, shards and metadata)."""
    from zarr.core.sync import sync

    prefix = group.path + "/" if group.path else ""
    return int(sync(group.store.getsize_prefix(prefix)))
