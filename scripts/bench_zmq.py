"""The ZeroMQ systems of the benchmarks: the raw pyzmq floor and zmqflow.

Contract: ``echo_servers(n, logs)`` starts n raw ROUTER echo processes and
yields their endpoints once each has bound; ``raw_echo`` is the floor's Run
(one DEALER connected to every server, which round-robins over them).
``proxied_echo_servers(n, logs)`` puts libzmq's C proxy between the client
and n DEALER echo workers: the same Run through a broker that does nothing.
``fabric(...)`` starts a forwarder (tcp or ipc, journal file or
``:memory:``) and n Python or Rust workers of the ``echo`` service, and
yields the clients' endpoint once every worker has registered;
``zmqflow_echo`` is its Run through ``zmqflow.Client.stream``.
``rust_worker_binary()`` runs ``cargo build --release --locked`` (a no-op
when up to date) and returns the Rust worker; None when there is neither
cargo nor a binary.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import zmq
from bench_measure import free_port, processes, wait_until

from zmqflow import Client

ROOT = Path(__file__).resolve().parent.parent
RUST_DIR = ROOT / "services" / "worker-rust"
RUST_BIN = RUST_DIR / "target" / "release" / "zmqflow-worker"
CREDIT = 100  # tasks a worker holds; the best of 25..200 in bench-core (docs/benchmarks.md)

ECHO_SERVER = """
import pathlib, sys, zmq
sock = zmq.Context().socket(zmq.ROUTER)
sock.bind(sys.argv[1])
pathlib.Path(sys.argv[2]).touch()
while True:
    sock.send_multipart(sock.recv_multipart())
"""


PROXY = """
import pathlib, sys, zmq
ctx = zmq.Context()
front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
front.bind(sys.argv[1])
back.bind(sys.argv[2])
pathlib.Path(sys.argv[3]).touch()
zmq.proxy(front, back)
"""

PROXIED_ECHO = """
import pathlib, sys, zmq
sock = zmq.Context().socket(zmq.DEALER)
sock.connect(sys.argv[1])
pathlib.Path(sys.argv[2]).touch()
while True:
    sock.send_multipart(sock.recv_multipart())
"""


# ------------------------------------------------------------------ the floor
@contextmanager
def echo_servers(count: int, logs: Path) -> Iterator[list[str]]:
    endpoints = [f"tcp://127.0.0.1:{free_port()}" for _ in range(count)]
    ready = [logs / f"echo-ready-{free_port()}" for _ in range(count)]
    commands = [
        [sys.executable, "-c", ECHO_SERVER, ep, str(flag)]
        for ep, flag in zip(endpoints, ready, strict=True)
    ]
    with processes(*commands, logs=logs, name="echo"):
        wait_until(lambda: all(f.exists() for f in ready), 30, "raw echo servers")
        yield endpoints


@contextmanager
def proxied_echo_servers(count: int, logs: Path) -> Iterator[list[str]]:
    """Echo behind libzmq's own proxy (C, no Python in the middle): a broker's bare cost.

    Three processes and four hops, as in zmqflow, with nothing done on the way.
    """
    front, back = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    ready = [logs / f"proxy-ready-{free_port()}" for _ in range(count + 1)]
    commands = [[sys.executable, "-c", PROXY, front, back, str(ready[0])]] + [
        [sys.executable, "-c", PROXIED_ECHO, back, str(flag)] for flag in ready[1:]
    ]
    with processes(*commands, logs=logs, name="proxy"):
        wait_until(lambda: all(f.exists() for f in ready), 30, "libzmq proxy and echo workers")
        yield [front]


def raw_echo(
    count: int, window: int, endpoints: list[str], payload_bytes: int = 100
) -> tuple[float, list[float]]:
    """Pipelined echo; returns (throughput, per-message round trips in seconds)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    for endpoint in endpoints:
        sock.connect(endpoint)
    payload = b"x" * max(0, payload_bytes - 8)  # the 8-byte sequence number is part of it
    sent: dict[int, float] = {}
    rtts: list[float] = []
    next_seq = 0
    start = time.perf_counter()
    while len(rtts) < count:
        while next_seq < count and len(sent) < window:
            sent[next_seq] = time.perf_counter()
            sock.send(next_seq.to_bytes(8, "big") + payload, copy=payload_bytes < 8192)
            next_seq += 1
        reply = sock.recv(copy=True)
        rtts.append(time.perf_counter() - sent.pop(int.from_bytes(reply[:8], "big")))
    elapsed = time.perf_counter() - start
    sock.close()
    return count / elapsed, rtts


# -------------------------------------------------------------------- zmqflow
def zmqflow_echo(
    count: int, window: int, endpoint: str, payload_bytes: int = 100, keys: Path | None = None
) -> tuple[float, list[float]]:
    """Pipelined echo through zmqflow; with ``keys`` (curve_keys) the client uses CURVE."""
    payload = b"x" * payload_bytes
    with Client(endpoint, timeout=600, **curve_client(keys)) as client:
        start = time.perf_counter()
        results = list(client.stream("echo", (payload for _ in range(count)), window=window))
        elapsed = time.perf_counter() - start
    failed = [r for r in results if not r.ok]
    if len(results) != count or failed:
        raise RuntimeError(f"zmqflow: {len(results)} answers of {count}, {len(failed)} failed")
    return count / elapsed, [r.latency_s for r in results]


