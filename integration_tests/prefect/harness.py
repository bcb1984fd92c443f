"""The Prefect stack under test: compose services, Prefect's REST API, the bus.

Contract: ``PrefectStack`` drives one compose project holding the fabric and
the Prefect services: ``run_deployment`` runs ``prefect deployment run ...``
inside the prefect-worker container, ``api`` calls Prefect's REST API on the
published port, ``counters`` reads the forwarder's counters with ``zmqflow
status --json``, ``wait_healthy`` waits on a container's own healthcheck and
``BusRecorder`` collects bus events in a thread. Waiting is always on a
probe with a deadline, never a bare sleep.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import zmq
from testcontainers.compose import DockerCompose

from zmqflow import events

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")
FLOW_RUN_ID = re.compile(r"UUID:\s*([0-9a-f-]{36})")


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, every: float = 1.0) -> T:
    """Call ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@dataclass
class RunOutcome:
    returncode: int
    output: str

    @property
    def flow_run_id(self) -> str:
        match = FLOW_RUN_ID.search(self.output)
        assert match, f"no flow run id in:\n{self.output}"
        return match.group(1)


@dataclass
class PrefectStack:
    compose: DockerCompose
    docker: docker.DockerClient
    project: str
    ports: dict[str, int]

    # ---------------------------------------------------------- containers
    def compose_cmd(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.compose.compose_command_property, *args],
            cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=True,
        )  # fmt: skip

    def containers(self, service: str, status: str = "running") -> list[Any]:
        return self.docker.containers.list(
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.project}",
                    f"com.docker.compose.service={service}",
                ],
                "status": status,
            },
        )

    def container(self, service: str) -> Any:
        found = self.containers(service)
        assert len(found) == 1, f"expected one running {service}, found {len(found)}"
        return found[0]

    def wait_healthy(self, container: Any, timeout: float = 120) -> None:
        def healthy() -> bool:
            container.reload()
            return container.attrs["State"].get("Health", {}).get("Status") == "healthy"

        wait_for(healthy, timeout, f"{container.name} to be healthy")

    # -------------------------------------------------------------- Prefect
    def run_deployment(
        self, name: str, params: dict[str, Any], *, watch: bool = True, timeout: float = 600
    ) -> RunOutcome:
        """`prefect deployment run NAME --param k=v [--watch]` inside prefect-worker."""
        args = ["prefect", "deployment", "run", name]
        for key, value in params.items():
            args += [
                "--param",
                f"{key}={json.dumps(value) if not isinstance(value, str) else value}",
            ]
        if watch:
            args += ["--watch", "--watch-interval", "2"]
        worker = self.container("prefect-worker")
        proc = subprocess.run(
            ["docker", "exec", worker.id, *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        return RunOutcome(proc.returncode, proc.stdout + proc.stderr)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        url = f"http://127.0.0.1:{self.ports['PREFECT_PUBLISH_PORT']}/api{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/flow_runs/{flow_run_id}")

    def task_runs(self, flow_run_id: str) -> list[dict[str, Any]]:
        return self.api(
            "POST",
            "/task_runs/filter",
            {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200},
        )

    def artifact_json(self, key: str) -> tuple[dict[str, Any], str]:
        """The latest artifact ``key``: (the JSON in its markdown code block, flow run id)."""
        artifact = self.api("GET", f"/artifacts/{key}/latest")
        text = artifact["data"]
        body = text.split("```json", 1)[1].split("```", 1)[0]
        return json.loads(body), artifact["flow_run_id"]

    # --------------------------------------------------------------- fabric
    def counters(self) -> dict[str, int]:
        out = subprocess.run(
            [
                str(Path(ROOT, ".venv/bin/zmqflow")), "status", "--json",
                "--connect", f"tcp://127.0.0.1:{self.ports['ZMQFLOW_PUBLISH_CLIENT_PORT']}",
            ],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return json.loads(out.stdout.strip().splitlines()[-1])["counters"]

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        subprocess.run(
            [
                str(Path(ROOT, ".venv/bin/zmqflow")), "publish", "--kind", kind,
                "--data", json.dumps(data),
                "--connect", f"tcp://127.0.0.1:{self.ports['ZMQFLOW_PUBLISH_EVENTS_IN_PORT']}",
            ],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip


@dataclass
class BusRecorder:
    """Collects bus events under a topic prefix, in a thread, until ``stop``."""

    endpoint: str
    topic: str
    received: list[events.Event] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> BusRecorder:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.linger = 0
        sock.subscribe(self.topic.encode())
        sock.connect(self.endpoint)
        self._ready.set()
        try:
            while not self._stop.is_set():
                if sock.poll(200):
                    self.received.append(events.decode(sock.recv_multipart()))
        finally:
            sock.close()

    def states_of(self, run_id: str) -> list[str]:
        return [e.data.get("state", "") for e in self.received if e.data.get("id") == run_id]
