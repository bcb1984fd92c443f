"""What the forwarder holds, as one snapshot: STATUS and the metrics read it.

Contract: ``snapshot()`` copies the numbers out of the broker's tables (its
identity and uptime, every worker, the known services, tasks queued and in
flight per service, the counters) without touching the journal, so the
Prometheus collectors call it from their scrape thread and never read the
broker's internals; ``status()`` is the snapshot plus the journal's dead
letters, as the STATUS reply's map (docs/protocol.md, keys in that order).
The snapshot's classes are in snapshot.py (the metrics import them alone).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from zmqflow.forwarder.snapshot import Snapshot, WorkerView
from zmqflow.forwarder.state import BrokerState


class StatusView(BrokerState):
    def snapshot(self) -> Snapshot:
        now = self.clock()
        queues: dict[str, int] = {}
        running: dict[str, int] = {}  # in flight per service
        # copies: a scrape thread may call this while the loop changes the tables
        for task in list(self.tasks.values()):
            table = queues if task.worker is None else running
            table[task.service] = table.get(task.service, 0) + 1
        return Snapshot(
            forwarder={
                **self._identity,
                "uptime_s": round(now - self._started, 3),
                "journal": self.journal.path,
            },
            workers=[
                WorkerView(
                    w.id,
                    w.language,
                    list(w.services),
                    w.credit,
                    len(w.inflight),
                    round(now - w.last_seen, 3),
                    w.host,
                    w.pid,
                    w.version,
                )
                for w in list(self.workers.values())
            ],
            services=sorted(self.known_services),
            queues=queues,
            inflight_by_service=running,
            unjournaled=len(self.unjournaled),
            counters=dict(self.counters),
            heartbeat_misses=self.heartbeat_misses,
        )

    def status(self) -> dict[str, Any]:
        """The STATUS reply's map: the snapshot and the journal's dead letters."""
        snap = self.snapshot()
        return {
            "forwarder": snap.forwarder,
            "workers": [asdict(w) for w in snap.workers],
            "services": snap.services,
            "queues": snap.queues,
            "inflight": sum(snap.inflight_by_service.values()),
            "inflight_by_service": snap.inflight_by_service,
            "unjournaled": snap.unjournaled,
            "dead_letters": self.journal.dead_letter_summaries(),
            "dead_letter_count": self.journal.count_dead(),
            "counters": snap.counters,
        }
