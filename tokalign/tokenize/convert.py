"""Build ``tokenizers.Tokenizer`` engines from original tokenizer files.

* SentencePiece ``.model`` (BPE or Unigram) -> the Llama-"legacy" layout used by HF fast tokenizers:
  normalizer ``[Precompiled] + [Prepend("▁") if add_dummy_prefix] + Replace(" ", "▁")``, byte fallback,
  control / unknown pieces as special added tokens, user-defined pieces as (non-special) added tokens.
  ``remove_extra_whitespaces`` is approximated with Strip + collapsing runs of spaces.
* tiktoken ranks (``base64 rank`` per line) and Mistral "tekken" json -> byte-level BPE: vocabulary = ranks
  (+ an id offset), merges = every split of a token into two vocabulary tokens, ordered by the merged
  token's rank (tiktoken merges the adjacent pair whose concatenation has the lowest rank), words found
  whole in the vocabulary are taken as is (``ignore_merges``, like tiktoken).

Both are checked against the original implementations (sentencepiece, tiktoken, mistral-common) in
``tests/test_tokenize.py``.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import TokalignError
from .canonical import BYTE_ENCODER

#: Pre-tokenizer regex of cl100k / Llama-3 (default for a bare ranks file).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
#: Qwen (1.5/2/2.5): as Llama-3 but one digit per token.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: Tekken special tokens of files that do not list them (mistral-common ``Tekkenizer.DEPRECATED_SPECIAL_TOKENS``);
#: the remaining ids up to ``default_num_special_tokens`` are ``<SPECIAL_{id}>``.
TEKKEN_DEFAULT_SPECIALS = [
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]",
    "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]",
]

_RANK_LINE = re.compile(rb"^([A-Za-z0-9+/=]+) (\d+)\s*$")


# ----------------------------------------------------------------------------------------------- sniffing
def is_tiktoken_ranks(path: Path) -> bool:
    """True when the file starts like a tiktoken ranks file (``<base64> <rank>`` lines)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    first = head.split(b"\n", 1)[0]
    return bool(_RANK_LINE.match(first))


def is_sentencepiece_model(path: Path) -> bool:
    """True when the file parses as a SentencePiece ModelProto with pieces."""
    return _parse_spm(path, quiet=True) is not None


def is_tekken_json(obj) -> bool:
    return (isinstance(obj, dict) and "config" in obj and isinstance(obj.get("vocab"), list)
            and (not obj["vocab"] or "token_bytes" in obj["vocab"][0]))


# ----------------------------------------------------------------------------------------- SentencePiece
def _parse_spm(path: Path, quiet: bool = False):
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb
    except ImportError as e:  # pragma: no cover
        if quiet:
            return None
        raise TokalignError("%s: reading a SentencePiece .model needs the 'sentencepiece' package (and protobuf): %s"
                            % (path, e))
    data = Path(path).read_bytes()
    m = pb.ModelProto()
    try:
        m.ParseFromString(data)
    except Exception:
        if quiet:
            return None
        raise TokalignError("%s: not a SentencePiece model (protobuf parse failed)" % path)
    if len(m.pieces) == 0:
        if quiet:
            return None
        raise TokalignError("%s: not a SentencePiece model (no pieces)" % path)
    return m


def _spm_merges(pieces: Sequence[str], scores: Sequence[float], skip: set) -> List[Tuple[str, str]]:
    """Merges for a SentencePiece BPE model: every split of a piece into two pieces, best score first
    (the same derivation as ``transformers.convert_slow_tokenizer.generate_merges``)."""
    vocab = {p: i for i, p in enumerate(pieces)}
    merges = []
    for merged, score in zip(pieces, scores):
        if merged in skip:
            continue
        local = []
        for k in range(1, len(merged)):
            left, right = merged[:k], merged[k:]
            if left in skip or right in skip:
                continue
            li = vocab.get(left)
            ri = vocab.get(right)
            if li is not None and ri is not None:
                local.append((li, ri, left, right))
        local.sort()
        merges.extend((-score, -len(l), -len(r), l, r) for _, _, l, r in local)
    # best score first; among equal scores the longer left part first (stable sort keeps id order after that)
    merges.sort(key=lambda m: (m[0], m[1], m[2]))
    return [(m[3], m[4]) for m in merges]


