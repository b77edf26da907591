"""Fault injection on the production topology (tests/topology.py): real faults hit real runs, and
the end state must equal a clean run's.

One topology serves the whole module (two Celery workers, one task slot each) and the scenarios
run in order on the same index ``docs``, each starting from where the previous one left it (run
the module as a whole, not one test of it):

1. a worker SIGKILLed (Celery, task supervisor and task process at once) while it runs a mapped
   ``process_batch`` of ingest_documents, the ``rebuild`` of rebuild_index, and the ``evaluate`` of
   nightly_eval; a replacement worker starts, the scheduler notices the dead task instance through
   its heartbeat timeout (lowered to 30 s here) and Airflow retries it;
2. the Chroma server SIGKILLed while an ingest commits, and started again on the same path and
   port (its token proxy stays up); the commit's retry finishes the run;
3. two triggers of ingest_documents at once (max_active_runs=1: the second queues, then finds
   nothing to do), and an ingest and a rebuild at once (the ``ragops_chroma_writer`` pool keeps
   their writes apart).

The clean reference is an in-process ``ragops.indexing.sync`` of the same corpus into an embedded
Chroma with a SQLite state store (same settings, so the same deterministic chunk ids): after each
scenario the deployment must hold exactly its documents and chunk ids, in the state store and in
the live collection, with vectors equal to the reference's, and pass the self-check.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import ROOT, SmtpServer, parts
from tests.e2e.test_topology import stdlib_records
from tests.topology import NGINX, Topology

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]
INDEX = "docs"
HEARTBEAT_TIMEOUT = 30  # [scheduler] task_instance_heartbeat_timeout (default 300 s)
# The DAGs wait 30-60 s before a first retry (DEFAULT_ARGS); a cluster policy, as an operator would
# deploy it in airflow_local_settings.py, shortens that wait here and changes nothing else.
LOCAL_SETTINGS = """
from datetime import timedelta


def task_policy(task):
    task.retry_delay = timedelta(seconds=10)
"""
CONFIG = """
chroma: {mode: server}
ingest:
  schedule: null          # only what the test triggers
  batch_documents: 11     # 31 documents -> three mapped batches
eval:
  schedule: null
  semantic_metrics: false
  bootstrap_samples: 200
rebuild: {schedule: null}
drift: {schedule: null}
prompts: {sync_schedule: null}
alerts:
  from_email: ragops@test.local
  send_attempts: 2
  retry_backoff_seconds: 0.1
  recipients:
    default: [oncall@test.local]
    index: [platform@test.local]
indexes:
  docs:
    golden: GOLDEN
