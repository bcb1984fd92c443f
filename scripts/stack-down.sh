#!/usr/bin/env bash
# Stop the stack, including services of optional profiles (worker-python-ipc).
# Volumes (journal, postgres data) are kept unless --volumes is given.
#   scripts/stack-down.sh [--volumes]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/compose.sh --profile '*' down --remove-orphans "$@"
