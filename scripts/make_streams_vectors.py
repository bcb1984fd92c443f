"""Write docs/protocol-vectors/streams/*.json from the reference messages below.

Each vector, as docs/protocol-vectors/ has them: name, command, type,
frames (hex strings, signature first) and message (the decoded fields; raw
byte fields as ``<name>_hex``). The refusals and the STORED/SUBSCRIBED/GAP
replies are taken from the product itself (a streams core on an in-memory
store, on a fixed clock), so the vectors show the real texts and numbers.
Run once when the streams messages change; tests/test_streams_wire.py
checks the files are what ``vectors()`` makes and that each decodes and
encodes again to the same bytes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from zmqflow.streams import wire
from zmqflow.streams.core import StreamsCore
from zmqflow.streams.store import Limits, StreamConfig, StreamStore

OUT = Path(__file__).resolve().parent.parent / "docs" / "protocol-vectors" / "streams"
T0 = 1_796_688_000.0  # 2026-12-07 00:00 UTC: the store's clock for the vectors


def _device_replies(*requests: wire.Message | list[bytes]) -> list[wire.Message]:
    """What a fresh device (stream ``events`` of ``dev.*``, at most 2 events
    kept) answers peer ``c``, in order, on a fixed clock."""
    logging.getLogger("zmqflow").setLevel(logging.ERROR)  # the refusals are meant
    store = StreamStore(
        ":memory:", [StreamConfig("events", "dev.", Limits(max_events=2))], clock=lambda: T0
    )
    core = StreamsCore(store, "streams-host-1-ab12")
    out: list[wire.Message] = []
    for request in requests:
        frames = request if isinstance(request, list) else wire.encode(request)
        core.on_message(b"c", frames, 0.0)
        store.commit()
        core.deliver(0.0)
        out += [wire.decode(f) for peer, f in core.take() if peer == b"c"]
    return out


PUBLISH = wire.Publish(
    [
        wire.PublishItem("evt-1", "dev.data.ready", {"file": "a.csv", "rows": 3}),
        wire.PublishItem("evt-2", "dev.data.ready", {"file": "b.csv", "rows": 0}),
    ]
)
SUBSCRIBE = wire.Subscribe("events", "airflow-watcher", "all", None, None, "dev.data.", 10, 30_000)


def vectors() -> dict[str, wire.Message]:
    """Every vector, by name."""
    (stored,) = _device_replies(PUBLISH)
    subscribed, events = _device_replies(PUBLISH, SUBSCRIBE)[1:]
    (duplicate, *_) = _device_replies(PUBLISH, PUBLISH)[1:]
    # three events into a stream that keeps two: a subscriber from seq 1 missed one
    late = _device_replies(
        PUBLISH,
        wire.Publish([wire.PublishItem("evt-3", "dev.data.ready", {})]),
        wire.Subscribe("events", "late", "seq", 1, None, "", 10, 30_000),
    )
    gap = next(m for m in late if isinstance(m, wire.Gap))
    (unknown_stream,) = _device_replies(wire.Publish([wire.PublishItem("evt-9", "prod.x", {})]))
    (not_ours,) = _device_replies([b"GET / HTTP/1.1", b"\x01"])
    (unknown_name,) = _device_replies(wire.Subscribe("orders", "billing"))
    (listing,) = _device_replies(PUBLISH, SUBSCRIBE, wire.Ack([1]), wire.ListRequest())[3:]
    return {
        "streams-publish": PUBLISH,
        "streams-stored": stored,
        "streams-stored-duplicate": duplicate,
        "streams-subscribe-durable": SUBSCRIBE,
        "streams-subscribe-ephemeral-new": wire.Subscribe("events"),
        "streams-subscribe-from-seq": wire.Subscribe("events", "replay", "seq", 42),
        "streams-subscribe-from-time": wire.Subscribe("events", "audit", "time", time=T0),
        "streams-subscribed": subscribed,
        "streams-event": events,
        "streams-gap": gap,
        "streams-ack": wire.Ack([1, 2]),
        "streams-list-request": wire.ListRequest(),
        "streams-list-reply": listing,
        "streams-heartbeat": wire.Heartbeat(),
        "streams-heartbeat-reply": wire.Heartbeat("streams-host-1-ab12"),
        "streams-refused-unknown-stream": unknown_stream,
        "streams-refused-unknown-subscription-stream": unknown_name,
        "streams-refused-malformed": not_ours,
    }


def to_json(msg: wire.Message) -> dict[str, Any]:
    def fix(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                (f"{k}_hex" if isinstance(v, bytes) else k): (
                    v.hex() if isinstance(v, bytes) else fix(v)
                )
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return fix(asdict(msg))


def vector(name: str, msg: wire.Message) -> dict[str, Any]:
    frames = wire.encode(msg)
    return {
        "name": name,
        "command": wire.Command(frames[1][0]).name,
        "type": type(msg).__name__,
        "frames": [f.hex() for f in frames],
        "message": to_json(msg),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    made = vectors()
    for name, msg in sorted(made.items()):
        (OUT / f"{name}.json").write_text(json.dumps(vector(name, msg), indent=2) + "\n")
    print(f"wrote {len(made)} vectors to {OUT}")


if __name__ == "__main__":
    main()
