"""Test fabrics on loopback: real processes (``Fabric``) and a scripted forwarder.

Contract: ``Fabric`` starts the programs users run (``python -m zmqflow
forwarder|worker|submit``, the Rust worker binary) with subprocess, with no
ZMQFLOW_* setting leaking in from the caller's environment, logging to files
under the test's tmp_path, and waits on probes (the forwarder's STATUS);
``stop()`` kills what is left. ``FakeForwarder`` is the one scripted
forwarder of the worker tests (Python and Rust): a ROUTER speaking the
protocol through the reference codec (zmqflow.protocol). ``wait_for`` is the
polling probe with a deadline that tests use instead of sleeps.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import zmq

from zmqflow import protocol as p
from zmqflow.client import Client

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    """This process's environment without ZMQFLOW_* settings that could leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ZMQFLOW_")}


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    """Call ``probe`` until it returns something truthy (returned); fail naming ``what``."""
    until = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < until, f"timed out after {timeout:g}s waiting for {what}"
        time.sleep(0.02)


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
        env = clean_env()
        env["ZMQFLOW_HEARTBEAT_INTERVAL"] = str(self.heartbeat_interval)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        self._n += 1
        log = open(self.tmp / f"{self._n:02d}-{name}.log", "wb")  # noqa: SIM115 - owned by Popen
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env={**self.env, **(env or {})}
        )
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

    def wait_forwarder(self, timeout: float = 20.0) -> None:
        until = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < until:
            try:
                self.status(timeout=1.0)
                return
            except Exception as exc:  # not up yet: ask again
                last = exc
                time.sleep(0.05)
        raise TimeoutError(
            f"forwarder did not answer in {timeout:g}s (last: {last!r}); "
            f"its log ends: {self.log('forwarder')[-2000:]}"
        )

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
        self,
        binary: Path,
        *services: str,
        connect: str | None = None,
        env: dict[str, str] | None = None,
        **opts: Any,
    ) -> subprocess.Popen[bytes]:
        """The Rust worker; ``opts`` become options (``credit=3`` is ``--credit 3``),
        ``env`` adds variables (``ZMQFLOW_*`` ones included)."""
        proc = self._spawn(
            "worker-rust", rust_args(binary, connect or self.backend, *services, **opts), env
        )
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


RUST_CRATE = Path(__file__).resolve().parents[1] / "services" / "worker-rust"


@functools.cache
def rust_worker_binary() -> Path:
    """services/worker-rust built once per session (``cargo build --release --locked``);
    a build failure fails the caller (it does not skip)."""
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    assert Path(cargo).exists(), "cargo is not installed: cannot build services/worker-rust"
    build = subprocess.run(
        [cargo, "build", "--release", "--locked"],
        cwd=RUST_CRATE,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, f"cargo build failed:\n{build.stderr[-4000:]}"
    binary = RUST_CRATE / "target" / "release" / "zmqflow-worker"
    assert binary.exists()
    return binary


def rust_args(binary: Path, endpoint: str, *services: str, **opts: Any) -> list[str]:
    """The Rust worker's command line; ``opts`` become options (``credit=3``: ``--credit 3``)."""
    args = [str(binary), "--connect", endpoint]
    for service in services:
        args += ["--service", service]
    for key, value in opts.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


class FakeForwarder:
    """A ROUTER on loopback that plays the forwarder for workers, through the reference codec.

    ``recv`` returns whole messages, heartbeats skipped unless asked for;
    ``recv_item`` hands batched answers out item by item (a RESULT of three
    outputs is three ``p.Done``), heartbeats included; ``expect`` waits for
    the next item of a kind. Do not mix ``recv`` with the item readers
    while a batch is half read.
    """

    def __init__(
        self, curve_secret: bytes | None = None, ctx: zmq.Context[Any] | None = None
    ) -> None:
        """``curve_secret`` (Z85): a CURVE server; its ZAP handler is the caller's
        (a zmq.auth authenticator on ``ctx``, by default ``zmq.Context.instance()``)."""
        self.sock = (ctx or zmq.Context.instance()).socket(zmq.ROUTER)
        self.sock.linger = 0
        if curve_secret is not None:
            self.sock.curve_secretkey = curve_secret
            self.sock.curve_server = True
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self._items: list[tuple[bytes, Any]] = []

    def recv(self, timeout: float = 5.0, heartbeats: bool = False) -> tuple[bytes, p.Message]:
        until = time.monotonic() + timeout
        while True:
            if not self.sock.poll(int(max(0.0, until - time.monotonic()) * 1000)):
                raise AssertionError(f"nothing from the worker in {timeout}s")
            rid, *frames = self.sock.recv_multipart()
            msg = p.decode(frames)
            if heartbeats or not isinstance(msg, p.WorkerHeartbeat):
                return rid, msg

    def recv_item(self, timeout: float = 5.0) -> tuple[bytes, Any]:
        if not self._items:
            rid, msg = self.recv(timeout, heartbeats=True)
            if not isinstance(msg, p.WorkerResults | p.WorkerFailures):
                return rid, msg
            self._items = [(rid, item) for item in msg.items]
        return self._items.pop(0)

    def expect(
        self, kind: Any, timeout: float = 5.0, skip_heartbeats: bool = True
    ) -> tuple[bytes, Any]:
        """The next item (or message) of ``kind`` (a type or a union); anything else fails."""
        until = time.monotonic() + timeout
        while True:
            rid, msg = self.recv_item(max(0.01, until - time.monotonic()))
            if (
                skip_heartbeats
                and isinstance(msg, p.WorkerHeartbeat)
                and kind is not p.WorkerHeartbeat
            ):
                continue
            assert isinstance(msg, kind), f"expected {kind}, got {msg!r}"
            return rid, msg

    def send(self, rid: bytes, msg: p.Message) -> None:
        self.sock.send_multipart([rid, *p.encode(msg)])

    def task(self, rid: bytes, task_id: str, service: str, payload: bytes, **headers: Any) -> None:
        """One TASK of one task, attempt 1."""
        self.send(rid, p.Tasks([p.Dispatch(task_id, service, headers, 1, payload)]))

    def close(self) -> None:
        self.sock.close(0)
