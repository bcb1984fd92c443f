"""Client state without sockets (src/zmqflow/client/session.py)."""

from __future__ import annotations

import msgpack
import pytest

from zmqflow import protocol as p
from zmqflow.client import session as session_module
from zmqflow.client.session import ERRORS_KEPT, ClientSession, TaskResult


def task(task_id: str) -> p.Task:
    return p.Task(task_id, "echo", task_id.encode())


def feed(session: ClientSession, msg: p.Message | p.Result | p.Failed) -> None:
    """Deliver ``msg``; a lone Result or Failed travels as a one-item RESULT / FAILED."""
    if isinstance(msg, p.Result):
        msg = p.Results([msg])
    elif isinstance(msg, p.Failed):
        msg = p.Failures([msg])
    session.on_message(p.encode(msg))


@pytest.fixture
def session() -> ClientSession:
    return ClientSession(routing_id=b"c-test")


def test_submit_frames_batch_tasks_by_max_batch():
    session = ClientSession(max_batch=2)

    frames = session.submit_frames(task(f"t-{i}") for i in range(5))

    batches = [p.decode(f) for f in frames]
    assert [[t.id for t in b.tasks] for b in batches] == [["t-0", "t-1"], ["t-2", "t-3"], ["t-4"]]
    assert session.outstanding == 5


def test_an_id_cannot_be_submitted_twice_in_one_session(session):
    session.submit_frames([task("t-1")])
    with pytest.raises(ValueError, match="already submitted"):
        session.submit_frames([task("t-1")])


def test_accepted_marks_tasks_accepted(session):
    session.submit_frames([task("a"), task("b")])

    feed(session, p.Accepted(["a"]))

    assert session.is_accepted("a")
    assert not session.is_accepted("b")


def test_only_accepted_replies_that_are_not_submit_acknowledgements_are_kept_for_retry(session):
    session.submit_frames([task("a")])

    feed(session, p.Accepted(["a"]))  # acknowledges our SUBMIT (may come late, deferred)
    feed(session, p.Accepted(["dead-1", "dead-2"]))  # a RETRY's reply
    feed(session, p.Accepted([]))  # a RETRY that moved nothing

    assert list(session.accepted_ids) == [["dead-1", "dead-2"], []]


def test_a_result_is_surfaced_once_and_its_second_copy_is_counted_as_redelivered(session):
    session.submit_frames([task("t-1")])
    feed(session, p.Accepted(["t-1"]))

    feed(session, p.Result("t-1", "w1", 1, False, b"out"))
    feed(session, p.Result("t-1", "w1", 1, True, b"out"))

    assert len(session.ready) == 1
    result = session.ready[0]
    assert (result.task_id, result.ok, result.payload, result.worker) == ("t-1", True, b"out", "w1")
    assert not result.cached
    assert session.redelivered == 1
    assert session.outstanding == 0
    assert session.is_accepted("t-1")


def test_a_failure_after_a_result_for_the_same_id_is_not_surfaced(session):
    session.submit_frames([task("t-1")])
    feed(session, p.Result("t-1", "w1", 1, False, b"out"))
    feed(session, p.Failed("t-1", "handler_error", "boom", "w1", 1))

    assert [r.ok for r in session.ready] == [True]
    assert session.redelivered == 1


def test_a_result_for_an_id_never_submitted_is_ignored(session):
    feed(session, p.Result("stranger", "w1", 1, False, b""))

    assert not session.ready
    assert session.redelivered == 0


def test_a_handler_failure_becomes_a_failed_task_result(session):
    session.submit_frames([task("t-1")])

    feed(session, p.Failed("t-1", "handler_error", "ValueError: bad", "w2", 3))

    (result,) = session.ready
    assert (result.ok, result.code, result.error, result.worker, result.attempts) == (
        False,
        "handler_error",
        "ValueError: bad",
        "w2",
        3,
    )
    assert not result.refused


def test_a_dead_letter_is_a_failure_not_a_refusal(session):
    session.submit_frames([task("t-1")])
    feed(session, p.Failed("t-1", "dead_letter", "lost", None, 6))
    assert not session.ready[0].refused


def test_a_refusal_becomes_a_task_result_for_each_refused_id(session):
    session.submit_frames([task("a"), task("b"), task("c")])

    feed(session, p.Accepted(["c"]))
    feed(session, p.Refused(["a", "b"], "unknown_service", "no worker ever offered 'echo'"))

    results = {r.task_id: r for r in session.ready}
    assert set(results) == {"a", "b"}
    assert all(r.refused and not r.ok for r in results.values())
    assert results["a"].code == "unknown_service"
    assert results["a"].error == "no worker ever offered 'echo'"
    assert session.outstanding == 1


def test_a_refusal_without_ids_is_kept_as_a_session_error(session):
    feed(session, p.Refused([], "malformed", "first frame is not a zmqflow signature"))

    assert not session.ready
    assert [e.code for e in session.errors] == ["malformed"]


