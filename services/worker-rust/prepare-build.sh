#!/usr/bin/env bash
# Vendor the crates of Cargo.lock into deps/vendor for an offline image build
# (see deps/README.md). Idempotent; run before `docker build` of this image.
set -euo pipefail
cd "$(dirname "$0")"
cargo vendor --quiet --locked --versioned-dirs deps/vendor >/dev/null
echo "[worker-rust] crates vendored into $(pwd)/deps/vendor ($(ls deps/vendor | wc -l) crates)" >&2