def spm_engine(path: Path):
    """Convert a SentencePiece ``.model`` to a ``tokenizers.Tokenizer``; returns (engine, roles, meta)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE, Unigram

    m = _parse_spm(path)
    ts, ns = m.trainer_spec, m.normalizer_spec
    pieces = [p.piece for p in m.pieces]
    scores = [p.score for p in m.pieces]
    types = [p.type for p in m.pieces]  # 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
    unk_id = ts.unk_id if 0 <= ts.unk_id < len(pieces) else None
    if ts.model_type == 2:  # BPE
        # unknown, control, user-defined and byte pieces never take part in merges: the first three are
        # matched whole before the model runs, byte pieces only come from byte fallback
        skip = {p for p, t in zip(pieces, types) if t in (2, 3, 4, 6)}
        merges = _spm_merges(pieces, scores, skip)
        model = BPE({p: i for i, p in enumerate(pieces)}, merges,
                    unk_token=pieces[unk_id] if unk_id is not None else None,
                    fuse_unk=True, byte_fallback=bool(ts.byte_fallback), dropout=None)
    elif ts.model_type == 1:  # Unigram
        model = Unigram([(p, s) for p, s in zip(pieces, scores)], unk_id, bool(ts.byte_fallback))
    else:
        raise TokalignError("%s: SentencePiece model type %d is not supported (only BPE and Unigram)"
                            % (path, ts.model_type))
    engine = Tokenizer(model)
    seq = []
    if ns.precompiled_charsmap:
        seq.append(normalizers.Precompiled(ns.precompiled_charsmap))
    if ns.remove_extra_whitespaces:  # approximation of sentencepiece's whitespace clean-up
        seq += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    if ns.add_dummy_prefix:
        seq.append(normalizers.Prepend("\u2581"))
    seq.append(normalizers.Replace(" ", "\u2581"))
    engine.normalizer = normalizers.Sequence(seq)
    dec = [decoders.Replace("\u2581", " ")]
    if ts.byte_fallback:
        dec += [decoders.ByteFallback(), decoders.Fuse()]
    if ns.add_dummy_prefix:
        dec.append(decoders.Strip(" ", 1, 0))
    engine.decoder = decoders.Sequence(dec)
    added = [AddedToken(p, normalized=False, special=t in (2, 3))
             for p, t in zip(pieces, types) if t in (2, 3, 4)]
    if added:
        engine.add_tokens(added)
    roles = {}
    for role, i in (("unk", ts.unk_id), ("bos", ts.bos_id), ("eos", ts.eos_id), ("pad", ts.pad_id)):
        if 0 <= i < len(pieces):
            roles[role] = pieces[i]
    if "bos" in roles:  # HF Llama-style: add_special_tokens=True prepends BOS
        _bos_template(engine, roles["bos"])
    meta = {"format": "sentencepiece", "model_type": "bpe" if ts.model_type == 2 else "unigram",
            "add_dummy_prefix": bool(ns.add_dummy_prefix), "normalizer": ns.name}
    return engine, roles, meta


def _bos_template(engine, bos: str) -> None:
    from tokenizers import processors

    bos_id = engine.token_to_id(bos)
    if bos_id is not None:
        engine.post_processor = processors.TemplateProcessing(
            single="%s $A" % bos, pair="%s $A %s $B" % (bos, bos), special_tokens=[(bos, bos_id)])


# ------------------------------------------------------------------------------------ tiktoken / tekken
def load_tiktoken_ranks(path: Path) -> Dict[bytes, int]:
    """Read a tiktoken ranks file; a malformed line raises TokalignError naming file:line."""
    ranks: Dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            m = _RANK_LINE.match(line)
            if not m:
                raise TokalignError("%s:%d: not a tiktoken ranks line (expected '<base64> <rank>')" % (path, lineno))
            try:
                tok = base64.b64decode(m.group(1), validate=True)
            except binascii.Error:
                raise TokalignError("%s:%d: bad base64 token" % (path, lineno))
            ranks[tok] = int(m.group(2))
    if not ranks:
        raise TokalignError("%s: empty tiktoken ranks file" % path)
    return ranks


_LATIN1_TO_BYTELEVEL = {b: c for b, c in BYTE_ENCODER.items()}  # str.translate table: ord(latin-1 char) -> char


def _to_unicode(b: bytes) -> str:
    """Bytes in GPT-2's byte-level alphabet (decode as latin-1, then map each code point = byte)."""
    return b.decode("latin-1").translate(_LATIN1_TO_BYTELEVEL)


