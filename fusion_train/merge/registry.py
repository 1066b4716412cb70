"""Registry of merge methods: one method per module, each a :class:`MergeMethod` subclass
registered with :func:`register`; :data:`BUILTIN` names the module of each built-in method, which is
imported only when that method is asked for.

A method sees one parameter tensor at a time (:class:`TensorTask`): the base (pivot) tensor and
the tensors of the models being merged, all fp32, plus its resolved parameters. Two paths:

* :meth:`MergeMethod.merge`: torch tensors on the compute device (the reference; CUDA);
* :meth:`MergeMethod.merge_array`: numpy fp32 arrays on CPU, computed by the native kernels
  (:mod:`fusion_train.merge.native`) without importing torch. Methods with a kernel override it
  (:meth:`MergeMethod.has_native`); their ``merge`` runs the same ``merge_array`` on numpy views of
  CPU tensors (:func:`native_on_torch`), so both paths give the same result on CPU.

Modules of methods with a native kernel import torch only inside their torch code. Methods that
need model-wide statistics (VaRM at ``model``/``layer`` granularity) set ``needs_statistics`` and
receive every tensor in :meth:`MergeMethod.observe` first.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

from fusion_train.merge import native
from tokalign.errors import TokalignError
from tokalign.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import torch

SHARED = "shared"  # one value for the whole merge (mergekit: top-level ``parameters``)
PER_MODEL = "model"  # one value per merged model (mergekit: ``models[].parameters``)

# built-in method name -> module that registers it (imported on demand: slerp and varm import torch)
BUILTIN = {
    "linear": "fusion_train.merge.linear",
    "task_arithmetic": "fusion_train.merge.task_arithmetic",
    "ties": "fusion_train.merge.ties",
    "dare_ties": "fusion_train.merge.dare",
    "dare_linear": "fusion_train.merge.dare",
    "sce": "fusion_train.merge.sce",
    "slerp": "fusion_train.merge.slerp",
    "varm": "fusion_train.merge.varm",
}

_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")


def layer_of(name: str) -> Optional[int]:
    """Transformer block index in a tensor name (``model.layers.3.mlp...`` -> 3), else None."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


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

    Tensors are fp32 torch tensors (:meth:`MergeMethod.merge`) or fp32 C-contiguous numpy arrays
    (:meth:`MergeMethod.merge_array`). ``base`` is None for methods that do not use a base (linear).
    ``models`` excludes the base.
    ``model_params[j]`` holds the per-model parameters of ``models[j]``; ``params`` the shared ones.
    ``seed`` is the user's seed; DARE derives its per-(tensor, model) streams from it and ``name``
    (:func:`fusion_train.merge.rng.stream_key`). ``out``: where :meth:`MergeMethod.merge_array` may
    write its result (fp32 C-contiguous, the tensors' shape, not aliasing them); None: allocate.
    """

    name: str
    base: Optional[Any]
    models: List[Any]
    model_params: List[Dict[str, Any]]
    params: Dict[str, Any]
    seed: int = 0
    layer: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    out: Optional[Any] = None

    def with_tensors(self, base: Optional[Any], models: List[Any]) -> "TensorTask":
        """The same task over other tensors (e.g. numpy views of these)."""
        return replace(self, base=base, models=list(models))


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
        """Merge torch tensors (any device)."""
        raise NotImplementedError

    def merge_array(self, task: TensorTask) -> Optional[np.ndarray]:
        """Merge numpy fp32 C-contiguous arrays with the native kernels (no torch); None when they
        cannot take this task (callers then use :meth:`merge`). Not overridden: no native kernel."""
        return None

    @classmethod
    def has_native(cls) -> bool:
        """The method has a native (numpy) path: it overrides :meth:`merge_array`."""
        return cls.merge_array is not MergeMethod.merge_array

    def native_torch(self, task: TensorTask) -> Optional[torch.Tensor]:
        """:meth:`merge_array` on CPU torch tensors (:func:`native_on_torch`); None if it does not apply."""
        return native_on_torch(self.merge_array, task) if self.has_native() else None

    @classmethod
    def param(cls, name: str) -> Optional[ParamSpec]:
        for p in cls.params:
            if p.name == name:
                return p
        return None


REGISTRY: "Registry[Type[MergeMethod]]" = Registry("merge method", BUILTIN)


def register(cls: Type[MergeMethod]) -> Type[MergeMethod]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    return REGISTRY.add(cls.name, cls)


def get_method(name: str) -> Type[MergeMethod]:
    """The method class registered as ``name`` (importing its built-in module if needed);
    TokalignError listing the known names otherwise."""
    return REGISTRY.get(name, "merge_method: unknown method {name!r} (known: {names})")


def method_names() -> List[str]:
    """Names of the built-in and registered methods (imports nothing)."""
    return sorted(REGISTRY.names())


def native_on_torch(merge_array: Callable[[TensorTask], Optional[np.ndarray]], task: TensorTask) -> Optional[torch.Tensor]:
    """Run a numpy ``merge_array`` on zero-copy numpy views of the task's torch tensors and return
    its result as a torch tensor; None when the native kernels are off/missing or a tensor is not CPU
    fp32 C-contiguous (then the caller runs its torch code)."""
    import torch

    tensors = ([task.base] if task.base is not None else []) + list(task.models)
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
        return None
    arrays = [t.detach().numpy() for t in tensors]
    if not native.usable(arrays):
        return None
    base = arrays[0] if task.base is not None else None
    out = merge_array(task.with_tensors(base, arrays[1:] if task.base is not None else arrays))
    return None if out is None else torch.from_numpy(out)


def stack_deltas(base: torch.Tensor, models: Sequence[torch.Tensor]) -> torch.Tensor:
    """[n_models, *shape] fusion vectors delta_j = theta_j - theta_base (fp32)."""
    import torch

    out = torch.empty((len(models),) + tuple(base.shape), dtype=base.dtype, device=base.device)
    for j, m in enumerate(models):
        torch.sub(m, base, out=out[j])
    return out


def weights_like(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Per-model scalars as a tensor broadcastable against a [n_models, *shape] stack."""
    import torch

    w = torch.tensor(list(values), dtype=like.dtype, device=like.device)
    return w.reshape((-1,) + (1,) * (like.dim() - 1))
