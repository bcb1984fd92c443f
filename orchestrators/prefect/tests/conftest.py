"""Fixtures of the task-runner tests: a real forwarder and real worker replicas.

Contract: ``fabric`` (one per session) runs ``python -m zmqflow forwarder``
on loopback and two ``python -m zmqflow worker`` replicas serving
``prefect.task`` with the ``prefect_zmqflow.replica:run_task_run`` handler,
as the stack's worker-prefect does, with this folder on PYTHONPATH so that
the test tasks (``runner_tasks``) import there by name. ``prefect_api`` is
Prefect's own test harness (a temporary server on SQLite) for the session;
the replicas reach it through the settings in each task run's context.
Processes log to files under the session's tmp folder; tests wait on probes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

pytest.importorskip("prefect")

from zmqflow.client import Client

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
SERVICE = "prefect.task"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Call ``probe`` until it returns something truthy (returned); fail naming ``what``."""
    until = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < until, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(0.05)


class LocalFabric:
    """A forwarder and worker replicas as processes on loopback."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.frontend = f"tcp://127.0.0.1:{free_port()}"
        self.backend = f"tcp://127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQFLOW_")}
        env["ZMQFLOW_HEARTBEAT_INTERVAL"] = "0.5"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        self.env = env
        self.forwarder = self._spawn(
            "forwarder",
            "forwarder",
            f"--frontend={self.frontend}",
            f"--backend={self.backend}",
            f"--journal={tmp / 'journal.db'}",
        )
        self.workers: list[subprocess.Popen[bytes]] = []

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "zmqflow", *args], env=self.env, stdout=log, stderr=log
        )

    def add_worker(self, concurrency: int = 4, service: str = SERVICE) -> subprocess.Popen[bytes]:
        n = len(self.workers)
        worker = self._spawn(
            f"worker-{n}",
            "worker",
            f"--connect={self.backend}",
            f"--service={service}",
            "--handler=prefect_zmqflow.replica:run_task_run",
            f"--concurrency={concurrency}",
            f"--worker-id=replica-{n}-{os.getpid()}",
        )
        self.workers.append(worker)
        return worker

    def status(self) -> dict:
        with Client(self.frontend, timeout=5) as client:
            return client.status(timeout=3)

    def serving(self, service: str = SERVICE) -> int:
        """Live workers serving ``service``."""
        try:
            workers = self.status().get("workers", [])
        except TimeoutError:
            return 0
        return sum(service in w.get("services", []) for w in workers)

    def stop(self) -> None:
        for proc in [*self.workers, self.forwarder]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, self.forwarder]:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def fabric(tmp_path_factory: pytest.TempPathFactory, prefect_api: None) -> Iterator[LocalFabric]:
    from prefect.settings import PREFECT_API_URL

    fab = LocalFabric(tmp_path_factory.mktemp("fabric"))
    fab.env["PREFECT_API_URL"] = PREFECT_API_URL.value()  # as worker-prefect has it
    try:
        fab.add_worker()
        fab.add_worker()
        wait_for(lambda: fab.serving() == 2, "two replicas serving prefect.task")
        yield fab
    finally:
        fab.stop()
