"""The production topology, run natively (tests/topology.py): PostgreSQL as Airflow's metadata DB
and, in its own database, the ragops state store; CeleryExecutor on Redis with two workers; the
api-server, scheduler, dag-processor and triggerer; `chroma run` behind the token proxy of
docker-compose.yaml; an SMTP catcher on loopback. Everything goes through the scheduler:

1. sync_prompts registers v1 of the prompt (production);
2. ingest_documents ingests the demo corpus plus a few hundred records (mapped batches that run
   on both workers), and its index Asset event starts nightly_eval;
3. rebuild_index builds v2 blue/green, passes the retrieval gate and swaps (`index` e-mail),
   and its Asset event starts nightly_eval again;
4. a better prompt version appears, sync_prompts registers it and its Asset event starts
   promote_prompt, which evaluates candidate against production and promotes (`prompt` e-mail).

Then the Chroma server (through the proxy), the state store on PostgreSQL and the captured
e-mails are checked, and everything the run left behind is scanned for the secrets it used.

The SMTP catcher requires a login (AUTH PLAIN/LOGIN, no TLS on loopback) and ``smtp_default`` is
a Connection in Airflow's database, created through the REST API as an operator would, so its
password is in the connection listing the scan reads."""

from __future__ import annotations

import inspect
import json
import os
import secrets
import shutil
import urllib.error
import urllib.parse
import urllib.request

import pytest
from sqlalchemy import func, select

from tests.conftest import ROOT, SecretScan, SmtpServer, parts
from tests.topology import ADMIN_PASSWORD, NGINX, Topology

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]
SHIPPED = (ROOT / "include" / "prompts" / "rag_answer" / "v1.yaml").read_text()
CONFIG = """
chroma: {mode: server}
ingest:
  schedule: null          # only what the test triggers, and what Asset events start
  batch_documents: 40     # a few hundred documents -> about ten mapped batches
eval:
  schedule: null
  semantic_metrics: false
  bootstrap_samples: 500
  baseline_runs: 3
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
    prompt: [prompt-owners@test.local]
gates:
  default:
    thresholds: {hit_rate@5: 0.8, faithfulness: 0.8}
    non_regression: {metrics: [answer_f1, refusal_accuracy, hit_rate@5], margin: 0.02}
    budget: {latency_p95_ms: 60000, cost_per_1k_usd: 1.0}
indexes:
  docs:
    golden: include/eval/golden/docs.jsonl
"""
EXTRA_DOCS = 300


def stdlib_records(n: int) -> list[dict[str, str]]:
    """``n`` real, distinct documents that ship with every Python: docstrings of the standard
    library's public functions and classes (deterministic for one Python version)."""
    import importlib

    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for mod_name in ("os", "os.path", "shutil", "pathlib", "json", "re", "string", "textwrap", "collections",
                     "itertools", "functools", "operator", "datetime", "calendar", "time", "math", "statistics",
                     "random", "heapq", "bisect", "array", "copy", "pprint", "enum", "dataclasses", "typing",
                     "abc", "contextlib", "io", "csv", "configparser", "hashlib", "hmac", "secrets", "base64",
                     "binascii", "struct", "codecs", "unicodedata", "difflib", "fnmatch", "glob", "tempfile",
                     "zipfile", "tarfile", "gzip", "bz2", "lzma", "zlib", "sqlite3", "logging", "argparse",
                     "getpass", "platform", "subprocess", "threading", "queue", "sched", "socket", "ssl",
                     "select", "selectors", "signal", "asyncio", "email", "smtplib", "http.client", "urllib.parse",
                     "urllib.request", "html", "html.parser", "xml.etree.ElementTree", "uuid", "ipaddress",
                     "decimal", "fractions", "numbers", "cmath", "inspect", "dis", "ast", "tokenize", "traceback",
                     "warnings", "weakref", "gc", "types", "importlib", "pkgutil", "zoneinfo", "locale", "gettext",
                     "shlex", "stat", "filecmp", "linecache", "pickle", "shelve", "dbm", "mimetypes", "wave",
                     "colorsys", "graphlib", "reprlib", "atexit", "faulthandler", "pdb", "timeit", "trace",
                     "tracemalloc", "doctest", "unittest"):
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        for attr in sorted(dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr, None)
            if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                continue
            doc = inspect.getdoc(obj) or ""
            if len(doc) < 300 or doc in seen:
                continue
            seen.add(doc)
            out.append({"id": f"{mod_name}.{attr}", "title": f"{mod_name}.{attr}", "text": doc})
            if len(out) == n:
                return out
    return out


