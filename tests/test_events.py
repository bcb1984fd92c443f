"""Events (src/zmqflow/events.py): env-scoped topics, per-source sequence numbers."""

from __future__ import annotations

import time

import msgpack
import pytest

from zmqflow import events
from zmqflow.events import Event, EventEncoder, GapTracker


def test_an_event_is_a_topic_frame_and_a_msgpack_body():
    enc = EventEncoder("dev", "forwarder-1")

    topic, body = enc.encode("task.completed", {"id": "t-1"})

    assert topic == b"dev.task.completed"
    decoded = msgpack.unpackb(body)
    assert list(decoded) == ["source", "seq", "ts", "data"]
    assert (decoded["source"], decoded["seq"], decoded["data"]) == ("forwarder-1", 1, {"id": "t-1"})
    assert abs(decoded["ts"] - time.time()) < 5


def test_seq_starts_at_one_and_grows_by_one_per_event_of_a_source():
    enc = EventEncoder("prod", "src-a")

    seqs = [events.decode(enc.encode(kind, {})).seq for kind in ("a", "b", "a", "c")]

    assert seqs == [1, 2, 3, 4]


def test_each_source_numbers_its_own_events():
    a, b = EventEncoder("dev", "a"), EventEncoder("dev", "b")

    a.encode("x", {})
    a.encode("x", {})
    first_of_b = events.decode(b.encode("x", {}))

    assert (first_of_b.source, first_of_b.seq) == ("b", 1)
    assert a.seq == 2


def test_decode_returns_the_event():
    frames = EventEncoder("dev", "w-1").encode("worker.ready", {"services": ["echo"]})

    event = events.decode(frames)

    assert (event.topic, event.source, event.seq, event.data) == (
        "dev.worker.ready",
        "w-1",
        1,
        {"services": ["echo"]},
    )


@pytest.mark.parametrize(
    "frames",
    [[b"dev.x"], [b"dev.x", b"a", b"b"], [b"dev.x", msgpack.packb({"source": "s"})]],
    ids=["one-frame", "three-frames", "no-seq"],
)
def test_decode_rejects_what_is_not_an_event(frames):
    with pytest.raises(ValueError):
        events.decode(frames)


def test_new_source_names_are_unique_and_say_their_kind():
    a, b = events.new_source("worker"), events.new_source("worker")
    assert a.startswith("worker-")
    assert a != b


def _event(source: str, seq: int) -> Event:
    return Event("dev.x", source, seq, 0.0, {})


def test_the_gap_tracker_counts_events_missed_per_source():
    tracker = GapTracker()

    gaps = [
        tracker.see(_event("a", 1)),
        tracker.see(_event("a", 2)),
        tracker.see(_event("b", 7)),  # first sight of b: nothing known to be missed
        tracker.see(_event("a", 5)),  # 3 and 4 missed
        tracker.see(_event("b", 8)),
        tracker.see(_event("b", 10)),  # 9 missed
    ]

    assert gaps == [0, 0, 0, 2, 0, 1]
    assert tracker.missed == 3


def test_a_restarted_source_is_not_counted_as_a_gap():
    tracker = GapTracker()
    tracker.see(_event("a", 40))

    assert tracker.see(_event("a", 1)) == 0
    assert tracker.see(_event("a", 3)) == 1
    assert tracker.missed == 1


def test_the_gap_tracker_sees_gaps_in_encoded_events():
    enc = EventEncoder("dev", "forwarder")
    tracker = GapTracker()
    frames = [enc.encode("task.completed", {"n": i}) for i in range(10)]

    for i in (0, 1, 2, 6, 9):
        tracker.see(events.decode(frames[i]))

    assert tracker.missed == 5
