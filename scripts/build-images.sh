#!/usr/bin/env bash
# Build every image the stack runs, with plain `docker build` (the legacy
# builder or BuildKit, whichever the docker CLI has). Nothing is pulled:
# every Dockerfile starts FROM ${BASE_IMAGE}, chosen by bootstrap-base-image.sh
# (the public python:3.11-slim-bookworm where a registry is reachable, our own
# Debian base where not).
#
#   scripts/build-images.sh                 build what is out of date
#   scripts/build-images.sh forwarder       only some images
#   FORCE=1 scripts/build-images.sh         rebuild even when up to date
#
# An image is up to date when its label zmqflow.inputs matches the hash of
# its inputs: base image id, Dockerfile, build context files, wheelhouse.
# Image names and tag come from .env (ZMQFLOW_IMAGE_PREFIX, ZMQFLOW_IMAGE_TAG).
set -euo pipefail

cd "$(dirname "$0")/.."
source scripts/lib/host-python.sh  # (after the cd to the repository root)
log() { echo "[build-images] $*" >&2; }

# Image naming: the same variables compose.yaml uses.
if [[ -f .env ]]; then
    ZMQFLOW_IMAGE_PREFIX=${ZMQFLOW_IMAGE_PREFIX:-$(sed -n 's/^ZMQFLOW_IMAGE_PREFIX=//p' .env | tail -n1)}
    ZMQFLOW_IMAGE_TAG=${ZMQFLOW_IMAGE_TAG:-$(sed -n 's/^ZMQFLOW_IMAGE_TAG=//p' .env | tail -n1)}
fi
PREFIX=${ZMQFLOW_IMAGE_PREFIX:-zmqflow}
TAG=${ZMQFLOW_IMAGE_TAG:-dev}

# name | Dockerfile | build context | wheelhouse it needs ("-": none)
#      | files whose content makes the image (besides the Dockerfile and base)
#      | command to run before building ("-": none)
IMAGES=(
    "postgres|services/postgres/Dockerfile|services/postgres|-|services/postgres|-"
    "forwarder|services/forwarder/Dockerfile|.|zmqflow|pyproject.toml README.md src|-"
    "worker-python|services/worker-python/Dockerfile|.|zmqflow|pyproject.toml README.md src|-"
    "worker-rust|services/worker-rust/Dockerfile|.|-|services/worker-rust/Cargo.toml services/worker-rust/Cargo.lock services/worker-rust/src|bash services/worker-rust/prepare-build.sh"
    "prefect|orchestrators/prefect/Dockerfile|.|prefect|pyproject.toml README.md src orchestrators/prefect|-"
    "airflow|orchestrators/airflow/Dockerfile|.|airflow|pyproject.toml README.md src orchestrators/airflow/Dockerfile orchestrators/airflow/entrypoint.sh orchestrators/airflow/healthcheck.py orchestrators/airflow/provider orchestrators/airflow/dags|-"
)
# Images built only when named (scripts/build-images.sh NAME): stack-up.sh
# names those of the compose profiles it starts (prometheus: `monitoring`).
OPTIONAL_IMAGES=(
    "prometheus|services/prometheus/Dockerfile|services/prometheus|-|services/prometheus|-"
)

want=("$@")
for spec in "${OPTIONAL_IMAGES[@]}"; do
    for w in "${want[@]}"; do [[ $w == "${spec%%|*}" ]] && IMAGES+=("$spec"); done
