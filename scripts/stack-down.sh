#!/usr/bin/env bash
# Stop the stack. Volumes (journal, postgres data) are kept unless --volumes.
#   scripts/stack-down.sh [--volumes]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/compose.sh down --remove-orphans "$@"
