"""The streams core, socket-free, on a fake clock (zmqflow.streams.core).

Messages go in as frames through the wire codec, replies come out of the
core's outbox; the device's order (handle, commit, deliver, send) is the
harness's ``turn``. ``clock`` is both the store's wall clock and the core's
monotonic ``now``, moved by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zmqflow.streams import wire
from zmqflow.streams.core import CoreLimits, StreamsCore
from zmqflow.streams.store import Limits, StreamConfig, StreamStore

T0 = 1_700_000_000.0


class Harness:
    def __init__(
        self, path: Path, limits: Limits | None = None, core: CoreLimits | None = None
    ) -> None:
        self.path = path
        self.clock = T0
        self.limits = limits or Limits()
        self.core_limits = core or CoreLimits()
        self.open()

    def open(self) -> None:
        self.store = StreamStore(
            str(self.path),
            [StreamConfig("events", "dev.", self.limits), StreamConfig("audit", "dev.audit.")],
            dedup_window_s=120.0,
            sync="normal",  # no fsync: a process kill is what these tests model
            clock=lambda: self.clock,
        )
        self.core = StreamsCore(self.store, "dev-1", self.core_limits)

    def restart(self) -> None:
        """The device dies (nothing more is committed) and starts again on the file."""
        self.store._db.close()
        self.open()

    def send(self, peer: bytes, msg: wire.Message | list[bytes]) -> list[tuple[bytes, Any]]:
        frames = msg if isinstance(msg, list) else wire.encode(msg)
        self.core.on_message(peer, frames, self.clock)
        return self.turn()

    def turn(self) -> list[tuple[bytes, Any]]:
        self.store.commit()
        self.core.deliver(self.clock)
        return [(peer, wire.decode(frames)) for peer, frames in self.core.take()]

    def tick(self, seconds: float) -> list[tuple[bytes, Any]]:
        self.clock += seconds
        self.core.tick(self.clock)
        return self.turn()

    def publish(self, *topics_ids: tuple[str, str], peer: bytes = b"pub") -> Any:
        items = [wire.PublishItem(i, t, {"n": i}) for t, i in topics_ids]
        return self.send(peer, wire.Publish(items))

    def publish_n(self, n: int, start: int = 0) -> list[tuple[bytes, Any]]:
        """``n`` events, one PUBLISH each; every reply of their turns."""
        replies = []
        for k in range(start, start + n):
            replies += self.publish(("dev.data.ready", f"e-{k:03d}"))
        return replies


def events_of(replies: list[tuple[bytes, Any]], peer: bytes) -> list[wire.Delivery]:
    return [d for p, m in replies if p == peer and isinstance(m, wire.Events) for d in m.items]


def only(replies: list[tuple[bytes, Any]], kind: type) -> list[Any]:
    return [m for _, m in replies if isinstance(m, kind)]


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "streams.db")


def sub(name: str | None, start: str = "new", **kw: Any) -> wire.Subscribe:
    return wire.Subscribe("events", name, start, **kw)


# --------------------------------------------------------------- publish


def test_a_published_event_is_stored_under_the_next_sequence_number_of_its_stream(h):
    (stored,) = only(h.publish(("dev.data.ready", "a"), ("dev.data.ready", "b")), wire.Stored)
    assert [(i.id, i.stream, i.seq, i.duplicate) for i in stored.items] == [
        ("a", "events", 1, False),
        ("b", "events", 2, False),
    ]
    (stored,) = only(h.publish(("dev.audit.login", "c")), wire.Stored)
    assert (stored.items[0].stream, stored.items[0].seq) == ("audit", 1)  # longest prefix


def test_the_same_id_published_again_within_the_dedup_window_is_stored_once(h):
    h.publish(("dev.x", "a"))
    (again,) = only(h.publish(("dev.x", "a")), wire.Stored)
    assert (again.items[0].seq, again.items[0].duplicate) == (1, True)
    assert h.store.streams["events"].events == 1
    h.clock += 121  # past the window: a new event
    (later,) = only(h.publish(("dev.x", "a")), wire.Stored)
    assert (later.items[0].seq, later.items[0].duplicate) == (2, False)


def test_the_dedup_window_survives_a_restart(h):
    h.publish(("dev.x", "a"))
    h.restart()
    (again,) = only(h.publish(("dev.x", "a")), wire.Stored)
    assert again.items[0].duplicate


def test_an_event_is_not_stored_before_the_commit_and_a_dead_device_loses_only_unconfirmed_ones(h):
    h.core.on_message(b"p", wire.encode(wire.Publish([wire.PublishItem("a", "dev.x")])), h.clock)
    assert h.store.read(h.store.streams["events"], 0, 10) == []  # not committed: not readable
    h.restart()  # died before the commit: STORED never left, the publisher sends again
    assert h.store.streams["events"].last == 0
    (stored,) = only(h.publish(("dev.x", "a")), wire.Stored)
    assert stored.items[0].seq == 1


def test_bad_publishes_are_refused_with_a_code_and_the_good_events_beside_them_are_stored(tmp_path):
    h = Harness(tmp_path / "s.db", core=CoreLimits(max_event_bytes=200))
    replies = h.send(
        b"p",
        wire.Publish(
            [
                wire.PublishItem("ok", "dev.x", {}),
                wire.PublishItem("big", "dev.x", {"b": b"x" * 300}),
                wire.PublishItem("lost", "prod.x", {}),
            ]
        ),
    )
    (stored,) = only(replies, wire.Stored)
    assert [i.id for i in stored.items] == ["ok"]
    refused = {m.code: m for m in only(replies, wire.Refused)}
    assert refused["too_large"].ids == ["big"]
    assert refused["unknown_stream"].ids == ["lost"]
    assert "no stream holds topic 'prod.x'" in refused["unknown_stream"].reason


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([b"GET / HTTP/1.1"], "malformed"),
        ([b"ZFS9", b"\x01", b"\x90"], "bad_version"),
        ([wire.SIGNATURE, b"\x77"], "unknown_command"),
        ([wire.SIGNATURE, b"\x01", b"\xc1"], "malformed"),
        ([wire.SIGNATURE, b"\x01", wire.pack([["bad id!", "dev.x", {}]])], "malformed"),
        ([wire.SIGNATURE, b"\x02", wire.pack([["a", "s", 1, False]])], "unknown_command"),
        ([wire.SIGNATURE, b"\x03", wire.pack({"stream": "events", "window": 0})], "malformed"),
        ([wire.SIGNATURE, b"\x07", wire.pack([1])], "not_subscribed"),
    ],
)
def test_malformed_input_gets_a_refusal_naming_what_is_wrong_and_the_core_goes_on(h, frames, code):
    (refused,) = only(h.send(b"p", frames), wire.Refused)
    assert refused.code == code
    assert refused.reason
    assert only(h.publish(("dev.x", "a")), wire.Stored)  # still serving


def test_a_subscription_to_an_unknown_stream_is_refused(h):
    (refused,) = only(h.send(b"s", wire.Subscribe("nope", "n")), wire.Refused)
    assert refused.code == "unknown_stream"
    assert "events" in refused.reason


def test_a_publish_of_more_events_than_max_batch_is_refused_whole(tmp_path):
    h = Harness(tmp_path / "s.db", core=CoreLimits(max_batch=2))
    replies = h.publish(("dev.x", "a"), ("dev.x", "b"), ("dev.x", "c"))
    (refused,) = only(replies, wire.Refused)
    assert (refused.code, refused.ids) == ("too_large", ["a", "b", "c"])
    assert h.store.streams["events"].last == 0


# ------------------------------------------------------------ subscribe


def test_a_durable_subscriber_gets_events_in_order_and_resumes_after_its_last_ack(h):
    (subscribed,) = only(h.send(b"s1", sub("airflow", "all")), wire.Subscribed)
    assert (subscribed.resumed, subscribed.position) == (False, 0)
    got = events_of(h.publish_n(3), b"s1")
    assert [d.seq for d in got] == [1, 2, 3]
    h.send(b"s1", wire.Ack([1, 2]))
    h.core.unreachable(b"s1", -1.0)  # the subscriber went away before acking 3
    h.publish_n(100, start=3)
    replies = h.send(b"s2", sub("airflow", "all"))
    (subscribed,) = only(replies, wire.Subscribed)
    assert (subscribed.resumed, subscribed.position) == (True, 2)
    received = events_of(replies, b"s2")
    while True:
        more = events_of(h.send(b"s2", wire.Ack([d.seq for d in received[-100:]])), b"s2")
        if not more:
            break
        received += more
    seqs = [d.seq for d in received]
    assert seqs == list(range(3, 104))  # 3 again (not acked), then the 100: none twice
    assert received[0].attempt == 2  # the redelivery says so


def test_events_sent_to_a_peer_that_was_gone_do_not_count_as_attempts(h):
    h.send(b"s1", sub("n", "all"))
    h.core.on_message(b"p", wire.encode(wire.Publish([wire.PublishItem("a", "dev.x")])), h.clock)
    h.store.commit()
    h.core.deliver(h.clock)
    h.core.take()
    h.core.unreachable(b"s1", h.clock)  # that EVENT could not be sent: s1 was gone
    (again,) = events_of(h.send(b"s2", sub("n", "all")), b"s2")
    assert (again.id, again.attempt) == ("a", 1)
    assert h.core.subscriptions[("events", "n")].redeliveries == 0


def test_start_positions_new_all_seq_and_time(h):
    h.publish_n(5)  # seqs 1..5 at T0
    h.clock += 10
    h.publish_n(2, start=5)  # seqs 6, 7 at T0 + 10
    for name, start, kw, first in [
        ("n", "new", {}, None),
        ("a", "all", {}, 1),
        ("s", "seq", {"seq": 4}, 4),
        ("t", "time", {"time": T0 + 5}, 6),
    ]:
        peer = name.encode()
        got = events_of(h.send(peer, sub(name, start, **kw)), peer)
        assert (got[0].seq if got else None) == first, name
    assert [d.seq for d in events_of(h.publish_n(1, start=7), b"n")] == [8]


def test_a_new_subscriber_from_new_gets_only_events_stored_after_it(h):
    h.publish_n(3)
    h.send(b"s", sub("n", "new"))
    replies = h.publish(("dev.x", "after"))
    assert [d.id for d in events_of(replies, b"s")] == ["after"]


def test_an_unacknowledged_event_is_delivered_again_after_the_ack_wait(h):
    h.send(b"s", sub("n", "all", ack_wait_ms=5000))
    first = events_of(h.publish(("dev.x", "a")), b"s")
    assert [d.attempt for d in first] == [1]
    assert events_of(h.tick(4.9), b"s") == []
    again = events_of(h.tick(0.2), b"s")
    assert [(d.id, d.attempt) for d in again] == [("a", 2)]
    h.send(b"s", wire.Ack([1]))
    assert events_of(h.tick(60), b"s") == []
    assert h.core.subscriptions[("events", "n")].redeliveries == 1


def test_events_in_flight_never_exceed_the_window(h):
    h.publish_n(50)
    got = events_of(h.send(b"s", sub("n", "all", window=10)), b"s")
    assert [d.seq for d in got] == list(range(1, 11))
    assert events_of(h.turn(), b"s") == []  # nothing more until acks
    more = events_of(h.send(b"s", wire.Ack([1, 2, 3])), b"s")
    assert [d.seq for d in more] == [11, 12, 13]


def test_out_of_order_acks_survive_a_device_restart_and_acked_events_are_not_sent_again(h):
    h.publish_n(5)
    h.send(b"s", sub("n", "all"))
    h.send(b"s", wire.Ack([1, 3, 5]))
    h.restart()
    replies = h.send(b"s", sub("n", "all"))
    (subscribed,) = only(replies, wire.Subscribed)
    assert (subscribed.resumed, subscribed.position) == (True, 1)
    assert [d.seq for d in events_of(replies, b"s")] == [2, 4]


def test_a_topic_filter_delivers_its_topics_and_passes_over_the_others(h):
    h.publish(("dev.a.1", "a1"), ("dev.b.1", "b1"), ("dev.a.2", "a2"))
    got = events_of(h.send(b"s", sub("n", "all", topic="dev.a.")), b"s")
    assert [d.id for d in got] == ["a1", "a2"]
    h.send(b"s", wire.Ack([d.seq for d in got]))
    assert h.core.subscriptions[("events", "n")].position == 3


def test_a_second_connection_takes_a_durable_name_over_and_gets_the_events_in_flight(h):
    h.publish_n(2)
    h.send(b"old", sub("n", "all"))
    replies = h.send(b"new", sub("n", "all"))
    assert [d.seq for d in events_of(replies, b"new")] == [1, 2]
    (refused,) = [m for p, m in replies if p == b"old"]
    assert refused.code == "taken_over"
    (refused,) = only(h.send(b"old", wire.Ack([1])), wire.Refused)
    assert refused.code == "not_subscribed"


def test_an_ephemeral_subscriber_leaves_no_record(h):
    h.send(b"s", sub(None, "all"))
    h.publish_n(1)
    h.core.unreachable(b"s", -1.0)
    assert h.store.subscribers() == []
    assert h.core.subscriptions == {}


# ------------------------------------------------------------ retention


@pytest.mark.parametrize(
    "limits",
    [Limits(max_events=10), Limits(max_bytes=10 * 28)],
    ids=["count", "bytes"],
)
def test_retention_drops_the_oldest_counts_them_and_a_resuming_subscriber_is_told_what_it_missed(
    tmp_path, limits
):
    h = Harness(tmp_path / "s.db", limits)
    h.send(b"s", sub("n", "all"))
    h.publish_n(3)
    h.send(b"s", wire.Ack([1, 2, 3]))
    h.core.unreachable(b"s", -1.0)
    h.publish_n(25, start=3)  # "dev.data.ready", "e-NNN" and {"n": "e-NNN"}: 28 bytes each
    state = h.store.streams["events"]
    assert (state.events, state.first, state.last, state.dropped_events) == (10, 19, 28, 18)
    assert state.dropped_bytes == 18 * 28
    replies = h.send(b"s", sub("n", "all"))
    (gap,) = only(replies, wire.Gap)
    assert (gap.missed, gap.first, gap.last) == (15, 4, 18)
    (subscribed,) = only(replies, wire.Subscribed)
    assert subscribed.missed == 15
    assert [d.seq for d in events_of(replies, b"s")] == list(range(19, 29))


def test_retention_by_age_drops_events_older_than_max_age(tmp_path):
    h = Harness(tmp_path / "s.db", Limits(max_age_s=60))
    h.publish_n(3)
    h.clock += 30
    h.publish_n(2, start=3)
    h.clock += 31
    assert h.core.expire() == {"events": 3}
    state = h.store.streams["events"]
    assert (state.first, state.events, state.dropped_events) == (4, 2, 3)


def test_events_in_flight_stay_with_their_subscriber_when_retention_drops_them(tmp_path):
    h = Harness(tmp_path / "s.db", Limits(max_events=2))
    h.send(b"s", sub("n", "all", window=2, ack_wait_ms=1000))
    got = events_of(h.publish(("dev.x", "a"), ("dev.x", "b")), b"s")
    assert [d.seq for d in got] == [1, 2]
    h.publish_n(4)  # 1 and 2 dropped from the stream, still in flight
    again = events_of(h.tick(1.0), b"s")
    assert [d.id for d in again] == ["a", "b"]
    replies = h.send(b"s", wire.Ack([1, 2]))
    assert only(replies, wire.Gap)[0].missed == 2  # 3 and 4 went before it got them
    assert [d.seq for d in events_of(replies, b"s")] == [5, 6]


def test_list_shows_streams_and_durable_subscribers_with_their_lag(h):
    h.publish_n(4)
    h.send(b"s", sub("n", "all", window=2))
    h.send(b"s", wire.Ack([1]))
    (listing,) = only(h.send(b"q", wire.ListRequest()), wire.Listing)
    events = next(s for s in listing.info["streams"] if s["name"] == "events")
    assert (events["events"], events["first"], events["last"]) == (4, 1, 4)
    (row,) = listing.info["subscribers"]
    assert (row["name"], row["position"], row["lag"], row["in_flight"], row["connected"]) == (
        "n",
        1,
        3,
        2,
        True,
    )


def test_a_heartbeat_is_answered_with_the_device_id(h):
    (beat,) = only(h.send(b"c", wire.Heartbeat()), wire.Heartbeat)
    assert beat.device == "dev-1"


def test_a_gap_told_to_a_peer_that_was_gone_is_told_again_until_an_event_after_it_is_acked(
    tmp_path,
):
    h = Harness(tmp_path / "s.db", Limits(max_events=2))
    h.send(b"old", sub("n", "all"))
    h.core.on_message(
        b"p",
        wire.encode(wire.Publish([wire.PublishItem(f"e{k}", "dev.x") for k in range(5)])),
        h.clock,
    )
    h.store.commit()  # 1..3 dropped at once: the attached peer is told, but it is gone
    h.core.deliver(h.clock)
    h.core.take()
    h.core.unreachable(b"old", h.clock)
    h.restart()
    replies = h.send(b"new", sub("n", "all"))
    (gap,) = only(replies, wire.Gap)
    assert (gap.missed, gap.first, gap.last) == (3, 1, 3)
    h.send(b"new", wire.Ack([d.seq for d in events_of(replies, b"new")]))
    assert only(h.send(b"newer", sub("n", "all")), wire.Gap) == []  # known told now


# ------------------------------------------------------ the subscriber's core


def test_a_subscriber_hears_silence_only_after_asking_not_while_its_handler_ran():
    from zmqflow.streams.client import SubscriberCore

    core = SubscriberCore(wire.Subscribe("events", "n"), heartbeat_interval=1.0, liveness=3)
    core.outgoing(0.0)  # SUBSCRIBE and a heartbeat
    core.on_message(wire.Heartbeat("dev-1"), 0.1)
    assert not core.silent(100.0)  # a long handler: nobody asked, nobody answered
    core.outgoing(100.0)  # asks now
    assert not core.silent(102.9)
    assert core.silent(103.1)


def test_a_subscriber_drops_a_second_delivery_it_holds_and_resends_acks_after_a_restart():
    from zmqflow.streams.client import SubscriberCore

    core = SubscriberCore(wire.Subscribe("events", "n"), heartbeat_interval=1.0)
    core.outgoing(0.0)
    core.on_message(wire.Heartbeat("dev-1"), 0.0)
    one = wire.Delivery(1, "a", "dev.x", 0.0, {}, 1)
    core.on_message(wire.Events([one]), 0.1)
    core.on_message(wire.Events([wire.Delivery(1, "a", "dev.x", 0.0, {}, 2)]), 0.2)
    event = core.take()
    assert (event.seq, core.take()) == (1, None)  # the redelivery was dropped
    core.done(event)
    sent = core.outgoing(0.3)
    assert [wire.decode(f) for f in sent] == [wire.Ack([1])]
    core.on_message(wire.Heartbeat("dev-2"), 5.0)  # another device instance: it restarted
    again = [wire.decode(f) for f in core.outgoing(5.0)]
    assert isinstance(again[0], wire.Subscribe)
    assert wire.Ack([1]) in again  # the ack it may not have stored goes again
