#!/usr/bin/env bash
# The main job on the embedded default: install, migrate, then run the real ingest_documents
# DAG (airflow dags test) on the bundled demo corpus and the nightly_eval DAG on the bundled
# golden set, and print a summary.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
bash scripts/airflow-init.sh
run_dag() {  # run_dag DAG_ID WHAT: airflow dags test, with the log kept and its errors shown on failure
  local log="$RAGOPS_DATA_DIR/logs/demo-$1.log" start
  echo "==> running DAG $1 $2 (log: ${log#$ROOT/})"
  start=$(date +%s)
  if ! airflow dags test "$1" > "$log" 2>&1 || ! grep -q "state=success" "$log"; then
    grep -E "ERROR|Error|error:" "$log" | tail -20
    echo "$1 failed; full log: $log" >&2
    exit 1
  fi
  echo "==> DAG run finished in $(( $(date +%s) - start ))s"
}
run_dag ingest_documents "on include/corpus"
echo
ragops index status
echo
echo "==> ragops search \"How do I serve Chroma to several workers?\" -k 3"
ragops search "How do I serve Chroma to several workers?" -k 3
echo
run_dag nightly_eval "on include/eval/golden/docs.jsonl (prompt rag_answer, offline generator)"
echo
ragops eval runs --limit 3
cat <<MSG

Where to look next
  make ui                      Airflow UI on http://localhost:8080 (admin password printed)
  .venv/bin/ragops --help      ingest, search, index status, quarantine, eval
  ${RAGOPS_DATA_DIR#$ROOT/}/eval/<run>/report.html   the evaluation report (metrics, trend, worst questions)
  ${RAGOPS_DATA_DIR#$ROOT/}/                     state.db (state store), chroma/ (vectors), runs/ (sync runs), eval/
  docs/                        user guide; the same guide is the demo corpus in include/corpus/
MSG
