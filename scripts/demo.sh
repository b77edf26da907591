#!/usr/bin/env bash
# The main job on the embedded default: install, migrate, then run the real ingest_documents
# DAG (airflow dags test) on the bundled demo corpus, and print a summary.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
bash scripts/airflow-init.sh
log="$RAGOPS_DATA_DIR/logs/demo-ingest_documents.log"
echo "==> running DAG ingest_documents on include/corpus (log: ${log#$ROOT/})"
start=$(date +%s)
if ! airflow dags test ingest_documents > "$log" 2>&1 || ! grep -q "state=success" "$log"; then
  grep -E "ERROR|Error|error:" "$log" | tail -20
  echo "ingest_documents failed; full log: $log" >&2
  exit 1
fi
echo "==> DAG run finished in $(( $(date +%s) - start ))s"
echo
ragops index status
echo
echo "==> ragops search \"How do I serve Chroma to several workers?\" -k 3"
ragops search "How do I serve Chroma to several workers?" -k 3
cat <<MSG

Where to look next
  make ui                      Airflow UI on http://localhost:8080 (admin password printed)
  .venv/bin/ragops --help      ingest, search, index status, quarantine
  ${RAGOPS_DATA_DIR#$ROOT/}/                     state.db (state store), chroma/ (vectors), runs/ (run reports)
  docs/                        user guide; the same guide is the demo corpus in include/corpus/
MSG
