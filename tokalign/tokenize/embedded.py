"""Embedded default tokenizers: rebuilt offline from files shipped inside the mistral-common wheel.

* ``mistral-v1``: ``mistral_common/data/tokenizer.model.v1`` (Mistral-7B v0.1/v0.2, Mixtral-8x7B).
* ``openchat``: the same model + ``<|end_of_turn|>`` = 32000 and ``<|pad_0|>`` = 32001 (special),
  eos = ``<|end_of_turn|>`` and the "GPT4 Correct User/Assistant" chat template (OpenChat-3.5, Starling).
* ``mistral-tekken``: ``mistral_common/data/tekken_240718.json`` (Mistral-NeMo), ids = rank + 1000.

The tests check that each encodes identically to, and has the same fingerprint as, the corresponding
directory of ``../shared/tokenizers``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, Optional, Tuple

from ..errors import TokalignError

OPENCHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ 'GPT4 Correct ' + message['role'].title() + ': ' + "
    "message['content'] + '<|end_of_turn|>'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ 'GPT4 Correct Assistant:' }}{% endif %}"
)
MISTRAL_V1_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
TEKKEN_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + '[/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}"
)

#: embedded name -> (file in mistral_common/data, description)
EMBEDDED = {
    "mistral-v1": ("tokenizer.model.v1", "mistral-common tokenizer.model.v1"),
    "openchat": ("tokenizer.model.v1", "mistral-common tokenizer.model.v1 + <|end_of_turn|>, <|pad_0|>"),
    "mistral-tekken": ("tekken_240718.json", "mistral-common tekken_240718.json"),
}


def mistral_common_data_dir() -> Optional[Path]:
    """``mistral_common/data`` of the installed wheel (found without importing the package), or None."""
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "data"
        if d.is_dir():
            return d
    return None


def embedded_file(name: str) -> Path:
    """Path of the packaged file behind embedded tokenizer ``name``; TokalignError if missing."""
    if name not in EMBEDDED:
        raise TokalignError("no embedded tokenizer %r (have: %s)" % (name, ", ".join(EMBEDDED)))
    d = mistral_common_data_dir()
    f = d / EMBEDDED[name][0] if d else None
    if f is None or not f.is_file():
        raise TokalignError("embedded tokenizer %r needs mistral-common (file %s not found); "
                            "pip install mistral-common" % (name, EMBEDDED[name][0]))
    return f


_BUILT: Dict[str, tuple] = {}


def build_embedded(name: str) -> Tuple[object, Dict[str, str], Optional[str], dict, list]:
    """(engine, roles, chat_template, meta, shared tables slot) of embedded tokenizer ``name`` (built once per
    process)."""
    if name not in _BUILT:
        _BUILT[name] = _build(name) + ([None],)
    engine, roles, template, meta, slot = _BUILT[name]
    return engine, dict(roles), template, dict(meta), slot


def _build(name: str) -> Tuple[object, Dict[str, str], Optional[str], dict]:
    from tokenizers import AddedToken
    from tokenizers import Tokenizer as _Engine

    from .loader import _engine_from_file  # the per-process conversion cache

    path = embedded_file(name)
    engine, roles, meta, _slot = _engine_from_file(path, None)
    if name == "mistral-tekken":
        template = TEKKEN_TEMPLATE
    else:
        template = MISTRAL_V1_TEMPLATE
        if name == "openchat":
            engine = _Engine.from_str(engine.to_str())  # a copy: the cached v1 engine stays as it is
            engine.add_tokens([AddedToken("<|end_of_turn|>", normalized=False, special=True),
                               AddedToken("<|pad_0|>", normalized=False, special=True)])
            if engine.token_to_id("<|end_of_turn|>") != 32000 or engine.token_to_id("<|pad_0|>") != 32001:
                raise TokalignError("embedded openchat: unexpected ids for the added tokens")
            roles = dict(roles, eos="<|end_of_turn|>")
            template = OPENCHAT_TEMPLATE
    meta = dict(meta, embedded=name, file=str(path))
    return engine, roles, template, meta
