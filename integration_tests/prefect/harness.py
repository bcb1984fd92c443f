"""The Prefect stack under test: the shared compose harness plus Prefect's side.

Contract: ``PrefectStack`` is a harness.ComposeProject (own project, free
host ports including ``PREFECT_PUBLISH_PORT``, up until healthy, down
afterwards; the forwarder's ``counters`` and ``publish`` come from there)
holding the fabric and the Prefect services. It adds ``run_deployment``
(``prefect deployment run ...`` inside the prefect-worker container), ``api``
(Prefect's REST API on the published port), ``flow_run``/``task_runs``/
``artifact_json`` on top of it, and ``wait_healthy`` (a container's own
healthcheck). ``BusRecorder`` collects bus events in a thread. Waiting is
always on a probe with a deadline, never a bare sleep.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import zmq

from integration_tests.harness import ComposeProject, curve_socket, wait_for
from zmqflow import events

FLOW_RUN_ID = re.compile(r"UUID:\s*([0-9a-f-]{36})")


@dataclass
class RunOutcome:
    returncode: int
    output: str

    @property
    def flow_run_id(self) -> str:
        match = FLOW_RUN_ID.search(self.output)
        assert match, f"no flow run id in:\n{self.output}"
        return match.group(1)


class PrefectStack(ComposeProject):
    """The fabric and the Prefect services in one compose project; see the module's contract."""

    def wait_healthy(self, container: Any, timeout: float = 120) -> None:
        def healthy() -> bool:
            container.reload()
            return container.attrs["State"].get("Health", {}).get("Status") == "healthy"

        wait_for(healthy, timeout, f"{container.name} to be healthy", every=1.0)

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
        proc = self.exec("prefect-worker", *args, timeout=timeout)
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
        sock = curve_socket(zmq.SUB)  # the bus is CURVE: the harness's client key
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
