"""Embedding backends (torch, onnx, openvino, onnx int8) on the real bundled model: the exports
reproduce torch, are written once and reused by other processes, and a backend change reaches
an index only through a blue/green rebuild."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ragops import pipelines, state
from ragops.config import EmbeddingSettings
from ragops.embedding import Embedder
from ragops.errors import ConfigError
from ragops.export import export_dir
from ragops.indexing import self_check, sync
from ragops.lifecycle import rebuild
from ragops.retrieval import search
from tests.conftest import ROOT, doc, write

TEXTS = [
    "Blue/green rebuilds validate a new index version before the alias moves to it.",
    "Aspirin lowers the risk of a second myocardial infarction in patients with stable angina.",
    "ok",
    "The nightly evaluation compares the candidate prompt with production on the golden questions. " * 12,
]


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return Embedder(EmbeddingSettings(backend="torch")).encode(TEXTS)


def test_exported_backends_reproduce_torch_and_name_themselves_in_the_fingerprint(torch_vectors, tmp_path) -> None:
    torch_fp = Embedder(EmbeddingSettings(backend="torch")).fingerprint
    assert torch_fp.endswith("|norm=True")  # indexes built before backends existed keep their fingerprint
    ov = Embedder(EmbeddingSettings(backend="openvino"))
    assert ov.fingerprint == torch_fp + "|openvino"
    cos = np.sum(ov.encode(TEXTS) * torch_vectors, axis=1)
    assert cos.min() >= 0.9999, cos

    # onnx (the default), exported into a folder where a crashed export left a half-written folder behind
    onnx = EmbeddingSettings(cache_dir=str(tmp_path / "models"))
    assert onnx.backend == "onnx"
    half = export_dir(Embedder(onnx).path, onnx)
    half.mkdir(parents=True)
    (half / "model.onnx").write_bytes(b"truncated")
    e = Embedder(onnx)
    assert e.fingerprint == torch_fp + "|onnx"
    cos = np.sum(e.encode(TEXTS) * torch_vectors, axis=1)
    assert cos.min() >= 0.9999, cos
    manifest = json.loads((half / "manifest.json").read_text())
    assert manifest["backend"] == "onnx" and manifest["probe_min_cosine_to_torch"] >= 0.9999
    assert e.dimension == 384


def test_the_export_is_reused_by_another_process() -> None:
    e = Embedder(EmbeddingSettings())
    here = e.encode(TEXTS)
    folder = export_dir(e.path, e.settings)
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    code = ("import json\nfrom ragops.config import EmbeddingSettings\nfrom ragops.embedding import Embedder\n"
            f"v = Embedder(EmbeddingSettings()).encode({TEXTS!r})\n"
            "print(json.dumps({'v': v.tolist()}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "include")})
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert np.abs(np.asarray(got["v"]) - here).max() < 1e-6  # the same vectors in every process
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp  # not exported again


def test_int8_is_an_opt_in_with_a_measured_loss(torch_vectors, tmp_path) -> None:
    with pytest.raises(ConfigError, match="onnx backend only"):
        Embedder(EmbeddingSettings(backend="openvino", quantize="int8"))
    with pytest.raises(ConfigError, match="not one of torch, onnx, openvino"):
        Embedder(EmbeddingSettings(backend="tensorrt"))
    q = Embedder(EmbeddingSettings(backend="onnx", quantize="int8", cache_dir=str(tmp_path)))
    assert q.fingerprint.endswith("|onnx-int8")
    cos = np.sum(q.encode(TEXTS) * torch_vectors, axis=1)
    assert cos.min() >= 0.95  # close ...
    assert cos.min() < 0.999  # ... but measurably not the same vectors: never mixed with fp32 ones


@pytest.fixture
def torch_index(tmp_path: Path, settings):
    corpus = tmp_path / "corpus"
    for name in ("alpha", "beta", "gamma"):
        write(corpus, f"{name}.md", doc(f"{name.title()} guide", f"{name.title()} scheduling"))
    old = settings.replace(embedding=dataclasses.replace(settings.embedding, backend="torch"))
    sync(old, str(corpus), "docs", trigger="test")
    return corpus


def test_a_backend_change_reaches_an_index_only_through_a_blue_green_rebuild(settings, torch_index) -> None:
    assert settings.embedding.backend == "onnx"
    plan = sync(settings, str(torch_index), "docs", trigger="test")  # ingest follows the live pipeline (torch)
    assert plan["chunks"]["embedded"] == 0
    assert pipelines.drift(settings, "docs") == {"backend": {"live": "torch", "settings": "onnx"}}
    with state.session_scope(settings.state_db_url) as s:  # a pipeline recorded before backends existed
        v = state.live_version(s, "docs")
        v.pipeline = {k: val for k, val in v.pipeline.items() if k not in ("backend", "quantize")}
    assert pipelines.drift(settings, "docs") == {"backend": {"live": "torch", "settings": "onnx"}}

    result = rebuild(settings, "docs")
    assert result["swapped"] and result["pipeline_change"] and result["embedded"] == result["chunks"] > 0
    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, "docs")
        assert live.embedding_model.endswith("|onnx") and live.pipeline["backend"] == "onnx"
    assert pipelines.drift(settings, "docs") is None and self_check(settings, "docs")["ok"]
    assert search(settings, "Beta scheduling", k=1, index="docs", mode="dense")[0].doc_id == "beta.md"

    pinned = rebuild(settings, "docs", backend="torch")  # back to torch, pinned against the settings
    assert pinned["swapped"] and pinned["pipeline"]["backend"] == "torch" and pinned["pipeline"]["pinned"]
    assert pipelines.drift(settings, "docs") is None
    assert search(settings, "Gamma scheduling", k=1, index="docs", mode="dense")[0].doc_id == "gamma.md"


@pytest.mark.parametrize(("config", "want"), [
    ({"pooling_mode": "mean", "include_prompt": True}, ("mean", True)),  # sentence-transformers >= 6
    ({"pooling_mode": ["cls"]}, ("cls", True)),
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, ("mean", True)),  # earlier versions
    ({"pooling_mode": "max"}, None),
    ({"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True}, None),
])
def test_pooling_of_either_sentence_transformers_format_is_read_and_others_refused(tmp_path, config, want) -> None:
    from ragops.export import _modules

    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(config))
    (tmp_path / "modules.json").write_text(json.dumps([
        {"type": "sentence_transformers.base.modules.transformer.Transformer"},
        {"type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling"},
        {"type": "sentence_transformers.base.modules.normalize.Normalize"}]))
    if want is None:
        with pytest.raises(ConfigError, match="use embedding.backend: torch"):
            _modules(tmp_path)
    else:
        assert _modules(tmp_path) == want


def test_fast_tokenizer_gives_transformers_ids_offsets_and_batches_without_importing_torch() -> None:
    """The exported backends tokenize with `tokenizers` alone; chunk boundaries and model inputs must
    not move, so every call shape ragops makes is compared with transformers' tokenizer."""
    from transformers import AutoTokenizer

    from ragops.embedding import FastTokenizer, resolve_model_path

    path = resolve_model_path("bundled:all-MiniLM-L6-v2")
    fast, ref = FastTokenizer(path), AutoTokenizer.from_pretrained(str(path))
    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "include" / "corpus").rglob("*.md"))][:25]
    texts += ["", "Café naïve – “quoted” 日本語 text\twith\u3000odd spaces", "word " * 400, "RAGOPS_HOME=/x [1]"]
    for t in texts:
        for kw in ({"add_special_tokens": False}, {"add_special_tokens": False, "return_offsets_mapping": True}):
            got, want = fast(t, **kw), ref(t, verbose=False, **kw)
            assert got["input_ids"] == want["input_ids"]
            if "return_offsets_mapping" in kw:
                assert [tuple(o) for o in got["offset_mapping"]] == [tuple(o) for o in want["offset_mapping"]]
    batch = texts[:8] + texts[-4:]
    got = fast(batch, padding=True, truncation=True, max_length=256, return_tensors="np")
    want = ref(batch, padding=True, truncation=True, max_length=256, return_tensors="np")
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        assert np.array_equal(got[k], want[k]), k
    assert got["input_ids"].shape[1] == 256  # the long text was truncated, specials kept
    # a fresh process that ingests with the default (onnx) backend never imports torch for tokenizing
    code = ("import sys; from ragops.config import EmbeddingSettings; from ragops.embedding import Embedder; "
            "e = Embedder(EmbeddingSettings(backend='onnx')); e.tokenizer('a text', add_special_tokens=False); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_exported_encode_runs_longest_first_within_a_token_budget_and_keeps_the_callers_order(torch_vectors) -> None:
    """Short texts (clauses, queries) go many to a pass and long ones few, so no pass holds more tokens
    than ``batch_size`` full-length texts; padding follows length, never the caller's order."""
    model = Embedder(EmbeddingSettings()).model
    passes: list[tuple[int, int]] = []
    run = model._run

    def counting(feed):
        passes.append(feed["input_ids"].shape)
        return run(feed)

    model._run = counting
    try:
        mixed = [TEXTS[i % 4] for i in range(40)]  # long and short texts interleaved
        got = model.encode(mixed, batch_size=2, normalize_embeddings=True)
    finally:
        model._run = run
    assert np.sum(got * torch_vectors[[i % 4 for i in range(40)]], axis=1).min() >= 0.9999  # order kept
    assert all(rows * width <= 2 * model.max_seq_length for rows, width in passes)
    widths = [w for _, w in passes]
    assert widths == sorted(widths, reverse=True)  # longest first: a pass pads to its own longest text
    assert passes[-1][0] > 2 and len(passes) < 20  # the short texts shared passes (20 at 2 a pass before)
