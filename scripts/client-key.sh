#!/usr/bin/env bash
# A CURVE client key for a program on the host, let into the running stack.
#
#   [GRANTS=...] scripts/client-key.sh NAME [DIR]
#                                     (make client-key NAME=myapp [DIR=...] [GRANTS=...])
#
# 1. makes DIR/NAME.key and DIR/NAME.key_secret with `zmqflow keys generate`
#    (once: an existing pair is kept), DIR defaulting to ~/.config/zmqflow/keys;
# 2. writes [keys.NAME] into the stack's permissions file (the volume
#    forwarder-permissions, /keys/permissions in the `keys` one-shot), before
#    the key is let in: the group demo-clients (the demo services, data.>
#    events) plus GRANTS, e.g. GRANTS="submit=airflow.> publish=pipeline.>",
#    GRANTS="groups= admin=true" (docs/security.md#permissions). The file is
#    edited on the host (zmqflow.security.permissions.grants: the rest of it,
#    comments included, is kept; a result that would not load is never
#    written) and renamed into place; the forwarder takes it within a
#    second. A stack without that volume (compose.yaml not wired yet) skips
#    this step with a note;
# 3. copies NAME.key into the stack's allow-list volume keys-allow-clients
#    (through the `keys` one-shot's image; renamed into place so the
#    forwarder's folder watch reads a whole file): the forwarder lets the key
#    in within seconds, nothing restarts;
# 4. copies the forwarder's public key to DIR/forwarder.key;
# then prints the two variables a program (zmqflow CLI, Client, AsyncClient)
# needs. The secret key never leaves DIR. Remove a client again with
# scripts/compose.sh run --rm --no-deps keys rm /keys/allow-clients/NAME.key
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/client-key.sh NAME [DIR]}
dir=${2:-${HOME}/.config/zmqflow/keys}
log() { echo "[client-key] $*" >&2; }

python=${VENV:-.venv}/bin/python
[[ -x $python ]] || python=python3
perm_old=$(mktemp) perm_new=$(mktemp)
trap 'rm -f "$perm_old" "$perm_new"' EXIT
# a bad GRANTS (or NAME) stops here, before anything is made: tried on the repository's file
"$python" -m zmqflow.security.permissions.grants services/forwarder/permissions.toml \
    "$name" "${GRANTS:-}" >/dev/null || exit 2

zmqflow=${VENV:-.venv}/bin/zmqflow
[[ -x $zmqflow ]] || zmqflow=zmqflow
if [[ -s $dir/$name.key_secret ]]; then
    log "keeping the existing key pair $dir/$name.key_secret"
else
    "$zmqflow" keys generate "$dir" "$name" >&2
fi

compose() { bash scripts/compose.sh "$@"; }

# The grants first: the key must not get in before its rules are there.
status=0
compose run --rm --no-deps -T keys bash -euc '
        [[ -d /keys/permissions ]] || exit 3
        cat /keys/permissions/permissions.toml 2>/dev/null || true' >"$perm_old" || status=$?
if [[ $status == 3 ]]; then
    log "this stack has no permissions volume (/keys/permissions) yet: no grants written for $name"
elif [[ $status != 0 ]]; then
    exit "$status"
else
    "$python" -m zmqflow.security.permissions.grants "$perm_old" "$name" "${GRANTS:-}" >"$perm_new"
    compose run --rm --no-deps -T keys bash -euc '
            cat > /keys/permissions/.permissions.toml.tmp
            chown 10001:10001 /keys/permissions/.permissions.toml.tmp
            chmod 0644 /keys/permissions/.permissions.toml.tmp
            mv /keys/permissions/.permissions.toml.tmp /keys/permissions/permissions.toml' \
        <"$perm_new"
    log "[keys.$name] written into the stack's permissions file (${GRANTS:-groups demo-clients}): in force within a second"
fi
# The forwarder's public key comes back on stdout; ours goes in on stdin.
if ! compose run --rm --no-deps -T keys bash -euc '
        [[ -s /keys/forwarder/forwarder.key ]] || {
            echo "no stack keys yet: run make up (or make keys) first" >&2; exit 1; }
        cat > "/keys/allow-clients/.$1.tmp"
        chown 10001:10001 "/keys/allow-clients/.$1.tmp"
        mv "/keys/allow-clients/.$1.tmp" "/keys/allow-clients/$1.key"
        cat /keys/forwarder/forwarder.key' bash "$name" \
        <"$dir/$name.key" >"$dir/forwarder.key.tmp"; then
    rm -f "$dir/forwarder.key.tmp"
    exit 1
fi
mv "$dir/forwarder.key.tmp" "$dir/forwarder.key"
log "$name.key is in the stack's allow-list (keys-allow-clients); the forwarder lets it in within seconds"
cat <<INFO
export ZMQFLOW_CURVE_SECRET=$dir/$name.key_secret
export ZMQFLOW_CURVE_SERVER=$dir/forwarder.key
# then, e.g.:  zmqflow status --connect tcp://127.0.0.1:${ZMQFLOW_PUBLISH_CLIENT_PORT:-5555}
INFO
