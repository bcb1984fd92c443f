"""Fast tests of the provider: its pure modules, and the executor's link to a
real forwarder and workers on loopback (tests/fabric.py's Fabric).

The modules these tests import do not import Airflow, so the host's .venv
(which has no Airflow) runs them; tests that need Airflow itself
(test_executor_airflow.py) skip there and run in .venv-airflow
(`make test-airflow`, made from the Airflow image's wheelhouse).
"""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "provider" / "src"))
sys.path.insert(0, str(HERE.parents[3] / "tests"))  # fabric.py: Fabric, wait_for

from fabric import Fabric  # noqa: E402


@pytest.fixture
def fabric(tmp_path: Path) -> Iterator[Fabric]:
    fab = Fabric(tmp_path)
    try:
        yield fab
    finally:
        fab.stop()
