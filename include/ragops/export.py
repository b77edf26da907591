"""Exports of the embedding model for the onnx and openvino backends, written once and reused.

sentence-transformers does not cache an export, and exporting takes seconds and imports torch,
so the export of a model is written once under ``<data_dir>/models`` (``embedding.cache_dir``, or
``RAGOPS_MODEL_CACHE``) and every later process only loads it. (The model's tokenizer still comes
from transformers, which imports torch; the forward pass does not use it.)

An export folder is named by the model's content fingerprint, the backend and the quantisation,
so a changed model gets a new export, never a stale one. It is built in a temporary folder under
a file lock and renamed into place when complete: two processes exporting at once produce one
export, and a crash leaves no half-written one. Before it is kept, the export is checked against
the torch model on probe sentences (cosine of every vector at least ``MIN_COSINE``); the figures
are in the folder's ``manifest.json``. Nothing is downloaded: the export is made from the local
model folder, and dynamic int8 quantisation needs no calibration data.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ragops.config import EmbeddingSettings, project_root
from ragops.errors import ConfigError

log = logging.getLogger(__name__)
EXPORT_VERSION = 1  # bump when the export procedure changes: old exports are then not reused
MIN_COSINE = {"none": 0.9999, "int8": 0.95}  # int8: 0.96 on a two-letter text, 0.993 on average (measured)
PROBES = (
    "How does the blue/green rebuild validate a new index version before it serves?",
    "Retrieval augmented generation combines a search over documents with a language model.",
    "The nightly evaluation compares the candidate prompt with production on the golden questions.",
    "Aspirin reduces the risk of myocardial infarction in patients with stable angina.",
    "ok",
)
MAX_PASS = 256  # texts per model pass at most, however short
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_cache(settings: EmbeddingSettings) -> Path:
    """Where exports live: the setting, else ``RAGOPS_MODEL_CACHE``, else the default data dir's models/."""
    if settings.cache_dir:
        return Path(settings.cache_dir).expanduser()
    env = os.environ.get("RAGOPS_MODEL_CACHE")
    if env:
        return Path(env).expanduser()
    data = os.environ.get("RAGOPS_DATA_DIR")
    base = Path(data).expanduser() if data else project_root() / ".ragops"
    return (base if base.is_absolute() else project_root() / base) / "models"


def export_dir(model_path: Path, settings: EmbeddingSettings) -> Path:
    from ragops.embedding import _model_info

    digest, _ = _model_info(str(model_path))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", settings.model.replace("bundled:", ""))[-60:]
    q = "" if settings.quantize == "none" else f"-{settings.quantize}"
    return model_cache(settings) / f"{name}-{digest}-{settings.backend}{q}-e{EXPORT_VERSION}"


def _modules(model_path: Path) -> tuple[str, bool]:
    """(pooling mode, normalise) of a sentence-transformers folder; refuses what we cannot replay."""
    mods = model_path / "modules.json"
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in json.loads(mods.read_text())] if mods.exists() else \
        ["Transformer", "Pooling"]
    extra = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    if extra:
        raise ConfigError(f"the model at {model_path} has modules {', '.join(extra)} that the onnx/openvino backends "
                          "do not replay (they run Transformer, Pooling and Normalize): use embedding.backend: torch")
    pooling = "mean"
    cfg = model_path / "1_Pooling" / "config.json"
    if cfg.exists():
        p = json.loads(cfg.read_text())
        if "pooling_mode" in p:  # sentence-transformers >= 6 saves one key: "mean", "cls", ... (or a list)
            given = p["pooling_mode"]
            modes = [f"pooling_mode_{m}" for m in ([given] if isinstance(given, str) else list(given or []))]
            modes = [{"pooling_mode_mean": "pooling_mode_mean_tokens", "pooling_mode_cls": "pooling_mode_cls_token"}
                     .get(m, m) for m in modes]
        else:  # earlier versions: one boolean per mode
            modes = [k for k in ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                                 "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens",
                                 "pooling_mode_lasttoken") if p.get(k)]
        if modes == ["pooling_mode_cls_token"]:
            pooling = "cls"
        elif modes != ["pooling_mode_mean_tokens"]:
            raise ConfigError(f"the model at {model_path} pools with {', '.join(modes) or 'nothing'}; the onnx/openvino "
                              "backends replay mean or CLS pooling only: use embedding.backend: torch")
    return pooling, "Normalize" in kinds


