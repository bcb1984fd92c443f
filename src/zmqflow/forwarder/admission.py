"""Admission: whether the tasks of a SUBMIT may be taken, and taking them.

Contract: ``_on_submit`` takes a SUBMIT as received: the usual path (every
task usual, fresh, new and passing the rules: ``_submit_usual``, without an
object per item) or the checked one (``_submit``, task by task, SUBMIT
semantics 1-5); both call the same rules, each in one place: whether tasks
may be taken at all (``_problem``), whether there is room (``_room``),
taking a new task or joining it to its key's task (``_accept``), and the one
admission into the table (``_admit``). The rules take a whole message (ids,
services, payloads) so the hot path calls each once per message.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from zmqflow import protocol as p
from zmqflow.forwarder.entries import TaskEntry, next_arrival
from zmqflow.forwarder.state import Answers, Frames
from zmqflow.forwarder.tasks import TaskTable
from zmqflow.limits import ID_RULE, KEY_RULE, SERVICE_RULE, valid_key

# where a SUBMIT item's fields stand (its field table: protocol/items.py)
_SUBMIT_FIELDS = p.SUBMIT_ITEM.positions("id", "service", "payload", "key", "headers", "retries")
_ID, _SERVICE, _PAYLOAD = _SUBMIT_FIELDS[:3]


class Admission(TaskTable):
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
        default, unjournaled, arrival = self.limits.max_retries, self.unjournaled, next_arrival
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
