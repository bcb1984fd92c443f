"""Events: topics scoped by environment, numbered per source and topic.

Contract: an event is two frames, the UTF-8 topic ``<env>.<kind>`` and a
msgpack map ``{source, seq, ts, data}`` (docs/protocol.md#events). ``seq``
starts at 1 for each (source, topic) pair and grows by one per event that
source publishes on that topic. A subscription is a topic prefix, so it
receives every event of a topic or none: a subscriber of any prefix sees
each (source, topic) sequence whole, and ``GapTracker`` counts exactly the
events it missed, however many events of other topics passed it by.
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
    """Numbers (per topic) and encodes the events of one source."""

    def __init__(self, env: str, source: str) -> None:
        self.env = env
        self.source = source
        self.seq = 0  # the seq of the last event encoded, whatever its topic
        self._seqs: dict[str, int] = {}  # topic -> its last seq

    def topic(self, kind: str) -> str:
        return f"{self.env}.{kind}"

    def encode(self, kind: str, data: dict[str, Any]) -> list[bytes]:
        topic = self.topic(kind)
        self.seq = self._seqs[topic] = self._seqs.get(topic, 0) + 1
        body = {"source": self.source, "seq": self.seq, "ts": time.time(), "data": data}
        return [topic.encode(), msgpack.packb(body, use_bin_type=True)]


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
    """Counts events missed per (source, topic) from their sequence numbers."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str], int] = {}
        self.missed = 0

    def see(self, event: Event) -> int:
        """Events missed just before this one on its topic (0 when in order)."""
        key = (event.source, event.topic)
        previous = self.last.get(key)
        self.last[key] = event.seq
        if previous is None or event.seq <= previous:
            return 0  # first sight of a (source, topic), or a restarted source
        gap = event.seq - previous - 1
        self.missed += gap
        return gap