@pytest.mark.parametrize(
    ("code", "refused"),
    [
        ("malformed", True),
        ("unknown_command", True),
        ("bad_version", True),
        ("unknown_service", True),
        ("too_large", True),
        ("queue_full", True),
        ("unknown_task", True),
        ("handler_error", False),
        ("dead_letter", False),
        (None, False),
    ],
)
def test_refused_is_true_only_for_refusal_codes(code, refused):
    assert TaskResult("t", False, code=code).refused is refused


def test_resync_submits_the_unaccepted_again_and_collects_the_accepted(session):
    session.submit_frames([task("a"), task("b"), task("c"), task("d")])
    feed(session, p.Accepted(["b", "d"]))
    feed(session, p.Result("d", "w", 1, False, b""))

    messages = [p.decode(f) for f in session.resync_frames()]

    assert messages == [p.Submit([task("a"), task("c")]), p.Collect(["b"])]


def test_a_first_submit_marks_new_tasks_fresh_and_a_resync_does_not(session):
    (tasks,) = [ClientSession.new_tasks("echo", [b"a", b"b"])]
    (first,) = [p.decode(f) for f in session.submit_frames(tasks)]
    (again, *_) = [p.decode(f) for f in session.resync_frames()]

    assert [t.fresh for t in first.tasks] == [True, True]
    assert [t.fresh for t in again.tasks] == [False, False]  # may have a stored answer


def test_resync_with_nothing_outstanding_sends_nothing(session):
    assert session.resync_frames() == []


def test_resync_respects_max_batch():
    session = ClientSession(max_batch=2)
    session.submit_frames(task(f"t-{i}") for i in range(3))

    messages = [p.decode(f) for f in session.resync_frames()]

    assert [len(m.tasks) for m in messages] == [2, 1]


def test_collect_attaches_to_tasks_submitted_elsewhere_and_surfaces_their_results(session):
    frames = session.collect_frames(["x", "y"])

    assert [p.decode(f) for f in frames] == [p.Collect(["x", "y"])]
    assert session.is_accepted("x")
    feed(session, p.Result("x", "w", 1, True, b"stored"))
    assert [(r.task_id, r.cached) for r in session.ready] == [("x", True)]
    assert [p.decode(f) for f in session.resync_frames()] == [p.Collect(["y"])]


def test_a_status_reply_is_kept(session):
    feed(session, p.Status({"inflight": 3}))
    assert session.status == {"inflight": 3}


def test_heartbeats_and_undecodable_frames_change_nothing(session):
    session.submit_frames([task("t-1")])

    session.on_message(p.encode(p.Heartbeat()))
    session.on_message([b"garbage"])
    session.on_message([p.CLIENT_SIGNATURE, b"\x03", b"\xc1", b""])

    assert not session.ready
    assert session.outstanding == 1


def test_a_result_with_a_malformed_item_surfaces_nothing(session):
    session.submit_frames([task("a"), task("b")])
    good, bad = ["a", "w", 1, False, b"ok"], ["b", "w", "one", False, b"ok"]

    session.on_message([p.CLIENT_SIGNATURE, b"\x03", msgpack.packb([good, bad])])

    assert not session.ready
    assert session.outstanding == 2


def test_result_items_with_fields_past_the_listed_ones_still_surface(session):
    session.submit_frames([task("a")])

    item = ["a", "w", 2, True, b"ok", "a later field"]
    session.on_message([p.CLIENT_SIGNATURE, b"\x03", msgpack.packb([item])])

    (result,) = session.ready
    assert (result.task_id, result.worker, result.attempts, result.cached) == ("a", "w", 2, True)


def test_each_session_gets_its_own_routing_id_and_new_ids_are_unique():
    assert ClientSession().routing_id != ClientSession().routing_id
    assert ClientSession.new_id() != ClientSession.new_id()
    assert p.valid_id(ClientSession.new_id())


def test_reopen_awaits_a_new_answer_for_a_retried_dead_letter(session):
    session.submit_frames([task("t-1")])
    feed(session, p.Failed("t-1", "dead_letter", "lost", None, 6))

    session.reopen(["t-1"])
    feed(session, p.Result("t-1", "w", 1, False, b"second life"))

    assert [(r.task_id, r.ok) for r in session.ready] == [("t-1", False), ("t-1", True)]
    assert session.redelivered == 0
    assert session.outstanding == 0


def test_answers_and_acceptances_count_as_progress_but_heartbeats_do_not(session):
    session.submit_frames([task("t-1")])
    session.last_progress = 0.0

    feed(session, p.Heartbeat())
    feed(session, p.Status({}))
    assert session.last_progress == 0.0
    feed(session, p.Accepted(["t-1"]))
    assert session.last_progress > 0.0


