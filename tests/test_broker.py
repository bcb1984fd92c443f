"""The sans-IO broker (src/zmqflow/forwarder/broker.py) driven with ZFP/2 frames.

Each test plays the forwarder loop by hand: messages go in through
``on_client`` / ``on_worker``, then ``turn()`` does what the device does once
per loop turn (dispatch, journal commit, send the outboxes) and hands back
the decoded replies. Routing ids are arbitrary bytes (``b"c1"``, ``b"w1"``)
and time is a fake clock (``now``) that the broker and its journal read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest

import zmqflow
from zmqflow import protocol as p
from zmqflow.forwarder.broker import Broker, Limits
from zmqflow.journal import Journal

Sent = list[tuple[bytes, p.Message]]


@dataclass
class Turn:
    """What the broker sent during one loop turn, decoded."""

    clients: Sent
    workers: Sent

    def to(self, rid: bytes) -> list[p.Message]:
        return [msg for r, msg in self.clients + self.workers if r == rid]

    def task_messages(self, rid: bytes | None = None) -> list[p.Tasks]:
        return [
            msg for r, msg in self.workers if isinstance(msg, p.Tasks) and (rid is None or r == rid)
        ]

    def tasks(self, rid: bytes | None = None) -> list[p.Dispatch]:
        return [item for msg in self.task_messages(rid) for item in msg.items]

    def task_ids(self, rid: bytes | None = None) -> list[str]:
        return [msg.id for msg in self.tasks(rid)]


@dataclass
class Forwarder:
    """A broker on a journal, with a fake clock and the events it published."""

    journal: Journal
    limits: Limits = field(default_factory=Limits)
    now: float = 1000.0

    def __post_init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        # one fake time for the broker's rules and the journal's timestamps
        self.journal.clock = lambda: 1_700_000_000.0 + self.now
        self.broker = Broker(
            self.journal,
            self.limits,
            lambda k, d: self.events.append((k, d)),
            clock=lambda: self.now,
        )

    # -- inputs
    def client(self, rid: bytes, msg: p.Message | list[bytes]) -> None:
        frames = msg if isinstance(msg, list) else p.encode(msg)
        self.broker.on_client(rid, frames)

    def worker(self, rid: bytes, msg: p.Message | list[bytes]) -> None:
        frames = msg if isinstance(msg, list) else p.encode(msg)
        self.broker.on_worker(rid, frames, self.now)

    def submit(self, rid: bytes, *tasks: p.Task) -> None:
        self.client(rid, p.Submit(list(tasks)))

    def ready(
        self,
        rid: bytes,
        services: list[str] | None = None,
        credit: int = 10,
        inflight: list[str] | None = None,
    ) -> None:
        name = rid.decode()
        msg = p.Ready(name, "python", services or ["echo"], credit, inflight or [], "0.1.0", 1, "h")
        self.worker(rid, msg)

    def done(self, rid: bytes, task_id: str, payload: bytes = b"out") -> None:
        self.worker(rid, p.WorkerResults([p.Done(task_id, payload)]))

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.broker.tick(self.now)

    # -- one loop turn
    def turn(self) -> Turn:
        broker = self.broker
        broker.dispatch()
        broker.journal_due()
        self.journal.commit()
        clients = [(rid, p.decode(frames)) for rid, frames in broker.outbox_clients.take()]
        workers = [(rid, p.decode(frames)) for rid, frames in broker.outbox_workers.take()]
        return Turn(clients, workers)

    def restart(self) -> Forwarder:
        """A new broker on the same journal file, as after a SIGKILL."""
        self.journal.commit()
        return Forwarder(Journal(self.journal.path), self.limits, self.now)


def task(task_id: str, service: str = "echo", payload: bytes = b"in", **kw: Any) -> p.Task:
    return p.Task(task_id, service, payload, **kw)


def only(messages: list[p.Message], kind: type) -> list[Any]:
    return [m for m in messages if isinstance(m, kind)]


def answers(messages: list[p.Message]) -> list[Any]:
    """The items of RESULT and FAILED messages; any other message fails the test."""
    assert all(isinstance(m, p.Results | p.Failures) for m in messages), messages
    return [item for m in messages for item in m.items]


def items(messages: list[p.Message], kind: type) -> list[Any]:
    """The items of every batched message of ``kind`` (Results, Failures...), in order."""
    return [item for m in only(messages, kind) for item in m.items]


@pytest.fixture
def fwd() -> Forwarder:
    return Forwarder(Journal(":memory:"))


@pytest.fixture
def file_fwd(tmp_path: Path) -> Forwarder:
    return Forwarder(Journal(str(tmp_path / "journal.db")))


def run_to_dispatch(fwd: Forwarder, client: bytes, worker: bytes, *tasks: p.Task) -> Turn:
    fwd.ready(worker)
    fwd.submit(client, *tasks)
    return fwd.turn()


# ------------------------------------------------------------------ services


def test_a_task_for_a_service_no_worker_ever_offered_is_refused_unknown_service(fwd):
    fwd.submit(b"c1", task("t-1", "nope"))

    out = fwd.turn()

    assert out.to(b"c1") == [p.Refused(["t-1"], "unknown_service", out.to(b"c1")[0].reason)]
    assert "nope" in out.to(b"c1")[0].reason
    assert fwd.broker.tasks == {}


def test_ready_makes_its_services_known_and_tasks_for_them_are_accepted_and_dispatched(fwd):
    fwd.ready(b"w1", ["echo", "sha256"])
    fwd.submit(b"c1", task("t-1", "sha256", b"abc"))

    out = fwd.turn()

    assert out.to(b"c1") == [p.Accepted(["t-1"])]
    assert out.tasks(b"w1") == [p.Dispatch("t-1", "sha256", {}, 1, b"abc")]


def test_a_service_stays_known_after_its_last_worker_left_and_tasks_queue_for_it(fwd):
    fwd.ready(b"w1")
    fwd.worker(b"w1", p.Disconnect("drained"))
    fwd.submit(b"c1", task("t-1"))

    out = fwd.turn()

    assert out.to(b"c1") == [p.Accepted(["t-1"])]
    assert out.tasks() == []
    assert fwd.broker.status()["queues"] == {"echo": 1}


# -------------------------------------------------------------------- submit


def test_in_a_mixed_batch_only_the_valid_tasks_are_accepted_and_each_bad_one_is_refused_by_id(
    fwd,
):
    fwd.broker.limits.max_payload_bytes = 10
    fwd.ready(b"w1", credit=0)
    fwd.submit(
        b"c1",
        task("good-1"),
        task("bad id!"),
        task("big", payload=b"x" * 11),
        task("lost", "nope"),
        task("bad-service", "a/b"),
        task("good-2", payload=b"x" * 10),
    )

    replies = fwd.turn().to(b"c1")

    assert only(replies, p.Accepted) == [p.Accepted(["good-1", "good-2"])]
    refused = {i: r.code for r in only(replies, p.Refused) for i in r.ids}
    assert refused == {
        "bad id!": "malformed",
        "bad-service": "malformed",
        "big": "too_large",
        "lost": "unknown_service",
    }
    assert set(fwd.broker.tasks) == {"good-1", "good-2"}
    assert fwd.broker.counters["accepted"] == 2
    assert fwd.broker.counters["refused"] == 4


def test_a_submit_with_an_undecodable_task_still_accepts_the_others(fwd):
    fwd.ready(b"w1", credit=0)
    good = ["good", "echo", b"", None, {}, None]
    bad = ["bad", "echo", b"", None, {}, -1]  # retries: -1
    fwd.client(b"c1", [p.CLIENT_SIGNATURE, b"\x01", msgpack.packb([good, bad])])

    replies = fwd.turn().to(b"c1")

    assert only(replies, p.Accepted) == [p.Accepted(["good"])]
    assert [(r.code, r.ids) for r in only(replies, p.Refused)] == [("malformed", ["bad"])]


def test_a_submit_over_max_batch_is_refused_whole_as_too_large_naming_its_ids(fwd):
    fwd.broker.limits.max_batch = 2
    fwd.ready(b"w1")
    fwd.submit(b"c1", task("a"), task("b"), task("c"))

    out = fwd.turn()

    # the ids tell a client with several SUBMITs in flight which one was refused
    assert [(m.code, m.ids) for m in out.to(b"c1")] == [("too_large", ["a", "b", "c"])]
    assert fwd.broker.tasks == {}


def test_a_submit_over_max_batch_names_only_the_ids_it_can_read(fwd):
    fwd.broker.limits.max_batch = 1
    body = msgpack.packb([["a", "echo", b"", None, {}, None], ["bad id!"], 7], use_bin_type=True)

    fwd.client(b"c1", [p.CLIENT_SIGNATURE, b"\x01", body])

    assert [(m.code, m.ids) for m in fwd.turn().to(b"c1")] == [("too_large", ["a"])]


def test_accepted_tasks_are_journaled_and_the_accepted_reply_waits_in_the_outbox(file_fwd):
    file_fwd.ready(b"w1", credit=0)
    file_fwd.submit(b"c1", task("t-1"))
    other = Journal(file_fwd.journal.path)

    assert file_fwd.journal.dirty  # the device commits before it sends the outbox
    assert other.load_unfinished() == []
    out = file_fwd.turn()
    assert out.to(b"c1") == [p.Accepted(["t-1"])]
    assert [t.id for t in other.load_unfinished()] == ["t-1"]


# ------------------------------------------------- deferred journaling


@pytest.fixture
def deferred(tmp_path: Path) -> Forwarder:
    """A broker whose new tasks wait a minute to be journaled (tests move the
    fake clock past that with ``make_due``)."""
    return Forwarder(Journal(str(tmp_path / "journal.db")), Limits(journal_defer_s=60))


def make_due(fwd: Forwarder) -> None:
    """The clock moves to the deadline of every task waiting to be journaled."""
    fwd.now += fwd.limits.journal_defer_s


def stored_state(fwd: Forwarder, task_id: str) -> str | None:
    fwd.journal.commit()
    answer = Journal(fwd.journal.path).answers([task_id]).get(task_id)
    return answer.state if answer else None


def test_a_new_task_is_dispatched_at_once_but_acknowledged_only_once_journaled(deferred):
    deferred.ready(b"w1")
    deferred.submit(b"c1", task("t-1"))

    out = deferred.turn()

    assert out.task_ids(b"w1") == ["t-1"]
    assert out.to(b"c1") == []  # no ACCEPTED: nothing durable yet
    assert stored_state(deferred, "t-1") is None


def test_a_task_finished_before_its_deadline_is_journaled_once_its_answer_acknowledging_it(
    deferred,
):
    deferred.ready(b"w1")
    deferred.submit(b"c1", task("t-1"))
    deferred.turn()

    deferred.done(b"w1", "t-1", b"out")
    out = deferred.turn()

    # no separate ACCEPTED: the RESULT leaves after the commit that holds it
    assert out.to(b"c1") == [p.Results([p.Result("t-1", "w1", 1, False, b"out")])]
    assert stored_state(deferred, "t-1") == "done"
    assert deferred.broker.unjournaled == {}


def test_a_task_still_running_at_its_deadline_is_journaled_pending_and_acknowledged(deferred):
    deferred.ready(b"w1")
    deferred.submit(b"c1", task("t-1"))
    deferred.turn()

    make_due(deferred)
    out = deferred.turn()

    assert out.to(b"c1") == [p.Accepted(["t-1"])]
    assert stored_state(deferred, "t-1") == "pending"
    deferred.done(b"w1", "t-1")
    deferred.turn()
    assert stored_state(deferred, "t-1") == "done"


def test_a_waiting_task_is_journaled_when_the_clock_reaches_its_deadline_not_before(deferred):
    deferred.ready(b"w1", credit=0)
    deferred.submit(b"c1", task("t-1"))

    deferred.now += 59.5
    assert deferred.turn().to(b"c1") == []
    deferred.now += 0.5
    assert deferred.turn().to(b"c1") == [p.Accepted(["t-1"])]


def test_the_loop_learns_when_the_oldest_waiting_task_falls_due(deferred):
    assert deferred.broker.next_journal_due() == float("inf")
    deferred.ready(b"w1", credit=0)
    deferred.submit(b"c1", task("t-1"))
    deferred.submit(b"c1", task("t-2"))

    first = deferred.broker.unjournaled["t-1"].accepted_at
    assert deferred.broker.next_journal_due() == first + 60


def test_a_task_never_journaled_is_unknown_after_a_restart_and_is_taken_again(deferred):
    deferred.ready(b"w1", credit=0)
    deferred.submit(b"c1", task("t-1"))
    deferred.turn()

    again = deferred.restart()
    again.ready(b"w1")
    again.submit(b"c1", task("t-1"))  # the client never saw ACCEPTED: it sends again
    make_due(again)
    out = again.turn()

    assert again.broker.tasks.keys() == {"t-1"}
    assert out.to(b"c1") == [p.Accepted(["t-1"])]


def test_a_key_joining_a_waiting_task_has_it_journaled_at_once(deferred):
    deferred.ready(b"w1", credit=0)
    deferred.submit(b"c1", task("first", key="k"))
    deferred.turn()

    deferred.submit(b"c2", task("second", key="k"))
    out = deferred.turn()

    assert out.to(b"c1") == [p.Accepted(["first"])]
    assert out.to(b"c2") == [p.Accepted(["second"])]
    assert stored_state(deferred, "first") == "pending"


def test_a_resent_submit_of_a_waiting_task_has_it_journaled_and_acknowledged(deferred):
    deferred.ready(b"w1", credit=0)
    deferred.submit(b"c1", task("t-1"))
    deferred.turn()

    deferred.submit(b"c1", task("t-1"))
    out = deferred.turn()

    assert out.to(b"c1") == [p.Accepted(["t-1"])]
    assert stored_state(deferred, "t-1") == "pending"


def test_a_waiting_task_dead_lettered_keeps_its_payload_for_retry(tmp_path: Path):
    fwd = Forwarder(
        Journal(str(tmp_path / "journal.db")), Limits(journal_defer_s=60, max_retries=0)
    )
    fwd.ready(b"w1")
    fwd.submit(b"c1", task("t-1", payload=b"again"))
    fwd.turn()

    fwd.tick(10)  # w1 silent past its deadline: lost, and t-1 had no retry left
    out = fwd.turn()

    assert [(f.id, f.code) for f in items(out.to(b"c1"), p.Failures)] == [("t-1", "dead_letter")]
    assert only(out.to(b"c1"), p.Accepted) == []  # the FAILED acknowledges it
    assert [d.payload for d in fwd.journal.dead_letters(["t-1"])] == [b"again"]


def test_a_waiting_task_requeued_after_a_lost_worker_is_journaled_with_its_attempts(deferred):
    deferred.ready(b"w1")
    deferred.submit(b"c1", task("t-1"))
    deferred.turn()
    deferred.tick(10)  # w1 lost: t-1 queued again, one attempt spent
    deferred.turn()

    make_due(deferred)
    deferred.turn()
    deferred.journal.commit()

    (stored,) = Journal(deferred.journal.path).load_unfinished()
    assert (stored.id, stored.attempts) == ("t-1", 1)


def test_queue_full_is_refused_past_max_queue_and_room_comes_back_as_tasks_finish(fwd):
    fwd.broker.limits.max_queue = 2
    fwd.ready(b"w1", credit=1)
    fwd.submit(b"c1", task("t-1"), task("t-2"), task("t-3"))

    replies = fwd.turn().to(b"c1")
    fwd.done(b"w1", "t-1")
    fwd.submit(b"c1", task("t-4"))
    later = fwd.turn().to(b"c1")

    assert only(replies, p.Accepted) == [p.Accepted(["t-1", "t-2"])]
    assert [(r.code, r.ids) for r in only(replies, p.Refused)] == [("queue_full", ["t-3"])]
    assert p.Accepted(["t-4"]) in later


def test_queue_full_when_queued_payload_bytes_pass_max_queue_bytes(fwd):
    fwd.broker.limits.max_queue_bytes = 10
    fwd.ready(b"w1", credit=0)
    fwd.submit(b"c1", task("a", payload=b"x" * 6), task("b", payload=b"x" * 6))

    replies = fwd.turn().to(b"c1")

    assert only(replies, p.Accepted) == [p.Accepted(["a"])]
    assert [(r.code, r.ids) for r in only(replies, p.Refused)] == [("queue_full", ["b"])]


# A SUBMIT of fresh, keyless tasks takes a hot path (Broker._submit_usual) that
# must behave exactly like the checked one: each test runs on both.
BOTH_PATHS = pytest.mark.parametrize("fresh", [False, True], ids=["checked", "usual"])


@BOTH_PATHS
def test_a_submit_is_accepted_dispatched_and_answered_alike_on_both_paths(fwd, fresh: bool):
    fwd.ready(b"w1")
    fwd.submit(b"c1", task("a", fresh=fresh), task("b", fresh=fresh))
    first = fwd.turn()
    fwd.done(b"w1", "a", b"A")
    fwd.done(b"w1", "b", b"B")

    assert first.task_ids(b"w1") == ["a", "b"]
    assert first.to(b"c1") == [p.Accepted(["a", "b"])]
    assert [(r.id, r.payload) for r in answers(fwd.turn().to(b"c1"))] == [("a", b"A"), ("b", b"B")]


@BOTH_PATHS
def test_queue_full_refuses_alike_on_both_paths(fwd, fresh: bool):
    fwd.broker.limits.max_queue = 2
    fwd.ready(b"w1", credit=0)
    fwd.submit(b"c1", *(task(f"t-{i}", fresh=fresh) for i in range(1, 4)))

    replies = fwd.turn().to(b"c1")

    assert only(replies, p.Accepted) == [p.Accepted(["t-1", "t-2"])]
    assert [(r.code, r.ids) for r in only(replies, p.Refused)] == [("queue_full", ["t-3"])]


@BOTH_PATHS
def test_a_bad_task_in_a_batch_is_refused_and_the_rest_taken_on_both_paths(fwd, fresh: bool):
    fwd.ready(b"w1", credit=0)
    fwd.submit(
        b"c1",
        task("good", fresh=fresh),
        task("nope", "no-such-service", fresh=fresh),
        task("big", payload=b"x" * (fwd.broker.limits.max_payload_bytes + 1), fresh=fresh),
        task("bad id!", fresh=fresh),
    )

    replies = fwd.turn().to(b"c1")

    assert only(replies, p.Accepted) == [p.Accepted(["good"])]
    assert {(r.code, tuple(r.ids)) for r in only(replies, p.Refused)} == {
        ("unknown_service", ("nope",)),
        ("too_large", ("big",)),
        ("malformed", ("bad id!",)),
    }


@BOTH_PATHS
def test_an_id_twice_in_one_submit_is_one_task_on_both_paths(fwd, fresh: bool):
    fwd.ready(b"w1")
    fwd.submit(b"c1", task("a", fresh=fresh), task("a", fresh=fresh))

    out = fwd.turn()

    assert out.task_ids(b"w1") == ["a"]
    assert fwd.broker.counters["accepted"] == 1


@BOTH_PATHS
def test_an_id_held_in_memory_is_not_taken_again_on_both_paths(fwd, fresh: bool):
    fwd.ready(b"w1")
    fwd.submit(b"c1", task("a"))
    fwd.turn()

    fwd.submit(b"c2", task("a", fresh=fresh))  # a re-send, from another connection
    out = fwd.turn()

    assert out.task_ids(b"w1") == []
    assert fwd.broker.counters["accepted"] == 1
    fwd.done(b"w1", "a", b"A")
    assert [r.id for r in answers(fwd.turn().to(b"c2"))] == ["a"]  # to the last sender


# ----------------------------------------------------------- credit, routing


def test_a_worker_never_holds_more_tasks_than_its_credit_and_gets_more_as_results_return(fwd):
    fwd.ready(b"w1", credit=2)
    fwd.submit(b"c1", *(task(f"t-{i}") for i in range(5)))

    first = fwd.turn()
    fwd.done(b"w1", "t-0")
    second = fwd.turn()
    third = fwd.turn()

    assert first.task_ids(b"w1") == ["t-0", "t-1"]
    assert second.task_ids(b"w1") == ["t-2"]
    assert third.task_ids() == []
    assert len(fwd.broker.workers[b"w1"].inflight) == 2


def test_credit_is_respected_over_a_whole_run(fwd):
    fwd.ready(b"w1", credit=3)
    fwd.submit(b"c1", *(task(f"t-{i}") for i in range(20)))
    holding: list[str] = []
    results = 0
    for _ in range(40):
        out = fwd.turn()
        holding += out.task_ids(b"w1")
        results += len(items(out.to(b"c1"), p.Results))
        assert len(holding) <= 3
        if holding:
            fwd.done(b"w1", holding.pop(0))
    assert results == 20


def test_a_failed_handler_also_gives_the_credit_back(fwd):
    fwd.ready(b"w1", credit=1)
    fwd.submit(b"c1", task("t-1"), task("t-2"))
    fwd.turn()

    fwd.worker(b"w1", p.WorkerFailures([p.Error("t-1", "boom")]))

    assert fwd.turn().task_ids(b"w1") == ["t-2"]


def test_round_robin_spreads_tasks_over_all_workers_with_credit(fwd):
    for rid in (b"w1", b"w2", b"w3"):
        fwd.ready(rid, credit=10)
    fwd.submit(b"c1", *(task(f"t-{i}") for i in range(6)))

    out = fwd.turn()

    assert sorted(len(out.tasks(rid)) for rid in (b"w1", b"w2", b"w3")) == [2, 2, 2]
    assert sorted(out.task_ids()) == sorted(f"t-{i}" for i in range(6))


def test_round_robin_starts_each_round_with_another_worker(fwd):
    fwd.ready(b"w1")
    fwd.ready(b"w2")
    receivers = []
    for i in range(4):
        fwd.submit(b"c1", task(f"t-{i}"))
        (rid, _msg) = fwd.turn().workers[0]
        receivers.append(rid)

    assert set(receivers) == {b"w1", b"w2"}


def test_tasks_only_go_to_workers_offering_their_service(fwd):
    fwd.ready(b"w-echo", ["echo"])
    fwd.ready(b"w-sha", ["sha256"])
    fwd.submit(b"c1", task("a", "sha256"), task("b", "echo"))

    out = fwd.turn()

    assert out.task_ids(b"w-sha") == ["a"]
    assert out.task_ids(b"w-echo") == ["b"]


def test_a_worker_with_credit_zero_is_draining_and_gets_no_new_tasks(fwd):
    fwd.ready(b"w1", credit=2)
    fwd.submit(b"c1", task("t-1"), task("t-2"), task("t-3"))
    assert fwd.turn().task_ids(b"w1") == ["t-1", "t-2"]

    fwd.ready(b"w1", credit=0)
    fwd.done(b"w1", "t-1")
    fwd.done(b"w1", "t-2")
    out = fwd.turn()

    assert out.task_ids() == []
    assert len(items(out.to(b"c1"), p.Results)) == 2
    fwd.ready(b"w1", credit=0)
    fwd.ready(b"w2", credit=0)
    assert fwd.turn().task_ids() == []


def test_a_service_listed_twice_in_ready_does_not_double_the_workers_credit(fwd):
    fwd.ready(b"w1", ["echo", "echo"], credit=1)
    fwd.submit(b"c1", task("t-1"), task("t-2"))

    out = fwd.turn()

    assert out.task_ids(b"w1") == ["t-1"]
    assert fwd.broker.workers[b"w1"].free == 0
    fwd.ready(b"w1", ["echo"], credit=1)
    fwd.done(b"w1", "t-1")
    assert fwd.turn().task_ids(b"w1") == ["t-2"]


def test_ready_again_replaces_services_and_credit(fwd):
    fwd.ready(b"w1", ["echo"], credit=1)
    fwd.ready(b"w1", ["sha256"], credit=2)
    fwd.submit(b"c1", task("a", "echo"), task("b", "sha256"), task("c", "sha256"))

    out = fwd.turn()

    assert out.task_ids(b"w1") == ["b", "c"]
    assert len(fwd.broker.workers) == 1


# ------------------------------------------------------------------ results


def test_a_result_reaches_the_submitting_client_exactly_once(fwd):
    fwd.ready(b"w1")
    fwd.submit(b"c1", task("t-1", payload=b"hello"))
    fwd.submit(b"c2", task("other"))
    fwd.turn()

    fwd.done(b"w1", "t-1", b"HELLO")
    out = fwd.turn()
    later = fwd.turn()

    assert out.to(b"c1") == [p.Results([p.Result("t-1", "w1", 1, False, b"HELLO")])]
    assert out.to(b"c2") == []
    assert later.clients == []
    assert fwd.broker.counters["completed"] == 1
    assert "t-1" not in fwd.broker.tasks


def test_a_handler_failure_reaches_the_client_as_failed_handler_error(fwd):
    run_to_dispatch(fwd, b"c1", b"w1", task("t-1"))

    fwd.worker(b"w1", p.WorkerFailures([p.Error("t-1", "ValueError: bad input")]))
    out = fwd.turn()

    assert out.to(b"c1") == [
        p.Failures([p.Failed("t-1", "handler_error", "ValueError: bad input", "w1", 1)])
    ]
    assert fwd.broker.counters["failed"] == 1
    assert fwd.broker.workers[b"w1"].inflight == set()


def test_a_client_heartbeat_is_answered_with_a_heartbeat(fwd):
    fwd.client(b"c1", p.Heartbeat())
    assert fwd.turn().to(b"c1") == [p.Heartbeat()]


def test_the_heartbeat_reply_names_the_forwarder_instance():
    broker = Broker(Journal(":memory:"), Limits(), forwarder_id="forwarder-h-1-ab12")

    broker.on_client(b"c1", p.encode(p.Heartbeat()))

    ((rid, frames),) = broker.outbox_clients.take()
    # (and its max_batch, which clients cut their SUBMITs to)
    assert (rid, p.decode(frames)) == (b"c1", p.HeartbeatReply("forwarder-h-1-ab12", 1000))


def test_a_status_request_is_answered_with_the_tables(fwd):
    fwd.ready(b"w1", credit=1)
    fwd.submit(b"c1", task("t-1"), task("t-2"))
    fwd.turn()

    fwd.client(b"c9", p.StatusRequest())
    (reply,) = fwd.turn().to(b"c9")

    assert isinstance(reply, p.Status)
    info = reply.info
    assert info["inflight"] == 1
    assert info["queues"] == {"echo": 1}
    assert info["services"] == ["echo"]
    assert [(w["id"], w["credit"], w["inflight"]) for w in info["workers"]] == [("w1", 1, 1)]
    assert info["dead_letters"] == []
    assert info["counters"]["accepted"] == 2


def test_a_status_reply_names_the_forwarder_as_documented():
    clock = [500.0]
    broker = Broker(
        Journal(":memory:"),
        Limits(),
        forwarder_id="forwarder-h-1-ab12",
        clock=lambda: clock[0],
        env="dev",
    )
    clock[0] += 12.5

    broker.on_client(b"c1", p.encode(p.StatusRequest()))

    ((_, frames),) = broker.outbox_clients.take()
    info = p.decode(frames).info
    assert info["forwarder"] == {
        "id": "forwarder-h-1-ab12",
        "version": zmqflow.__version__,
        "env": "dev",
        "uptime_s": 12.5,
        "journal": ":memory:",
    }


# ------------------------------------------------------ dead workers, retries


def test_a_worker_silent_past_the_liveness_deadline_is_removed_and_its_tasks_go_to_another(fwd):
    fwd.ready(b"w1", credit=1)
    fwd.submit(b"c1", task("t-1"), task("t-2"))
    assert fwd.turn().task_ids(b"w1") == ["t-1"]

    fwd.tick(3.0)  # heartbeat_interval 1 s * liveness 3: not yet
    assert b"w1" in fwd.broker.workers
    assert fwd.turn().to(b"w1") == [p.WorkerHeartbeat()]
    fwd.tick(0.01)
    assert b"w1" not in fwd.broker.workers
    fwd.ready(b"w2", credit=1)
    out = fwd.turn()

    assert out.tasks(b"w2") == [p.Dispatch("t-1", "echo", {}, 2, b"in")]  # front of the queue
    assert fwd.broker.counters["workers_lost"] == 1
    assert fwd.broker.counters["requeued"] == 1
    assert ("task.requeued", {"id": "t-1", "attempts": 1}) in fwd.events
    assert any(kind == "worker.lost" for kind, _ in fwd.events)


def test_reap_declares_a_worker_dead_at_its_deadline_and_says_when_the_next_one_is_due(fwd):
    fwd.ready(b"w1")
    fwd.now += 0.5
    fwd.ready(b"w2")
    assert fwd.broker.reap(fwd.now) == pytest.approx(fwd.now - 0.5 + 3.0)  # w1's, not a tick later
    fwd.now += 2.6  # w1 silent 3.1 s, w2 2.6 s
    assert fwd.broker.reap(fwd.now) == pytest.approx(fwd.now - 2.6 + 3.0)
    assert list(fwd.broker.workers) == [b"w2"]
    assert [d["worker"] for kind, d in fwd.events if kind == "worker.lost"] == ["w1"]


def test_any_message_from_a_worker_keeps_it_alive(fwd):
    fwd.ready(b"w1")
    for _ in range(5):
        fwd.now += 2.5
        fwd.worker(b"w1", p.WorkerHeartbeat())
        fwd.broker.tick(fwd.now)
    assert b"w1" in fwd.broker.workers


def test_the_liveness_deadline_follows_the_configured_limits():
    fwd = Forwarder(Journal(":memory:"), Limits(heartbeat_interval=0.5, heartbeat_liveness=2))
    fwd.ready(b"w1")
    fwd.tick(0.9)
    assert b"w1" in fwd.broker.workers
    fwd.tick(0.2)
    assert b"w1" not in fwd.broker.workers


def test_tasks_of_a_dead_worker_go_back_in_front_of_the_queue_in_their_order(fwd):
    fwd.ready(b"w1", credit=3)
    fwd.submit(b"c1", *(task(f"t-{i}") for i in range(6)))
    assert fwd.turn().task_ids(b"w1") == ["t-0", "t-1", "t-2"]

    fwd.tick(10)
    fwd.ready(b"w2", credit=1)
    order = []
    for _ in range(6):
        (dispatched,) = fwd.turn().task_ids(b"w2")
        order.append(dispatched)
        fwd.done(b"w2", dispatched)

    assert order == [f"t-{i}" for i in range(6)]


def test_after_its_retries_a_task_becomes_a_dead_letter_and_retry_brings_it_back(fwd):
    fwd.submit(b"c1", task("t-1", retries=1))  # unknown yet: refused
    fwd.ready(b"w1", credit=1)
    fwd.submit(b"c1", task("t-1", retries=1))
    fwd.turn()
    fwd.tick(10)  # lost on attempt 1: requeued (1 retry left)
    fwd.ready(b"w2", credit=1)
    assert fwd.turn().tasks(b"w2")[0].attempt == 2

    fwd.tick(10)  # lost on attempt 2: no retries left
    out = fwd.turn()

    (message,) = out.to(b"c1")
    (failed,) = message.items
    assert failed == p.Failed("t-1", "dead_letter", failed.error, None, 2)
    assert fwd.broker.counters["dead_lettered"] == 1
    assert [d["id"] for d in fwd.broker.status()["dead_letters"]] == ["t-1"]
    assert fwd.broker.status()["dead_letter_count"] == 1
    assert "t-1" not in fwd.broker.tasks

    fwd.ready(b"w3", credit=1)
    fwd.client(b"c2", p.Retry([]))
    out = fwd.turn()
    assert out.to(b"c2") == [p.Accepted(["t-1"])]
    assert out.tasks(b"w3") == [p.Dispatch("t-1", "echo", {}, 1, b"in")]  # attempts reset
    assert fwd.broker.status()["dead_letters"] == []

    fwd.done(b"w3", "t-1", b"finally")
    assert fwd.turn().to(b"c2") == [p.Results([p.Result("t-1", "w3", 1, False, b"finally")])]


def test_the_default_retries_come_from_max_retries():
    fwd = Forwarder(Journal(":memory:"), Limits(max_retries=2))
    fwd.ready(b"w0", credit=1)
    fwd.submit(b"c1", task("t-1"))
    fwd.turn()
    attempts = []
    for i in range(1, 5):
        fwd.tick(10)
        fwd.ready(f"w{i}".encode(), credit=1)
        out = fwd.turn()
        attempts += [t.attempt for t in out.tasks()]
        if out.to(b"c1"):
            break

    assert attempts == [2, 3]
    (failed,) = answers(out.to(b"c1"))
    assert failed.code == "dead_letter"
    assert failed.attempts == 3


def test_retry_of_only_unknown_ids_answers_an_empty_accepted_first_then_refuses_them(fwd):
    fwd.client(b"c1", p.Retry(["zzz", "yyy"]))

    # the ACCEPTED is RETRY's answer, which a client waits for, even when empty
    assert fwd.turn().to(b"c1") == [
        p.Accepted([]),
        p.Refused(["zzz", "yyy"], "unknown_task", "not in the dead-letter list"),
    ]


def test_retry_of_listed_ids_moves_only_those_and_refuses_unknown_ones(fwd):
    fwd.ready(b"w1", credit=2)
    fwd.submit(b"c1", task("a", retries=0), task("b", retries=0))
    fwd.turn()
    fwd.tick(10)
    fwd.turn()

    fwd.client(b"c1", p.Retry(["b", "zzz"]))
    replies = fwd.turn().to(b"c1")

    assert replies[0] == p.Accepted(["b"])
    assert [(r.code, r.ids) for r in only(replies, p.Refused)] == [("unknown_task", ["zzz"])]
    assert [d["id"] for d in fwd.broker.status()["dead_letters"]] == ["a"]


def test_retry_of_the_same_dead_letter_twice_in_one_turn_queues_it_once(fwd):
    fwd.ready(b"w1", credit=0)
    fwd.ready(b"w0", credit=1)
    fwd.submit(b"c1", task("a", retries=0, payload=b"12345"))
    fwd.turn()
    fwd.worker(b"w1", p.WorkerHeartbeat())
    fwd.tick(2)
    fwd.worker(b"w1", p.WorkerHeartbeat())
    fwd.tick(2)  # w0 is dead, w1 is alive
    fwd.turn()

    fwd.client(b"c1", p.Retry(["a"]))
    fwd.client(b"c2", p.Retry(["a"]))
    out = fwd.turn()

    assert out.to(b"c1") == [p.Accepted(["a"])]
    assert out.to(b"c2") == [p.Accepted(["a"])]
    assert fwd.broker.queued_bytes == 5  # queued once
    fwd.ready(b"w2", credit=5)
    assert fwd.turn().task_ids() == ["a"]
    fwd.done(b"w2", "a")
    assert [m.id for m in answers(fwd.turn().to(b"c2"))] == ["a"]  # to the last client that asked


def test_a_worker_disconnect_requeues_its_tasks_without_using_up_retries(fwd):
    fwd.ready(b"w1", credit=1)
    fwd.submit(b"c1", task("t-1", retries=0))
    fwd.turn()

    fwd.worker(b"w1", p.Disconnect("drained"))
    fwd.ready(b"w2", credit=1)
    out = fwd.turn()

    assert out.tasks(b"w2") == [p.Dispatch("t-1", "echo", {}, 2, b"in")]
    assert b"w1" not in fwd.broker.workers
    assert fwd.broker.counters["requeued"] == 1
    assert fwd.broker.counters["workers_lost"] == 0
    assert ("worker.left", {"worker": "w1", "reason": "drained"}) in fwd.events


def test_an_unreachable_worker_is_removed_and_its_tasks_requeued(fwd):
    fwd.ready(b"w1", credit=1)
    fwd.submit(b"c1", task("t-1"))
    fwd.turn()

    fwd.broker.worker_unreachable(b"w1")
    fwd.ready(b"w2")

    assert fwd.turn().task_ids(b"w2") == ["t-1"]
    assert fwd.broker.counters["workers_lost"] == 1
    # a worker whose connection is gone (SIGKILLed) is lost like a silent one
    assert [d["worker"] for kind, d in fwd.events if kind == "worker.lost"] == ["w1"]


# -------------------------------------------------------------- late results


def test_a_late_result_from_a_removed_worker_for_a_finished_task_is_dropped_and_disowned(fwd):
    fwd.ready(b"w1", credit=1)
    fwd.submit(b"c1", task("t-1"))
    fwd.turn()
    fwd.tick(10)
    fwd.ready(b"w2", credit=1)
    fwd.turn()
    fwd.done(b"w2", "t-1", b"from-w2")
    assert items(fwd.turn().to(b"c1"), p.Results)[0].payload == b"from-w2"

    fwd.done(b"w1", "t-1", b"from-w1")
    out = fwd.turn()

    assert out.to(b"c1") == []
    assert out.to(b"w1") == [p.Disconnect("unknown worker")]
    assert fwd.broker.counters["late_results"] == 1
    assert fwd.broker.counters["completed"] == 1


def test_a_message_from_an_unknown_worker_is_answered_with_disconnect(fwd):
    fwd.worker(b"ghost", p.WorkerHeartbeat())
    fwd.worker(b"ghost2", p.WorkerFailures([p.Error("never-seen", "x")]))

    out = fwd.turn()

    assert out.to(b"ghost") == [p.Disconnect("unknown worker")]
    assert out.to(b"ghost2") == [p.Disconnect("unknown worker")]
    assert fwd.broker.counters["late_results"] == 1


def test_a_late_result_for_a_requeued_unfinished_task_completes_it_once(fwd):
    fwd.ready(b"w1", credit=1)
    fwd.submit(b"c1", task("t-1"))
    fwd.turn()
    fwd.tick(10)  # t-1 waits in the queue again, nobody to run it

    fwd.done(b"w1", "t-1", b"late")
    out = fwd.turn()
    fwd.ready(b"w2")
    after = fwd.turn()

    assert out.to(b"c1") == [p.Results([p.Result("t-1", "unknown", 1, False, b"late")])]
    assert out.to(b"w1") == [p.Disconnect("unknown worker")]
    assert after.tasks() == []  # not run a second time
    assert fwd.broker.queued_bytes == 0
    assert fwd.broker.status()["queues"] == {}


def test_a_late_result_for_a_task_running_elsewhere_completes_it_and_the_second_is_dropped(fwd):
    fwd.ready(b"w1", credit=1)
    fwd.submit(b"c1", task("t-1"))
    fwd.turn()
    fwd.tick(10)
    fwd.ready(b"w2", credit=1)
    assert fwd.turn().task_ids(b"w2") == ["t-1"]

    fwd.done(b"w1", "t-1", b"first")
    first = fwd.turn()
    fwd.done(b"w2", "t-1", b"second")
    second = fwd.turn()

    assert items(first.to(b"c1"), p.Results)[0].payload == b"first"
    assert second.to(b"c1") == []
    assert second.to(b"w2") == []  # w2 is known: no DISCONNECT
    assert fwd.broker.workers[b"w2"].inflight == set()
    assert fwd.broker.counters["late_results"] == 1


def test_ready_listing_queued_tasks_as_inflight_takes_them_off_the_queue(fwd):
    fwd.ready(b"w0", credit=0)  # makes echo known, takes nothing
    fwd.submit(b"c1", task("t-1"), task("t-2"))
    fwd.turn()

    fwd.ready(b"w1", credit=2, inflight=["t-1", "unknown-id"])
    first = fwd.turn()
    fwd.done(b"w1", "t-1", b"kept")
    second = fwd.turn()

    assert first.tasks() == []  # t-1 and unknown-id run on w1 already: its credit is full
    assert second.to(b"c1") == [p.Results([p.Result("t-1", "w1", 1, False, b"kept")])]
    assert second.task_ids(b"w1") == ["t-2"]
    fwd.done(b"w1", "t-2")
    assert fwd.turn().tasks() == []
    assert fwd.broker.queued_bytes == 0


def test_inflight_ids_finished_elsewhere_fill_credit_until_their_late_answers(fwd):
    fwd.ready(b"w0", credit=0)
    fwd.submit(b"c1", task("t-1"))
    fwd.turn()

    fwd.ready(b"w1", credit=1, inflight=["answered-elsewhere"])  # back from a freeze
    held = fwd.turn()
    fwd.done(b"w1", "answered-elsewhere")  # its late answer: dropped, credit back
    freed = fwd.turn()

    assert held.tasks() == []
    assert freed.task_ids(b"w1") == ["t-1"]
    assert fwd.broker.counters["late_results"] == 1


def test_after_a_restart_ready_with_inflight_keeps_a_task_from_running_twice(file_fwd):
    file_fwd.ready(b"w1", credit=1)
    file_fwd.submit(b"c1", task("t-1"))
    file_fwd.turn()

    fwd = file_fwd.restart()
    fwd.ready(b"w1", credit=1, inflight=["t-1"])
    fwd.ready(b"w2", credit=1)
    assert fwd.turn().tasks() == []
    fwd.done(b"w1", "t-1")

    assert items(fwd.turn().to(b"c1"), p.Results)[0].id == "t-1"


def test_a_task_run_on_ready_then_requeued_is_dispatched_once_and_its_bytes_counted_once(fwd):
    # hypothesis found it (test_broker_paths): the queue held the task twice
    fwd.ready(b"w0", credit=0)  # makes echo known, takes nothing
    fwd.submit(b"c1", task("t-1", payload=b"\x00"))
    fwd.turn()
    fwd.ready(b"w1", credit=0, inflight=["t-1"])  # it says it runs t-1: t-1 is in flight there
    fwd.worker(b"w1", p.Disconnect("drained"))  # gone before answering: t-1 queued again
    fwd.ready(b"w1", credit=3)

    assert fwd.turn().task_ids(b"w1") == ["t-1"]
    assert fwd.broker.queued_bytes == 0


# --------------------------------------------------------- repeated submits


def test_a_duplicate_submit_of_an_unfinished_id_creates_no_second_task(fwd):
    fwd.ready(b"w1", credit=5)
    fwd.submit(b"c1", task("t-1"))
    first = fwd.turn()
    fwd.submit(b"c1", task("t-1"))
    fwd.submit(b"c2", task("t-1", payload=b"other"))
    second = fwd.turn()
    held = len(fwd.broker.tasks)
    fwd.done(b"w1", "t-1")
    third = fwd.turn()

    assert first.task_ids() == ["t-1"]
    assert second.to(b"c1") == [p.Accepted(["t-1"])]
    assert second.to(b"c2") == [p.Accepted(["t-1"])]
    assert second.tasks() == []
    assert held == 1
    assert fwd.broker.counters["accepted"] == 1
    # results go to the client that last submitted the id
    assert [m.id for m in answers(third.to(b"c2"))] == ["t-1"]
    assert third.to(b"c1") == []


def test_the_same_id_twice_in_one_submit_is_one_task(fwd):
    fwd.ready(b"w1")
    fwd.submit(b"c1", task("t-1"), task("t-1"))

    out = fwd.turn()

    assert out.task_ids() == ["t-1"]
    assert len(fwd.broker.tasks) == 1


def test_a_submit_of_a_finished_id_returns_accepted_then_the_cached_result(fwd):
    run_to_dispatch(fwd, b"c1", b"w1", task("t-1"))
    fwd.done(b"w1", "t-1", b"stored")
    fwd.turn()

    fwd.submit(b"c2", task("t-1"))
    out = fwd.turn()

    assert out.to(b"c2") == [
        p.Accepted(["t-1"]),
        p.Results([p.Result("t-1", "w1", 1, True, b"stored")]),
    ]
    assert out.tasks() == []
    assert fwd.broker.tasks == {}


def test_a_submit_of_a_failed_id_returns_accepted_then_the_stored_failure(fwd):
    run_to_dispatch(fwd, b"c1", b"w1", task("t-1"))
    fwd.worker(b"w1", p.WorkerFailures([p.Error("t-1", "boom")]))
    fwd.turn()

    fwd.submit(b"c1", task("t-1"))

    assert fwd.turn().to(b"c1") == [
        p.Accepted(["t-1"]),
        p.Failures([p.Failed("t-1", "handler_error", "boom", "w1", 1)]),
    ]


def test_a_submit_of_an_id_finished_in_the_same_loop_turn_gets_the_result(fwd):
    run_to_dispatch(fwd, b"c1", b"w1", task("t-1"))

    fwd.done(b"w1", "t-1", b"just-now")  # the backend is drained first...
    fwd.submit(b"c2", task("t-1"))  # ...then the frontend, before the commit
    out = fwd.turn()

    assert out.to(b"c1") == [p.Results([p.Result("t-1", "w1", 1, False, b"just-now")])]
    assert out.to(b"c2") == [
        p.Accepted(["t-1"]),
        p.Results([p.Result("t-1", "w1", 1, True, b"just-now")]),
    ]
    assert out.tasks() == []


def test_a_collect_of_an_id_finished_in_the_same_loop_turn_gets_the_result(fwd):
    run_to_dispatch(fwd, b"c1", b"w1", task("t-1"))

    fwd.done(b"w1", "t-1", b"just-now")
    fwd.client(b"c2", p.Collect(["t-1"]))

    assert fwd.turn().to(b"c2") == [p.Results([p.Result("t-1", "w1", 1, True, b"just-now")])]


# ---------------------------------------------------------- idempotency keys


def test_a_second_id_with_the_key_of_a_running_task_joins_it_and_the_work_runs_once(fwd):
    fwd.ready(b"w1", credit=5)
    fwd.submit(b"c1", task("a", key="order-42"))
    first = fwd.turn()
    fwd.submit(b"c2", task("b", key="order-42"))
    second = fwd.turn()
    fwd.done(b"w1", "a", b"shipped")
    third = fwd.turn()

    assert first.task_ids() == ["a"]
    assert second.to(b"c2") == [p.Accepted(["b"])]
    assert second.tasks() == []
    assert third.to(b"c1") == [p.Results([p.Result("a", "w1", 1, False, b"shipped")])]
    assert third.to(b"c2") == [p.Results([p.Result("b", "w1", 1, True, b"shipped")])]
    assert fwd.broker.counters["accepted"] == 1
    assert fwd.broker.aliases == {}


def test_a_task_marked_fresh_is_not_looked_up_among_stored_answers(fwd, monkeypatch):
    looked_up: list[list[str]] = []
    real = fwd.journal.answers
    monkeypatch.setattr(
        fwd.journal, "answers", lambda ids: looked_up.append(list(ids)) or real(ids)
    )

    fwd.ready(b"w1")
    fwd.submit(b"c1", task("first", fresh=True), task("again"))
    fwd.turn()

    assert looked_up == [["again"]]  # a first send has no stored answer to find


def test_a_fresh_id_that_was_used_before_runs_again(fwd):
    """``fresh`` is the client's promise; one that breaks it gets a second run."""
    run_to_dispatch(fwd, b"c1", b"w1", task("t-1"))
    fwd.done(b"w1", "t-1", b"stored")
    fwd.turn()

    fwd.submit(b"c2", task("t-1", fresh=True))

    assert fwd.turn().task_ids(b"w1") == ["t-1"]


