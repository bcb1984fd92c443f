"""The Rust worker (services/worker-rust) with real processes on loopback.

Two groups, both on tests/fabric.py (the ``fake`` and ``fabric`` fixtures):
- against the scripted forwarder (FakeForwarder, speaking zmqflow.protocol):
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
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fabric import Fabric, FakeForwarder, clean_env, rust_worker_binary, wait_for

from zmqflow import Client
from zmqflow import protocol as p
from zmqflow.handlers import BUILTIN

# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="session")
def rust_bin() -> Path:
    return rust_worker_binary()


# ------------------------------------------------ against a scripted forwarder


def test_ready_results_failures_and_disconnect(
    rust_bin: Path, fake: FakeForwarder, fabric: Fabric
) -> None:
    worker = fabric.start_rust_worker(
        rust_bin,
        "echo",
        "sha256",
        "rollup",
        "sleep",
        connect=fake.endpoint,
        credit=3,
        worker_id="rust-test-1",
        heartbeat_interval=0.2,
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
    assert worker.poll() is None


def test_heartbeats_flow_while_a_handler_runs(
    rust_bin: Path, fake: FakeForwarder, fabric: Fabric
) -> None:
    fabric.start_rust_worker(rust_bin, "sleep", heartbeat_interval=0.2, connect=fake.endpoint)
    rid, _ = fake.expect(p.Ready)
    fake.task(rid, "t-1", "sleep", b"1500")
    started = time.monotonic()
    beats = 0
    while True:
        _, msg = fake.recv_item(timeout=3.0)
        fake.send(rid, p.WorkerHeartbeat())  # keep the worker's liveness up
        if isinstance(msg, p.WorkerHeartbeat):
            beats += 1
            continue
        assert msg == p.Done("t-1", b"1500")
        break
    assert time.monotonic() - started >= 1.4
    assert beats >= 5, f"only {beats} heartbeats during a 1.5 s handler"


def test_concurrency_runs_handlers_in_parallel(
    rust_bin: Path, fake: FakeForwarder, fabric: Fabric
) -> None:
    fabric.start_rust_worker(rust_bin, "sleep", concurrency=4, connect=fake.endpoint)
    rid, ready = fake.expect(p.Ready)
    assert ready.credit == 8  # 2 x concurrency
    started = time.monotonic()
    fake.send(rid, p.Tasks([p.Dispatch(f"t-{i}", "sleep", {}, 1, b"1000") for i in range(4)]))
    ids = {fake.expect(p.Done)[1].id for _ in range(4)}
    assert ids == {"t-0", "t-1", "t-2", "t-3"}
    assert time.monotonic() - started < 3.0  # one after the other would take 4 s


def test_silent_forwarder_means_new_socket_listing_inflight(
    rust_bin: Path, fake: FakeForwarder, fabric: Fabric
) -> None:
    fabric.start_rust_worker(rust_bin, "sleep", heartbeat_interval=0.2, connect=fake.endpoint)
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
        r, msg = fake.recv_item(timeout=5)
        if isinstance(msg, p.Done):
            assert msg.id == "t-1"
            break
        if isinstance(msg, p.Ready):  # one more socket raced our heartbeat
            last = r
    else:
        raise AssertionError("no RESULT for t-1")


def test_sigterm_drains_then_exits_zero(
    rust_bin: Path, fake: FakeForwarder, fabric: Fabric
) -> None:
    worker = fabric.start_rust_worker(
        rust_bin, "sleep", concurrency=2, connect=fake.endpoint, log_level="debug"
    )
    rid, _ = fake.expect(p.Ready)
    fake.task(rid, "t-1", "sleep", b"600")
    fake.task(rid, "t-2", "sleep", b"700")
    # the drain must find both held: the worker logs each task it takes (debug)
    wait_for(lambda: "task t-2 (" in fabric.log("worker-rust"), "the worker taking t-2")
    worker.send_signal(signal.SIGTERM)
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


@pytest.mark.parametrize("holding", [False, True], ids=["idle", "holding-a-task"])
def test_a_draining_worker_that_cannot_reach_the_forwarder_exits_within_5_s(
    rust_bin: Path, fake: FakeForwarder, fabric: Fabric, holding: bool
) -> None:
    # the heartbeat interval users run with: silence is noticed after 3 s
    worker = fabric.start_rust_worker(
        rust_bin, "sleep", connect=fake.endpoint, heartbeat_interval=1.0, log_level="debug"
    )
    rid, _ = fake.expect(p.Ready)
    fake.send(rid, p.WorkerHeartbeat())  # heard once: the worker knows a forwarder
    if holding:
        fake.task(rid, "t-1", "sleep", b"60000")
        wait_for(lambda: "task t-1 (" in fabric.log("worker-rust"), "the worker taking t-1")
    fake.close()  # the forwarder is gone for good

    worker.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    worker.wait(timeout=30)
    took = time.monotonic() - signalled

    assert took < 5.0, (took, fabric.log("worker-rust")[-2000:])
    assert worker.returncode == 0
    if holding:  # it gave up on the task: the forwarder requeues it
        assert "leaving 1 tasks" in fabric.log("worker-rust")


def test_every_task_of_a_batch_is_answered_and_bad_ones_fail_by_id(
    rust_bin: Path, fake: FakeForwarder, fabric: Fabric
) -> None:
    fabric.start_rust_worker(rust_bin, "echo", "sha256", credit=8, connect=fake.endpoint)
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


def test_answers_resent_after_a_silent_forwarder_go_in_one_message(
    rust_bin: Path, fake: FakeForwarder, fabric: Fabric
) -> None:
    fabric.start_rust_worker(
        rust_bin, "sleep", connect=fake.endpoint, concurrency=4, heartbeat_interval=0.2
    )
    rid, _ = fake.expect(p.Ready)
    ids = [f"t-{i}" for i in range(4)]
    fake.send(rid, p.Tasks([p.Dispatch(i, "sleep", {}, 1, b"50") for i in ids]))
    # Answered on the first socket, but the forwarder never speaks again: after
    # 0.6 s the worker opens a new socket, lists the answers as in flight, and
    # sends them again, all in one RESULT.
    first = set()
    while True:
        r, msg = fake.recv(timeout=3.0, heartbeats=True)
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
        r, msg = fake.recv(timeout=3.0, heartbeats=True)
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


def test_health_file_is_touched_when_the_forwarder_speaks(
    rust_bin: Path, fake: FakeForwarder, fabric: Fabric, tmp_path: Path
) -> None:
    health = tmp_path / "health"
    fabric.start_rust_worker(
        rust_bin, "echo", connect=fake.endpoint, heartbeat_interval=0.2, health_file=health
    )
    rid, _ = fake.expect(p.Ready)
    assert not health.exists()
    fake.send(rid, p.WorkerHeartbeat())
    wait_for(health.exists, "the health file", timeout=2)


# ------------------------------------------------ against the real forwarder


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


def _languages(status: dict[str, Any]) -> list[str]:
    return sorted(w["language"] for w in status["workers"])


def test_cross_language_conformance_10k(rust_bin: Path, fabric: Fabric) -> None:
    tasks = conformance_payloads(10_000)
    assert len(tasks) == 10_000
    fabric.start_forwarder()

    rust = fabric.start_rust_worker(rust_bin, "sha256", "rollup", concurrency=2)
    assert _languages(fabric.wait_workers(1)) == ["rust"]
    by_rust = run_all(fabric.frontend, tasks)
    rust.send_signal(signal.SIGTERM)
    assert rust.wait(15) == 0
    fabric.wait_workers(0)

    fabric.start_worker("sha256", "rollup", extra=("--concurrency", "2"))
    assert _languages(fabric.wait_workers(1)) == ["python"]
    by_python = run_all(fabric.frontend, tasks)

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


def test_sigkill_of_a_rust_worker_loses_nothing(rust_bin: Path, fabric: Fabric) -> None:
    fabric.start_forwarder()
    first = fabric.start_rust_worker(rust_bin, "sleep", concurrency=4)
    fabric.wait_workers(1)
    results: list[Any] = []

    def client() -> None:
        with Client(fabric.frontend, timeout=90) as c:
            results.extend(c.map("sleep", [b"200"] * 80, timeout=90))

    runner = threading.Thread(target=client)
    runner.start()
    # the first worker has answered some tasks, and holds others when killed
    wait_for(lambda: fabric.status()["counters"]["completed"] >= 8, "8 answers")
    fabric.wait_holding(first)
    fabric.kill(first)
    second = fabric.start_rust_worker(rust_bin, "sleep", concurrency=4)
    runner.join(120)
    assert not runner.is_alive()

    assert len(results) == 80
    assert len({r.task_id for r in results}) == 80
    assert all(r.ok and r.payload == b"200" for r in results), [r for r in results if not r.ok]
    workers = {r.worker for r in results}
    assert len(workers) == 2, workers  # both replicas answered
    assert any(r.attempts >= 2 for r in results)  # some were requeued from the dead one
    assert second.poll() is None


def test_rust_worker_survives_a_forwarder_restart(rust_bin: Path, fabric: Fabric) -> None:
    forwarder = fabric.start_forwarder()
    worker = fabric.start_rust_worker(rust_bin, "sleep", concurrency=4)
    fabric.wait_workers(1)
    results: list[Any] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with Client(fabric.frontend, timeout=90) as c:
                results.extend(c.map("sleep", [b"300"] * 60, timeout=90))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    runner = threading.Thread(target=client)
    runner.start()
    fabric.wait_holding(worker)  # the kill must catch tasks in flight ...
    fabric.wait_holding_tasks(20)  # ... and journaled ones still to run
    fabric.kill(forwarder)  # returns once it is dead
    fabric.start_forwarder()  # same ports, same journal; returns once it answers STATUS
    restarted = time.monotonic()
    fabric.wait_workers(1, timeout=10)
    announced_after = time.monotonic() - restarted
    runner.join(120)
    assert not runner.is_alive() and not errors, errors

    assert announced_after < 2.5, announced_after
    assert len(results) == 60 and len({r.task_id for r in results}) == 60
    assert all(r.ok and r.payload == b"300" for r in results)
    assert worker.poll() is None
    assert "CURVE" in fabric.log("worker-rust")
