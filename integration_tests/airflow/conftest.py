"""The Airflow stack for these tests: one compose project on the shared harness.

Contract: the module-scoped ``airflow`` fixture is an ``AirflowStack``, a
harness.ComposeProject (its own project ``zmqflow-it-airflow``, free host
ports, up until healthy, down with its volumes afterwards unless
ZMQFLOW_IT_KEEP=1) of only what the Airflow tests need: postgres, forwarder,
one Python and one Rust worker, airflow-init and the four Airflow services,
with the Airflow API on a free ``AIRFLOW_PUBLISH_PORT``. It adds ``api``
(integration_tests.airflow.api, logged in as the stack's admin) and
``completed`` (the forwarder's count of finished tasks), and is yielded once
the example DAGs are parsed and unpaused.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from functools import cached_property

import pytest

from integration_tests.airflow.api import AirflowApi, wait_for
from integration_tests.harness import ComposeProject

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
)
EXAMPLE_DAGS = ("zmqflow_fanout", "zmqflow_on_event")
ADMIN = ("admin", "it-secret")


class AirflowStack(ComposeProject):
    """The fabric and Airflow in one compose project; see the module's contract."""

    def __init__(self) -> None:
        super().__init__(
            PROJECT,
            SERVICES,
            ports=("AIRFLOW_PUBLISH_PORT",),
            env={"AIRFLOW_ADMIN_USER": ADMIN[0], "AIRFLOW_ADMIN_PASSWORD": ADMIN[1]},
        )

    @cached_property
    def api(self) -> AirflowApi:
        return AirflowApi(f"http://127.0.0.1:{self.ports['AIRFLOW_PUBLISH_PORT']}", *ADMIN)

    def completed(self) -> int:
        """Tasks the forwarder saw a worker finish (its `completed` counter)."""
        return int(self.counters().get("completed", 0))


@pytest.fixture(scope="module")
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
