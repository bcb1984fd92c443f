"""A real fabric of processes on loopback, for tests: forwarder, workers, CLI.

Every process is ``python -m zmqflow ...`` (or the Rust binary) started with
subprocess, logging to files under the test's tmp_path; ``stop()`` kills what
is left. Nothing is mocked: these are the programs users run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from zmqflow.client import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fabric:
    def __init__(self, tmp: Path, heartbeat_interval: float = 0.5) -> None:
        self.tmp = tmp
        self.heartbeat_interval = heartbeat_interval
        self.frontend = f"tcp://127.0.0.1:{free_port()}"
        self.backend = f"tcp://127.0.0.1:{free_port()}"
        self.events_in = f"tcp://127.0.0.1:{free_port()}"
        self.events_out = f"tcp://127.0.0.1:{free_port()}"
        # ipc paths must stay under 107 bytes: pytest's tmp paths can be long
        ipc_dir = Path("/tmp") / f"zf-{os.getpid()}-{free_port()}"
        ipc_dir.mkdir()
        self.ipc_dir = ipc_dir
        self.frontend_ipc = f"ipc://{ipc_dir}/frontend.sock"
        self.backend_ipc = f"ipc://{ipc_dir}/backend.sock"
        self.journal = tmp / "journal.db"
        self.forwarder: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._n = 0

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["ZMQFLOW_HEARTBEAT_INTERVAL"] = str(self.heartbeat_interval)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        self._n += 1
        log = open(self.tmp / f"{self._n:02d}-{name}.log", "wb")  # noqa: SIM115 - owned by Popen
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self._procs.append(proc)
        return proc

    def start_forwarder(self, *extra: str) -> subprocess.Popen[bytes]:
        args = [
            sys.executable,
            "-m",
            "zmqflow",
            "forwarder",
            "--frontend",
            self.frontend,
            "--frontend",
            self.frontend_ipc,
            "--backend",
            self.backend,
            "--backend",
            self.backend_ipc,
            "--events-in",
            self.events_in,
            "--events-out",
            self.events_out,
            "--journal",
            str(self.journal),
            *extra,
        ]
        self.forwarder = self._spawn("forwarder", args)
        self.wait_forwarder()
        return self.forwarder

    def wait_forwarder(self, timeout: float = 10.0) -> None:
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            try:
                self.status(timeout=0.5)
                return
            except Exception:
                time.sleep(0.05)
        raise TimeoutError("forwarder did not answer")

    def start_worker(
        self, *services: str, connect: str | None = None, extra: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "zmqflow", "worker", "--connect", connect or self.backend]
        for service in services or ("echo", "sleep", "sha256"):
            args += ["--service", service]
        proc = self._spawn("worker", [*args, *extra])
        self.workers.append(proc)
        return proc

    def start_rust_worker(
        self, binary: Path, *services: str, connect: str | None = None
    ) -> subprocess.Popen[bytes]:
        args = [str(binary), "--connect", connect or self.backend]
        for service in services:
            args += ["--service", service]
        proc = self._spawn("worker-rust", args)
        self.workers.append(proc)
        return proc

    def client(self, endpoint: str | None = None, timeout: float = 60.0) -> Client:
        return Client(
            endpoint or self.frontend, timeout=timeout, heartbeat_interval=self.heartbeat_interval
        )

    def status(self, timeout: float = 3.0) -> dict[str, Any]:
        with self.client() as c:
            return c.status(timeout)

    def wait_workers(self, count: int, timeout: float = 10.0) -> dict[str, Any]:
        until = time.monotonic() + timeout
        info: dict[str, Any] = {}
        while time.monotonic() < until:
            info = self.status()
            if len(info["workers"]) == count:
                return info
            time.sleep(0.1)
        raise TimeoutError(f"expected {count} workers, status says {info.get('workers')}")

    def wait_holding(self, worker: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        """Wait until the forwarder shows this worker process holding a task."""
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            for w in self.status()["workers"]:
                if w["pid"] == worker.pid and w["inflight"] > 0:
                    return
            time.sleep(0.02)
        raise TimeoutError(f"worker {worker.pid} never held a task")

    def wait_holding_tasks(self, count: int, timeout: float = 30.0) -> None:
        """Wait until the forwarder holds at least ``count`` accepted (journaled),
        unfinished tasks; new ones wait up to journal_defer_ms to be journaled."""
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            info = self.status()
            held = info["inflight"] + sum(info["queues"].values())
            if held - info["unjournaled"] >= count:
                return
            time.sleep(0.02)
        raise TimeoutError(f"the forwarder never held {count} unfinished tasks")

    def submit_cli(self, *args: str, endpoint: str | None = None) -> subprocess.Popen[bytes]:
        """``zmqflow submit ... --json`` in the background; read with ``summary``."""
        cmd = [
            sys.executable,
            "-m",
            "zmqflow",
            "submit",
            "--connect",
            endpoint or self.frontend,
            *args,
            "--json",
        ]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)

    @staticmethod
    def summary(proc: subprocess.Popen[bytes], timeout: float = 300.0) -> dict[str, Any]:
        out, errout = proc.communicate(timeout=timeout)
        lines = out.decode().strip().splitlines()
        assert lines, f"submit printed nothing; stderr: {errout.decode()[-2000:]}"
        return json.loads(lines[-1])

    def log(self, name: str) -> str:
        logs = sorted(self.tmp.glob(f"*{name}*.log"))
        return "\n".join(path.read_text(errors="replace") for path in logs)

    @staticmethod
    def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(timeout=10)
        for sock in self.ipc_dir.glob("*"):
            sock.unlink()
        self.ipc_dir.rmdir()
