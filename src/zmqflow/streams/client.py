"""Python clients of the streams device: confirmed publish and durable subscribers.

Contract:

- ``Publisher.publish(topic, data, id=None)`` returns a ``Confirmation``
  (stream, seq, duplicate) once the device has stored the event, and
  raises ``DeviceUnavailable`` when no STORED came within ``timeout`` (the
  device is down or unreachable) or ``StreamRefused`` (``code``, ``reason``:
  refused handshake, ``too_large``, ``unknown_stream``, ``malformed``).
  Without a STORED after ``attempt_s`` it sends again on a new connection
  with the same ids, so a publish that reached the device once is stored
  once (the device's dedup window); ``id`` lets a caller retry across
  processes the same way. ``publish_many`` sends many in PUBLISH messages of
  at most 1,000 events (the device's limit) and about 16 MiB, all at once.
- ``Subscriber(endpoint, stream, name, start=...)`` is a durable subscriber
  (``name`` given) or an ephemeral one; ``for event in sub:`` yields
  ``StreamEvent``s in order, and an event is acknowledged when the loop asks
  for the next one, that is once its body returned; leaving the loop (break,
  exception) leaves the current event unacknowledged: it comes again.
  ``run(handler)`` calls ``handler(event)`` and acknowledges after it
  returns; a handler that raises leaves its event to be delivered again
  after the ack wait. ``missed`` counts events the device said fell out of
  retention before they reached us (``gaps`` lists them).
  ``close()`` sends the last acknowledgements and waits (a HEARTBEAT round
  trip, at most ``close_timeout``) until the device has them stored.
- ``AsyncPublisher`` and ``AsyncSubscriber`` are the same on asyncio
  (``async for``, ``await run(handler)`` with sync or async handlers).

The rules (resends, acknowledgements, heartbeats, reconnection, dropping a
second delivery of an event we hold) are written once, without sockets:
``publish_steps`` (a generator of I/O requests, the pattern of
zmqflow.client.core) and ``SubscriberCore`` (a state machine fed messages
and the time); the sync and asyncio classes only move frames.

A subscriber sends HEARTBEAT every ``heartbeat_interval`` while it waits;
a device silent for ``liveness`` intervals after a heartbeat (time spent in
a handler, with nobody listening, does not count), or answering with another
instance id (it restarted), gets a new SUBSCRIBE (on a new connection when
silent), and acknowledgements the device may not have stored are sent
again after it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from zmqflow.limits import MAX_BATCH
from zmqflow.security.handshake import HandshakeWatch, Refusal
from zmqflow.security.peer import CurveKeys, resolve
from zmqflow.streams import wire
from zmqflow.transport import recv_frames, send_frames

log = logging.getLogger("zmqflow.streams.client")

SEND, RECV, REOPEN = range(3)
T = TypeVar("T")
Steps = Generator[tuple[int, Any], Any, T]

_HEARTBEAT = wire.encode(wire.Heartbeat())
_CHUNK_BYTES = 16 << 20  # one PUBLISH holds about this much


class StreamError(RuntimeError):
    """Something the streams device said no to, or did not answer."""


class DeviceUnavailable(StreamError, TimeoutError):
    """No answer from the streams device in time: down, unreachable, or overloaded."""


class StreamRefused(StreamError):
    """The device (or its handshake) refused: ``code`` says why, ``reason`` in words.

    ``stored`` holds the confirmations of the other events of the same publish."""

    def __init__(
        self,
        code: str,
        reason: str,
        ids: list[str] | None = None,
        stored: list[Confirmation] | None = None,
    ) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.ids = ids or []
        self.stored = stored or []


@dataclass(frozen=True, slots=True)
class Confirmation:
    id: str
    stream: str
    seq: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class StreamEvent:
    stream: str
    seq: int
    id: str
    topic: str
    ts: float
    data: Any
    attempt: int

    @property
    def redelivered(self) -> bool:
        return self.attempt > 1


@dataclass(frozen=True, slots=True)
class Missed:
    """Events ``first``..``last`` (``count`` of them) fell out of retention before
    they reached this subscriber."""

    stream: str
    count: int
    first: int
    last: int


def new_event_id() -> str:
    return uuid.uuid4().hex


# ------------------------------------------------------------------ publish


def publish_steps(
    items: list[wire.PublishItem], timeout: float, attempt_s: float
) -> Steps[list[Confirmation]]:
    """Send ``items`` until each is STORED or refused; resend the unanswered ones
    on a new connection every ``attempt_s``; give up after ``timeout``."""
    messages = _chunks(items)  # sent as they are the first time
    pending = {i.id: i for i in items}
    stored: dict[str, Confirmation] = {}
    refused: list[wire.Refused] = []
    deadline = time.monotonic() + timeout
    while True:
        yield (SEND, messages)
        attempt_end = min(deadline, time.monotonic() + attempt_s)
        while pending and (left := attempt_end - time.monotonic()) > 0:
            got = yield (RECV, left)
            if isinstance(got, Refusal):
                raise StreamRefused("handshake", got.message, list(pending))
            for msg in got:
                if isinstance(msg, wire.Stored):
                    for item in msg.items:
                        if pending.pop(item.id, None) is not None:
                            stored[item.id] = Confirmation(
                                item.id, item.stream, item.seq, item.duplicate
                            )
                elif isinstance(msg, wire.Refused):
                    ids = msg.ids or list(pending)  # none named: the whole message
                    if any(pending.pop(i, None) is not None for i in ids):
                        refused.append(wire.Refused(ids, msg.code, msg.reason))
        if not pending:
            break
        if time.monotonic() >= deadline:
            raise DeviceUnavailable(
                f"no STORED from the streams device within {timeout:g}s for "
                f"{len(pending)} of {len(items)} events: is it running, and is the endpoint "
                "right? (publishing again with the same ids stores them once)"
            )
        yield (REOPEN, None)  # a new connection; the same ids: stored once
        messages = _chunks(list(pending.values()))
    if refused:
        first = refused[0]
        ids = [i for r in refused for i in r.ids]
        raise StreamRefused(
            first.code, first.reason, ids, [stored[i.id] for i in items if i.id in stored]
        )
    return [stored[i.id] for i in items]


def _chunks(items: list[wire.PublishItem]) -> list[list[bytes]]:
    """PUBLISH messages of at most MAX_BATCH events and about 16 MiB each (an
    event larger than that travels alone), in order; ``StreamRefused``
    ``too_large`` for an event over the 64 MiB message cap."""
    out: list[list[bytes]] = []
    chunk: list[wire.PublishItem] = []
    size = 0
    for item in items:
        item_size = len(wire.pack(item.data)) + len(item.id) + len(item.topic) + 16
        if item_size > wire.MAX_MESSAGE_BYTES - 64:
            raise StreamRefused(
                "too_large",
                f"an event of {item_size} bytes; one message holds "
                f"{wire.MAX_MESSAGE_BYTES} at most",
                [item.id],
            )
        if chunk and (len(chunk) >= MAX_BATCH or size + item_size > _CHUNK_BYTES):
            out.append(wire.encode(wire.Publish(chunk)))
            chunk, size = [], 0
        chunk.append(item)
        size += item_size
    if chunk:
        out.append(wire.encode(wire.Publish(chunk)))
    return out


def _items(
    events: Iterable[tuple[str, Any] | tuple[str, Any, str | None]],
) -> list[wire.PublishItem]:
    out = []
    for event in events:
        topic, data = event[0], event[1]
        event_id = event[2] if len(event) > 2 else None  # type: ignore[misc]
        out.append(wire.PublishItem(event_id or new_event_id(), topic, data))
    return out


# --------------------------------------------------------------- connection


class _Connection:
    """One DEALER to the device, its handshake watched until it first hears back."""

    def __init__(self, endpoint: str, curve: CurveKeys | None, ctx: zmq.Context) -> None:
        self.endpoint = endpoint
        self.curve = curve
        self.ctx = ctx
        self.sock: Any = None
        self.watch: HandshakeWatch | None = None
        self.open()

    def open(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = sock.rcvhwm = 0
        sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_MESSAGE_BYTES)
        if self.curve is not None:
            self.curve.apply(sock)
        self.watch = HandshakeWatch(sock, self.curve)
        sock.connect(self.endpoint)
        self.sock = sock

    def heard(self) -> None:
        if self.watch is not None:
            self.watch.close()
            self.watch = None

    def refusal(self) -> Refusal:
        found = self.watch.read() if self.watch is not None else None
        if found is None:
            key = None if self.curve is None else self.curve.public_text
            found = Refusal(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 0, self.endpoint, key)
        return found

    def reopen(self) -> None:
        self.close()
        self.open()

    def close(self, linger: int = 0) -> None:
        self.heard()
        if self.sock is not None and not self.sock.closed:
            self.sock.close(linger=linger)


def _decode_all(raw: list[list[bytes]]) -> list[wire.Message]:
    out = []
    for frames in raw:
        try:
            out.append(wire.decode(frames))
        except wire.ProtocolError as exc:
            log.warning("streams: undecodable message from the device dropped: %s", exc)
    return out


class _SyncIO:
    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    def send(self, messages: list[list[bytes]]) -> Refusal | None:
        try:
            for frames in messages:
                send_frames(self.conn.sock, frames)
        except zmq.Again:  # no pipe: the handshake was refused (HWM is unlimited)
            return self.conn.refusal()
        return None

    def recv(self, seconds: float) -> list[wire.Message] | Refusal:
        conn = self.conn
        poller = zmq.Poller()
        poller.register(conn.sock, zmq.POLLIN)
        if conn.watch is not None:
            poller.register(conn.watch.socket, zmq.POLLIN)
        ready = dict(poller.poll(max(0, int(seconds * 1000))))
        if conn.watch is not None and conn.watch.socket in ready:
            refusal = conn.watch.read()
            if refusal is not None:
                return refusal
        if conn.sock not in ready:
            return []
        conn.heard()
        raw = []
        while True:
            try:
                raw.append(recv_frames(conn.sock))
            except zmq.Again:
                return _decode_all(raw)

    def run(self, steps: Steps[T]) -> T:
        reply: Any = None
        try:
            while True:
                op, arg = steps.send(reply)
                if op == SEND:
                    reply = self.send(arg)
                    if isinstance(reply, Refusal):
                        raise StreamRefused("handshake", reply.message)
                elif op == RECV:
                    reply = self.recv(arg)
                else:
                    self.conn.reopen()
                    reply = None
        except StopIteration as done:
            return done.value


class _AsyncIO:
    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    async def recv(self, seconds: float) -> list[wire.Message] | Refusal:
        conn = self.conn
        poller = zmq.asyncio.Poller()
        poller.register(conn.sock, zmq.POLLIN)
        if conn.watch is not None:
            poller.register(conn.watch.socket, zmq.POLLIN)
        ready = dict(await poller.poll(max(0, int(seconds * 1000))))
        if conn.watch is not None and conn.watch.socket in ready:
            refusal = await conn.watch.aread()
            if refusal is not None:
                return refusal
        if conn.sock not in ready:
            return []
        conn.heard()
        raw = []
        while True:
            try:
                raw.append(await conn.sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                return _decode_all(raw)

    async def send(self, messages: list[list[bytes]]) -> Refusal | None:
        try:
            for frames in messages:
                await self.conn.sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            return self.conn.refusal()
        return None

    async def run(self, steps: Steps[T]) -> T:
        reply: Any = None
        try:
            while True:
                op, arg = steps.send(reply)
                if op == SEND:
                    reply = await self.send(arg)
                    if isinstance(reply, Refusal):
                        raise StreamRefused("handshake", reply.message)
                elif op == RECV:
                    reply = await self.recv(arg)
                else:
                    self.conn.reopen()
                    reply = None
        except StopIteration as done:
            return done.value


def _keys(
    curve: CurveKeys | None,
    curve_secret: str | os.PathLike[str] | None,
    curve_server: str | os.PathLike[str] | None,
) -> CurveKeys | None:
    return resolve(curve, curve_secret, curve_server)


class Publisher:
    """Confirmed publish (see the module's contract)."""

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5559",
        *,
        timeout: float = 10.0,
        attempt_s: float = 2.0,
        curve: CurveKeys | None = None,
        curve_secret: str | os.PathLike[str] | None = None,
        curve_server: str | os.PathLike[str] | None = None,
        ctx: zmq.Context | None = None,
    ) -> None:
        self.timeout = timeout
        self.attempt_s = attempt_s
        self._conn = _Connection(
            endpoint, _keys(curve, curve_secret, curve_server), ctx or zmq.Context.instance()
        )
        self._io = _SyncIO(self._conn)

    def publish(self, topic: str, data: Any = None, *, id: str | None = None) -> Confirmation:
        (confirmation,) = self.publish_many([(topic, {} if data is None else data, id)])
        return confirmation

    def publish_many(
        self, events: Iterable[tuple[str, Any] | tuple[str, Any, str | None]]
    ) -> list[Confirmation]:
        items = _items(events)
        if not items:
            return []
        return self._io.run(publish_steps(items, self.timeout, self.attempt_s))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPublisher:
    """``Publisher`` on asyncio."""

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5559",
        *,
        timeout: float = 10.0,
        attempt_s: float = 2.0,
        curve: CurveKeys | None = None,
        curve_secret: str | os.PathLike[str] | None = None,
        curve_server: str | os.PathLike[str] | None = None,
        ctx: zmq.asyncio.Context | None = None,
    ) -> None:
        self.timeout = timeout
        self.attempt_s = attempt_s
        self._conn = _Connection(
            endpoint,
            _keys(curve, curve_secret, curve_server),
            ctx or zmq.asyncio.Context.instance(),
        )
        self._io = _AsyncIO(self._conn)

    async def publish(self, topic: str, data: Any = None, *, id: str | None = None) -> Confirmation:
        (confirmation,) = await self.publish_many([(topic, {} if data is None else data, id)])
        return confirmation

    async def publish_many(
        self, events: Iterable[tuple[str, Any] | tuple[str, Any, str | None]]
    ) -> list[Confirmation]:
        items = _items(events)
        if not items:
            return []
        return await self._io.run(publish_steps(items, self.timeout, self.attempt_s))

    def close(self) -> None:
        self._conn.close()

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def list_steps(timeout: float) -> Steps[dict[str, Any]]:
    """LIST, and its reply."""
    yield (SEND, [wire.encode(wire.ListRequest())])
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        got = yield (RECV, left)
        if isinstance(got, Refusal):
            raise StreamRefused("handshake", got.message)
        for msg in got:
            if isinstance(msg, wire.Listing):
                return msg.info
            if isinstance(msg, wire.Refused):
                raise StreamRefused(msg.code, msg.reason)
    raise DeviceUnavailable(f"no LIST reply from the streams device within {timeout:g}s")


