"""Generation engines of ``fusion-train sample``: transformers (always), vLLM and llama.cpp (only where
``vllm`` / ``llama_cpp`` import; never installed by this project).

An engine is opened for one model (:class:`ModelSpec`) and turns a batch of ``(prompt, sample)`` units into
:class:`Generation` results; all engines write the same rows. Seeds: the transformers engine seeds each batch
(``torch.manual_seed(batch_seed)``; the same batch composition reproduces the same texts), vLLM and llama.cpp
take a seed per request (``unit_seed``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tokalign.errors import TokalignError

__all__ = ["ModelSpec", "Generation", "ENGINES", "open_engine", "stable_seed", "END_OF_TURN_TOKENS"]

#: end-of-turn tokens of common chat templates; generation stops at any of them present in the vocabulary
END_OF_TURN_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|end_of_turn|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                      "<|eom_id|>")
ENGINES = ("transformers", "vllm", "llama.cpp")


def stable_seed(*parts: Any) -> int:
    """A 31-bit seed from its parts (sha256: the same on every machine and Python version)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass
class ModelSpec:
    """One source model and its sampling parameters. ``temperature`` 0 is greedy decoding; ``top_k`` 0 is
    off; ``chat_template`` is a Jinja string or a file holding one (default: the tokenizer's own)."""

    path: str
    name: Optional[str] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    repetition_penalty: Optional[float] = None
    chat_template: Optional[str] = None
    max_new_tokens: Optional[int] = None

    def __post_init__(self) -> None:
        self.path = os.fspath(self.path)
        if not self.name:
            self.name = Path(self.path.rstrip("/")).name or self.path

    def sampling(self) -> Dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "repetition_penalty": self.repetition_penalty, "max_new_tokens": self.max_new_tokens}


@dataclass
class Generation:
    text: str
    finish_reason: str  # "stop" (an end-of-sequence / end-of-turn token) or "length"
    new_tokens: int


@dataclass
class _Unit:
    prompt: Dict[str, Any]
    sample: int
    seed: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)


def _template_text(spec: ModelSpec) -> Optional[str]:
    if spec.chat_template is None:
        return None
    p = Path(spec.chat_template)
    if len(spec.chat_template) < 4096 and "{" not in spec.chat_template and p.is_file():
        return p.read_text(encoding="utf-8")
    return spec.chat_template


