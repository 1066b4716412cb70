"""The :class:`Tokenizer` wrapper (a ``tokenizers.Tokenizer`` engine + canonical tables) and :class:`Encoding`."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import TokalignError
from .canonical import CanonicalTables, build_tables, exact_offsets_batch, fingerprint

#: chat-role tokens reported in ``special_ids`` when the vocabulary has them (role name -> token).
CHAT_ROLE_TOKENS = (
    ("im_start", "<|im_start|>"), ("im_end", "<|im_end|>"),
    ("end_of_turn", "<|end_of_turn|>"), ("end_of_turn", "<end_of_turn>"), ("start_of_turn", "<start_of_turn>"),
    ("inst", "[INST]"), ("inst_end", "[/INST]"),
    ("system_prompt", "[SYSTEM_PROMPT]"), ("system_prompt_end", "[/SYSTEM_PROMPT]"),
    ("begin_of_text", "<|begin_of_text|>"), ("end_of_text", "<|end_of_text|>"),
    ("start_header_id", "<|start_header_id|>"), ("end_header_id", "<|end_header_id|>"),
    ("eot_id", "<|eot_id|>"), ("eom_id", "<|eom_id|>"), ("endoftext", "<|endoftext|>"),
)
BASIC_ROLES = ("bos", "eos", "pad", "unk")


@dataclass
class Encoding:
    """Token ids of one text and their character spans ``[start, end)`` in that text.

    ``offsets_exact`` is True when the offsets were derived from canonical token texts that add up to the text
    (see :mod:`tokalign.tokenize.canonical`); False when the text was changed by a normalizer (NFC, lower-casing,
    WordPiece) and the spans are the ones reported by the tokenizers library.
    """

    ids: np.ndarray
    offsets: np.ndarray
    offsets_exact: bool = True

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def _chat_template_error(e: Exception) -> TokalignError:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return TokalignError("chat template failed: %s" % msg)


class Tokenizer:
    """A loaded tokenizer: the Rust ``tokenizers`` engine does the encoding; ``hf`` (transformers) is only
    created, lazily, for chat templates.

    Use :func:`tokalign.tokenize.load_tokenizer` to make one.
    """

    def __init__(self, engine, *, name: str, source: str, roles: Optional[Mapping[str, Optional[str]]] = None,
                 chat_template: Optional[str] = None, hf_factory: Optional[Callable[[], object]] = None,
                 meta: Optional[dict] = None, tables_slot: Optional[list] = None):
        self.engine = engine
        self.name = name
        self.source = source
        self.meta = dict(meta or {})
        self.chat_template = chat_template
        self._roles = {k: v for k, v in (roles or {}).items() if v}
        self._hf_factory = hf_factory
        self._hf = None
        # a one-element list shared by tokenizers built on the same cached engine (see loader._ENGINE_CACHE)
        self._tables_slot = tables_slot if tables_slot is not None else [None]
        # no padding/truncation: encodings must cover the whole text
        engine.no_padding()
        engine.no_truncation()

    # ------------------------------------------------------------------------------------ vocabulary
    @property
    def _tables(self) -> CanonicalTables:
        if self._tables_slot[0] is None:
            self._tables_slot[0] = build_tables(self.engine)
        return self._tables_slot[0]

    @property
    def vocab_size(self) -> int:
        """Number of ids (added tokens included): one more than the largest id."""
        return len(self._tables.raw)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def family(self) -> str:
        """"bytelevel", "metaspace" (SentencePiece-style), "wordpiece" or "plain"."""
        return self._tables.family.kind

    @property
    def dummy_prefix(self) -> bool:
        """True when the tokenizer prepends a space (``▁``) to the text (SentencePiece ``add_dummy_prefix``)."""
        return self._tables.family.prepend != "never"

    def token_texts(self) -> List[bytes]:
        """Canonical bytes of every id (see :mod:`tokalign.tokenize.canonical`)."""
        return list(self._tables.texts)

    def raw_tokens(self) -> List[str]:
        """Vocabulary strings as stored ("▁Hello", "Ġworld", "<0x0A>"); '' for unused ids."""
        return list(self._tables.raw)

    @property
    def special_mask(self) -> np.ndarray:
        """bool (vocab_size,): tokens the tokenizer marks special (control tokens, chat markers)."""
        m = self._tables.special_mask.copy()
        m.flags.writeable = False
        return m

    @cached_property
    def special_ids(self) -> Dict[str, int]:
        """Role -> id: bos/eos/pad/unk (from the tokenizer config) and chat-role tokens present in the vocab."""
        out: Dict[str, int] = {}
        for role in BASIC_ROLES:
            tok = self._roles.get(role)
            if tok is not None:
                i = self.engine.token_to_id(tok)
                if i is not None:
                    out[role] = int(i)
        for role, tok in CHAT_ROLE_TOKENS:
            if role in out:
                continue
            i = self.engine.token_to_id(tok)
            if i is not None:
                out[role] = int(i)
        return out

    @cached_property
    def fingerprint(self) -> str:
        """sha256 hex over canonical texts + special flags (same for every load path of one vocabulary)."""
        return fingerprint(self._tables.texts, self._tables.special_mask)

    def token_to_id(self, token: str) -> Optional[int]:
        return self.engine.token_to_id(token)

    # ------------------------------------------------------------------------------------- encoding
    def _wrap_batch(self, texts: List[str], encs: Sequence, add_special_tokens: bool,
                    offsets_tracked: bool = True) -> List[Encoding]:
        """Encodings from the engine's: exact offsets in one C++ call, library offsets where they do not add up.

        ``offsets_tracked=False``: ``encs`` come from ``encode_batch_fast`` (no library offsets), so the items
        that need the library offsets are encoded again with offsets.
        """
        seq = [e.sequence_ids for e in encs] if add_special_tokens else None  # None marks BOS/EOS ...
        ids, offsets = exact_offsets_batch(texts, [e.ids for e in encs], self._tables, sequence_ids=seq)
        missing = [k for k, o in enumerate(offsets) if o is None]
        if missing:
            lib = encs if offsets_tracked else dict(zip(missing, self.engine.encode_batch(
                [texts[k] for k in missing], add_special_tokens=add_special_tokens)))
            for k in missing:
                offsets[k] = np.asarray(lib[k].offsets, dtype=np.int64).reshape(-1, 2)
        library_offsets = set(missing)
        return [Encoding(i, o, k not in library_offsets) for k, (i, o) in enumerate(zip(ids, offsets))]

    def encode(self, text: str, add_special_tokens: bool = False) -> Encoding:
        """Encode one text; offsets are character offsets into ``text``."""
        if not isinstance(text, str):
            raise TokalignError("encode() needs a str, got %s" % type(text).__name__)
        enc = self.engine.encode(text, add_special_tokens=add_special_tokens)
        return self._wrap_batch([text], [enc], add_special_tokens)[0]

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> List[Encoding]:
        """Encode many texts; the tokenizers library runs them in parallel (Rust threads)."""
        texts = list(texts)
        for k, t in enumerate(texts):
            if not isinstance(t, str):
                raise TokalignError("encode_batch(): item %d is %s, not str" % (k, type(t).__name__))
        # Offsets come from the canonical texts: the engine need not track them (about 15% faster), except for
        # WordPiece, whose texts never add up (lower-casing, no spaces), so the library offsets are always needed.
        fast = self._tables.family.kind != "wordpiece" and hasattr(self.engine, "encode_batch_fast")
        if fast:
            encs = self.engine.encode_batch_fast(texts, add_special_tokens=add_special_tokens)
        else:
            encs = self.engine.encode_batch(texts, add_special_tokens=add_special_tokens)
        return self._wrap_batch(texts, encs, add_special_tokens, offsets_tracked=not fast)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.engine.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    # ---------------------------------------------------------------------------------- chat template
    @property
    def hf(self):
        """A transformers tokenizer for chat templates / special-token roles (created on first use)."""
        if self._hf is None:
            if self._hf_factory is None:
                raise TokalignError("%s: no transformers tokenizer available" % self.name)
            try:
                self._hf = self._hf_factory()
            except TokalignError:
                raise
            except Exception as e:  # transformers raises many types; keep one line
                raise TokalignError("%s: transformers could not load the tokenizer: %s"
                                    % (self.name, str(e).splitlines()[0] if str(e) else type(e).__name__))
        return self._hf

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)

    def apply_chat_template(self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = False,
                            **kwargs) -> str:
        """Render ``messages`` with the tokenizer's chat template (transformers / jinja).

        Without a template the fallback is plain concatenation of the contents joined by ``"\\n\\n"`` (the
        same as the corpus reader's ``template="plain"``).
        """
        if not self.chat_template:
            return "\n\n".join(str(m.get("content", "")) for m in messages)
        try:
            render = None
            if self._hf is None:
                try:  # transformers' own renderer, without building a transformers tokenizer (that is slow)
                    from transformers.utils.chat_template_utils import render_jinja_template as render
                except ImportError:  # older transformers: go through the tokenizer object
                    render = None
            if render is not None:
                tokens = {r + "_token": t for r, t in self._roles.items()}
                rendered, _ = render(conversations=[[dict(m) for m in messages]], chat_template=self.chat_template,
                                     add_generation_prompt=add_generation_prompt, **dict(tokens, **kwargs))
                out = rendered[0]
            else:
                out = self.hf.apply_chat_template(list(messages), tokenize=False,
                                                  add_generation_prompt=add_generation_prompt, **kwargs)
        except TokalignError:
            raise
        except Exception as e:
            raise _chat_template_error(e)
        return out if isinstance(out, str) else str(out)

    def __repr__(self) -> str:
        return "Tokenizer(name=%r, vocab_size=%d, family=%r, source=%r)" % (
            self.name, self.vocab_size, self.family, self.source)
