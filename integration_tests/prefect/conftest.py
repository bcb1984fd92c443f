"""The Prefect stack for these tests: one compose project on the shared harness.

Contract: the package-scoped ``prefect_stack`` fixture is a PrefectStack
(harness.ComposeProject) of the fabric (PostgreSQL, forwarder, 2 Python and
2 Rust workers: the fault tests kill one of each) and the Prefect services
(server, deploy one-shot, worker, bridge) as project ``zmqflow-it-prefect``
on free host ports, so a stack from `make up` and the core tests' project
are left alone. ``reference_result`` is the fan-out flow's default data set
(zmqflow.examples.sales.DEFAULT) rolled up in one process, without zmqflow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from integration_tests.prefect.harness import PrefectStack
from zmqflow.examples import sales

PROJECT = os.environ.get("ZMQFLOW_IT_PREFECT_PROJECT", "zmqflow-it-prefect")
SERVICES = (
    "postgres", "forwarder", "worker-python", "worker-rust",
    "prefect-server", "prefect-worker", "prefect-bridge",
)  # fmt: skip


@pytest.fixture(scope="package")
def prefect_stack() -> Iterator[PrefectStack]:
    with PrefectStack(
        PROJECT,
        SERVICES,
        ports=("PREFECT_PUBLISH_PORT",),
        replicas={"worker-python": 2, "worker-rust": 2},
        wait_timeout=240,
    ) as stack:
        yield stack


@pytest.fixture(scope="package")
def reference_result() -> dict[str, Any]:
    """The fan-out data set rolled up in one process, without zmqflow."""
    return sales.rollup_dataset(sales.DEFAULT)