def ranks_engine(ranks: Dict[bytes, int], pattern: str, specials: Sequence[Tuple[int, str]] = (),
                 id_offset: int = 0):
    """Byte-level BPE ``tokenizers.Tokenizer`` equivalent to ``tiktoken.Encoding(pat_str=pattern, ranks)``.

    Token of rank r gets id ``r + id_offset``; ``specials`` are (id, content) pairs added as special tokens.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    ustr = {t: _to_unicode(t) for t in ranks}
    vocab = {u: ranks[t] + id_offset for t, u in ustr.items()}
    if len(vocab) != len(ranks):
        raise TokalignError("tiktoken ranks: duplicate tokens")
    merges = []
    get = ranks.get
    for tok, r in ranks.items():
        for k in range(1, len(tok)):
            left = get(tok[:k])
            if left is not None:
                right = get(tok[k:])
                if right is not None:
                    merges.append((r, left, right, k, tok))
    merges.sort()
    merge_strs = [(ustr[tok[:k]], ustr[tok[k:]]) for _, _, _, k, tok in merges]
    for i, content in specials:
        vocab[content] = i
    engine = Tokenizer(BPE(vocab, merge_strs, fuse_unk=False, ignore_merges=True))
    engine.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    engine.decoder = decoders.ByteLevel()
    if specials:
        engine.add_special_tokens([AddedToken(c, normalized=False, special=True) for _, c in sorted(specials)])
        for i, c in specials:
            if engine.token_to_id(c) != i:
                raise TokalignError("special token %r did not get id %d" % (c, i))
    return engine


def tiktoken_engine(path: Path, pattern: Optional[str] = None):
    """Engine from a tiktoken ranks file (no special tokens; default pattern = Llama-3 / cl100k)."""
    ranks = load_tiktoken_ranks(path)
    pat = pattern or LLAMA3_PATTERN
    meta = {"format": "tiktoken", "pattern": pat}
    return ranks_engine(ranks, pat), {}, meta


def tekken_engine(path: Path, obj: Optional[dict] = None):
    """Engine from a Mistral tekken json: ids 0..num_special-1 are special, rank r has id r + num_special."""
    if obj is None:
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise TokalignError("%s: not a tekken json: %s" % (path, e))
    if not is_tekken_json(obj):
        raise TokalignError("%s: not a tekken json (needs 'config' and a 'vocab' list of token_bytes)" % path)
    cfg = obj["config"]
    try:
        num_special = int(cfg["default_num_special_tokens"])
        vocab_size = int(cfg.get("default_vocab_size", num_special + len(obj["vocab"])))
        pattern = cfg["pattern"]
    except (KeyError, TypeError, ValueError) as e:
        raise TokalignError("%s: tekken config lacks %s" % (path, e))
    n_ranks = vocab_size - num_special
    ranks = {}
    for k, entry in enumerate(obj["vocab"][:n_ranks]):
        try:
            ranks[base64.b64decode(entry["token_bytes"])] = int(entry["rank"])
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise TokalignError("%s: vocab[%d] is not {rank, token_bytes}" % (path, k))
    listed = obj.get("special_tokens")
    if listed:
        names = {int(s["rank"]): s["token_str"] for s in listed}
    else:
        names = dict(enumerate(TEKKEN_DEFAULT_SPECIALS))
    specials = [(i, names.get(i, "<SPECIAL_%d>" % i)) for i in range(num_special)]
    engine = ranks_engine(ranks, pattern, specials, id_offset=num_special)
    roles = {"unk": names.get(0, "<unk>"), "bos": names.get(1, "<s>"), "eos": names.get(2, "</s>")}
    _bos_template(engine, roles["bos"])
    meta = {"format": "tekken", "pattern": pattern, "num_special_tokens": num_special}
    return engine, roles, meta
