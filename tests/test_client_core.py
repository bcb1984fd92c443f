"""The client core (src/zmqflow/client/core.py) through turns, without sockets.

Each test plays the socket: it answers the core's I/O requests (SEND, RECV,
REOPEN, SLEEP, DELIVER) from a script and records them, so pumping,
reconnection, resync and result bookkeeping are checked exactly as both
Client and AsyncClient run them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from zmqflow import protocol as p
from zmqflow.client.core import (
    DELIVER,
    RECV,
    REOPEN,
    SEND,
    SLEEP,
    ClientCore,
    ForwarderUnreachable,
    Steps,
)
from zmqflow.client.session import Refused, TaskResult

Recv = Callable[["Script"], bool]


class Script:
    """Plays the socket for a core: ``on_recv`` decides what each RECV brings."""

    def __init__(self, core: ClientCore, on_recv: Recv) -> None:
        self.core = core
        self.on_recv = on_recv
        self.log: list[tuple[int, Any]] = []
        self.sent: list[p.Message] = []  # decoded, in order
        self.delivered: list[TaskResult] = []

    def bring(self, msg: p.Message) -> None:
        """The forwarder's message arrives (what RECV hands the session)."""
        self.core.session.on_message(p.encode(msg))

    def run(self, steps: Steps[Any]) -> Any:
        reply: Any = None
        try:
            while True:
                op, arg = steps.send(reply)
                self.log.append((op, arg))
                reply = None
                if op == SEND:
                    self.sent.extend(p.decode(frames) for frames in arg)
                elif op == RECV:
                    reply = self.on_recv(self)
                elif op == DELIVER:
                    ready = self.core.session.ready
                    while ready:
                        self.delivered.append(ready.popleft())
        except StopIteration as done:
            return done.value

    def ops(self, kind: int) -> list[Any]:
        return [arg for op, arg in self.log if op == kind]


def core(timeout: float = 5.0) -> ClientCore:
    # short heartbeats: silence is declared within milliseconds of real time
    return ClientCore("tcp://fake", timeout=timeout, heartbeat_interval=0.01)


def accept_and_answer(script: Script) -> bool:
    """A forwarder that accepts every pending task and answers it at once."""
    pending = [i for i, e in script.core.session.pending.items() if not e.accepted]
    if pending:
        script.bring(p.Accepted(pending))
    answered = list(script.core.session.pending)[:3]  # a few per turn
    if answered:
        script.bring(p.Results([p.Result(i, "w-1", 1, False, i.encode()) for i in answered]))
    return True


def test_a_silent_forwarder_gets_a_new_socket_a_heartbeat_and_a_resync_then_answers_surface():
    c = core()
    ids = c.session.submit_frames(c.session.new_tasks("echo", [b"a"]))
    task_id = next(iter(c.session.pending))
    assert ids  # the SUBMIT the test pretends went out before the silence

    def silent_until_reopened(s: Script) -> bool:
        if not s.ops(REOPEN):
            return False
        if isinstance(s.sent[-1], p.Heartbeat):  # the new socket's probe: answer it
            s.bring(p.Heartbeat("forwarder-1"))
            return True
        return accept_and_answer(s)

    script = Script(c, silent_until_reopened)
    script.run(c.as_completed(5))

    after_reopen = script.log[[op for op, _ in script.log].index(REOPEN) + 1 :]
    sent_after = [p.decode(arg[0]) for op, arg in after_reopen if op == SEND]
    assert isinstance(sent_after[0], p.Heartbeat)  # the probe of the new socket
    assert any(isinstance(m, p.Submit) and m.tasks[0].id == task_id for m in sent_after)
    assert [r.task_id for r in script.delivered] == [task_id]
    assert c.reconnects == 1


