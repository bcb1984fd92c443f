"""A fresh compose stack for the chaos suite, and the docker SDK handles on it.

The stack is compose.yaml, started by testcontainers' DockerCompose (Compose
v2, `up --wait`) under its own project name and on free host ports, so it
never touches a stack from `make up` nor the integration tests' own project.
Project name and ports are passed to every compose command with `env`, so
nothing leaks into (or is read from) this process's environment.

testcontainers has no kill/pause/network cut: the faults use the docker SDK
on the containers found here by their compose labels.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import docker

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from testcontainers.compose import DockerCompose

from zmqflow.client import Client, ForwarderUnreachable

ROOT = Path(__file__).resolve().parents[2]
WORKER_SERVICES = ("worker-python", "worker-rust")
# The fabric alone (compose.yaml also holds Airflow and Prefect).
FABRIC_SERVICES = ["postgres", "forwarder", "worker-python", "worker-rust", "events-log"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ProjectCompose(DockerCompose):
    """DockerCompose with a fixed project name and variables for every command."""

    project: str = "zmqflow-chaos"
    variables: dict[str, str] = field(default_factory=dict)

    @cached_property
    def compose_command_property(self) -> list[str]:
        base = DockerCompose.compose_command_property.func(self)  # [docker, compose, ...]
        env = [f"{k}={v}" for k, v in self.variables.items()]
        return ["env", *env, *base[:2], "--project-name", self.project, *base[2:]]


class ChaosStack:
    """compose.yaml under project ``project``, with helpers for faults and probes."""

    def __init__(self, project: str = "zmqflow-chaos") -> None:
        self.project = project
        self.ports = {
            "client": free_port(),
            "events_in": free_port(),
            "events_out": free_port(),
            "metrics": free_port(),
        }
        self.env = os.environ.get("ZMQFLOW_ENV", "dev")
        self.heartbeat_interval = float(os.environ.get("ZMQFLOW_HEARTBEAT_INTERVAL", "1.0"))
        self.compose = ProjectCompose(
            context=ROOT,
            compose_file_name="compose.yaml",
            env_file=".env",
            pull=False,
            build=False,
            wait=True,
            services=FABRIC_SERVICES,
            project=project,
            variables={
                "COMPOSE_PROJECT_NAME": project,
                "ZMQFLOW_PUBLISH_HOST": "127.0.0.1",
                "ZMQFLOW_PUBLISH_CLIENT_PORT": str(self.ports["client"]),
                "ZMQFLOW_PUBLISH_EVENTS_IN_PORT": str(self.ports["events_in"]),
                "ZMQFLOW_PUBLISH_EVENTS_OUT_PORT": str(self.ports["events_out"]),
                "ZMQFLOW_PUBLISH_METRICS_PORT": str(self.ports["metrics"]),
            },
        )
        self.docker = docker.from_env()

    # ------------------------------------------------------------ life
    @property
    def client_endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.ports['client']}"

    @property
    def events_endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.ports['events_out']}"

    def start(self) -> None:
        self.down()  # a project left over from an interrupted run
        try:
            self.compose.start()
        except subprocess.CalledProcessError:
            out = self.compose_cmd("logs", "--tail=60", check=False)
            print(out.stdout, out.stderr)
            self.down()
            raise
        self.wait_workers()

    def down(self) -> None:
        self.compose_cmd("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)

    def compose_cmd(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [*self.compose.compose_command_property, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and out.returncode != 0:
            raise RuntimeError(
                f"docker compose {' '.join(args)} failed ({out.returncode}): "
                f"{out.stderr.strip()[-1500:]}"
            )
        return out

    def scale(self, replicas: dict[str, int]) -> None:
        """`docker compose up --scale`, waiting until every replica is healthy."""
        scales = [arg for s, n in replicas.items() for arg in ("--scale", f"{s}={n}")]
        self.wait_not_unhealthy()
        self.compose_cmd(
            "up", "--detach", "--wait", "--wait-timeout", "120", "--no-recreate", *scales
        )

    def wait_not_unhealthy(self, timeout: float = 60) -> None:
        """Until no container reports "unhealthy" (`up --wait` would fail at once).

        A worker paused past its healthcheck shows "unhealthy" until the next
        probe after unpausing (up to the 5 s probe interval), though it serves."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sick = [
                c.name
                for c in self.docker.containers.list(
                    filters={"label": f"com.docker.compose.project={self.project}"}
                )
                if c.attrs["State"].get("Health", {}).get("Status") == "unhealthy"
            ]
            if not sick:
                return
            time.sleep(0.5)
        raise AssertionError(f"still unhealthy after {timeout}s: {sick}")

    # ------------------------------------------------------ containers
    def containers(self, service: str, running: bool = True) -> list[Any]:
        filters: dict[str, Any] = {
            "label": [
                f"com.docker.compose.project={self.project}",
                f"com.docker.compose.service={service}",
            ]
        }
        if running:
            filters["status"] = "running"
        found = self.docker.containers.list(all=not running, filters=filters)
        return sorted(
            found, key=lambda c: int(c.labels.get("com.docker.compose.container-number", 0))
        )

    def container(self, service: str) -> Any:
        found = self.containers(service, running=False)
        assert found, f"no container for {service}"
        return found[0]

    def worker_hosts(self) -> set[str]:
        """Hostnames (short container ids) of the running worker replicas."""
        return {c.attrs["Config"]["Hostname"] for s in WORKER_SERVICES for c in self.containers(s)}

    @cached_property
    def network(self) -> Any:
        return self.docker.networks.get(f"{self.project}_default")

    # ---------------------------------------------------------- probes
    def status(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """The forwarder's status, or None when it does not answer in time."""
        try:
            with Client(self.client_endpoint, timeout=timeout) as client:
                return client.status(timeout)
        except ForwarderUnreachable:
            return None

    def wait_workers(self, hosts: set[str] | None = None, timeout: float = 60) -> dict[str, Any]:
        """Until the forwarder lists exactly one worker per host (default: every running
        worker replica) and no other; returns that status."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            expected = self.worker_hosts() if hosts is None else hosts
            status = self.status()
            if status is not None and registered(status, expected):
                return status
            time.sleep(0.2)
        raise AssertionError(f"workers not registered after {timeout}s: {status}")

    def restore(self) -> None:
        """Back to one healthy replica of each worker, all registered (between scenarios)."""
        for service in ("forwarder", *WORKER_SERVICES):
            for c in self.containers(service, running=False):
                c.reload()
                if c.status == "paused":
                    c.unpause()
                if self.network.name not in c.attrs["NetworkSettings"]["Networks"]:
                    self.network.connect(c, aliases=[service])
                if c.status != "running":
                    c.start()
        self.scale(dict.fromkeys(WORKER_SERVICES, 1))
        self.wait_workers()


def registered(status: dict[str, Any], hosts: set[str]) -> bool:
    """True when the status lists exactly one worker per host and no other."""
    ids = [w["id"] for w in status.get("workers", [])]
    return len(ids) == len(hosts) and all(sum(h in i for i in ids) == 1 for h in hosts)
