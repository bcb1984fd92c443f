"""Prometheus metrics of the streams: read from the device's core at scrape time.

Contract: ``StreamsCollector(core)`` yields, per stream, the events and bytes
retained, the oldest event's time, the last sequence number and what
retention dropped (events, bytes); per subscriber (durable ones, attached or
not, and ephemeral ones while attached), its position, lag (stored events
after its position), events in flight, redeliveries and missed events; and
the device's publish counters. It reads the core's in-memory tables
(copied first, atomic under the GIL) and the store's subscriber rows, and
nothing on the device's loop pays for it. ``serve(device, port)`` registers
it and starts prometheus-client's HTTP server (the standalone device);
inside the forwarder, ``REGISTRY.register(StreamsCollector(device.core))``
beside the forwarder's own collectors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import start_http_server
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from zmqflow.streams.core import StreamsCore
    from zmqflow.streams.device import StreamDevice


class StreamsCollector(Collector):
    def __init__(self, core: StreamsCore) -> None:
        self.core = core

    def collect(self) -> Iterator[Metric]:
        core = self.core
        streams = list(core.store.streams.values())
        by_stream = ["stream"]
        gauges = {
            "events": GaugeMetricFamily(
                "zmqflow_stream_events", "Events retained in the stream", labels=by_stream
            ),
            "bytes": GaugeMetricFamily(
                "zmqflow_stream_bytes", "Bytes retained (ids, topics, data)", labels=by_stream
            ),
            "oldest": GaugeMetricFamily(
                "zmqflow_stream_oldest_event_timestamp_seconds",
                "Unix time the oldest retained event was stored (absent when empty)",
                labels=by_stream,
            ),
            "last": GaugeMetricFamily(
                "zmqflow_stream_last_seq", "Sequence number of the newest event", labels=by_stream
            ),
        }
        dropped = CounterMetricFamily(
            "zmqflow_stream_dropped_events", "Events dropped by retention", labels=by_stream
        )
        dropped_bytes = CounterMetricFamily(
            "zmqflow_stream_dropped_bytes", "Bytes dropped by retention", labels=by_stream
        )
        for s in streams:
            gauges["events"].add_metric([s.name], s.events)
            gauges["bytes"].add_metric([s.name], s.bytes)
            if s.oldest_ts is not None:
                gauges["oldest"].add_metric([s.name], s.oldest_ts)
            gauges["last"].add_metric([s.name], s.committed)
            dropped.add_metric([s.name], s.dropped_events)
            dropped_bytes.add_metric([s.name], s.dropped_bytes)
        yield from gauges.values()
        yield dropped
        yield dropped_bytes

        by_sub = ["stream", "subscriber", "durable"]
        position = GaugeMetricFamily(
            "zmqflow_stream_subscriber_position",
            "Sequence number up to which the subscriber acknowledged every event",
            labels=by_sub,
        )
        lag = GaugeMetricFamily(
            "zmqflow_stream_subscriber_lag",
            "Stored events after the subscriber's position",
            labels=by_sub,
        )
        in_flight = GaugeMetricFamily(
            "zmqflow_stream_subscriber_in_flight",
            "Events delivered and not yet acknowledged",
            labels=by_sub,
        )
        connected = GaugeMetricFamily(
            "zmqflow_stream_subscriber_connected", "1 while a connection holds it", labels=by_sub
        )
        redeliveries = CounterMetricFamily(
            "zmqflow_stream_subscriber_redeliveries",
            "Events delivered again (ack wait passed, or the subscriber came back)",
            labels=by_sub,
        )
        missed = CounterMetricFamily(
            "zmqflow_stream_subscriber_missed",
            "Events that fell out of retention before the subscriber got them",
            labels=by_sub,
        )
        for row in core.subscribers():
            labels = [row["stream"], row["name"] or "(ephemeral)", str(row["name"] is not None)]
            position.add_metric(labels, row["position"])
            lag.add_metric(labels, row["lag"])
            in_flight.add_metric(labels, row["in_flight"])
            connected.add_metric(labels, 1 if row["connected"] else 0)
            redeliveries.add_metric(labels, row["redeliveries"])
            missed.add_metric(labels, row["missed"])
        yield from (position, lag, in_flight, connected, redeliveries, missed)

        published = CounterMetricFamily(
            "zmqflow_stream_published_events", "Events stored (duplicates not counted)"
        )
        published.add_metric([], core.published)
        yield published
        duplicates = CounterMetricFamily(
            "zmqflow_stream_duplicate_publishes",
            "Events published again within the dedup window (stored once)",
        )
        duplicates.add_metric([], core.duplicates)
        yield duplicates
        refused = CounterMetricFamily(
            "zmqflow_stream_refused_messages", "Messages or events refused", labels=["code"]
        )
        for code, n in sorted(core.refused.items()):
            refused.add_metric([code], n)
        yield refused


def serve(device: StreamDevice, port: int, addr: str = "0.0.0.0") -> None:
    """Answer Prometheus scrapes on ``port`` (a thread of this process)."""
    REGISTRY.register(StreamsCollector(device.core))
    start_http_server(port, addr)
