#!/usr/bin/env bash
# .venv-airflow: Airflow 3.3 (from the Airflow image's wheelhouse), zmqflow and
# airflow-provider-zmqflow, plus pytest, for the provider's tests that need
# Airflow itself (orchestrators/airflow/tests/test_executor_airflow.py: the
# executor and the worker-airflow handler with a real forwarder and worker).
# Airflow lives apart from .venv, as it does in the images (its dependencies
# conflict with Prefect's). uv, from the same wheelhouse, installs it in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=.venv-airflow
WHEELS=.build/wheels/airflow
[[ -f $WHEELS/requirements.txt ]] || bash scripts/build-images.sh airflow
if [[ ! -x $VENV/bin/pytest || $VENV/bin/pytest -ot $WHEELS/requirements.txt ]]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --no-index --find-links "$WHEELS" uv
    "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --no-index --find-links "$WHEELS" \
        -c "$WHEELS/constraints.txt" -r "$WHEELS/requirements.txt"
    "$VENV/bin/pip" install --quiet --no-deps -e . -e orchestrators/airflow/provider
    "$VENV/bin/pip" install --quiet pytest==9.2.0 pytest-timeout==2.4.0
    touch "$VENV/bin/pytest"
fi
