"""The Prefect stack for these tests: one compose project on the shared harness.

Contract: the package-scoped ``prefect_stack`` fixture is a PrefectStack
(harness.ComposeProject) of the fabric (PostgreSQL, forwarder, 2 Python and
2 Rust workers: the fault tests kill one of each) and the Prefect services
(server, deploy one-shot, worker, bridge) as project ``zmqflow-it-prefect``
on free host ports, so a stack from `make up` and the core tests' project
are left alone. Its flows folder (PREFECT_FLOWS_DIR, mounted into
prefect-deploy, prefect-worker and worker-prefect) is ``flows_dir``, a copy
of orchestrators/prefect/flows in a temporary folder, so a test can add a
flow file without touching the repository. ``reference_result`` is the
fan-out flow's default data set (zmqflow.examples.sales.DEFAULT) rolled up
in one process, without zmqflow.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration_tests.prefect.harness import PrefectStack
from zmqflow.examples import sales

PROJECT = os.environ.get("ZMQFLOW_IT_PREFECT_PROJECT", "zmqflow-it-prefect")
SERVICES = (
    "postgres", "forwarder", "worker-python", "worker-rust",
    "prefect-server", "prefect-worker", "prefect-bridge", "worker-prefect",
)  # fmt: skip
FLOWS = Path(__file__).resolve().parents[2] / "orchestrators" / "prefect" / "flows"


@pytest.fixture(scope="package")
def flows_dir() -> Iterator[Path]:
    """A copy of the flows folder, readable by the containers' uid 10001."""
    root = Path(tempfile.mkdtemp(prefix="zmqflow-it-flows-"))
    flows = root / "flows"
    shutil.copytree(FLOWS, flows, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [root, flows, *flows.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield flows
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="package")
def prefect_stack(flows_dir: Path) -> Iterator[PrefectStack]:
    with PrefectStack(
        PROJECT,
        SERVICES,
        ports=("PREFECT_PUBLISH_PORT",),
        env={"PREFECT_FLOWS_DIR": str(flows_dir)},
        replicas={"worker-python": 2, "worker-rust": 2, "worker-prefect": 2},
        wait_timeout=240,
    ) as stack:
        yield stack


@pytest.fixture(scope="package")
def reference_result() -> dict[str, Any]:
    """The fan-out data set rolled up in one process, without zmqflow."""
    return sales.rollup_dataset(sales.DEFAULT)
