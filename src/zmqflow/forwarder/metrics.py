"""Prometheus metrics of the forwarder: counted cheaply on the loop, read at scrape time.

Contract: ``Forwarder.serve_metrics(port)`` (device.py) installs a
``Recorder`` on the broker (``broker.stats``) and the device
(``forwarder.stats``), registers ``BrokerCollector`` and the security
collector, and starts prometheus-client's HTTP server in a thread. With
metrics off nothing is installed, and the loop pays one ``is None`` test
per message.

On the loop the recorder only adds to plain ints and lists: per service
counters, and histograms kept as bucket counts (histogram.Buckets:
``bisect`` on the fixed ``BOUNDS`` tuple) plus a sum, instead of prometheus-client's ``Histogram``
with its lock per observation. The three task histograms are observed when
a worker's answer arrives, from the broker's ``accepted_at`` and
``dispatched_at`` stamps. ``BrokerCollector`` turns those numbers and the
broker's ``snapshot()`` (status.py: queues, workers, counters, copied out of
the tables) into metric families when Prometheus scrapes; it reads nothing
else of the broker and never touches the journal's database.

docs/observability.md lists every metric.
"""

from __future__ import annotations

import contextlib
import os
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from zmqflow import protocol as p
from zmqflow.histogram import Buckets

if TYPE_CHECKING:
    from zmqflow.forwarder.entries import TaskEntry
    from zmqflow.forwarder.snapshot import Snapshot
    from zmqflow.journal import Journal


class HasSnapshot(Protocol):
    def snapshot(self) -> Snapshot: ...


#: histogram bucket upper bounds in seconds (``le``); one more bucket holds the rest (+Inf)
BOUNDS = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
(_SERVICE,) = p.SUBMIT_ITEM.positions("service")  # in the SUBMIT item arrays ``accepted`` gets
COMMIT_BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ServiceStats:
    """What the recorder counts for one service."""

    __slots__ = (
        "accepted",
        "completed",
        "dead_lettered",
        "failed",
        "queue_wait",
        "requeued",
        "round_trip",
        "service_time",
    )

    def __init__(self) -> None:
        self.accepted = self.completed = self.failed = self.requeued = self.dead_lettered = 0
        self.queue_wait = Buckets(BOUNDS)
        self.service_time = Buckets(BOUNDS)
        self.round_trip = Buckets(BOUNDS)


class Recorder:
    """The counts the loop keeps while metrics are on (see the module docstring)."""

    def __init__(self, clock: Any = time.perf_counter) -> None:
        self.services: dict[str, ServiceStats] = {}
        self.refused: dict[str, int] = {}  # by refusal code
        self.journal_commit = Buckets(COMMIT_BOUNDS)
        self.events_in = 0  # event-bus messages read from publishers (XSUB)
        self.events_out = 0  # event-bus messages sent to subscribers (XPUB)
        self._clock = clock

    def service(self, name: str) -> ServiceStats:
        stats = self.services.get(name)
        if stats is None:
            stats = self.services[name] = ServiceStats()
        return stats

    # ----------------------------------------------------------- loop side
    def accepted(self, items: list[Any]) -> None:
        """New tasks taken, as SUBMIT item arrays: counted per run of one
        service (a SUBMIT usually holds one)."""
        at = _SERVICE
        service, count = items[0][at] if items else "", 0
        for item in items:
            if item[at] != service:
                self.service(service).accepted += count
                service, count = item[at], 0
            count += 1
        if count:
            self.service(service).accepted += count

    def answered(
        self, tasks: dict[str, TaskEntry], answers: list[Any], failed: bool, now: float
    ) -> None:
        """A worker's answers (item arrays, ``answer[0]`` the id), before the broker
        finishes them: counts and the three timings of each task still in flight.
        ``now`` is the broker's clock (monotonic seconds), like the stamps.

        Tasks of one SUBMIT share their acceptance time and tasks of one dispatch
        their dispatch time, so a message's answers come in runs of equal stamps:
        each run is observed once, with its length as the weight."""
        get = tasks.get
        service, accepted, dispatched, count = "", 0.0, 0.0, 0
        for answer in answers:
            task = get(answer[0])
            if task is None or task.worker is None:  # late, or queued again meanwhile
                continue
            if (
                task.accepted_at != accepted
                or task.dispatched_at != dispatched
                or task.service != service
            ):
                if count:
                    self._observe(service, accepted, dispatched, now, count, failed)
                service, accepted, dispatched, count = (
                    task.service,
                    task.accepted_at,
                    task.dispatched_at,
                    0,
                )
            count += 1
        if count:
            self._observe(service, accepted, dispatched, now, count, failed)

    def _observe(
        self, service: str, accepted: float, dispatched: float, now: float, n: int, failed: bool
    ) -> None:
        """``n`` answered tasks of ``service`` with these stamps."""
        stats = self.service(service)
        if failed:
            stats.failed += n
        else:
            stats.completed += n
        for buckets, seconds in (
            (stats.queue_wait, dispatched - accepted),
            (stats.service_time, now - dispatched),
            (stats.round_trip, now - accepted),
        ):
            buckets.counts[bisect_left(BOUNDS, seconds)] += n
            buckets.sum += seconds * n

    def requeued(self, service: str) -> None:
        self.service(service).requeued += 1

    def dead_lettered(self, service: str) -> None:
        self.service(service).dead_lettered += 1

    def refusal(self, code: str, count: int) -> None:
        self.refused[code] = self.refused.get(code, 0) + count

    def commit(self, journal: Journal) -> None:
        """``journal.commit()``, timed when it has anything to write."""
        if not journal.dirty:
            return
        start = self._clock()
        journal.commit()
        self.journal_commit.observe(self._clock() - start)


