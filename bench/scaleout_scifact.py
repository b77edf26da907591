#!/usr/bin/env python
"""Scale-out benchmark: ingest throughput of BEIR SciFact through the production topology with one
Celery worker and with two, and the ratio.

Each configuration starts the whole topology of docker-compose.yaml natively (tests/topology.py:
PostgreSQL metadata DB and state store, CeleryExecutor on Redis, api-server, scheduler,
dag-processor, triggerer, `chroma run` behind the token proxy) with fresh databases and an empty
Chroma, triggers ingest_documents on SciFact's corpus.jsonl through the REST API, and reads the
run and its task instances back from the API. Worker slots are one per worker (`--concurrency 1`),
so "two workers" means two embedding processes at a time.

Configurations (``--configs``, default all three):

- ``1w``: one worker;
- ``2w``: two workers, torch with its default intra-op threads (one per core) in each;
- ``2w-1t``: two workers, each task's torch limited to one thread (OMP_NUM_THREADS=1), so two
  processes share the cores without oversubscribing them.

Usage (from the project root)::

    .venv/bin/python bench/scaleout_scifact.py                # writes bench/results/scaleout_scifact.{json,md}
    .venv/bin/python bench/scaleout_scifact.py --limit 600    # smoke run: *.smoke.{json,md}

Needs the local PostgreSQL (127.0.0.1:5432), Redis (6379) and nginx (scripts/test.sh installs
it). Exits 0 with a message when the dataset is absent. Run it on a quiet machine: the figures
are wall-clock.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness as H

SCRIPT = Path(__file__).resolve()
sys.path.insert(0, str(H.PROJECT_ROOT))

from tests.topology import Topology  # noqa: E402 - after the path is set

CONFIGS = {
    "1w": {"workers": 1, "worker_env": {}, "label": "1 worker"},
    "2w": {"workers": 2, "worker_env": {}, "label": "2 workers"},
    "2w-1t": {"workers": 2, "worker_env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
              "label": "2 workers, 1 torch thread each"},
}
CONFIG = """
chroma: {mode: server}
ingest: {schedule: null, batch_documents: %d, default_index: scifact}
eval: {schedule: null}
rebuild: {schedule: null}
drift: {schedule: null}
prompts: {sync_schedule: null}
indexes:
  scifact: {}
