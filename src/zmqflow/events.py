"""Events: topics scoped by environment, each with a per-source sequence number.

Contract: an event is two frames, the UTF-8 topic ``<env>.<kind>`` and a
msgpack map ``{source, seq, ts, data}`` (docs/protocol.md#events). ``seq``
starts at 1 per source and grows by one per event that source publishes, so
``GapTracker`` shows a subscriber exactly how many events it missed.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import msgpack


@dataclass(slots=True)
class Event:
    topic: str
    source: str
    seq: int
    ts: float
    data: dict[str, Any]


def new_source(kind: str) -> str:
    return f"{kind}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


class EventEncoder:
    """Numbers and encodes the events of one source."""

    def __init__(self, env: str, source: str) -> None:
        self.env = env
        self.source = source
        self.seq = 0

    def topic(self, kind: str) -> str:
        return f"{self.env}.{kind}"

    def encode(self, kind: str, data: dict[str, Any]) -> list[bytes]:
        self.seq += 1
        body = {"source": self.source, "seq": self.seq, "ts": time.time(), "data": data}
        return [self.topic(kind).encode(), msgpack.packb(body, use_bin_type=True)]


def decode(frames: list[bytes]) -> Event:
    if len(frames) != 2:
        raise ValueError(f"an event has 2 frames, got {len(frames)}")
    body = msgpack.unpackb(frames[1], raw=False)
    if not isinstance(body, dict) or not isinstance(body.get("seq"), int):
        raise ValueError("event body is not a map with a seq")
    return Event(
        frames[0].decode(),
        str(body.get("source")),
        body["seq"],
        float(body.get("ts") or 0),
        body.get("data") or {},
    )


class GapTracker:
    """Counts events missed per source from their sequence numbers."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.missed = 0

    def see(self, event: Event) -> int:
        """Events missed just before this one (0 when in order)."""
        previous = self.last.get(event.source)
        self.last[event.source] = event.seq
        if previous is None or event.seq <= previous:
            return 0  # first sight of a source, or a restarted source
        gap = event.seq - previous - 1
        self.missed += gap
        return gap
