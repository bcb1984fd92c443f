"""Prometheus metrics for the forwarder, read from the broker at scrape time.

Contract: ``serve(broker, port)`` starts prometheus-client's HTTP server in a
thread; the collector only reads plain counters and lengths, so the hot path
pays nothing for metrics.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from zmqflow.forwarder.broker import Broker


class BrokerCollector(Collector):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        tasks = CounterMetricFamily("zmqflow_tasks", "Tasks by outcome", labels=["outcome"])
        for name, value in list(self.broker.counters.items()):
            tasks.add_metric([name], value)
        yield tasks
        workers = GaugeMetricFamily("zmqflow_workers", "Registered workers", labels=["language"])
        by_language: dict[str, int] = {}
        for worker in list(self.broker.workers.values()):
            by_language[worker.language] = by_language.get(worker.language, 0) + 1
        for language, count in by_language.items():
            workers.add_metric([language], count)
        yield workers
        held = GaugeMetricFamily("zmqflow_tasks_held", "Unfinished tasks held by the forwarder")
        held.add_metric([], len(self.broker.tasks))
        yield held


def serve(broker: Broker, port: int) -> None:
    REGISTRY.register(BrokerCollector(broker))
    start_http_server(port)
