"""The Airflow stack for these tests: one compose project on the shared harness.

Contract: the ``airflow`` fixture (one per package: every test module here
shares it, so the stack starts once) is an ``AirflowStack``, a
harness.ComposeProject (its own project ``zmqflow-it-airflow``, free host
ports, up until healthy, down with its volumes afterwards unless
ZMQFLOW_IT_KEEP=1) of only what the Airflow tests need: postgres, forwarder,
one Python and one Rust worker, airflow-init, the four Airflow services and
two worker-airflow replicas (the stack's executor is ZmqflowExecutor), with
the Airflow API on a free ``AIRFLOW_PUBLISH_PORT``. Its DAGs folder
(``dags_dir``, bind-mounted as AIRFLOW_DAGS_DIR) is a temporary copy of
orchestrators/airflow/dags, listed for new files every 10 s, so a test can
drop a DAG file in (``drop_dag``) as a user would. It adds ``api``
(integration_tests.airflow.api, logged in as the stack's admin) and
``completed`` (the forwarder's count of finished tasks), and is yielded once
the example DAGs are parsed and unpaused.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import pytest

from integration_tests.airflow.api import AirflowApi, wait_for
from integration_tests.harness import ROOT, ComposeProject

PROJECT = os.environ.get("ZMQFLOW_IT_AIRFLOW_PROJECT", "zmqflow-it-airflow")
SERVICES = (
    "postgres",
    "forwarder",
    "worker-python",
    "worker-rust",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "worker-airflow",
)
REPLICAS = {"worker-airflow": 2}
EXAMPLE_DAGS = ("zmqflow_fanout", "zmqflow_on_event", "zmqflow_executor_demo")
ADMIN = ("admin", "it-secret")
TEST_DAGS = Path(__file__).resolve().parent / "dags"  # what tests drop in, as users would


def dags_folder() -> Path:
    """A copy of the example DAGs that the containers (uid 10001) can read."""
    folder = Path(tempfile.mkdtemp(prefix="zmqflow-it-dags-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    folder.chmod(0o755)
    for dag in sorted((ROOT / "orchestrators" / "airflow" / "dags").glob("*.py")):
        shutil.copy(dag, folder / dag.name)
        (folder / dag.name).chmod(0o644)
    return folder


class AirflowStack(ComposeProject):
    """The fabric and Airflow in one compose project; see the module's contract."""

    def __init__(self) -> None:
        self.dags_dir = dags_folder()
        super().__init__(
            PROJECT,
            SERVICES,
            ports=("AIRFLOW_PUBLISH_PORT",),
            env={
                "AIRFLOW_ADMIN_USER": ADMIN[0],
                "AIRFLOW_ADMIN_PASSWORD": ADMIN[1],
                "AIRFLOW_DAGS_DIR": str(self.dags_dir),
                "AIRFLOW_DAG_REFRESH_INTERVAL": "10",
            },
            replicas=REPLICAS,
        )

    def drop_dag(self, name: str) -> None:
        """Copy a DAG file of integration_tests/airflow/dags into the DAGs folder
        (written aside, then renamed: the dag-processor never reads half a file)."""
        tmp = self.dags_dir / f".{name}.tmp"
        shutil.copy(TEST_DAGS / name, tmp)
        tmp.chmod(0o644)
        tmp.rename(self.dags_dir / name)

    @cached_property
    def api(self) -> AirflowApi:
        return AirflowApi(f"http://127.0.0.1:{self.ports['AIRFLOW_PUBLISH_PORT']}", *ADMIN)

    def completed(self) -> int:
        """Tasks the forwarder saw a worker finish (its `completed` counter)."""
        return int(self.counters().get("completed", 0))


@pytest.fixture(scope="package")
def airflow() -> Iterator[AirflowStack]:
    with AirflowStack() as stack:
        try:
            wait_for(lambda: stack.api.login() or True, 120, "a token from POST /auth/token")
            for dag_id in EXAMPLE_DAGS:
                wait_for(
                    lambda d=dag_id: stack.api.dag(d)["is_paused"] is False,
                    240,
                    f"DAG {dag_id} parsed and unpaused",
                    interval=2,
                )
        except BaseException:
            print(stack.logs(), file=sys.stderr)
            raise
        yield stack
