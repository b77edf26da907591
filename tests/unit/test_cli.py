"""The `ragops` command as a user runs it: a real subprocess, real state store and Chroma."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RAGOPS = str(Path(sys.executable).parent / "ragops")


def ragops(*args: str, env_dir: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAGOPS_DATA_DIR=str(env_dir))
    proc = subprocess.run([RAGOPS, *args], capture_output=True, text=True, env=env, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_cli_ingest_search_status_quarantine(tmp_path: Path, corpus: Path) -> None:
    d = tmp_path / "cli-data"
    assert "migration" in ragops("db", "upgrade", env_dir=d).stdout
    (corpus / "empty.md").write_text("")
    out = json.loads(ragops("ingest", str(corpus), "--index", "guide", "--json", env_dir=d).stdout)
    assert out["index"] == "guide" and out["collection"] == "guide__v1"
    assert out["counts"]["added"] == 5 and out["counts"]["indexed"] == 4
    assert out["quarantine"]["reasons"] == {"empty": 1}

    text = ragops("ingest", str(corpus), "--index", "guide", env_dir=d).stdout
    assert "unchanged 4" in text and "embedded 0" in text and "self-check: OK" in text

    hits = json.loads(ragops("search", "Delta assets", "-k", "2", "--index", "guide", "--json", env_dir=d).stdout)
    assert len(hits) == 2 and hits[0]["doc_id"] == "sub/delta.html"
    assert set(hits[0]) >= {"doc_id", "chunk_id", "score", "snippet"}
    assert "alert(" not in json.dumps(hits), "scripts never reach the index"

    status = json.loads(ragops("index", "status", "--json", env_dir=d).stdout)
    assert [(s["index"], s["documents"], s["self_check"]["ok"]) for s in status] == [("guide", 4, True)]
    q = json.loads(ragops("quarantine", "--index", "guide", "--json", env_dir=d).stdout)
    assert [(e["doc_id"], e["reason"]) for e in q] == [("empty.md", "empty")]  # retried, still bad
    assert "empty.md  parse/empty" in ragops("quarantine", env_dir=d).stdout

    dry = ragops("ingest", str(corpus), "--index", "guide", "--dry-run", env_dir=d).stdout
    assert dry.startswith("dry run") and "nothing was written" in dry

    rebuilt = ragops("index", "rebuild", "--index", "guide", env_dir=d).stdout
    assert "now serves guide__v2 (was guide__v1)" in rebuilt and "0 embedded" in rebuilt
    listing = ragops("index", "status", "--index", "guide", env_dir=d).stdout
    assert "v1 guide__v1: retired, 7 vectors" in listing and "v2 guide__v2: live, 7 vectors" in listing
    assert "all-MiniLM-L6-v2, chunks 200/30 tokens (default)" in listing and "by cli, 0 embedded/7 reused" in listing
    back = ragops("index", "rollback", "--index", "guide", env_dir=d).stdout
    assert "now serves guide__v1 (was guide__v2)" in back
    assert "self-check: OK" in ragops("index", "status", "--index", "guide", env_dir=d).stdout


@pytest.mark.parametrize(("args", "needle"), [
    (("search", "x", "--index", "nope"), "unknown index 'nope'"),
    (("ingest", "/definitely/not/here"), "does not exist"),
    (("search", "x", "-k", "0"), "k must be between"),
    (("ingest", "include/corpus", "--index", "Bad__Name"), "invalid index name"),
])
def test_cli_errors_name_problem_and_fix(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    d = tmp_path / "cli-data"
    ragops("db", "upgrade", env_dir=d)
    proc = ragops(*args, env_dir=d, ok=False)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_cli_before_migration_says_what_to_run(tmp_path: Path) -> None:
    proc = ragops("index", "status", env_dir=tmp_path / "new", ok=False)
    assert proc.returncode == 2 and "ragops db upgrade" in proc.stderr
