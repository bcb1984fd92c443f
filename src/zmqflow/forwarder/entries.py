"""What the broker holds per task and per worker.

Contract: a ``TaskEntry`` is an unfinished task held in memory (queued or in
flight), made new by admission or from the journal at a restart
(``from_stored``); a ``WorkerEntry`` is a worker that sent READY, with the
ids it holds (``inflight``) against its ``credit``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from zmqflow.journal import StoredTask

next_arrival = itertools.count().__next__  # orders tasks taken into memory, oldest first


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
    arrival: int  # orders tasks taken into memory (next_arrival()), oldest first
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
            next_arrival(),
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