"""
FOLDERS = ("cli", "concepts", "configuration")  # of the bundled corpus: 31 documents, ~400 chunks
TIMINGS: dict[str, dict[str, Any]] = {}


def ts(value: str | None) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else float("nan")


# ---- the clean reference --------------------------------------------------------------------

class Reference:
    """The same corpus synced in this process, without faults, into an embedded Chroma and a
    SQLite state store: what the deployment must hold after each scenario."""

    def __init__(self, workdir: Path, config: Path) -> None:
        from ragops import state
        from ragops.config import load_settings

        mp = pytest.MonkeyPatch()
        for var in ("RAGOPS_STATE_DB_URL", "RAGOPS_CHROMA_URL", "RAGOPS_CHROMA_TOKEN", "RAGOPS_PROMPTS_DIR"):
            mp.delenv(var, raising=False)
        mp.setenv("RAGOPS_CONFIG", str(config))
        mp.setenv("RAGOPS_DATA_DIR", str(workdir))
        mp.setenv("RAGOPS_CHROMA_MODE", "embedded")
        try:
            self.settings = load_settings()
        finally:
            mp.undo()
        state.upgrade(self.settings.state_db_url)
        self.embedder = None
        self.current: dict[str, Any] = {}

    def sync(self, corpus: Path) -> dict[str, Any]:
        from ragops.embedding import Embedder
        from ragops.indexing import sync

        self.embedder = self.embedder or Embedder(self.settings.embedding)
        report = sync(self.settings, str(corpus), INDEX, trigger="reference", embedder=self.embedder,
                      allow_mass_delete=False)
        assert report["self_check"]["ok"], report
        self.current = {"report": report, **contents(self.settings)}
        return self.current


def contents(settings) -> dict[str, Any]:
    """Documents (id -> content hash) and chunk ids of the index in a state store."""
    from ragops import state

    with state.session_scope(settings.state_db_url) as s:
        docs = dict(s.execute(select(state.Document.doc_id, state.Document.content_hash)
                              .where(state.Document.index_name == INDEX)).all())
        chunks = set(s.execute(select(state.Chunk.chunk_id).where(state.Chunk.index_name == INDEX)).scalars())
        live = state.live_version(s, INDEX)
    return {"docs": docs, "chunks": chunks, "live": live.collection if live else None}


def assert_equals_clean(settings, ref: Reference, expected: dict[str, Any]) -> dict[str, Any]:
    """The deployment holds exactly the reference's documents and chunks, in the state store and
    in the live Chroma collection (no duplicate, no orphan, no gap), with the same vectors."""
    import numpy as np

    from ragops.indexing import self_check
    from ragops.vectorstore import VectorStore

    got = contents(settings)
    assert got["docs"] == expected["docs"], (
        f"documents differ from a clean run: missing {sorted(set(expected['docs']) - set(got['docs']))[:5]}, "
        f"extra {sorted(set(got['docs']) - set(expected['docs']))[:5]}")
    assert got["chunks"] == expected["chunks"], (
        f"chunk ids differ from a clean run: {len(expected['chunks'] - got['chunks'])} missing, "
        f"{len(got['chunks'] - expected['chunks'])} extra")
    store = VectorStore(settings)
    assert store.ids(got["live"]) == expected["chunks"]
    assert store.count(got["live"]) == len(expected["chunks"])  # Chroma's own count: no duplicate rows
    check = self_check(settings, INDEX)
    assert check["ok"] and check["chroma_ids"] == len(expected["chunks"]), check
    sample = sorted(expected["chunks"])[:: max(1, len(expected["chunks"]) // 40)]
    ours = store.get_embeddings(got["live"], sample)
    clean = VectorStore(ref.settings).get_embeddings(expected["live"], sample)
    worst = min(float(np.dot(ours[c], clean[c]) / (np.linalg.norm(ours[c]) * np.linalg.norm(clean[c])))
                for c in sample)
    assert worst > 0.999, f"a stored vector differs from the clean run's (cosine {worst:.5f})"
    return got


# ---- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus (three folders of the bundled one), its golden questions, a larger question
    set for nightly_eval, and the settings file."""
    for exe in (NGINX, shutil.which("envsubst") or "/usr/bin/envsubst"):
        if not os.path.exists(exe):
            if os.environ.get("CI"):
                pytest.fail(f"{exe} is missing: scripts/test.sh installs nginx-light and gettext-base")
            pytest.skip(f"{exe} is not installed")
    pytest.importorskip("psycopg2")
    pytest.importorskip("psutil")
    work = tmp_path_factory.mktemp("faults")
    corpus = work / "corpus"
    for folder in FOLDERS:
        shutil.copytree(ROOT / "include" / "corpus" / folder, corpus / folder)
    # the golden questions whose documents are in this corpus (the rebuild's retrieval gate uses them)
    golden = [line for line in (ROOT / "include" / "eval" / "golden" / "docs.jsonl").read_text().splitlines()
              if line.strip() and all(d.split("/")[0] in FOLDERS for d in json.loads(line)["relevant_doc_ids"])]
    (work / "golden.jsonl").write_text("\n".join(golden) + "\n")
    # nightly_eval gets those plus one question per document: two blocks of retrieval (32 + the rest),
    # so the worker can be killed after the first block's results are stored
    per_doc = [json.dumps({"id": f"doc-{i:03d}", "question": f"What does the page on {p.stem.replace('-', ' ')} explain?",
                           "relevant_doc_ids": [p.relative_to(corpus).as_posix()], "tags": ["per-document"]})
               for i, p in enumerate(sorted(q for q in corpus.rglob("*") if q.is_file()))]
    (work / "eval.jsonl").write_text("\n".join(golden + per_doc) + "\n")
    (work / "ragops.yaml").write_text(CONFIG.replace("GOLDEN", str(work / "golden.jsonl")))
    return work