"""


def ts(value: str | None) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else float("nan")


def run_config(name: str, source: Path, batch_documents: int, keep: bool) -> dict[str, Any]:
    cfg = CONFIGS[name]
    work = Path(tempfile.mkdtemp(prefix=f"ragops-scaleout-{name}-"))
    topo = Topology(work, workers=cfg["workers"], concurrency=1, config_yaml=CONFIG % batch_documents,
                    worker_env=cfg["worker_env"])
    load_start = H.loadavg()
    with topo:
        topo.unpause("ingest_documents")
        t0 = time.time()
        run_id = topo.trigger("ingest_documents", {"source": str(source), "index": "scifact"})
        run = topo.wait_run("ingest_documents", run_id, timeout=6 * 3600)
        wall = time.time() - t0
        tis = topo.task_instances("ingest_documents", run_id)
        _, xcom = topo.api(f"/api/v2/dags/ingest_documents/dagRuns/{run_id}/taskInstances/commit/xcomEntries/"
                           "return_value")
    report = json.loads(xcom["value"]) if isinstance(xcom.get("value"), str) else xcom.get("value") or {}
    batches = [t for t in tis if t["task_id"] == "process_batch"]
    span = max(ts(t["end_date"]) for t in batches) - min(ts(t["start_date"]) for t in batches)
    per_worker: dict[str, int] = {}
    for t in batches:
        per_worker[t["hostname"]] = per_worker.get(t["hostname"], 0) + 1
    docs = sum(1 for _ in open(source, encoding="utf-8"))
    chunks = int(((report.get("chunks") or {}).get("upserted")) or 0)
    out = {
        "config": name, "label": cfg["label"], "workers": cfg["workers"], "slots_per_worker": 1,
        "worker_env": cfg["worker_env"], "documents": docs, "chunks_upserted": chunks,
        "batches": len(batches), "batches_per_worker": per_worker,
        "run_seconds": ts(run["end_date"]) - ts(run["start_date"]), "trigger_to_success_seconds": wall,
        "process_batch_span_seconds": span,
        "process_batch_task_seconds": sum(ts(t["end_date"]) - ts(t["start_date"]) for t in batches),
        "commit_seconds": next((ts(t["end_date"]) - ts(t["start_date"]) for t in tis if t["task_id"] == "commit"), None),
        "load_average_start": load_start, "load_average_end": H.loadavg(),
    }
    out["documents_per_second"] = docs / out["run_seconds"]
    out["chunks_per_second"] = chunks / out["run_seconds"] if chunks else None
    if keep:
        out["workdir"] = str(work)
    print(json.dumps(out, indent=1), flush=True)
    return out


def render(results: dict[str, Any]) -> str:
    rows = results["runs"]
    lines = ["# ragops scale-out benchmark, BEIR SciFact ingest through CeleryExecutor", "",
             f"command: `{results['command']}`", "",
             f"date {results['date']}; {results['machine']}; batch_documents {results['batch_documents']}; "
             "topology: tests/topology.py (PostgreSQL metadata DB and state store, Redis broker, api-server, "
             "scheduler, dag-processor, triggerer, `chroma run` behind the token proxy); one task slot per worker", "",
             "| configuration | documents | chunks | batches (per worker) | DAG run (s) | documents/s | chunks/s | "
             "process_batch span (s) | sum of batch task time (s) | commit (s) | load avg start / end |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['documents']:,} | {r['chunks_upserted']:,} | {r['batches']} "
                     f"({', '.join(f'{k}: {v}' for k, v in sorted(r['batches_per_worker'].items()))}) | "
                     f"{r['run_seconds']:.1f} | {r['documents_per_second']:.2f} | "
                     f"{(r['chunks_per_second'] or 0):.2f} | {r['process_batch_span_seconds']:.1f} | "
                     f"{r['process_batch_task_seconds']:.1f} | {(r['commit_seconds'] or 0):.1f} | "
                     f"{r['load_average_start'][0]:.2f} / {r['load_average_end'][0]:.2f} |")
    lines += ["", "| ratio (throughput of B / throughput of A) | value |", "|---|---|"]
    for k, v in results["ratios"].items():
        lines.append(f"| {k} | {v:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    H.add_common_args(ap, verbose=False)
    ap.add_argument("--configs", default="1w,2w,2w-1t")
    ap.add_argument("--batch-documents", type=int, default=200)
    a = H.check_common_args(ap, ap.parse_args())
    names = [n.strip() for n in a.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"unknown configuration(s) {unknown}: choose from {sorted(CONFIGS)}")
    dataset = H.dataset_or_skip(a.dataset, ("corpus.jsonl",))
    if dataset is None:
        return 0
    import torch

    with H.workspace("ragops-scaleout-src-", a.keep_tmp) as src:
        source = dataset / "corpus.jsonl"
        if a.limit:
            source = src / "corpus.jsonl"
            H.write_copy(dataset / "corpus.jsonl", source, a.limit)
        runs = [run_config(n, source, a.batch_documents, a.keep_tmp) for n in names]
    by = {r["config"]: r for r in runs}
    ratios = {}
    for b in ("2w", "2w-1t"):
        if "1w" in by and b in by:
            ratios[f"{by[b]['label']} / 1 worker"] = by[b]["documents_per_second"] / by["1w"]["documents_per_second"]
    machine = H.basic_machine()
    results = {
        "command": H.command_line(SCRIPT), "date": H.iso(H.utc_now()),
        "machine": f"{machine['cpus']} CPUs; Python {machine['python']}; torch {torch.__version__} "
                   f"({torch.get_num_threads()} threads by default)",
        "git_commit": machine["git_commit"],
        "batch_documents": a.batch_documents, "limit": a.limit or 0, "runs": runs, "ratios": ratios,
    }
    md = render(results)
    H.write_results(a.results_dir, H.result_stem("scaleout_scifact", bool(a.limit)), results, md, indent=1)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
