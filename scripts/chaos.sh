#!/usr/bin/env bash
# `make chaos` / `make soak`: the chaos suite against a fresh stack (its own
# compose project and free host ports; a `make up` stack is left alone).
# Builds what is out of date first; nothing is pulled.
#   scripts/chaos.sh [--soak] [--minutes M] [--only SCENARIO]... [--keep]
# SOAK_MINUTES (default 10) sets the soak duration.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VENV:-.venv}/bin

bash scripts/install-compose-v2.sh >&2
bash scripts/build-images.sh >&2

# Ryuk (testcontainers' reaper) is an image from a registry: not here.
export TESTCONTAINERS_RYUK_DISABLED=true
exec "$PY/python" scripts/chaos.py "$@"