def list_streams(
    endpoint: str = "tcp://127.0.0.1:5559",
    *,
    timeout: float = 3.0,
    curve: CurveKeys | None = None,
    ctx: zmq.Context | None = None,
) -> dict[str, Any]:
    """The device's streams and subscribers (LIST): ``{device, streams, subscribers}``.

    Without ``curve``, the keys ZMQFLOW_CURVE_SECRET/SERVER name, as every client reads."""
    conn = _Connection(endpoint, _keys(curve, None, None), ctx or zmq.Context.instance())
    try:
        return _SyncIO(conn).run(list_steps(timeout))
    finally:
        conn.close()


# --------------------------------------------------------------- subscribe


class SubscriberCore:
    """A subscriber's rules without sockets; ``now`` is a monotonic clock.

    The driver loop: ``outgoing(now)`` to send, ``on_message(msg, now)`` for
    each message read, ``silent(now)`` to decide on a new connection (then
    ``reconnected(now)``), ``take()`` for the next event to hand out,
    ``done(event)`` after its handler returned, ``abandon(event)`` when it
    failed. Raises ``StreamRefused`` for refusals it cannot mend (unknown
    stream, taken over by another connection, malformed).
    """

    def __init__(
        self, request: wire.Subscribe, heartbeat_interval: float = 1.0, liveness: int = 3
    ) -> None:
        self.request = request
        self.interval = heartbeat_interval
        self.liveness = liveness
        self.ready: deque[StreamEvent] = deque()
        # seqs handed out, waiting, or acknowledged and not yet known stored: a second
        # delivery of one of them (redelivery racing our ack) is dropped, not handled twice
        self.held: set[int] = set()
        self.acks: list[int] = []  # to send
        self._sent: list[int] = []  # sent since the last heartbeat went out
        self._awaiting: deque[list[int]] = deque()  # acks each heartbeat in flight covers
        self.device: str | None = None
        self.subscribed: wire.Subscribed | None = None
        self.gaps: list[Missed] = []
        self.missed = 0
        self.received = 0
        self.redelivered = 0
        self.resubscribes = 0
        self._needs_subscribe = True
        self._next_beat = 0.0
        self.last_heard = time.monotonic()
        # when we first sent a heartbeat that nothing has answered since: silence is
        # counted from there, so a long handler (nobody listening) is not silence
        self._asked_at: float | None = None

    # ---------------------------------------------------------- outgoing
    def outgoing(self, now: float) -> list[list[bytes]]:
        out = []
        if self._needs_subscribe:
            out.append(wire.encode(self.request))
            self._needs_subscribe = False
        if self.acks:
            out.append(wire.encode(wire.Ack(self.acks)))
            self._sent += self.acks
            self.acks = []
        if now >= self._next_beat:
            out.append(_HEARTBEAT)
            self._awaiting.append(self._sent)
            self._sent = []
            self._next_beat = now + self.interval
            if self._asked_at is None:
                self._asked_at = now
        return out

    def ack_message(self) -> list[bytes]:
        """An ACK of every ack waiting (there must be some), counted as sent."""
        frames = wire.encode(wire.Ack(self.acks))
        self._sent += self.acks
        self.acks = []
        return frames

    def flush_request(self) -> list[list[bytes]]:
        """Acks to send now and a heartbeat whose reply says they are stored (close)."""
        self._next_beat = 0.0
        return self.outgoing(time.monotonic())

    @property
    def settled(self) -> bool:
        """Every ack sent is known stored (no heartbeat reply outstanding, none unsent)."""
        return not self.acks and not self._sent and not self._awaiting

    def next_wake(self) -> float:
        return self._next_beat

    # ---------------------------------------------------------- incoming
    def on_message(self, msg: wire.Message, now: float) -> None:
        self.last_heard = now
        self._asked_at = None
        match msg:
            case wire.Events(items):
                stream = self.request.stream
                for d in items:
                    if d.seq in self.held:
                        continue
                    self.held.add(d.seq)
                    self.ready.append(
                        StreamEvent(stream, d.seq, d.id, d.topic, d.ts, d.data, d.attempt)
                    )
            case wire.Subscribed():
                self.subscribed = msg
            case wire.Gap():
                gap = Missed(msg.stream, msg.missed, msg.first, msg.last)
                self.gaps.append(gap)
                self.missed += msg.missed
                log.warning(
                    "stream %s: %d events (%d..%d) fell out of retention before they reached "
                    "subscriber %s",
                    msg.stream,
                    msg.missed,
                    msg.first,
                    msg.last,
                    self.request.name,
                )
            case wire.Heartbeat(device):
                if self.device is not None and device != self.device:
                    log.info("streams device restarted (%s): subscribing again", device)
                    self._resubscribe()
                else:
                    self._confirm()
                self.device = device
            case wire.Refused(_, code, reason):
                if code == "not_subscribed":
                    self._resubscribe()
                else:
                    raise StreamRefused(code, reason)

    def _confirm(self) -> None:
        if self._awaiting:
            for seq in self._awaiting.popleft():
                self.held.discard(seq)

    def _resubscribe(self) -> None:
        """SUBSCRIBE again, then every ack the device may not have stored."""
        self.resubscribes += 1
        self._needs_subscribe = True
        unconfirmed = [s for batch in self._awaiting for s in batch] + self._sent
        self._awaiting.clear()
        self._sent = []
        self.acks = unconfirmed + self.acks
        self._next_beat = 0.0

    def silent(self, now: float) -> bool:
        """Nothing heard for ``liveness`` intervals since we asked (a heartbeat)."""
        return self._asked_at is not None and now - self._asked_at > self.interval * self.liveness

    def reconnected(self, now: float) -> None:
        self.last_heard = now
        self._asked_at = None
        self._resubscribe()

    # ------------------------------------------------------------ events
    def take(self) -> StreamEvent | None:
        if not self.ready:
            return None
        event = self.ready.popleft()
        self.received += 1
        if event.attempt > 1:
            self.redelivered += 1
        return event

    def done(self, event: StreamEvent) -> None:
        self.acks.append(event.seq)

    def abandon(self, event: StreamEvent) -> None:
        """Not handled: the device delivers it again after the ack wait."""
        self.held.discard(event.seq)


