"""The Rust worker (services/worker-rust) with real processes on loopback.

Two groups:
- against a scripted forwarder (a pyzmq ROUTER speaking zmqflow.protocol):
  READY contents, RESULT/FAILED, heartbeats while handlers run, a new
  socket with ``inflight`` after a silent forwarder, drain on SIGTERM;
- against the real forwarder (``zmqflow forwarder``): cross-language
  conformance with the Python worker on 10,000 tasks, SIGKILL of a Rust
  worker mid-task, and a forwarder SIGKILL + restart on the same journal.

The binary is built once per session with ``cargo build --release``; a
build failure fails the tests (it does not skip them).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from zmqflow import Client
from zmqflow import protocol as p
from zmqflow.handlers import BUILTIN

ROOT = Path(__file__).resolve().parents[1]
CRATE = ROOT / "services" / "worker-rust"
BIN = CRATE / "target" / "release" / "zmqflow-worker"
ZMQFLOW = Path(sys.executable).with_name("zmqflow")


# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="session")
def rust_bin() -> Path:
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    if not Path(cargo).exists():
        pytest.fail("cargo is not installed: cannot build services/worker-rust")
    build = subprocess.run(
        [cargo, "build", "--release", "--locked"],
        cwd=CRATE,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if build.returncode != 0:
        pytest.fail(f"cargo build failed:\n{build.stderr[-4000:]}")
    assert BIN.exists()
    return BIN


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict[str, str]:
    """The environment without ZMQFLOW_* settings that could leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("ZMQFLOW_")}


