"""The one connection policy of every peer that connects to a forwarder.

Contract: clients (client/core.py) and the Python worker (worker/) keep a
forwarder connection by the same rules, written here once:

- heartbeats every ``interval``; a forwarder silent for ``deadline``
  (``interval * liveness``) is gone, and the peer opens a new socket;
- new sockets are opened with ``BACKOFF`` (tenacity's exponential wait,
  0.1 s doubling to 5 s) until the forwarder answers;
- a refused handshake (our key not allowed, a plain peer at a CURVE
  forwarder) is answered like silence, a new socket after the backoff, so
  a key allowed later gets in without a restart; where the caller must
  hear a quick no it is ``ForwarderRefused``;
- ``ForwarderUnreachable`` (a ``TimeoutError``) when the forwarder does not
  answer in the time given; ``ForwarderRefused`` is one of it.

The Rust worker (services/worker-rust) follows the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from tenacity import wait_exponential

BACKOFF = wait_exponential(multiplier=0.1, min=0.1, max=5)


class ForwarderUnreachable(TimeoutError):
    """The forwarder did not answer within the time given."""


class ForwarderRefused(ForwarderUnreachable):
    """The forwarder refused our handshake (key not allowed, plain peer, wrong server key)."""


@dataclass(slots=True)
class Liveness:
    """When to heartbeat, and when the forwarder counts as gone (monotonic seconds)."""

    interval: float = 1.0
    liveness: int = 3
    last_heard: float = 0.0
    last_sent: float = 0.0

    @property
    def deadline(self) -> float:
        return self.interval * self.liveness

    def beat_due(self, now: float) -> bool:
        return now - self.last_sent >= self.interval

    def silent(self, now: float) -> bool:
        return now - self.last_heard > self.deadline
