#!/usr/bin/env bash
# Build every image the stack runs, with plain `docker build` (the legacy
# builder or BuildKit, whichever the docker CLI has). Nothing is pulled:
# every Dockerfile starts FROM ${BASE_IMAGE}, chosen by bootstrap-base-image.sh
# (the public python:3.11-slim-bookworm where a registry is reachable, our own
# Debian base where not).
#
#   scripts/build-images.sh                 build what is out of date
#   scripts/build-images.sh forwarder       only some images
#   scripts/build-images.sh --with prometheus   every image, and optional ones
#   FORCE=1 scripts/build-images.sh         rebuild even when up to date
#   BUILD_JOBS=N                            images built at once (default 2)
#   BUILD_LOG=FILE, VERBOSE=1               see scripts/lib/build-log.sh
#
# The terminal gets one line per step (base image, wheelhouse, image) with its
# time; the full output of every step goes to the log file named on the first
# line (.build/logs/build-<time>.log; .build/logs/latest.log: the last one).
#
# Order: the base image and the wheelhouses at once (the base is mostly dpkg
# work, the wheelhouses downloads), then the images BUILD_JOBS at a time in
# the order of IMAGES. What an image needs is read from its Dockerfile: the
# paths it COPYs are its build context (a tar of exactly those files, not the
# repository root with its venvs and every wheelhouse) and the inputs of its
# hash; a COPY of .build/wheels/NAME means it needs the wheelhouse NAME.
#
# An image is up to date when its label zmqflow.inputs matches the hash of
# its inputs: base image id, Dockerfile, the files it COPYs, wheelhouse stamp.
# Image names and tag come from .env (ZMQFLOW_IMAGE_PREFIX, ZMQFLOW_IMAGE_TAG).
set -euo pipefail

cd "$(dirname "$0")/.."
source scripts/lib/host-python.sh # (after the cd to the repository root)
source scripts/lib/build-log.sh
note() { say "[build-images] $*"; }

# Image naming: the same variables compose.yaml uses.
if [[ -f .env ]]; then
    ZMQFLOW_IMAGE_PREFIX=${ZMQFLOW_IMAGE_PREFIX:-$(sed -n 's/^ZMQFLOW_IMAGE_PREFIX=//p' .env | tail -n1)}
    ZMQFLOW_IMAGE_TAG=${ZMQFLOW_IMAGE_TAG:-$(sed -n 's/^ZMQFLOW_IMAGE_TAG=//p' .env | tail -n1)}
fi
PREFIX=${ZMQFLOW_IMAGE_PREFIX:-zmqflow}
TAG=${ZMQFLOW_IMAGE_TAG:-dev}
JOBS=${BUILD_JOBS:-2}
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || { echo "BUILD_JOBS must be a whole number >= 1, not '$JOBS'" >&2; exit 2; }

# name | Dockerfile | build context
#      | image this one waits for, to reuse its layers ("-": none)
#      | command to run before building ("-": none)
#      | paths that command makes: sent, not hashed (they follow from hashed files)
# Builds start in this order, the longest first (from nothing, on 2 busy
# cores: worker-rust 900 s, prefect 610 s, airflow 150 s, the others ~100 s),
# so that the short ones fill in beside them.
IMAGES=(
    "worker-rust|services/worker-rust/Dockerfile|.|-|bash services/worker-rust/prepare-build.sh|services/worker-rust/deps"
    "prefect|orchestrators/prefect/Dockerfile|.|-|-|-"
    "airflow|orchestrators/airflow/Dockerfile|.|-|-|-"
    "postgres|services/postgres/Dockerfile|services/postgres|-|-|-"
    "forwarder|services/forwarder/Dockerfile|.|-|-|-"
    "worker-python|services/worker-python/Dockerfile|.|forwarder|-|-"
)
# Images built only when named (scripts/build-images.sh NAME): stack-up.sh
# names those of the compose profiles it starts (prometheus: `monitoring`).
OPTIONAL_IMAGES=(
    "prometheus|services/prometheus/Dockerfile|services/prometheus|-|-|-"
)
# Host-built wheelhouses (scripts/wheelhouse.sh says why). Each holds zmqflow's
# own dependencies and build backend (pyproject.toml), and:
# name | constraints: pins of the transitive dependencies | more requirements ("-": none)
WHEELHOUSES=(
    "zmqflow|services/python-constraints.txt|-"
    "prefect|orchestrators/prefect/constraints.txt|orchestrators/prefect/requirements.txt"
    "airflow|orchestrators/airflow/constraints.txt|orchestrators/airflow/requirements.in"
)
# Never in a build context or a hash (as in .dockerignore).
EXCLUDES=(__pycache__ '*.pyc' target .pytest_cache .ruff_cache)

