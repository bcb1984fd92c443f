#!/usr/bin/env bash
# Build what is missing, start the stack, wait until every service is
# healthy, then show what runs where and the forwarder's status table.
#   scripts/stack-up.sh [extra `docker compose up` args, e.g. --scale worker-python=3]
#   COMPOSE_PROFILES=monitoring scripts/stack-up.sh   (make up PROFILE=monitoring)
#                                also Prometheus (its image is built when asked for)
#
# The terminal gets one line per step (per image built, with its time); the
# full output (image builds, compose) goes to the log named on the first
# line, .build/logs/up-<UTC time>.log (.build/logs/latest.log: the last one).
# VERBOSE=1 shows it all on the terminal too.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_LOG_NAME=up
source scripts/lib/build-log.sh
log() { say "[stack-up] $*"; }
t0=$SECONDS

if ! run_logged compose-v2 bash scripts/install-compose-v2.sh; then
    log "FAILED: installing docker compose v2; its last lines:"
    log_tail compose-v2
    exit 1
fi
# Images of optional profiles, built only when the profile is asked for.
optional=()
profiles=",${COMPOSE_PROFILES:-},"
if [[ $profiles == *,monitoring,* || $profiles == *,\*,* ]]; then
    optional=(--with prometheus)
fi
bash scripts/build-images.sh "${optional[@]}"
compose() { bash scripts/compose.sh "$@"; }

log "starting the stack: docker compose up -d --wait"
if ! run_logged compose compose up -d --wait --wait-timeout "${WAIT_TIMEOUT:-300}" --remove-orphans "$@"; then
    log "the stack did not become healthy; compose said:"
    log_tail compose 15
    log "state and recent logs:"
    compose ps -a >&2 || true
    compose logs --tail=40 >&2 || true
    exit 1
fi
log "healthy after $((SECONDS - t0)) s (full output: $(build_log_name))"

port() { # service container-port -> host:port, or "-"
    compose port "$1" "$2" 2>/dev/null | head -n1 || true
}
client=$(port forwarder 5555)
cat <<INFO

What runs where
  forwarder          clients        tcp://${client:--}             (inside: tcp://forwarder:5555, ipc:///run/zmqflow/frontend.sock)
                     workers        tcp://forwarder:5556 (compose network only), ipc:///run/zmqflow/backend.sock
                     events in      tcp://$(port forwarder 5557)   (XSUB: publish here)
                     events out     tcp://$(port forwarder 5558)   (XPUB: subscribe here; also ipc:///run/zmqflow/events.sock)
                     metrics        http://$(port forwarder 9100)/metrics
                     journal        volume forwarder-journal -> /var/lib/zmqflow/journal.db
                     CURVE          every socket; keys made once by the keys one-shot (volumes keys-*)
                                    a host program's key: make client-key NAME=me (prints the two ZMQFLOW_CURVE_* to export)
  worker-python      $(compose ps -q worker-python | wc -l) replica(s) over tcp   (scale: docker compose up -d --scale worker-python=N)
  worker-rust        $(compose ps -q worker-rust | wc -l) replica(s) over tcp   (scale: docker compose up -d --scale worker-rust=N)
  events-log         worker arrivals/departures over ipc (volume zmqflow-ipc -> /run/zmqflow): docker compose logs events-log
  postgres           postgres:5432 inside the network (databases: airflow, prefect)
  airflow-apiserver  Airflow UI and REST API  http://$(port airflow-apiserver 8080)   login ${AIRFLOW_ADMIN_USER:-$(sed -n 's/^AIRFLOW_ADMIN_USER=//p' .env | tail -n1)} / ${AIRFLOW_ADMIN_PASSWORD:-$(sed -n 's/^AIRFLOW_ADMIN_PASSWORD=//p' .env | tail -n1)} (AIRFLOW_ADMIN_* in .env)
  airflow-scheduler  LocalExecutor: runs tasks; forwarder over ipc:///run/zmqflow/frontend.sock
  airflow-triggerer  deferred zmqflow tasks and the data.ready AssetWatcher wait here, over ipc
  airflow-dag-processor  parses orchestrators/airflow/dags (zmqflow_fanout, zmqflow_on_event)
  prefect-server     Prefect UI and API  http://$(port prefect-server 4200)   (inside: http://prefect-server:4200/api; PostgreSQL database prefect)
  prefect-worker     process work pool (PREFECT_WORK_POOL in .env); forwarder over ipc; run: docker compose exec prefect-worker prefect deployment run zmqflow-fanout/fanout --watch
  prefect-bridge     bus <-> Prefect events: data.*/worker.* -> deployment triggers; flow-run/task-run states -> <env>.prefect.*
INFO
if [[ -n $(compose ps -q prometheus 2>/dev/null) ]]; then
    cat <<INFO
  prometheus         graphs http://$(port prometheus 9090)/graph   alerts http://$(port prometheus 9090)/alerts   targets http://$(port prometheus 9090)/targets
INFO
else
    echo "  (monitoring: make up PROFILE=monitoring adds Prometheus)"
fi
echo

compose ps --format 'table {{.Service}}\t{{.Name}}\t{{.Status}}'
echo
# From the host only with a client key of one's own (make client-key);
# else inside the forwarder, as its healthcheck's client key.
if [[ -x .venv/bin/zmqflow && -n ${ZMQFLOW_CURVE_SECRET:-} ]] \
    && .venv/bin/zmqflow status --connect "tcp://${client}" 2>/dev/null; then
    :
elif compose exec -T -e ZMQFLOW_CURVE_SECRET=/etc/zmqflow/keys/forwarder-health.key_secret \
        -e ZMQFLOW_CURVE_SERVER=/etc/zmqflow/keys/forwarder.key \
        forwarder zmqflow status --connect tcp://127.0.0.1:5555 2>/dev/null; then
    :
else
    log "no status table (zmqflow status not available yet)"
fi
