"""Worker liveness: READY, heartbeats, and workers declared dead.

Contract: ``_ready`` registers a worker (or updates a known one) with its
services, credit and the tasks it still holds; ``tick`` heartbeats every
worker and ``reap`` declares dead those silent past
``heartbeat_interval * heartbeat_liveness``; ``worker_unreachable`` does
the same for one the device could not send to. A dead worker's tasks go
back to the front of their queues, or to the dead-letter list past their
retries (``_remove_worker``).
"""

from __future__ import annotations

import logging
import math

from zmqflow import protocol as p
from zmqflow.forwarder.completion import Completion
from zmqflow.forwarder.entries import TaskEntry, WorkerEntry
from zmqflow.forwarder.state import worker_fields
from zmqflow.forwarder.tasks import TaskTable

log = logging.getLogger("zmqflow.forwarder")

_HEARTBEAT_TO_WORKER = p.encode(p.WorkerHeartbeat())


class WorkerLiveness(TaskTable, Completion):
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
                extra=worker_fields("worker.ready", msg.worker, msg.language),
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

    def _answered_by(self, worker: WorkerEntry | None, rid: bytes) -> None:
        """After a worker's answers: its services may dispatch again; an unknown
        worker is told to go (it announces itself anew)."""
        if worker is not None:
            self.to_dispatch.update(worker.services)
        else:
            self._disown(rid)

    def _disown(self, rid: bytes) -> None:
        self.outbox_workers.send(rid, p.encode(p.Disconnect("unknown worker")))

    def worker_unreachable(self, rid: bytes) -> None:
        """The device could not send to this routing id: the peer is gone."""
        worker = self.workers.get(rid)
        if worker is not None:
            log.warning(
                "worker %s unreachable: dead, %d tasks requeued",
                worker.id,
                len(worker.inflight),
                extra=worker_fields("worker.lost", worker.id, worker.language),
            )
            silent = self.clock() - worker.last_seen
            self.events("worker.lost", {"worker": worker.id, "silent_s": silent})
            self._remove_worker(worker, lost=True)

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
                    extra=worker_fields("worker.lost", worker.id, worker.language),
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
