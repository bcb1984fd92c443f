#!/usr/bin/env bash
# Integration tests against the real stack (testcontainers + Compose v2).
# Builds what is out of date first; the tests bring up their own compose
# project (zmqflow-it, free host ports) and take it down again, so a stack
# started with `make up` is left alone.
#   scripts/run-integration-tests.sh [pytest args]   (paths under integration_tests/
#   given: only those; none: all of integration_tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VENV:-.venv}/bin

bash scripts/install-compose-v2.sh
# test_ui_browser.py opens the web UIs in Debian's chromium (apt-get when missing)
NEED_BROWSER=1 bash scripts/system-deps.sh
bash scripts/build-images.sh
bash scripts/build-images.sh prometheus   # test_monitoring's (compose profile monitoring)

# Ryuk (testcontainers' reaper) is an image from a registry: not here.
export TESTCONTAINERS_RYUK_DISABLED=true
export ZMQFLOW_IT_SKIP_BUILD=1     # just built
paths=(integration_tests)
for arg in "$@"; do [[ $arg == integration_tests/* ]] && paths=(); done
exec "$PY/pytest" -q -p no:cacheprovider "${paths[@]}" "$@"
