"""Blue/green rebuilds, retention and rollback of an index on real Chroma (embedded) and the real model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import select

from ragops import pipelines, state
from ragops.config import EmbeddingSettings
from ragops.embedding import Embedder
from ragops.errors import ConfigError, RagopsError
from ragops.indexing import self_check, sync
from ragops.lexical import folder_for
from ragops.lifecycle import rebuild, rollback, versions
from ragops.retrieval import search
from ragops.vectorstore import VectorStore
from tests.conftest import doc, write


class CountingEmbedder(Embedder):
    """The real model; counts the texts it embeds, so vector reuse is proven, not assumed."""

    def __init__(self) -> None:
        super().__init__(EmbeddingSettings())
        self.texts = 0

    def encode(self, texts, log_every: float = 10.0):
        self.texts += len(texts)
        return super().encode(texts, log_every)


@pytest.fixture
def indexed(tmp_path: Path, settings, embedder):
    corpus = tmp_path / "corpus"
    for name in ("alpha", "beta", "gamma"):
        write(corpus, f"{name}.md", doc(f"{name.title()} guide", f"{name.title()} scheduling"))
    sync(settings, str(corpus), "docs", trigger="test", embedder=embedder)
    return settings, corpus


def statuses(settings) -> list[tuple[int, str]]:
    return [(v["version"], v["status"]) for v in versions(settings, "docs")]


def test_rebuild_reuses_vectors_swaps_and_keeps_two_versions(indexed, embedder) -> None:
    settings, corpus = indexed
    counting = CountingEmbedder()
    first = rebuild(settings, "docs", embedder=counting)
    assert first["swapped"] and first["live"] == "docs__v2" and first["embedded"] == 0
    assert first["reused"] == first["chunks"] > 0
    assert counting.texts == min(20, first["chunks"])  # only the validation sample is embedded
    assert first["retrieval"]["skipped"]  # the bundled golden set is about another corpus
    assert statuses(settings) == [(1, "retired"), (2, "live")]
    assert self_check(settings, "docs")["ok"]
    assert (folder_for(settings.data_dir, "docs__v2") / "manifest.json").exists()
    assert search(settings, "Beta scheduling", k=1, index="docs", embedder=embedder)[0].doc_id == "beta.md"

    write(corpus, "delta.md", doc("Delta guide", "Delta retries"))  # a sync lands in the live version v2
    sync(settings, str(corpus), "docs", trigger="test", embedder=embedder)
    second = rebuild(settings, "docs", embedder=embedder)
    assert second["swapped"] and second["live"] == "docs__v3" and second["deleted"] == ["docs__v1"]
    assert statuses(settings) == [(1, "deleted"), (2, "retired"), (3, "live")]
    assert not VectorStore(settings).has_collection("docs__v1")
    with state.session_scope(settings.state_db_url) as s:
        actions = [a.action for a in s.query(state.AuditEntry).order_by(state.AuditEntry.id)]
    assert actions.count("index_swapped") == 2 and "index_versions_deleted" in actions


def test_rollback_brings_the_retired_version_up_to_date(indexed, embedder) -> None:
    settings, corpus = indexed
    rebuild(settings, "docs", embedder=embedder)  # v2 live, v1 retired
    write(corpus, "delta.md", doc("Delta guide", "Delta retries"))
    (corpus / "alpha.md").unlink()
    sync(settings, str(corpus), "docs", trigger="test", embedder=embedder)  # v1 is now stale
    result = rollback(settings, "docs")
    assert result["to"] == "docs__v1" and result["copied"] > 0 and result["removed"] > 0
    assert statuses(settings) == [(1, "live"), (2, "retired")]
    assert self_check(settings, "docs")["ok"]
    hits = search(settings, "Delta retries", k=1, index="docs", embedder=embedder)
    assert hits[0].doc_id == "delta.md"
    assert "alpha.md" not in {h.doc_id for h in search(settings, "Alpha scheduling", k=5, index="docs",
                                                       embedder=embedder)}
    with pytest.raises(RagopsError, match="no retained version v7"):
        rollback(settings, "docs", to=7)


def test_a_killed_rebuild_leaves_live_serving_and_the_next_run_removes_it(indexed, embedder) -> None:
    settings, _ = indexed
    store = VectorStore(settings)
    with state.session_scope(settings.state_db_url) as s:  # what a rebuild killed mid-way leaves behind
        s.add(state.IndexVersion(index_name="docs", version=2, collection="docs__v2", embedding_model="x",
                                 status="building", created_at=state.utcnow()))
    store.collection("docs__v2", create=True)
    store.collection("docs__v9", create=True)  # killed before its version row was written
    assert search(settings, "Gamma scheduling", k=1, index="docs", embedder=embedder)[0].doc_id == "gamma.md"
    result = rebuild(settings, "docs", embedder=embedder)
    assert sorted(result["removed_partial"]) == ["docs__v2", "docs__v9"]
    assert result["swapped"] and result["live"] == "docs__v3"
    assert not store.has_collection("docs__v9")
    assert statuses(settings) == [(1, "retired"), (2, "abandoned"), (3, "live")]


def _chunks(settings, index="docs") -> set[str]:
    with state.session_scope(settings.state_db_url) as s:
        return set(s.execute(select(state.Chunk.chunk_id).where(state.Chunk.index_name == index)).scalars())


def _with_profiles(settings):
    base = {"chunk_tokens": 200, "overlap_tokens": 30, "markdown_headers": ["#", "##", "###"]}
    profiles = {"default": base, "whole": {**base, "chunk_tokens": 400, "markdown_headers": ["#"]}}
    return settings.replace(chunking=dataclasses.replace(settings.chunking, profiles=profiles))


def test_a_settings_change_reaches_the_index_only_through_a_rebuild(indexed, embedder) -> None:
    settings, corpus = indexed
    before = _chunks(settings)
    other = settings.replace(embedding=dataclasses.replace(settings.embedding, normalize=False))
    plan = sync(other, str(corpus), "docs", trigger="test", embedder=embedder)  # ingest follows the live pipeline
    assert plan["chunks"]["embedded"] == 0 and _chunks(settings) == before
    with state.session_scope(settings.state_db_url) as s:
        assert state.live_version(s, "docs").pipeline["normalize"] is True
    assert pipelines.drift(other, "docs") == {"normalize": {"live": True, "settings": False}}

    counting = CountingEmbedder()
    result = rebuild(other, "docs", embedder=counting)  # the other model setting: sources re-read, all re-embedded
    assert result["swapped"] and result["pipeline_change"] and result["embedded"] == result["chunks"] > 0
    after = _chunks(settings)
    assert after and after.isdisjoint(before)  # chunk ids hash the pipeline
    assert _chunks(settings, "docs~v1") == before  # the old rows are archived for a rollback
    assert pipelines.drift(other, "docs") is None and self_check(other, "docs")["ok"]
    again = sync(other, str(corpus), "docs", trigger="test", embedder=embedder)
    assert again["chunks"]["embedded"] == 0 and again["counts"]["unchanged"] == 3  # nothing left to re-embed
    assert search(other, "Beta scheduling", k=1, index="docs")[0].doc_id == "beta.md"


def test_a_pinned_chunking_profile_survives_ingests_and_rolls_back(indexed, embedder) -> None:
    settings, corpus = indexed
    settings = _with_profiles(settings)
    before = _chunks(settings)
    result = rebuild(settings, "docs", embedder=embedder, profile="whole")
    assert result["swapped"] and result["pipeline"]["pinned"] and result["pipeline"]["chunk_tokens"] == 400
    assert len(_chunks(settings)) == 3 < len(before)  # one chunk per document instead of one per section
    write(corpus, "delta.md", doc("Delta guide", "Delta retries"))
    report = sync(settings, str(corpus), "docs", trigger="test", embedder=embedder)  # settings say default
    assert report["counts"]["added"] == 1 and report["counts"]["changed"] == 0  # the pinned profile is kept
    assert pipelines.drift(settings, "docs") is None  # pinned: no settings drift
    with state.session_scope(settings.state_db_url) as s:
        n_delta = s.execute(select(state.Document.n_chunks).where(state.Document.index_name == "docs",
                                                                  state.Document.doc_id == "delta.md")).scalar()
    assert n_delta == 1  # chunked by the pinned profile (the settings' default would give one per section)

    back = rollback(settings, "docs")  # across pipelines: v1's archived rows serve again, as of v1's retirement
    assert back["across_pipelines"] and back["to"] == "docs__v1"
    assert _chunks(settings) == before and self_check(settings, "docs")["ok"]
    assert statuses(settings) == [(1, "live"), (2, "retired")]
    with state.session_scope(settings.state_db_url) as s:
        assert state.live_version(s, "docs").pipeline["pinned"] is True  # no drift rebuild undoes it
    assert search(settings, "Alpha scheduling", k=1, index="docs", mode="hybrid")[0].doc_id == "alpha.md"
    caught_up = sync(settings, str(corpus), "docs", trigger="test", embedder=embedder)
    assert caught_up["counts"]["added"] == 1  # delta.md came after v1 was retired
    forward = rollback(settings, "docs", to=2)
    assert forward["across_pipelines"] and self_check(settings, "docs")["ok"]


def test_a_failed_pipeline_rebuild_leaves_live_and_its_rows_untouched(indexed, embedder, tmp_path) -> None:
    settings, corpus = indexed
    settings = _with_profiles(settings)
    before = _chunks(settings)
    moved = tmp_path / "moved"
    corpus.rename(moved)  # the source cannot be re-read
    with pytest.raises(RagopsError, match="cannot be read"):
        rebuild(settings, "docs", embedder=embedder, profile="whole")
    assert statuses(settings) == [(1, "live"), (2, "failed")]
    assert _chunks(settings) == before and not _chunks(settings, "docs~v2")
    assert not VectorStore(settings).has_collection("docs__v2")
    moved.rename(corpus)
    with state.session_scope(settings.state_db_url) as s:  # a rebuild killed while staging its rows
        s.add(state.Chunk(index_name="docs~v9", chunk_id="x", source_id="s", doc_id="d", position=0, text_hash="h",
                          n_tokens=1, text="t", meta={}))
    result = rebuild(settings, "docs", embedder=embedder, profile="whole")
    assert result["swapped"] and "docs~v9" in result["removed_partial"] and not _chunks(settings, "docs~v9")


def test_an_unknown_profile_is_refused_with_the_choices(indexed, embedder) -> None:
    settings, _ = indexed
    with pytest.raises(ConfigError, match="whole"):
        rebuild(_with_profiles(settings), "docs", embedder=embedder, profile="tiny")
    assert statuses(settings) == [(1, "live")]