def ensure_export(model_path: Path, settings: EmbeddingSettings) -> Path:
    """The export folder for ``settings``' backend, made now if there is none."""
    target = export_dir(model_path, settings)
    if (target / "manifest.json").exists():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=600):
        if (target / "manifest.json").exists():  # another process finished it while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            manifest = _export(model_path, settings, tmp)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
            if target.exists():  # an incomplete folder without a manifest: replaced
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _export(model_path: Path, settings: EmbeddingSettings, out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars on stderr: our own log lines say what happens
    pooling, normalize = _modules(model_path)
    tok = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModel.from_pretrained(str(model_path)).eval()
    sample = tok(["hello world"], return_tensors="pt")
    names = [n for n in ONNX_INPUTS if n in sample]

    class Wrapped(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, *args: Any) -> Any:
            return self.m(**dict(zip(names, args, strict=True))).last_hidden_state

    onnx_path = out / "model.onnx"
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    log.info("exporting %s for the %s backend to %s", settings.model, settings.backend, out)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow: shapes stay dynamic
        torch.onnx.export(Wrapped(model), tuple(sample[n] for n in names), str(onnx_path), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    files = ["model.onnx"]
    if settings.quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        logging.disable(logging.WARNING)  # onnxruntime logs a line per tensor, and advice, on the root logger
        try:  # per-channel weights with reduced range: min cosine to fp32 0.96 against 0.86 per tensor
            quantize_dynamic(str(onnx_path), str(out / "model-int8.onnx"), weight_type=QuantType.QInt8,
                             per_channel=True, reduce_range=True)
        finally:
            logging.disable(logging.NOTSET)
        onnx_path.unlink()
        files = ["model-int8.onnx"]
    if settings.backend == "openvino":
        ov = _openvino()
        ov.save_model(ov.convert_model(str(onnx_path)), str(out / "model.xml"), compress_to_fp16=False)
        onnx_path.unlink()
        files = ["model.xml", "model.bin"]
    manifest = {"model": settings.model, "model_path": str(model_path), "backend": settings.backend,
                "quantize": settings.quantize, "inputs": names, "pooling": pooling, "normalize": normalize,
                "files": files, "export_version": EXPORT_VERSION, "torch": torch.__version__,
                "export_s": round(time.perf_counter() - t0, 2)}
    # the export must reproduce the torch model before it is kept
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(model_path), device="cpu").encode(list(PROBES), normalize_embeddings=True)
    from ragops.embedding import _model_info

    got = ExportedModel(out, manifest, settings, _model_info(str(model_path))[1], tok).encode(list(PROBES), batch_size=8, normalize_embeddings=True)
    cos = float(np.min(np.sum(np.asarray(ref) * got, axis=1)))
    manifest["probe_min_cosine_to_torch"] = round(cos, 6)
    if cos < MIN_COSINE[settings.quantize]:
        raise ConfigError(f"the {settings.backend} export of {settings.model} does not reproduce the torch model "
                          f"(min cosine {cos:.5f} on probe sentences, need {MIN_COSINE[settings.quantize]}): use "
                          "embedding.backend: torch")
    log.info("exported %s (%s%s) in %.1fs, min cosine to torch %.6f", settings.model, settings.backend,
             "" if settings.quantize == "none" else f", {settings.quantize}", manifest["export_s"], cos)
    return manifest


class ExportedModel:
    """An exported model with the ``encode``/``get_embedding_dimension`` the embedder calls."""

    def __init__(self, folder: Path, manifest: dict[str, Any], settings: EmbeddingSettings, max_seq_length: int,
                 tokenizer: Any) -> None:
        self.folder, self.manifest, self.max_seq_length, self.tokenizer = folder, manifest, max_seq_length, tokenizer
        self.inputs = list(manifest["inputs"])
        threads = settings.threads or 0
        if manifest["backend"] == "openvino":
            ov = _openvino()
            # f32: no bf16 where a CPU has it, so every machine gets the same vectors. No PERFORMANCE_HINT:
            # LATENCY and THROUGHPUT were both slower here (12 and 10 texts/s against 19, one request at a time)
            config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            compiled = ov.Core().compile_model(str(folder / "model.xml"), "CPU", config)
            request = compiled.create_infer_request()
            self._run = lambda feed: next(iter(request.infer(feed).values()))
        else:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            session = ort.InferenceSession(str(folder / manifest["files"][0]), opts, providers=["CPUExecutionProvider"])
            self._run = lambda feed: session.run(None, feed)[0]
        self._dim: int | None = None

    def get_embedding_dimension(self) -> int:
        if self._dim is None:
            self._dim = int(self.encode(["dimension probe"], batch_size=1).shape[1])
        return self._dim

    def encode(self, texts: list[str], batch_size: int = 32, normalize_embeddings: bool = False,
               **_ignored: Any) -> np.ndarray:
        """Vectors in the order of ``texts``. Like sentence-transformers, texts are run longest first so
        a pass pads little; a pass holds at most ``batch_size`` full-length texts' worth of tokens, so
        short texts (sentences, queries) go many to a pass at the activation memory of ``batch_size``
        chunks."""
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_seq_length)
        ids, types, masks = enc["input_ids"], enc.get("token_type_ids"), enc["attention_mask"]
        lens = np.array([len(x) for x in ids])
        order = np.argsort(-lens, kind="stable")
        budget = max(1, batch_size) * self.max_seq_length
        pad = int(getattr(self.tokenizer, "pad_token_id", None) or 0)
        out: np.ndarray | None = None
        start = 0
        while start < len(texts):
            width = int(max(lens[order[start]], 1))
            idx = order[start:start + max(1, min(budget // width, MAX_PASS))]
            start += len(idx)
            feed = {"input_ids": np.full((len(idx), width), pad, dtype=np.int64),
                    "attention_mask": np.zeros((len(idx), width), dtype=np.int64),
                    "token_type_ids": np.zeros((len(idx), width), dtype=np.int64)}
            for row, i in enumerate(idx):
                n = len(ids[i])
                feed["input_ids"][row, :n] = ids[i]
                feed["attention_mask"][row, :n] = masks[i]
                if types is not None:
                    feed["token_type_ids"][row, :n] = types[i]
            feed = {n: feed[n] for n in self.inputs}
            hidden = np.asarray(self._run(feed), dtype=np.float32)
            if self.manifest["pooling"] == "cls":
                vec = hidden[:, 0]
            else:
                mask = feed["attention_mask"][..., None].astype(np.float32)
                vec = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            if normalize_embeddings or self.manifest["normalize"]:
                vec = vec / np.clip(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12, None)
            if out is None:
                out = np.empty((len(texts), vec.shape[1]), dtype=np.float32)
            out[idx] = vec
        assert out is not None
        return out


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise ConfigError("embedding.backend openvino needs the openvino package: pip install openvino==2026.4.1 "
                          "-c constraints.txt (or use embedding.backend: onnx, which needs nothing more)") from exc
    return openvino


def load_exported(model_path: Path, settings: EmbeddingSettings, max_seq_length: int, tokenizer: Any) -> ExportedModel:
    t0 = time.perf_counter()
    folder = ensure_export(model_path, settings)
    manifest = json.loads((folder / "manifest.json").read_text())
    model = ExportedModel(folder, manifest, settings, max_seq_length, tokenizer)
    log.info("loaded embedding model %s (%s%s) in %.1fs (max_seq_length=%d)", settings.model, settings.backend,
             "" if settings.quantize == "none" else f", {settings.quantize}", time.perf_counter() - t0, max_seq_length)
    return model
