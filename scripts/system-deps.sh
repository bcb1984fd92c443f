#!/usr/bin/env bash
# Contract: the system packages `make venv`, `make test` and `make bench-core`
# need are present after this script, or it exits 1 saying which are missing
# and how to get them. Debian packages: libzmq3-dev and pkg-config (the Rust
# worker's zmq-sys links libzmq through pkg-config), a C toolchain (cargo's
# linker), python3-venv (ensurepip for `python -m venv`). Installs with apt-get
# as root (or through passwordless sudo); never asks for a password. Cargo is
# not a Debian package we can rely on (bookworm's is too old): when missing,
# the message points at rustup. With NEED_BROWSER=1 (the integration tests'
# browser test): Debian's chromium and chromium-driver (/usr/bin/chromedriver)
# too; `make lint` and `make venv` never ask for them.
set -euo pipefail

PYTHON=${PYTHON:-python3.11}
missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists libzmq 2>/dev/null || missing+=(libzmq3-dev)
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v "$PYTHON" >/dev/null 2>&1 || missing+=("$(basename "$PYTHON")")
"$PYTHON" -c 'import ensurepip' >/dev/null 2>&1 || missing+=("$(basename "$PYTHON")-venv")
if [[ ${NEED_BROWSER:-0} == 1 ]]; then
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    [[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
fi

if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        echo "system-deps: missing Debian packages: ${missing[*]}" >&2
        echo "system-deps: install them as root, then run make again:" >&2
        echo "    apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
    echo "system-deps: installing ${missing[*]} (apt-get)" >&2
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
    pkg-config --exists libzmq || {
        echo "system-deps: libzmq still not found by pkg-config after installing" >&2
        exit 1
    }
fi

if [[ ${NEED_CARGO:-0} == 1 ]] && ! command -v cargo >/dev/null 2>&1 \
    && [[ ! -x $HOME/.cargo/bin/cargo ]]; then
    echo "system-deps: cargo is missing (the Rust worker needs it):" >&2
    echo "    curl https://sh.rustup.rs -sSf | sh -s -- -y --profile minimal" >&2
    exit 1
fi