want=() # the images named; none: every image of IMAGES
with=()
while (($#)); do
    case $1 in
        --with) with+=("${2:?--with needs an image name}"); shift 2 ;;
        *) want+=("$1"); shift ;;
    esac
done
if ((${#with[@]})); then
    ((${#want[@]})) || mapfile -t want < <(printf '%s\n' "${IMAGES[@]}" | cut -d'|' -f1)
    want+=("${with[@]}")
fi
for spec in "${OPTIONAL_IMAGES[@]}"; do
    for w in "${want[@]}"; do [[ $w == "${spec%%|*}" ]] && IMAGES+=("$spec"); done
done
declare -A SPEC=()
ORDER=()
for spec in "${IMAGES[@]}"; do
    SPEC[${spec%%|*}]=$spec
    ORDER+=("${spec%%|*}")
done
for w in "${want[@]}"; do
    [[ -n ${SPEC[$w]:-} ]] || { note "no image called '$w' (images: ${ORDER[*]})"; exit 2; }
done
selected() {
    [[ ${#want[@]} -eq 0 ]] && return 0
    local w
    for w in "${want[@]}"; do [[ $w == "$1" ]] && return 0; done
    return 1
}
field() { # NAME INDEX: a field of the image's line in IMAGES (0: its name)
    local -a f
    IFS='|' read -r -a f <<<"${SPEC[$1]}"
    echo "${f[$2]}"
}

# --- what a Dockerfile needs ---------------------------------------------------
dockerfile_sources() { # DOCKERFILE: the sources its COPY/ADD lines name (not --from)
    awk '
        /^[ \t]*#/ { next }
        { line = line " " $0 }
        /\\[ \t]*$/ { sub(/\\[ \t]*$/, "", line); next }
        {
            n = split(line, w, /[ \t]+/); i = 1
            while (i <= n && w[i] == "") i++
            if (toupper(w[i]) == "COPY" || toupper(w[i]) == "ADD") {
                args = 0; from = 0
                for (j = i + 1; j <= n; j++) {
                    if (w[j] ~ /^--from=/) from = 1
                    else if (w[j] ~ /^--/) continue
                    else if (w[j] != "") a[++args] = w[j]
                }
                if (a[1] ~ /^\[/) { print FILENAME ": JSON-form COPY/ADD is not supported" > "/dev/stderr"; exit 1 }
                if (!from) for (k = 1; k < args; k++) print a[k]
            }
            line = ""
        }' "$1"
}

context_paths() { # NAME: what its Dockerfile COPYs, relative to its context (globs expanded)
    local dockerfile context src
    dockerfile=$(field "$1" 1)
    context=$(field "$1" 2)
    while IFS= read -r src; do
        src=${src#./}
        src=${src%/}
        (
            cd "$context"
            shopt -s nullglob
            # shellcheck disable=SC2206  # the glob is meant to expand
            matches=($src)
            if ((${#matches[@]})); then printf '%s\n' "${matches[@]}"; else echo "$src"; fi
        )
    done < <(dockerfile_sources "$dockerfile") | LC_ALL=C sort -u
}

wheelhouses_of() { # NAME: the wheelhouses its Dockerfile COPYs
    local context
    context=$(field "$1" 2)
    context_paths "$1" | while IFS= read -r p; do realpath -m --relative-to=. "$context/$p"; done \
        | sed -n 's|^\.build/wheels/\([^/]*\).*|\1|p' | sort -u
}

# --- wheelhouses ---------------------------------------------------------------
project_list() { # KEY (dotted): a list in pyproject.toml, one item a line
    "$PYTHON" -c 'import sys, tomllib
d = tomllib.load(open("pyproject.toml", "rb"))
for key in sys.argv[1].split("."):
    d = d[key]
print("\n".join(d))' "$1"
}

build_wheelhouse() { # NAME: .build/wheels/NAME, with its requirements.txt
    local name=$1 spec constraints more out runtime build extra s=$SECONDS
    spec=$(printf '%s\n' "${WHEELHOUSES[@]}" | grep "^$name|") \
        || { note "no wheelhouse called $name (see WHEELHOUSES)"; return 1; }
    IFS='|' read -r _ constraints more <<<"$spec"
    out=.build/wheels/$name
    runtime=$(project_list project.dependencies)
    build=$(project_list build-system.requires)
    extra=
    [[ $more == - ]] || extra=$(grep -vE '^\s*(#|$)' "$more")
    mapfile -t reqs < <(printf '%s\n%s\n%s\n' "$build" "$runtime" "$extra" | sed '/^$/d')
    if ! CONSTRAINTS=$constraints run_logged "wheelhouse $name" bash scripts/wheelhouse.sh "$out" "${reqs[@]}"; then
        note "FAILED: wheelhouse $out; its last lines:"
        log_tail "wheelhouse $name"
        return 1
    fi
    # What the image installs (the build backend only builds zmqflow itself).
    printf '%s\n%s\n' "$extra" "$runtime" | sed '/^$/d' >"$out/requirements.txt"
    if grep -F "[wheelhouse $name] " "$BUILD_LOG" | tail -n1 | grep -q 'up to date'; then
        note "$(printf '%-34s up to date' "wheelhouse $out")"
    else
        note "$(printf '%-34s %4d s  (%d wheels)' "wheelhouse $out" $((SECONDS - s)) "$(ls "$out"/*.whl | wc -l)")"
    fi
}

# --- images ----------------------------------------------------------------------
exclude_find=()
tar_excludes=()
for x in "${EXCLUDES[@]}"; do
    exclude_find+=(! -path "*/$x/*" ! -name "$x")
    tar_excludes+=("--exclude=$x")
done

inputs_hash() { # NAME: hash of everything that goes into the image
    local name=$1 dockerfile context derived p path
    dockerfile=$(field "$name" 1)
    context=$(field "$name" 2)
    derived=" $(field "$name" 5) "
    {
        echo "base $BASE_ID"
        sha256sum "$dockerfile"
        while IFS= read -r p; do
            path=$(realpath -m --relative-to=. "$context/$p")
            if [[ $path == .build/wheels/* ]]; then
                # the stamp stands for the wheels: it hashes what they were made from
                cat "$path/.stamp" "$path/requirements.txt"
            elif [[ $derived != *" $path "* ]]; then
                find "$path" -type f "${exclude_find[@]}" 2>/dev/null | LC_ALL=C sort | xargs -r sha256sum
            fi
        done < <(context_paths "$name")
    } | sha256sum | cut -d' ' -f1
}

docker_build() { # NAME HASH: the image from a tar of its Dockerfile and what that COPYs
    local name=$1 hash=$2 dockerfile context rel
    dockerfile=$(field "$name" 1)
    context=$(field "$name" 2)
    rel=$(realpath -m --relative-to="$context" "$dockerfile")
    [[ $rel != ../* ]] || { echo "$dockerfile is outside its context $context" >&2; return 1; }
    mapfile -t paths < <(context_paths "$name")
    # shellcheck disable=SC2086  # DOCKER_BUILD_ARGS is a list of arguments
    tar -C "$context" "${tar_excludes[@]}" --ignore-failed-read -cf - "$rel" "${paths[@]}" \
        | docker build ${DOCKER_BUILD_ARGS:-} \
            --build-arg "BASE_IMAGE=$BASE_IMAGE" \
            --label "zmqflow.inputs=$hash" \
            --label "zmqflow.base-image=$BASE_IMAGE" \
            -f "$rel" -t "$PREFIX/$name:$TAG" -
}

build_image() { # NAME HASH: prepare, build, check; one line when done
    local name=$1 hash=$2 prepare image s=$SECONDS why=
    prepare=$(field "$name" 4)
    image="$PREFIX/$name:$TAG"
    if [[ $prepare != - ]] && ! run_logged "$name" bash -c "$prepare"; then
        why=$prepare
    elif ! run_logged "$name" docker_build "$name" "$hash"; then
        why="docker build"
    elif [[ $(wheelhouses_of "$name") == *zmqflow* ]] \
        && ! run_logged "$name" docker run --rm --network none "$image" zmqflow --help; then
        why="'zmqflow --help' does not run in it"
    fi
    if [[ -n $why ]]; then
        note "FAILED: $image after $((SECONDS - s)) s ($why); its last lines:"
        log_tail "$name"
        return 1
    fi
    note "$(printf '%-34s %4d s' "$image" $((SECONDS - s)))"
}

# --- 1. the base image and the wheelhouses, at once ----------------------------
t0=$SECONDS
# Interrupted: stop the builds running in the background too.
trap 'trap - INT TERM; kill $(jobs -p) 2>/dev/null; note "interrupted; full output: $(build_log_name)"; exit 130' INT TERM
note "full output: $(build_log_name)"
declare -A prep=() # pid -> what
bootstrap() {
    local s=$SECONDS
    run_logged base bash scripts/bootstrap-base-image.sh || {
        note "FAILED: base image; its last lines:"
        log_tail base
        return 1
    }
    if grep -F "[base] " "$BUILD_LOG" | grep -qE '\] (imported|pulled) '; then
        note "$(printf '%-34s %4d s' "base $(cat .build/base-image)" $((SECONDS - s)))"
    else
        note "$(printf '%-34s present' "base $(cat .build/base-image)")"
    fi
}
bootstrap &
prep[$!]=base
# One after the other: each download resolves with pip, which is CPU work.
mapfile -t needed < <(for name in "${ORDER[@]}"; do selected "$name" && wheelhouses_of "$name"; done | sort -u)
wheelhouses() {
    local wh
    for wh in "$@"; do build_wheelhouse "$wh" || return 1; done
}
wheelhouses "${needed[@]}" &
prep[$!]=wheelhouses
failed=0
for pid in "${!prep[@]}"; do wait "$pid" || failed=1; done
((failed == 0)) || { note "full output: $(build_log_name)"; exit 1; }
BASE_IMAGE=$(cat .build/base-image)
BASE_ID=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")

# --- 2. the images that are out of date, JOBS at a time -------------------------
queue=()
declare -A HASH=()
for name in "${ORDER[@]}"; do
    selected "$name" || continue
    HASH[$name]=$(inputs_hash "$name")
    have=$(docker image inspect -f '{{index .Config.Labels "zmqflow.inputs"}}' "$PREFIX/$name:$TAG" 2>/dev/null || true)
    if [[ ${FORCE:-0} != 1 && $have == "${HASH[$name]}" ]]; then
        note "$(printf '%-34s up to date' "$PREFIX/$name:$TAG")"
    else
        queue+=("$name")
    fi
done
((${#queue[@]} == 0)) || note "building ${queue[*]} ($JOBS at a time)"

declare -A running=() # pid -> image name
failed=0
waiting_for() { # NAME: true while the image it reuses layers of is still to be built
    local after
    after=$(field "$1" 3)
    [[ $after != - ]] || return 1
    [[ " ${queue[*]} ${running[*]} " == *" $after "* ]]
}
while ((${#queue[@]} + ${#running[@]})); do
    rest=()
    for name in "${queue[@]}"; do
        if ((failed == 0 && ${#running[@]} < JOBS)) && ! waiting_for "$name"; then
            build_image "$name" "${HASH[$name]}" &
            running[$!]=$name
        elif ((failed == 0)); then
            rest+=("$name")
        fi
    done
    queue=("${rest[@]}")
    ((${#running[@]})) || break
    pid=
    wait -n -p pid "${!running[@]}" || failed=1
    unset "running[$pid]"
done

((failed == 0)) || { note "full output: $(build_log_name)"; exit 1; }
note "done in $((SECONDS - t0)) s; full output: $(build_log_name)"
