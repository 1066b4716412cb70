"""Small, safe, reproducible artifact IO shared by every stage.

* ``save_sparse_npz`` writes a scipy.sparse CSR matrix in scipy's own ``.npz`` layout (so
  ``scipy.sparse.load_npz`` reads it) but byte-for-byte reproducibly: fixed zip timestamps,
  fixed member order. ``numpy.savez`` stamps the current time into the archive.
* ``load_sparse_npz`` never unpickles.
* ``write_json_atomic`` / ``atomic_dir`` write to a temporary name and rename, so an
  interrupted run never leaves a file or folder that looks complete.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Iterator, Tuple

import numpy as np
import scipy.sparse as sp

from .errors import TokalignError

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
    return buf.getvalue()


def save_sparse_npz(path: str | os.PathLike, matrix: sp.spmatrix | sp.sparray) -> None:
    """Save a CSR matrix reproducibly (same matrix -> same bytes), atomically."""
    m = sp.csr_matrix(matrix)
    m.sum_duplicates()
    m.sort_indices()
    save_npz_arrays(path, {
        "indices": m.indices,
        "indptr": m.indptr,
        "format": np.array("csr"),
        "shape": np.array(m.shape),
        "data": m.data,
    })


def save_npz_arrays(path: str | os.PathLike, members: dict) -> None:
    """``numpy.savez_compressed`` without pickles and with reproducible bytes, written atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in members.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, _npy_bytes(arr))
    os.replace(tmp, path)


def load_npz_arrays(path: str | os.PathLike) -> dict:
    """All arrays of an ``.npz`` file (never unpickles)."""
    path = Path(path)
    if not path.is_file():
        raise TokalignError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise TokalignError(f"{path}: not a readable .npz ({exc})") from exc


def load_sparse_npz(path: str | os.PathLike) -> sp.csr_matrix:
    """Load a CSR matrix written by :func:`save_sparse_npz` or ``scipy.sparse.save_npz``."""
    path = Path(path)
    if not path.is_file():
        raise TokalignError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            fmt = z["format"].item()
            fmt = fmt.decode("ascii") if isinstance(fmt, bytes) else str(fmt)  # scipy.sparse.save_npz writes bytes
            if fmt != "csr":
                raise TokalignError(f"{path}: expected a CSR matrix, found format {fmt!r}")
            shape = tuple(int(x) for x in z["shape"])
            m = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
            # the constructor checks lengths only: a crafted file could hold ids past the matrix's columns
            m.check_format(full_check=True)
            return m
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise TokalignError(f"{path}: not a readable sparse .npz ({exc})") from exc


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise TokalignError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise TokalignError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from exc


def refuse_output_over_inputs(out: str | os.PathLike, inputs: Iterable[Tuple[str, object]]) -> Path:
    """``out`` (resolved) must not be, contain or lie inside an input folder/file: publishing an output replaces
    it wholesale, which would delete the input or the folder holding it. ``inputs``: (label, path) pairs; None
    and paths that do not exist (hub ids, URLs) are skipped. Returns the resolved ``out``."""
    out = Path(out).resolve()
    for label, spec in inputs:
        if spec is None or not isinstance(spec, (str, os.PathLike)) or not Path(spec).exists():
            continue
        path = Path(spec).resolve()
        if out == path:
            how = "is"
        elif out in path.parents:
            how = "contains"
        elif path in out.parents:
            how = "lies inside"
        else:
            continue
        raise TokalignError("--out %s %s the input %s (%s); choose a folder outside every input" % (out, how, label, path))
    return out


def prepare_out_dir(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse to clobber a non-empty output folder unless ``overwrite``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TokalignError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise TokalignError(f"{out}: output folder is not empty (pass --overwrite to replace it)")
    return out


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``out`` in one rename.

    If the body raises (or the process dies), ``out`` is untouched and only a
    ``.<name>.tmp-*`` folder is left behind, which never looks like a finished artifact.
    """
    out = prepare_out_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
