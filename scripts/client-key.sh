#!/usr/bin/env bash
# A CURVE client key for a program on the host, let into the running stack.
#
#   scripts/client-key.sh NAME [DIR]        (make client-key NAME=myapp [DIR=...])
#
# 1. makes DIR/NAME.key and DIR/NAME.key_secret with `zmqflow keys generate`
#    (once: an existing pair is kept), DIR defaulting to ~/.config/zmqflow/keys;
# 2. copies NAME.key into the stack's allow-list volume keys-allow-clients
#    (through the `keys` one-shot's image; renamed into place so the
#    forwarder's folder watch reads a whole file): the forwarder lets the key
#    in within seconds, nothing restarts;
# 3. copies the forwarder's public key to DIR/forwarder.key;
# then prints the two variables a program (zmqflow CLI, Client, AsyncClient)
# needs. The secret key never leaves DIR. Remove a client again with
# scripts/compose.sh run --rm --no-deps keys rm /keys/allow-clients/NAME.key
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/client-key.sh NAME [DIR]}
dir=${2:-${HOME}/.config/zmqflow/keys}
log() { echo "[client-key] $*" >&2; }

zmqflow=${VENV:-.venv}/bin/zmqflow
[[ -x $zmqflow ]] || zmqflow=zmqflow
if [[ -s $dir/$name.key_secret ]]; then
    log "keeping the existing key pair $dir/$name.key_secret"
else
    "$zmqflow" keys generate "$dir" "$name" >&2
fi

compose() { bash scripts/compose.sh "$@"; }
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
