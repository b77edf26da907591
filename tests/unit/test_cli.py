"""The `ragops` command as a user runs it: a real subprocess, real state store and Chroma."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RAGOPS = str(Path(sys.executable).parent / "ragops")


def ragops(*args: str, env_dir: Path, ok: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RAGOPS_DATA_DIR=str(env_dir))
    proc = subprocess.run([RAGOPS, *args], capture_output=True, text=True, env=env, timeout=600, cwd=cwd)
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
    assert "all-MiniLM-L6-v2 (onnx), chunks 200/30 tokens (default)" in listing and "by cli, 0 embedded/7 reused" in listing
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


def test_cli_paths_are_relative_to_the_current_directory(tmp_path: Path, corpus: Path) -> None:
    """As in every other command line: a relative path typed in a shell means the shell's directory,
    not the project checkout (whose root holds no `corpus/` or `golden.jsonl`)."""
    d, work = tmp_path / "cli-data", corpus.parent
    assert not (Path(os.environ["RAGOPS_PROJECT_DIR"]) / "corpus").exists()
    ragops("db", "upgrade", env_dir=d)
    proc = ragops("ingest", "corpus", "--index", "guide", "--json", env_dir=d, cwd=work)
    assert "great_expectations" not in proc.stderr  # no library INFO chatter without -v
    out = json.loads(proc.stdout)
    assert out["source_id"] == f"file://{corpus.resolve()}" and out["counts"]["indexed"] == 4
    assert out["timing_s"]["total"] >= out["timing_s"]["commit"] == out["elapsed_s"]

    (work / "golden.jsonl").write_text('{"id": "a", "question": "What is alpha?", "relevant_doc_ids": ["alpha.md"]}\n')
    ok = ragops("eval", "validate", "golden.jsonl", "--index", "guide", env_dir=d, cwd=work).stdout
    assert ok.startswith("golden.jsonl: 1 questions") and "every relevant document is in index guide" in ok
    (work / "sub").mkdir()
    (work / "sub" / "bad.jsonl").write_text('{"id": "a"}\n')
    err = ragops("eval", "run", "--dataset", "sub/bad.jsonl", "--index", "guide", env_dir=d, cwd=work, ok=False).stderr
    assert f"{work / 'sub' / 'bad.jsonl'}:1: field 'question'" in err, err  # found and read, not "does not exist"
    err = ragops("eval", "validate", "../nowhere.jsonl", env_dir=d, cwd=work / "sub", ok=False).stderr
    assert str(work / "nowhere.jsonl") in err and "Traceback" not in err

    # an index that does not exist is named as such (with the known ones), not blamed on the set's ids
    proc = ragops("eval", "validate", "golden.jsonl", "--index", "nope", env_dir=d, cwd=work, ok=False)
    assert proc.returncode == 2 and "unknown index 'nope': known indexes are guide" in proc.stderr
    assert "unknown id" not in proc.stderr


def test_cli_eval_validate_unknown_index_before_any_ingest(tmp_path: Path) -> None:
    d = tmp_path / "cli-data"
    ragops("db", "upgrade", env_dir=d)
    golden = tmp_path / "golden.jsonl"
    golden.write_text('{"id": "a", "question": "What is alpha?", "relevant_doc_ids": ["alpha.md"]}\n')
    proc = ragops("eval", "validate", str(golden), "--index", "nope", env_dir=d, ok=False)
    assert proc.returncode == 2 and "unknown index 'nope': known indexes are (none yet)" in proc.stderr
    assert "unknown id" not in proc.stderr


def test_cli_global_flags_progress_and_clean_failures(tmp_path: Path, corpus: Path) -> None:
    """-v/-q/--config after the subcommand; progress on stderr only; no state file from a failed start."""
    d = tmp_path / "cli-data"
    early = ragops("ingest", str(corpus), env_dir=d, ok=False)  # before `db upgrade`
    assert early.returncode == 2 and "ragops db upgrade" in early.stderr
    assert not (d / "state.db").exists(), "a command that fails before it starts leaves no state file behind"

    ragops("db", "upgrade", env_dir=d)
    env = dict(os.environ, RAGOPS_DATA_DIR=str(d), RAGOPS_PROGRESS="bar")  # a bar even though stderr is a pipe
    proc = subprocess.run([RAGOPS, "ingest", str(corpus), "--json", "-v"], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)  # stdout is the JSON report only
    assert "ingest docs" in proc.stderr and "4/4" in proc.stderr and "documents" in proc.stderr
    assert " INFO " in proc.stderr  # -v after the subcommand took effect
    assert out["run_elapsed_s"] >= out["elapsed_s"] > 0
    assert set(out["phases_s"]) >= {"discover_plan", "parse", "repair", "quality", "chunk", "embed", "write",
                                    "commit"}
    quiet = subprocess.run([RAGOPS, "ingest", str(corpus), "--full-resync", "--json", "--quiet"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert quiet.returncode == 0 and "documents" not in quiet.stderr and json.loads(quiet.stdout)["counts"]
    # without -v, library INFO lines (Great Expectations, Chroma) stay out of stderr
    plain = ragops("ingest", str(corpus), "--full-resync", env_dir=d)
    assert "great_expectations" not in plain.stderr and "chromadb" not in plain.stderr and " INFO " not in plain.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("quality:\n  max_bad_char_share: 2\n")
    wrong = ragops("index", "status", "--config", str(bad), env_dir=d, ok=False)
    assert wrong.returncode == 2 and "max_bad_char_share must be between 0 and 1" in wrong.stderr