def test_reconnection_backs_off_exponentially_to_five_seconds_between_attempts():
    c = core(timeout=0.5)
    script = Script(c, lambda s: False)  # nobody there

    with pytest.raises(ForwarderUnreachable):
        script.run(c.submit_many("echo", [b"a"]))

    sleeps = script.ops(SLEEP)
    assert sleeps[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert max(sleeps) <= 5
    assert len(script.ops(REOPEN)) == len(sleeps) + 1  # a new socket per attempt


def test_status_waits_without_reconnecting_and_says_when_nobody_answers():
    c = core(timeout=60)
    script = Script(c, lambda s: False)

    with pytest.raises(ForwarderUnreachable, match="no status"):
        script.run(c.status(0.1))

    assert not script.ops(REOPEN)
    assert isinstance(script.sent[0], p.StatusRequest)


def test_stream_never_has_more_than_a_window_outstanding_and_surfaces_every_answer_once():
    c = core()
    outstanding: list[int] = []

    def forwarder(s: Script) -> bool:
        outstanding.append(s.core.session.outstanding)
        return accept_and_answer(s)

    script = Script(c, forwarder)
    script.run(c.stream("echo", (b"%d" % n for n in range(50)), window=8, timeout=5))

    assert max(outstanding) <= 8
    assert sorted(r.payload for r in script.delivered) == sorted(
        r.task_id.encode() for r in script.delivered
    )
    assert len({r.task_id for r in script.delivered}) == 50
    submits = [m for m in script.sent if isinstance(m, p.Submit)]
    assert all(t.fresh for m in submits for t in m.tasks)  # first sends only
    assert min(len(m.tasks) for m in submits[1:]) >= 2  # top-ups of a quarter window


def test_map_returns_answers_in_payload_order_and_leaves_other_answers_ready():
    c = core()
    script = Script(c, accept_and_answer)
    earlier = script.run(c.submit_many("echo", [b"x"], wait_accepted=False))

    results = script.run(c.map("echo", [b"a", b"b", b"c", b"d"], timeout=5))

    assert [r.payload for r in results] == [r.task_id.encode() for r in results]
    assert len(results) == 4
    assert [r.task_id for r in c.session.ready] == earlier  # left for its reader


def test_submit_raises_refused_and_the_refusal_does_not_surface_again():
    c = core()

    def refuse(s: Script) -> bool:
        ids = [i for i, e in s.core.session.pending.items() if not e.accepted]
        s.bring(p.Refused(ids, "unknown_service", "no worker has ever offered service 'x'"))
        return True

    script = Script(c, refuse)
    with pytest.raises(Refused, match="unknown_service"):
        script.run(c.submit("x", b"", None, None, None))

    assert not c.session.ready and not c.session.pending


def test_as_completed_raises_timeout_error_while_answers_are_owed():
    c = core(timeout=60)
    script = Script(c, lambda s: True)  # heard (heartbeats) but no answer
    script.run(c.submit_many("echo", [b"a"], wait_accepted=False))

    with pytest.raises(TimeoutError, match="1 tasks still unanswered"):
        script.run(c.as_completed(0.1))


def test_retry_dead_letters_reopens_the_moved_ids_for_a_new_answer():
    c = core()
    task_id = c.session.new_id()
    c.session.answered[task_id] = None  # surfaced once already, as a dead letter

    def moved(s: Script) -> bool:
        s.bring(p.Accepted([task_id]))
        return True

    script = Script(c, moved)
    assert script.run(c.retry_dead_letters([task_id], 5)) == [task_id]

    assert isinstance(script.sent[0], p.Retry) and script.sent[0].ids == [task_id]
    assert task_id in c.session.pending and task_id not in c.session.answered


def test_a_client_idle_past_the_deadline_does_not_take_the_quiet_for_a_dead_forwarder():
    c = core()
    c.session.submit_frames(c.session.new_tasks("echo", [b"a"]))
    c.session.pending[next(iter(c.session.pending))].accepted = True
    c.last_heard = c.last_sent = c.last_heard - 10 * c.deadline_s  # idle for a while

    def answers_when_asked(s: Script) -> bool:
        if not s.sent:
            return False  # nothing asked yet: nothing to hear
        return accept_and_answer(s)

    script = Script(c, answers_when_asked)
    script.run(c.as_completed(5))

    assert not script.ops(REOPEN)
    assert len(script.delivered) == 1
