from __future__ import annotations

import json
import os
from pathlib import Path

import fsspec
import pytest

from ragops.config import load_settings
from ragops.errors import SourceError
from ragops.sources import discover
from tests.conftest import write


@pytest.fixture
def s(data_dir: Path):
    return load_settings()


def test_directory_ids_globs_and_hashes(tmp_path: Path, s) -> None:
    root = tmp_path / "src"
    write(root, "a.md", "# A\n\ntext")
    write(root, "d/b.txt", "b text")
    write(root, "d/c.py", "print('not a document')")
    write(root, ".hidden/x.md", "# hidden")
    disc = discover(str(root), s)
    assert sorted(d.doc_id for d in disc.docs) == ["a.md", "d/b.txt"]
    assert disc.source_id == "file://" + os.path.realpath(root)
    again = discover(str(root), s)
    assert [d.content_hash for d in disc.docs] == [d.content_hash for d in again.docs]


def test_beir_jsonl_and_record_problems(tmp_path: Path, s) -> None:
    lines = [
        json.dumps({"_id": "1", "title": "T1", "text": "first text", "metadata": {}}),
        "{not json",
        json.dumps({"title": "no id", "text": "x"}),
        json.dumps({"_id": "3", "title": "no text"}),
        json.dumps({"_id": "1", "title": "dup", "text": "again"}),
        json.dumps({"_id": 4, "text": "numeric id", "year": 2020}),
    ]
    f = tmp_path / "corpus.jsonl"
    f.write_text("\r\n".join(lines) + "\r\n")
    disc = discover(str(f), s)
    assert [d.doc_id for d in disc.docs] == ["1", "4"]
    assert disc.docs[0].record["title"] == "T1"
    assert disc.docs[1].record["metadata"] == {"year": 2020}
    reasons = {p.reason: p for p in disc.problems}
    assert set(reasons) == {"malformed_jsonl", "missing_id", "missing_text", "duplicate_id"}
    assert "corpus.jsonl:2" in reasons["malformed_jsonl"].detail
    assert "corpus.jsonl" in disc.protected_origins


def test_parquet_records_with_configured_fields(tmp_path: Path, data_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"key": ["a", "b"], "body": ["alpha body", "beta body"], "lang": ["en", "de"]}),
                   tmp_path / "recs.parquet")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("ingest:\n  records:\n    id_field: [key]\n    text_field: [body]\n    metadata_fields: [lang]\n")
    disc = discover(str(tmp_path / "recs.parquet"), load_settings(cfg))
    assert [(d.doc_id, d.record["text"], d.record["metadata"]) for d in disc.docs] == [
        ("a", "alpha body", {"lang": "en"}), ("b", "beta body", {"lang": "de"})]


def test_records_inside_a_directory_are_prefixed(tmp_path: Path, s) -> None:
    write(tmp_path / "src", "data/r.jsonl", json.dumps({"id": "x", "text": "hello"}) + "\n")
    assert [d.doc_id for d in discover(str(tmp_path / "src"), s).docs] == ["data/r.jsonl#x"]


def test_too_large_symlinks_and_unreadable(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "src"
    write(root, "ok.md", "# ok\n\nfine")
    write(root, "big.txt", b"x" * 2048)
    outside = write(tmp_path, "secret.md", "# secret")
    os.symlink(outside, root / "link.md")
    os.symlink(root / "ok.md", root / "inside-link.md")
    os.symlink(tmp_path / "missing.md", root / "dangling.md")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("quality:\n  max_document_bytes: 1024\n")
    disc = discover(str(root), load_settings(cfg))
    assert sorted(d.doc_id for d in disc.docs) == ["inside-link.md", "ok.md"]
    by_id = {p.doc_id: p.reason for p in disc.problems}
    assert by_id == {"big.txt": "too_large", "link.md": "symlink_outside_root", "dangling.md": "symlink_outside_root"}


def test_unreadable_file_is_a_problem(tmp_path: Path, s, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "src"
    write(root, "ok.md", "# ok")
    write(root, "locked.md", "# locked")
    real_open = fsspec.implementations.local.LocalFileSystem._open

    def deny(self, path, *a, **k):  # root can read any file, so the permission error is injected
        if path.endswith("locked.md"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(self, path, *a, **k)

    monkeypatch.setattr(fsspec.implementations.local.LocalFileSystem, "_open", deny)
    disc = discover(str(root), s)
    assert [d.doc_id for d in disc.docs] == ["ok.md"]
    assert [(p.doc_id, p.reason) for p in disc.problems] == [("locked.md", "unreadable")]
    assert "locked.md" in disc.protected_origins


def test_missing_and_unsupported_sources(tmp_path: Path, s) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        discover(str(tmp_path / "nope"), s)
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(SourceError, match="unsupported type .png"):
        discover(str(tmp_path / "x.png"), s)
    with pytest.raises(SourceError, match="empty source"):
        discover("  ", s)


def test_fsspec_url_uses_the_same_code_path(s) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/docs/a.md", b"# A\n\nmemory text")
    fs.pipe("/bucket/docs/sub/b.txt", b"more text")
    disc = discover("memory://bucket/docs", s)
    assert sorted(d.doc_id for d in disc.docs) == ["a.md", "sub/b.txt"]
    assert disc.source_id.startswith("memory://")
