#!/usr/bin/env bash
# Build a wheelhouse on the HOST for pip installs inside `docker build`.
#
#   scripts/wheelhouse.sh OUTDIR REQUIREMENT...      e.g.
#   scripts/wheelhouse.sh .build/wheels/zmqflow 'pyzmq==27.3.0' 'hatchling==1.27.0'
#
# CONSTRAINTS=FILE pins the transitive dependencies too (pip -c). Every run
# writes OUTDIR/constraints.txt, the exact set it resolved: copy it over
# FILE to refresh the pins.
#
# Why: on machines of this project's kind, RUN steps reach Debian's mirror
# over plain http but not PyPI: HTTPS leaves through a TLS-intercepting egress
# proxy whose CA only the host trusts. Downloading on the host and installing
# in the image with `pip install --no-index --find-links` needs no network in
# the build at all, and works the same on a machine with open internet.
#
# Wheels are fetched for the IMAGE's interpreter (CPython 3.11, Linux, this
# machine's architecture), not the host's, so a host with another Python works.
# Skips the download when OUTDIR/.stamp matches the requirement list.
set -euo pipefail

OUT=$1; shift
[[ $# -gt 0 ]] || { echo "usage: $0 OUTDIR REQUIREMENT..." >&2; exit 2; }
source "$(dirname "${BASH_SOURCE[0]}")/lib/host-python.sh"
PY_VERSION=${IMAGE_PYTHON_VERSION:-3.11}
ARCH=$(uname -m)   # x86_64 | aarch64

# Requirements named on the command line win over the constraints file, so
# bumping a direct dependency never clashes with its old pin.
norm() { tr '[:upper:]_.' '[:lower:]--'; }
constraints=()
if [[ -n "${CONSTRAINTS:-}" && -f "$CONSTRAINTS" ]]; then
    direct=$(printf '%s\n' "$@" | sed -E 's/[ ;\[<>=!~].*//' | norm)
    filtered=$(mktemp); trap 'rm -f "$filtered"' EXIT
    while IFS= read -r line; do
        name=$(sed -E 's/[ ;\[<>=!~].*//' <<<"$line" | norm)
        grep -qxF -- "$name" <<<"$direct" || echo "$line"
    done < <(grep -vE '^\s*(#|$)' "$CONSTRAINTS") >"$filtered"
    constraints=(-c "$filtered")
fi
stamp=$( { printf '%s\n' "py$PY_VERSION" "$ARCH" "$@"; [[ ${#constraints[@]} -eq 0 ]] || cat "$CONSTRAINTS"; } \
    | sha256sum | cut -d' ' -f1)
if [[ -f "$OUT/.stamp" && "$(cat "$OUT/.stamp")" == "$stamp" ]]; then
    echo "[wheelhouse] $OUT is up to date ($(ls "$OUT"/*.whl | wc -l) wheels)" >&2
    exit 0
fi

rm -rf "$OUT"; mkdir -p "$OUT"
abi=cp${PY_VERSION/./}
# manylinux tags up to glibc 2.36 (bookworm); pip wants each one spelled out.
platforms=()
for t in manylinux_2_36 manylinux_2_34 manylinux_2_28 manylinux_2_17 manylinux2014 \
         manylinux_2_12 manylinux2010 manylinux_2_5 manylinux1 linux; do
    platforms+=(--platform "${t}_${ARCH}")
done
echo "[wheelhouse] downloading $# requirement(s) and their dependencies into $OUT" >&2
"$PYTHON" -m pip download --quiet --disable-pip-version-check \
    --only-binary=:all: --implementation cp --python-version "$PY_VERSION" \
    --abi "$abi" --abi abi3 --abi none "${platforms[@]}" \
    "${constraints[@]}" -d "$OUT" "$@"
# name==version of every wheel fetched (PEP 427 file names; names normalized)
for whl in "$OUT"/*.whl; do
    base=${whl##*/}
    IFS=- read -r name version _ <<<"$base"
    echo "${name//_/-}==$version" | tr '[:upper:]' '[:lower:]'
done | LC_ALL=C sort >"$OUT/constraints.txt"
echo "$stamp" >"$OUT/.stamp"
echo "[wheelhouse] $(ls "$OUT"/*.whl | wc -l) wheels in $OUT" >&2
