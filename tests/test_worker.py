"""The Python worker (src/zmqflow/worker.py) against a scripted forwarder.

The worker runs in a thread on a real DEALER; the test plays the forwarder
with the ``fake`` fixture (tests/fabric.py's FakeForwarder: a ROUTER and the
reference codec). Batching is checked deterministically
by filling the worker's answer queue by hand and calling ``_send_answers``
(what the loop does once per turn).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import msgpack
import pytest
import zmq
from fabric import FakeForwarder

from zmqflow import protocol as p
from zmqflow.settings import WorkerSettings
from zmqflow.worker import Worker, run_in_thread


def upper(payload: bytes, headers: Mapping[str, Any]) -> bytes:
    return payload.upper()


def boom(payload: bytes, headers: Mapping[str, Any]) -> bytes:
    raise ValueError(f"bad {payload.decode()}")


def make_worker(endpoint: str, concurrency: int = 2) -> Worker:
    settings = WorkerSettings(connect=endpoint, concurrency=concurrency, worker_id="py-test")
    return Worker(settings, {"upper": upper, "boom": boom})


@pytest.fixture
def running(fake: FakeForwarder) -> Iterator[tuple[Worker, bytes]]:
    worker = make_worker(fake.endpoint)
    thread = run_in_thread(worker)
    rid, ready = fake.recv()
    assert isinstance(ready, p.Ready)
    yield worker, rid
    worker.stop()
    fake.sock.send_multipart([rid, *p.encode(p.WorkerHeartbeat())])
    thread.join(10)


def answers(fake: FakeForwarder, count: int) -> dict[str, p.Done | p.Error]:
    out: dict[str, p.Done | p.Error] = {}
    while len(out) < count:
        _, msg = fake.recv()
        assert isinstance(msg, p.WorkerResults | p.WorkerFailures), msg
        for item in msg.items:
            assert item.id not in out, f"{item.id} answered twice"
            out[item.id] = item
    return out


def test_every_task_of_a_batch_is_answered_once(fake, running):
    _, rid = running
    tasks = p.Tasks(
        [
            p.Dispatch("t-1", "upper", {}, 1, b"one"),
            p.Dispatch("t-2", "boom", {}, 1, b"two"),
            p.Dispatch("t-3", "nope", {}, 1, b""),
            p.Dispatch("t-4", "upper", {"h": 1}, 2, b"four"),
        ]
    )
    fake.sock.send_multipart([rid, *p.encode(tasks)])

    got = answers(fake, 4)

    assert got == {
        "t-1": p.Done("t-1", b"ONE"),
        "t-2": p.Error("t-2", "bad two"),
        "t-3": p.Error("t-3", "service 'nope' not served here"),
        "t-4": p.Done("t-4", b"FOUR"),
    }


def test_a_bad_task_in_a_batch_fails_by_id_and_the_others_run(fake, running):
    _, rid = running
    good = ["t-1", "upper", {}, 1, b"ok"]
    no_attempt = ["t-2", "upper", {}]
    unreadable = {"id": "t-3"}
    body = msgpack.packb([good, no_attempt, unreadable], use_bin_type=True)
    fake.sock.send_multipart([rid, p.WORKER_SIGNATURE, bytes([p.Command.W_TASK]), body])

    got = answers(fake, 2)

    assert got["t-1"] == p.Done("t-1", b"OK")
    assert isinstance(got["t-2"], p.Error)
    assert got["t-2"].error.startswith("malformed task: malformed")


# ------------------------------------------------------ answers per loop turn


@pytest.fixture
def idle(fake: FakeForwarder) -> Iterator[tuple[Worker, zmq.Socket]]:
    """A worker that is not running, its socket connected to the fake."""
    worker = make_worker(fake.endpoint)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(fake.endpoint)
    worker._sock = sock
    yield worker, sock
    sock.close(0)


def test_answers_finished_in_one_turn_go_in_one_result_and_one_failed(fake, idle):
    worker, _ = idle
    for i in range(3):
        worker._done.put((f"d-{i}", b"out", None))
    worker._done.put(("e-0", None, "boom"))
    worker._done.put(("e-1", None, "bang"))

    worker._send_answers()

    _, first = fake.recv()
    _, second = fake.recv()
    assert first == p.WorkerResults([p.Done(f"d-{i}", b"out") for i in range(3)])
    assert second == p.WorkerFailures([p.Error("e-0", "boom"), p.Error("e-1", "bang")])
    assert not fake.sock.poll(200)  # nothing else
    assert worker.completed == 5


def test_answers_of_a_turn_are_split_at_max_batch(fake, idle):
    worker, _ = idle
    for i in range(p.MAX_BATCH * 2 + 5):
        worker._done.put((f"d-{i}", b"", None))

    worker._send_answers()

    sizes = [len(fake.recv()[1].items) for _ in range(3)]
    assert sizes == [p.MAX_BATCH, p.MAX_BATCH, 5]
    assert not fake.sock.poll(200)


# ------------------------------------------------------ answers are never dropped


def _handshake_with(fake: FakeForwarder, worker: Worker) -> p.Ready:
    """Run the worker's handshake against the fake: READY in, a HEARTBEAT back."""
    thread = threading.Thread(target=worker._handshake)
    thread.start()
    rid, ready = fake.recv()
    assert isinstance(ready, p.Ready)
    fake.sock.send_multipart([rid, *p.encode(p.WorkerHeartbeat())])
    thread.join(10)
    assert not thread.is_alive()
    return ready


def test_answers_the_socket_will_not_take_are_kept_and_sent_after_the_next_ready(fake):
    worker = make_worker(fake.endpoint)
    worker._sock = zmq.Context.instance().socket(zmq.DEALER)  # no peer: every send is EAGAIN
    worker._done.put(("d-1", b"out", None))
    worker._done.put(("e-1", None, "boom"))

    worker._send_answers()  # EAGAIN: held, not dropped
    ready = _handshake_with(fake, worker)

    assert ready.inflight == ["d-1", "e-1"]  # listed as held, so not dispatched again
    _, first = fake.recv()
    _, second = fake.recv()
    assert first == p.WorkerResults([p.Done("d-1", b"out")])
    assert second == p.WorkerFailures([p.Error("e-1", "boom")])
    worker._sock.close(0)


def test_answers_sent_since_the_forwarder_was_last_heard_go_again_on_a_new_socket(fake, idle):
    worker, _ = idle
    worker._done.put(("d-1", b"out", None))
    worker._send_answers()
    _, lost_with_the_socket = fake.recv()  # the old forwarder may never have read it

    ready = _handshake_with(fake, worker)

    assert ready.inflight == ["d-1"]
    _, again = fake.recv()
    assert again == lost_with_the_socket == p.WorkerResults([p.Done("d-1", b"out")])
    worker._sock.close(0)


def test_answers_heard_past_are_not_sent_again(fake, idle):
    worker, _ = idle
    worker._done.put(("d-1", b"out", None))
    worker._send_answers()
    fake.recv()
    worker._heard()  # the forwarder spoke after our RESULT: it arrived

    ready = _handshake_with(fake, worker)

    assert ready.inflight == []
    assert not fake.sock.poll(300)
    worker._sock.close(0)


def test_a_worker_that_never_heard_the_forwarder_counts_silence_from_its_start():
    worker = make_worker("tcp://127.0.0.1:1")
    assert time.monotonic() - worker._last_heard < 5  # not the machine's uptime
    assert not worker._ever_heard
