#!/usr/bin/env bash
# Install everything the tests need (pinned) and run the whole suite. Extra args go to pytest.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
bash scripts/setup.sh --dev
# the LLMOps page is tested in a real browser: Debian's chromium, driven by Playwright (pip)
if [ ! -x /usr/bin/chromium ]; then
  echo "==> installing Debian's chromium for the browser tests (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium > /dev/null 2>&1 || { apt-get update -q > /dev/null && apt-get install -y -q chromium > /dev/null; } \
    || { echo "could not install chromium: run 'apt-get install chromium' as root, then make test" >&2; exit 2; }
fi
# the production topology test (tests/e2e/test_topology.py) puts the Chroma server behind the same
# nginx token proxy as docker-compose.yaml; envsubst renders its template
if ! command -v nginx > /dev/null && [ ! -x /usr/sbin/nginx ] || ! command -v envsubst > /dev/null; then
  echo "==> installing Debian's nginx-light and gettext-base for the topology tests (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q nginx-light gettext-base > /dev/null 2>&1 \
    || { apt-get update -q > /dev/null && apt-get install -y -q nginx-light gettext-base > /dev/null; } \
    || { echo "could not install nginx: run 'apt-get install nginx-light gettext-base' as root, then make test" >&2; exit 2; }
fi
ruff check dags include plugins tests bench
exec python -m pytest "$@"
