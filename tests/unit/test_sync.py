"""The record manager against real parts: SQLite state store, embedded Chroma, the bundled model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from ragops import state
from ragops.config import load_settings
from ragops.errors import DataIncidentError, MassDeleteError, SyncMismatchError, UnknownIndexError
from ragops.indexing import commit_sync, new_run_id, plan_sync, process_batch, self_check, sync
from ragops.retrieval import index_status, quarantine_entries, search
from ragops.vectorstore import VectorStore
from tests.conftest import PARA, doc, write


def state_chunks(settings, index: str = "docs") -> dict[str, str]:
    with state.session_scope(settings.state_db_url) as s:
        return dict(s.execute(select(state.Chunk.chunk_id, state.Chunk.doc_id)
                              .where(state.Chunk.index_name == index)).all())


def chroma_ids(settings, index: str = "docs") -> set[str]:
    with state.session_scope(settings.state_db_url) as s:
        coll = state.live_version(s, index).collection
    return VectorStore(settings).ids(coll)


def assert_in_sync(settings, expected_docs: set[str], index: str = "docs") -> dict[str, str]:
    chunks = state_chunks(settings, index)
    assert set(chunks.values()) == expected_docs
    assert chroma_ids(settings, index) == set(chunks)
    return chunks


def test_add_modify_delete_and_no_change(settings, corpus: Path, embedder) -> None:
    r1 = sync(settings, str(corpus), "docs", embedder=embedder)
    docs = {"alpha.md", "beta.md", "sub/gamma.txt", "sub/delta.html"}
    first = assert_in_sync(settings, docs)
    assert r1["counts"]["added"] == 4 and r1["chunks"]["embedded"] == len(first)
    assert r1["self_check"]["ok"]

    r2 = sync(settings, str(corpus), "docs", embedder=embedder)
    assert r2["counts"]["unchanged"] == 4
    assert r2["chunks"] == {"upserted": 0, "embedded": 0, "reused": 0, "copied": 0, "deleted": 0,
                            "repaired_orphans": 0}
    assert state_chunks(settings) == first

    # modify one section of alpha, delete beta, add epsilon
    alpha = (corpus / "alpha.md").read_text()
    (corpus / "alpha.md").write_text(alpha.replace("Alpha scheduling (1.1)", "Alpha scheduling rewritten"))
    (corpus / "beta.md").unlink()
    write(corpus, "epsilon.md", doc("Epsilon guide", "Epsilon drift"))
    r3 = sync(settings, str(corpus), "docs", embedder=embedder)
    assert (r3["counts"]["added"], r3["counts"]["changed"], r3["counts"]["deleted"]) == (1, 1, 1)
    third = assert_in_sync(settings, {"alpha.md", "sub/gamma.txt", "sub/delta.html", "epsilon.md"})
    old_alpha = {c for c, d in first.items() if d == "alpha.md"}
    new_alpha = {c for c, d in third.items() if d == "alpha.md"}
    assert old_alpha & new_alpha, "unchanged chunks of a changed document keep their ids and vectors"
    assert old_alpha - new_alpha, "the edited chunk got a new id"
    new_eps = {c for c, d in third.items() if d == "epsilon.md"}
    assert r3["chunks"]["embedded"] == len(new_alpha - old_alpha) + len(new_eps)
    assert r3["chunks"]["deleted"] == len(old_alpha - new_alpha) + sum(1 for d in first.values() if d == "beta.md")

    hits = search(settings, "Epsilon drift", k=3, embedder=embedder, mode="dense")
    assert hits[0].doc_id == "epsilon.md" and hits[0].score > 0.3  # cosine similarity
    fused = search(settings, "Epsilon drift", k=3, embedder=embedder)  # the default: hybrid (RRF scores)
    assert fused[0].doc_id == "epsilon.md" and 0 < fused[0].score <= 0.033  # at most 2/(60+1), rounded
    assert hits[0].chunk_id in third and "Epsilon" in hits[0].snippet


def test_moved_chunks_reuse_vectors_instead_of_embedding(settings, corpus: Path, embedder) -> None:
    sync(settings, str(corpus), "docs", embedder=embedder)
    before = {c: d for c, d in state_chunks(settings).items() if d == "beta.md"}
    text = (corpus / "beta.md").read_text()
    title, rest = text.split("\n", 1)
    (corpus / "beta.md").write_text(f"{title}\n\n## Preface\n\nA brand new opening section about preface matters.\n{rest}")
    r = sync(settings, str(corpus), "docs", embedder=embedder)
    after = {c: d for c, d in state_chunks(settings).items() if d == "beta.md"}
    assert len(after) == len(before) + 1
    assert r["chunks"]["embedded"] == 1, "only the new section is embedded"
    assert r["chunks"]["copied"] == len(before), "shifted chunks reuse their stored vectors"
    vs = VectorStore(settings)
    coll = index_status(settings, "docs", check=False)[0]["collection"]
    vecs = vs.get_embeddings(coll, sorted(after))
    fresh = embedder.encode([vs.collection(coll).get(ids=[c])["documents"][0] for c in sorted(after)])
    assert np.allclose(np.stack([vecs[c] for c in sorted(after)]), fresh, atol=1e-5)
    assert_in_sync(settings, {"alpha.md", "beta.md", "sub/gamma.txt", "sub/delta.html"})


def test_a_settings_change_waits_for_a_rebuild_then_reembeds_everything(settings, corpus: Path, embedder,
                                                                        tmp_path) -> None:
    from ragops.lifecycle import rebuild

    sync(settings, str(corpus), "docs", embedder=embedder)
    before = assert_in_sync(settings, {"alpha.md", "beta.md", "sub/gamma.txt", "sub/delta.html"})
    cfg = tmp_path / "small.yaml"
    cfg.write_text("chunking:\n  chunk_tokens: 40\n  overlap_tokens: 5\nindexes:\n  docs: {}\n")
    small = load_settings(cfg)
    r = sync(small, str(corpus), "docs", embedder=embedder)  # the index keeps its live pipeline
    assert r["counts"]["changed"] == 0 and r["chunks"]["embedded"] == 0
    assert r["pipeline_drift"] == {"chunk_tokens": {"live": 200, "settings": 40},
                                   "overlap_tokens": {"live": 30, "settings": 5}}
    assert state_chunks(settings).keys() == before.keys()
    swapped = rebuild(small, "docs", embedder=embedder)  # what rebuild_index does on that drift
    assert swapped["swapped"] and swapped["pipeline_change"]
    chunks = assert_in_sync(small, {"alpha.md", "beta.md", "sub/gamma.txt", "sub/delta.html"})
    assert swapped["embedded"] == len(chunks) > len(before) and swapped["reused"] == 0
    again = sync(small, str(corpus), "docs", embedder=embedder)
    assert again["chunks"]["embedded"] == 0 and again["pipeline_drift"] is None


def test_two_sources_share_an_index(settings, corpus: Path, tmp_path: Path, embedder) -> None:
    other = tmp_path / "other"
    write(other, "alpha.md", doc("Other alpha", "Other topic"))
    write(other, "zeta.md", doc("Zeta", "Zeta topic"))
    sync(settings, str(corpus), "docs", embedder=embedder)
    sync(settings, str(other), "docs", embedder=embedder)
    chunks = state_chunks(settings)
    assert chroma_ids(settings) == set(chunks)
    (other / "zeta.md").unlink()
    r = sync(settings, str(other), "docs", embedder=embedder)
    assert r["counts"]["deleted"] == 1
    status = index_status(settings, "docs")[0]
    assert sorted(s["documents"] for s in status["sources"]) == [1, 4], "the first source is untouched"
    assert status["self_check"]["ok"]


def test_bad_input_is_quarantined_and_nothing_indexed_is_lost(settings, corpus: Path, embedder, tmp_path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("quality:\n  max_document_bytes: 1048576\n  max_failed_share: 0.9\nindexes:\n  docs: {}\n")
    s = load_settings(cfg)
    sync(s, str(corpus), "docs", embedder=embedder)
    before = state_chunks(s)
    # hostile additions, and a previously good document turned into garbage
    write(corpus, "empty.md", "")
    write(corpus, "binary.txt", b"\x00\x01\x02PNG" * 50)
    write(corpus, "latin1.txt", "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e and some more words".encode("latin-1"))
    write(corpus, "huge.txt", b"a" * (1048576 + 10))
    write(corpus, "tiny.md", "# x")
    write(corpus, "records.jsonl", "\n".join([
        json.dumps({"id": "r1", "title": "Record one", "text": PARA.format(topic="records")}),
        "{broken json",
        json.dumps({"title": "no id", "text": "x"}),
        json.dumps({"id": "r3"}),
        json.dumps({"id": "r1", "text": "duplicate id"}),
    ]))
    os.symlink(tmp_path / "nowhere", corpus / "dangling.md")
    write(tmp_path, "outside.md", doc("Outside", "outside"))
    os.symlink(tmp_path / "outside.md", corpus / "escape.md")
    (corpus / "beta.md").write_bytes(b"\xff\xfe\x00\x00 binary now")
    r = sync(s, str(corpus), "docs", embedder=embedder)
    reasons = {(e["doc_id"], e["reason"]) for e in quarantine_entries(s, "docs", r["run_id"])}
    assert {("empty.md", "empty"), ("binary.txt", "binary"), ("latin1.txt", "invalid_utf8"),
            ("huge.txt", "too_large"), ("tiny.md", "length_out_of_bounds"), ("records.jsonl:2", "malformed_jsonl"),
            ("records.jsonl:3", "missing_id"), ("records.jsonl#r3", "missing_text"),
            ("records.jsonl#r1", "duplicate_id"), ("dangling.md", "symlink_outside_root"),
            ("escape.md", "symlink_outside_root"), ("beta.md", "binary")} <= reasons
    after = state_chunks(s)
    assert {c: d for c, d in before.items()} == {c: d for c, d in after.items() if d != "records.jsonl#r1"}
    assert "records.jsonl#r1" in after.values(), "the valid record was indexed"
    assert chroma_ids(s) == set(after)
    assert r["quarantine"]["documents"] >= 12
    assert self_check(s, "docs")["ok"]


def test_data_incident_changes_nothing(settings, corpus: Path, embedder) -> None:
    sync(settings, str(corpus), "docs", embedder=embedder)
    before = state_chunks(settings)
    for i in range(3):
        write(corpus, f"bad{i}.txt", b"\x00binary")
    (corpus / "alpha.md").write_text(doc("Alpha guide", "Alpha changed completely"))
    with pytest.raises(DataIncidentError, match="max_failed_share"):
        sync(settings, str(corpus), "docs", embedder=embedder)
    assert state_chunks(settings) == before
    assert chroma_ids(settings) == set(before)
    status = index_status(settings, "docs")[0]
    assert status["last_run"]["status"] == "incident" and status["last_run"]["quarantined"] == 3


def test_mass_delete_guard_and_dry_run(settings, corpus: Path, embedder, tmp_path: Path) -> None:
    sync(settings, str(corpus), "docs", embedder=embedder)
    before = state_chunks(settings)
    for f in ("alpha.md", "beta.md", "sub/gamma.txt"):
        (corpus / f).unlink()
    with pytest.raises(MassDeleteError, match="allow-mass-delete"):
        sync(settings, str(corpus), "docs", embedder=embedder)
    dry = sync(settings, str(corpus), "docs", embedder=embedder, dry_run=True)
    assert dry["dry_run"] and dry["plan"]["counts"]["deleted"] == 3 and dry["plan"]["mass_delete_blocked"]
    assert sorted(dry["plan"]["samples"]["deleted"]) == ["alpha.md", "beta.md", "sub/gamma.txt"]
    assert state_chunks(settings) == before
    r = sync(settings, str(corpus), "docs", embedder=embedder, allow_mass_delete=True)
    assert r["counts"]["deleted"] == 3
    assert_in_sync(settings, {"sub/delta.html"})


def test_interrupted_commit_leaves_orphans_that_the_next_run_repairs(settings, corpus: Path, embedder) -> None:
    sync(settings, str(corpus), "docs", embedder=embedder)
    write(corpus, "new.md", doc("New", "New topic"))
    run_id = new_run_id("test")
    plan = plan_sync(settings, str(corpus), "docs", run_id, embedder=embedder)
    for b in plan["batches"]:
        process_batch(settings, run_id, b, embedder=embedder)
    # simulate a worker killed after Chroma upserts but before the state-store transaction
    from ragops.indexing import _upsert_batches, run_dir

    coll = plan["collection"]
    _upsert_batches(VectorStore(settings), coll, run_dir(settings, run_id), plan["batches"])
    extra = chroma_ids(settings) - set(state_chunks(settings))
    assert extra, "the interrupted run left vectors the state store does not know"
    r = commit_sync(settings, run_id)  # the retry
    assert r["self_check"]["ok"]
    assert commit_sync(settings, run_id) == r, "a retry after success returns the same report"
    (corpus / "new.md").unlink()
    sync(settings, str(corpus), "docs", embedder=embedder)
    assert_in_sync(settings, {"alpha.md", "beta.md", "sub/gamma.txt", "sub/delta.html"})


def test_self_check_catches_divergence_and_full_resync_repairs(settings, corpus: Path, embedder) -> None:
    sync(settings, str(corpus), "docs", embedder=embedder)
    chunks = state_chunks(settings)
    victim = sorted(chunks)[0]
    with state.session_scope(settings.state_db_url) as s:
        coll = state.live_version(s, "docs").collection
    VectorStore(settings).delete(coll, [victim])  # someone deleted a vector behind our back
    check = self_check(settings, "docs")
    assert not check["ok"] and check["missing"] == 1 and victim in check["examples"]
    with pytest.raises(SyncMismatchError, match="full_resync"):
        sync(settings, str(corpus), "docs", embedder=embedder)
    r = sync(settings, str(corpus), "docs", embedder=embedder, full_resync=True)
    assert r["chunks"]["embedded"] == 1 and r["self_check"]["ok"]
    assert state_chunks(settings) == chunks


def test_unknown_index_and_not_migrated(settings, corpus: Path, embedder, tmp_path, monkeypatch) -> None:
    with pytest.raises(UnknownIndexError, match="known indexes"):
        search(settings, "anything", index="nope", embedder=embedder)
    with pytest.raises(UnknownIndexError, match="known indexes"):
        index_status(settings, "nope")
    with pytest.raises(UnknownIndexError, match="ragops ingest SOURCE --index other"):
        sync(settings, str(corpus), "other", embedder=embedder, allow_create=False)
    monkeypatch.setenv("RAGOPS_DATA_DIR", str(tmp_path / "fresh"))
    from ragops.errors import StateStoreError

    with pytest.raises(StateStoreError, match="ragops db upgrade"):
        sync(load_settings(), str(corpus), "docs", embedder=embedder)


def test_retried_commit_does_not_duplicate_quarantine(settings, corpus: Path, embedder) -> None:
    write(corpus, "empty.md", "")
    run_id = new_run_id("test")
    plan = plan_sync(settings, str(corpus), "docs", run_id, embedder=embedder)
    for b in plan["batches"]:
        process_batch(settings, run_id, b, embedder=embedder)
        process_batch(settings, run_id, b, embedder=embedder)  # a retried mapped task
    commit_sync(settings, run_id)
    with state.session_scope(settings.state_db_url) as s:
        rows = s.execute(select(func.count()).select_from(state.Quarantine)
                         .where(state.Quarantine.run_id == run_id)).scalar()
    assert rows == 1


def test_full_resync_rebuilds_a_lost_collection(settings, corpus: Path, embedder) -> None:
    sync(settings, str(corpus), "docs", embedder=embedder)
    chunks = state_chunks(settings)
    with state.session_scope(settings.state_db_url) as s:
        coll = state.live_version(s, "docs").collection
    VectorStore(settings).drop(coll)  # e.g. pointed at a new, empty Chroma server
    assert self_check(settings, "docs")["missing"] == len(chunks)
    r = sync(settings, str(corpus), "docs", embedder=embedder, full_resync=True)
    assert r["chunks"]["embedded"] == len(chunks) and r["self_check"]["ok"]
    assert chroma_ids(settings) == set(chunks)


def test_duplicate_text_share_is_checked_over_the_whole_run(data_dir, tmp_path: Path, embedder) -> None:
    # one document per batch: a per-batch check could never see the duplicates
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("ingest:\n  batch_documents: 1\nquality:\n  max_duplicate_text_share: 0.5\nindexes:\n  docs: {}\n")
    s = load_settings(cfg)
    state.upgrade(s.state_db_url)
    records = [json.dumps({"id": f"copy{i}", "title": "Same", "text": PARA.format(topic="copied")}) for i in range(4)]
    (tmp_path / "dups.jsonl").write_text("\n".join(records))
    with pytest.raises(DataIncidentError, match="repeat another chunk"):
        sync(s, str(tmp_path / "dups.jsonl"), "docs", embedder=embedder)
    with state.session_scope(s.state_db_url) as sess:
        assert sess.execute(select(func.count()).select_from(state.Chunk)).scalar() == 0
