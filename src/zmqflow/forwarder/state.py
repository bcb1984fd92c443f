"""The broker's tables, in one place, for the modules that work on them.

Contract: ``BrokerState.__init__`` makes every table empty (the task table,
keys and aliases, queues, workers, counters, the outboxes) from a journal,
the forwarder's ``Limits``, an event sink and a clock; the broker's
concerns are mixins over it, each in its module: the task table
(tasks.py), admission (admission.py), journal deferral (deferral.py),
stored answers and aliases (aliases.py), worker liveness (workers.py),
completion (completion.py) and the snapshot behind STATUS and the metrics
(status.py). broker.py routes messages to them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from zmqflow import __version__
from zmqflow import protocol as p
from zmqflow.forwarder.entries import TaskEntry, WorkerEntry
from zmqflow.forwarder.outbox import ClientOutbox, WorkerOutbox
from zmqflow.journal import Journal
from zmqflow.limits import Limits
from zmqflow.repeats import Repeats

if TYPE_CHECKING:
    from zmqflow.forwarder.metrics import Recorder

log = logging.getLogger("zmqflow.forwarder")

Frames = list[bytes]
Answers = list[p.ResultItem | p.FailureItem]
EventSink = Callable[[str, dict[str, Any]], None]


def worker_fields(event: str, worker_id: str, language: str) -> dict[str, str]:
    """``extra=`` of a worker's log line (zmqflow.logs: the JSON line's keys)."""
    return {"event": event, "worker_id": worker_id, "language": language}


class BrokerState:
    def __init__(
        self,
        journal: Journal,
        limits: Limits,
        events: EventSink | None = None,
        forwarder_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        env: str = "",
    ) -> None:
        self.journal = journal
        # monotonic seconds: acceptance times, journal deadlines, worker silence
        self.clock = clock
        self._repeats = Repeats()  # warnings about a peer's bad messages
        self._identity = {"id": forwarder_id or "", "version": __version__, "env": env}
        self._started = clock()
        # The usual SUBMIT and worker RESULT take a path without an object per
        # item (``_submit_usual``, ``decode_worker_results``); False sends every
        # message the checked way, which must behave the same (tests compare).
        self.fast_paths = True
        # messages taken by each path, so tests can tell which one ran
        self.paths: dict[str, int] = dict.fromkeys(
            ("submit_usual", "submit_checked", "results_usual", "results_checked"), 0
        )
        self.limits = limits
        self.events: EventSink = events or (lambda kind, data: None)
        # Per-task events cost a dict each: built only while somebody subscribes
        # (the device keeps this up to date from its XPUB subscriptions).
        self.task_events = True
        # metrics.Recorder while metrics are on (it counts per service and times tasks)
        self.stats: Recorder | None = None
        self.heartbeat_misses = 0  # ticks finding a worker silent over two intervals
        self.tasks: dict[str, TaskEntry] = {}
        self.aliases: dict[str, str] = {}  # alias id -> canonical id, unfinished only
        self.keys: dict[str, str] = {}  # idempotency key -> canonical id, unfinished only
        self.queues: dict[str, deque[TaskEntry]] = {}
        self.queued_bytes = 0
        self.unjournaled: dict[str, TaskEntry] = {}  # in order of acceptance
        self._accepts: dict[bytes, list[str]] = {}  # ACCEPTED to send with this turn's commit
        self.workers: dict[bytes, WorkerEntry] = {}
        self.by_service: dict[str, list[WorkerEntry]] = {}
        self.known_services = journal.known_services()
        self.to_dispatch: set[str] = set()  # services whose queue may now go to a worker
        self.outbox_clients = ClientOutbox(limits.max_batch)
        self.outbox_workers = WorkerOutbox(limits.max_batch)
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "accepted",
                "completed",
                "failed",
                "refused",
                "requeued",
                "dead_lettered",
                "late_results",
                "malformed",
                "workers_lost",
            ),
            0,
        )
        self._restore()

    def _restore(self) -> None:
        """Take back what the journal holds (tasks.py)."""

    def _refuse(self, rid: bytes, ids: list[str], code: str, reason: str) -> None:
        raise NotImplementedError  # broker.py: the one refusal of a client's ids
