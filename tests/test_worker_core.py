"""The worker's socket-free core (src/zmqflow/worker/core.py): what survives a socket."""

from __future__ import annotations

from zmqflow import protocol as p
from zmqflow.worker.core import WorkerCore


def core() -> WorkerCore:
    return WorkerCore("py-test", ["echo"], credit=4)


class Wire:
    """Plays the socket: takes ``room`` messages, then would block."""

    def __init__(self, room: int = 1000) -> None:
        self.room = room
        self.sent: list[p.Message] = []

    def send(self, frames: list[bytes]) -> bool:
        if self.room <= 0:
            return False
        self.room -= 1
        self.sent.append(p.decode(frames))
        return True


def test_answers_of_a_turn_leave_as_one_result_and_one_failed():
    c = core()
    c.running.update({"a", "b", "c"})
    c.take_answers([("a", b"A", None), ("b", None, "boom"), ("c", b"C", None)])
    wire = Wire()

    assert c.flush(wire.send)

    assert wire.sent == [
        p.WorkerResults([p.Done("a", b"A"), p.Done("c", b"C")]),
        p.WorkerFailures([p.Error("b", "boom")]),
    ]
    assert (c.running, c.completed) == (set(), 3)


def test_answers_the_socket_will_not_take_stay_and_are_listed_in_the_next_ready():
    c = core()
    c.take_answers([("a", b"A", None), ("b", None, "boom")])

    assert not c.flush(Wire(room=0).send)

    assert c.ready().inflight == ["a", "b"]
    wire = Wire()
    assert c.flush(wire.send)
    assert [type(m) for m in wire.sent] == [p.WorkerResults, p.WorkerFailures]


def test_answers_sent_but_not_heard_past_go_again_after_a_new_socket():
    c = core()
    c.take_answers([("a", b"A", None)])
    c.flush(Wire().send)

    c.new_socket(now=10.0)

    assert c.ready().inflight == ["a"]
    again = Wire()
    c.flush(again.send)
    assert again.sent == [p.WorkerResults([p.Done("a", b"A")])]


def test_answers_heard_past_are_confirmed_and_not_sent_again():
    c = core()
    c.take_answers([("a", b"A", None)])
    c.flush(Wire().send)

    c.heard(now=5.0)
    c.new_socket(now=6.0)

    assert c.ready().inflight == []
    assert c.held_answers() == 0


def test_a_draining_worker_announces_credit_0_and_its_running_tasks():
    c = core()
    c.running.add("t-1")
    assert c.ready().credit == 4

    c.draining = True

    ready = c.ready()
    assert (ready.credit, ready.inflight, ready.services) == (0, ["t-1"], ["echo"])


def test_silence_is_counted_from_the_last_time_the_forwarder_was_heard():
    c = WorkerCore("py-test", ["echo"], credit=1, heartbeat_interval=1.0, heartbeat_liveness=3)
    c.new_socket(now=100.0)
    assert not c.liveness.silent(102.9)
    c.heard(now=102.9)
    assert not c.liveness.silent(105.8)
    assert c.liveness.silent(106.0)


def test_nothing_is_held_only_without_running_tasks_waiting_or_held_answers():
    c = core()
    assert c.nothing_held(answers_waiting=False)
    assert not c.nothing_held(answers_waiting=True)
    c.running.add("t")
    assert not c.nothing_held(answers_waiting=False)
    c.take_answers([("t", b"", None)])
    assert not c.nothing_held(answers_waiting=False)  # held until sent and heard
    c.flush(Wire().send)
    c.heard(now=1.0)
    assert c.nothing_held(answers_waiting=False)
