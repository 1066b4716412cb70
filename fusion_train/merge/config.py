"""Merge configuration: mergekit's YAML schema for the supported methods, or command-line options.

Accepted YAML (a subset of mergekit's schema)::

    merge_method: sce            # sce | varm | linear | task_arithmetic | ties | dare_ties | dare_linear | slerp
    base_model: path/to/pivot    # required except for linear
    models:
      - model: path/to/target1
        parameters: {weight: 1.0, density: 0.5}
      - model: path/to/target2
    parameters: {select_topk: 0.1, variant: fusechat}
    dtype: float32               # output dtype (math is always fp32); default: the base's dtype
    out_dtype: bfloat16          # overrides dtype for the output, as in mergekit

Parameter values are scalars, mergekit filter lists (``[{filter: self_attn, value: 0.3},
{value: 0.5}]``: first entry whose filter is a substring of the tensor name, or has no filter /
``*``) or gradients (a list of numbers interpolated over layer depth t = layer / (n_layers - 1),
t = 0 outside layers, as mergekit does). Per-model parameters fall back to the top-level
``parameters`` and then to the method's default. Relative model paths are resolved against the
current directory, then against the YAML file's folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from fusion_train.merge.registry import PER_MODEL, SHARED, MergeMethod, ParamSpec, get_method
from tokalign.errors import TokalignError

_TOP_KEYS = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "name", "tokenizer_source"}
_UNSUPPORTED = {"slices": "layer slices", "tokenizer": "tokenizer merging", "chat_template": "chat templates",
                "modules": "module-wise configs"}


@dataclass
class ModelSpec:
    """One merged model: its folder and its raw (unresolved) parameter settings."""

    path: Path
    parameters: Dict[str, Any] = field(default_factory=dict)


@dataclass
class MergeConfig:
    """A validated merge request (paths exist; method and parameter names are known)."""

    method: str
    base: Optional[Path]
    models: List[ModelSpec]
    parameters: Dict[str, Any] = field(default_factory=dict)
    out_dtype: Optional[str] = None
    source: str = "command line"

    def method_class(self) -> type:
        return get_method(self.method)

    def shared_values(self, tensor_name: str, t: float) -> Dict[str, Any]:
        """Shared parameters for one tensor (filters/gradients resolved, defaults applied)."""
        cls = self.method_class()
        out = {}
        for spec in cls.params:
            if spec.scope != SHARED:
                continue
            out[spec.name] = _resolve(spec, [self.parameters], tensor_name, t, self.source)
        return out

    def model_values(self, index: int, tensor_name: str, t: float) -> Dict[str, Any]:
        """Per-model parameters of ``models[index]`` for one tensor."""
        cls = self.method_class()
        out = {}
        for spec in cls.params:
            if spec.scope != PER_MODEL:
                continue
            where = "%s: models[%d]" % (self.source, index)
            out[spec.name] = _resolve(spec, [self.models[index].parameters, self.parameters], tensor_name, t, where)
        return out

    def to_dict(self) -> Dict[str, Any]:
        """mergekit-style dict (for the summary / reproducibility)."""
        d: Dict[str, Any] = {"merge_method": self.method}
        if self.base is not None:
            d["base_model"] = str(self.base)
        d["models"] = [{"model": str(m.path), "parameters": dict(m.parameters)} for m in self.models]
        d["parameters"] = dict(self.parameters)
        if self.out_dtype:
            d["dtype"] = self.out_dtype
        return d


def _resolve(spec: ParamSpec, scopes: List[Dict[str, Any]], tensor_name: str, t: float, where: str) -> Any:
    for scope in scopes:
        if spec.name in scope:
            value = evaluate_setting(scope[spec.name], tensor_name, t, where + ": " + spec.name)
            if value is not None:
                return spec.coerce(value, where)
    if spec.default is None:
        raise TokalignError("%s: missing required parameter %r" % (where, spec.name))
    return spec.default


def evaluate_setting(setting: Any, tensor_name: str, t: float, where: str) -> Any:
    """Resolve a mergekit parameter setting (scalar, filter list or gradient) for one tensor."""
    if isinstance(setting, (int, float, str, bool)):
        return setting
    if isinstance(setting, dict):
        setting = [setting]
    if isinstance(setting, list):
        if not setting:
            return None
        if all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in setting):
            scaled = t * (len(setting) - 1)
            i0 = int(scaled)
            i1 = min(len(setting) - 1, i0 + 1)
            frac = scaled - i0
            return (1 - frac) * setting[i0] + frac * setting[i1]
        if all(isinstance(e, (int, float, str, bool)) for e in setting):
            return setting[int(t * (len(setting) - 1))]
        for cond in setting:
            if not isinstance(cond, dict) or "value" not in cond:
                raise TokalignError("%s: filter entries need a 'value' (got %r)" % (where, cond))
            filt = cond.get("filter")
            if filt is None or filt == "*" or filt in tensor_name:
                return evaluate_setting(cond["value"], tensor_name, t, where)
        return None
    raise TokalignError("%s: unsupported parameter value %r" % (where, setting))


def _check_param_names(cls: type, params: Dict[str, Any], where: str, per_model: bool) -> None:
    known = {p.name: p for p in cls.params}
    for key in params:
        spec = known.get(key)
        if spec is None:
            raise TokalignError("%s: unknown parameter %r for merge_method %s (known: %s)"
                                % (where, key, cls.name, ", ".join(sorted(known)) or "none"))
        if per_model and spec.scope == SHARED:
            raise TokalignError("%s: %r is a global parameter of %s; put it under top-level 'parameters'"
                                % (where, key, cls.name))


def _model_path(value: Any, where: str, yaml_dir: Optional[Path]) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise TokalignError("%s: expected a model folder path, got %r" % (where, value))
    p = Path(value).expanduser()
    if not p.is_dir() and yaml_dir is not None and not p.is_absolute() and (yaml_dir / p).is_dir():
        p = yaml_dir / p
    if not p.is_dir():
        raise TokalignError("%s: model folder %s not found (models are read from local folders only)" % (where, value))
    return p


def validate(cfg: MergeConfig) -> MergeConfig:
    """Check method, parameter names and model count; return ``cfg``."""
    cls: type[MergeMethod] = cfg.method_class()
    _check_param_names(cls, cfg.parameters, "%s: parameters" % cfg.source, per_model=False)
    for i, m in enumerate(cfg.models):
        _check_param_names(cls, m.parameters, "%s: models[%d].parameters" % (cfg.source, i), per_model=True)
    if cls.uses_base and cfg.base is None:
        raise TokalignError("%s: merge_method %s needs base_model (the pivot)" % (cfg.source, cls.name))
    n = len(cfg.models)
    if n < cls.min_models:
        raise TokalignError("%s: merge_method %s needs at least %d model(s) besides the base, got %d"
                            % (cfg.source, cls.name, cls.min_models, n))
    if cls.max_models is not None and n > cls.max_models:
        raise TokalignError("%s: merge_method %s takes at most %d model(s) besides the base, got %d"
                            % (cfg.source, cls.name, cls.max_models, n))
    # Fail early on bad values: resolve everything once for a generic tensor name.
    cfg.shared_values("", 0.0)
    for i in range(n):
        cfg.model_values(i, "", 0.0)
    return cfg


def load_yaml(path: Path | str) -> MergeConfig:
    """Read and validate a mergekit-style YAML merge config."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TokalignError("%s: cannot read (%s)" % (path, exc)) from None
    except yaml.YAMLError as exc:
        raise TokalignError("%s: invalid YAML (%s)" % (path, str(exc).replace("\n", " "))) from None
    src = str(path)
    if not isinstance(raw, dict):
        raise TokalignError("%s: expected a mapping at the top level" % src)
    for key in raw:
        if key in _UNSUPPORTED:
            raise TokalignError("%s: %r (%s) is not supported; list whole models under 'models'" % (src, key, _UNSUPPORTED[key]))
        if key not in _TOP_KEYS:
            raise TokalignError("%s: unknown key %r (known: %s)" % (src, key, ", ".join(sorted(_TOP_KEYS))))
    if "merge_method" not in raw:
        raise TokalignError("%s: missing 'merge_method'" % src)
    method = str(raw["merge_method"])
    get_method(method)
    yaml_dir = path.resolve().parent
    base = _model_path(raw["base_model"], "%s: base_model" % src, yaml_dir) if raw.get("base_model") else None
    models_raw = raw.get("models") or []
    if not isinstance(models_raw, list):
        raise TokalignError("%s: 'models' must be a list" % src)
    models = []
    for i, entry in enumerate(models_raw):
        where = "%s: models[%d]" % (src, i)
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise TokalignError("%s: expected {model: PATH, parameters: {...}}" % where)
        extra = set(entry) - {"model", "parameters"}
        if extra:
            raise TokalignError("%s: unknown key(s) %s" % (where, ", ".join(sorted(extra))))
        params = entry.get("parameters") or {}
        if not isinstance(params, dict):
            raise TokalignError("%s.parameters: expected a mapping" % where)
        mpath = _model_path(entry["model"], where + ".model", yaml_dir)
        models.append(ModelSpec(mpath, dict(params)))
    # mergekit lists the base among the models for base-using methods; it is the pivot, not a target.
    if base is not None and get_method(method).uses_base:
        models = [m for m in models if m.path.resolve() != base.resolve()]
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise TokalignError("%s: 'parameters' must be a mapping" % src)
    out_dtype = raw.get("out_dtype") or raw.get("dtype")
    return validate(MergeConfig(method, base, models, dict(params), str(out_dtype) if out_dtype else None, src))
