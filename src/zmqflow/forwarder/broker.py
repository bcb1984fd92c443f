"""The broker: routes each message to the rule that handles it, without sockets.

Contract: ``on_client(rid, frames)`` and ``on_worker(rid, frames, now)`` take
a message as received (routing id stripped) and hand it to the module that
owns its rule; replies are queued in ``outbox_clients`` / ``outbox_workers``
(outbox.py: grouped per destination per turn). The device commits the
journal and only then sends the client outbox, so an ACCEPTED never leaves
before its task is durable. ``dispatch()`` hands queued tasks to workers
with free credit (round robin); ``tick(now)`` heartbeats workers and
requeues the tasks of dead ones.

The rules live in modules of their own, mixins over the tables of
state.py: the task table (tasks.py), admission of SUBMITs (admission.py),
journal deferral (deferral.py), stored answers, COLLECT, RETRY and aliases
(aliases.py), worker liveness (workers.py), completion (completion.py) and
the snapshot behind STATUS and the Prometheus collectors (status.py).
Every client message enters through ``on_client`` and every worker message
through ``on_worker``: a permission check, or a new message family (one
``case``), goes there, in one place.

The hot paths (a SUBMIT of usual tasks, a worker RESULT of well-typed
items: ``fast_paths``) differ from the checked ones only in how they
decode, and call the same rules; ``paths`` counts the messages each path
took (tests/test_broker_paths.py proves them equal). Time comes from
``clock`` (monotonic seconds), so tests drive it.

Bad input becomes a REFUSED or DISCONNECT reply and a log line, never an
exception.
"""

from __future__ import annotations

import logging
from collections import deque

from zmqflow import protocol as p
from zmqflow.forwarder.admission import Admission
from zmqflow.forwarder.aliases import StoredAnswers
from zmqflow.forwarder.entries import TaskEntry, WorkerEntry
from zmqflow.forwarder.snapshot import Snapshot
from zmqflow.forwarder.state import Frames, worker_fields
from zmqflow.forwarder.status import StatusView
from zmqflow.forwarder.workers import WorkerLiveness
from zmqflow.limits import Limits
from zmqflow.repeats import since

log = logging.getLogger("zmqflow.forwarder")

_W_RESULT = bytes([p.Command.W_RESULT])
_SUBMIT = bytes([p.Command.SUBMIT])

__all__ = ["Broker", "Limits", "Snapshot", "TaskEntry", "WorkerEntry"]


class Broker(Admission, StoredAnswers, WorkerLiveness, StatusView):
    """``Broker(journal, limits, events, forwarder_id, clock, env)``: see state.py;
    the tables start as the journal left them (``_restore``)."""

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
                        extra=worker_fields("worker.gone", worker.id, worker.language),
                    )
                    self._remove_worker(worker, lost=False)
                    self.events("worker.left", {"worker": worker.id, "reason": reason})
            case _:
                log.warning("worker %s: %s is not a worker message", rid.hex(), type(msg).__name__)
                self.outbox_workers.send(rid, p.encode(p.Disconnect("unknown command")))

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
