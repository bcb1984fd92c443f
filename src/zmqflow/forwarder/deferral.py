"""Journal deferral: a new task is journaled up to ``journal_defer_s`` late.

Contract: a task that finishes within that time is written once, finished
(completion.py), instead of inserted and then updated, which halves the
journal's work per task. ``journal_due`` (called by the device before each
commit) writes the tasks whose time came and queues the ACCEPTED of every
task journaled this turn; ``_journal_now`` writes a waiting task at once
when something depends on it (a key joining it, a COLLECT, a re-sent
SUBMIT). A task is acknowledged by the commit that first holds it.
"""

from __future__ import annotations

import math

from zmqflow import protocol as p
from zmqflow.forwarder.entries import TaskEntry
from zmqflow.forwarder.state import BrokerState


class JournalDeferral(BrokerState):
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