def test_the_key_of_a_finished_task_returns_its_cached_result_under_the_new_id(fwd):
    run_to_dispatch(fwd, b"c1", b"w1", task("a", key="k"))
    fwd.done(b"w1", "a", b"once")
    fwd.turn()

    fwd.submit(b"c2", task("b", key="k"))
    out = fwd.turn()

    assert out.to(b"c2") == [p.Accepted(["b"]), p.Results([p.Result("b", "w1", 1, True, b"once")])]
    assert out.tasks() == []
    fwd.client(b"c3", p.Collect(["b"]))
    assert fwd.turn().to(b"c3") == [p.Results([p.Result("b", "w1", 1, True, b"once")])]


def test_a_key_finished_in_the_same_loop_turn_is_not_run_again(fwd):
    run_to_dispatch(fwd, b"c1", b"w1", task("a", key="k"))

    fwd.done(b"w1", "a", b"once")
    fwd.submit(b"c2", task("b", key="k"))
    out = fwd.turn()

    assert out.tasks() == []
    assert out.to(b"c2") == [p.Accepted(["b"]), p.Results([p.Result("b", "w1", 1, True, b"once")])]


def test_an_id_joined_to_a_key_whose_answer_expired_is_unknown(fwd):
    run_to_dispatch(fwd, b"c1", b"w1", task("a", key="k"))
    fwd.done(b"w1", "a")
    fwd.turn()
    fwd.now += 7200
    fwd.submit(b"c2", task("b", key="k"))  # answered from a's stored result
    fwd.turn()

    fwd.journal.purge(older_than_s=3600)  # a expired; b joined it later
    fwd.client(b"c3", p.Collect(["b"]))
    out = fwd.turn()

    assert [(m.code, m.ids) for m in out.to(b"c3")] == [("unknown_task", ["b"])]


