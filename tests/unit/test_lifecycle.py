"""Blue/green rebuilds, retention and rollback of an index on real Chroma (embedded) and the real model."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragops import state
from ragops.config import EmbeddingSettings
from ragops.embedding import Embedder
from ragops.errors import RagopsError
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


def test_rebuild_refuses_a_model_the_index_was_not_embedded_with(indexed, embedder) -> None:
    import dataclasses

    settings, _ = indexed
    other = settings.replace(embedding=dataclasses.replace(settings.embedding, normalize=False))
    with pytest.raises(RagopsError, match="full-resync"):
        rebuild(other, "docs")  # same model name, other settings: other vectors
    assert statuses(settings) == [(1, "live")]
