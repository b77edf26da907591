#!/usr/bin/env bash
# Migrate Airflow's metadata DB (SQLite in .airflow/) and the ragops state store; create the
# pool that serialises writers into embedded Chroma. Safe to repeat.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
mkdir -p "$AIRFLOW_HOME" "$RAGOPS_DATA_DIR/logs"
airflow db migrate > "$RAGOPS_DATA_DIR/logs/airflow-db-migrate.log" 2>&1 \
  || { tail -30 "$RAGOPS_DATA_DIR/logs/airflow-db-migrate.log"; exit 1; }
ragops db upgrade
airflow pools set ragops_chroma_writer 1 "ragops: one writer into embedded Chroma" > /dev/null
echo "==> Airflow metadata DB migrated ($AIRFLOW_HOME), pool ragops_chroma_writer ready"
