"""Events (src/zmqflow/events.py): env-scoped topics, numbered per source and topic."""

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


def test_seq_starts_at_one_and_grows_by_one_per_event_of_a_source_on_a_topic():
    enc = EventEncoder("prod", "src-a")

    seqs = [events.decode(enc.encode(kind, {})).seq for kind in ("a", "b", "a", "c", "a", "b")]

    assert seqs == [1, 1, 2, 1, 3, 2]
    assert enc.seq == 2  # the last event's seq


def _prefix_subscriber(frames: list[list[bytes]], prefix: str, drop: set[int]) -> GapTracker:
    """What a SUB of ``prefix`` sees of ``frames``, losing the indexes in ``drop``."""
    tracker = GapTracker()
    for i, event in enumerate(frames):
        if event[0].startswith(prefix.encode()) and i not in drop:
            tracker.see(events.decode(event))
    return tracker


def test_a_subscriber_of_one_prefix_sees_no_false_gaps_while_other_topics_pass_by():
    enc = EventEncoder("dev", "forwarder")
    kinds = ["task.completed", "worker.ready", "task.failed", "worker.lost", "forwarder.started"]
    frames = [enc.encode(kinds[(i * 7) % len(kinds)], {"n": i}) for i in range(200)]

    for prefix in ("dev.", "dev.task.", "dev.task.completed", "dev.worker.", "dev.forwarder"):
        assert _prefix_subscriber(frames, prefix, drop=set()).missed == 0, prefix


def test_a_real_drop_is_counted_exactly_for_any_prefix():
    enc = EventEncoder("dev", "forwarder")
    kinds = ["task.completed", "worker.ready", "task.failed"]
    frames = [enc.encode(kinds[i % 3], {"n": i}) for i in range(300)]
    # by kind: 9 and 150 task.completed, 4 and 10 worker.ready, 5 and 11 task.failed
    drop = {4, 5, 9, 10, 11, 150}
    expected = {"dev.": 6, "dev.task.": 4, "dev.task.completed": 2, "dev.worker.": 2}

    missed = {prefix: _prefix_subscriber(frames, prefix, drop).missed for prefix in expected}

    assert missed == expected


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


def test_the_gap_tracker_counts_events_missed_per_source_and_topic():
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
    # another topic of source a has its own numbers: its first event is no gap
    assert tracker.see(Event("dev.y", "a", 1, 0.0, {})) == 0


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
