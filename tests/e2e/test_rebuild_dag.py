"""Whole runs of the real rebuild_index DAG with dag.test(): the demo corpus in embedded Chroma
(and in a `chroma run` server), the bundled model and a second, degraded model saved from it,
the golden retrieval gate, rollback through the DAG's Params, retention, the `index` e-mails
captured by an SMTP server on loopback, and a rebuild killed with SIGKILL then run again."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from ragops import state
from ragops.config import ChromaSettings, load_settings
from ragops.drift.snapshots import listing as snapshot_listing
from ragops.embedding import Embedder
from ragops.indexing import self_check, sync
from ragops.lifecycle import versions
from ragops.retrieval import search
from ragops.vectorstore import VectorStore
from tests.conftest import SmtpServer, load_dag, parts
from tests.e2e.test_ingest_dag import asset_events

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "include" / "corpus"
CONFIG = """
alerts:
  from_email: ragops@test.local
  base_url: http://airflow.example:8080
  send_attempts: 2
  retry_backoff_seconds: 0.1
  recipients:
    default: [oncall@test.local]
    index: [platform@test.local]
rebuild:
  keep: 2
chunking:
  profiles:
    small: {chunk_tokens: 120, overlap_tokens: 20}
indexes:
  docs:
    golden: include/eval/golden/docs.jsonl
"""


@pytest.fixture(scope="module")
def dag(airflow_db):
    return load_dag("rebuild_index")


@pytest.fixture
def env(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, embedder):
    cfg = tmp_path / "ragops.yaml"
    cfg.write_text(CONFIG)
    monkeypatch.setenv("RAGOPS_CONFIG", str(cfg))
    s = load_settings()
    state.upgrade(s.state_db_url)
    sync(s, str(CORPUS), "docs", trigger="test", embedder=embedder)
    return s


@pytest.fixture(scope="module")
def degraded_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real second model: the bundled MiniLM with noise on every weight (worse retrieval)."""
    import torch
    from sentence_transformers import SentenceTransformer

    from ragops.embedding import BUNDLED, resolve_model_path

    model = SentenceTransformer(str(resolve_model_path(BUNDLED)), device="cpu")
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * p.detach().float().std() * 1.5)
    out = tmp_path_factory.mktemp("models") / "noisy-minilm"
    model.save(str(out))
    return str(out)


def run(dag, **conf):
    # every Param explicitly: dag.test() keeps a previous run's conf in the DAG object's params
    full = {"index": "docs", "action": "rebuild", "embedding_model": None, "chunking_profile": None,
            "embedding_backend": None, "force": False, "rollback_to": 0, **conf}
    return dag.test(run_conf=full)


def xcom(dr, task_id: str):
    ti = next(t for t in dr.get_task_instances() if t.task_id == task_id)
    return ti.xcom_pull(task_ids=task_id)


def statuses(settings) -> list[tuple[int, str]]:
    return [(v["version"], v["status"]) for v in versions(settings, "docs")]


def audit_actions(settings) -> list[str]:
    with state.session_scope(settings.state_db_url) as s:
        return [a.action for a in s.execute(select(state.AuditEntry).order_by(state.AuditEntry.id)).scalars()]