@pytest.fixture(scope="module")
def ref(work: Path) -> Reference:
    """The clean run of the initial corpus, computed before the topology starts (no CPU contention)."""
    t0 = time.time()
    r = Reference(work / "reference", work / "ragops.yaml")
    r.sync(work / "corpus")
    TIMINGS["reference_sync_s"] = {"seconds": round(time.time() - t0, 1)}
    return r


@pytest.fixture(scope="module")
def topo(work: Path, ref: Reference):
    smtp = SmtpServer().start()
    t = Topology(work, workers=2, concurrency=1, config_yaml=(work / "ragops.yaml").read_text(), smtp_port=smtp.port,
                 extra_env={"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5"},
                 worker_env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}, local_settings=LOCAL_SETTINGS)
    started = time.time()
    try:
        with t:
            TIMINGS["topology_start_s"] = {"seconds": round(time.time() - started, 1)}
            t.corpus = work / "corpus"  # type: ignore[attr-defined]
            t.smtp = smtp  # type: ignore[attr-defined]
            t.unpause("ingest_documents", "rebuild_index")
            yield t
    finally:
        smtp.stop()
        print("\nfault timings:", json.dumps(TIMINGS, indent=1))


@pytest.fixture(scope="module")
def settings(topo: Topology):
    """The library's view of the deployment (state store on PostgreSQL, Chroma through the proxy)."""
    from ragops.config import load_settings

    mp = pytest.MonkeyPatch()
    for k, v in {"RAGOPS_CONFIG": str(topo.workdir / "ragops.yaml"), "RAGOPS_DATA_DIR": str(topo.data_dir),
                 "RAGOPS_STATE_DB_URL": topo.state_url, "RAGOPS_CHROMA_URL": topo.chroma_url,
                 "RAGOPS_CHROMA_TOKEN": topo.chroma_token}.items():
        mp.setenv(k, v)
    mp.delenv("RAGOPS_CHROMA_MODE", raising=False)
    yield load_settings()
    mp.undo()


# ---- fault helpers --------------------------------------------------------------------------

def kill_worker_during(topo: Topology, dag_id: str, run_id: str, task_id: str,
                       ready: Callable[[dict[str, Any]], bool] = lambda ti: True,
                       timeout: float = 900) -> dict[str, Any]:
    """Wait until ``task_id`` runs on a worker and ``ready(task_instance)`` holds, then SIGKILL that
    worker. Returns the task instance as it was when the worker died."""
    ti = topo.wait_ti(dag_id, run_id, task_id, "running", timeout=timeout)
    deadline = time.time() + timeout
    while not ready(ti):
        now = next(t for t in topo.task_instances(dag_id, run_id)
                   if t["task_id"] == task_id and t.get("map_index", -1) == ti.get("map_index", -1))
        if now["state"] != "running" or time.time() > deadline:
            pytest.fail(f"{task_id}[{ti.get('map_index')}] left 'running' ({now['state']}) before the fault could "
                        "be injected; the scenario needs a slower task")
        time.sleep(0.2)
    worker = ti["hostname"]
    assert worker in topo.procs, (worker, sorted(topo.procs))
    killed = topo.kill_worker(worker)
    t_kill = time.time()
    assert any("celery" in k for k in killed) and len(killed) >= 3, killed  # main, pool child, task process(es)
    # nobody told Airflow: the task instance still looks like it is running on the dead worker
    now = next(t for t in topo.task_instances(dag_id, run_id)
               if t["task_id"] == task_id and t.get("map_index", -1) == ti.get("map_index", -1))
    assert now["state"] == "running" and now["hostname"] == worker, now
    return {**ti, "worker": worker, "t_kill": t_kill, "killed": killed}


def logged(topo: Topology, dag_id: str, run_id: str, text: str) -> Callable[[dict[str, Any]], bool]:
    """A ``ready`` condition: the running try's log contains ``text``."""
    def ready(ti: dict[str, Any]) -> bool:
        return text in topo.task_log(dag_id, run_id, ti["task_id"], ti["try_number"], ti.get("map_index", -1))

    return ready