def test_a_collect_of_a_joined_id_routes_its_result_to_the_collector(fwd):
    fwd.ready(b"w1")
    fwd.submit(b"c1", task("a", key="k"), task("b", key="k"))
    fwd.turn()

    fwd.client(b"c9", p.Collect(["b"]))
    assert fwd.turn().to(b"c9") == [p.Accepted(["b"])]
    fwd.done(b"w1", "a")
    out = fwd.turn()

    assert [m.id for m in answers(out.to(b"c9"))] == ["b"]
    assert [m.id for m in answers(out.to(b"c1"))] == ["a"]


def test_an_empty_key_is_malformed(fwd):
    fwd.ready(b"w1")
    fwd.submit(b"c1", task("a", key=""))
    (refused,) = fwd.turn().to(b"c1")
    assert (refused.code, refused.ids) == ("malformed", ["a"])


# ------------------------------------------------------------------ collect


def test_collect_answers_finished_unfinished_and_unknown_ids(fwd):
    fwd.ready(b"w1", credit=1)
    fwd.submit(b"c1", task("done-1"), task("open-1"))
    fwd.turn()
    fwd.done(b"w1", "done-1", b"r1")
    fwd.turn()

    fwd.client(b"c2", p.Collect(["done-1", "open-1", "never"]))
    replies = fwd.turn().to(b"c2")

    assert replies == [  # control messages first, answers batched after them
        p.Refused(["never"], "unknown_task", replies[0].reason),
        p.Accepted(["open-1"]),  # one ACCEPTED per client per turn, after the refusals
        p.Results([p.Result("done-1", "w1", 1, True, b"r1")]),
    ]
    fwd.done(b"w1", "open-1", b"r2")
    out = fwd.turn()
    assert out.to(b"c2") == [
        p.Results([p.Result("open-1", "w1", 1, False, b"r2")])
    ]  # to the collector
    assert out.to(b"c1") == []


