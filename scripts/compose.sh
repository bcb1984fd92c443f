#!/usr/bin/env bash
# docker compose with this repository's compose.yaml and .env, from anywhere:
#   scripts/compose.sh ps | logs -f | up -d --scale worker-python=4 | ...
# Installs Compose v2 first where only Debian's Compose v1 is present.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! docker compose version >/dev/null 2>&1; then
    bash scripts/install-compose-v2.sh >&2
fi
exec docker compose -f compose.yaml --env-file .env "$@"