class Proc:
    """A child process with its output in a log file; stopped by its own pid."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, stdout=self._out, stderr=subprocess.STDOUT, env=clean_env()
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self._out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start processes; every one of them is killed at teardown."""
    started: list[Proc] = []

    def start(name: str, args: list[str]) -> Proc:
        proc = Proc(args, tmp_path / f"{name}-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def rust_args(binary: Path, endpoint: str, *services: str, **opts: Any) -> list[str]:
    args = [str(binary), "--connect", endpoint]
    for service in services:
        args += ["--service", service]
    for key, value in opts.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    until = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > until:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


# ------------------------------------------------ against a scripted forwarder


class FakeForwarder:
    """A ROUTER that speaks ZFP/2 through the reference codec.

    ``recv`` hands out batched answers item by item (a RESULT of three
    outputs is three ``p.Done``); ``recv_message`` returns messages whole.
    """

    def __init__(self) -> None:
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self._items: list[tuple[bytes, p.Done | p.Error]] = []

    def recv_message(self, timeout: float = 5.0) -> tuple[bytes, p.Message]:
        if not self.sock.poll(int(timeout * 1000)):
            raise AssertionError(f"nothing from the worker in {timeout}s")
        rid, *frames = self.sock.recv_multipart()
        return rid, p.decode(frames)

    def recv(self, timeout: float = 5.0) -> tuple[bytes, Any]:
        if not self._items:
            rid, msg = self.recv_message(timeout)
            if not isinstance(msg, p.WorkerResults | p.WorkerFailures):
                return rid, msg
            self._items = [(rid, item) for item in msg.items]
        return self._items.pop(0)

    def expect(
        self, kind: type, timeout: float = 5.0, skip_heartbeats: bool = True
    ) -> tuple[bytes, Any]:
        until = time.monotonic() + timeout
        while True:
            rid, msg = self.recv(max(0.01, until - time.monotonic()))
            if (
                skip_heartbeats
                and isinstance(msg, p.WorkerHeartbeat)
                and kind is not p.WorkerHeartbeat
            ):
                continue
            assert isinstance(msg, kind), f"expected {kind.__name__}, got {msg!r}"
            return rid, msg

    def send(self, rid: bytes, msg: p.Message) -> None:
        self.sock.send_multipart([rid, *p.encode(msg)])

    def task(self, rid: bytes, task_id: str, service: str, payload: bytes, **headers: Any) -> None:
        self.send(rid, p.Tasks([p.Dispatch(task_id, service, headers, 1, payload)]))

    def close(self) -> None:
        self.sock.close(0)


@pytest.fixture
def fake() -> Iterator[FakeForwarder]:
    fwd = FakeForwarder()
    yield fwd
    fwd.close()


def test_ready_results_failures_and_disconnect(rust_bin, fake, procs):
    worker = procs(
        "rust",
        rust_args(
            rust_bin,
            fake.endpoint,
            "echo",
            "sha256",
            "rollup",
            "sleep",
            credit=3,
            worker_id="rust-test-1",
            heartbeat_interval=0.2,
        ),
    )
    rid, ready = fake.expect(p.Ready)
    assert (ready.worker, ready.language, ready.credit, ready.inflight) == (
        "rust-test-1",
        "rust",
        3,
        [],
    )
    assert ready.services == ["echo", "sha256", "rollup", "sleep"]
    assert ready.pid == worker.pid and ready.host and ready.version

    fake.task(rid, "t-1", "sha256", b"abc", trace="x1", prio=3, ratio=0.5, flag=True, none=None)
    _, done = fake.expect(p.Done)
    assert (done.id, done.payload) == ("t-1", hashlib.sha256(b"abc").hexdigest().encode())

    fake.task(rid, "t-2", "rollup", b"wrong,header\n")
    _, failed = fake.expect(p.Error)
    assert failed == p.Error(
        "t-2", "rollup: header must be region,product,quantity,unit_price_cents"
    )

    fake.task(rid, "t-3", "nope", b"")
    _, failed = fake.expect(p.Error)
    assert failed == p.Error("t-3", "service 'nope' not served here")

    payload = os.urandom(1024 * 1024)  # the forwarder's default payload limit
    fake.task(rid, "t-4", "echo", payload)
    _, done = fake.expect(p.Done)
    assert done.payload == payload

    fake.expect(p.WorkerHeartbeat, timeout=1.0)

    # A forwarder that does not know the worker says so; the worker announces again.
    fake.send(rid, p.Disconnect("unknown worker"))
    rid2, again = fake.expect(p.Ready)
    assert rid2 == rid and again.credit == 3 and again.inflight == []
    assert worker.popen.poll() is None


def test_heartbeats_flow_while_a_handler_runs(rust_bin, fake, procs):
    procs("rust", rust_args(rust_bin, fake.endpoint, "sleep", heartbeat_interval=0.2))
    rid, _ = fake.expect(p.Ready)
    fake.task(rid, "t-1", "sleep", b"1500")
    started = time.monotonic()
    beats = 0
    while True:
        _, msg = fake.recv(timeout=3.0)
        fake.send(rid, p.WorkerHeartbeat())  # keep the worker's liveness up
        if isinstance(msg, p.WorkerHeartbeat):
            beats += 1
            continue
        assert msg == p.Done("t-1", b"1500")
        break
    assert time.monotonic() - started >= 1.4
    assert beats >= 5, f"only {beats} heartbeats during a 1.5 s handler"


def test_concurrency_runs_handlers_in_parallel(rust_bin, fake, procs):
    procs("rust", rust_args(rust_bin, fake.endpoint, "sleep", concurrency=4))
    rid, ready = fake.expect(p.Ready)
    assert ready.credit == 8  # 2 x concurrency
    started = time.monotonic()
    fake.send(rid, p.Tasks([p.Dispatch(f"t-{i}", "sleep", {}, 1, b"1000") for i in range(4)]))
    ids = {fake.expect(p.Done)[1].id for _ in range(4)}
    assert ids == {"t-0", "t-1", "t-2", "t-3"}
    assert time.monotonic() - started < 3.0  # one after the other would take 4 s


def test_silent_forwarder_means_new_socket_listing_inflight(rust_bin, fake, procs):
    procs("rust", rust_args(rust_bin, fake.endpoint, "sleep", heartbeat_interval=0.2))
    rid, _ = fake.expect(p.Ready)
    fake.task(rid, "t-1", "sleep", b"6000")  # still running after four sockets
    # Say nothing more: after 3 silent intervals (0.6 s) + 0.1 s backoff the
    # worker opens a new socket (new routing id) and announces again.
    started = time.monotonic()
    rid2, ready = fake.expect(p.Ready, timeout=3.0)
    elapsed = time.monotonic() - started
    assert rid2 != rid
    assert ready.inflight == ["t-1"]
    assert 0.5 <= elapsed <= 1.5, elapsed
    # Still silent: the next sockets come after growing backoffs.
    times = [time.monotonic()]
    rids = {rid2}
    for _ in range(3):
        rid_n, again = fake.expect(p.Ready, timeout=5.0)
        rids.add(rid_n)
        times.append(time.monotonic())
        assert again.inflight == ["t-1"]
    assert len(rids) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 0.6 s of silence plus a backoff of 0.2, 0.4 then 0.8 s.
    assert gaps[-1] > gaps[0] + 0.3, gaps
    # Answer on the current socket: the worker stays, and the result arrives there.
    last = rid_n
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        fake.send(last, p.WorkerHeartbeat())
        r, msg = fake.recv(timeout=5)
        if isinstance(msg, p.Done):
            assert msg.id == "t-1"
            break
        if isinstance(msg, p.Ready):  # one more socket raced our heartbeat
            last = r
    else:
        raise AssertionError("no RESULT for t-1")


def test_sigterm_drains_then_exits_zero(rust_bin, fake, procs):
    worker = procs("rust", rust_args(rust_bin, fake.endpoint, "sleep", concurrency=2))
    rid, _ = fake.expect(p.Ready)
    fake.task(rid, "t-1", "sleep", b"600")
    fake.task(rid, "t-2", "sleep", b"700")
    time.sleep(0.2)
    worker.signal(signal.SIGTERM)
    _, ready = fake.expect(p.Ready)
    assert ready.credit == 0 and sorted(ready.inflight) == ["t-1", "t-2"]
    answered = {fake.expect(p.Done)[1].id for _ in range(2)}
    assert answered == {"t-1", "t-2"}
    # it leaves only after hearing the forwarder once more (a TASK sent before the
    # forwarder read the credit-0 READY would have arrived first)
    fake.sock.send_multipart([rid, *p.encode(p.WorkerHeartbeat())])
    _, bye = fake.expect(p.Disconnect)
    assert bye == p.Disconnect("drained")
    assert worker.wait(5) == 0


def test_every_task_of_a_batch_is_answered_and_bad_ones_fail_by_id(rust_bin, fake, procs):
    procs("rust", rust_args(rust_bin, fake.endpoint, "echo", "sha256", credit=8))
    rid, _ = fake.expect(p.Ready)
    items = [
        ["t-1", "echo", {}, 1, b"one"],
        ["t-2", "sha256", {}, 1, b"abc"],
        ["t-3", "nope", {}, 1, b""],
        ["t-4"],  # no service, headers, attempt, payload
        {"id": "t-5"},  # not an array: no readable id, dropped
    ]
    fake.sock.send_multipart([rid, p.WORKER_SIGNATURE, bytes([p.Command.W_TASK]), p._pack(items)])

    answers: dict[str, Any] = {}
    while len(answers) < 4:
        _, item = fake.expect(p.Done | p.Error)
        assert item.id not in answers, f"{item.id} answered twice"
        answers[item.id] = item
    assert answers["t-1"] == p.Done("t-1", b"one")
    assert answers["t-2"] == p.Done("t-2", hashlib.sha256(b"abc").hexdigest().encode())
    assert answers["t-3"] == p.Error("t-3", "service 'nope' not served here")
    assert answers["t-4"].error.startswith("malformed task: malformed")


def test_answers_resent_after_a_silent_forwarder_go_in_one_message(rust_bin, fake, procs):
    procs(
        "rust",
        rust_args(rust_bin, fake.endpoint, "sleep", concurrency=4, heartbeat_interval=0.2),
    )
    rid, _ = fake.expect(p.Ready)
    ids = [f"t-{i}" for i in range(4)]
    fake.send(rid, p.Tasks([p.Dispatch(i, "sleep", {}, 1, b"50") for i in ids]))
    # Answered on the first socket, but the forwarder never speaks again: after
    # 0.6 s the worker opens a new socket, lists the answers as in flight, and
    # sends them again, all in one RESULT.
    first = set()
    while True:
        r, msg = fake.recv_message(timeout=3.0)
        if isinstance(msg, p.WorkerResults):
            assert r == rid
            first.update(d.id for d in msg.items)
        elif isinstance(msg, p.Ready):
            rid2, ready = r, msg
            break
    assert first == set(ids)
    assert rid2 != rid
    assert sorted(ready.inflight) == ids
    while True:
        r, msg = fake.recv_message(timeout=3.0)
        if not isinstance(msg, p.WorkerHeartbeat):
            break
    assert r == rid2
    assert isinstance(msg, p.WorkerResults)
    assert sorted(msg.items, key=lambda d: d.id) == [p.Done(i, b"50") for i in ids]


def test_unknown_service_is_a_usage_error(rust_bin):
    run = subprocess.run(
        [str(rust_bin), "--connect", "tcp://127.0.0.1:1", "--service", "nope"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=10,
    )
    assert run.returncode == 2
    assert "unknown service 'nope'" in run.stderr


def test_health_subcommand(rust_bin, tmp_path):
    health = tmp_path / "health"

    def probe(max_age: str) -> int:
        return subprocess.run(
            [str(rust_bin), "health", "--file", str(health), "--max-age", max_age],
            capture_output=True,
            env=clean_env(),
            timeout=10,
        ).returncode

    assert probe("5") == 1  # missing
    health.touch()
    assert probe("5") == 0
    old = time.time() - 30
    os.utime(health, (old, old))
    assert probe("5") == 1


def test_health_file_is_touched_when_the_forwarder_speaks(rust_bin, fake, procs, tmp_path):
    health = tmp_path / "health"
    procs(
        "rust",
        rust_args(rust_bin, fake.endpoint, "echo", heartbeat_interval=0.2, health_file=health),
    )
    rid, _ = fake.expect(p.Ready)
    assert not health.exists()
    fake.send(rid, p.WorkerHeartbeat())
    wait_for(health.exists, 2, "the health file")


# ------------------------------------------------ against the real forwarder


class Forwarder:
    def __init__(self, procs: Callable[..., Proc], journal: Path) -> None:
        self.procs = procs
        self.journal = journal
        self.frontend = f"tcp://127.0.0.1:{free_port()}"
        self.backend = f"tcp://127.0.0.1:{free_port()}"
        self.events = (f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}")
        self.proc: Proc | None = None

    def start(self) -> Forwarder:
        self.proc = self.procs(
            "forwarder",
            [
                str(ZMQFLOW),
                "forwarder",
                "--frontend",
                self.frontend,
                "--backend",
                self.backend,
                "--events-in",
                self.events[0],
                "--events-out",
                self.events[1],
                "--journal",
                str(self.journal),
            ],
        )
        with Client(self.frontend, timeout=30) as c:
            wait_for(lambda: _status(c) is not None, 30, "the forwarder")
        return self

    def workers(self) -> list[dict[str, Any]]:
        with Client(self.frontend, timeout=5) as c:
            status = _status(c)
        return status["workers"] if status else []

    def wait_workers(self, languages: list[str], timeout: float = 20) -> None:
        wait_for(
            lambda: sorted(w["language"] for w in self.workers()) == sorted(languages),
            timeout,
            f"workers {languages}",
            step=0.1,
        )


def _status(client: Client) -> dict[str, Any] | None:
    try:
        return client.status(timeout=1.0)
    except TimeoutError:
        return None


@pytest.fixture
def forwarder(procs, tmp_path) -> Forwarder:
    return Forwarder(procs, tmp_path / "journal.db").start()


def python_worker_args(endpoint: str, *services: str, concurrency: int = 2) -> list[str]:
    args = [str(ZMQFLOW), "worker", "--connect", endpoint, "--concurrency", str(concurrency)]
    for service in services:
        args += ["--service", service]
    return args


def conformance_payloads(count: int) -> list[tuple[str, bytes]]:
    """Half sha256 (arbitrary bytes), half rollup (valid and broken CSVs)."""
    rng = random.Random(20240601)
    regions = ["eu", "us", "asia", " latam ", "afrique", "ωmega"]
    products = ["widget", "gadget", "café", "Gizmo", "b", "B", "ünïcode"]
    out: list[tuple[str, bytes]] = []
    for i in range(count // 2):
        out.append(("sha256", rng.randbytes(rng.randrange(0, 300))))
        rows = ["region,product,quantity,unit_price_cents"]
        for _ in range(rng.randrange(0, 12)):
            rows.append(
                f"{rng.choice(regions)},{rng.choice(products)},"
                f"{rng.randrange(0, 1000)},{rng.randrange(0, 2**31)}"
            )
        if i % 7 == 3:
            rows.append("")  # blank lines are skipped
        if i % 11 == 5:
            rows.insert(
                rng.randrange(1, len(rows) + 1),
                rng.choice(
                    ["eu,w,-1,5", "eu,w,1", ",w,1,1", "eu, ,1,1", "eu,w,1,2147483648", "eu,w,x,1"]
                ),
            )
        sep = "\r\n" if i % 5 == 0 else "\n"
        text = sep.join(rows) + sep
        if i % 13 == 6:
            text = "wrong,header\n" + text
        payload = text.encode()
        if i % 17 == 8:
            payload += b"\xff\xfe"
        out.append(("rollup", payload))
    return out


def run_all(
    endpoint: str, tasks: list[tuple[str, bytes]]
) -> list[tuple[bool, bytes, str | None, str]]:
    """(ok, payload, error, worker) per task, in task order."""
    answers: list[Any] = [None] * len(tasks)
    with Client(endpoint, timeout=120) as c:
        for service in ("sha256", "rollup"):
            idx = [i for i, (s, _) in enumerate(tasks) if s == service]
            results = c.map(service, [tasks[i][1] for i in idx], timeout=180)
            for i, r in zip(idx, results, strict=True):
                answers[i] = (r.ok, r.payload, r.error, r.worker)
    return answers


def test_cross_language_conformance_10k(rust_bin, forwarder, procs):
    tasks = conformance_payloads(10_000)
    assert len(tasks) == 10_000

    rust = procs("rust", rust_args(rust_bin, forwarder.backend, "sha256", "rollup", concurrency=2))
    forwarder.wait_workers(["rust"])
    by_rust = run_all(forwarder.frontend, tasks)
    rust.signal(signal.SIGTERM)
    assert rust.wait(15) == 0
    forwarder.wait_workers([])

    procs("python", python_worker_args(forwarder.backend, "sha256", "rollup"))
    forwarder.wait_workers(["python"])
    by_python = run_all(forwarder.frontend, tasks)

    assert all(w.startswith("rust-") for *_, w in by_rust)
    assert not any(w.startswith("rust-") for *_, w in by_python)
    mismatches = [
        (i, tasks[i], r[:3], py[:3])
        for i, (r, py) in enumerate(zip(by_rust, by_python, strict=True))
        if r[:3] != py[:3]
    ]
    assert not mismatches, f"{len(mismatches)} differ, first: {mismatches[:3]}"
    # And both equal the reference handlers, failures included.
    for (service, payload), (ok, out, error, _) in zip(tasks, by_rust, strict=True):
        try:
            want: tuple[bool, bytes, str | None] = (True, BUILTIN[service](payload, {}), None)
        except ValueError as exc:
            want = (False, b"", str(exc))
        assert (ok, out, error) == want
    failures = sum(1 for ok, *_ in by_rust if not ok)
    assert 0 < failures < 2_000  # the broken CSVs, and only those


def test_sigkill_of_a_rust_worker_loses_nothing(rust_bin, forwarder, procs):
    first = procs("rust-a", rust_args(rust_bin, forwarder.backend, "sleep", concurrency=4))
    forwarder.wait_workers(["rust"])
    results: list[Any] = []

    def client() -> None:
        with Client(forwarder.frontend, timeout=90) as c:
            results.extend(c.map("sleep", [b"200"] * 80, timeout=90))

    runner = threading.Thread(target=client)
    runner.start()
    time.sleep(1.5)  # the first worker is in the middle of its sleeps
    first.signal(signal.SIGKILL)
    first.wait(5)
    second = procs("rust-b", rust_args(rust_bin, forwarder.backend, "sleep", concurrency=4))
    runner.join(120)
    assert not runner.is_alive()

    assert len(results) == 80
    assert len({r.task_id for r in results}) == 80
    assert all(r.ok and r.payload == b"200" for r in results), [r for r in results if not r.ok]
    workers = {r.worker for r in results}
    assert len(workers) == 2, workers  # both replicas answered
    assert any(r.attempts >= 2 for r in results)  # some were requeued from the dead one
    assert second.popen.poll() is None


def test_rust_worker_survives_a_forwarder_restart(rust_bin, forwarder, procs):
    worker = procs("rust", rust_args(rust_bin, forwarder.backend, "sleep", concurrency=4))
    forwarder.wait_workers(["rust"])
    results: list[Any] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with Client(forwarder.frontend, timeout=90) as c:
                results.extend(c.map("sleep", [b"300"] * 60, timeout=90))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    runner = threading.Thread(target=client)
    runner.start()
    time.sleep(1.2)
    assert forwarder.proc is not None
    forwarder.proc.signal(signal.SIGKILL)
    forwarder.proc.wait(5)
    time.sleep(0.5)
    forwarder.start()  # same ports, same journal; returns once it answers STATUS
    restarted = time.monotonic()
    forwarder.wait_workers(["rust"], timeout=10)
    announced_after = time.monotonic() - restarted
    runner.join(120)
    assert not runner.is_alive() and not errors, errors

    assert announced_after < 2.5, announced_after
    assert len(results) == 60 and len({r.task_id for r in results}) == 60
    assert all(r.ok and r.payload == b"300" for r in results)
    assert worker.popen.poll() is None
    assert "CURVE" in worker.output()
