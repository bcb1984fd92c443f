"""One subscriber's delivery state: position, acknowledgements, events in flight.

Contract (socket-free; ``now`` is the caller's monotonic clock):

- ``position``: every event up to it is handled (acknowledged, skipped by
  the topic filter, or missed); ``acked``: handled events above it, as
  sorted disjoint ``[lo, hi]`` runs; ``cursor``: the last event read from
  the stream for this subscriber. Every seq in ``(position, cursor]`` is in
  flight or in ``acked``, so at most ``window`` events are in flight and
  ``acked`` holds at most ``window + 1`` runs: a slow or dead subscriber
  costs bounded memory; the stream keeps the events, not the device.
- ``offer(events, now)`` takes the next events (at most ``room``): those
  whose topic does not start with the filter count as handled at once,
  those already acknowledged (after a restart) are passed over, the rest go
  in flight, due for an acknowledgement within ``ack_wait``.
- ``ack(seqs)``: handled; an ack of an event not in flight is ignored.
- ``due(now)``: events in flight past their deadline, delivered again with
  ``attempt`` + 1 (``redeliveries`` counts them); ``resend_all(now)`` does
  it for every event in flight (the subscriber came back on a new connection);
  ``not_sent(now)`` takes back the attempts of what was sent at ``now`` to
  a peer that turned out to be gone.
- ``skip_to(first)``: the stream's oldest retained event is ``first``: the
  events between ``cursor`` and it fell out of retention before delivery;
  returns exactly how many (``missed`` adds them up) and marks them handled.
  ``untold`` holds the gaps (merged: missed, first, last) until the
  subscriber acknowledges an event sent after the GAP that told it
  (``told_at``): a GAP sent to a peer that was gone is told again at the
  next attach, across device restarts too.
- ``record()``: the ``SubscriberRecord`` to persist (position and runs).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from zmqflow.streams.store import StoredEvent, SubscriberRecord


@dataclass(slots=True)
class InFlight:
    event: StoredEvent
    attempt: int
    deadline: float
    sent_at: float


def _normalise(runs: list[list[int]]) -> list[list[int]]:
    """Sorted, merged (overlapping or adjacent) runs."""
    runs.sort()
    out: list[list[int]] = []
    for lo, hi in runs:
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


class Subscription:
    def __init__(
        self,
        record: SubscriberRecord,
        durable: bool,
        window: int = 100,
        ack_wait: float = 30.0,
    ) -> None:
        self.stream = record.stream
        self.name = record.name
        self.topic = record.topic
        self.durable = durable
        self.window = window
        self.ack_wait = ack_wait
        self.position = record.position
        flat = record.acked
        self.acked = _normalise([[flat[i], flat[i + 1]] for i in range(0, len(flat) - 1, 2)])
        self.cursor = self.position
        self.inflight: dict[int, InFlight] = {}
        self.redeliveries = record.redeliveries
        self.missed = record.missed
        self.untold = list(record.untold)  # [missed, first, last] not known told, or []
        self.told_at: int | None = None  # cursor when a GAP last went out
        self.delivered = record.delivered
        self.created_at = record.created_at
        self.peer: bytes | None = None
        self.last_heard = 0.0
        self.changed = False  # position, runs or counters differ from the last record()
        self._advance()

    # ------------------------------------------------------------ reading
    @property
    def room(self) -> int:
        return self.window - len(self.inflight)

    def is_acked(self, seq: int) -> bool:
        if seq <= self.position:
            return True
        i = bisect_right(self.acked, [seq, 1 << 62]) - 1
        return i >= 0 and self.acked[i][0] <= seq <= self.acked[i][1]

    def offer(self, events: list[StoredEvent], now: float) -> list[InFlight]:
        """Take ``events`` (the next ones after ``cursor``, in order, at most
        ``room`` to go in flight); returns those to deliver."""
        out: list[InFlight] = []
        skipped: list[list[int]] = []
        for event in events:
            if self.room <= 0:
                break
            self.cursor = event.seq
            if self.is_acked(event.seq):
                continue
            if not event.topic.startswith(self.topic):
                skipped.append([event.seq, event.seq])
                continue
            entry = InFlight(event, 1, now + self.ack_wait, now)
            self.inflight[event.seq] = entry
            out.append(entry)
        self.delivered += len(out)
        if skipped:
            self._add(skipped)
        self.changed = True
        return out

    def ack(self, seqs: list[int]) -> int:
        """Mark these events handled; how many were in flight."""
        runs = [[s, s] for s in seqs if self.inflight.pop(s, None) is not None]
        if self.untold and self.told_at is not None and any(s > self.told_at for s, _ in runs):
            # an event sent after the GAP came back acknowledged: the GAP arrived too
            self.untold = []
            self.changed = True
        if runs:
            self._add(runs)
        return len(runs)

    def due(self, now: float) -> list[InFlight]:
        """Events in flight past their deadline, with their attempt counted again."""
        late = [f for f in self.inflight.values() if f.deadline <= now]
        return self._again(late, now)

    def resend_all(self, now: float) -> list[InFlight]:
        return self._again(list(self.inflight.values()), now)

    def _again(self, entries: list[InFlight], now: float) -> list[InFlight]:
        for entry in entries:
            entry.attempt += 1
            entry.deadline = now + self.ack_wait
            entry.sent_at = now
            if entry.attempt > 1:
                self.redeliveries += 1
            else:  # its first send never left (not_sent)
                self.delivered += 1
        if entries:
            self.changed = True
        return entries

    def not_sent(self, now: float) -> None:
        """What went out at ``now`` never left (the peer was gone): those
        deliveries do not count as attempts; they go with the next attach."""
        for entry in self.inflight.values():
            if entry.sent_at == now:
                if entry.attempt > 1:
                    self.redeliveries -= 1
                entry.attempt -= 1
                if entry.attempt == 0:
                    self.delivered -= 1

    def next_deadline(self) -> float | None:
        return min((f.deadline for f in self.inflight.values()), default=None)

    def skip_to(self, first: int) -> int:
        """Events in ``(cursor, first)`` fell out of retention: exactly how many
        were not handled already (0 when the cursor is not behind ``first``)."""
        if self.cursor + 1 >= first:
            return 0
        lo, hi = self.cursor + 1, first - 1
        handled = sum(
            min(hi, run[1]) - max(lo, run[0]) + 1
            for run in self.acked
            if run[1] >= lo and run[0] <= hi
        )
        handled += max(0, min(hi, self.position) - lo + 1)  # a position beyond the cursor
        missed = (hi - lo + 1) - handled
        self.cursor = hi
        self._add([[lo, hi]])
        self.missed += missed
        if missed:
            told = self.untold
            self.untold = [missed + told[0], told[1], hi] if told else [missed, lo, hi]
        self.changed = True
        return missed

    # ------------------------------------------------------------ writing
    def _add(self, runs: list[list[int]]) -> None:
        self.acked = _normalise(self.acked + runs)
        self._advance()
        self.changed = True

    def _advance(self) -> None:
        acked = self.acked
        while acked and acked[0][0] <= self.position + 1:
            self.position = max(self.position, acked.pop(0)[1])
        self.cursor = max(self.cursor, self.position)

    def record(self) -> SubscriberRecord:
        return SubscriberRecord(
            self.stream,
            self.name,
            self.topic,
            self.position,
            [n for run in self.acked for n in run],
            self.redeliveries,
            self.missed,
            list(self.untold),
            self.delivered,
            self.created_at,
        )
