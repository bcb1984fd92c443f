"""The Airflow stack for these tests: its own compose project, free host ports.

Contract: the module-scoped ``airflow`` fixture starts, from compose.yaml
with testcontainers' DockerCompose, only what the Airflow tests need
(postgres, forwarder, one Python and one Rust worker, airflow-init and the
four Airflow services) as project ``zmqflow-it-airflow`` on free host ports,
waits until the example DAGs are parsed and unpaused, and takes everything
down (volumes too) afterwards. The project name and ports are passed to each
compose command rather than left in os.environ, so a core ``stack`` fixture
of the same pytest session (project zmqflow-it) is never redirected.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from testcontainers.compose import DockerCompose

from integration_tests.airflow.api import AirflowApi, wait_for
from integration_tests.conftest import _free_port

ROOT = Path(__file__).resolve().parents[2]
PROJECT = os.environ.get("ZMQFLOW_IT_AIRFLOW_PROJECT", "zmqflow-it-airflow")
ZMQFLOW = str(Path(sys.executable).with_name("zmqflow"))
SERVICES = [
    "postgres",
    "forwarder",
    "worker-python",
    "worker-rust",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
]
EXAMPLE_DAGS = ("zmqflow_fanout", "zmqflow_on_event")
sys.path.insert(0, str(ROOT / "orchestrators" / "airflow" / "provider" / "src"))


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with ``values`` for the duration (DockerCompose reads it)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class AirflowStack:
    compose: DockerCompose
    docker: docker.DockerClient
    env: dict[str, str]
    api: AirflowApi

    @property
    def client_endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.env['ZMQFLOW_PUBLISH_CLIENT_PORT']}"

    @property
    def events_in(self) -> str:
        return f"tcp://127.0.0.1:{self.env['ZMQFLOW_PUBLISH_EVENTS_IN_PORT']}"

    @property
    def events_out(self) -> str:
        return f"tcp://127.0.0.1:{self.env['ZMQFLOW_PUBLISH_EVENTS_OUT_PORT']}"

    def compose_cmd(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "compose", "-p", PROJECT, "-f", "compose.yaml", "--env-file", ".env", *args],
            cwd=ROOT,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def scale(self, **replicas: int) -> None:
        """Scale services (worker_python=2 -> worker-python=2), waiting until healthy."""
        scales = [f"--scale={k.replace('_', '-')}={n}" for k, n in replicas.items()]
        self.compose_cmd(
            "up", "--detach", "--wait", "--wait-timeout", "180", "--no-recreate",
            *scales, *SERVICES,
        )  # fmt: skip

    def containers(self, service: str) -> list[Any]:
        return self.docker.containers.list(
            filters={
                "label": [
                    f"com.docker.compose.project={PROJECT}",
                    f"com.docker.compose.service={service}",
                ],
                "status": "running",
            }
        )

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [ZMQFLOW, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def status(self) -> dict[str, Any]:
        out = self.cli("status", "--connect", self.client_endpoint, "--json", timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    def completed(self) -> int:
        """Tasks the forwarder saw a worker finish (its `completed` counter)."""
        return int(self.status()["counters"].get("completed", 0))


def _logs(env: dict[str, str]) -> str:
    out = subprocess.run(
        ["docker", "compose", "-p", PROJECT, "-f", "compose.yaml", "--env-file", ".env",
         "logs", "--tail=80"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return out.stdout + out.stderr


def _down(env: dict[str, str]) -> None:
    subprocess.run(
        ["docker", "compose", "-p", PROJECT, "-f", "compose.yaml", "--env-file", ".env",
         "--profile", "*", "down", "--volumes", "--remove-orphans"],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def airflow() -> Iterator[AirflowStack]:
    env = {
        "COMPOSE_PROJECT_NAME": PROJECT,
        "ZMQFLOW_PUBLISH_HOST": "127.0.0.1",
        "ZMQFLOW_PUBLISH_CLIENT_PORT": str(_free_port()),
        "ZMQFLOW_PUBLISH_EVENTS_IN_PORT": str(_free_port()),
        "ZMQFLOW_PUBLISH_EVENTS_OUT_PORT": str(_free_port()),
        "ZMQFLOW_PUBLISH_METRICS_PORT": str(_free_port()),
        "AIRFLOW_PUBLISH_PORT": str(_free_port()),
        "AIRFLOW_ADMIN_USER": "admin",
        "AIRFLOW_ADMIN_PASSWORD": "it-secret",
    }
    with _environment(env):
        compose = DockerCompose(
            context=ROOT,
            compose_file_name="compose.yaml",
            env_file=".env",
            pull=False,
            build=False,
            wait=True,
            services=SERVICES,
        )
    _down(env)  # a project left over from an interrupted run
    try:
        with _environment(env):
            compose.start()
    except subprocess.CalledProcessError:
        print(_logs(env), file=sys.stderr)
        _down(env)
        raise
    api = AirflowApi(f"http://127.0.0.1:{env['AIRFLOW_PUBLISH_PORT']}", "admin", "it-secret")
    stack = AirflowStack(compose=compose, docker=docker.from_env(), env=env, api=api)
    try:
        _login(api)
        for dag_id in EXAMPLE_DAGS:
            wait_for(
                lambda d=dag_id: api.dag(d)["is_paused"] is False,
                240,
                f"DAG {dag_id} parsed and unpaused",
                interval=2,
            )
        yield stack
    except BaseException:
        print(_logs(env), file=sys.stderr)
        raise
    finally:
        if os.environ.get("ZMQFLOW_IT_KEEP") != "1":
            _down(env)


def _login(api: AirflowApi) -> None:
    def attempt() -> bool:
        api.login()
        return True

    wait_for(attempt, 120, "a token from POST /auth/token")
