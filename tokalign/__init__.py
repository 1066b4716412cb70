"""tokalign: token alignment, vocabulary maps and top-k distribution storage for
knowledge fusion of LLMs that use different tokenizers.

Pipeline (one module per stage): tokenize -> align -> stats / vocab -> dump -> store -> remap,
then ``fusion_train`` (fuse -> merge).
"""
__version__ = "0.1.0"

__all__ = ["__version__", "load_tokenizer"]


def load_tokenizer(name_or_path, **kwargs):
    """Load a tokenizer by alias or path; see :func:`tokalign.tokenize.load_tokenizer`."""
    from .tokenize import load_tokenizer as _load

    return _load(name_or_path, **kwargs)
