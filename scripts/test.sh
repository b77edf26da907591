#!/usr/bin/env bash
# Install everything the tests need (pinned) and run the whole suite. Extra args go to pytest.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
bash scripts/setup.sh --dev
ruff check dags include plugins tests bench
exec python -m pytest "$@"
