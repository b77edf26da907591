from __future__ import annotations

from ragops.config import QualitySettings
from ragops.quality import validate


def test_document_suite_flags_rows_with_reasons() -> None:
    rows = [
        {"doc_id": "a", "title": "A", "uri": "a", "text": "a perfectly fine document text"},
        {"doc_id": "b", "title": "B", "uri": "b", "text": "short"},
        {"doc_id": "c", "title": "C", "uri": "c", "text": "has a bell \x07 character in the middle"},
        {"doc_id": "d", "title": None, "uri": "d", "text": "no title but long enough text"},
        {"doc_id": "e", "title": "E", "uri": "e", "text": "broken \ufffd encoding in this text"},
    ]
    res = validate("documents", rows, QualitySettings())
    assert set(res.failed_rows) == {1, 2, 3}
    assert res.failed_rows[1][0].startswith("length_out_of_bounds")
    assert res.failed_rows[2][0].startswith("invalid_characters")
    assert res.failed_rows[3][0].startswith("missing_metadata")
    # one U+FFFD is information lost upstream: a warning, the document is indexed (ragops.repair)
    assert 4 in res.warned_rows and res.warned_rows[4][0].startswith("replacement_chars")
    assert res.incidents == []


def test_duplicate_ids_and_duplicate_text_share() -> None:
    rows = [{"chunk_id": f"c{i % 3}", "doc_id": "d", "body": "same text", "n_tokens": 3, "text_hash": "h"}
            for i in range(6)]
    res = validate("chunks", rows, QualitySettings(max_duplicate_text_share=0.5), max_tokens=254)
    assert all(any(r.startswith("duplicate_id") for r in reasons) for reasons in res.failed_rows.values())
    run = validate("chunk_set", [{"text_hash": r["text_hash"]} for r in rows], QualitySettings(max_duplicate_text_share=0.5))
    assert len(run.incidents) == 1 and "repeat" in run.incidents[0]
    ok = validate("chunk_set", [{"text_hash": h} for h in "aabcd"], QualitySettings(max_duplicate_text_share=0.5))
    assert ok.incidents == []


def test_chunk_token_bound() -> None:
    rows = [{"chunk_id": "a", "doc_id": "d", "body": "x", "n_tokens": 300, "text_hash": "1"},
            {"chunk_id": "b", "doc_id": "d", "body": "y", "n_tokens": 10, "text_hash": "2"}]
    res = validate("chunks", rows, QualitySettings(), max_tokens=254)
    assert list(res.failed_rows) == [0] and res.failed_rows[0][0].startswith("chunk_too_long")
