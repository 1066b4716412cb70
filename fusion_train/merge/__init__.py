"""Parameter-space merging of same-architecture LLMs (the last stage of FuseLLM / FuseChat).

Methods (one module each, registered in :mod:`fusion_train.merge.registry`): ``sce`` (FuseChat-2),
``varm`` (FuseChat-1), and mergekit-compatible baselines ``linear``, ``task_arithmetic``, ``ties``,
``dare_ties``, ``dare_linear``, ``slerp``. Tensors stream one at a time from memory-mapped
safetensors; see :mod:`fusion_train.merge.runner`.

Example::

    from fusion_train.merge import MergeConfig, ModelSpec, MergeOptions, run_merge
    cfg = MergeConfig("sce", Path("pivot"), [ModelSpec(Path("t1")), ModelSpec(Path("t2"))],
                      parameters={"select_topk": 0.1})
    summary = run_merge(validate(cfg), "merged/", MergeOptions(device="cpu"))
"""
from fusion_train.merge.config import MergeConfig, ModelSpec, load_yaml, validate
from fusion_train.merge.registry import MergeMethod, ParamSpec, TensorTask, get_method, method_names, register
from fusion_train.merge.runner import MergeOptions, MergeSummary, run_merge

__all__ = [
    "MergeConfig", "ModelSpec", "load_yaml", "validate",
    "MergeMethod", "ParamSpec", "TensorTask", "get_method", "method_names", "register",
    "MergeOptions", "MergeSummary", "run_merge",
]