def load_tokenizer(path: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises many kinds; one line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TokalignError("cannot load the tokenizer of %s: %s" % (path, msg)) from None


def stop_ids(tokenizer, generation_config=None) -> List[int]:
    """EOS of the generation config and the tokenizer, and every known end-of-turn token in the vocabulary."""
    ids: List[int] = []
    for source in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(source, int):
            ids.append(source)
        elif isinstance(source, (list, tuple)):
            ids.extend(int(i) for i in source)
    vocab = tokenizer.get_vocab()
    ids.extend(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return sorted(set(ids))


def render_prompt(tokenizer, messages: Sequence[Dict[str, str]], template: Optional[str], model: str) -> str:
    """The prompt text of ``messages`` under the model's chat template, with the generation prompt."""
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise TokalignError("model %s: its tokenizer has no chat template; give one (chat_template in "
                            "--model-config)" % model)
    try:
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True,
                                             chat_template=template)
    except Exception as exc:  # jinja errors (a template that raises on a system turn, ...)
        raise TokalignError("model %s: its chat template failed: %s" % (model, str(exc).splitlines()[0])) from None


class TransformersEngine:
    """Batched ``model.generate`` with left padding; the model loads through ``tokalign.models.load_causal_lm``
    (safetensors only unless ``allow_pickle``)."""

    name = "transformers"

    def __init__(self, spec: ModelSpec, *, dtype: str = "auto", device: str = "auto",
                 trust_remote_code: bool = False, allow_pickle: bool = False) -> None:
        from tokalign.models import load_causal_lm

        self.spec = spec
        self.tokenizer = load_tokenizer(spec.path, trust_remote_code)
        self.tokenizer.padding_side = "left"
        self.template = _template_text(spec)
        self.model, _ = load_causal_lm(spec.path, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                                       allow_pickle=allow_pickle)
        self.stops = stop_ids(self.tokenizer, getattr(self.model, "generation_config", None))
        if not self.stops:
            raise TokalignError("model %s: no end-of-sequence token in its tokenizer or generation config"
                                % spec.name)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stops[0]

    def encode(self, messages: Sequence[Dict[str, str]]) -> List[int]:
        text = render_prompt(self.tokenizer, messages, self.template, self.spec.name)
        # the template writes BOS itself where the model wants one
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, units: Sequence[_Unit], batch_seed: int, max_new_tokens: int) -> List[Generation]:
        import torch
        from transformers import GenerationConfig

        encoded = [self.encode(u.prompt["messages"]) for u in units]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, e in enumerate(encoded):
            ids[i, width - len(e):] = torch.tensor(e, dtype=torch.long)
            mask[i, width - len(e):] = 1
        s = self.spec
        sample = bool(s.temperature and s.temperature > 0)
        kwargs: Dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=sample, eos_token_id=self.stops,
                                      pad_token_id=self.pad_id, repetition_penalty=s.repetition_penalty or 1.0)
        if sample:
            kwargs.update(temperature=s.temperature, top_p=s.top_p if s.top_p is not None else 1.0,
                          top_k=s.top_k or 0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        config = GenerationConfig(**kwargs)
        device = next(self.model.parameters()).device
        torch.manual_seed(batch_seed)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                      generation_config=config)
        results = []
        stops = set(self.stops)
        for row in out[:, width:].tolist():
            end = next((i for i, t in enumerate(row) if t in stops), None)
            kept = row if end is None else row[:end]
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            results.append(Generation(text, "length" if end is None else "stop",
                                      len(kept) + (0 if end is None else 1)))
        return results

    def close(self) -> None:
        del self.model
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass


