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

# Healthchecks in bash alone: a Python interpreter per check, every few
# seconds in three containers, was most of their idle CPU.
http_ok() { # PORT PATH: exit 0 when 127.0.0.1:PORT answers PATH with 200 within 5 s
    local status
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    read -r -t 5 _ status _ <&3 || return 1
    exec 3<&-
    [[ $status == 200 ]]
}
fresh() { # FILE SECONDS: exit 0 when FILE was touched within SECONDS
    local age
    age=$(( $(date +%s) - $(stat -c %Y "$1" 2>/dev/null || echo 0) ))
    (( age <= $2 ))
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
    server) http_ok 4200 /api/health ;;
    worker) http_ok "${PREFECT_WORKER_WEBSERVER_PORT:-8080}" /health ;;
    bridge) fresh /tmp/prefect-bridge.health 30 ;;
    *) echo "health: server|worker|bridge" >&2; exit 2 ;;
    esac
    ;;
*)
    exec "$@"
    ;;
esac
