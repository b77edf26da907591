#!/usr/bin/env bash
# Airflow UI on this project: `airflow standalone` (api-server, scheduler, dag-processor,
# triggerer, LocalExecutor on SQLite) with dags/ and plugins/ and a project-local AIRFLOW_HOME.
# Ctrl-C stops every process it started: standalone runs in its own session and gets SIGINT,
# then anything left in that session is terminated.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
bash scripts/airflow-init.sh
port="${RAGOPS_UI_PORT:-8080}"
export AIRFLOW__API__PORT="$port"
export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://localhost:$port}"
pwfile="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
# a background job of a script starts with SIGINT ignored; restore it so standalone can be
# stopped the way it expects (SIGINT: it then stops its own children)
setsid python -c 'import os, signal; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp("airflow", ["airflow", "standalone"])' \
  > "$RAGOPS_DATA_DIR/logs/standalone.log" 2>&1 &
pid=$!
stop() {
  trap - INT TERM
  echo; echo "==> stopping Airflow (pid $pid)"
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.5; done
  kill -TERM -- "-$pid" 2>/dev/null || true
  sleep 2
  kill -KILL -- "-$pid" 2>/dev/null || true
  echo "==> stopped"
  exit 0
}
trap stop INT TERM
echo "==> starting Airflow standalone (log: ${RAGOPS_DATA_DIR#$ROOT/}/logs/standalone.log)"
for _ in $(seq 1 240); do
  if curl -fsS "http://127.0.0.1:$port/api/v2/monitor/health" > /dev/null 2>&1 && [ -s "$pwfile" ]; then
    echo "==> Airflow UI: http://localhost:$port  user: admin  password: $(python -c 'import json,sys; print(json.load(open(sys.argv[1])).get("admin",""))' "$pwfile")"
    echo "    (password file: ${pwfile#$ROOT/}); Ctrl-C stops everything"
    break
  fi
  kill -0 "$pid" 2>/dev/null || { tail -30 "$RAGOPS_DATA_DIR/logs/standalone.log"; exit 1; }
  sleep 1
done
wait "$pid" || true
stop
