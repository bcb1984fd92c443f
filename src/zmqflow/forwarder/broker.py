"""The broker: task table, worker table and routing, without any sockets.

Contract: ``on_client(rid, frames)`` and ``on_worker(rid, frames)`` take a
message as received (routing id stripped), update the tables, buffer journal
writes and queue replies in ``outbox_clients`` / ``outbox_workers`` (see
outbox.py: answers and tasks are grouped per destination per turn). The
device commits the journal and only then sends the client outbox, so an
ACCEPTED never leaves before its task is durable.
``dispatch()`` hands queued tasks to workers with free credit (round robin);
``tick(now)`` heartbeats workers and requeues the tasks of dead ones.

A new task is dispatched at once but journaled up to ``journal_defer_s``
later (``journal_due()``, called by the device before each commit): one
that finishes within that time is written once, finished, instead of
inserted and then updated, which halves the journal's work per task. It
is acknowledged after the commit that first holds it: by an ACCEPTED when
journaled pending, by its answer alone when journaled finished. A forwarder
that dies before then never acknowledged it, and the client submits it
again. Anything that depends on a task (a key joining it, a
COLLECT, a re-sent SUBMIT) has it journaled at once.

Each rule lives once: whether a task may be taken (``_problem``), whether
there is room (``_room``), whether an id is held (``_held``), taking tasks
(``_admit``, into the queues by ``_hold``) and finishing a worker's answers
(``_complete``, ``_finish``). The hot paths (a SUBMIT of usual tasks, a
worker RESULT of well-typed items: ``fast_paths``) differ from the checked
ones only in how they decode, and call the same rules; ``paths`` counts the
messages each path took (tests/test_broker_paths.py proves them equal). The
rules take a whole message (ids, services, payloads; a list of tasks), so
that the hot paths call each once per message, not once per task; the
checked path hands them one task.
Time comes from ``clock`` (monotonic seconds), so tests drive it.

Bad input becomes a REFUSED or DISCONNECT reply and a log line, never an
exception.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zmqflow import __version__
from zmqflow import protocol as p
from zmqflow.forwarder.outbox import ClientOutbox, WorkerOutbox
from zmqflow.journal import Answer, Journal, StoredTask
from zmqflow.limits import ID_RULE, KEY_RULE, SERVICE_RULE, Limits, valid_key
from zmqflow.repeats import Repeats, since

if TYPE_CHECKING:
    from zmqflow.forwarder.metrics import Recorder

log = logging.getLogger("zmqflow.forwarder")

Frames = list[bytes]
Answers = list[p.Result | p.Failed]
EventSink = Callable[[str, dict[str, Any]], None]

_HEARTBEAT_TO_WORKER = p.encode(p.WorkerHeartbeat())
_W_RESULT = bytes([p.Command.W_RESULT])
_SUBMIT = bytes([p.Command.SUBMIT])
_next_arrival = itertools.count().__next__  # orders tasks taken into memory, oldest first
# where a SUBMIT item's fields stand (its field table: protocol/items.py)
_SUBMIT_FIELDS = p.SUBMIT_ITEM.positions("id", "service", "payload", "key", "headers", "retries")
_ID, _SERVICE, _PAYLOAD = _SUBMIT_FIELDS[:3]


def _worker_fields(event: str, worker_id: str, language: str) -> dict[str, str]:
    """``extra=`` of a worker's log line (zmqflow.logs: the JSON line's keys)."""
    return {"event": event, "worker_id": worker_id, "language": language}


@dataclass(slots=True, eq=False)
class TaskEntry:
    """An unfinished task held in memory (queued or in flight)."""

    id: str
    service: str
    key: str | None
    headers: dict[str, Any]
    payload: bytes
    retries: int
    attempts: int
    client: bytes
    arrival: int  # orders tasks taken into memory (_next_arrival()), oldest first
    journaled: bool = True  # False while it waits for journal_due()
    accepted_at: float = 0.0  # monotonic time of acceptance
    worker: bytes | None = None  # routing id while in flight
    # other ids joined to it by its key, with their clients; a tuple, rarely replaced
    aliases: tuple[tuple[str, bytes], ...] = ()
    # monotonic time it last went in flight, set by _run_on (metrics read it): not
    # set at creation, where it would cost every task, only once in flight
    dispatched_at: float = field(init=False, repr=False)

    @classmethod
    def from_stored(cls, stored: StoredTask) -> TaskEntry:
        return cls(
            stored.id,
            stored.service,
            stored.key,
            stored.headers,
            stored.payload,
            stored.retries,
            stored.attempts,
            stored.client,
            _next_arrival(),
            aliases=tuple(stored.aliases),
        )

    def join(self, alias_id: str, client: bytes) -> None:
        """Another id (from an idempotency key) receives this task's answer."""
        self.aliases = (*self.aliases, (alias_id, client))


