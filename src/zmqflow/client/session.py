"""Client protocol state without sockets, shared by Client and AsyncClient.

Contract: the session tracks every task it submitted until its one answer
is surfaced. ``submit_frames`` gives the SUBMIT messages to send;
``on_message`` takes what the forwarder sent and queues ``TaskResult``s in
``ready`` (one per item of a RESULT or FAILED, in order); ``resync_frames``
gives what to send on a new connection (SUBMIT again what was not ACCEPTED,
COLLECT what was). An answer for an id that is not pending is dropped (and
counted in ``redelivered`` when the id was answered recently): each task
surfaces at most once. Memory stays bounded: ``answered`` keeps only the
last ``ANSWERED_KEPT`` ids, for that count and for refusing an id reused
within the session.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from zmqflow import protocol as p
from zmqflow.client.ids import new_id

log = logging.getLogger("zmqflow.client")

Frames = list[bytes]
_RESULT = bytes([p.Command.RESULT])
ANSWERED_KEPT = 100_000  # answered ids remembered (about 15 MB), oldest forgotten first
ERRORS_KEPT = 100
REFUSAL_CODES = frozenset(
    {
        "malformed",
        "unknown_command",
        "bad_version",
        "unknown_service",
        "too_large",
        "queue_full",
        "unknown_task",
    }
)


@dataclass(slots=True)
class TaskResult:
    """The one answer of a task: a result, a failure or a refusal."""

    task_id: str
    ok: bool
    payload: bytes = b""
    error: str | None = None
    code: str | None = None  # failure or refusal code; None when ok
    worker: str | None = None
    attempts: int = 0
    cached: bool = False
    latency_s: float = 0.0

    @property
    def refused(self) -> bool:
        """The forwarder never took this task (see docs/protocol.md REFUSED)."""
        return self.code in REFUSAL_CODES


class TaskRefused(Exception):
    """The forwarder refused a task (unknown service, too large, queue full...);
    not ``protocol.Refused``, the REFUSED message that says so."""

    def __init__(self, code: str, reason: str, ids: list[str]) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.ids = ids


Refused = TaskRefused  # its first name: ``from zmqflow import Refused``


@dataclass(slots=True)
class _Pending:
    task: p.Task
    sent_at: float
    accepted: bool = False


@dataclass
class ClientSession:
    # tasks per SUBMIT: the protocol's default until the forwarder's HEARTBEAT
    # reply says its own (``limits_heard``)
    max_batch: int = p.MAX_BATCH
    limits_heard: bool = False
    # a SUBMIT sent before the forwarder's max_batch was heard came back too_large
    # as a whole: its tasks wait (unaccepted) for the reply, then go again cut to size
    held_for_limits: bool = False
    want_heartbeat: bool = False  # ask the forwarder now (the core sends a HEARTBEAT)
    routing_id: bytes = field(default_factory=lambda: b"c-" + uuid.uuid4().hex.encode())
    pending: dict[str, _Pending] = field(default_factory=dict)
    # recent ids, oldest first; OrderedDict because forgetting the oldest of a
    # plain dict (del d[next(iter(d))]) walks the holes earlier deletions left
    answered: OrderedDict[str, None] = field(default_factory=OrderedDict)
    ready: deque[TaskResult] = field(default_factory=deque)
    redelivered: int = 0
    status: dict[str, Any] | None = None
    # refusals not tied to an id, the latest ERRORS_KEPT (nobody may ever read them)
    errors: deque[p.Refused] = field(default_factory=lambda: deque(maxlen=ERRORS_KEPT))
    # ACCEPTED replies other than acknowledgements of pending SUBMITs (RETRY), in order
    accepted_ids: deque[list[str]] = field(default_factory=deque)
    last_progress: float = field(default_factory=time.monotonic)  # last ACCEPTED or answer
    forwarder: str | None = None  # the forwarder instance last heard (HEARTBEAT reply)

    @staticmethod
    def new_id() -> str:
        """A new task id: a UUIDv7, time-ordered (see ids.py)."""
        return new_id()

    @staticmethod
    def new_tasks(
        service: str,
        payloads: Iterable[bytes],
        keys: Iterable[str | None] | None = None,
        headers: Mapping[str, Any] | None = None,
        retries: int | None = None,
    ) -> list[p.Task]:
        """One task per payload, each with a fresh id (and its key, if given)."""
        payloads = list(payloads)
        key_list = list(keys) if keys is not None else [None] * len(payloads)
        return [
            p.Task(
                new_id(),
                service,
                bytes(payload),
                key,
                dict(headers or {}),
                retries,
                fresh=True,
            )
            for payload, key in zip(payloads, key_list, strict=True)
        ]

    def submit_frames(self, tasks: Iterable[p.Task]) -> list[Frames]:
        now = time.monotonic()
        batch: list[p.Task] = []
        pending, answered = self.pending, self.answered
        for task in tasks:
            if task.id in pending or task.id in answered:
                raise ValueError(f"task id {task.id!r} was already submitted in this session")
            pending[task.id] = _Pending(task, now)
            batch.append(task)
        return p.encode_split(p.Submit(batch), self.max_batch)

    def collect_frames(self, ids: Iterable[str]) -> list[Frames]:
        """Attach to tasks submitted elsewhere (another process, an earlier run):
        COLLECT messages, each within the frame limit (``protocol.encode_split``)."""
        now = time.monotonic()
        ids = list(ids)
        for task_id in ids:
            if task_id not in self.pending and task_id not in self.answered:
                self.pending[task_id] = _Pending(p.Task(task_id, ""), now, accepted=True)
        return p.encode_split(p.Collect(ids))

    def reopen(self, ids: Iterable[str]) -> None:
        """Await a new answer for these ids (dead letters sent to RETRY)."""
        now = time.monotonic()
        for task_id in ids:
            self.answered.pop(task_id, None)
            self.pending[task_id] = _Pending(p.Task(task_id, ""), now, accepted=True)

    def resync_frames(self) -> list[Frames]:
        """SUBMIT again what was not ACCEPTED, COLLECT what was (both idempotent).

        Sent on a new connection, and when nothing progressed for a while: a
        forwarder that restarted faster than the heartbeat deadline may have
        lost a SUBMIT before journaling it, or an answer while we reconnected.
        """
        self.last_progress = time.monotonic()
        # sent before: not fresh, so the forwarder looks for a stored answer
        unaccepted = [replace(e.task, fresh=False) for e in self.pending.values() if not e.accepted]
        accepted = [i for i, e in self.pending.items() if e.accepted]
        out = p.encode_split(p.Submit(unaccepted), self.max_batch)
        if accepted:
            out.extend(p.encode_split(p.Collect(accepted)))
        return out

    @staticmethod
    def retry_frames(ids: list[str]) -> list[Frames]:
        """RETRY messages for these dead letters (none: all of them), each within
        the frame limit; the forwarder answers each with one ACCEPTED."""
        return p.encode_split(p.Retry(ids))

    @property
    def outstanding(self) -> int:
        return len(self.pending)

    def is_accepted(self, task_id: str) -> bool:
        """ACCEPTED, or answered already: for ids this session submitted."""
        entry = self.pending.get(task_id)
        return entry is None or entry.accepted  # not pending: answered (or refused)

    def on_message(self, frames: Frames) -> None:
        if len(frames) == 3 and frames[1] == _RESULT and frames[0] == p.CLIENT_SIGNATURE:
            items = p.decode_client_results(frames)  # the hot path, without Result objects
            if items is not None:
                now = self.last_progress = time.monotonic()
                pending, answered, ready = self.pending, self.answered, self.ready
                for item in items:  # _answer, inlined: a call per task adds up here
                    task_id = item[0]
                    entry = pending.pop(task_id, None)
                    if entry is None:
                        if task_id in answered:
                            self.redelivered += 1
                        continue
                    answered[task_id] = None
                    ready.append(
                        TaskResult(
                            task_id,
                            True,
                            item[4],
                            None,
                            None,
                            item[1],
                            item[2],
                            item[3],
                            now - entry.sent_at,
                        )
                    )
                while len(answered) > ANSWERED_KEPT:
                    answered.popitem(last=False)
                return
        try:
            msg = p.decode(frames)
        except p.ProtocolError as exc:
            # not for us to fix, but never silent: a dropped ACCEPTED or answer
            # shows up later only as a timeout
            command = frames[1].hex() if len(frames) > 1 else "none"
            log.warning(
                "forwarder message dropped (command 0x%s, %s): %s", command, exc.code, exc.reason
            )
            return
        if not isinstance(msg, p.Heartbeat | p.Status):
            self.last_progress = time.monotonic()
        match msg:
            case p.Accepted(ids):
                ours = bool(ids)
                for task_id in ids:
                    entry = self.pending.get(task_id)
                    if entry is not None:
                        entry.accepted = True
                    else:
                        ours = False
                if not ours:  # not an acknowledgement of our SUBMITs: a RETRY's reply
                    self.accepted_ids.append(ids)
            case p.Results(results):
                for r in results:
                    self._answer(
                        r.id,
                        TaskResult(
                            r.id,
                            True,
                            r.payload,
                            worker=r.worker,
                            attempts=r.attempts,
                            cached=r.cached,
                        ),
                    )
            case p.Failures(failures):
                for f in failures:
                    self._answer(
                        f.id, TaskResult(f.id, False, b"", f.error, f.code, f.worker, f.attempts)
                    )
            case p.Refused(ids, code, reason):
                if not ids:
                    self.errors.append(msg)
                elif code == "too_large" and self._hold_for_limits(ids):
                    return
                for task_id in ids:
                    self._answer(task_id, TaskResult(task_id, False, b"", reason, code))
            case p.Status(info):
                self.status = info
            case p.Heartbeat(forwarder) if forwarder is not None:
                if self.forwarder is not None and forwarder != self.forwarder:
                    # A restarted forwarder may have lost SUBMITs it never journaled
                    # and answers it sent while we reconnected: resync now, as the
                    # progress watchdog would in a few seconds.
                    self.last_progress = -math.inf
                self.forwarder = forwarder
                if isinstance(msg, p.HeartbeatReply):  # not: a forwarder from before the key
                    self.max_batch = msg.max_batch
                self.limits_heard = True
                if self.held_for_limits:  # send the held tasks again, cut to size
                    self.held_for_limits = False
                    self.last_progress = -math.inf
            case _:
                pass  # heartbeats: being heard is all they carry

    def _hold_for_limits(self, ids: list[str]) -> bool:
        """A too_large REFUSED of a whole SUBMIT of ours that was larger than the
        forwarder's max_batch (or sent before we heard it): its tasks stay
        pending, to go again cut to size (``resync_frames``); True when held.
        A refusal of a SUBMIT already cut to the heard limit is a refusal of
        its tasks (payload too large): False, they surface."""
        if len(ids) < 2 or (self.limits_heard and len(ids) <= self.max_batch):
            return False
        pending = self.pending
        for task_id in ids:
            entry = pending.get(task_id)
            if entry is None or entry.accepted:
                return False
        if self.limits_heard:  # heard since that SUBMIT left: resync cuts it now
            self.last_progress = -math.inf
        else:
            self.held_for_limits = self.want_heartbeat = True
        return True

    def _answer(self, task_id: str, result: TaskResult) -> None:
        entry = self.pending.pop(task_id, None)
        if entry is None:
            if task_id in self.answered:
                self.redelivered += 1
            return
        answered = self.answered
        answered[task_id] = None
        if len(answered) > ANSWERED_KEPT:
            answered.popitem(last=False)
        result.latency_s = time.monotonic() - entry.sent_at
        self.ready.append(result)