def _chroma_status(url: str, headers: dict[str, str]) -> int:
    req = urllib.request.Request(f"{url}/api/v2/tenants/default_tenant/databases/default_database/collections",
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory):
    for exe in (NGINX, shutil.which("envsubst") or "/usr/bin/envsubst"):
        if not os.path.exists(exe):
            if os.environ.get("CI"):
                pytest.fail(f"{exe} is missing: scripts/test.sh installs nginx-light and gettext-base")
            pytest.skip(f"{exe} is not installed")
    pytest.importorskip("psycopg2")
    work = tmp_path_factory.mktemp("topology")
    corpus = work / "corpus"
    shutil.copytree(ROOT / "include" / "corpus", corpus)
    records = stdlib_records(EXTRA_DOCS)
    assert len(records) == EXTRA_DOCS
    (corpus / "reference").mkdir()
    (corpus / "reference" / "python-stdlib.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    prompts = work / "prompts" / "rag_answer"
    prompts.mkdir(parents=True)
    (prompts / "v1.yaml").write_text(SHIPPED)
    smtp = SmtpServer(credentials=("ragops-alerts", secrets.token_hex(16))).start()
    t = Topology(work, workers=2, concurrency=2, config_yaml=CONFIG, prompts_dir=prompts.parent)
    try:
        with t:
            conn = smtp.connection()
            code, body = t.api("/api/v2/connections", "POST", {**conn, "connection_id": "smtp_default",
                                                                "extra": json.dumps(conn["extra"])})
            assert code == 201, body
            t.corpus = corpus  # type: ignore[attr-defined]
            t.smtp = smtp  # type: ignore[attr-defined]
            yield t
    finally:
        smtp.stop()


@pytest.fixture(scope="module")
def settings(topo: Topology):
    """The library's view of the same deployment (the state store on PostgreSQL, Chroma through
    the proxy with its token), as an operator's `ragops` CLI would see it."""
    from ragops.config import load_settings

    mp = pytest.MonkeyPatch()
    for k, v in {"RAGOPS_CONFIG": str(topo.workdir / "ragops.yaml"), "RAGOPS_DATA_DIR": str(topo.data_dir),
                 "RAGOPS_STATE_DB_URL": topo.state_url, "RAGOPS_CHROMA_URL": topo.chroma_url,
                 "RAGOPS_CHROMA_TOKEN": topo.chroma_token, "RAGOPS_PROMPTS_DIR": str(topo.prompts_dir)}.items():
        mp.setenv(k, v)
    yield load_settings()
    mp.undo()


def test_the_whole_loop_through_the_scheduler_on_two_celery_workers(topo: Topology, settings) -> None:
    from ragops import state
    from ragops.indexing import self_check
    from ragops.lifecycle import versions
    from ragops.vectorstore import VectorStore

    dags = ("sync_prompts", "ingest_documents", "nightly_eval", "rebuild_index", "promote_prompt")
    topo.unpause(*dags)
    seen = {d: {r["dag_run_id"] for r in topo.runs(d)} for d in dags}
    assert not any(seen.values()), seen  # nothing runs on its own: every schedule is off in this config

    # 1. the prompt registry gets v1, production at once (the first version has nothing to be gated against)
    topo.wait_run("sync_prompts", topo.trigger("sync_prompts"))

    # 2. ingest: mapped batches on both workers
    run_id = topo.trigger("ingest_documents", {"source": str(topo.corpus), "index": "docs"})
    topo.wait_run("ingest_documents", run_id, timeout=1200)
    tis = topo.task_instances("ingest_documents", run_id)
    batches = [ti for ti in tis if ti["task_id"] == "process_batch"]
    assert len(batches) >= 8 and all(ti["state"] == "success" for ti in batches)
    by_worker = {ti["hostname"] for ti in batches}
    assert by_worker == {"worker1", "worker2"}, [(ti["map_index"], ti["hostname"]) for ti in batches]
    n_docs = sum(1 for p in (ROOT / "include" / "corpus").rglob("*") if p.is_file()) + EXTRA_DOCS
    with state.session_scope(settings.state_db_url) as s:
        docs = s.scalar(select(func.count()).select_from(state.Document).where(state.Document.index_name == "docs"))
        run = s.get(state.SyncRun, run_id)
    assert docs == n_docs and run.status == "committed", (docs, n_docs, run.status)
    # the index Asset event started nightly_eval, which ran on this worker pool too
    nightly = topo.wait_new_run("nightly_eval", seen["nightly_eval"], timeout=1200)
    seen["nightly_eval"].add(nightly["dag_run_id"])

    # 3. blue/green rebuild with the retrieval gate, then the swap's Asset event starts nightly_eval again
    topo.wait_run("rebuild_index", topo.trigger("rebuild_index", {"index": "docs", "action": "rebuild"}), timeout=1200)
    assert [(v["version"], v["status"]) for v in versions(settings, "docs")] == [(1, "retired"), (2, "live")]
    again = topo.wait_new_run("nightly_eval", seen["nightly_eval"], timeout=1200)
    seen["nightly_eval"].add(again["dag_run_id"])

    # 4. a better prompt version: sync_prompts registers it, promote_prompt (Asset-triggered) promotes it
    better = SHIPPED.replace("version: 1", "version: 2").replace("top_k: 5", "top_k: 1") \
        .replace("message: First version.", "message: Top chunk only.")
    (topo.prompts_dir / "rag_answer" / "v2.yaml").write_text(better)
    topo.wait_run("sync_prompts", topo.trigger("sync_prompts"))
    promoted = topo.wait_new_run("promote_prompt", seen["promote_prompt"], timeout=1200)
    route = {ti["task_id"]: ti["state"] for ti in topo.task_instances("promote_prompt", promoted["dag_run_id"])}
    assert route.get("promote") == "success" and route.get("reject") == "skipped", route

    # the index in the Chroma server: v2 serves, with exactly the chunks the state store records
    assert self_check(settings, "docs")["ok"]
    store = VectorStore(settings)
    with state.session_scope(settings.state_db_url) as s:
        chunks = s.scalar(select(func.count()).select_from(state.Chunk).where(state.Chunk.index_name == "docs"))
        alias = s.get(state.IndexAlias, "docs")
        live = s.get(state.IndexVersion, alias.version_id)
        production = s.get(state.PromptAlias, ("rag_answer", "production"))
        evals = s.execute(select(state.EvalRun.trigger, state.EvalRun.collection, state.EvalRun.status)).all()
        actions = [a for (a,) in s.execute(select(state.AuditEntry.action))]
    assert live.collection == "docs__v2" and store.count("docs__v2") == chunks > 500
    assert not store.has_collection("docs__v3")
    assert production.version == 2
    # nightly_eval ran on v1 (after the ingest) and on v2 (after the swap); promote_prompt's runs on v2
    assert {e.collection for e in evals} == {"docs__v1", "docs__v2"} and all(e.status == "success" for e in evals), evals
    assert {"index_swapped", "prompt_promoted"} <= set(actions), actions

    # e-mails through the SMTP Connection: the swap and the promotion, to their recipients
    mails = [(rcpt, msg) for _, rcpt, msg in topo.smtp.inbox.messages]
    swapped = [(r, m) for r, m in mails if "[SWAPPED]" in m["Subject"]]
    promo = [(r, m) for r, m in mails if "[PROMOTED]" in m["Subject"]]
    assert len(swapped) == 1 and swapped[0][0] == ["platform@test.local"], [m["Subject"] for _, m in mails]
    assert "docs__v2" in parts(swapped[0][1])[0]
    assert len(promo) == 1 and promo[0][0] == ["prompt-owners@test.local"] and "rag_answer@2" in promo[0][1]["Subject"]
    assert not [m["Subject"] for _, m in mails if "FAILED" in m["Subject"]]


def test_the_chroma_server_answers_only_with_its_token(topo: Topology) -> None:
    """What the compose file's chroma-proxy does, with the same template: no token or a wrong one
    is refused before Chroma sees the request; the Connection's token gets through."""
    url = topo.chroma_url
    assert _chroma_status(url, {}) == 401
    assert _chroma_status(url, {"X-Chroma-Token": "wrong"}) == 401
    assert _chroma_status(url, {"Authorization": "Bearer wrong"}) == 401
    assert _chroma_status(url, {"X-Chroma-Token": topo.chroma_token}) == 200
    assert _chroma_status(url, {"Authorization": f"Bearer {topo.chroma_token}"}) == 200


def _pages(topo: Topology, path: str, key: str) -> list[dict]:
    """Every entry of a paginated REST listing (100 per page, [api] maximum_page_limit)."""
    out: list[dict] = []
    while True:
        sep = "&" if "?" in path else "?"
        code, body = topo.api(f"{path}{sep}limit=100&offset={len(out)}")
        assert code == 200, (path, code, body)
        out += body[key]
        if not body[key] or len(out) >= body["total_entries"]:
            return out


def test_no_secret_of_the_run_in_anything_it_left_behind(topo: Topology) -> None:
    """The secrets this deployment used, searched (as bytes and as base64) in: the task and
    dag-processor logs, every process's output, the Chroma proxy's logs, the data directory, the
    captured e-mails (as sent and decoded), the LLMOps page, its JSON API and drill-downs, Airflow's
    REST API (connections, config, event log, DAG runs with their conf, task instances with their
    rendered fields, every XCom value) and every row of the ragops state store."""
    import psycopg2

    runs = {d["dag_id"]: _pages(topo, f"/api/v2/dags/{d['dag_id']}/dagRuns", "dag_runs")
            for d in _pages(topo, "/api/v2/dags", "dags")}
    if not any(r["state"] == "success" for rs in runs.values() for r in rs):
        pytest.skip("nothing ran: this scan reads what the whole-loop test above left behind")
    smtp = topo.smtp  # type: ignore[attr-defined]
    assert smtp.credentials and smtp.logins and not smtp.auth_failures  # every e-mail went through AUTH
    scan = SecretScan({"Chroma token": topo.chroma_token, "SMTP password": smtp.credentials[1],
                       "Airflow admin password": ADMIN_PASSWORD, "JWT secret and API secret key": topo.secret,
                       "admin's API token": topo.token()})

    # files: Airflow's logs (task logs, dag-processor), every process's output, the proxy, the data dir
    scan.tree(topo.airflow_home / "logs", "Airflow log file")
    scan.tree(topo.logs, "process output")
    scan.tree(topo.workdir / "nginx", "Chroma proxy file", skip=("conf.d/*", "nginx.conf"))  # its config holds the token
    scan.tree(topo.data_dir, "data-dir file")
    for i, (_, rcpt, msg) in enumerate(smtp.inbox.messages):
        scan.email(f"e-mail {i} to {rcpt}: {msg['Subject']}", msg)

    # the LLMOps page, its JSON API and every drill-down it links
    code, overview = topo.api("/ragops/api/overview")
    assert code == 200, overview
    paths = ["/ragops/", "/ragops/prompts/rag_answer/diff?a=1&b=2"]
    for r in overview["eval"]["runs"]:
        paths += [f"/ragops/eval/{r['run_id']}", f"/ragops/api/eval/{r['run_id']}"]
    paths += [f"/ragops/drift/{c['check_id']}/report" for c in overview["drift"]]
    scan.text("/ragops/api/overview", json.dumps(overview), "LLMOps page or API")
    for path in paths:
        req = urllib.request.Request(topo.base + path, headers={"Authorization": f"Bearer {topo.token()}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            scan.text(path, r.read(), "LLMOps page or API")

    # Airflow's REST API: connections (smtp_default is in the database), config, event log, runs, XComs
    conns = _pages(topo, "/api/v2/connections", "connections")
    assert [c for c in conns if c["connection_id"] == "smtp_default"][0]["password"] == "***", conns
    scan.text("/api/v2/connections", json.dumps(conns), "REST answer")
    code, cfg = topo.api("/api/v2/config")
    scan.text("/api/v2/config", json.dumps(cfg), "REST answer")  # 403 unless [api] expose_config
    scan.text("/api/v2/eventLogs", json.dumps(_pages(topo, "/api/v2/eventLogs", "event_logs")), "REST answer")
    n_xcom = 0
    for dag_id, dag_runs in runs.items():
        for run in dag_runs:
            scan.text(f"run {dag_id}/{run['dag_run_id']}", json.dumps(run), "DAG run (conf, note)")
            rid = urllib.parse.quote(run["dag_run_id"], safe="")
            tis = _pages(topo, f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances", "task_instances")
            scan.text(f"task instances of {dag_id}/{run['dag_run_id']}", json.dumps(tis), "task instances of a run")
            for x in _pages(topo, f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances/~/xcomEntries", "xcom_entries"):
                code, value = topo.api(f"/api/v2/dags/{dag_id}/dagRuns/{rid}/taskInstances/{x['task_id']}/"
                                       f"xcomEntries/{urllib.parse.quote(x['key'], safe='')}?map_index={x['map_index']}")
                assert code == 200, (x, value)
                scan.text(f"XCom {dag_id}/{run['dag_run_id']}/{x['task_id']}[{x['map_index']}]/{x['key']}",
                          json.dumps(value), "XCom value")
                n_xcom += 1

    # every row of every table of the ragops state store (audit log, eval results, outbox, ...)
    conn = psycopg2.connect(topo.state_url.replace("postgresql+psycopg2://", "postgresql://"), connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            for (table,) in cur.fetchall():
                cur.execute(f'SELECT row_to_json(t)::text FROM "{table}" t')
                scan.text(f"state store table {table}", "\n".join(r for (r,) in cur.fetchall()), "state-store table")
    finally:
        conn.close()

    print(f"secret scan: {scan.summary()}; {n_xcom} XCom values, {len(smtp.inbox.messages)} e-mails")
    assert scan.places["Airflow log file"] >= 20 and scan.places["XCom value"] >= 10 and n_xcom, scan.summary()
    assert scan.places["e-mail"] >= 2 and scan.places["state-store table"] >= 10, scan.summary()
    assert not scan.found, "secrets leaked:\n" + "\n".join(scan.found)
