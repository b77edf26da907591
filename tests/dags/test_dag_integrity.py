"""Every DAG file imports cleanly, declares what DESIGN.md requires, and touches no database,
Connection or heavy library while it is parsed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
HEAVY = ["torch", "chromadb", "sentence_transformers", "great_expectations", "pandas", "langchain_text_splitters",
         "transformers", "ragops.indexing", "ragops.state"]

PROBE = r"""
import importlib.util, json, sys, time
import airflow.sdk  # the Airflow import itself is paid by every DAG file alike
path = sys.argv[1]
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_under_test", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
elapsed = time.perf_counter() - t0
heavy = json.loads(sys.argv[2])
print(json.dumps({"loaded": [m for m in heavy if m in sys.modules], "seconds": elapsed}))
"""


def test_there_are_dags() -> None:
    assert DAG_FILES, "no DAG files found"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parse_touches_no_db_connection_or_heavy_import(path: Path, tmp_path: Path) -> None:
    env = dict(os.environ,
               # unreachable on purpose: any database access at parse time would fail the import
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:////nonexistent-ragops-dir/airflow.db",
               RAGOPS_STATE_DB_URL="postgresql+psycopg2://nobody@127.0.0.1:1/nothing",
               RAGOPS_DATA_DIR=str(tmp_path / "untouched"),
               AIRFLOW_CONN_CHROMA_DEFAULT="http://nobody:secret@127.0.0.1:1")
    proc = subprocess.run([sys.executable, "-c", PROBE, str(path), json.dumps(HEAVY)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [], f"{path.name} imports heavy modules at parse time: {result['loaded']}"
    assert not (tmp_path / "untouched").exists(), "parsing created the data directory"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert {p.stem for p in DAG_FILES} == set(dagbag.dag_ids), "file name = dag_id, one DAG per file"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_required_arguments(dagbag, path: Path) -> None:
    dag = dagbag.dags[path.stem]
    assert dag.catchup is False
    assert dag.max_active_runs >= 1
    assert "ragops" in dag.tags
    assert dag.default_args.get("retries", 0) >= 1 and dag.default_args.get("retry_delay")
    assert dag.doc_md and "Params" in dag.doc_md and "Connections" in dag.doc_md
    assert dag.on_failure_callback
    assert dag.start_date is not None
    assert dag.timetable is not None
    for name in dag.params:
        param = dag.params.get_param(name)
        assert param.schema.get("title") and param.description, f"Param {name} needs a title and description"
        assert param.schema.get("type"), f"Param {name} needs a type"
        # Airflow's trigger form refuses an empty required field: "nothing" must be null, not ""
        assert param.value != "", f"Param {name}: default '' disables the trigger form; use None with type null"
        if "enum" in param.schema:
            assert param.value in param.schema["enum"], f"Param {name}: default not among its choices"
    dag.params.validate()  # the defaults pass their own schemas: the form can be submitted as it opens


def test_ingest_documents_shape(dagbag) -> None:
    dag = dagbag.dags["ingest_documents"]
    assert dag.max_active_runs == 1
    assert set(dag.task_ids) == {"plan", "process_batch", "commit"}
    assert dag.get_task("commit").pool == "ragops_chroma_writer"
    assert dag.get_task("commit").outlets, "commit emits the index asset"
    assert set(dag.params) == {"source", "source_conn_id", "index", "full_resync", "dry_run", "allow_mass_delete"}
    assert dag.params.get_param("index").schema["enum"]