class VllmEngine:
    """vLLM (only where ``import vllm`` works): the model's own chat template through its tokenizer, one seed
    per request."""

    name = "vllm"

    def __init__(self, spec: ModelSpec, *, dtype: str = "auto", device: str = "auto",
                 trust_remote_code: bool = False, allow_pickle: bool = False) -> None:
        try:
            import vllm
        except ImportError:
            raise TokalignError("--engine vllm: the vllm package is not installed (pip install vllm)") from None
        from tokalign.models import refuse_remote_code

        if Path(spec.path).is_dir() and not trust_remote_code:
            refuse_remote_code(Path(spec.path), spec.path)
        self.spec = spec
        self.tokenizer = load_tokenizer(spec.path, trust_remote_code)
        self.template = _template_text(spec)
        vdtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, dtype)
        # "auto" lets vLLM fall back to pickled *.bin / *.pt weights: only when the user opted in
        self.llm = vllm.LLM(model=spec.path, dtype=vdtype, trust_remote_code=trust_remote_code,
                            load_format="auto" if allow_pickle else "safetensors")
        self._vllm = vllm
        self.stops = stop_ids(self.tokenizer)

    def generate(self, units: Sequence[_Unit], batch_seed: int, max_new_tokens: int) -> List[Generation]:
        s = self.spec
        prompts, params = [], []
        for u in units:
            prompts.append(render_prompt(self.tokenizer, u.prompt["messages"], self.template, s.name))
            params.append(self._vllm.SamplingParams(
                n=1, temperature=s.temperature or 0.0, top_p=s.top_p if s.top_p is not None else 1.0,
                top_k=s.top_k if s.top_k else -1, repetition_penalty=s.repetition_penalty or 1.0,
                max_tokens=max_new_tokens, seed=u.seed, stop_token_ids=self.stops, skip_special_tokens=True))
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        return [Generation(o.outputs[0].text, "stop" if o.outputs[0].finish_reason == "stop" else "length",
                           len(o.outputs[0].token_ids)) for o in outs]

    def close(self) -> None:
        del self.llm


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python (only where ``import llama_cpp`` works), for GGUF files; the GGUF's
    own chat template (or the spec's), one seed per request, one request at a time.

    Set against llama-cpp-python's defaults so that it samples as the transformers engine does: the GGUF's
    template is used even where llama-cpp-python would swap in a built-in format it guesses from it, min-p is
    off (its default is 0.05), and it runs as many threads as torch does (its default is half the CPUs)."""

    name = "llama.cpp"

    def __init__(self, spec: ModelSpec, *, dtype: str = "auto", device: str = "auto",
                 trust_remote_code: bool = False, allow_pickle: bool = False) -> None:
        # GGUF files hold no pickles: allow_pickle changes nothing here
        try:
            import llama_cpp
        except ImportError:
            raise TokalignError("--engine llama.cpp: the llama-cpp-python package is not installed "
                                "(pip install llama-cpp-python)") from None
        path = Path(spec.path)
        if path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) != 1:
                raise TokalignError("%s: --engine llama.cpp needs one .gguf file (found %d)" % (path, len(ggufs)))
            path = ggufs[0]
        if path.suffix != ".gguf" or not path.is_file():
            raise TokalignError("%s: --engine llama.cpp needs a .gguf file" % spec.path)
        self.spec = spec
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=0, n_gpu_layers=0 if device == "cpu" else -1,
                                   n_threads=_torch_threads(), n_threads_batch=_torch_threads(), verbose=False)
        template = _template_text(spec)
        if template is not None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            eos, bos = self.llm.token_eos(), self.llm.token_bos()
            text = lambda t: self.llm.detokenize([t], special=True).decode("utf-8") if t != -1 else ""  # noqa: E731
            self.llm.chat_handler = Jinja2ChatFormatter(template, text(eos), text(bos),
                                                        stop_token_ids=[eos]).to_chat_handler()
        elif "tokenizer.chat_template" in self.llm.metadata:
            self.llm.chat_format = "chat_template.default"
        else:
            raise TokalignError("model %s: its GGUF file has no chat template; give one (chat_template in "
                                "--model-config)" % spec.name)

    def generate(self, units: Sequence[_Unit], batch_seed: int, max_new_tokens: int) -> List[Generation]:
        s = self.spec
        out = []
        for u in units:
            r = self.llm.create_chat_completion(
                messages=list(u.prompt["messages"]), temperature=s.temperature or 0.0,
                top_p=s.top_p if s.top_p is not None else 1.0, top_k=s.top_k or 0,
                min_p=0.0, repeat_penalty=s.repetition_penalty or 1.0, max_tokens=max_new_tokens, seed=u.seed)
            choice = r["choices"][0]
            stop = choice.get("finish_reason") == "stop"
            # completion_tokens leaves out the end-of-turn token it stopped at; the other engines count it
            out.append(Generation(choice["message"]["content"] or "", "stop" if stop else "length",
                                  int(r.get("usage", {}).get("completion_tokens", 0)) + int(stop)))
        return out

    def close(self) -> None:
        del self.llm


def _torch_threads() -> int:
    try:
        import torch

        return torch.get_num_threads()
    except ImportError:  # pragma: no cover
        return os.cpu_count() or 1


def open_engine(engine: str, spec: ModelSpec, **kwargs: Any):
    classes = {"transformers": TransformersEngine, "vllm": VllmEngine, "llama.cpp": LlamaCppEngine}
    if engine not in classes:
        raise TokalignError("--engine must be one of %s, not %r" % (", ".join(ENGINES), engine))
    return classes[engine](spec, **kwargs)


def unit(prompt: Dict[str, Any], sample: int, seed: int) -> _Unit:
    return _Unit(prompt, sample, seed)