def _subscribe_request(
    stream: str,
    name: str | None,
    start: str,
    seq: int | None,
    since: float | None,
    topic: str,
    window: int,
    ack_wait: float,
) -> wire.Subscribe:
    if start not in wire.START_POSITIONS:
        raise ValueError(f"start must be one of {wire.START_POSITIONS}, not {start!r}")
    if start == "seq" and not seq:
        raise ValueError("start='seq' needs seq (>= 1)")
    if start == "time" and since is None:
        raise ValueError("start='time' needs time (Unix seconds)")
    return wire.Subscribe(
        stream, name, start, seq, since, topic, window, max(10, int(ack_wait * 1000))
    )


class _SubscriberBase:
    def __init__(
        self,
        endpoint: str,
        stream: str,
        name: str | None,
        *,
        start: str,
        seq: int | None,
        time: float | None,
        topic: str,
        window: int,
        ack_wait: float,
        heartbeat_interval: float,
        liveness: int,
        close_timeout: float,
        curve: CurveKeys | None,
        curve_secret: str | os.PathLike[str] | None,
        curve_server: str | os.PathLike[str] | None,
        ctx: zmq.Context,
    ) -> None:
        request = _subscribe_request(stream, name, start, seq, time, topic, window, ack_wait)
        self.core = SubscriberCore(request, heartbeat_interval, liveness)
        self.close_timeout = close_timeout
        self._conn = _Connection(endpoint, _keys(curve, curve_secret, curve_server), ctx)

    @property
    def missed(self) -> int:
        return self.core.missed

    @property
    def gaps(self) -> list[Missed]:
        return self.core.gaps

    def ack(self, event: StreamEvent) -> None:
        """Acknowledge ``event`` (sent with the next message to the device)."""
        self.core.done(event)