def test_collect_of_a_dead_letter_returns_its_failure(fwd):
    fwd.ready(b"w1", credit=1)
    fwd.submit(b"c1", task("t-1", retries=0))
    fwd.turn()
    fwd.tick(10)
    fwd.turn()

    fwd.client(b"c2", p.Collect(["t-1"]))
    (failed,) = answers(fwd.turn().to(b"c2"))

    assert (failed.id, failed.code, failed.attempts) == ("t-1", "dead_letter", 1)


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([b"GET / HTTP/1.1"], "malformed"),
        ([b"nonsense", b"\x01"], "malformed"),
        ([b"ZFC1", b"\x01", b"x", b"y"], "bad_version"),
        ([b"ZFC2", b"\x0f"], "unknown_command"),
        ([b"ZFC2", b"\x01"], "malformed"),
        ([b"ZFC2", b"\x01", b"\xc1", b""], "malformed"),
        ([b"ZFC2", b"\x07", b"\xc1"], "malformed"),
        ([b"ZFC2", b"\x06", msgpack.packb({})], "malformed"),
        (p.encode(p.Accepted(["x"])), "unknown_command"),  # a reply is not a request
        (p.encode(p.WorkerHeartbeat()), "unknown_command"),
    ],
    ids=[
        "one-frame",
        "bad-signature",
        "version-1",
        "unknown-command",
        "empty-submit",
        "two-body-submit",
        "bad-collect",
        "heartbeat-with-body",
        "client-sends-accepted",
        "worker-message-on-frontend",
    ],
)
def test_malformed_client_frames_are_refused_and_others_keep_being_served(fwd, frames, code):
    fwd.ready(b"w1")
    fwd.client(b"bad", frames)
    fwd.submit(b"good", task("t-1"))

    out = fwd.turn()

    (refused,) = out.to(b"bad")
    assert isinstance(refused, p.Refused)
    assert (refused.code, refused.ids) == (code, [])
    assert out.to(b"good") == [p.Accepted(["t-1"])]
    assert out.task_ids(b"w1") == ["t-1"]