def recovered_by_retry(topo: Topology, dag_id: str, run_id: str, killed: dict[str, Any],
                       timeout: float = 900) -> dict[str, Any]:
    """A replacement worker starts; the scheduler must time the dead task instance out, and the
    retry must finish the run. Returns how long each step took."""
    topo.start_worker(killed["worker"])
    t_replaced = time.time()
    run = topo.wait_run(dag_id, run_id, timeout=timeout)
    map_index = killed.get("map_index", -1)
    tries = topo.tries(dag_id, run_id, killed["task_id"], map_index)
    final = next(t for t in topo.task_instances(dag_id, run_id)
                 if t["task_id"] == killed["task_id"] and t.get("map_index", -1) == map_index)
    # exactly one retry: the killed try failed on the dead worker, the next one succeeded
    assert final["state"] == "success" and final["try_number"] == 2, final
    first = next(t for t in tries if t["try_number"] == 1)
    assert first["hostname"] == killed["worker"] and first["state"] in ("failed", "up_for_retry"), tries
    timeouts = [e for e in topo.event_logs(dag_id, "heartbeat timeout")
                if e["run_id"] == run_id and e["task_id"] == killed["task_id"]]
    assert len(timeouts) == 1, timeouts  # the scheduler noticed the dead task through its heartbeat, once
    detected = ts(timeouts[0]["when"])
    return {"worker": killed["worker"], "task": f"{killed['task_id']}[{map_index}]",
            "killed": [k.split(" ", 1)[1][:60] for k in killed["killed"]],
            "detected_after_s": round(detected - killed["t_kill"], 1),
            "replacement_ready_after_s": round(t_replaced - killed["t_kill"], 1),
            "retry_started_after_s": round(ts(final["start_date"]) - killed["t_kill"], 1),
            "retry_on": final["hostname"], "run_done_after_s": round(ts(run["end_date"]) - killed["t_kill"], 1),
            "timeout_message": timeouts[0].get("extra")}


def sync_run(settings, run_id: str) -> Any:
    from ragops import state

    with state.session_scope(settings.state_db_url) as s:
        return s.get(state.SyncRun, run_id)


def versions(settings) -> dict[int, str]:
    from ragops.lifecycle import versions as v

    return {x["version"]: x["status"] for x in v(settings, INDEX)}


def mails(topo: Topology, marker: str) -> list[Any]:
    return [m for _, _, m in topo.smtp.inbox.messages if marker in m["Subject"]]  # type: ignore[attr-defined]


def asset_events(topo: Topology, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"source_dag_id": dag_id, "source_run_id": run_id, "limit": 100})
    code, body = topo.api(f"/api/v2/assets/events?{q}")
    assert code == 200, body
    return [e for e in body["asset_events"] if e.get("source_run_id") == run_id]


