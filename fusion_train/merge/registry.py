"""Registry of merge methods: one method per module, each a :class:`MergeMethod` subclass
registered with :func:`register`.

A method sees one parameter tensor at a time (:class:`TensorTask`): the base (pivot) tensor and
the tensors of the models being merged, all fp32 on the compute device, plus its resolved
parameters. Methods that need model-wide statistics (VaRM at ``model``/``layer`` granularity)
set ``needs_statistics`` and receive every tensor in :meth:`MergeMethod.observe` first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

import torch

from tokalign.errors import TokalignError

SHARED = "shared"  # one value for the whole merge (mergekit: top-level ``parameters``)
PER_MODEL = "model"  # one value per merged model (mergekit: ``models[].parameters``)


@dataclass(frozen=True)
class ParamSpec:
    """A method parameter: name, default (None = required), scope and value type."""

    name: str
    default: Any
    scope: str = SHARED
    kind: type = float
    choices: Optional[Tuple[Any, ...]] = None
    help: str = ""

    def coerce(self, value: Any, where: str) -> Any:
        """Convert ``value`` to ``kind``; raise TokalignError naming ``where`` if impossible."""
        try:
            if self.kind is bool:
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low in ("true", "1", "yes", "on"):
                        return True
                    if low in ("false", "0", "no", "off"):
                        return False
                    raise ValueError(value)
                if isinstance(value, (bool, int)):
                    return bool(value)
                raise ValueError(value)
            if self.kind is str:
                out = str(value)
            else:
                if isinstance(value, bool):
                    raise ValueError(value)
                out = self.kind(value)
        except (TypeError, ValueError):
            raise TokalignError("%s: %s must be a %s, got %r" % (where, self.name, self.kind.__name__, value)) from None
        if self.choices is not None and out not in self.choices:
            raise TokalignError("%s: %s must be one of %s, got %r" % (where, self.name, ", ".join(map(str, self.choices)), value))
        return out


@dataclass
class TensorTask:
    """Everything a method needs to merge one parameter tensor.

    ``base`` is None for methods that do not use a base (linear). ``models`` excludes the base.
    ``model_params[j]`` holds the per-model parameters of ``models[j]``; ``params`` the shared ones.
    ``seed`` is the user's seed; DARE derives its per-(tensor, model) streams from it and ``name``
    (:func:`fusion_train.merge.rng.stream_key`).
    """

    name: str
    base: Optional[torch.Tensor]
    models: List[torch.Tensor]
    model_params: List[Dict[str, Any]]
    params: Dict[str, Any]
    seed: int = 0
    layer: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)


class MergeMethod:
    """Base class: subclasses set the class attributes and implement :meth:`merge`."""

    name: str = ""
    description: str = ""
    params: Tuple[ParamSpec, ...] = ()
    uses_base: bool = True  # the base's tensors are read and passed as ``TensorTask.base``
    min_models: int = 1
    max_models: Optional[int] = None
    needs_statistics: bool = False

    def __init__(self, params: Optional[Dict[str, Any]] = None):
        self.shared_params: Dict[str, Any] = dict(params or {})

    def observe(self, task: TensorTask) -> None:
        """Statistics pass (only called when ``needs_statistics``): see every tensor once."""

    def merge(self, task: TensorTask) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def param(cls, name: str) -> Optional[ParamSpec]:
        for p in cls.params:
            if p.name == name:
                return p
        return None


_METHODS: Dict[str, Type[MergeMethod]] = {}


def register(cls: Type[MergeMethod]) -> Type[MergeMethod]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError("merge method %r has no name" % cls)
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError("merge method %r registered twice" % cls.name)
    _METHODS[cls.name] = cls
    return cls


def _load_builtin() -> None:
    # Importing the modules registers their methods.
    from fusion_train.merge import dare, linear, sce, slerp, task_arithmetic, ties, varm  # noqa: F401


def get_method(name: str) -> Type[MergeMethod]:
    """The method class registered as ``name``; TokalignError listing the known names otherwise."""
    _load_builtin()
    try:
        return _METHODS[name]
    except KeyError:
        raise TokalignError("merge_method: unknown method %r (known: %s)" % (name, ", ".join(method_names()))) from None


def method_names() -> List[str]:
    _load_builtin()
    return sorted(_METHODS)


def stack_deltas(base: torch.Tensor, models: Sequence[torch.Tensor]) -> torch.Tensor:
    """[n_models, *shape] fusion vectors delta_j = theta_j - theta_base (fp32)."""
    out = torch.empty((len(models),) + tuple(base.shape), dtype=base.dtype, device=base.device)
    for j, m in enumerate(models):
        torch.sub(m, base, out=out[j])
    return out


def weights_like(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Per-model scalars as a tensor broadcastable against a [n_models, *shape] stack."""
    w = torch.tensor(list(values), dtype=like.dtype, device=like.device)
    return w.reshape((-1,) + (1,) * (like.dim() - 1))