def test_a_malformed_worker_message_is_answered_with_disconnect_and_the_broker_goes_on(fwd):
    fwd.ready(b"w1", credit=1)
    fwd.submit(b"c1", task("t-1"))
    fwd.turn()

    fwd.worker(b"w1", [b"ZFW2", b"\x13", b"\xc1", b"x"])
    fwd.worker(b"w1", p.encode(p.Heartbeat()))
    out = fwd.turn()

    assert [type(m) for m in out.to(b"w1")] == [p.Disconnect, p.Disconnect]
    assert out.to(b"w1")[0].reason.startswith("malformed")
    assert fwd.broker.counters["malformed"] == 1
    fwd.done(b"w1", "t-1")
    assert items(fwd.turn().to(b"c1"), p.Results)


def test_a_ready_the_codec_refuses_is_answered_with_disconnect_not_an_exception(fwd):
    body = msgpack.unpackb(p.encode(p.Ready("w1", "python", ["echo"], 1))[2])
    body["pid"] = "not-a-pid"

    fwd.worker(b"w1", [p.WORKER_SIGNATURE, b"\x11", msgpack.packb(body)])
    out = fwd.turn()

    assert [type(m) for m in out.to(b"w1")] == [p.Disconnect]
    assert b"w1" not in fwd.broker.workers
    fwd.ready(b"w1")
    assert b"w1" in fwd.broker.workers