done
selected() {
    [[ ${#want[@]} -eq 0 ]] && return 0
    local w; for w in "${want[@]}"; do [[ $w == "$1" ]] && return 0; done; return 1
}

t0=$(date +%s)
BASE_IMAGE=$(bash scripts/bootstrap-base-image.sh | tail -n1)
BASE_ID=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")

# --- wheelhouse for the zmqflow images (see scripts/wheelhouse.sh for why) ---
build_zmqflow_wheelhouse() {
    local out=.build/wheels/zmqflow runtime build
    runtime=$("$PYTHON" -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(d["project"]["dependencies"]))')
    build=$("$PYTHON" -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(d["build-system"]["requires"]))')
    mapfile -t reqs < <(printf '%s\n%s\n' "$build" "$runtime" | sed '/^$/d')
    # services/python-constraints.txt pins the transitive dependencies.
    CONSTRAINTS=services/python-constraints.txt bash scripts/wheelhouse.sh "$out" "${reqs[@]}"
    printf '%s\n' "$runtime" >"$out/requirements.txt"
}

# --- wheelhouse for zmqflow/prefect: Prefect 3.8 + zmqflow's own dependencies ---
build_prefect_wheelhouse() {
    local out=.build/wheels/prefect runtime build prefect
    runtime=$("$PYTHON" -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(d["project"]["dependencies"]))')
    build=$("$PYTHON" -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(d["build-system"]["requires"]))')
    prefect=$(grep -vE '^\s*(#|$)' orchestrators/prefect/requirements.txt)
    mapfile -t reqs < <(printf '%s\n%s\n%s\n' "$build" "$runtime" "$prefect" | sed '/^$/d')
    # orchestrators/prefect/constraints.txt pins the transitive dependencies.
    CONSTRAINTS=orchestrators/prefect/constraints.txt bash scripts/wheelhouse.sh "$out" "${reqs[@]}"
    printf '%s\n%s\n' "$prefect" "$runtime" >"$out/requirements.txt"
}

# --- wheelhouse for zmqflow/airflow: Airflow 3.3 + providers + zmqflow's own dependencies ---
build_airflow_wheelhouse() {
    local out=.build/wheels/airflow runtime build airflow
    runtime=$("$PYTHON" -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(d["project"]["dependencies"]))')
    build=$("$PYTHON" -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(d["build-system"]["requires"]))')
    airflow=$(grep -vE '^\s*(#|$)' orchestrators/airflow/requirements.in)
    mapfile -t reqs < <(printf '%s\n%s\n%s\n' "$build" "$runtime" "$airflow" | sed '/^$/d')
    # orchestrators/airflow/constraints.txt pins the transitive dependencies.
    CONSTRAINTS=orchestrators/airflow/constraints.txt bash scripts/wheelhouse.sh "$out" "${reqs[@]}"
    printf '%s\n%s\n' "$airflow" "$runtime" >"$out/requirements.txt"
}

# Hash of everything that goes into an image.
inputs_hash() { # dockerfile wheelhouse inputs...
    local dockerfile=$1 wheels=$2; shift 2
    {
        echo "base $BASE_ID"
        sha256sum "$dockerfile"
        find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*/target/*' 2>/dev/null \
            | LC_ALL=C sort | xargs -r sha256sum
        [[ $wheels == - ]] || cat ".build/wheels/$wheels/.stamp" ".build/wheels/$wheels/requirements.txt"
    } | sha256sum | cut -d' ' -f1
}

# Each wheelhouse NAME named in IMAGES is made by a function build_NAME_wheelhouse,
# once, before the first image that needs it.
built_wheels=" "
for spec in "${IMAGES[@]}"; do
    IFS='|' read -r name _ _ wheels _ <<<"$spec"
    selected "$name" && [[ $wheels != - && $built_wheels != *" $wheels "* ]] || continue
    "build_${wheels}_wheelhouse"
    built_wheels+="$wheels "
done

timings=()
for spec in "${IMAGES[@]}"; do
    IFS='|' read -r name dockerfile context wheels inputs prepare <<<"$spec"
    selected "$name" || continue
    image="$PREFIX/$name:$TAG"
    if [[ $prepare != - ]]; then
        log "$name: $prepare"
        bash -c "$prepare" >&2
    fi
    # shellcheck disable=SC2086  # inputs is a list of paths
    hash=$(inputs_hash "$dockerfile" "$wheels" $inputs)
    have=$(docker image inspect -f '{{index .Config.Labels "zmqflow.inputs"}}' "$image" 2>/dev/null || true)
    if [[ "${FORCE:-0}" != 1 && "$have" == "$hash" ]]; then
        log "$image is up to date"
        continue
    fi
    log "building $image from $dockerfile (BASE_IMAGE=$BASE_IMAGE)"
    s=$(date +%s)
    # shellcheck disable=SC2086
    docker build ${DOCKER_BUILD_ARGS:-} \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --label "zmqflow.inputs=$hash" \
        --label "zmqflow.base-image=$BASE_IMAGE" \
        -f "$dockerfile" -t "$image" "$context" 2>&1 \
        | grep -v -e '^DEPRECATED: The legacy builder' -e 'Install the buildx component' \
                  -e 'https://docs.docker.com/go/buildx/' -e '^ *$' >&2 || true
    # the pipe above hides docker's exit status: check the result instead
    now=$(docker image inspect -f '{{index .Config.Labels "zmqflow.inputs"}}' "$image" 2>/dev/null || true)
    [[ "$now" == "$hash" ]] || { log "FAILED: $image"; exit 1; }
    timings+=("$image $(( $(date +%s) - s ))s")
done

# Smoke test: the CLI runs in the zmqflow images.
for spec in "${IMAGES[@]}"; do
    IFS='|' read -r name _ _ wheels _ <<<"$spec"
    selected "$name" && [[ $wheels == zmqflow ]] || continue
    if ! docker run --rm --network none "$PREFIX/$name:$TAG" zmqflow --help >/dev/null 2>&1; then
        log "FAILED: 'zmqflow --help' does not run in $PREFIX/$name:$TAG"
        exit 1
    fi
done

for t in "${timings[@]}"; do log "built $t"; done
log "done in $(( $(date +%s) - t0 ))s (base: $BASE_IMAGE)"
