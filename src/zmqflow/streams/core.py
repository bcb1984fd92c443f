"""The streams device's rules, socket-free: messages in, replies out.

Contract: ``on_message(peer, frames, now)`` handles one client message
(PUBLISH, SUBSCRIBE, ACK, LIST, HEARTBEAT; docs/streams.md) and queues its
replies; the device then calls ``store.commit()`` and only after it
``deliver(now)`` and ``take()``: so a STORED never leaves before the commit
that holds its events, a HEARTBEAT reply never before the acks that came
ahead of it on the same connection are durable, and an EVENT never carries
an event that is not stored. ``tick(now)`` delivers again what waited
longer than its subscriber's ack wait and drops ephemeral subscribers whose
peer went silent; ``expire()`` applies the streams' retention.
``unreachable(peer, now)`` detaches a peer the socket could not reach
(gone): its durable subscriber keeps its events in flight until it is back,
and what could not be sent does not count as a delivery attempt.

Bad input is answered REFUSED with a code (``malformed``, ``too_large``,
``unknown_stream``, ``unknown_command``, ``bad_version``,
``not_subscribed``, ``taken_over``) and never raises: the device stays up.
One connection holds one subscription; a durable name is held by one
connection at a time: a new SUBSCRIBE of the name takes it over, sends the
events in flight again at once, and the previous holder is told
``taken_over``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgpack

from zmqflow.repeats import Repeats, since
from zmqflow.streams import wire
from zmqflow.streams.store import (
    StoredEvent,
    StreamState,
    StreamStore,
    SubscriberRecord,
    event_size,
)
from zmqflow.streams.subscription import InFlight, Subscription
from zmqflow.streams.wire import ProtocolError

log = logging.getLogger("zmqflow.streams")

_EVENT_MESSAGE_BYTES = 1 << 20  # an EVENT message holds about this much (one event at least)


@dataclass(frozen=True, slots=True)
class CoreLimits:
    max_event_bytes: int = 1 << 20  # one event (id, topic, data) at most
    max_batch: int = 1000  # events in one PUBLISH at most
    max_publish_bytes: int = 64 << 20  # a PUBLISH body at most
    ephemeral_idle_s: float = 60.0  # an ephemeral subscriber's peer silent that long is dropped


class StreamsCore:
    def __init__(
        self, store: StreamStore, device_id: str, limits: CoreLimits = CoreLimits()
    ) -> None:
        self.store = store
        self.device_id = device_id
        self.limits = limits
        self.subscriptions: dict[tuple[str, str], Subscription] = {}  # loaded or attached
        self.by_peer: dict[bytes, Subscription] = {}
        self.outbox: list[tuple[bytes, list[bytes]]] = []
        self.published = 0  # events stored (not duplicates)
        self.duplicates = 0
        self.refused: dict[str, int] = {}  # by code
        self._warned = Repeats()
        self._now = 0.0
        # every durable subscriber in memory (detached): LIST and metrics read no file
        for record in store.subscribers():
            self.subscriptions[(record.stream, record.name)] = Subscription(record, True)

    # ------------------------------------------------------------ messages
    def on_message(self, peer: bytes, frames: list[bytes], now: float) -> None:
        self._now = now
        try:
            msg = wire.decode_request(frames, self.limits.max_publish_bytes)
        except ProtocolError as exc:
            self._refuse(peer, exc.ids, exc.code, exc.reason, frames)
            return
        sub = self.by_peer.get(peer)
        if sub is not None:
            sub.last_heard = now
        match msg:
            case wire.Publish():
                self._publish(peer, msg)
            case wire.Subscribe():
                self._subscribe(peer, msg, now)
            case wire.Ack(seqs):
                if sub is None:
                    self._refuse(
                        peer,
                        [],
                        "not_subscribed",
                        "ACK from a connection without a subscription (the device restarted, "
                        "or another connection took the name over): SUBSCRIBE again",
                    )
                    return
                sub.ack(seqs)
                self._save(sub)
            case wire.ListRequest():
                self._send(peer, wire.Listing(self.listing()))
            case wire.Heartbeat():
                self._send(peer, wire.Heartbeat(self.device_id))

    def _send(self, peer: bytes, msg: wire.Message) -> None:
        self.outbox.append((peer, wire.encode(msg)))

    def _refuse(
        self,
        peer: bytes,
        ids: list[str],
        code: str,
        reason: str,
        frames: list[bytes] | None = None,
    ) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1
        self._send(peer, wire.Refused(ids, code, reason))
        if frames is not None:
            quiet = self._warned.due((peer.hex(), code), self._now)
            if quiet is not None:  # a peer can make us log: once a minute per peer and code
                log.warning(
                    "streams: refused a message from peer %s: %s: %s%s",
                    peer.hex(),
                    code,
                    reason,
                    since(quiet),
                )

    # ------------------------------------------------------------- publish
    def _publish(self, peer: bytes, msg: wire.Publish) -> None:
        if len(msg.items) > self.limits.max_batch:
            ids = [i.id for i in msg.items]
            reason = f"{len(ids)} events in one PUBLISH; at most {self.limits.max_batch}"
            self._refuse(peer, ids, "too_large", reason)
            return
        stored: list[wire.StoredItem] = []
        refused: dict[tuple[str, str], list[str]] = {}
        for item in msg.items:
            state = self.store.stream_for(item.topic)
            if state is None:
                prefixes = ", ".join(f"{s.name} ({s.prefix}*)" for s in self.store.streams.values())
                refused.setdefault(
                    (
                        "unknown_stream",
                        f"no stream holds topic {item.topic!r}; streams: {prefixes}",
                    ),
                    [],
                ).append(item.id)
                continue
            data = wire.pack(item.data)
            size = event_size(item.id, item.topic, data)
            limit = self.limits.max_event_bytes
            if state.limits.max_bytes:
                limit = min(limit, state.limits.max_bytes)
            if size > limit:
                refused.setdefault(
                    ("too_large", f"an event of {size} bytes; this device stores {limit} at most"),
                    [],
                ).append(item.id)
                continue
            seq, duplicate = self.store.append(state, item.id, item.topic, data)
            if duplicate:
                self.duplicates += 1
            else:
                self.published += 1
            stored.append(wire.StoredItem(item.id, state.name, seq, duplicate))
        if stored:
            self._send(peer, wire.Stored(stored))
        for (code, reason), ids in refused.items():
            self._refuse(peer, ids, code, reason)

    # ----------------------------------------------------------- subscribe
    def _subscribe(self, peer: bytes, msg: wire.Subscribe, now: float) -> None:
        state = self.store.streams.get(msg.stream)
        if state is None:
            names = ", ".join(sorted(self.store.streams)) or "none"
            self._refuse(
                peer, [], "unknown_stream", f"no stream {msg.stream!r} here; streams: {names}"
            )
            return
        previous = self.by_peer.pop(peer, None)
        if previous is not None:
            self._detach(previous)
        durable = msg.name is not None
        name = msg.name if durable else f"~{peer.hex()}"
        key = (msg.stream, name)
        sub = self.subscriptions.get(key)
        resumed = True
        if sub is None:
            record = self.store.load_subscriber(*key) if durable else None
            if record is None:
                resumed = False
                record = SubscriberRecord(
                    msg.stream, name, msg.topic, self._start(state, msg), created_at=now
                )
            sub = Subscription(record, durable, msg.window, msg.ack_wait_ms / 1000)
            sub.changed = not resumed  # a new durable name is written at once
            self.subscriptions[key] = sub
        elif sub.peer is not None and sub.peer != peer:
            self.by_peer.pop(sub.peer, None)
            self._refuse(
                sub.peer,
                [],
                "taken_over",
                f"another connection subscribed as {name!r} on stream {msg.stream!r}",
            )
        sub.window, sub.ack_wait = msg.window, msg.ack_wait_ms / 1000
        sub.peer, sub.last_heard = peer, now
        self.by_peer[peer] = sub
        gap = sub.skip_to(state.first)
        self._send(
            peer,
            wire.Subscribed(
                msg.stream,
                msg.name,
                resumed,
                sub.position,
                state.first,
                state.committed,
                sub.missed,
            ),
        )
        if gap:
            self._log_gap(sub, gap)
        self._tell_gap(sub)
        self._deliver(sub, sub.resend_all(now))
        self._save(sub)

    def _start(self, state: StreamState, msg: wire.Subscribe) -> int:
        """A new subscriber's position (the last event it will not get)."""
        if msg.start == "all":
            return state.first - 1
        if msg.start == "seq":
            return (msg.seq or 1) - 1
        if msg.start == "time":
            return self.store.first_seq_at(state, msg.time or 0.0) - 1
        return state.last

    def _skip(self, sub: Subscription, state: StreamState) -> int:
        """Pass ``sub`` over the events that fell out of retention before it got
        them, and tell it (GAP) exactly how many it missed."""
        missed = sub.skip_to(state.first)
        if missed:
            self._log_gap(sub, missed)
            self._tell_gap(sub)
        return missed

    @staticmethod
    def _log_gap(sub: Subscription, missed: int) -> None:
        log.warning(
            "streams: subscriber %s of %s missed %d events: they fell out of retention",
            sub.name,
            sub.stream,
            missed,
        )

    def _tell_gap(self, sub: Subscription) -> None:
        """GAP with every miss not yet known told (see Subscription.untold)."""
        if sub.untold and sub.peer is not None:
            missed, first, last = sub.untold
            name = sub.name if sub.durable else None
            self._send(sub.peer, wire.Gap(sub.stream, name, missed, first, last))
            sub.told_at = sub.cursor

    def _detach(self, sub: Subscription) -> None:
        if sub.peer is not None:
            self.by_peer.pop(sub.peer, None)
        sub.peer = None
        if not sub.durable:  # an ephemeral subscriber ends with its connection
            self.subscriptions.pop((sub.stream, sub.name), None)

    def unreachable(self, peer: bytes, now: float) -> None:
        """The socket could not send to ``peer`` (gone) what was made at ``now``."""
        sub = self.by_peer.get(peer)
        if sub is not None:
            sub.not_sent(now)
            self._detach(sub)

    def _save(self, sub: Subscription) -> None:
        if sub.durable and sub.changed:
            self.store.save_subscriber(sub.record())
            sub.changed = False

    # ------------------------------------------------------------ delivery
    def deliver(self, now: float) -> None:
        """Give every attached subscriber the stored events it has room for."""
        for sub in list(self.by_peer.values()):
            state = self.store.streams[sub.stream]
            while sub.room > 0:
                self._skip(sub, state)
                if sub.cursor >= state.committed:
                    break
                events = self.store.read(state, sub.cursor, sub.room, _EVENT_MESSAGE_BYTES)
                if not events:
                    break
                self._deliver(sub, sub.offer(events, now))
            self._save(sub)

    def _deliver(self, sub: Subscription, entries: list[InFlight]) -> None:
        if entries and sub.peer is not None:
            self.outbox.append((sub.peer, encode_events(entries)))

    def tick(self, now: float) -> None:
        """Redeliver what waited past its ack wait; drop silent ephemeral subscribers."""
        for sub in list(self.subscriptions.values()):
            if sub.peer is None:
                continue
            if not sub.durable and now - sub.last_heard > self.limits.ephemeral_idle_s:
                self._detach(sub)
                continue
            late = sub.due(now)
            if late:
                self._deliver(sub, late)
                self._save(sub)

    def next_deadline(self) -> float | None:
        return min(
            (d for s in self.by_peer.values() if (d := s.next_deadline()) is not None),
            default=None,
        )

    def expire(self) -> dict[str, int]:
        return self.store.expire()

    def take(self) -> list[tuple[bytes, list[bytes]]]:
        out, self.outbox = self.outbox, []
        return out

    # -------------------------------------------------------------- listing
    def listing(self) -> dict[str, Any]:
        """LIST's reply: streams and durable subscribers (attached or not)."""
        streams = [
            {
                "name": s.name,
                "prefix": s.prefix,
                "events": s.events,
                "bytes": s.bytes,
                "first": s.first,
                "last": s.committed,
                "oldest_ts": s.oldest_ts,
                "dropped_events": s.dropped_events,
                "dropped_bytes": s.dropped_bytes,
                "max_age_s": s.limits.max_age_s,
                "max_events": s.limits.max_events,
                "max_bytes": s.limits.max_bytes,
            }
            for s in self.store.streams.values()
        ]
        return {"device": self.device_id, "streams": streams, "subscribers": self.subscribers()}

    def subscribers(self) -> list[dict[str, Any]]:
        """Every durable subscriber and every attached ephemeral one, from memory
        only (a metrics scrape calls this from its own thread: copies first)."""
        rows = []
        for sub in list(self.subscriptions.values()):
            state = self.store.streams.get(sub.stream)
            rows.append(
                {
                    "stream": sub.stream,
                    "name": sub.name if sub.durable else None,
                    "topic": sub.topic,
                    "position": sub.position,
                    "lag": max(0, state.committed - sub.position) if state else 0,
                    "in_flight": len(sub.inflight),
                    "redeliveries": sub.redeliveries,
                    "missed": sub.missed,
                    "delivered": sub.delivered,
                    "connected": sub.peer is not None,
                }
            )
        return sorted(rows, key=lambda r: (r["stream"], r["name"] or ""))


def encode_events(entries: list[InFlight]) -> list[bytes]:
    """An EVENT message of these events, their stored data spliced in as it is
    (msgpack already): no decode and encode again of each event's data."""
    packer = msgpack.Packer(use_bin_type=True)
    parts = [packer.pack_array_header(len(entries))]
    for entry in entries:
        e: StoredEvent = entry.event
        parts.append(packer.pack_array_header(6))
        parts.append(packer.pack(e.seq))
        parts.append(packer.pack(e.id))
        parts.append(packer.pack(e.topic))
        parts.append(packer.pack(e.ts))
        parts.append(e.data)
        parts.append(packer.pack(entry.attempt))
    return [wire.SIGNATURE, bytes((wire.Command.EVENT,)), b"".join(parts)]