# ------------------------------------------------------------------ restart


def test_a_restarted_broker_queues_every_accepted_unfinished_task_again_but_not_finished_ones(
    file_fwd,
):
    file_fwd.ready(b"w1", credit=1)
    file_fwd.submit(b"c1", task("t-1"), task("t-2"), task("t-3", payload=b"three"))
    file_fwd.turn()
    file_fwd.done(b"w1", "t-1")
    file_fwd.turn()  # t-1 finished, t-2 in flight, t-3 queued

    fwd = file_fwd.restart()
    assert [t.id for t in fwd.broker.queues["echo"]] == ["t-2", "t-3"]
    fwd.ready(b"w9", credit=5)
    out = fwd.turn()

    assert out.tasks(b"w9") == [
        p.Dispatch("t-2", "echo", {}, 1, b"in"),
        p.Dispatch("t-3", "echo", {}, 1, b"three"),
    ]
    fwd.done(b"w9", "t-2")
    fwd.done(b"w9", "t-3")
    (answers,) = fwd.turn().to(b"c1")  # stored client rid, one RESULT for both
    assert sorted(r.id for r in answers.items) == ["t-2", "t-3"]
    fwd.client(b"c1", p.Collect(["t-1"]))
    assert items(fwd.turn().to(b"c1"), p.Results)[0].cached


