#!/usr/bin/env bash
# The main job on the embedded default: install, migrate, then run the real ingest_documents
# DAG (airflow dags test) on the bundled demo corpus and the nightly_eval DAG on the bundled
# golden set; then the local LLM in the loop: `ragops llm serve` in the background, the real
# promote_prompt DAG on rag_local@2 (candidate) vs rag_local@1 (production) on a few golden
# questions, one generated answer with its claim-level groundedness verdict, and the decision.
# RAGOPS_DEMO_LLM=0 skips the LLM part; RAGOPS_DEMO_QUESTIONS (ids), RAGOPS_DEMO_LLM_THREADS and
# RAGOPS_DEMO_LLM_WAIT (seconds to wait for the model to load) tune it.
set -euo pipefail
DEMO_START=$(date +%s)
source "$(dirname "$0")/env.sh"
cd "$ROOT"
bash scripts/setup.sh
bash scripts/airflow-init.sh
run_dag() {  # run_dag DAG_ID WHAT [CONF_JSON]: airflow dags test, with the log kept and its errors shown on failure
  local log="$RAGOPS_DATA_DIR/logs/demo-$1.log" start
  echo "==> running DAG $1 $2 (log: ${log#$ROOT/})"
  start=$(date +%s)
  if ! airflow dags test "$1" ${3:+-c "$3"} > "$log" 2>&1 || ! grep -q "state=success" "$log"; then
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
echo
echo "==> the live application: ragops ask (answer + trace), then the monitor_production DAG on the traces"
ragops ask "How do I serve Chroma to several workers?"
run_dag monitor_production "(load traces, evaluate them online, check)"
ragops monitor history --limit 1
ragops cost report --since 1d --no-load

# ---------------------------------------------------------------- the local LLM in the loop
if [ "${RAGOPS_DEMO_LLM:-1}" != "0" ]; then
  demo_dir="$RAGOPS_DATA_DIR/demo"
  mkdir -p "$demo_dir"
  # The 135M model is no judge (and three judge calls per answer would triple the time): the LLM part
  # runs on a copy of the settings with eval.judge off; claim-level groundedness is always computed.
  python scripts/demo_llm.py settings "$demo_dir/ragops-demo.yaml"
  export RAGOPS_CONFIG="$demo_dir/ragops-demo.yaml"
  # the first five answerable golden questions and the first unanswerable one (refused before the model is asked)
  questions="${RAGOPS_DEMO_QUESTIONS:-q001 q002 q003 q004 q005 q041}"
  python scripts/demo_llm.py subset "$demo_dir/golden-subset.jsonl" $questions
  llm_port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  llm_log="$RAGOPS_DATA_DIR/logs/demo-llm-serve.log"
  # one torch thread: on a busy 2-core machine two threads spin against each other (a 160-token answer
  # took 172 s with torch's default, 27 s with one thread, load average 10)
  echo
  echo "==> ragops llm serve --port $llm_port --threads ${RAGOPS_DEMO_LLM_THREADS:-1} in the background (log: ${llm_log#$ROOT/})"
  ragops llm serve --host 127.0.0.1 --port "$llm_port" --threads "${RAGOPS_DEMO_LLM_THREADS:-1}" > "$llm_log" 2>&1 &
  llm_pid=$!
  stop_llm() {
    local rc=$? i
    if [ -n "${llm_pid:-}" ] && kill -0 "$llm_pid" 2>/dev/null; then
      kill -TERM "$llm_pid" 2>/dev/null || true
      for i in $(seq 1 30); do kill -0 "$llm_pid" 2>/dev/null || break; sleep 1; done
      if kill -0 "$llm_pid" 2>/dev/null; then
        echo "ragops llm serve (pid $llm_pid) did not stop on SIGTERM within 30 s: killed" >&2
        kill -KILL "$llm_pid" 2>/dev/null || true
      fi
      wait "$llm_pid" 2>/dev/null || true
      echo "==> local LLM server stopped"
    fi
    return $rc
  }
  trap stop_llm EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  wait_s="${RAGOPS_DEMO_LLM_WAIT:-600}" start=$(date +%s)
  until curl -sf "http://127.0.0.1:$llm_port/health" > /dev/null 2>&1; do
    if ! kill -0 "$llm_pid" 2>/dev/null; then
      tail -20 "$llm_log" >&2
      echo "error: ragops llm serve exited before it answered /health; full log: $llm_log" >&2
      exit 1
    fi
    if [ $(( $(date +%s) - start )) -ge "$wait_s" ]; then
      tail -20 "$llm_log" >&2
      echo "error: the local model did not answer http://127.0.0.1:$llm_port/health within ${wait_s}s" \
           "(RAGOPS_DEMO_LLM_WAIT raises the limit); log: $llm_log" >&2
      exit 1
    fi
    sleep 1
  done
  echo "==> model loaded, serving in $(( $(date +%s) - start ))s: $(grep -m1 '^loaded in' "$llm_log" || true)"
  # the Connection llm_default as an environment variable, for the DAG (and the judge, which is off here)
  export AIRFLOW_CONN_LLM_DEFAULT="{\"conn_type\": \"http\", \"host\": \"http://127.0.0.1:$llm_port/v1\", \"extra\": {\"model\": \"smollm2-135m-instruct-q4_1\", \"timeout\": 600, \"max_retries\": 1}}"
  echo
  ragops prompts sync
  # the first sync points production at the newest version; the demo's production is v1, v2 the candidate
  # (on a re-run this also undoes the previous run's promotion of v2, with its own history entry)
  if [ "$(ragops prompts list --json | python -c 'import json, sys; print(next((p["aliases"].get("production") for p in json.load(sys.stdin) if p["name"] == "rag_local"), ""))')" != "1" ]; then
    ragops prompts promote rag_local 1 --reason "make demo: rag_local@1 is the production the demo's candidate v2 is gated against"
  fi
  echo
  n_q=$(wc -l < "$demo_dir/golden-subset.jsonl")
  run_dag promote_prompt "rag_local@2 vs production rag_local@1 on $n_q golden questions ($questions), gate default" \
    "{\"prompt\": \"rag_local\", \"candidate_version\": 2, \"dataset\": \"$demo_dir/golden-subset.jsonl\", \"gate_profile\": \"default\", \"require_approval\": false}"
  echo
  python scripts/demo_llm.py show rag_local
  stop_llm
  llm_pid=
  unset RAGOPS_CONFIG AIRFLOW_CONN_LLM_DEFAULT
fi
cat <<MSG

Where to look next
  make ui                      Airflow UI on http://localhost:8080 (admin password printed)
  .venv/bin/ragops --help      ingest, search, index status, quarantine, eval
  ${RAGOPS_DATA_DIR#$ROOT/}/eval/<run>/report.html   the evaluation report (metrics, trend, worst questions)
  ${RAGOPS_DATA_DIR#$ROOT/}/                     state.db (state store), chroma/ (vectors), runs/ (sync runs), eval/
  docs/                        user guide; the same guide is the demo corpus in include/corpus/
  docs/llm.md                  the local LLM: \`ragops llm serve\` (OpenAI-compatible, http://127.0.0.1:8765/v1),
                               the rag_local prompts, and the limits of a 135M model
  ragops prompts history rag_local   who moved production, when and why (the gate's evidence)
  ${RAGOPS_DATA_DIR#$ROOT/}/eval/promote_prompt__*/results.jsonl   every generated answer with its unsupported claims

Demo finished in $(( $(date +%s) - DEMO_START ))s ($(( ($(date +%s) - DEMO_START) / 60 ))m $(( ($(date +%s) - DEMO_START) % 60 ))s)
MSG