def _histogram(
    name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], Buckets]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, buckets in rows:
        family.add_metric(values, buckets.cumulative(), buckets.sum)
    return family


def _counter(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def journal_bytes(path: str) -> int:
    """The journal's size on disk: the database and its write-ahead log."""
    if path == ":memory:":
        return 0
    total = 0
    for name in (path, f"{path}-wal"):
        with contextlib.suppress(OSError):  # no WAL file right now
            total += os.path.getsize(name)
    return total


class BrokerCollector(Collector):
    """The forwarder's metric families, built at scrape time (docs/observability.md)."""

    def __init__(self, source: HasSnapshot, recorder: Recorder) -> None:
        self.source = source  # the broker: its ``snapshot()``, nothing else
        self.recorder = recorder

    def collect(self) -> Iterator[Any]:
        snap, rec = self.source.snapshot(), self.recorder
        queued, inflight = snap.queues, snap.inflight_by_service
        services = sorted({*snap.services, *rec.services})
        for name, doc, table in (
            ("zmqflow_queue_depth", "Tasks queued for a worker, per service", queued),
            ("zmqflow_tasks_in_flight", "Tasks running on a worker, per service", inflight),
        ):
            family = GaugeMetricFamily(name, doc, labels=["service"])
            for service in services:
                family.add_metric([service], table.get(service, 0))
            yield family

        workers = snap.workers
        alive: dict[tuple[str, str], int] = {}
        by_language: dict[str, int] = {}
        for worker in workers:
            by_language[worker.language] = by_language.get(worker.language, 0) + 1
            for service in worker.services:
                alive[(service, worker.language)] = alive.get((service, worker.language), 0) + 1
        family = GaugeMetricFamily(
            "zmqflow_workers_alive",
            "Workers registered and heard, per service they serve and language",
            labels=["service", "language"],
        )
        for (service, language), count in sorted(alive.items()):
            family.add_metric([service, language], count)
        for service in services:  # a service nobody serves shows 0 (an alert's input)
            if not any(key[0] == service for key in alive):
                family.add_metric([service, ""], 0)
        yield family
        family = GaugeMetricFamily(
            "zmqflow_workers_connected", "Workers registered, per language", labels=["language"]
        )
        for language, count in sorted(by_language.items()):
            family.add_metric([language], count)
        yield family

        stats = {name: rec.services[name] for name in list(rec.services)}
        for kind, doc in (
            ("accepted", "Tasks accepted (taken into the forwarder)"),
            ("completed", "Tasks answered with a result"),
            ("failed", "Tasks whose handler failed"),
            ("requeued", "Tasks queued again after their worker was lost"),
            ("dead_lettered", "Tasks moved to the dead-letter list"),
        ):
            yield _counter(
                f"zmqflow_tasks_{kind}",
                f"{doc}, per service",
                "service",
                {name: getattr(s, kind) for name, s in stats.items()},
            )
        yield _counter(
            "zmqflow_tasks_refused", "Tasks refused, per refusal code", "code", dict(rec.refused)
        )
        counters = snap.counters
        for name, key, doc in (
            ("zmqflow_workers_lost", "workers_lost", "Workers declared dead"),
            ("zmqflow_late_results", "late_results", "Answers for tasks already answered"),
            ("zmqflow_malformed_messages", "malformed", "Messages that did not decode"),
        ):
            family = CounterMetricFamily(name, doc)
            family.add_metric([], counters.get(key, 0))
            yield family
        family = CounterMetricFamily(
            "zmqflow_heartbeat_misses",
            "Heartbeat ticks at which a worker had been silent for over two intervals",
        )
        family.add_metric([], snap.heartbeat_misses)
        yield family
        family = CounterMetricFamily(
            "zmqflow_event_bus_messages", "Event-bus messages, in and out", labels=["direction"]
        )
        family.add_metric(["in"], rec.events_in)
        family.add_metric(["out"], rec.events_out)
        yield family

        for attr, name, doc in (
            ("queue_wait", "zmqflow_task_queue_wait_seconds", "Acceptance to (last) dispatch"),
            ("service_time", "zmqflow_task_service_seconds", "Dispatch to the worker's answer"),
            ("round_trip", "zmqflow_task_round_trip_seconds", "Acceptance to the answer"),
        ):
            yield _histogram(
                name,
                f"{doc}, per service, of answered tasks",
                ["service"],
                ((([n]), getattr(s, attr)) for n, s in stats.items()),
            )
        yield _histogram(
            "zmqflow_journal_commit_seconds",
            "Journal commits (one transaction per loop turn that wrote)",
            [],
            [([], rec.journal_commit)],
        )
        family = GaugeMetricFamily(
            "zmqflow_journal_size_bytes", "The journal's database and write-ahead log on disk"
        )
        family.add_metric([], journal_bytes(snap.forwarder["journal"]))
        yield family
        family = GaugeMetricFamily(
            "zmqflow_forwarder_info", "The forwarder's id and version", labels=["id", "version"]
        )
        family.add_metric([snap.forwarder["id"], snap.forwarder["version"]], 1)
        yield family
