#!/usr/bin/env bash
# .venv-prefect: Prefect 3.8 (from the image's wheelhouse), zmqflow and
# prefect-zmqflow, plus pytest, for the Prefect package's fast tests on the
# host. Prefect lives apart from .venv: its dependencies conflict with
# Airflow's, as the two images do. BENCH=1 adds what make bench-prefect-runner
# compares against and plots with: prefect-dask (DaskTaskRunner) and matplotlib.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=.venv-prefect
WHEELS=.build/wheels/prefect
[[ -f $WHEELS/requirements.txt ]] || bash scripts/build-images.sh prefect
if [[ ! -x $VENV/bin/pytest || $VENV/bin/pytest -ot $WHEELS/requirements.txt ]]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --no-index --find-links "$WHEELS" \
        -c "$WHEELS/constraints.txt" -r "$WHEELS/requirements.txt"
    "$VENV/bin/pip" install --quiet --no-deps -e . -e orchestrators/prefect
    "$VENV/bin/pip" install --quiet pytest==9.2.0 pytest-timeout==2.4.0
    touch "$VENV/bin/pytest"
fi
if [[ ${BENCH:-0} == 1 ]] && ! "$VENV/bin/python" -c 'import prefect_dask, matplotlib' 2>/dev/null; then
    "$VENV/bin/pip" install --quiet prefect-dask==0.3.7 dask==2026.11.0 distributed==2026.11.0 \
        matplotlib==3.11.2
fi
