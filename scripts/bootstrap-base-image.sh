#!/usr/bin/env bash
# Choose the base image every Dockerfile starts FROM (ARG BASE_IMAGE).
#
#   1. ${BASE_IMAGE} (default python:3.11-slim-bookworm) if it is already
#      local or can be pulled (short timeout): what a user with Docker Hub gets.
#   2. Otherwise a Debian bookworm base built here with mmdebstrap (or
#      debootstrap) from the machine's own Debian mirror and `docker import`ed
#      as zmqflow/base:bookworm. No registry is needed at any point.
#
# Idempotent: an existing zmqflow/base:bookworm is reused.
# The chosen image is written to .build/base-image and echoed as the LAST
# line of output, so other scripts can do: BASE_IMAGE=$(... | tail -n1).
#
# Environment:
#   BASE_IMAGE       public image to try first   (python:3.11-slim-bookworm)
#   LOCAL_BASE       tag of the locally built base (zmqflow/base:bookworm)
#   FORCE_LOCAL_BASE=1  skip the public image, always use/build the local one
#   REBUILD_BASE=1   rebuild the local base even if it exists
#   RECHOOSE_BASE=1  ignore the choice remembered in .build/base-image
#   PULL_TIMEOUT     seconds to wait for `docker pull` (20)
#   DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR  override the mirrors read from /etc/apt
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm}
LOCAL_BASE=${LOCAL_BASE:-zmqflow/base:bookworm}
PULL_TIMEOUT=${PULL_TIMEOUT:-20}
SUITE=bookworm
# What the images need from the base: a python3 that can make a venv, and CA
# certificates. Everything else comes in the service Dockerfiles.
INCLUDE=ca-certificates,python3,python3-venv,tzdata

log() { echo "[bootstrap-base] $*" >&2; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

choose() {
    mkdir -p "$ROOT/.build"
    echo "$1" >"$ROOT/.build/base-image"
    log "base image: $1"
    echo "$1"
}

# --- 0. the choice made last time, if its image is still here ---------------
# (saves the pull attempt, which can hang for PULL_TIMEOUT seconds offline)
if [[ -f "$ROOT/.build/base-image" && "${RECHOOSE_BASE:-0}" != 1 && "${REBUILD_BASE:-0}" != 1 ]]; then
    previous=$(cat "$ROOT/.build/base-image")
    if [[ -n "$previous" ]] && image_exists "$previous" \
        && { [[ "${FORCE_LOCAL_BASE:-0}" != 1 ]] || [[ "$previous" == "$LOCAL_BASE" ]]; }; then
        log "reusing the previous choice (RECHOOSE_BASE=1 to choose again)"
        choose "$previous"
        exit 0
    fi
fi

# --- 1. the public image -----------------------------------------------------
if [[ "${FORCE_LOCAL_BASE:-0}" != 1 ]]; then
    if image_exists "$BASE_IMAGE"; then
        log "$BASE_IMAGE is present locally"
        choose "$BASE_IMAGE"
        exit 0
    fi
    log "trying: docker pull $BASE_IMAGE (timeout ${PULL_TIMEOUT}s)"
    if timeout "$PULL_TIMEOUT" docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
        log "pulled $BASE_IMAGE"
        choose "$BASE_IMAGE"
        exit 0
    fi
    log "cannot pull $BASE_IMAGE (no registry reachable): using a local Debian base"
fi

# --- 2. the local base ---------------------------------------------------------
if image_exists "$LOCAL_BASE" && [[ "${REBUILD_BASE:-0}" != 1 ]]; then
    log "$LOCAL_BASE already exists (REBUILD_BASE=1 to rebuild)"
    choose "$LOCAL_BASE"
    exit 0
fi

# The mirrors this machine's apt already uses (deb822 .sources or one-line .list).
find_mirror() { # $1: suite to look for (bookworm | bookworm-security)
    local suite=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -e $f ]] || continue
        awk -v suite="$suite" '
            BEGIN { RS = ""; FS = "\n" }          # one paragraph per stanza
            {
                uris = ""; ok = 0; en = 1
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/)     { sub(/^URIs:[ \t]*/, "", $i); uris = $i }
                    if ($i ~ /^Suites:/)   { n = split(substr($i, 8), s, /[ \t]+/)
                                             for (j = 1; j <= n; j++) if (s[j] == suite) ok = 1 }
                    if ($i ~ /^Enabled:[ \t]*no/) en = 0
                }
                if (ok && en && uris != "") { split(uris, u, /[ \t]+/); print u[1]; exit }
            }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -e $f ]] || continue
        awk -v suite="$suite" '$1 == "deb" {
            i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) { print $i; exit } }' "$f"
    done
}
MIRROR=${DEBIAN_MIRROR:-$(find_mirror "$SUITE" | head -n1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-$(find_mirror "$SUITE-security" | head -n1)}
SECURITY=${SECURITY:-http://deb.debian.org/debian-security}
log "Debian mirror: $MIRROR  security: $SECURITY"

need() { # install a tool from Debian if it is missing
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $1 from Debian"
    if [[ $(id -u) -ne 0 ]]; then
        log "need root (or sudo) to apt-get install $1"; exit 1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/zmqflow-base.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
TARBALL=$WORK/rootfs.tar
SOURCES="deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main"
start=$(date +%s)

if [[ "${BOOTSTRAP_TOOL:-mmdebstrap}" == mmdebstrap ]] && need mmdebstrap; then
    log "mmdebstrap --variant=minbase $SUITE (about a minute)"
    # All three suites at once: the base gets current security fixes.
    # --aptopt/--dpkgopt persist in the image (no recommends, no docs/man).
    mmdebstrap --mode=root --variant=minbase --format=tar \
        --include="$INCLUDE" \
        --aptopt='APT::Install-Recommends "false"' \
        --aptopt='APT::Install-Suggests "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --skip=output/dev \
        --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/cache/apt/archives/*.deb' \
        --customize-hook='rm -rf "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/tmp/*' \
        "$SUITE" "$TARBALL" - <<<"$SOURCES" >&2
else
    need debootstrap
    log "debootstrap --variant=minbase $SUITE (about 1.5 minutes)"
    ROOTFS=$WORK/rootfs
    debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOTFS" "$MIRROR" >&2
    printf '%s\n' "$SOURCES" >"$ROOTFS/etc/apt/sources.list"
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
        >"$ROOTFS/etc/apt/apt.conf.d/99zmqflow"
    rm -f "$ROOTFS/etc/resolv.conf" "$ROOTFS/etc/hostname"
    rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
        "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/log/apt/* \
        "$ROOTFS"/var/log/dpkg.log "$ROOTFS"/tmp/*
    tar --numeric-owner -C "$ROOTFS" --exclude='./dev/*' --exclude='./proc/*' \
        --exclude='./sys/*' -cf "$TARBALL" .
fi
log "rootfs tarball: $(du -h "$TARBALL" | cut -f1) in $(( $(date +%s) - start ))s"

docker import \
    -c 'ENV LANG=C.UTF-8' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["bash"]' \
    -m "Debian $SUITE minbase + python3 (zmqflow scripts/bootstrap-base-image.sh)" \
    "$TARBALL" "$LOCAL_BASE" >/dev/null
log "imported $LOCAL_BASE ($(docker image inspect -f '{{.Size}}' "$LOCAL_BASE" | awk '{printf "%.0f MB", $1/1e6}')) in $(( $(date +%s) - start ))s total"
choose "$LOCAL_BASE"
