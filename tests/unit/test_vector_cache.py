"""The persistent sentence-vector cache: bit-exact vectors, one file per embedder, a damaged or
unwritable file costs speed and never a result, a size bound, and eval runs that read it."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ragops.evaluation.runner import run_eval
from ragops.llm import SentenceEncoder
from ragops.vectorcache import VectorCache, path_for
from tests.unit.test_eval_runner import env  # noqa: F401 - the fixture: a small real index and golden set

TEXTS = ["The scheduler starts the ingest every hour.", "Vectors live in Chroma.", "Alerts are folded."]


class Counting:
    """The real embedder, counting the texts its model is asked to embed."""

    def __init__(self, embedder) -> None:
        self.inner, self.embedded = embedder, []
        self.settings, self.fingerprint = embedder.settings, embedder.fingerprint
        self.model = self

    def encode(self, texts, **kw):
        self.embedded.extend(texts)
        return self.inner.model.encode(texts, **kw)


def test_vectors_come_back_bit_for_bit_and_the_model_is_not_asked_again(tmp_path: Path, embedder) -> None:
    counting = Counting(embedder)
    first = SentenceEncoder(counting, persist=VectorCache(tmp_path / "v.sqlite3", embedder.fingerprint))(TEXTS)
    assert counting.embedded == TEXTS
    counting.embedded.clear()
    cache = VectorCache(tmp_path / "v.sqlite3", embedder.fingerprint)  # a new process, in effect
    again = SentenceEncoder(counting, persist=cache)(TEXTS + ["A new sentence."])
    assert counting.embedded == ["A new sentence."]
    assert np.array_equal(again[:3], first) and again.dtype == np.float32
    assert cache.stats()["hits"] == 3 and cache.stats()["misses"] == 1


def test_another_embedder_never_reads_these_vectors(tmp_path: Path, embedder) -> None:
    assert path_for(tmp_path, "model|a|norm=True") != path_for(tmp_path, "model|a|norm=True|onnx-int8")
    path = tmp_path / "v.sqlite3"
    VectorCache(path, "fp-a").put_many({"x": np.ones(4, dtype=np.float32)})
    other = VectorCache(path, "fp-b")  # same file, another fingerprint: moved aside, never served
    assert other.get_many(["x"]) == {}
    assert list(tmp_path.glob("v.sqlite3.corrupt-*"))


def test_a_corrupt_file_is_moved_aside_with_a_warning_and_the_run_goes_on(tmp_path: Path, embedder,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "cache" / "v.sqlite3"
    path.parent.mkdir()
    path.write_bytes(b"this is not a database" * 100)
    counting = Counting(embedder)
    with caplog.at_level(logging.WARNING, "ragops.vectorcache"):
        vecs = SentenceEncoder(counting, persist=VectorCache(path, embedder.fingerprint))(TEXTS)
    assert vecs.shape == (3, 384) and counting.embedded == TEXTS
    assert "unreadable" in caplog.text and "moved it to" in caplog.text
    assert len(list(path.parent.glob("v.sqlite3.corrupt-*"))) == 1
    assert set(VectorCache(path, embedder.fingerprint).get_many(TEXTS)) == set(TEXTS)  # the new file works


def test_an_unwritable_cache_location_turns_the_cache_off_not_the_run(tmp_path: Path, embedder,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    with caplog.at_level(logging.WARNING, "ragops.vectorcache"):
        vecs = SentenceEncoder(embedder, persist=VectorCache(blocker / "v.sqlite3", "fp"))(TEXTS)
    assert vecs.shape == (3, 384) and "is off for this process" in caplog.text
    assert blocker.read_text().startswith("a file")  # nothing of the user's was touched


def test_the_cache_stays_within_its_size_and_drops_the_oldest_first(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path / "v.sqlite3", "fp", max_mb=0.05)  # 52,428 bytes: 91 vectors of 512 floats
    rng = np.random.default_rng(0)
    vecs = {f"text {i}": rng.standard_normal(512).astype(np.float32) for i in range(300)}
    items = list(vecs.items())
    for b in range(0, 300, 30):
        cache.put_many(dict(items[b:b + 30]))
    got = cache.get_many(list(vecs))
    assert 0 < len(got) <= 91
    assert "text 299" in got and "text 0" not in got  # the newest are kept
    assert all(np.array_equal(v, vecs[t]) for t, v in got.items())


def test_a_second_eval_run_reads_the_cache_and_scores_exactly_the_same(env, embedder) -> None:  # noqa: F811
    settings, golden, _, _ = env
    first = run_eval(settings, golden, "rag_answer@1", "docs", embedder=embedder, run_id="cache-1")
    second = run_eval(settings, golden, "rag_answer@1", "docs", embedder=embedder, run_id="cache-2")
    off = dataclasses.replace(settings, eval=dataclasses.replace(settings.eval, vector_cache_mb=0))
    third = run_eval(off, golden, "rag_answer@1", "docs", embedder=embedder, run_id="cache-off")
    c1, c2 = first["vector_cache"], second["vector_cache"]
    assert c1["hits"] == 0 and c1["misses"] > 20 and Path(c1["path"]).is_file()
    assert Path(c1["path"]).parent == Path(settings.data_dir) / "cache"
    assert c2["misses"] == 0 and c2["hits"] >= c1["misses"] // 2  # nothing new to embed the second time
    assert third["vector_cache"] is None
    assert first["metrics"] == second["metrics"] == third["metrics"]

    def rows(summary) -> list[dict]:
        return [json.loads(x)["metrics"] for x in (Path(summary["output_dir"]) / "results.jsonl").read_text().splitlines()]
    assert rows(first) == rows(second) == rows(third)