def write_records(path: Path, records: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")


# ---- 1. a worker killed in the middle of each kind of run -----------------------------------

def test_ingest_survives_a_worker_killed_mid_batch(topo: Topology, settings, ref: Reference) -> None:
    expected = ref.current  # the initial corpus, synced by the reference before the topology started
    t0 = time.time()
    run_id = topo.trigger("ingest_documents", {"source": str(topo.corpus), "index": INDEX})  # type: ignore[attr-defined]
    # a mapped batch is killed once it has parsed and chunked its documents and loads the model to embed them
    killed = kill_worker_during(topo, "ingest_documents", run_id, "process_batch",
                                ready=logged(topo, "ingest_documents", run_id, "loaded embedding model"))
    timing = recovered_by_retry(topo, "ingest_documents", run_id, killed, timeout=1200)
    TIMINGS["ingest_worker_killed"] = {**timing, "run_s": round(time.time() - t0, 1)}

    batches = [ti for ti in topo.task_instances("ingest_documents", run_id) if ti["task_id"] == "process_batch"]
    assert len(batches) == -(-expected["report"]["counts"]["discovered"] // 11) == 3
    assert all(ti["state"] == "success" for ti in batches)
    assert sync_run(settings, run_id).status == "committed"
    got = assert_equals_clean(settings, ref, expected)
    assert got["live"] == f"{INDEX}__v1"
    stats = sync_run(settings, run_id).stats
    assert stats["chunks"]["upserted"] == len(expected["chunks"]), stats["chunks"]  # each chunk written once
    assert not mails(topo, "FAILED")


def test_rebuild_survives_a_worker_killed_mid_build(topo: Topology, settings, ref: Reference) -> None:
    from ragops import state
    from ragops.vectorstore import VectorStore

    expected = contents(ref.settings)
    store = VectorStore(settings)
    t0 = time.time()
    run_id = topo.trigger("rebuild_index", {"index": INDEX, "action": "rebuild"})

    def half_built(_ti: dict[str, Any]) -> bool:  # v2 is `building` and holds vectors; not validated, not live
        with state.session_scope(settings.state_db_url) as s:
            building = s.execute(select(state.IndexVersion).where(state.IndexVersion.index_name == INDEX,
                                                                  state.IndexVersion.status == "building")).scalar()
        return building is not None and store.has_collection(building.collection) \
            and store.count(building.collection) > 0

    killed = kill_worker_during(topo, "rebuild_index", run_id, "rebuild", ready=half_built)
    # readers never see the half-built version: v1 still serves, intact
    assert versions(settings) == {1: "live", 2: "building"}
    assert contents(settings)["live"] == f"{INDEX}__v1"
    assert_equals_clean(settings, ref, expected)

    timing = recovered_by_retry(topo, "rebuild_index", run_id, killed, timeout=1200)
    TIMINGS["rebuild_worker_killed"] = {**timing, "run_s": round(time.time() - t0, 1)}
    # the retry removed the killed build and built v3, which now serves
    assert versions(settings) == {1: "retired", 2: "abandoned", 3: "live"}
    assert not store.has_collection(f"{INDEX}__v2")
    got = assert_equals_clean(settings, ref, expected)
    assert got["live"] == f"{INDEX}__v3"
    with state.session_scope(settings.state_db_url) as s:
        removed = [a.detail for a in s.execute(select(state.AuditEntry).where(
            state.AuditEntry.action == "index_partial_removed")).scalars()]
        swaps = s.scalar(select(func.count()).select_from(state.AuditEntry)
                         .where(state.AuditEntry.action == "index_swapped"))
    assert removed == [{"collections": [f"{INDEX}__v2"]}] and swaps == 1, (removed, swaps)
    swapped = mails(topo, "[SWAPPED]")  # one e-mail: the killed try never reached the swap
    assert len(swapped) == 1 and f"{INDEX}__v3" in parts(swapped[0])[0], [m["Subject"] for m in swapped]
    assert not mails(topo, "FAILED")


def test_nightly_eval_survives_a_worker_killed_mid_evaluation(topo: Topology, settings) -> None:
    from ragops import registry, state

    registry.sync(settings, actor="test")  # the production prompt the nightly run evaluates
    topo.unpause("nightly_eval")
    t0 = time.time()
    dataset = topo.workdir / "eval.jsonl"
    n_questions = len(dataset.read_text().splitlines())
    assert n_questions > 32  # more than one block of questions
    run_id = topo.trigger("nightly_eval", {"index": INDEX, "dataset": str(dataset)})
    eval_id = None

    def first_block_stored(_ti: dict[str, Any]) -> bool:  # the first 32 questions' results are stored
        nonlocal eval_id
        with state.session_scope(settings.state_db_url) as s:
            eval_id = s.execute(select(state.EvalRun.run_id).where(state.EvalRun.status == "running")).scalar()
            return eval_id is not None and s.scalar(select(func.count()).select_from(state.EvalResult)
                                                    .where(state.EvalResult.run_id == eval_id)) >= 32

    killed = kill_worker_during(topo, "nightly_eval", run_id, "evaluate", ready=first_block_stored)
    with state.session_scope(settings.state_db_url) as s:
        left = s.get(state.EvalRun, eval_id)
        kept = s.scalar(select(func.count()).select_from(state.EvalResult).where(state.EvalResult.run_id == eval_id))
    # a killed process cannot record its end: the run stays `running` with the first block's results
    # until the retry replaces it
    assert left.status == "running" and kept == 32, (left.status, kept)
    timing = recovered_by_retry(topo, "nightly_eval", run_id, killed, timeout=1200)
    topo.api("/api/v2/dags/nightly_eval", "PATCH", {"is_paused": True})
    TIMINGS["eval_worker_killed"] = {**timing, "results_before_kill": kept, "run_s": round(time.time() - t0, 1)}

    with state.session_scope(settings.state_db_url) as s:
        runs = s.execute(select(state.EvalRun)).scalars().all()
        assert [(r.run_id, r.status) for r in runs] == [(eval_id, "success")]  # one run, not one per try
        run = runs[0]
        results = s.execute(select(state.EvalResult.question_id).where(state.EvalResult.run_id == eval_id)).scalars().all()
    assert run.n_questions == n_questions and len(results) == len(set(results)) == n_questions
    assert run.collection == f"{INDEX}__v3" and run.metrics["counts"]["errors"] == 0
    lines = (Path(run.output_dir) / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == sorted(results)
    states = {ti["task_id"]: ti["state"] for ti in topo.task_instances("nightly_eval", run_id)}
    assert states == {"evaluate": "success", "compare": "success"}, states
    assert not mails(topo, "FAILED")


# ---- 2. the Chroma server down in the middle of a run ---------------------------------------

def test_ingest_recovers_when_chroma_dies_during_the_commit(topo: Topology, settings, ref: Reference) -> None:
    corpus: Path = topo.corpus  # type: ignore[attr-defined]
    write_records(corpus / "reference" / "python-stdlib.jsonl", stdlib_records(30))
    changed = corpus / "concepts" / "incremental-indexing.md"
    changed.write_text(changed.read_text() + "\n\n## Changed\n\nA paragraph added by the test.\n")
    (corpus / "cli" / "ragops-drift.md").unlink()
    expected = ref.sync(corpus)
    before = contents(settings)

    t0 = time.time()
    run_id = topo.trigger("ingest_documents", {"source": str(corpus), "index": INDEX})
    commit = topo.wait_ti("ingest_documents", run_id, "commit", "running", timeout=900, every=0.2)
    topo.stop_chroma()
    t_stop = time.time()
    failed = topo.wait_ti("ingest_documents", run_id, "commit", ("up_for_retry", "failed"), timeout=600)
    t_failed = time.time()
    assert failed["state"] == "up_for_retry", topo.failure_report("ingest_documents", run_id)
    error = topo.task_log("ingest_documents", run_id, "commit", 1)
    # the state store did not move while Chroma was down: readers keep the previous, consistent index
    assert contents(settings)["chunks"] == before["chunks"]
    time.sleep(5)
    topo.start_chroma()
    t_back = time.time()
    run = topo.wait_run("ingest_documents", run_id, timeout=900)
    final = next(t for t in topo.task_instances("ingest_documents", run_id) if t["task_id"] == "commit")
    assert final["try_number"] == 2, final
    TIMINGS["chroma_killed_during_commit"] = {
        "commit_running_to_kill_s": round(t_stop - ts(commit["start_date"]), 1),
        "failure_seen_after_s": round(t_failed - t_stop, 1), "chroma_back_after_s": round(t_back - t_stop, 1),
        "retry_started_after_s": round(ts(final["start_date"]) - t_stop, 1),
        "run_done_after_s": round(ts(run["end_date"]) - t_stop, 1), "run_s": round(time.time() - t0, 1),
        "error": [ln[:300] for ln in error.splitlines() if ln.startswith(("Task failed", "Error", "Value"))
                  or "Error: " in ln][-3:]}

    assert sync_run(settings, run_id).status == "committed"
    got = assert_equals_clean(settings, ref, expected)
    assert got["live"] == f"{INDEX}__v3"
    assert "cli/ragops-drift.md" not in got["docs"] and len(got["docs"]) == 30 + 30  # one deleted, 30 records added
    assert not mails(topo, "FAILED")


# ---- 3. concurrent triggers -----------------------------------------------------------------

def test_two_triggers_of_the_same_ingest_run_one_after_the_other(topo: Topology, settings, ref: Reference) -> None:
    corpus: Path = topo.corpus  # type: ignore[attr-defined]
    changed = corpus / "concepts" / "drift-detection.md"
    changed.write_text(changed.read_text() + "\n\n## One more section\n\nAdded by the test.\n")
    expected = ref.sync(corpus)
    conf = {"source": str(corpus), "index": INDEX}
    triggered = [topo.trigger("ingest_documents", conf), topo.trigger("ingest_documents", conf)]
    runs = [topo.wait_run("ingest_documents", r, timeout=900) for r in triggered]
    a, b = sorted(runs, key=lambda r: ts(r["start_date"]))  # the scheduler picks the order
    first, second = a["dag_run_id"], b["dag_run_id"]
    assert ts(b["start_date"]) >= ts(a["end_date"]), (a, b)  # max_active_runs=1: never both at once
    ra, rb = sync_run(settings, first), sync_run(settings, second)
    assert ra.stats["counts"]["changed"] == 1 and ra.stats["chunks"]["upserted"] > 0, ra.stats
    # the second found the index already up to date: nothing planned, written or announced
    assert rb.status == "committed" and rb.stats["counts"]["added"] == rb.stats["counts"]["changed"] \
        == rb.stats["counts"]["deleted"] == 0 and rb.stats["chunks"] == {
            "upserted": 0, "embedded": 0, "reused": 0, "copied": 0, "deleted": 0, "repaired_orphans": 0}, rb.stats
    assert [e["uri"] for e in asset_events(topo, "ingest_documents", first)] == [f"ragops://index/{INDEX}"]
    assert asset_events(topo, "ingest_documents", second) == []
    TIMINGS["two_ingests"] = {"first_s": round(ts(a["end_date"]) - ts(a["start_date"]), 1),
                              "second_s": round(ts(b["end_date"]) - ts(b["start_date"]), 1),
                              "second_waited_s": round(ts(b["start_date"]) - ts(b["run_after"]), 1)}
    assert_equals_clean(settings, ref, expected)


def test_an_ingest_and_a_rebuild_at_once(topo: Topology, settings, ref: Reference) -> None:
    corpus: Path = topo.corpus  # type: ignore[attr-defined]
    write_records(corpus / "reference" / "python-stdlib.jsonl", stdlib_records(45))  # 15 more records
    expected = ref.sync(corpus)
    ingest = topo.trigger("ingest_documents", {"source": str(corpus), "index": INDEX})
    rebuild = topo.trigger("rebuild_index", {"index": INDEX, "action": "rebuild"})
    topo.wait_run("ingest_documents", ingest, timeout=1200)
    topo.wait_run("rebuild_index", rebuild, timeout=1200)

    def window(dag_id: str, run_id: str, task_id: str) -> tuple[float, float]:
        ti = next(t for t in topo.task_instances(dag_id, run_id) if t["task_id"] == task_id)
        assert ti["try_number"] == 1 and ti["pool"] == "ragops_chroma_writer", ti
        return ts(ti["start_date"]), ts(ti["end_date"])

    commit, build = window("ingest_documents", ingest, "commit"), window("rebuild_index", rebuild, "rebuild")
    assert commit[1] <= build[0] or build[1] <= commit[0], (commit, build)  # the writer pool: one at a time
    # the ingest planned against v3; its commit writes into whichever version serves when it runs
    assert sync_run(settings, ingest).stats["collection"] == f"{INDEX}__v{4 if build[0] < commit[0] else 3}"
    TIMINGS["ingest_and_rebuild"] = {"order": "commit first" if commit[0] < build[0] else "rebuild first",
                                     "commit": [round(x - min(commit[0], build[0]), 1) for x in commit],
                                     "rebuild": [round(x - min(commit[0], build[0]), 1) for x in build]}
    # whichever went first, the new version holds the ingest's documents and serves
    assert versions(settings) == {1: "deleted", 2: "abandoned", 3: "retired", 4: "live"}
    got = assert_equals_clean(settings, ref, expected)
    assert got["live"] == f"{INDEX}__v4"
    assert len(mails(topo, "[SWAPPED]")) == 2
    assert not mails(topo, "FAILED")