def rust_worker_binary(build: bool = True) -> Path | None:
    """The release Rust worker, brought up to date by cargo when cargo is at hand.

    cargo's own staleness check decides (a no-op when nothing changed), so a
    binary older than its sources is never measured; without cargo, an
    existing binary is used as it is.
    """
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if build and Path(cargo).exists():
        done = subprocess.run(
            [cargo, "build", "--release", "--locked", "--quiet"], cwd=RUST_DIR, check=False
        )
        if done.returncode != 0 and not RUST_BIN.exists():
            return None
    return RUST_BIN if RUST_BIN.exists() else None


def forwarder_cmd(journal: str, frontend: str, backend: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "zmqflow",
        "forwarder",
        "--frontend",
        frontend,
        "--backend",
        backend,
        "--events-in",
        f"tcp://127.0.0.1:{free_port()}",
        "--events-out",
        f"tcp://127.0.0.1:{free_port()}",
        "--journal",
        journal,
        "--metrics-port",
        "0",
        "--log-level",
        "WARNING",
    ]


def python_worker(backend: str, credit: int = CREDIT) -> list[str]:
    return [
        sys.executable,
        "-m",
        "zmqflow",
        "worker",
        "--connect",
        backend,
        "--service",
        "echo",
        "--credit",
        str(credit),
        "--log-level",
        "WARNING",
    ]


def rust_worker(backend: str, credit: int = CREDIT) -> list[str]:
    binary = rust_worker_binary(build=False)
    if binary is None:
        raise FileNotFoundError(f"no Rust worker at {RUST_BIN}")
    return [
        str(binary),
        "--connect",
        backend,
        "--service",
        "echo",
        "--credit",
        str(credit),
        "--log-level",
        "warn",
    ]


def curve_keys(folder: Path) -> Path:
    """Key pairs for a CURVE fabric in ``folder``: forwarder, client, worker, and allow-lists."""
    from zmqflow.security.keys import generate

    generate(folder, "forwarder", "client", "worker")
    for role in ("client", "worker"):
        (folder / f"allow-{role}s").mkdir()
        shutil.copy(folder / f"{role}.key", folder / f"allow-{role}s")
    return folder


def curve_client(keys: Path | None) -> dict[str, Path]:
    """Client keyword arguments for the client key of ``curve_keys`` (none: plain)."""
    if keys is None:
        return {}
    return {"curve_secret": keys / "client.key_secret", "curve_server": keys / "forwarder.key"}


def curve_args(keys: Path | None, role: str) -> list[str]:
    """Command-line options of the forwarder or a worker for ``curve_keys`` (none: plain)."""
    if keys is None:
        return []
    if role == "forwarder":
        return [
            "--curve-secret",
            str(keys / "forwarder.key_secret"),
            "--allow-clients",
            str(keys / "allow-clients"),
            "--allow-workers",
            str(keys / "allow-workers"),
        ]
    return [
        "--curve-secret",
        str(keys / "worker.key_secret"),
        "--curve-server",
        str(keys / "forwarder.key"),
    ]


def wait_workers(endpoint: str, count: int, keys: Path | None = None) -> None:
    with Client(endpoint, **curve_client(keys)) as client:
        wait_until(lambda: len(client.status(5)["workers"]) >= count, 60, "zmqflow workers", 0.1)


@contextmanager
def fabric(
    workers: int,
    language: str,
    transport: str,
    journal: bool,
    logs: Path,
    credit: int = CREDIT,
    keys: Path | None = None,
    metrics: bool = False,
) -> Iterator[str]:
    """A forwarder and ``workers`` echo workers; yields the clients' endpoint.

    With ``keys`` (``curve_keys``) every socket uses CURVE with the forwarder's roles;
    with ``metrics`` every process serves Prometheus metrics on a port of its own.
    """
    # ipc paths must stay under 107 bytes: a short folder of its own under /tmp
    where = Path(tempfile.mkdtemp(prefix="zfb-", dir="/tmp"))
    try:
        if transport == "ipc":
            front, back = f"ipc://{where}/front", f"ipc://{where}/back"
        else:
            front = f"tcp://127.0.0.1:{free_port()}"
            back = f"tcp://127.0.0.1:{free_port()}"
        path = str(where / "journal.db") if journal else ":memory:"
        make = python_worker if language == "python" else rust_worker
        commands = [forwarder_cmd(path, front, back) + curve_args(keys, "forwarder")]
        commands += [make(back, credit) + curve_args(keys, "worker") for _ in range(workers)]
        if metrics:
            commands = [[*command, "--metrics-port", str(free_port())] for command in commands]
        with processes(*commands, logs=logs, name=f"zmqflow-{language}"):
            wait_workers(front, workers, keys)
            yield front
    finally:
        shutil.rmtree(where, ignore_errors=True)
