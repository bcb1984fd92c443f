#!/usr/bin/env bash
# A new key pair for the running stack's forwarder, taken by every service.
#
#   scripts/rotate-forwarder-key.sh [DIR]        (make rotate-forwarder-key [DIR=...])
#
# 1. in the `keys` one-shot (it mounts every key volume): the forwarder's
#    pair is kept as forwarder.key.old and forwarder.key_secret.old (0600),
#    a new pair is generated beside it and renamed into place, and the new
#    public key is copied into every role volume that held the old one
#    (/keys/<role>/forwarder.key: workers, events-log, airflow, prefect and
#    any role added later); the one-shot does the same on every later start;
# 2. the forwarder is restarted and waited for (healthy): it answers with the
#    new key from then on. Its journal holds every accepted task, so a
#    restart loses none: clients send again what was not ACCEPTED and
#    COLLECT what was, workers re-announce (docs/protocol.md);
# 3. every other running service that mounts a key volume is restarted (its
#    zmqflow peers read the forwarder's public key when they start). Workers
#    drain on SIGTERM within their stop_grace_period; what they still held is
#    requeued by the forwarder. Between steps 2 and 3 the old peers' handshakes
#    fail (a wrong server key) and they keep retrying: tasks wait, none is lost;
# 4. DIR/forwarder.key (default ~/.config/zmqflow/keys, where make client-key
#    puts it) gets the new public key, so host programs reconnect with it;
#    for keys kept elsewhere it prints what to copy.
#
# Roll back: run it again with ROLLBACK=1: the .old pair goes back in place.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-${HOME}/.config/zmqflow/keys}
log() { echo "[rotate-forwarder-key] $*" >&2; }
compose() { bash scripts/compose.sh "$@"; }
python=${VENV:-.venv}/bin/python
[[ -x $python ]] || python=python3

running=$(compose ps --services --status running)
grep -qx forwarder <<<"$running" || { log "the forwarder is not running: make up first"; exit 1; }

# 1. the new pair, and its public key in every role volume; the new public key on stdout
new_key=$(compose run --rm --no-deps -T -e ROLLBACK="${ROLLBACK:-}" keys bash -euc '
    cd /keys/forwarder
    [[ -s forwarder.key_secret ]] || { echo "no forwarder key yet: make up first" >&2; exit 1; }
    if [[ -n $ROLLBACK ]]; then
        [[ -s forwarder.key_secret.old ]] || { echo "no .old pair to roll back to" >&2; exit 1; }
        mv forwarder.key_secret.old forwarder.key_secret.new
        mv forwarder.key.old forwarder.key.new
    else
        rm -rf .new && mkdir .new
        zmqflow keys generate .new forwarder >/dev/null
        mv .new/forwarder.key_secret forwarder.key_secret.new
        mv .new/forwarder.key forwarder.key.new
        rmdir .new
    fi
    cp -p forwarder.key_secret forwarder.key_secret.old
    cp -p forwarder.key forwarder.key.old
    mv forwarder.key_secret.new forwarder.key_secret
    mv forwarder.key.new forwarder.key
    for role in /keys/*/; do
        [[ $role == /keys/forwarder/ || ! -e $role/forwarder.key ]] && continue
        cp forwarder.key "$role/.forwarder.key.tmp" && mv "$role/.forwarder.key.tmp" "$role/forwarder.key"
    done
    chown -R 10001:10001 /keys
    chmod 0600 forwarder.key_secret forwarder.key_secret.old
    sed -n "s/^ *public-key = \"\(.*\)\"/\1/p" forwarder.key')
log "the forwarder's public key is now $new_key${ROLLBACK:+ (rolled back)}"

# 2. the forwarder, with its journal, on the new key
compose restart forwarder >&2
compose up -d --no-recreate --wait forwarder >&2
log "the forwarder is healthy with the new key"

# 3. every other running service that mounts a key volume
peers=$(compose config --format json | "$python" -c '
import json, sys
running = set(sys.argv[1].split())
for name, service in json.load(sys.stdin)["services"].items():
    uses_keys = any(
        isinstance(v, dict) and str(v.get("source", "")).startswith("keys-")
        for v in service.get("volumes", [])
    )
    if uses_keys and name in running and name not in ("forwarder", "keys"):
        print(name)' "$running")
if [[ -n $peers ]]; then
    log "restarting: $(tr '\n' ' ' <<<"$peers")"
    # shellcheck disable=SC2086  # one word per service
    compose restart $peers >&2
    compose up -d --no-recreate --wait $peers >&2
fi

# 4. host programs
if [[ -d $dir ]]; then
    compose run --rm --no-deps -T keys cat /keys/forwarder/forwarder.key >"$dir/forwarder.key.tmp"
    mv "$dir/forwarder.key.tmp" "$dir/forwarder.key"
    log "$dir/forwarder.key holds the new public key (restart host programs that hold the old one)"
fi
log "done. Keys kept elsewhere: copy the new forwarder.key (public key $new_key) there"