@dataclass(slots=True, eq=False)
class WorkerEntry:
    rid: bytes
    id: str
    language: str
    services: list[str]
    credit: int
    version: str
    pid: int
    host: str
    last_seen: float
    inflight: set[str] = field(default_factory=set)

    @property
    def free(self) -> int:
        return self.credit - len(self.inflight)


class Broker:
    def __init__(
        self,
        journal: Journal,
        limits: Limits,
        events: EventSink | None = None,
        forwarder_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        env: str = "",
    ) -> None:
        self.journal = journal
        # monotonic seconds: acceptance times, journal deadlines, worker silence
        self.clock = clock
        self._repeats = Repeats()  # warnings about a peer's bad messages
        self._identity = {"id": forwarder_id or "", "version": __version__, "env": env}
        self._started = clock()
        # The usual SUBMIT and worker RESULT take a path without an object per
        # item (``_submit_usual``, ``decode_worker_results``); False sends every
        # message the checked way, which must behave the same (tests compare).
        self.fast_paths = True
        # messages taken by each path, so tests can tell which one ran
        self.paths: dict[str, int] = dict.fromkeys(
            ("submit_usual", "submit_checked", "results_usual", "results_checked"), 0
        )
        self.limits = limits
        self.events: EventSink = events or (lambda kind, data: None)
        # Per-task events cost a dict each: built only while somebody subscribes
        # (the device keeps this up to date from its XPUB subscriptions).
        self.task_events = True
        # metrics.Recorder while metrics are on (it counts per service and times tasks)
        self.stats: Recorder | None = None
        self.heartbeat_misses = 0  # ticks finding a worker silent over two intervals
        self.tasks: dict[str, TaskEntry] = {}
        self.aliases: dict[str, str] = {}  # alias id -> canonical id, unfinished only
        self.keys: dict[str, str] = {}  # idempotency key -> canonical id, unfinished only
        self.queues: dict[str, deque[TaskEntry]] = {}
        self.queued_bytes = 0
        self.unjournaled: dict[str, TaskEntry] = {}  # in order of acceptance
        self._accepts: dict[bytes, list[str]] = {}  # ACCEPTED to send with this turn's commit
        self.workers: dict[bytes, WorkerEntry] = {}
        self.by_service: dict[str, list[WorkerEntry]] = {}
        self.known_services = journal.known_services()
        self.to_dispatch: set[str] = set()  # services whose queue may now go to a worker
        self.outbox_clients = ClientOutbox(limits.max_batch)
        self.outbox_workers = WorkerOutbox(limits.max_batch)
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "accepted",
                "completed",
                "failed",
                "refused",
                "requeued",
                "dead_lettered",
                "late_results",
                "malformed",
                "workers_lost",
            ),
            0,
        )
        self._restore()

    # ----------------------------------------------------------- recovery
    def _restore(self) -> None:
        held = [TaskEntry.from_stored(stored) for stored in self.journal.load_unfinished()]
        self._hold(held)
        for task in held:
            for alias_id, _client in task.aliases:
                self.aliases[alias_id] = task.id
        if self.tasks:
            log.info("journal: %d unfinished tasks queued again", len(self.tasks))

    # ------------------------------------------------------------ queues
    def _hold(self, entries: list[TaskEntry]) -> None:
        """The one way tasks enter memory (new, restored, or retried): held by
        id and key, queued at the back of their service's queue."""
        tasks, keys, queues, to_dispatch = self.tasks, self.keys, self.queues, self.to_dispatch
        size = 0
        for task in entries:
            tasks[task.id] = task
            if task.key:
                keys[task.key] = task.id
            queue = queues.get(task.service)
            if queue is None:
                queue = queues[task.service] = deque()
            queue.append(task)
            to_dispatch.add(task.service)
            size += len(task.payload)
        self.queued_bytes += size

    def _requeue(self, task: TaskEntry) -> None:
        """A held task back at the front of its queue (its worker was lost)."""
        task.worker = None
        queue = self.queues.get(task.service)
        if queue is None:
            queue = self.queues[task.service] = deque()
        queue.appendleft(task)
        self.queued_bytes += len(task.payload)
        self.to_dispatch.add(task.service)

    # ------------------------------------------------------ client side
    def on_client(self, rid: bytes, frames: Frames) -> None:
        try:
            if len(frames) >= 2 and frames[1] == _SUBMIT and frames[0] == p.CLIENT_SIGNATURE:
                self._on_submit(rid, frames)
                return
            msg = p.decode_request(frames)
            match msg:
                case p.Heartbeat():
                    # names this instance (a client that hears another name knows the
                    # forwarder restarted and resyncs at once) and its max_batch
                    forwarder_id = self._identity["id"]
                    reply = (
                        p.HeartbeatReply(forwarder_id, self.limits.max_batch)
                        if forwarder_id
                        else p.Heartbeat()
                    )
                    self.outbox_clients.send(rid, p.encode(reply))
                case p.Collect(ids):
                    self._collect(rid, ids)
                case p.StatusRequest():
                    self.outbox_clients.send(rid, p.encode(p.Status(self.status())))
                case p.Retry(ids):
                    self._retry(rid, ids)
                case _:
                    raise p.ProtocolError(
                        "unknown_command", f"{type(msg).__name__} is not a client request"
                    )
        except p.ProtocolError as exc:
            self._refuse(rid, exc.ids, exc.code, exc.reason)

    def _refuse(self, rid: bytes, ids: list[str], code: str, reason: str) -> None:
        self.counters["refused"] += max(1, len(ids))
        if self.stats is not None:
            self.stats.refusal(code, max(1, len(ids)))
        if code in ("malformed", "unknown_command", "bad_version"):
            self.counters["malformed"] += 1
            quiet = self._repeats.due((rid, code), self.clock())
            if quiet is not None:  # a peer cannot flood the log: counted, written once a minute
                log.warning("client %s: refused (%s): %s%s", rid.hex(), code, reason, since(quiet))
        self.outbox_clients.reply(rid, p.Refused(ids, code, reason))

    def _on_submit(self, rid: bytes, frames: Frames) -> None:
        """SUBMIT: the usual path (every task usual, see ``_submit_usual``) or
        the checked one (``_submit``); both apply the rules below
        (``_problem``, ``_room``, ``_held``, ``_admit``)."""
        items = p.submit_items(frames)
        if len(items) > self.limits.max_batch:  # the message as a whole: no task taken
            raise p.ProtocolError(
                "too_large",
                f"SUBMIT holds {len(items)} tasks, more than max_batch {self.limits.max_batch}",
                p.readable_ids(items),
            )
        if self.fast_paths and self._submit_usual(rid, items):
            self.paths["submit_usual"] += 1
            return
        self.paths["submit_checked"] += 1
        self._submit(rid, [p.decode_task(item) for item in items])

    def _submit_usual(self, rid: bytes, items: list[Any]) -> bool:
        """Take a SUBMIT whose items are all ``p.usual_tasks``, fresh, new, pass
        ``_problem`` and fit ``_room``, without a ``Task`` per item (the hot
        path); False, having changed nothing, when any of them does not:
        ``_submit`` then handles the message item by item. Each rule is called
        once for the whole message (its batch form), not once per task."""
        if not (p.usual_tasks(items) and p.all_fresh(items)):  # not fresh: may have an answer
            return False
        ids = [item[_ID] for item in items]
        payloads = [item[_PAYLOAD] for item in items]
        new = set(ids)
        if (
            len(new) < len(ids)  # an id twice in one message
            or self._problem(ids, {item[_SERVICE] for item in items}, payloads, None) is not None
            or self._held(new)
            or self._room(len(items), sum(map(len, payloads))) is not None
        ):
            return False
        self._admit(rid, items, self.clock())
        return True  # their ACCEPTED leaves once journaled, or their answer does

    def _submit(self, rid: bytes, items: list[p.Task | p.ProtocolError]) -> None:
        """The checked path: each task on its own (SUBMIT semantics 1-5)."""
        accepted: list[str] = []
        cached: Answers = []  # stored answers, sent after the ACCEPTED
        refused: dict[tuple[str, str], list[str]] = {}
        new: list[p.Task] = []  # not held in memory
        for item in items:
            if isinstance(item, p.ProtocolError):
                refused.setdefault((item.code, item.reason), []).extend(item.ids)
                continue
            problem = self._problem((item.id,), (item.service,), (item.payload,), item.key)
            if problem:
                refused.setdefault(problem, []).append(item.id)
            elif self._held((item.id,)):  # a re-sent SUBMIT: the same task
                self._rebind(item.id, rid)
                if not self._journal_now(item.id):  # (that queues its ACCEPTED)
                    accepted.append(item.id)
            else:
                new.append(item)
        # A stored answer can exist only under an id sent before (a re-sent SUBMIT):
        # a task marked fresh is a first send, and skips the lookup.
        probe = [t.id for t in new if not t.fresh]
        stored = self.journal.answers(probe) if probe else {}
        now = self.clock()  # one acceptance time for the message
        for task in new:
            if self._held((task.id,)):  # twice in one message
                self._rebind(task.id, rid)
                if not self._journal_now(task.id):
                    accepted.append(task.id)
            elif task.id in stored:
                accepted.append(task.id)
                cached.extend(self._stored_reply(rid, task.id, stored[task.id]))
            else:
                outcome = self._accept(rid, task, now)
                if isinstance(outcome, tuple):
                    refused.setdefault(outcome, []).append(task.id)
                elif outcome is not None:  # None: ACCEPTED once journaled
                    accepted.append(task.id)
                    cached.extend(outcome)
        if accepted:
            self._accepts.setdefault(rid, []).extend(accepted)  # one ACCEPTED per turn
        for reply in cached:
            self.outbox_clients.answer(rid, reply)
        for (code, reason), ids in refused.items():
            self._refuse(rid, ids, code, reason)

    # The rules of taking a task, each in one place: both SUBMIT paths call them.
    def _problem(
        self,
        ids: Collection[str],
        services: Collection[str],
        payloads: Collection[bytes],
        key: str | None,
    ) -> tuple[str, str] | None:
        """Why tasks cannot be taken, whatever the forwarder holds: a refusal
        (code, reason), or None when every one can. Given one task (the checked
        path: its own refusal) or, for keyless tasks, a whole message's ids,
        services and payloads (the usual path: None exactly when no task of it
        has a problem, as each rule is "every one passes"). Ids are strs (the
        decoders saw to it)."""
        if not p.valid_ids(ids):
            return ("malformed", f"task id must be {ID_RULE}")
        known = self.known_services
        if not known.issuperset(services):  # known ones were checked at READY
            service = next(s for s in services if s not in known)
            if not p.valid_service(service):
                return ("malformed", f"service name must be {SERVICE_RULE}")
            return ("unknown_service", f"no worker has ever offered service {service!r}")
        largest = max(map(len, payloads))
        if largest > self.limits.max_payload_bytes:
            return (
                "too_large",
                f"payload of {largest} bytes exceeds {self.limits.max_payload_bytes}",
            )
        if key is not None and not valid_key(key):
            return ("malformed", f"idempotency key must be {KEY_RULE}")
        return None

    def _room(self, count: int, size: int) -> tuple[str, str] | None:
        """A ``queue_full`` refusal when ``count`` more tasks of ``size`` payload
        bytes in all would pass ``max_queue`` or ``max_queue_bytes``, else None."""
        limits = self.limits
        if len(self.tasks) + count > limits.max_queue:
            return ("queue_full", f"the forwarder holds {len(self.tasks)} tasks, its limit")
        if self.queued_bytes + size > limits.max_queue_bytes:
            return (
                "queue_full",
                f"the forwarder holds {self.queued_bytes} queued payload bytes, "
                f"its limit is {limits.max_queue_bytes}",
            )
        return None

    def _held(self, ids: Collection[str]) -> bool:
        """An unfinished task (or an id joined to one) is held in memory under
        one of these ids (one id, or a whole message's as a set)."""
        return not (self.tasks.keys().isdisjoint(ids) and self.aliases.keys().isdisjoint(ids))

    def _rebind(self, task_id: str, rid: bytes) -> None:
        """The results of a held id now go to ``rid`` (the last to submit or collect it)."""
        task = self.tasks.get(task_id)
        if task is not None:
            task.client = rid
            return
        canonical = self.tasks[self.aliases[task_id]]
        canonical.aliases = tuple((a, rid if a == task_id else c) for a, c in canonical.aliases)

    def _accept(self, rid: bytes, task: p.Task, now: float) -> tuple[str, str] | Answers | None:
        """Take a new task, or join it to its key's task.

        Returns a refusal, the cached replies to send after ACCEPTED, or None
        for a new task: its ACCEPTED leaves once it is journaled.
        """
        if task.key is not None:
            canonical_id = self.keys.get(task.key)
            if canonical_id is not None:
                self._journal_now(canonical_id)
                self.tasks[canonical_id].join(task.id, rid)
                self.aliases[task.id] = canonical_id
                self.journal.record_alias(task.id, canonical_id, task.service, task.key, rid, False)
                return []
            answer = self.journal.answer_for_key(task.key)
            if answer is not None and answer.finished:
                self.journal.record_alias(task.id, answer.id, task.service, task.key, rid, True)
                return self._stored_reply(rid, task.id, answer)
        full = self._room(1, len(task.payload))
        if full is not None:
            return full
        self._admit(rid, [p.SUBMIT_ITEM.as_array(task)], now)
        return None

    def _admit(self, rid: bytes, items: list[Any], now: float) -> None:
        """The one admission of new tasks, given as SUBMIT item arrays that passed
        the rules above: held, queued, and journaled by ``journal_due`` (or
        written once finished). One call per message: calls per task cost."""
        default, unjournaled, arrival = self.limits.max_retries, self.unjournaled, _next_arrival
        i_id, i_service, i_payload, i_key, i_headers, i_retries = _SUBMIT_FIELDS
        entries: list[TaskEntry] = []
        for item in items:
            retries = item[i_retries]
            entry = TaskEntry(
                item[i_id],
                item[i_service],
                item[i_key],
                item[i_headers],
                item[i_payload],
                default if retries is None else retries,
                0,
                rid,
                arrival(),
                False,
                now,
            )
            unjournaled[entry.id] = entry
            entries.append(entry)
        self._hold(entries)
        self.counters["accepted"] += len(entries)
        if self.stats is not None:
            self.stats.accepted(items)

    # --------------------------------------------------------- journaling
    def journal_due(self) -> None:
        """Journal the new tasks held ``journal_defer_s`` or longer, and queue the
        ACCEPTED of every task journaled this turn (the device commits next)."""
        if self.unjournaled:
            deadline = self.clock() - self.limits.journal_defer_s
            for task in list(self.unjournaled.values()):  # oldest first
                if task.accepted_at > deadline:
                    break
                self._journal_pending(task)
        if self._accepts:
            for rid, ids in self._accepts.items():
                self.outbox_clients.reply(rid, p.Accepted(ids))
            self._accepts = {}

    def next_journal_due(self) -> float:
        """When ``journal_due`` has work next (monotonic time; inf: none waits)."""
        for task in self.unjournaled.values():
            return task.accepted_at + self.limits.journal_defer_s
        return math.inf

    def _journal_now(self, task_id: str) -> bool:
        """Journal an unfinished task now if it waits (something depends on it).

        True when it did, which also queued the task's ACCEPTED.
        """
        task = self.unjournaled.get(task_id)
        if task is None:
            return False
        self._journal_pending(task)
        return True

    def _journal_pending(self, task: TaskEntry) -> None:
        del self.unjournaled[task.id]
        task.journaled = True
        self.journal.record_accepted(
            task.id,
            task.service,
            task.key,
            task.headers,
            task.payload,
            task.retries,
            task.client,
            task.attempts,
        )
        self._accepts.setdefault(task.client, []).append(task.id)

    def _stored_reply(self, rid: bytes, reply_id: str, answer: Answer) -> Answers:
        """The stored answer of a finished task, under ``reply_id``; none if unfinished."""
        if answer.state == "alias" and answer.alias_of is not None:
            canonical_id = answer.alias_of
            if canonical_id in self.tasks:  # still running: the alias joins it
                self._journal_now(canonical_id)
                self.tasks[canonical_id].join(reply_id, rid)
                self.aliases[reply_id] = canonical_id
                return []
            target = self.journal.answers([canonical_id]).get(canonical_id)
            if target is None:
                return []
            answer = target
        if answer.state == "done":
            return [
                p.Result(reply_id, answer.worker or "", answer.attempts, True, answer.result or b"")
            ]
        if answer.finished:
            return [
                p.Failed(
                    reply_id,
                    answer.code or "handler_error",
                    answer.error or "",
                    answer.worker,
                    answer.attempts,
                )
            ]
        return []

    def _collect(self, rid: bytes, ids: list[str]) -> None:
        pending: list[str] = []
        for task_id in ids:
            if self._held((task_id,)):
                self._rebind(task_id, rid)
                if not self._journal_now(task_id):
                    pending.append(task_id)
        look_up = [i for i in ids if i not in self.tasks and i not in self.aliases]
        stored = self.journal.answers(look_up) if look_up else {}
        cached: Answers = []
        unknown: list[str] = []
        for task_id in look_up:
            if task_id in stored:
                cached.extend(self._stored_reply(rid, task_id, stored[task_id]))
            else:
                unknown.append(task_id)
        if pending:
            self._accepts.setdefault(rid, []).extend(pending)
        for reply in cached:
            self.outbox_clients.answer(rid, reply)
        if unknown:
            self._refuse(rid, unknown, "unknown_task", "no such task (never seen, or expired)")

    def _retry(self, rid: bytes, ids: list[str]) -> None:
        letters = self.journal.dead_letters(ids or None)
        if not ids:
            # one ACCEPTED answers one RETRY: "all" moves what one frame lists,
            # the client sends RETRY again for the rest
            letters = letters[: len(p.split_ids([d.id for d in letters])[0])]
        found = {d.id for d in letters}
        for stored in letters:
            if self._held((stored.id,)):  # retried already in this loop turn
                self._rebind(stored.id, rid)
                continue
            stored.attempts = 0
            stored.client = rid
            self.journal.record_requeued(stored.id, rid)
            self._hold([TaskEntry.from_stored(stored)])
        self.outbox_clients.reply(rid, p.Accepted([d.id for d in letters]))
        missing = [i for i in ids if i not in found]
        if missing:
            self._refuse(rid, missing, "unknown_task", "not in the dead-letter list")

    # ------------------------------------------------------ worker side
    def on_worker(self, rid: bytes, frames: Frames, now: float) -> None:
        worker = self.workers.get(rid)
        if worker is not None:
            worker.last_seen = now
        if (
            self.fast_paths
            and len(frames) == 3
            and frames[1] == _W_RESULT
            and frames[0] == p.WORKER_SIGNATURE
        ):
            answers = p.decode_worker_results(frames)  # the hot path: id, payload arrays
            if answers is not None:
                self.paths["results_usual"] += 1
                self._complete(worker, answers, failed=False)
                self._answered_by(worker, rid)
                return
        try:
            msg = p.decode(frames)
        except p.ProtocolError as exc:
            self.counters["malformed"] += 1
            quiet = self._repeats.due((rid, exc.code), self.clock())
            if quiet is not None:
                log.warning(
                    "worker %s: bad message dropped (%s): %s%s",
                    rid.hex(),
                    exc.code,
                    exc.reason,
                    since(quiet),
                )
            self.outbox_workers.send(rid, p.encode(p.Disconnect(f"{exc.code}: {exc.reason}")))
            return
        match msg:
            case p.WorkerResults(items):
                self.paths["results_checked"] += 1
                self._complete(worker, [[d.id, d.payload] for d in items], failed=False)
                self._answered_by(worker, rid)
            case p.WorkerFailures(items):
                self._complete(worker, [[e.id, e.error] for e in items], failed=True)
                self._answered_by(worker, rid)
            case p.WorkerHeartbeat():
                if worker is None:
                    self._disown(rid)
            case p.Ready():
                self._ready(rid, msg, now)
            case p.Disconnect(reason):
                if worker is not None:
                    log.info(
                        "worker %s left: %s",
                        worker.id,
                        reason,
                        extra=_worker_fields("worker.gone", worker.id, worker.language),
                    )
                    self._remove_worker(worker, lost=False)
                    self.events("worker.left", {"worker": worker.id, "reason": reason})
            case _:
                log.warning("worker %s: %s is not a worker message", rid.hex(), type(msg).__name__)
                self.outbox_workers.send(rid, p.encode(p.Disconnect("unknown command")))

    def _answered_by(self, worker: WorkerEntry | None, rid: bytes) -> None:
        """After a worker's answers: its services may dispatch again; an unknown
        worker is told to go (it announces itself anew)."""
        if worker is not None:
            self.to_dispatch.update(worker.services)
        else:
            self._disown(rid)

    def _disown(self, rid: bytes) -> None:
        self.outbox_workers.send(rid, p.encode(p.Disconnect("unknown worker")))

    def _ready(self, rid: bytes, msg: p.Ready, now: float) -> None:
        msg.services = list(dict.fromkeys(msg.services))  # listed twice, served once
        worker = self.workers.get(rid)
        if worker is not None:
            self._unlist(worker)
            worker.services, worker.credit = msg.services, msg.credit
        else:
            worker = WorkerEntry(
                rid,
                msg.worker,
                msg.language,
                msg.services,
                msg.credit,
                msg.version,
                msg.pid,
                msg.host,
                now,
            )
            self.workers[rid] = worker
            log.info(
                "worker %s (%s) ready: services=%s credit=%d inflight=%d",
                msg.worker,
                msg.language,
                ",".join(msg.services),
                msg.credit,
                len(msg.inflight),
                extra=_worker_fields("worker.ready", msg.worker, msg.language),
            )
            self.events(
                "worker.ready",
                {"worker": msg.worker, "language": msg.language, "services": msg.services},
            )
        for task_id in msg.inflight:
            # Every task the worker still runs fills its credit, even one finished
            # elsewhere meanwhile: its late answer gives the credit back.
            worker.inflight.add(task_id)
            task = self.tasks.get(task_id)
            if task is not None and task.worker is None:  # queued: don't run it twice
                self._run_on([task], rid, now)
        for service in msg.services:
            self.by_service.setdefault(service, []).append(worker)
            if service not in self.known_services:
                self.known_services.add(service)
                self.journal.add_service(service)
            self.to_dispatch.add(service)

    def _unlist(self, worker: WorkerEntry) -> None:
        for service in worker.services:
            peers = self.by_service.get(service, [])
            if worker in peers:
                peers.remove(worker)

    def _complete(self, worker: WorkerEntry | None, answers: list[Any], failed: bool) -> None:
        """The one completion of a worker's answers, given as item arrays: ``id``
        and output (RESULT) or error text (``failed``: FAILED), from a worker we
        know or not (``None``). Both RESULT paths and FAILED call it, once per
        message. The first answer of an unfinished task wins."""
        tasks, counters = self.tasks, self.counters
        if self.stats is not None:
            self.stats.answered(tasks, answers, failed, self.clock())
        inflight = worker.inflight if worker is not None else set()
        finished: list[TaskEntry] = []
        outputs: list[Any] = []
        for answer in answers:
            task_id = answer[0]
            inflight.discard(task_id)
            task = tasks.pop(task_id, None)  # out of the table: a second answer is late
            if task is None:
                counters["late_results"] += 1  # already answered by another worker
                continue
            if task.worker is None:  # a late answer for a task queued again: take it off
                self.queued_bytes -= len(task.payload)
            if task.attempts < 1:  # it ran, even if not dispatched by us
                task.attempts = 1
            finished.append(task)
            outputs.append(answer[1])
        if finished:
            name = worker.id if worker is not None else "unknown"
            if failed:
                self._finish(finished, "failed", outputs, "handler_error", name)
            else:
                self._finish(finished, "done", outputs, None, name)

    def _finish(
        self,
        tasks: list[TaskEntry],
        state: str,
        outputs: list[Any],
        code: str | None,
        worker: str | None,
    ) -> None:
        """The one finish of tasks, all in one ``state``, taken out of
        ``self.tasks`` by the caller (a copy left in a queue is skipped by
        ``_next``): ``outputs`` holds each one's result (done) or error text
        (failed, dead). Journaled, answered to their clients and aliases,
        counted. One call per message: calls per task cost."""
        journal, keys, unjournaled = self.journal, self.keys, self.unjournaled
        done = state == "done"
        name, why = worker or "", code or ""
        answers: dict[bytes, list[list[Any]]] = {}  # per client, in order
        for task, output in zip(tasks, outputs, strict=True):
            result, error = (output, None) if done else (None, output)
            if task.key:
                keys.pop(task.key, None)
            if task.journaled:
                journal.record_finished(task.id, state, result, error, code, worker, task.attempts)
            else:  # finished before its first write: written once, finished
                del unjournaled[task.id]
                task.journaled = True
                journal.record_finished_new(task, state, result, error, code, worker)
                # no ACCEPTED: the RESULT or FAILED, sent after the same commit, acknowledges
            if done:
                item = p.result_item(task.id, name, task.attempts, False, result or b"")
            else:
                item = p.failed_item(task.id, why, error or "", worker, task.attempts)
            items = answers.get(task.client)
            if items is None:
                answers[task.client] = [item]
            else:
                items.append(item)
            if task.aliases:
                for alias_id, client in task.aliases:
                    if done:
                        alias = p.result_item(alias_id, name, task.attempts, True, result or b"")
                    else:
                        alias = p.failed_item(alias_id, why, error or "", worker, task.attempts)
                    answers.setdefault(client, []).append(alias)
                journal.record_aliases_finished(task.id)
                for alias_id, _client in task.aliases:
                    self.aliases.pop(alias_id, None)
        outbox = self.outbox_clients
        send = outbox.results if done else outbox.failures
        for client, items in answers.items():
            send(client, items)
        if done:
            self.counters["completed"] += len(tasks)
            if self.task_events:
                for task in tasks:
                    self.events(
                        "task.completed", {"id": task.id, "service": task.service, "worker": worker}
                    )
        else:
            self.counters["dead_lettered" if state == "dead" else "failed"] += len(tasks)
            kind = "task.dead_lettered" if state == "dead" else "task.failed"
            for task, error in zip(tasks, outputs, strict=True):
                self.events(kind, {"id": task.id, "service": task.service, "error": error})

    # ---------------------------------------------------------- routing
    def dispatch(self) -> None:
        """Hand queued tasks to workers with free credit, one each per round; a
        worker alone in its round takes every task it has room for at once
        (the tasks the rounds would give it, in one go)."""
        while self.to_dispatch:
            service = self.to_dispatch.pop()
            queue = self.queues.get(service)
            peers = self.by_service.get(service)
            if not queue or not peers:
                continue
            ready = deque(w for w in peers if w.free > 0)
            send, now = self.outbox_workers.tasks, self.clock()
            while ready:
                worker = ready.popleft()
                batch = self._next(queue, 1 if ready else worker.free)
                if not batch:
                    break
                self._run_on(batch, worker.rid, now)
                worker.inflight.update([task.id for task in batch])
                send(worker.rid, p.dispatch_items(batch))
                if worker.free > 0:
                    ready.append(worker)
            if len(peers) > 1:  # the next round starts with another worker
                peers.append(peers.pop(0))

    def _next(self, queue: deque[TaskEntry], count: int) -> list[TaskEntry]:
        """Up to ``count`` tasks from the front of ``queue``, skipping the copies
        left there by tasks finished or run meanwhile."""
        tasks = self.tasks
        taken: list[TaskEntry] = []
        while queue and len(taken) < count:
            task = queue.popleft()
            if task.worker is None and tasks.get(task.id) is task:
                taken.append(task)
        return taken

    def _run_on(self, tasks: list[TaskEntry], rid: bytes, now: float) -> None:
        """Queued tasks are in flight on worker ``rid`` from ``now``: one more
        attempt each."""
        size = 0
        for task in tasks:
            task.worker = rid
            task.dispatched_at = now
            task.attempts += 1
            size += len(task.payload)
        self.queued_bytes -= size

    def worker_unreachable(self, rid: bytes) -> None:
        """The device could not send to this routing id: the peer is gone."""
        worker = self.workers.get(rid)
        if worker is not None:
            log.warning(
                "worker %s unreachable: dead, %d tasks requeued",
                worker.id,
                len(worker.inflight),
                extra=_worker_fields("worker.lost", worker.id, worker.language),
            )
            silent = self.clock() - worker.last_seen
            self.events("worker.lost", {"worker": worker.id, "silent_s": silent})
            self._remove_worker(worker, lost=True)

    # ------------------------------------------------------------ time
    def tick(self, now: float) -> float:
        """Heartbeat every worker; declare dead the silent ones (see ``reap``)."""
        next_expiry = self.reap(now)
        missed = now - 2 * self.limits.heartbeat_interval
        for worker in self.workers.values():
            self.outbox_workers.send(worker.rid, _HEARTBEAT_TO_WORKER)
            if worker.last_seen < missed:
                self.heartbeat_misses += 1
        return next_expiry

    def reap(self, now: float) -> float:
        """Declare dead the workers silent past the deadline; returns the earliest
        time another one can be (the device wakes up then, not a tick later)."""
        deadline = self.limits.heartbeat_interval * self.limits.heartbeat_liveness
        next_expiry = math.inf
        for worker in list(self.workers.values()):
            silent = now - worker.last_seen
            if silent > deadline:
                log.warning(
                    "worker %s silent for %.1fs: dead, %d tasks requeued",
                    worker.id,
                    silent,
                    len(worker.inflight),
                    extra=_worker_fields("worker.lost", worker.id, worker.language),
                )
                self.events("worker.lost", {"worker": worker.id, "silent_s": silent})
                self._remove_worker(worker, lost=True)
            else:
                next_expiry = min(next_expiry, worker.last_seen + deadline)
        return next_expiry

    def _remove_worker(self, worker: WorkerEntry, lost: bool) -> None:
        self.workers.pop(worker.rid, None)
        self._unlist(worker)
        if lost:
            self.counters["workers_lost"] += 1
        requeue: list[TaskEntry] = []
        for task_id in worker.inflight:
            task = self.tasks.get(task_id)
            if task is not None and task.worker == worker.rid:
                requeue.append(task)
        # oldest first at the front, so order is kept
        for task in sorted(requeue, key=lambda t: t.arrival, reverse=True):
            if lost and task.attempts > task.retries:
                del self.tasks[task.id]
                self._finish(
                    [task],
                    "dead",
                    [f"worker lost on each of {task.attempts} attempts"],
                    "dead_letter",
                    None,
                )
                log.warning(
                    "task %s dead-lettered: its worker was lost on each of %d attempts",
                    task.id,
                    task.attempts,
                    extra={
                        "event": "task.dead_lettered",
                        "task_id": task.id,
                        "service": task.service,
                    },
                )
                if self.stats is not None:
                    self.stats.dead_lettered(task.service)
                continue
            self.counters["requeued"] += 1
            if self.stats is not None:
                self.stats.requeued(task.service)
            if task.journaled:
                self.journal.record_attempts(task.id, task.attempts)
            self._requeue(task)
            self.events("task.requeued", {"id": task.id, "attempts": task.attempts})
        worker.inflight.clear()

    # ---------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        now = self.clock()
        queues: dict[str, int] = {}
        running: dict[str, int] = {}  # in flight per service
        for task in self.tasks.values():
            if task.worker is None:
                queues[task.service] = queues.get(task.service, 0) + 1
            else:
                running[task.service] = running.get(task.service, 0) + 1
        return {
            "forwarder": {
                **self._identity,
                "uptime_s": round(now - self._started, 3),
                "journal": self.journal.path,
            },
            "workers": [
                {
                    "id": w.id,
                    "language": w.language,
                    "services": w.services,
                    "credit": w.credit,
                    "inflight": len(w.inflight),
                    "last_heartbeat_s": round(now - w.last_seen, 3),
                    "host": w.host,
                    "pid": w.pid,
                    "version": w.version,
                }
                for w in self.workers.values()
            ],
            "services": sorted(self.known_services),
            "queues": queues,
            "inflight": sum(running.values()),
            "inflight_by_service": running,
            "unjournaled": len(self.unjournaled),  # held, not yet acknowledged
            "dead_letters": self.journal.dead_letter_summaries(),
            "dead_letter_count": self.journal.count_dead(),
            "counters": dict(self.counters),
        }
