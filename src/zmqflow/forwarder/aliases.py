"""Stored answers and aliases: COLLECT, RETRY, and ids joined by a key.

Contract: ``_stored_reply`` gives a finished task's stored answer under the
id asked for (an alias of a running task joins it instead); ``_collect``
attaches a client to held or finished tasks; ``_retry`` moves dead letters
back into the table (one ACCEPTED per RETRY).
"""

from __future__ import annotations

from zmqflow import protocol as p
from zmqflow.forwarder.deferral import JournalDeferral
from zmqflow.forwarder.entries import TaskEntry
from zmqflow.forwarder.state import Answers
from zmqflow.forwarder.tasks import TaskTable
from zmqflow.journal import Answer


class StoredAnswers(TaskTable, JournalDeferral):
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