def test_a_batched_result_surfaces_each_item_in_order(session):
    session.submit_frames([task("a"), task("b"), task("c")])
    feed(session, p.Accepted(["a", "b", "c"]))

    feed(
        session,
        p.Results(
            [
                p.Result("b", "w1", 1, False, b"B"),
                p.Result("a", "w2", 2, True, b"A"),
                p.Result("b", "w1", 1, True, b"B"),  # second copy in the same batch
            ]
        ),
    )
    feed(session, p.Failures([p.Failed("c", "handler_error", "boom", "w1", 1)]))

    assert [
        (r.task_id, r.ok, r.payload, r.worker, r.attempts, r.cached) for r in session.ready
    ] == [
        ("b", True, b"B", "w1", 1, False),
        ("a", True, b"A", "w2", 2, True),
        ("c", False, b"", "w1", 1, False),
    ]
    assert session.ready[2].error == "boom"
    assert session.ready[2].code == "handler_error"
    assert session.redelivered == 1
    assert session.outstanding == 0


def test_a_batched_failure_answers_every_listed_task(session):
    session.submit_frames([task("a"), task("b")])

    feed(
        session,
        p.Failures(
            [
                p.Failed("a", "dead_letter", "lost", None, 6),
                p.Failed("b", "handler_error", "bad", "w", 1),
            ]
        ),
    )

    assert [(r.task_id, r.code, r.worker) for r in session.ready] == [
        ("a", "dead_letter", None),
        ("b", "handler_error", "w"),
    ]
    assert session.outstanding == 0


def test_memory_of_answered_ids_is_bounded_and_an_old_answer_still_surfaces_once(
    session, monkeypatch
):
    monkeypatch.setattr(session_module, "ANSWERED_KEPT", 3)
    session.submit_frames([task(f"t-{i}") for i in range(5)])
    for i in range(5):
        feed(session, p.Result(f"t-{i}", "w1", 1, False, b"out"))
    session.ready.clear()

    feed(session, p.Result("t-0", "w1", 1, False, b"out"))  # forgotten, yet not pending

    assert list(session.answered) == ["t-2", "t-3", "t-4"]
    assert not session.ready


def test_a_heartbeat_from_another_forwarder_instance_makes_the_session_resync_at_once(session):
    session.submit_frames([task("t-1")])
    feed(session, p.Heartbeat("forwarder-a"))
    assert session.last_progress > 0  # the first instance heard: nothing to do

    feed(session, p.Heartbeat("forwarder-a"))
    assert session.last_progress > 0
    feed(session, p.Heartbeat("forwarder-b"))  # it restarted, faster than the deadline

    assert session.last_progress == float("-inf")  # the clients' watchdog fires now
    assert session.forwarder == "forwarder-b"
    (resend,) = session.resync_frames()
    assert [t.id for t in p.decode(resend).tasks] == ["t-1"]


def test_refusals_without_ids_are_kept_only_up_to_a_bound(session):
    for _ in range(ERRORS_KEPT + 50):
        session.on_message(p.encode(p.Refused([], "malformed", "not msgpack")))

    assert len(session.errors) == ERRORS_KEPT


def test_the_forwarders_max_batch_from_its_heartbeat_reply_cuts_later_submits(session):
    feed(session, p.HeartbeatReply("forwarder-a", 2))

    frames = session.submit_frames(task(f"t-{i}") for i in range(5))

    assert session.max_batch == 2
    assert [len(p.decode(f).tasks) for f in frames] == [2, 2, 1]


def test_a_heartbeat_reply_without_max_batch_keeps_the_protocols_default(session):
    feed(session, p.Heartbeat("forwarder-a"))

    assert (session.max_batch, session.limits_heard) == (p.MAX_BATCH, True)


def test_a_whole_submit_refused_too_large_before_the_limit_is_heard_is_sent_again_cut():
    session = ClientSession(max_batch=4)
    (_sent,) = session.submit_frames(task(f"t-{i}") for i in range(4))
    ids = [f"t-{i}" for i in range(4)]

    feed(session, p.Refused(ids, "too_large", "SUBMIT holds 4 tasks, more than max_batch 2"))

    assert not session.ready  # held, not surfaced
    assert session.want_heartbeat  # the core asks the forwarder for its limits now
    feed(session, p.HeartbeatReply("forwarder-a", 2))
    assert session.last_progress == float("-inf")  # the core resyncs at once
    again = [p.decode(f) for f in session.resync_frames()]
    assert [[t.id for t in m.tasks] for m in again] == [ids[:2], ids[2:]]


def test_a_too_large_refusal_of_a_submit_cut_to_the_heard_limit_surfaces(session):
    feed(session, p.HeartbeatReply("forwarder-a", 2))
    session.submit_frames([task("t-0"), task("t-1")])

    feed(session, p.Refused(["t-0", "t-1"], "too_large", "payload of 9 bytes exceeds 8"))

    assert [(r.task_id, r.code) for r in session.ready] == [
        ("t-0", "too_large"),
        ("t-1", "too_large"),
    ]
