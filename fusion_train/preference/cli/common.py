"""What the ``sft``, ``dpo``, ``wrpo`` and ``crlft`` subcommands share: their flags come from the config
dataclass (every ``TrainingArguments`` field included) through :func:`fusion_train.cli_args.dataclass_parent`,
like ``fusion-train fuse``; each subcommand module only names its config, its own fields and its entry point."""
from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any, Callable, Dict, Sequence

from fusion_train.cli_args import dataclass_parent
from tokalign.errors import TokalignError

__all__ = ["add_trainer_subcommand", "build_config", "print_summary"]

# fields no flag sets (fixed by the trainers) and flags we define ourselves
_HIDDEN = ("remove_unused_columns", "overwrite_output_dir")
MODEL_DTYPES = ("float32", "bfloat16", "float16", "auto")


def _fields(config_cls, exclude: Sequence[str]):
    return [f for f in dataclasses.fields(config_cls) if f.init and f.name not in _HIDDEN and f.name not in exclude]


def _own_flags(extra: Callable[[argparse._ArgumentGroup], None] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    io = parser.add_argument_group("model and data")
    io.add_argument("--model", required=True, help="starting model directory (safetensors weights + tokenizer)")
    io.add_argument("--data", required=True, help="training data, JSON Lines (docs/implicit.md)")
    io.add_argument("--model-dtype", choices=MODEL_DTYPES, default="float32",
                    help="dtype to load the weights in (default float32 master weights; --bf16 autocasts)")
    io.add_argument("--trust-remote-code", action="store_true",
                    help="allow a model / tokenizer that needs custom code from its repository (off by default)")
    io.add_argument("--allow-pickle", action="store_true",
                    help="load a model folder with only pickled weights (pytorch_model.bin); safetensors otherwise")
    io.add_argument("--overwrite-output-dir", action="store_true",
                    help="write into a non-empty --output-dir (existing files are not deleted)")
    io.add_argument("--json", action="store_true", help="print the final summary as JSON")
    if extra is not None:
        extra(io)
    return parser


def add_trainer_subcommand(subparsers, name: str, config_cls, own_fields: Sequence[str], *, title: str,
                           help: str, description: str, epilog: str, func: Callable, exclude: Sequence[str] = (),
                           extra_flags: Callable = None) -> argparse.ArgumentParser:
    """Add subcommand ``name``: own flags, a ``title`` group with ``own_fields`` of ``config_cls`` and a trainer
    group with every other field (TrainingArguments)."""
    from typing import get_type_hints

    hints = get_type_hints(config_cls)
    fields = _fields(config_cls, exclude)
    own = dataclass_parent(title, [f for f in fields if f.name in own_fields], hints)
    trainer = dataclass_parent("trainer (transformers.TrainingArguments)",
                               [f for f in fields if f.name not in own_fields], hints)
    parser = subparsers.add_parser(
        name, help=help, description=description, epilog=epilog,
        usage="fusion-train %s --model DIR --data FILE --output-dir DIR [%s options] [TrainingArguments flags]"
        % (name, title), formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_own_flags(extra_flags), own, trainer])
    parser.set_defaults(func=func, _config_cls=config_cls, _exclude=tuple(exclude))
    return parser


def build_config(args: argparse.Namespace, **fixed: Any):
    """The config dataclass from parsed flags (``fixed`` fields set by the subcommand); TokalignError on
    invalid values."""
    cls = args._config_cls
    values: Dict[str, Any] = {f.name: getattr(args, f.name) for f in _fields(cls, args._exclude)
                              if hasattr(args, f.name)}
    values.update(fixed)
    if not values.get("output_dir"):
        raise TokalignError("--output-dir is required")
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise TokalignError("invalid trainer arguments: %s" % str(exc).splitlines()[0]) from exc


def print_summary(config, args: argparse.Namespace, summary: Dict[str, Any]) -> int:
    from ..run import summary_line

    if config.process_index == 0:
        print(json.dumps(summary, default=str) if args.json else summary_line(summary))
    return 0