class Subscriber(_SubscriberBase):
    """A durable (``name``) or ephemeral subscriber (see the module's contract)."""

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5559",
        stream: str = "events",
        name: str | None = None,
        *,
        start: str = "new",
        seq: int | None = None,
        time: float | None = None,
        topic: str = "",
        window: int = 100,
        ack_wait: float = 30.0,
        heartbeat_interval: float = 1.0,
        liveness: int = 3,
        close_timeout: float = 2.0,
        curve: CurveKeys | None = None,
        curve_secret: str | os.PathLike[str] | None = None,
        curve_server: str | os.PathLike[str] | None = None,
        ctx: zmq.Context | None = None,
    ) -> None:
        super().__init__(
            endpoint,
            stream,
            name,
            start=start,
            seq=seq,
            time=time,
            topic=topic,
            window=window,
            ack_wait=ack_wait,
            heartbeat_interval=heartbeat_interval,
            liveness=liveness,
            close_timeout=close_timeout,
            curve=curve,
            curve_secret=curve_secret,
            curve_server=curve_server,
            ctx=ctx or zmq.Context.instance(),
        )
        self._io = _SyncIO(self._conn)

    def _pump(self, seconds: float) -> None:
        core, now = self.core, _now()
        if core.silent(now):
            log.info("streams device silent for %.1fs: connecting again", now - core.last_heard)
            self._conn.reopen()
            core.reconnected(now)
        refusal = self._io.send(core.outgoing(now))
        if refusal is not None:
            raise StreamRefused("handshake", refusal.message)
        wait = max(0.0, min(seconds, core.next_wake() - _now()))
        got = self._io.recv(wait)
        if isinstance(got, Refusal):
            raise StreamRefused("handshake", got.message)
        now = _now()
        for msg in got:
            core.on_message(msg, now)

    def _send_acks(self) -> None:
        refusal = self._io.send([self.core.ack_message()])
        if refusal is not None:
            raise StreamRefused("handshake", refusal.message)

    def get(self, timeout: float | None = None) -> StreamEvent | None:
        """The next event, or None after ``timeout`` seconds without one. Acks
        waiting go out first: an acknowledged event is not delivered again even
        if this process dies during the next handler."""
        until = None if timeout is None else _now() + timeout
        while True:
            if self.core.acks:
                self._send_acks()
            event = self.core.take()
            if event is not None:
                return event
            left = 3600.0 if until is None else until - _now()
            if left <= 0:
                return None
            self._pump(left)

    def __iter__(self) -> Iterator[StreamEvent]:
        while True:
            event = self.get()
            assert event is not None
            try:
                yield event
            except GeneratorExit:
                self.core.abandon(event)
                raise
            self.core.done(event)

    def run(
        self,
        handler: Callable[[StreamEvent], Any],
        *,
        count: int = 0,
        idle_timeout: float | None = None,
    ) -> int:
        """Handle events until ``count`` were handled (0: forever) or none came for
        ``idle_timeout`` seconds; acknowledges each after ``handler`` returns.
        Returns how many were handled."""
        handled = 0
        while not count or handled < count:
            event = self.get(idle_timeout)
            if event is None:
                break
            try:
                handler(event)
            except Exception:
                log.exception(
                    "handler failed on %s seq %d: delivered again later", event.id, event.seq
                )
                self.core.abandon(event)
                continue
            self.core.done(event)
            handled += 1
        return handled

    def close(self) -> None:
        """Send the last acks and wait until the device has them (``close_timeout``)."""
        core = self.core
        try:
            if self._conn.sock is not None and not self._conn.sock.closed and core.device:
                self._io.send(core.flush_request())
                until = _now() + self.close_timeout
                while not core.settled and (left := until - _now()) > 0:
                    got = self._io.recv(left)
                    if isinstance(got, Refusal):
                        break
                    for msg in got:
                        core.on_message(msg, _now())
        except StreamError:
            pass
        finally:
            self._conn.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSubscriber(_SubscriberBase):
    """``Subscriber`` on asyncio: ``async for event in sub`` and ``await sub.run(handler)``."""

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5559",
        stream: str = "events",
        name: str | None = None,
        *,
        start: str = "new",
        seq: int | None = None,
        time: float | None = None,
        topic: str = "",
        window: int = 100,
        ack_wait: float = 30.0,
        heartbeat_interval: float = 1.0,
        liveness: int = 3,
        close_timeout: float = 2.0,
        curve: CurveKeys | None = None,
        curve_secret: str | os.PathLike[str] | None = None,
        curve_server: str | os.PathLike[str] | None = None,
        ctx: zmq.asyncio.Context | None = None,
    ) -> None:
        super().__init__(
            endpoint,
            stream,
            name,
            start=start,
            seq=seq,
            time=time,
            topic=topic,
            window=window,
            ack_wait=ack_wait,
            heartbeat_interval=heartbeat_interval,
            liveness=liveness,
            close_timeout=close_timeout,
            curve=curve,
            curve_secret=curve_secret,
            curve_server=curve_server,
            ctx=ctx or zmq.asyncio.Context.instance(),
        )
        self._io = _AsyncIO(self._conn)

    async def _pump(self, seconds: float) -> None:
        core, now = self.core, _now()
        if core.silent(now):
            log.info("streams device silent for %.1fs: connecting again", now - core.last_heard)
            self._conn.reopen()
            core.reconnected(now)
        refusal = await self._io.send(core.outgoing(now))
        if refusal is not None:
            raise StreamRefused("handshake", refusal.message)
        wait = max(0.0, min(seconds, core.next_wake() - _now()))
        got = await self._io.recv(wait)
        if isinstance(got, Refusal):
            raise StreamRefused("handshake", got.message)
        now = _now()
        for msg in got:
            core.on_message(msg, now)

    async def _send_acks(self) -> None:
        refusal = await self._io.send([self.core.ack_message()])
        if refusal is not None:
            raise StreamRefused("handshake", refusal.message)

    async def get(self, timeout: float | None = None) -> StreamEvent | None:
        """``Subscriber.get`` on asyncio."""
        until = None if timeout is None else _now() + timeout
        while True:
            if self.core.acks:
                await self._send_acks()
            event = self.core.take()
            if event is not None:
                return event
            left = 3600.0 if until is None else until - _now()
            if left <= 0:
                return None
            await self._pump(left)

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        while True:
            event = await self.get()
            assert event is not None
            try:
                yield event
            except (GeneratorExit, asyncio.CancelledError):
                self.core.abandon(event)
                raise
            self.core.done(event)

    async def run(
        self,
        handler: Callable[[StreamEvent], Any | Awaitable[Any]],
        *,
        count: int = 0,
        idle_timeout: float | None = None,
    ) -> int:
        handled = 0
        while not count or handled < count:
            event = await self.get(idle_timeout)
            if event is None:
                break
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception(
                    "handler failed on %s seq %d: delivered again later", event.id, event.seq
                )
                self.core.abandon(event)
                continue
            self.core.done(event)
            handled += 1
        return handled

    async def close(self) -> None:
        core = self.core
        try:
            if self._conn.sock is not None and not self._conn.sock.closed and core.device:
                await self._io.send(core.flush_request())
                until = _now() + self.close_timeout
                while not core.settled and (left := until - _now()) > 0:
                    got = await self._io.recv(left)
                    if isinstance(got, Refusal):
                        break
                    for msg in got:
                        core.on_message(msg, _now())
        except StreamError:
            pass
        finally:
            self._conn.close()

    async def __aenter__(self) -> AsyncSubscriber:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _now() -> float:
    return time.monotonic()