class Counting:
    """Counts the texts the real model embeds inside the DAG's tasks (dag.test runs them in-process)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.texts = 0
        real = Embedder.encode

        def encode(emb, texts, log_every: float = 10.0):
            self.texts += len(texts)
            return real(emb, texts, log_every)

        monkeypatch.setattr(Embedder, "encode", encode)


def test_params_and_schedule(dag) -> None:
    assert dag.timetable.timetable.expression == "0 3 * * 0"  # weekly
    assert "ragops://pipeline/docs" in repr(dag.timetable.asset_condition)  # and on a settings change
    assert set(dag.params) == {"index", "action", "embedding_model", "chunking_profile", "embedding_backend", "force",
                               "rollback_to"}
    for name in dag.params:
        assert dag.params.get_param(name).schema.get("title"), f"Param {name} has no title"
    assert {"small", "large", "settings"} <= set(dag.params.get_param("chunking_profile").schema["enum"])
    rebuild = dag.get_task("rebuild")
    assert rebuild.pool == "ragops_chroma_writer"


def test_swap_gate_rollback_and_retention(dag, env, smtp_server: SmtpServer, monkeypatch, degraded_model) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_server.connection_json())
    events0 = asset_events("ragops://index/docs")

    # 1. a same-model rebuild: every vector reused, validated against live, swapped, e-mailed
    counting = Counting(monkeypatch)
    dr = run(dag)
    assert dr.state == "success"
    r = xcom(dr, "rebuild")
    assert r["swapped"] and r["live"] == "docs__v2" and r["embedded"] == 0 and r["reused"] == r["chunks"] > 300
    assert counting.texts < 200  # the 20-vector sample and the golden questions, never the chunks
    assert r["retrieval"]["questions"] >= 30
    # the same vectors in a new collection: equal retrieval up to HNSW's approximate neighbours
    for metric, live in r["retrieval"]["live"].items():
        assert abs(r["retrieval"]["new"][metric] - live) <= 0.01, (metric, r["retrieval"])
    assert statuses(env) == [(1, "retired"), (2, "live")]
    assert asset_events("ragops://index/docs") == events0 + 1  # nightly_eval evaluates the new version
    _, rcpt, msg = smtp_server.inbox.messages[-1]
    assert rcpt == ["platform@test.local"] and "[SWAPPED]" in msg["Subject"]
    text, html = parts(msg)
    assert "docs__v2" in text and "hit_rate@5" in text and "ndcg@10" in text and "<table" in html
    snap = xcom(dr, "snapshot")  # check_drift's corpus reference is the version that now serves
    assert snap["taken"] and snap["name"].startswith("index_swap-")
    assert [(x["collection"], x["reason"]) for x in snapshot_listing(env, "docs")] == [("docs__v2", "index_swap")]

    # 2. a worse model: re-embedded into v3, fails the golden gate; v2 keeps serving; REJECTED e-mail
    dr = run(dag, embedding_model=degraded_model)
    assert dr.state == "success"  # a failed gate is a finding, not a failed task
    assert not xcom(dr, "snapshot")["taken"]  # nothing new serves: the reference stays
    r = xcom(dr, "rebuild")
    assert not r["swapped"] and r["pipeline_change"] and r["embedded"] > 300
    assert any("below live" in reason for reason in r["reasons"]), r["reasons"]
    assert statuses(env) == [(1, "retired"), (2, "live"), (3, "rejected")]
    assert not VectorStore(env).has_collection("docs__v3")
    with state.session_scope(env.state_db_url) as s:
        assert not s.execute(select(state.Chunk).where(state.Chunk.index_name == "docs~v3").limit(1)).first()
    assert self_check(env, "docs")["ok"]
    _, _, msg = smtp_server.inbox.messages[-1]
    assert "[REJECTED]" in msg["Subject"]
    text, _ = parts(msg)
    assert "below live" in text and "docs__v2" in text and "noisy-minilm" in text
    assert asset_events("ragops://index/docs") == events0 + 1
    assert "index_rebuild_rejected" in audit_actions(env)

    # 3. rollback through the DAG's Params: v1 serves again
    dr = run(dag, action="rollback", rollback_to=1)
    assert dr.state == "success"
    assert statuses(env) == [(1, "live"), (2, "retired"), (3, "rejected")]
    _, _, msg = smtp_server.inbox.messages[-1]
    assert "[ROLLED BACK]" in msg["Subject"] and "docs__v1" in parts(msg)[0]
    assert snapshot_listing(env, "docs")[0]["reason"] == "index_rollback"
    assert snapshot_listing(env, "docs")[0]["collection"] == "docs__v1"
    assert search(env, "How do I roll back an index?", k=3, index="docs")  # readers follow the alias

    # 4. another rebuild: retention keeps two versions and drops the rest
    dr = run(dag)
    assert dr.state == "success" and xcom(dr, "rebuild")["live"] == "docs__v4"
    assert statuses(env) == [(1, "deleted"), (2, "retired"), (3, "rejected"), (4, "live")]
    assert not VectorStore(env).has_collection("docs__v1")
    assert len(smtp_server.inbox.messages) == 4
    assert audit_actions(env).count("index_swapped") == 2


def test_rebuild_against_a_chroma_server(dag, chroma_server: str, monkeypatch, tmp_path, embedder) -> None:
    host, port = chroma_server.removeprefix("http://").rsplit(":", 1)
    monkeypatch.setenv("AIRFLOW_CONN_CHROMA_DEFAULT", f"http://{host}:{port}")
    monkeypatch.setenv("RAGOPS_DATA_DIR", str(tmp_path / "server-data"))
    cfg = tmp_path / "server.yaml"
    cfg.write_text(CONFIG + "chroma:\n  mode: server\n")
    monkeypatch.setenv("RAGOPS_CONFIG", str(cfg))
    s = load_settings()
    assert s.chroma.mode == "server"
    state.upgrade(s.state_db_url)
    server = dataclasses.replace(s, chroma=ChromaSettings(mode="server", url=chroma_server))
    client = VectorStore(server).client  # the server is shared by the session: start from an empty one
    for c in client.list_collections():
        client.delete_collection(c.name if hasattr(c, "name") else str(c))
    sync(server, str(CORPUS), "docs", trigger="test", embedder=embedder)
    counting = Counting(monkeypatch)
    dr = run(dag)
    assert dr.state == "success"
    r = xcom(dr, "rebuild")
    assert r["swapped"] and r["embedded"] == 0 and r["reused"] == r["chunks"] and counting.texts < 200
    assert VectorStore(server).count("docs__v2") == r["chunks"]
    assert self_check(server, "docs")["ok"]


@pytest.mark.parametrize("how", [[], ["--profile", "small"]], ids=["same-pipeline", "new-profile"])
def test_a_rebuild_killed_mid_way_then_run_again(env, how: list[str]) -> None:
    cfg = Path(os.environ["RAGOPS_CONFIG"])  # the smaller chunks score a little lower on the golden set; this
    cfg.write_text(cfg.read_text() + "eval:\n  regression_margin: 1.0\n")  # test is about the kill, not the gate
    before = search(env, "blue/green rebuild", k=3, index="docs")
    cmd = [str(Path(sys.executable).parent / "ragops"), "index", "rebuild", "--index", "docs", "--force", *how]
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until the new version is being written
        with state.session_scope(env.state_db_url) as s:
            building = s.execute(select(state.IndexVersion).where(state.IndexVersion.status == "building")).first()
        if building or proc.poll() is not None:
            break
        time.sleep(0.2)
    time.sleep(4)  # well into embedding
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    assert statuses(env) == [(1, "live"), (2, "building")]  # the alias never moved
    assert self_check(env, "docs")["ok"]
    assert [h.chunk_id for h in search(env, "blue/green rebuild", k=3, index="docs")] == [h.chunk_id for h in before]

    out = subprocess.run([*cmd[:5], *how, "--json"], env=dict(os.environ), capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    import json

    r = json.loads(out.stdout)
    assert r["swapped"] and "docs__v2" in r["removed_partial"] and r["live"] == "docs__v3"
    assert statuses(env) == [(1, "retired"), (2, "abandoned"), (3, "live")]
    assert not VectorStore(env).has_collection("docs__v2")
    with state.session_scope(env.state_db_url) as s:
        left = s.execute(select(state.Chunk.index_name).where(state.Chunk.index_name.like("docs~%")).distinct())
        names = set(left.scalars())
    assert names <= {"docs~v1"}  # only the archive of v1 (after a profile change), no staged rows of v2
    assert self_check(env, "docs")["ok"]
