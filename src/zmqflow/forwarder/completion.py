"""Completion: a worker's answers finish their tasks, once.

Contract: ``_complete`` takes a worker's RESULT or FAILED items (from both
RESULT paths and FAILED, once per message): the first answer of an
unfinished task wins, a second is counted late. ``_finish`` is the one
finish of tasks (done, failed or dead): journaled (written once when it
was never journaled), answered to the client and every alias, counted and
announced. Both take a whole message: calls per task cost.
"""

from __future__ import annotations

from typing import Any

from zmqflow import protocol as p
from zmqflow.forwarder.entries import TaskEntry, WorkerEntry
from zmqflow.forwarder.state import BrokerState


class Completion(BrokerState):
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
