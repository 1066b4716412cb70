"""Flags from config dataclasses, shared by the ``fusion-train`` trainers' CLIs (``fuse``, ``sft``, ``dpo``,
``wrpo``, ``crlft``): transformers' own ``HfArgumentParser`` spelling of every field, through its public API."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Sequence

__all__ = ["dataclass_parent"]


def dataclass_parent(title: str, fields: Sequence[dataclasses.Field], hints: Dict[str, Any]):
    """An ``HfArgumentParser`` (no -h) holding ``fields`` of a config dataclass in an argument group ``title``, to
    be a ``parents=`` entry of a subcommand: transformers' own flag spelling, without its private helpers."""
    from transformers import HfArgumentParser

    # a dataclass view of the fields; copies, since HfArgumentParser rewrites field.type in place
    view = dataclasses.make_dataclass(
        "ConfigFlags", [(f.name, hints[f.name], dataclasses.field(
            default=f.default, default_factory=f.default_factory, metadata=f.metadata)) for f in fields]
    )
    view._argument_group_name = title
    return HfArgumentParser(view, add_help=False)
