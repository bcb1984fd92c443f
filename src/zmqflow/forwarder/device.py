"""The forwarder device: sockets, the poll loop and its timers.

Contract: ``Forwarder(settings).run()`` binds a ROUTER for clients and a
ROUTER for workers on every configured endpoint, plus an XSUB/XPUB pair for
events, and serves until ``stop()`` (or SIGTERM/SIGINT in the CLI). Each
loop turn drains every readable socket, sends the TASKs the broker queued
(one message per worker), journals the new tasks that are due (see
broker.py: a task that finishes within ``journal_defer_ms`` is written
once, finished), commits the journal once (group commit), and only then
answers clients (answers grouped per client): no ACCEPTED leaves before
the journal holds its task. The loop also wakes when a new task falls due.

Security (security/policy.py, docs/security.md) is decided before anything
binds: with a secret key every socket is a CURVE server in its role's ZAP
domain behind a ZAP handler started first; without one only loopback and
ipc bind unless ``insecure``. Every socket has ZMQ_MAXMSGSIZE =
``max_message_bytes``; the event bus forwards only topics under ``<env>.``
(the others are dropped and counted in ``events_refused``).
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import zmq

from zmqflow.events import EventEncoder, new_source
from zmqflow.forwarder.broker import Broker
from zmqflow.forwarder.outbox import ClientOutbox, WorkerOutbox
from zmqflow.journal import Journal
from zmqflow.limits import Limits
from zmqflow.repeats import Repeats, since
from zmqflow.security.policy import CLIENTS, WORKERS, ForwarderSecurity
from zmqflow.settings import ForwarderSettings, UnusableSetting
from zmqflow.streams.device import StreamDevice
from zmqflow.transport import recv_frames, send_frames

if TYPE_CHECKING:
    from zmqflow.forwarder.metrics import Recorder

log = logging.getLogger("zmqflow.forwarder")

_DRAIN_LIMIT = 2000  # messages read from one socket per loop turn, for fairness
_PURGE_EVERY_S = 60.0
_PURGE_CHUNK = 10_000  # expired answers deleted per tick at most: the loop goes on between


class Forwarder:
    def __init__(self, settings: ForwarderSettings, ctx: zmq.Context | None = None) -> None:
        self.settings = settings
        self.ctx = ctx or zmq.Context.instance()
        self.source = new_source("forwarder")
        self.events = EventEncoder(settings.env, self.source)
        self._subscriptions: dict[bytes, int] = {}
        # before the journal opens: settings that would leave the forwarder open stop here
        self.security = ForwarderSecurity.from_settings(settings, self.ctx)
        self._env_prefix = f"{settings.env}.".encode()
        self.events_refused = 0  # events dropped: topic outside this forwarder's env
        self._repeats = Repeats()  # warnings a publisher can cause
        if settings.journal == ":memory:":
            log.warning("journal in memory: accepted tasks are lost if the forwarder dies")
        # JournalOpenError, JournalVersionError: the CLI names the setting
        self.journal = Journal(settings.journal, settings.journal_sync)
        self.broker = Broker(
            self.journal,
            Limits.of(settings),
            self._publish,
            forwarder_id=self.source,
            env=settings.env,
        )
        self.broker.task_events = False  # nobody subscribes yet
        self.stats: Recorder | None = None  # metrics.Recorder while metrics are on
        self._running = False
        self.started = time.monotonic()
        self.security.start()  # the ZAP handler runs before any CURVE socket binds
        try:
            self.frontend = self._bind(zmq.ROUTER, "frontend", CLIENTS, client_facing=True)
            self.backend = self._bind(zmq.ROUTER, "backend", WORKERS)
            self.xsub = self._bind(zmq.XSUB, "events_in", CLIENTS)
            self.xpub = self._bind(zmq.XPUB, "events_out", CLIENTS)
            # durable event streams (zmqflow.streams): their own ROUTER, store and thread
            self.streams = (
                StreamDevice(
                    settings,
                    env=settings.env,
                    security=self.security,
                    ctx=self.ctx,
                    max_message_bytes=settings.max_message_bytes,
                )
                if settings.streams
                else None
            )
        except BaseException:
            self.security.stop()
            raise
        self.security.watch(
            {
                name: sock
                for name, sock, endpoints in (
                    ("frontend", self.frontend, settings.frontend),
                    ("backend", self.backend, settings.backend),
                    ("events-in", self.xsub, settings.events_in),
                    ("events-out", self.xpub, settings.events_out),
                    *([("streams", self.streams.sock, settings.streams)] if self.streams else []),
                )
                if endpoints
            }
        )
        self._publish(
            "forwarder.started", {"journal": settings.journal, "recovered": len(self.broker.tasks)}
        )

    def _bind(
        self, kind: int, setting: str, domain: str, client_facing: bool = False
    ) -> zmq.Socket:
        """A socket of ``kind`` bound to every endpoint of ``setting``; one that
        cannot bind (a port in use, an ipc folder missing) is an ``UnusableSetting``."""
        endpoints: list[str] = getattr(self.settings, setting)
        sock = self.ctx.socket(kind)
        sock.linger = 0
        # a larger frame drops its sender's connection in libzmq, before Python sees it
        sock.setsockopt(zmq.MAXMSGSIZE, self.settings.max_message_bytes)
        if kind == zmq.ROUTER:
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # an unknown peer is an error, not a drop
            sock.sndhwm = sock.rcvhwm = 100_000
            if client_facing:
                sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting client keeps its id
        self.security.secure(sock, domain)  # CURVE server in its role's ZAP domain, or plain
        for endpoint in endpoints:
            try:
                self.security.bind(sock, endpoint)  # ipc socket files rw for owner and group only
            except zmq.ZMQError as exc:
                sock.close(0)
                raise UnusableSetting(setting, endpoint, f"cannot bind: {exc}") from None
        return sock

    # ----------------------------------------------------------- events
    def _publish(self, kind: str, data: dict[str, Any]) -> None:
        if not self._subscriptions or not hasattr(self, "xpub"):
            return
        topic = self.events.topic(kind).encode()
        if any(topic.startswith(prefix) for prefix in self._subscriptions):
            self.xpub.send_multipart(self.events.encode(kind, data), zmq.NOBLOCK)
            if self.stats is not None:
                self.stats.events_out += 1

    def _on_subscription(self, frame: bytes) -> None:
        if not frame:
            return
        prefix = frame[1:]
        count = self._subscriptions.get(prefix, 0) + (1 if frame[0] == 1 else -1)
        if count > 0:
            self._subscriptions[prefix] = count
        else:
            self._subscriptions.pop(prefix, None)
        task_topic = self.events.topic("task.").encode()
        self.broker.task_events = any(
            task_topic.startswith(prefix) or prefix.startswith(task_topic)
            for prefix in self._subscriptions
        )

    # ------------------------------------------------------------- loop
    def serve_metrics(self, port: int, addr: str = "0.0.0.0") -> None:
        """Count, and answer Prometheus scrapes on ``port`` (a thread of this
        process): one ``Recorder`` for the broker and the loop; the collectors
        read the broker's ``snapshot()`` and the security counters."""
        from prometheus_client import REGISTRY, start_http_server

        from zmqflow.forwarder.metrics import BrokerCollector, Recorder
        from zmqflow.security.metrics import SecurityCollector

        try:
            start_http_server(port, addr)
        except OSError as exc:
            raise UnusableSetting("metrics_port", port, f"cannot serve: {exc}") from None
        recorder = self.broker.stats = self.stats = Recorder()
        REGISTRY.register(BrokerCollector(self.broker, recorder))
        # handshakes, and events refused for their topic
        REGISTRY.register(SecurityCollector(self.security, lambda: self.events_refused))
        if self.streams:
            from zmqflow.streams.metrics import StreamsCollector

            REGISTRY.register(StreamsCollector(self.streams.core))

    def stop(self) -> None:
        self._running = False

    def run(self) -> None:
        s = self.settings
        log.info(
            "forwarder %s: clients %s, workers %s, events in %s out %s, journal %s (%d recovered)",
            self.source,
            ",".join(s.frontend),
            ",".join(s.backend),
            ",".join(s.events_in),
            ",".join(s.events_out),
            s.journal,
            len(self.broker.tasks),
        )
        poller = zmq.Poller()
        for sock in (self.frontend, self.backend, self.xsub, self.xpub):
            poller.register(sock, zmq.POLLIN)
        broker = self.broker
        interval = s.heartbeat_interval
        next_tick = time.monotonic() + interval
        next_reap = math.inf  # when a worker may pass the liveness deadline
        next_purge = time.monotonic() + _PURGE_EVERY_S
        self._running = True
        if self.streams:
            self.streams.start_thread()
        while self._running:
            wake = min(next_tick, next_reap, broker.next_journal_due())
            timeout_ms = max(0, math.ceil((wake - time.monotonic()) * 1000))
            ready = dict(poller.poll(timeout_ms))
            now = time.monotonic()
            if self.backend in ready:
                self._drain(self.backend, lambda f, now=now: broker.on_worker(f[0], f[1:], now))
            if self.frontend in ready:
                self._drain(self.frontend, lambda f: broker.on_client(f[0], f[1:]))
            if self.xsub in ready:
                refused = self.events_refused
                passed = self._drain(self.xsub, self._forward_event, copy=False)
                if self.stats is not None:
                    self.stats.events_in += passed
                    self.stats.events_out += passed - (self.events_refused - refused)
            if self.xpub in ready:
                self._drain(self.xpub, self._forward_subscription)
            if now >= next_tick:
                next_reap = broker.tick(now)
                next_tick = now + interval
                if now >= next_purge:
                    purged = self.journal.purge(s.result_ttl_s, _PURGE_CHUNK)
                    if purged:
                        log.info("journal: %d expired answers purged", purged)
                    # a full chunk left more: go on at the next tick, not in a minute
                    next_purge = now if purged >= _PURGE_CHUNK else now + _PURGE_EVERY_S
            elif now >= next_reap:
                next_reap = broker.reap(now)
            # Tasks go to workers before the commit, so workers run while it fsyncs. A
            # crash in between is harmless: the client saw no ACCEPTED and sends again.
            broker.dispatch()
            self._flush(self.backend, broker.outbox_workers, workers=True)
            broker.journal_due()
            if self.stats is None:
                self.journal.commit()
            else:
                self.stats.commit(self.journal)  # timed
            self._flush(self.frontend, broker.outbox_clients, workers=False)
        self.close()

    def _forward_event(self, frames: list[zmq.Frame]) -> None:
        """A publisher's event goes out only if its topic is under ``<env>.``."""
        if frames[0].bytes.startswith(self._env_prefix):
            send_frames(self.xpub, [f.bytes for f in frames])
            return
        self.events_refused += 1
        publisher = _peer_of(frames[0])
        # the one repeat rule (zmqflow.repeats): once a minute per publisher, counted
        quiet = self._repeats.due(("event outside env", publisher), time.monotonic())
        if quiet is not None:
            log.warning(
                "event bus: dropped an event for topic %r from %s: not under %r; "
                "this publisher's next ones are dropped and counted (events_refused)%s",
                frames[0].bytes[:64],
                publisher,
                self._env_prefix.decode(),
                since(quiet),
            )

    def _forward_subscription(self, frames: list[bytes]) -> None:
        self._on_subscription(frames[0])
        self.xsub.send_multipart(frames)

    def _drain(self, sock: zmq.Socket, handle: Any, copy: bool = True) -> int:
        """Handle what ``sock`` has, up to _DRAIN_LIMIT messages; returns how many."""
        recv = recv_frames if copy else _recv_message
        for done in range(_DRAIN_LIMIT):
            try:
                frames = recv(sock)
            except zmq.Again:
                return done
            handle(frames)
        return _DRAIN_LIMIT

    def _flush(self, sock: zmq.Socket, outbox: ClientOutbox | WorkerOutbox, workers: bool) -> None:
        for rid, frames in outbox.take():
            try:
                send_frames(sock, [rid, *frames])
            except zmq.ZMQError as exc:
                if workers:
                    self.broker.worker_unreachable(rid)
                # a client that went away collects its stored answers when it returns
                log.debug("send to %s failed: %s", rid.hex(), exc)

    def close(self) -> None:
        if self.streams:
            self.streams.stop()
            self.streams.join(5)
            self.streams.close()
        self.security.stop()
        self.journal.close()
        for sock in (self.frontend, self.backend, self.xsub, self.xpub):
            sock.close(linger=0)


def _recv_message(sock: zmq.Socket) -> list[zmq.Frame]:
    """One multipart message as frames that keep their metadata (User-Id, Peer-Address)."""
    frames = [sock.recv(zmq.NOBLOCK, copy=False)]
    while frames[-1].more:
        frames.append(sock.recv(zmq.NOBLOCK, copy=False))
    return frames


def _peer_of(frame: zmq.Frame) -> str:
    """Who sent a frame: its CURVE key (Z85, the ZAP user id) or its address."""
    for prop, label in (("User-Id", "key"), ("Peer-Address", "address")):
        try:
            value = frame.get(prop)
        except zmq.ZMQError:
            continue
        if value and value != "anonymous":
            return f"{label} {value}"
    return "an unknown peer"
