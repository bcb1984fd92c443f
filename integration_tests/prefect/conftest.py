"""The Prefect stack for these tests: its own compose project and host ports.

Starts the fabric (PostgreSQL, forwarder, 2 Python and 2 Rust workers) and
the Prefect services (server, deploy one-shot, worker, bridge) from
compose.yaml as project ``zmqflow-it-prefect`` on free host ports, so that a
stack started with `make up`, and the core tests' project, are left alone.
The environment it changes (project name, ports) is put back afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import docker
import pytest

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from testcontainers.compose import DockerCompose

from integration_tests.prefect.harness import ROOT, PrefectStack

PROJECT = os.environ.get("ZMQFLOW_IT_PREFECT_PROJECT", "zmqflow-it-prefect")
SERVICES = [
    "postgres", "forwarder", "worker-python", "worker-rust",
    "prefect-server", "prefect-worker", "prefect-bridge",
]  # fmt: skip
PORT_VARIABLES = [
    "ZMQFLOW_PUBLISH_CLIENT_PORT",
    "ZMQFLOW_PUBLISH_EVENTS_IN_PORT",
    "ZMQFLOW_PUBLISH_EVENTS_OUT_PORT",
    "ZMQFLOW_PUBLISH_METRICS_PORT",
    "PREFECT_PUBLISH_PORT",
]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _down(compose: DockerCompose) -> None:
    subprocess.run(
        [*compose.compose_command_property, "-p", PROJECT, "down", "--volumes", "--remove-orphans"],
        cwd=ROOT, capture_output=True, check=False,
    )  # fmt: skip


@pytest.fixture(scope="package")
def prefect_stack() -> Iterator[PrefectStack]:
    ports = {name: _free_port() for name in PORT_VARIABLES}
    changed = {"COMPOSE_PROJECT_NAME": PROJECT, "ZMQFLOW_PUBLISH_HOST": "127.0.0.1"}
    changed.update({k: str(v) for k, v in ports.items()})
    saved = {k: os.environ.get(k) for k in changed}
    os.environ.update(changed)
    compose = DockerCompose(
        context=ROOT,
        compose_file_name="compose.yaml",
        env_file=".env",
        pull=False,
        build=False,
        wait=False,  # `up --wait` fails on the deploy one-shot's exit; waited below
        services=SERVICES,
    )
    _down(compose)  # a project left over from an interrupted run would keep old ports
    stack = PrefectStack(compose, docker.from_env(), PROJECT, ports)
    try:
        compose.start()
        # Two Python and two Rust workers: the fault tests kill one of each.
        stack.compose_cmd(
            "-p", PROJECT, "up", "--detach", "--wait", "--wait-timeout", "240", "--no-recreate",
            "--scale", "worker-python=2", "--scale", "worker-rust=2", *SERVICES,
        )  # fmt: skip
        yield stack
    except subprocess.CalledProcessError as exc:
        out = subprocess.run(
            [*compose.compose_command_property, "-p", PROJECT, "logs", "--tail=60"],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        print(exc.stdout, exc.stderr, out.stdout, out.stderr, file=sys.stderr)
        raise
    finally:
        if os.environ.get("ZMQFLOW_IT_KEEP") != "1":
            _down(compose)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="package")
def reference_result(prefect_stack: PrefectStack) -> dict[str, Any]:
    """The fan-out data set rolled up in one process, without zmqflow (sales.reference)."""
    worker = prefect_stack.container("prefect-worker")
    code, out = worker.exec_run(["python", "-m", "prefect_zmqflow.sales"])
    assert code == 0, out.decode()
    return json.loads(out.decode().strip().splitlines()[-1])
