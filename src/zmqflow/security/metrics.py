"""Prometheus figures of the forwarder's security, read at scrape time.

Contract: ``SecurityCollector(security, events_refused)`` yields, from counters the ZAP
handler, the handshake monitor and the event bus keep anyway (nothing
counted per message for it):

- ``zmqflow_handshakes_total{domain, outcome}``: CURVE handshakes the ZAP
  handler decided, outcome ``accepted`` or ``refused`` (CURVE only);
- ``zmqflow_handshakes_failed_total``: handshakes that failed before ZAP (a
  plain peer, a wrong server key, a broken greeting);
- ``zmqflow_events_refused_total``: published events dropped because their
  topic is outside ``<env>.``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from zmqflow.security.policy import ForwarderSecurity


class SecurityCollector(Collector):
    def __init__(self, security: ForwarderSecurity, events_refused: Callable[[], int]) -> None:
        self.security = security
        self.events_refused = events_refused  # the device's count, read at scrape time

    def collect(self) -> Iterator[CounterMetricFamily]:
        security = self.security
        auth = security.auth
        family = CounterMetricFamily(
            "zmqflow_handshakes",
            "CURVE handshakes decided by the ZAP handler",
            labels=["domain", "outcome"],
        )
        if auth is not None:
            for domain in auth.roles:
                family.add_metric([domain, "accepted"], auth.accepted[domain])
                family.add_metric([domain, "refused"], auth.refused[domain])
        yield family
        family = CounterMetricFamily(
            "zmqflow_handshakes_failed", "Handshakes failed before ZAP (plain peer, wrong key)"
        )
        family.add_metric([], security.monitor.failed if security.monitor else 0)
        yield family
        family = CounterMetricFamily(
            "zmqflow_events_refused", "Published events dropped: topic outside <env>."
        )
        family.add_metric([], self.events_refused())
        yield family
