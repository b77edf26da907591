"""Dense, lexical (BM25) and hybrid retrieval on a real index: the BM25 index follows every sync of
the live collection, and eval runs can use any mode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ragops.errors import LexicalIndexError, RagopsError
from ragops.evaluation.runner import run_eval
from ragops.indexing import sync
from ragops.lexical import folder_for
from ragops.retrieval import search
from tests.conftest import write

DOCS = {
    "pools.md": "# Pools\n\nThe writer pool ragops_chroma_writer has exactly one slot. Zanzibar is the codename "
                "of the pool scheduler.\n",
    "alerts.md": "# Alerts\n\nAlert e-mails are folded when an identical alert was sent within the dedupe "
                 "window of sixty minutes.\n",
    "chunks.md": "# Chunks\n\nA chunk id joins the document key, the position and a content hash. Retries "
                 "never create duplicate chunks.\n",
}


@pytest.fixture
def indexed(tmp_path: Path, settings, embedder):
    corpus = tmp_path / "corpus"
    for rel, text in DOCS.items():
        write(corpus, rel, text)
    report = sync(settings, str(corpus), "docs", trigger="test", embedder=embedder)
    return settings, corpus, report


def test_commit_builds_the_bm25_index_and_all_modes_search(indexed, embedder) -> None:
    settings, _, report = indexed
    assert report["lexical"]["chunks"] == report["chunks"]["upserted"]
    assert (folder_for(settings.data_dir, "docs__v1") / "manifest.json").exists()
    # a rare made-up term: BM25 finds it exactly; hybrid keeps it on top
    lexical = search(settings, "Zanzibar codename", k=2, index="docs", mode="lexical")
    assert lexical[0].doc_id == "pools.md" and lexical[0].score > 0
    hybrid = search(settings, "Zanzibar codename", k=2, index="docs", mode="hybrid", embedder=embedder)
    assert hybrid[0].doc_id == "pools.md"
    dense = search(settings, "how are repeated alert emails combined", k=1, index="docs", mode="dense",
                   embedder=embedder)
    assert dense[0].doc_id == "alerts.md" and -1 <= dense[0].score <= 1
    with pytest.raises(RagopsError, match="unknown retrieval mode 'fuzzy'"):
        search(settings, "x", index="docs", mode="fuzzy")


def test_bm25_index_follows_syncs_and_is_not_rebuilt_without_change(indexed, embedder) -> None:
    settings, corpus, _ = indexed
    manifest = folder_for(settings.data_dir, "docs__v1") / "manifest.json"
    before = json.loads(manifest.read_text())
    again = sync(settings, str(corpus), "docs", trigger="test", embedder=embedder)
    assert "lexical" not in again and json.loads(manifest.read_text()) == before  # no change: no rebuild
    (corpus / "pools.md").unlink()
    write(corpus, "new.md", "# New\n\nQuetzalcoatl is a new codename that only this page mentions.\n")
    changed = sync(settings, str(corpus), "docs", trigger="test", embedder=embedder)
    assert changed["lexical"]["chunks"] == 3
    hits = search(settings, "Zanzibar Quetzalcoatl codename", k=5, index="docs", mode="lexical")
    assert [h.doc_id for h in hits][0] == "new.md" and "pools.md" not in {h.doc_id for h in hits}


def test_missing_bm25_index_is_a_clear_error_and_the_next_sync_rebuilds_it(indexed, embedder) -> None:
    settings, corpus, _ = indexed
    shutil.rmtree(folder_for(settings.data_dir, "docs__v1"))
    with pytest.raises(LexicalIndexError, match="docs__v1"):
        search(settings, "Zanzibar", index="docs", mode="lexical")
    report = sync(settings, str(corpus), "docs", trigger="test", embedder=embedder)
    assert report["lexical"]["chunks"] == 3
    assert search(settings, "Zanzibar", index="docs", mode="lexical")[0].doc_id == "pools.md"


def test_eval_in_hybrid_mode_keeps_cosine_scores_for_refusal(indexed, embedder, tmp_path: Path) -> None:
    settings, _, _ = indexed
    golden = tmp_path / "g.jsonl"
    golden.write_text("\n".join(json.dumps(q) for q in [
        {"id": "a", "question": "What is the codename Zanzibar?", "relevant_doc_ids": ["pools.md"]},
        {"id": "b", "question": "How long is the dedupe window for alerts?", "relevant_doc_ids": ["alerts.md"],
         "reference_answer": "sixty minutes"},
        {"id": "c", "question": "Which GPU does the inference fleet use?", "answerable": False},
    ]) + "\n")
    for mode in ("lexical", "hybrid"):
        summary = run_eval(settings, golden, "rag_answer@1", "docs", embedder=embedder, retrieval=mode)
        assert summary["metrics"]["hit_rate@1"] == 1.0
        rows = [json.loads(line) for line in (Path(summary["output_dir"]) / "results.jsonl").read_text().splitlines()]
        for r in rows:  # the chunks handed to the generator carry cosine similarities, not BM25/RRF scores
            assert all(-1 <= c["score"] <= 1 for c in r["contexts"])
        assert rows[0]["contexts"][0]["doc_id"] == "pools.md" and rows[0]["contexts"][0]["score"] > 0.2
        from ragops import state

        with state.session_scope(settings.state_db_url) as s:
            assert s.get(state.EvalRun, summary["run_id"]).config["retrieval"] == mode


def test_unreadable_bm25_index_is_rebuilt_by_a_sync_without_changes(indexed, embedder) -> None:
    settings, corpus, _ = indexed
    manifest = folder_for(settings.data_dir, "docs__v1") / "manifest.json"
    manifest.write_text("{ not json")
    report = sync(settings, str(corpus), "docs", trigger="test", embedder=embedder)
    assert report["chunks"]["upserted"] == 0 and report["lexical"]["chunks"] == 3
    assert search(settings, "Zanzibar", index="docs", mode="lexical")[0].doc_id == "pools.md"


def test_a_failed_bm25_build_does_not_undo_the_committed_sync(indexed, embedder) -> None:
    import dataclasses

    settings, corpus, _ = indexed
    broken = settings.replace(retrieval=dataclasses.replace(settings.retrieval, stemmer="klingon"))
    write(corpus, "extra.md", "# Extra\n\nAn extra page about the nightly evaluation schedule at two o'clock.\n")
    report = sync(broken, str(corpus), "docs", trigger="test", embedder=embedder)
    assert report["counts"]["added"] == 1 and report["self_check"]["ok"]
    assert "unknown stemmer 'klingon'" in report["lexical"]["error"]
    assert search(settings, "nightly evaluation schedule", k=1, index="docs", mode="dense",
                  embedder=embedder)[0].doc_id == "extra.md"
    fixed = sync(settings, str(corpus), "docs", trigger="test", embedder=embedder)  # the next sync repairs it
    assert fixed["lexical"]["chunks"] == 4
