"""Whole runs of the real ingest_documents DAG with dag.test(): Airflow's metadata DB, the SQL
state store (SQLite or PostgreSQL), Chroma (embedded or a `chroma run` server), the bundled model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import select

from ragops import state
from ragops.chunking import Chunker, chunk_id
from ragops.config import ChromaSettings, load_settings
from ragops.indexing import pipeline_fingerprint
from ragops.parsing import parse_file
from ragops.sources import FILE_FORMATS, discover
from ragops.vectorstore import VectorStore
from tests.conftest import doc, load_dag, write

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dag(airflow_db):
    return load_dag("ingest_documents")


def expected_chunks(settings, corpus: Path, embedder) -> set[str]:
    """The chunk ids the index must hold: computed from the files as they are now."""
    disc = discover(str(corpus), settings)
    chunker = Chunker(settings.chunking, embedder.tokenizer, embedder.max_tokens, embedder.fingerprint)
    fp = pipeline_fingerprint(settings, embedder)
    out = set()
    for d in disc.docs:
        parsed = parse_file(d.doc_id, (corpus / d.doc_id).read_bytes(), FILE_FORMATS[Path(d.doc_id).suffix])
        out |= {chunk_id(disc.source_id, d.doc_id, p.position, p.text, fp) for p in chunker.split(parsed)}
    return out


def index_ids(settings, index: str = "docs") -> tuple[set[str], set[str]]:
    with state.session_scope(settings.state_db_url) as s:
        coll = state.live_version(s, index).collection
        in_state = set(s.execute(select(state.Chunk.chunk_id).where(state.Chunk.index_name == index)).scalars())
    return in_state, VectorStore(settings).ids(coll)


def run_report(settings, run_id: str) -> dict:
    with state.session_scope(settings.state_db_url) as s:
        run = s.get(state.SyncRun, run_id)
        return {"status": run.status, **run.stats}


def asset_events(uri: str) -> int:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func

    with create_session() as session:
        return session.scalar(select(func.count()).select_from(AssetEvent)
                              .join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(AssetModel.uri == uri))


def run_dag(dag, **conf):
    # every Param explicitly: dag.test() keeps a previous run's conf in the DAG object's params
    full = {"index": "docs", "full_resync": False, "dry_run": False, "allow_mass_delete": False,
            "source_conn_id": None, **conf}
    return dag.test(run_conf=full)


def sync_cycle(dag, settings, corpus: Path, embedder) -> None:
    """add, no-change, modify + delete + add, dry run: the index equals the source each time."""
    events0 = asset_events("ragops://index/docs")
    dr = run_dag(dag, source=str(corpus))
    assert dr.state == "success"
    want = expected_chunks(settings, corpus, embedder)
    assert index_ids(settings) == (want, want)
    first = run_report(settings, dr.run_id)
    assert first["status"] == "committed" and first["chunks"]["embedded"] == len(want)
    assert asset_events("ragops://index/docs") == events0 + 1

    dr = run_dag(dag, source=str(corpus))
    assert dr.state == "success"
    again = run_report(settings, dr.run_id)
    assert again["chunks"]["embedded"] == 0 and again["chunks"]["upserted"] == 0 and again["chunks"]["deleted"] == 0
    assert again["counts"]["unchanged"] == 4
    assert asset_events("ragops://index/docs") == events0 + 1, "no asset event when nothing changed"

    (corpus / "alpha.md").write_text((corpus / "alpha.md").read_text().replace("(0.0)", "(edited)"))
    (corpus / "sub/gamma.txt").unlink()
    write(corpus, "new/omega.md", doc("Omega", "Omega topic"))
    dr = run_dag(dag, source=str(corpus))
    assert dr.state == "success"
    want = expected_chunks(settings, corpus, embedder)
    assert index_ids(settings) == (want, want)
    third = run_report(settings, dr.run_id)
    assert (third["counts"]["added"], third["counts"]["changed"], third["counts"]["deleted"]) == (1, 1, 1)
    assert asset_events("ragops://index/docs") == events0 + 2

    (corpus / "beta.md").unlink()
    dr = run_dag(dag, source=str(corpus), dry_run=True)
    assert dr.state == "success"
    assert index_ids(settings) == (want, want), "a dry run writes nothing"


def test_dag_keeps_index_in_sync_sqlite_embedded(dag, settings, corpus: Path, embedder) -> None:
    sync_cycle(dag, settings, corpus, embedder)


def test_dag_on_postgres_state_store(dag, data_dir, postgres_url: str, monkeypatch, corpus: Path, embedder) -> None:
    monkeypatch.setenv("RAGOPS_STATE_DB_URL", postgres_url)
    settings = load_settings()
    state.upgrade(settings.state_db_url)
    sync_cycle(dag, settings, corpus, embedder)


def test_dag_against_chroma_server(dag, settings, chroma_server: str, monkeypatch, corpus: Path, embedder) -> None:
    host, port = chroma_server.rsplit(":", 1)
    # the DAG reads the server from the Airflow Connection chroma_default, not from RAGOPS_CHROMA_URL
    monkeypatch.setenv("RAGOPS_CHROMA_MODE", "server")
    monkeypatch.setenv("AIRFLOW_CONN_CHROMA_DEFAULT", f"http://{host.split('//')[1]}:{port}")
    server_settings = dataclasses.replace(settings, chroma=ChromaSettings(mode="server", url=chroma_server))
    sync_cycle(dag, server_settings, corpus, embedder)
    assert not (settings.data_dir / "chroma").exists(), "nothing went to an embedded store"


def test_bad_source_fails_fast_without_retries(dag, settings, tmp_path: Path) -> None:
    from airflow.utils.state import TaskInstanceState

    dr = run_dag(dag, source=str(tmp_path / "missing"))
    assert dr.state == "failed"
    plan = next(ti for ti in dr.get_task_instances() if ti.task_id == "plan")
    assert plan.state == TaskInstanceState.FAILED and plan.try_number == 1, "a missing source is not retried"


def test_dag_ingests_an_fsspec_url(dag, settings) -> None:
    """A URL source goes through the same code path (memory:// works here because dag.test()
    runs every task in this process; s3:// or gs:// add a Connection via source_conn_id)."""
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/ragops-bucket/guide/a.md", doc("Remote A", "Remote alpha").encode())
    fs.pipe("/ragops-bucket/guide/deep/b.txt", ("Remote B\n\n" + "Remote beta text is long enough. " * 5).encode())
    dr = run_dag(dag, source="memory://ragops-bucket/guide")
    assert dr.state == "success"
    with state.session_scope(settings.state_db_url) as s:
        docs = set(s.execute(select(state.Document.doc_id)).scalars())
    assert docs == {"a.md", "deep/b.txt"}
    in_state, in_chroma = index_ids(settings)
    assert in_state == in_chroma and in_state
