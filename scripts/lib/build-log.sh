# Sourced by the build scripts (build-images.sh, stack-up.sh): the full output
# of every build step goes to ONE log file, and the terminal gets one line per
# step. Source it after the cd to the repository root.
#
#   BUILD_LOG=FILE   the log to append to; a caller that sets it (stack-up.sh)
#                    shares one log with the scripts it runs. Default: a new
#                    .build/logs/<BUILD_LOG_NAME, or build>-<UTC time>.log, and
#                    .build/logs/latest.log pointing at it.
#   VERBOSE=1        the full output on the terminal too.
#
# Functions: say LINE (terminal and log), run_logged TAG CMD... (CMD's output
# into the log, each line prefixed "[TAG] "), log_tail TAG (the last lines
# TAG wrote, for a failure message).

if [[ -z ${BUILD_LOG:-} ]]; then
    mkdir -p .build/logs
    BUILD_LOG=.build/logs/${BUILD_LOG_NAME:-build}-$(date -u +%Y%m%d-%H%M%S).log
    ln -sfn "${BUILD_LOG##*/}" .build/logs/latest.log
fi
mkdir -p "$(dirname "$BUILD_LOG")"
BUILD_LOG=$(realpath -m "$BUILD_LOG") # absolute: the scripts change directory
touch "$BUILD_LOG"
export BUILD_LOG

# The log as a path to print: relative to the current directory when inside it.
build_log_name() { realpath -m --relative-base="$PWD" "$BUILD_LOG"; }

say() { # LINE: to the terminal (stderr) and, time-stamped, to the log
    echo "$*" >&2
    echo "$(date -u +%H:%M:%S) $*" >>"$BUILD_LOG"
}

run_logged() { # TAG CMD...: CMD's stdout and stderr into the log; CMD's exit status
    local tag=$1 rc=0
    shift
    if [[ ${VERBOSE:-0} == 1 ]]; then
        "$@" 2>&1 | sed -u "s|^|[$tag] |" | tee -a "$BUILD_LOG" >&2 || rc=${PIPESTATUS[0]}
    else
        "$@" 2>&1 | sed -u "s|^|[$tag] |" >>"$BUILD_LOG" || rc=${PIPESTATUS[0]}
    fi
    return "$rc"
}

log_tail() { # TAG [N]: the last N (30) lines TAG wrote to the log, to stderr
    grep -F "[$1] " "$BUILD_LOG" | tail -n "${2:-30}" >&2 || true
}
