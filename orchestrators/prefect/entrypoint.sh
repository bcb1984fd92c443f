#!/usr/bin/env bash
# One image, four roles (compose.yaml's Prefect services):
#   server     Prefect API + UI on :4200 (PostgreSQL from PREFECT_API_DATABASE_CONNECTION_URL)
#   deploy     one-shot: work pool, block types, block document, deployments from prefect.yaml
#   worker     process worker on $PREFECT_WORK_POOL, health on :8080/health
#   bridge     zmqflow bus <-> Prefect events (python -m prefect_zmqflow.bridge)
#   health ROLE   the container healthcheck of that role
# Anything else is run as a command (e.g. `prefect deployment run ... --watch`).
set -euo pipefail
POOL=${PREFECT_WORK_POOL:-zmqflow-process}

http_ok() { # URL: exit 0 when it answers 2xx within 5 s
    python - "$1" <<'PY'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
    sys.exit(0 if 200 <= r.status < 300 else 1)
PY
}

case "${1:-server}" in
server)
    exec prefect server start --host 0.0.0.0 --port 4200
    ;;
deploy)
    set -x
    prefect work-pool create "$POOL" --type process --overwrite
    prefect block register -m prefect_zmqflow
    python -m prefect_zmqflow.setup "${ZMQFLOW_PREFECT_BLOCK:-fabric}"
    cd /opt/prefect
    prefect deploy --all --no-prompt
    ;;
worker)
    exec prefect worker start --pool "$POOL" --type process --with-healthcheck \
        --name "worker-$(hostname)"
    ;;
bridge)
    exec python -m prefect_zmqflow.bridge
    ;;
health)
    case "${2:-}" in
    server) http_ok http://127.0.0.1:4200/api/health ;;
    worker) http_ok "http://127.0.0.1:${PREFECT_WORKER_WEBSERVER_PORT:-8080}/health" ;;
    bridge) exec zmqflow-healthcheck file /tmp/prefect-bridge.health 30 ;;
    *) echo "health: server|worker|bridge" >&2; exit 2 ;;
    esac
    ;;
*)
    exec "$@"
    ;;
esac
