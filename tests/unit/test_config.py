from __future__ import annotations

from pathlib import Path

import pytest

from ragops.config import check_index_name, load_settings
from ragops.errors import ConfigError, UnknownIndexError


def test_defaults_and_project_file(data_dir: Path) -> None:
    s = load_settings()
    assert s.data_dir == data_dir.resolve()
    assert s.state_db_url == f"sqlite:///{data_dir.resolve() / 'state.db'}"
    assert s.chroma.mode == "embedded"
    assert "docs" in s.indexes
    assert s.ingest.default_source == "include/corpus"


def test_env_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAGOPS_STATE_DB_URL", "postgresql+psycopg2://u:secret@db/x")
    monkeypatch.setenv("RAGOPS_CHROMA_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("RAGOPS_CHROMA_TOKEN", "tok")
    s = load_settings()
    assert s.state_db_url.endswith("@db/x")
    assert s.chroma.mode == "server" and s.chroma.url == "http://127.0.0.1:9999"
    assert "tok" not in repr(s.chroma)  # the token never shows up in a repr or a log line


@pytest.mark.parametrize(("text", "needle"), [
    ("chunking:\n  chunk_tokens: [1\n", "line"),
    ("chunking:\n  chunk_size: 100\n", "unknown key(s) chunk_size"),
    ("chunking:\n  chunk_tokens: many\n", "chunking.chunk_tokens: expected a number"),
    ("chunking:\n  chunk_tokens: 50\n  overlap_tokens: 60\n", "must be smaller"),
    ("quality:\n  max_failed_share: 2\n", "between 0 and 1"),
    ("chroma:\n  mode: cloud\n", "chroma.mode"),
    ("colour: blue\n", "unknown top-level key(s) colour"),
    ("- a\n- b\n", "mapping at the top level"),
    ("indexes:\n  Bad__Name: {}\n", "invalid index name"),
    # the trigger forms' default index must be one of their choices (Airflow would not load the DAGs)
    ("indexes:\n  scifact: {}\n", "ingest.default_index is 'docs' but indexes declares only scifact"),
    ("drift:\n  checks: [corpus, vibes]\n", "unknown check(s) vibes"),
    ("drift:\n  methods: [mmd, ks]\n", "drift.methods must be some of mmd, classifier, centroid"),
    ("drift:\n  alpha: 0.7\n", "drift.alpha must be between 0 and 0.5"),
    ("drift:\n  permutations: 10\n", "drift.permutations at least 19"),
    ("drift:\n  current_window: 1 day\n", "expected a duration like 90m, 12h, 7d or 2w, got '1 day'"),
    ("drift:\n  gap_threshold: 1.5\n", "drift.gap_threshold must be in (0, 1]"),
    ("drift:\n  cluster_size: 3\n", "unknown key(s) cluster_size"),
    ("eval:\n  vector_cache_mb: -1\n", "eval.vector_cache_mb: must not be negative, got -1"),
    ("eval:\n  vector_cache_mb: lots\n", "eval.vector_cache_mb"),
])
def test_bad_settings_name_file_and_field(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises((ConfigError, UnknownIndexError)) as err:
        load_settings(cfg)
    assert needle in str(err.value)
    if isinstance(err.value, ConfigError) and "index" not in needle:
        assert str(cfg) in str(err.value)


def test_drift_defaults_follow_the_yaml(data_dir: Path) -> None:
    s = load_settings()
    assert s.drift.checks == ("corpus", "documents", "queries", "gaps", "quality")
    assert s.drift.schedule == "30 4 * * *" and s.drift.alpha == 0.01
    assert s.query_log_uri == str(s.data_dir / "querylog")


def test_missing_explicit_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", ["docs", "my-index_2", "abc"])
def test_valid_index_names(name: str) -> None:
    assert check_index_name(name) == name


@pytest.mark.parametrize("name", ["", "ab", "Docs", "a__b", "-x-", "x" * 60, "a b"])
def test_invalid_index_names(name: str) -> None:
    with pytest.raises(UnknownIndexError, match="invalid index name"):
        check_index_name(name)
