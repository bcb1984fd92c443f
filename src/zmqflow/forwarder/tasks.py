"""The task table: unfinished tasks by id and key, queued per service.

Contract: ``_hold`` is the one way tasks enter memory (new, restored or
retried: held by id and key, at the back of their service's queue);
``_requeue`` puts a held task back at the front (its worker was lost);
``_next`` takes tasks from a queue's front, skipping the copies of tasks
finished or run meanwhile; ``_run_on`` marks them in flight; ``_held`` and
``_rebind`` answer for ids (or ids joined to a task by its key).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Collection

from zmqflow.forwarder.entries import TaskEntry
from zmqflow.forwarder.state import BrokerState

log = logging.getLogger("zmqflow.forwarder")


class TaskTable(BrokerState):
    def _restore(self) -> None:
        held = [TaskEntry.from_stored(stored) for stored in self.journal.load_unfinished()]
        self._hold(held)
        for task in held:
            for alias_id, _client in task.aliases:
                self.aliases[alias_id] = task.id
        if self.tasks:
            log.info("journal: %d unfinished tasks queued again", len(self.tasks))

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

    def _next(self, queue: deque[TaskEntry], count: int) -> list[TaskEntry]:
        """Up to ``count`` tasks from the front of ``queue``, skipping the copies
        left there by tasks finished or run meanwhile. A task run on a worker's
        READY and then requeued is in the queue twice: it is taken once."""
        tasks = self.tasks
        taken: list[TaskEntry] = []
        ids: set[str] = set()
        while queue and len(taken) < count:
            task = queue.popleft()
            if task.worker is None and tasks.get(task.id) is task and task.id not in ids:
                ids.add(task.id)
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