def test_a_restarted_broker_remembers_known_services_keys_and_joined_ids(file_fwd):
    file_fwd.ready(b"w1", credit=0)
    file_fwd.submit(b"c1", task("a", key="k"))
    file_fwd.turn()
    file_fwd.submit(b"c2", task("b", key="k"))
    file_fwd.turn()

    fwd = file_fwd.restart()
    fwd.submit(b"c3", task("c", key="k"), task("d"))
    assert fwd.turn().to(b"c3") == [p.Accepted(["c", "d"])]  # echo is still known
    fwd.ready(b"w2", credit=5)
    assert fwd.turn().task_ids() == ["a", "d"]
    fwd.done(b"w2", "a", b"A")
    out = fwd.turn()

    assert [(m.id, m.cached) for m in answers(out.to(b"c1"))] == [("a", False)]
    assert [(m.id, m.cached) for m in answers(out.to(b"c2"))] == [("b", True)]
    assert [(m.id, m.cached) for m in answers(out.to(b"c3"))] == [("c", True)]


def test_a_task_accepted_but_never_committed_is_not_there_after_a_restart(file_fwd):
    file_fwd.ready(b"w1", credit=0)
    file_fwd.turn()
    file_fwd.submit(b"c1", task("t-1"))  # killed before the commit: ACCEPTED never left

    fwd = Forwarder(Journal(file_fwd.journal.path))

    assert fwd.broker.tasks == {}


