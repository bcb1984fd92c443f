#!/usr/bin/env bash
# zmqflow postgres entrypoint.
#
# First start (empty $PGDATA): initdb. Every start: make sure each database
# and role listed in POSTGRES_DATABASES exists and has the password from the
# environment (so .env stays the source of truth), then exec the server.
#
# Environment:
#   POSTGRES_PASSWORD    password of the superuser `postgres` (required)
#   POSTGRES_DATABASES   space-separated DB:USER:PASSWORD triples, e.g.
#                        "airflow:airflow:airflow prefect:prefect:prefect"
#   POSTGRES_MAX_CONNECTIONS (200), POSTGRES_SHARED_BUFFERS (128MB)
# Passwords must not contain ':' or spaces (the list's separators).
set -euo pipefail

log() { echo "[postgres-entrypoint] $*" >&2; }

if [[ "${1:-postgres}" != postgres ]]; then
    exec "$@"                      # e.g. `docker compose run postgres bash`
fi
shift || true

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (the superuser password)}"
POSTGRES_DATABASES=${POSTGRES_DATABASES:-}

if [[ $(id -u) -eq 0 ]]; then
    log "running as root: re-executing as postgres"
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
fi

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    log "initdb in $PGDATA"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --pgdata="$PGDATA" --username=postgres --pwfile="$pwfile" \
        --encoding=UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    # Inside the container the unix socket stays trusted (as in the official
    # image); over TCP, from anywhere on the compose network, a password.
    cat >>"$PGDATA/pg_hba.conf" <<HBA

# zmqflow: clients on the compose network authenticate with scram-sha-256
host    all             all             0.0.0.0/0               scram-sha-256
host    all             all             ::/0                    scram-sha-256
HBA
    cat >>"$PGDATA/postgresql.conf" <<CONF

# zmqflow
listen_addresses = '*'
password_encryption = 'scram-sha-256'
include_if_exists = 'zmqflow-runtime.conf'
CONF
fi

# Settings that follow the environment on every start.
cat >"$PGDATA/zmqflow-runtime.conf" <<CONF
max_connections = ${POSTGRES_MAX_CONNECTIONS:-200}
shared_buffers = '${POSTGRES_SHARED_BUFFERS:-128MB}'
CONF

if [[ -n "$POSTGRES_DATABASES" ]]; then
    # A private server on the unix socket only: not reachable (and not
    # healthy) until the roles and databases are in place.
    pg_ctl --pgdata="$PGDATA" --wait --silent \
        -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" start
    psql_() { psql --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --username=postgres --dbname=postgres "$@"; }
    psql_ --set=pw="$POSTGRES_PASSWORD" <<'SQL'
ALTER ROLE postgres WITH PASSWORD :'pw';
SQL
    for triple in $POSTGRES_DATABASES; do
        IFS=: read -r db user pw <<<"$triple"
        if [[ -z "$db" || -z "$user" || -z "$pw" ]]; then
            log "ignoring malformed POSTGRES_DATABASES entry (want DB:USER:PASSWORD)"; continue
        fi
        log "ensuring database $db owned by $user"
        psql_ --set=db="$db" --set=user="$user" --set=pw="$pw" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
ALTER ROLE :"user" WITH LOGIN PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
GRANT ALL PRIVILEGES ON DATABASE :"db" TO :"user";
SQL
    done
    pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop
fi

log "starting postgres"
exec postgres -D "$PGDATA" "$@"
