"""Fixtures for tests against the real stack, started from compose.yaml.

The stack comes up through testcontainers' DockerCompose (Compose v2,
`docker compose up --wait`), under its own project name and on free host
ports, so it never touches a stack started with `make up`. Nothing is pulled:
the images are built first by scripts/build-images.sh (the fixture builds
them when they are missing), and Ryuk, which would need a registry image, is
turned off (TESTCONTAINERS_RYUK_DISABLED=true): the fixture's teardown runs
`docker compose down --volumes` itself.

testcontainers has no kill/pause/scale: tests use `scale()` (docker compose
up --scale) and the docker SDK for the rest.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from testcontainers.compose import DockerCompose

ROOT = Path(__file__).resolve().parents[1]
PROJECT = os.environ.get("ZMQFLOW_IT_PROJECT", "zmqflow-it")
ZMQFLOW = str(Path(sys.executable).with_name("zmqflow"))
# The fabric alone: what the core and chaos tests start. The orchestrators
# (Airflow, Prefect) are in compose.yaml too, but their tests start them in
# projects of their own, so the core tests stay light on a 2-core machine.
FABRIC_SERVICES = ["postgres", "forwarder", "worker-python", "worker-rust", "events-log"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _image_names() -> list[str]:
    env = dict(
        line.split("=", 1)
        for line in (ROOT / ".env").read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    prefix = os.environ.get("ZMQFLOW_IMAGE_PREFIX", env.get("ZMQFLOW_IMAGE_PREFIX", "zmqflow"))
    tag = os.environ.get("ZMQFLOW_IMAGE_TAG", env.get("ZMQFLOW_IMAGE_TAG", "dev"))
    return [f"{prefix}/{name}:{tag}" for name in ("postgres", "forwarder", "worker-python")]


def _ensure_images(client: docker.DockerClient) -> None:
    missing = []
    for name in _image_names():
        try:
            client.images.get(name)
        except docker.errors.ImageNotFound:
            missing.append(name)
    if missing and os.environ.get("ZMQFLOW_IT_SKIP_BUILD") != "1":
        subprocess.run(["bash", str(ROOT / "scripts" / "build-images.sh")], check=True)


def _down(compose: DockerCompose) -> None:
    """`down --volumes`, with `--profile *` so that services of optional
    profiles the tests started (worker-python-ipc) go too."""
    everything = [*compose.compose_command_property, "--profile", "*"]
    subprocess.run(
        [*everything, "down", "--volumes", "--remove-orphans"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )


@dataclass
class Stack:
    compose: DockerCompose
    docker: docker.DockerClient
    client_endpoint: str
    ports: dict[str, int] = field(default_factory=dict)

    def compose_cmd(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.compose.compose_command_property, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def containers(self, service: str) -> list[Any]:
        """Running containers of one service (docker SDK objects)."""
        return self.docker.containers.list(
            filters={
                "label": [
                    f"com.docker.compose.project={PROJECT}",
                    f"com.docker.compose.service={service}",
                ],
                "status": "running",
            }
        )

    def up(self, *args: str) -> None:
        """`docker compose up --detach --wait ARGS`: every started container healthy."""
        self.compose_cmd("up", "--detach", "--wait", "--wait-timeout", "120", *args)

    def scale(self, service: str, replicas: int) -> None:
        """`docker compose up --scale`, waiting until every replica is healthy."""
        self.up("--no-recreate", "--scale", f"{service}={replicas}")

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run the host's zmqflow CLI (from this venv) against the stack."""
        return subprocess.run(
            [ZMQFLOW, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def status(self) -> dict[str, Any]:
        out = self.cli("status", "--connect", self.client_endpoint, "--json", timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wait_for_workers(self, hosts: set[str], timeout: float = 60) -> dict[str, Any]:
        """Wait until the forwarder's status lists exactly one worker per host
        (container hostname) and no other; returns that status."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status()
            ids = [w["id"] for w in status.get("workers", [])]
            per_host = {h: [i for i in ids if h in i] for h in hosts}
            if len(ids) == len(hosts) and all(len(v) == 1 for v in per_host.values()):
                return status
            time.sleep(0.5)
        raise AssertionError(f"expected one worker on each of {sorted(hosts)}, status: {status}")


def pytest_collection_finish(session: pytest.Session) -> None:
    # Build missing images here, not in the fixture: pytest-timeout counts a
    # fixture's setup against the first test, and a first build takes minutes.
    if session.items and not session.config.option.collectonly:
        _ensure_images(docker.from_env())


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    client = docker.from_env()

    # Our own project and free host ports: shell variables win over .env.
    ports = {
        "ZMQFLOW_PUBLISH_CLIENT_PORT": _free_port(),
        "ZMQFLOW_PUBLISH_EVENTS_IN_PORT": _free_port(),
        "ZMQFLOW_PUBLISH_EVENTS_OUT_PORT": _free_port(),
        "ZMQFLOW_PUBLISH_METRICS_PORT": _free_port(),
    }
    os.environ["COMPOSE_PROJECT_NAME"] = PROJECT
    os.environ["ZMQFLOW_PUBLISH_HOST"] = "127.0.0.1"
    for key, port in ports.items():
        os.environ[key] = str(port)

    compose = DockerCompose(
        context=ROOT,
        compose_file_name="compose.yaml",
        env_file=".env",
        pull=False,
        build=False,
        wait=True,
        services=FABRIC_SERVICES,
    )
    # A project left over from an interrupted run would keep its old ports.
    _down(compose)
    try:
        compose.start()
    except subprocess.CalledProcessError:
        out = subprocess.run(
            [*compose.compose_command_property, "logs", "--tail=60"],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        print(out.stdout, out.stderr, file=sys.stderr)
        _down(compose)
        raise
    try:
        yield Stack(
            compose=compose,
            docker=client,
            client_endpoint=f"tcp://127.0.0.1:{ports['ZMQFLOW_PUBLISH_CLIENT_PORT']}",
            ports=ports,
        )
    finally:
        if os.environ.get("ZMQFLOW_IT_KEEP") != "1":
            _down(compose)
