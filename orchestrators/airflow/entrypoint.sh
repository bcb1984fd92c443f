#!/usr/bin/env bash
# Entry point of every zmqflow/airflow container.
#
# Contract: the installation's secrets (JWT secret, API secret key, Fernet key)
# and the SimpleAuthManager password file live on the airflow-secrets volume
# (/opt/airflow/secrets). `init` creates them once (never overwritten, never
# committed), migrates the database, creates the admin user's password file
# and the zmqflow_default connection. Every other command exports the same
# secrets first, so all Airflow containers share them (tasks fail with
# "Invalid auth token" otherwise), then runs the command given.
set -euo pipefail

SECRETS_DIR=${ZMQFLOW_AIRFLOW_SECRETS_DIR:-/opt/airflow/secrets}
KEYS=$SECRETS_DIR/keys.env
log() { echo "[airflow-entrypoint] $*" >&2; }

make_keys() {
    # Written to a temporary file and renamed: a reader sees all or nothing.
    [[ -s $KEYS ]] && { log "secrets exist in $KEYS (kept)"; return; }
    python - "$KEYS" <<'PY'
import os, secrets, sys
from cryptography.fernet import Fernet
path = sys.argv[1]
lines = [
    f"AIRFLOW__API_AUTH__JWT_SECRET={secrets.token_urlsafe(48)}",
    f"AIRFLOW__API__SECRET_KEY={secrets.token_urlsafe(48)}",
    f"AIRFLOW__CORE__FERNET_KEY={Fernet.generate_key().decode()}",
]
tmp = path + ".tmp"
with open(tmp, "w") as f:
    f.write("\n".join(lines) + "\n")
os.chmod(tmp, 0o600)
os.replace(tmp, path)
PY
    log "generated this installation's secrets in $KEYS"
}

load_keys() {
    local waited=0
    until [[ -s $KEYS ]]; do
        (( waited++ < 120 )) || { log "no $KEYS after 120 s: run airflow-init first"; exit 1; }
        sleep 1
    done
    set -a; source "$KEYS"; set +a
}

write_passwords() {
    # SimpleAuthManager reads user passwords from this JSON file; .env sets them.
    python - "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" <<'PY'
import json, os, sys
users = os.environ.get("ZMQFLOW_AIRFLOW_USERS", "admin:admin")
passwords = dict(pair.split(":", 1) for pair in users.split(",") if pair)
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    json.dump(passwords, f)
os.chmod(tmp, 0o600)
os.replace(tmp, sys.argv[1])
PY
}

if [[ ${1:-} == init ]]; then
    mkdir -p "$SECRETS_DIR" /opt/airflow/shared/results
    make_keys
    load_keys
    write_passwords
    log "airflow db migrate"
    airflow db migrate
    # The connection is (re)made from the environment on every init, so a
    # changed .env takes effect on the next `make up`.
    airflow connections delete "${ZMQFLOW_AIRFLOW_CONN_ID:-zmqflow_default}" >/dev/null 2>&1 || true
    airflow connections add "${ZMQFLOW_AIRFLOW_CONN_ID:-zmqflow_default}" --conn-json "$(python - <<'PY'
import json, os
print(json.dumps({
    "conn_type": "zmqflow",
    "description": "The zmqflow forwarder of this stack",
    "extra": {
        "frontend": os.environ.get("ZMQFLOW_AIRFLOW_FRONTEND", "ipc:///run/zmqflow/frontend.sock"),
        "events_in": os.environ.get("ZMQFLOW_AIRFLOW_EVENTS_IN", "tcp://forwarder:5557"),
        "events_out": os.environ.get("ZMQFLOW_AIRFLOW_EVENTS_OUT", "ipc:///run/zmqflow/events.sock"),
        "env": os.environ.get("ZMQFLOW_ENV", "dev"),
    },
}))
PY
)"
    log "init done"
    exit 0
fi

load_keys
exec "$@"
