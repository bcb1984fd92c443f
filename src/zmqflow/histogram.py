"""A histogram as plain numbers, for hot paths that cannot take a lock per observation.

Contract: ``Buckets(bounds)`` keeps ``counts[i]``, the observations at or
below ``bounds[i]`` and above the bound before it (the last count: above
every bound), and ``sum``. ``observe`` is one ``bisect`` and two additions;
a single thread owns each instance (threads keep one each and a reader adds
them up, see worker_metrics.py). ``cumulative()`` gives Prometheus's
``le`` buckets for a ``HistogramMetricFamily`` at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client.utils import floatToGoString


class Buckets:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def add(self, other: Buckets) -> None:
        """Add another instance's observations (same bounds) to this one."""
        for i, count in enumerate(list(other.counts)):
            self.counts[i] += count
        self.sum += other.sum

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (le, observations <= le), the last one +Inf."""
        out, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), list(self.counts), strict=True):
            total += count
            out.append((floatToGoString(bound), total))
        return out
