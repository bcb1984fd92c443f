"""What the broker sends in one loop turn, grouped per destination.

Contract: the broker queues messages during a turn; the device calls
``take()`` once per turn and sends what it returns, in order, as
``(routing_id, frames)``. ``take()`` empties the outbox.

- Control messages (``send``: HEARTBEAT, STATUS, DISCONNECT; ``reply``:
  the id lists ACCEPTED and REFUSED, cut into messages whose body fits the
  64 KiB frame limit, ``protocol.encode_split``) come first, in the order
  queued.
- Then the batched ones, one message per destination and kind holding
  everything queued for it this turn, in the order queued: TASK per worker
  (``WorkerOutbox.tasks``), RESULT then FAILED per client
  (``ClientOutbox.results`` / ``failures``), each queued a list at a time
  (one call per destination per message, not per item). Items are queued as the arrays
  that go on the wire (``protocol.dispatch_items``, ``result_item``, ``failed_item``): no object
  per item on the hot path. A batch larger than ``max_batch`` items or
  64 MiB is split into several messages (``protocol.encode_items``).

Placing every control message before every answer keeps the ordering rule
of docs/protocol.md: an ACCEPTED reaches its client before any RESULT or
FAILED of the same ids sent in the same turn (the journal commit happens
before any of them leaves, see device.py).
"""

from __future__ import annotations

from typing import Any

from zmqflow import protocol as p

Frames = list[bytes]
Item = list[Any]  # one batch item, fields in wire order


def _queue(batches: dict[bytes, list[Item]], rid: bytes, items: list[Item]) -> None:
    """Items queued for ``rid``, after those queued before them this turn (the
    list given may become the queue: callers hand over a new list)."""
    queued = batches.get(rid)
    if queued is None:
        batches[rid] = items
    else:
        queued.extend(items)


class _Outbox:
    def __init__(self, max_batch: int = p.MAX_BATCH) -> None:
        self.max_batch = max_batch
        self._control: list[tuple[bytes, Frames]] = []

    def send(self, rid: bytes, frames: Frames) -> None:
        """Queue one ready-made message (sent before this turn's batches)."""
        self._control.append((rid, frames))

    def reply(self, rid: bytes, msg: p.IdList) -> None:
        """Queue an id-list message, as as many messages as the frame limit needs:
        a peer refuses a longer body frame (and a client would never see it)."""
        for frames in p.encode_split(msg):
            self._control.append((rid, frames))

    def _take_control(self) -> list[tuple[bytes, Frames]]:
        out, self._control = self._control, []
        return out

    def _split(self, rid: bytes, kind: type, items: list[Item]) -> list[tuple[bytes, Frames]]:
        return [(rid, frames) for frames in p.encode_items(kind, items, self.max_batch)]


class WorkerOutbox(_Outbox):
    """Messages to workers: control messages, then one TASK per worker."""

    def __init__(self, max_batch: int = p.MAX_BATCH) -> None:
        super().__init__(max_batch)
        self._tasks: dict[bytes, list[Item]] = {}

    def tasks(self, rid: bytes, items: list[Item]) -> None:
        """Queue TASK items (``protocol.dispatch_items``) for worker ``rid`` (the
        broker has checked its credit)."""
        _queue(self._tasks, rid, items)

    def take(self) -> list[tuple[bytes, Frames]]:
        out = self._take_control()
        for rid, items in self._tasks.items():
            out.extend(self._split(rid, p.Tasks, items))
        self._tasks = {}
        return out


class ClientOutbox(_Outbox):
    """Messages to clients: control messages, then RESULT and FAILED per client."""

    def __init__(self, max_batch: int = p.MAX_BATCH) -> None:
        super().__init__(max_batch)
        self._results: dict[bytes, list[Item]] = {}
        self._failures: dict[bytes, list[Item]] = {}

    def results(self, rid: bytes, items: list[Item]) -> None:
        """Queue RESULT items (``protocol.result_item``) for client ``rid``."""
        _queue(self._results, rid, items)

    def failures(self, rid: bytes, items: list[Item]) -> None:
        """Queue FAILED items (``protocol.failed_item``) for client ``rid``."""
        _queue(self._failures, rid, items)

    def answer(self, rid: bytes, answer: p.ResultItem | p.FailureItem) -> None:
        """Queue either kind of answer, given as its object."""
        if isinstance(answer, p.ResultItem):
            self.results(rid, [p.RESULT_ITEM.as_array(answer)])
        else:
            self.failures(rid, [p.FAILURE_ITEM.as_array(answer)])

    def take(self) -> list[tuple[bytes, Frames]]:
        out = self._take_control()
        for rid, results in self._results.items():
            out.extend(self._split(rid, p.Results, results))
        for rid, failures in self._failures.items():
            out.extend(self._split(rid, p.Failures, failures))
        self._results = {}
        self._failures = {}
        return out
