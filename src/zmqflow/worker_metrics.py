"""Prometheus metrics of the Python worker, on its own ``--metrics-port``.

Contract: ``WorkerMetrics(worker_id, version)`` counts, per service, the
tasks whose handler returned (``zmqflow_worker_tasks_handled_total``), the
ones whose handler raised or returned something that is not bytes
(``zmqflow_worker_task_failures_total``) and every handler run's duration
(``zmqflow_worker_handler_duration_seconds``, the buckets below), and
exports ``zmqflow_worker_info{worker_id,language,version} 1``: the names,
labels and buckets the Rust worker exports too (notes: shared contract).
``serve(port)`` answers scrapes from a thread; ``close()`` stops it.

Each handler thread counts into its own ``ThreadStats`` (``for_thread()``),
so threads never share a counter and need no lock; a scrape adds them up.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from zmqflow.histogram import Buckets

#: handler duration buckets in seconds, as the Rust worker has them
HANDLER_BOUNDS = (
    *(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0),
)


# a service's row in ThreadStats: handled, failed, duration sum, then one count per bucket
_HANDLED, _FAILED, _SUM, _BUCKET0 = 0, 1, 2, 3


class ThreadStats:
    """One handler thread's counts: a row per service (see ``_HANDLED`` ...), a list
    rather than objects, since the handler thread updates it for every task."""

    def __init__(
        self, run: Callable[..., Any], clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.services: dict[str, list[Any]] = {}
        self._run = run
        self._clock = clock

    def timed(self, job: tuple[Any, Any]) -> Any:
        """``run(*job)`` (a handler and its task; the worker's answer: id, output,
        error), counted under the task's service: handled if output is not None."""
        clock = self._clock
        start = clock()
        answer = self._run(*job)
        elapsed = clock() - start
        service = job[1].service
        row = self.services.get(service)
        if row is None:
            row = self.services[service] = [0, 0, 0.0, *[0] * (len(HANDLER_BOUNDS) + 1)]
        row[answer[1] is None] += 1  # _HANDLED (0) or _FAILED (1)
        row[_SUM] += elapsed
        row[_BUCKET0 + bisect_left(HANDLER_BOUNDS, elapsed)] += 1
        return answer


class WorkerMetrics(Collector):
    def __init__(self, worker_id: str, version: str, language: str = "python") -> None:
        self.info = (worker_id, language, version)
        self.threads: list[ThreadStats] = []
        self.registry = CollectorRegistry()
        self.registry.register(self)
        ProcessCollector(registry=self.registry)
        self._server: Any = None

    def for_thread(self, run: Callable[..., Any]) -> ThreadStats:
        """The counts of one handler thread that runs its jobs with ``run``."""
        stats = ThreadStats(run)
        self.threads.append(stats)
        return stats

    def collect(self) -> Iterator[Any]:
        handled = CounterMetricFamily(
            "zmqflow_worker_tasks_handled",
            "Tasks whose handler returned, per service",
            labels=["service"],
        )
        failed = CounterMetricFamily(
            "zmqflow_worker_task_failures",
            "Tasks whose handler raised (or returned no bytes), per service",
            labels=["service"],
        )
        duration = HistogramMetricFamily(
            "zmqflow_worker_handler_duration_seconds",
            "Handler run time, per service",
            labels=["service"],
        )
        for service, (ok, bad, buckets) in sorted(self._totals().items()):
            handled.add_metric([service], ok)
            failed.add_metric([service], bad)
            duration.add_metric([service], buckets.cumulative(), buckets.sum)
        yield handled
        yield failed
        yield duration
        info = GaugeMetricFamily(
            "zmqflow_worker_info",
            "This worker: id, language, version",
            labels=["worker_id", "language", "version"],
        )
        info.add_metric(list(self.info), 1)
        yield info

    def _totals(self) -> dict[str, tuple[int, int, Buckets]]:
        """Every thread's counts added up, per service."""
        totals: dict[str, tuple[int, int, Buckets]] = {}
        for thread in list(self.threads):
            for service, row in list(thread.services.items()):
                row = list(row)  # one copy: the thread goes on counting
                ok, bad, buckets = totals.get(service) or (0, 0, Buckets(HANDLER_BOUNDS))
                for i, count in enumerate(row[_BUCKET0:]):
                    buckets.counts[i] += count
                buckets.sum += row[_SUM]
                totals[service] = (ok + row[_HANDLED], bad + row[_FAILED], buckets)
        return totals

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        server, _thread = start_http_server(port, addr, registry=self.registry)
        self._server = server

    def close(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()
            server.server_close()
