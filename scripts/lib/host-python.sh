# Sourced by scripts that need a host Python 3.11+ with pip (for tomllib and
# `pip download`): sets and exports PYTHON to the project's venv, else
# python3.11 or newer, else python3. A PYTHON already set is kept.
if [[ -z "${PYTHON:-}" ]]; then
    for candidate in "${VENV:-.venv}/bin/python" python3.11 python3.12 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c 'import sys, tomllib, pip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            PYTHON=$candidate
            break
        fi
    done
fi
PYTHON=${PYTHON:-python3}
export PYTHON