def test_a_restarted_broker_keeps_attempt_counts_of_requeued_tasks(file_fwd):
    file_fwd.ready(b"w1", credit=1)
    file_fwd.submit(b"c1", task("t-1", retries=1))
    file_fwd.turn()
    file_fwd.tick(10)
    file_fwd.turn()

    fwd = file_fwd.restart()
    fwd.ready(b"w2", credit=1)
    assert fwd.turn().tasks(b"w2")[0].attempt == 2
    fwd.tick(10)

    assert answers(fwd.turn().to(b"c1"))[0].code == "dead_letter"


# ------------------------------------------------------------------ batching


def test_one_task_message_per_worker_holds_every_task_its_credit_allows(fwd):
    fwd.ready(b"w1", credit=5)
    fwd.submit(b"c1", *(task(f"t-{i}") for i in range(3)))

    out = fwd.turn()

    (message,) = out.task_messages(b"w1")
    assert [d.id for d in message.items] == ["t-0", "t-1", "t-2"]


def test_a_task_message_never_holds_more_than_the_free_credit(fwd):
    fwd.ready(b"w1", credit=4)
    fwd.submit(b"c1", *(task(f"t-{i}") for i in range(10)))

    (first,) = fwd.turn().task_messages(b"w1")
    assert len(first.items) == 4

    fwd.worker(b"w1", p.WorkerResults([p.Done("t-0", b""), p.Done("t-1", b"")]))
    (second,) = fwd.turn().task_messages(b"w1")

    assert [d.id for d in second.items] == ["t-4", "t-5"]  # 2 credits came back
    assert len(fwd.broker.workers[b"w1"].inflight) == 4


def test_tasks_spread_over_workers_in_one_message_each(fwd):
    fwd.ready(b"w1", credit=3)
    fwd.ready(b"w2", credit=3)
    fwd.submit(b"c1", *(task(f"t-{i}") for i in range(6)))

    out = fwd.turn()

    assert [len(m.items) for m in out.task_messages(b"w1")] == [3]
    assert [len(m.items) for m in out.task_messages(b"w2")] == [3]
    assert sorted(out.task_ids()) == [f"t-{i}" for i in range(6)]


def test_a_batched_worker_result_completes_every_task_and_frees_every_credit(fwd):
    run_to_dispatch(fwd, b"c1", b"w1", task("a"), task("b"), task("c"))

    fwd.worker(b"w1", p.WorkerResults([p.Done("a", b"A"), p.Done("b", b"B"), p.Done("c", b"C")]))
    out = fwd.turn()

    assert out.to(b"c1") == [
        p.Results(
            [
                p.Result("a", "w1", 1, False, b"A"),
                p.Result("b", "w1", 1, False, b"B"),
                p.Result("c", "w1", 1, False, b"C"),
            ]
        )
    ]
    assert fwd.broker.workers[b"w1"].inflight == set()
    assert fwd.broker.counters["completed"] == 3


def test_answers_of_one_turn_go_to_each_client_in_one_message_per_kind(fwd):
    fwd.ready(b"w1", credit=10)
    fwd.submit(b"c1", task("a1"), task("a2"), task("a3"))
    fwd.submit(b"c2", task("b1"), task("b2"))
    fwd.turn()

    fwd.done(b"w1", "a1")
    fwd.worker(b"w1", p.WorkerFailures([p.Error("a2", "boom"), p.Error("b1", "bang")]))
    fwd.done(b"w1", "b2")
    fwd.done(b"w1", "a3")
    out = fwd.turn()

    assert out.to(b"c1") == [
        p.Results([p.Result("a1", "w1", 1, False, b"out"), p.Result("a3", "w1", 1, False, b"out")]),
        p.Failures([p.Failed("a2", "handler_error", "boom", "w1", 1)]),
    ]
    assert out.to(b"c2") == [
        p.Results([p.Result("b2", "w1", 1, False, b"out")]),
        p.Failures([p.Failed("b1", "handler_error", "bang", "w1", 1)]),
    ]


def test_an_accepted_goes_before_the_answers_of_the_same_turn(fwd):
    run_to_dispatch(fwd, b"c1", b"w1", task("t-1"))

    fwd.done(b"w1", "t-1", b"first")
    fwd.submit(b"c1", task("t-1"), task("t-2"))  # t-1 again: cached; t-2 new
    out = fwd.turn()

    assert out.to(b"c1") == [
        p.Accepted(["t-1", "t-2"]),
        p.Results(
            [p.Result("t-1", "w1", 1, False, b"first"), p.Result("t-1", "w1", 1, True, b"first")]
        ),
    ]


def test_batches_are_split_at_max_batch_items():
    fwd = Forwarder(Journal(":memory:"), Limits(max_batch=2))
    fwd.ready(b"w1", credit=5)
    for i in range(5):  # a SUBMIT holds max_batch tasks at most too
        fwd.submit(b"c1", task(f"t-{i}"))

    out = fwd.turn()

    assert [[d.id for d in m.items] for m in out.task_messages(b"w1")] == [
        ["t-0", "t-1"],
        ["t-2", "t-3"],
        ["t-4"],
    ]
    fwd.worker(b"w1", p.WorkerResults([p.Done(f"t-{i}", b"") for i in range(5)]))
    answers_out = fwd.turn().to(b"c1")
    assert [len(m.items) for m in answers_out] == [2, 2, 1]
    assert [r.id for r in answers(answers_out)] == [f"t-{i}" for i in range(5)]


def test_a_batch_from_an_unknown_worker_is_used_and_answered_with_one_disconnect(fwd):
    run_to_dispatch(fwd, b"c1", b"w1", task("a"), task("b"))
    fwd.tick(10)  # w1 declared dead: both requeued
    fwd.turn()

    fwd.worker(b"w1", p.WorkerResults([p.Done("a", b"A"), p.Done("b", b"B")]))
    out = fwd.turn()

    assert [type(m) for m in out.to(b"w1")] == [p.Disconnect]  # one, not one per answer
    assert out.to(b"w1")[0].reason == "unknown worker"
    assert [r.id for r in answers(out.to(b"c1"))] == ["a", "b"]


def test_a_flood_of_malformed_messages_from_one_client_is_counted_and_warned_about_once_a_minute(
    fwd, caplog
):
    caplog.set_level("WARNING", logger="zmqflow.forwarder")
    for _ in range(1000):
        fwd.client(b"rogue", [b"nonsense", b"\x01"])
    assert fwd.broker.counters["malformed"] == 1000
    assert len(fwd.turn().to(b"rogue")) == 1000  # every message still gets its refusal
    warned = [r.getMessage() for r in caplog.records if b"rogue".hex() in r.getMessage()]
    assert len(warned) == 1
    fwd.tick(61)
    fwd.client(b"rogue", [b"nonsense", b"\x01"])
    warned = [r.getMessage() for r in caplog.records if b"rogue".hex() in r.getMessage()]
    assert len(warned) == 2 and warned[-1].endswith("; 999 more since the last warning")


def test_a_flood_of_malformed_messages_from_one_worker_is_warned_about_once_a_minute(fwd, caplog):
    caplog.set_level("WARNING", logger="zmqflow.forwarder")
    fwd.ready(b"w1")
    for _ in range(100):
        fwd.worker(b"w1", [b"ZFW2", b"\x0f"])
    warned = [r for r in caplog.records if "bad message dropped" in r.getMessage()]
    assert len(warned) == 1
    assert fwd.broker.counters["malformed"] == 100
