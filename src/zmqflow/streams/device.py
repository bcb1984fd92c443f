"""The streams device: a ROUTER around the streams core, with the forwarder's security.

Contract: ``StreamDevice(fields, env=..., security=..., ctx=...)`` opens the
store and binds one ROUTER on every endpoint of ``fields.streams`` (tcp and
ipc at once), made a CURVE server in the clients' ZAP domain by the
``ForwarderSecurity`` given (security/policy.py): inside the forwarder, the
forwarder's own (same context, same ZAP handler, same allow-list); alone,
``standalone(settings)`` builds one from the same settings the forwarder
reads. ``run()`` serves until ``stop()`` (from any thread; the loop wakes
at least every ``tick_s``, which is also how late past its ack wait an
event may be delivered again); ``start_thread()`` runs it in a thread
(``stop()`` then ``join()``); ``step(now, readable)`` is one turn, for a
host loop that polls ``sock`` itself.

Each loop turn: read what clients sent (up to 2000 messages), handle it in
the core, ``commit()`` the store once (group commit, fsynced when it holds
new events), then deliver stored events to subscribers and send every reply.
So STORED follows the commit that holds the events. A peer the ROUTER
cannot reach (gone: ROUTER_MANDATORY) is detached from its subscription; a
full send queue drops that message (an EVENT comes again after the ack
wait, a lost STORED makes the publisher send again, stored once by id).
Every socket has ZMQ_MAXMSGSIZE = ``max_message_bytes``. A store that
cannot be opened or an endpoint that cannot be bound is an
``UnusableSetting`` naming the setting (the CLI's exit 2 and one line).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import zmq

from zmqflow.events import new_source
from zmqflow.security.policy import CLIENTS, ForwarderSecurity
from zmqflow.settings import UnusableSetting
from zmqflow.streams.core import CoreLimits, StreamsCore
from zmqflow.streams.settings import StreamDeviceSettings, StreamFields
from zmqflow.streams.store import StreamStore
from zmqflow.transport import recv_frames, send_frames

log = logging.getLogger("zmqflow.streams")

_DRAIN_LIMIT = 2000
_EXPIRE_EVERY_S = 1.0


class StreamDevice:
    def __init__(
        self,
        fields: StreamFields,
        *,
        env: str,
        security: ForwarderSecurity,
        ctx: zmq.Context | None = None,
        max_message_bytes: int = 64 << 20,
        tick_s: float = 0.1,
    ) -> None:
        self.fields = fields
        self.ctx = ctx or zmq.Context.instance()
        self.security = security
        self.tick_s = tick_s
        self.device_id = new_source("streams")
        try:
            self.store = StreamStore(
                fields.streams_store,
                fields.stream_configs(env),
                fields.stream_dedup_window_s,
                fields.streams_sync,
            )
        except sqlite3.Error as exc:  # a folder missing, a file not ours: name the setting
            raise UnusableSetting("streams_store", fields.streams_store, str(exc)) from None
        self.core = StreamsCore(
            self.store,
            self.device_id,
            CoreLimits(
                max_event_bytes=fields.stream_max_event_bytes,
                max_publish_bytes=max_message_bytes,
            ),
        )
        self.dropped_sends = 0  # replies or events dropped on a full send queue
        self._next_tick = self._next_expire = time.monotonic()
        self._stop = threading.Event()  # stop() from any thread, even before run() starts
        self._thread: threading.Thread | None = None
        sock = self.ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a gone peer is an error, not a silent drop
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting client keeps its routing id
        sock.sndhwm = sock.rcvhwm = 100_000
        try:
            security.secure(sock, CLIENTS)  # CURVE server in the clients' domain, or plain
            for endpoint in fields.streams:
                try:
                    security.bind(sock, endpoint)
                except zmq.ZMQError as exc:  # a port in use, an ipc folder missing
                    raise UnusableSetting("streams", endpoint, f"cannot bind: {exc}") from None
        except BaseException:
            sock.close(linger=0)
            self.store.close()
            raise
        self.sock = sock

    # ------------------------------------------------------------- loop
    def stop(self) -> None:
        self._stop.set()

    def start_thread(self) -> threading.Thread:
        """Serve in a daemon thread (the forwarder's way); ``stop()`` then ``join()``."""
        self._thread = threading.Thread(target=self.run, name="zmqflow-streams", daemon=True)
        self._thread.start()
        return self._thread

    def run(self) -> None:
        log.info(
            "streams device %s: %s, store %s, streams %s",
            self.device_id,
            ",".join(self.fields.streams),
            self.fields.streams_store,
            ", ".join(f"{s.name}={s.prefix}*" for s in self.store.streams.values()),
        )
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                timeout_ms = max(0, int((self._next_tick - time.monotonic()) * 1000) + 1)
                ready = dict(poller.poll(timeout_ms))
                self.step(time.monotonic(), self.sock in ready)
        finally:
            self.close()

    def step(self, now: float, readable: bool) -> None:
        """One loop turn: read (when the socket is readable), tick, commit, deliver,
        send. For a host loop that polls ``sock`` itself (the forwarder's, say)
        instead of running ``run()`` in a thread: call it each turn, and wake at
        least every ``tick_s``."""
        core, store = self.core, self.store
        if readable:
            self._drain(now)
        if now >= self._next_tick:  # redelivery deadlines are kept to tick_s
            core.tick(now)
            self._next_tick = now + self.tick_s
        if now >= self._next_expire:
            for name, dropped in core.expire().items():
                log.info("stream %s: retention dropped %d events", name, dropped)
            self._next_expire = now + _EXPIRE_EVERY_S
        for name, dropped in store.commit().items():
            log.info("stream %s: retention dropped %d events", name, dropped)
        core.deliver(now)
        self._flush(now)

    def _drain(self, now: float) -> None:
        on_message = self.core.on_message
        for _ in range(_DRAIN_LIMIT):
            try:
                frames = recv_frames(self.sock)
            except zmq.Again:
                return
            on_message(frames[0], frames[1:], now)

    def _flush(self, now: float) -> None:
        for peer, frames in self.core.take():
            try:
                send_frames(self.sock, [peer, *frames])
            except zmq.Again:
                self.dropped_sends += 1
            except zmq.ZMQError as exc:  # EHOSTUNREACH: the peer is gone
                log.debug("streams: send to %s failed: %s", peer.hex(), exc)
                self.core.unreachable(peer, now)

    @property
    def next_wake(self) -> float:
        """When a host loop must call ``step`` next, readable or not (monotonic)."""
        return self._next_tick

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread of ``start_thread()`` to end (after ``stop()``)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        if self.sock.closed:
            return
        self.sock.close(linger=0)
        self.store.close()


def standalone(settings: StreamDeviceSettings, ctx: zmq.Context | None = None) -> StreamDevice:
    """The device on its own, secured by the forwarder's policy from these settings.

    The policy is the forwarder's (``ForwarderSecurity.from_settings``): CURVE
    with the clients' allow-list when a secret key is given, else plain, and
    then only on loopback and ipc unless ``insecure``.
    """
    from zmqflow.settings import ForwarderSettings

    ctx = ctx or zmq.Context.instance()
    as_forwarder = ForwarderSettings(
        frontend=settings.streams,
        backend=[],
        events_in=[],
        events_out=[],
        curve_secret=settings.curve_secret,
        allow_clients=settings.allow_clients,
        # the device has no workers' side; the policy wants a folder for it
        allow_workers=settings.allow_clients,
        insecure=settings.insecure,
    )
    security = ForwarderSecurity.from_settings(as_forwarder, ctx)
    security.start()  # the ZAP handler before any CURVE socket binds
    try:
        device = StreamDevice(
            settings,
            env=settings.env,
            security=security,
            ctx=ctx,
            max_message_bytes=settings.max_message_bytes,
        )
    except BaseException:
        security.stop()
        raise
    security.watch({"streams": device.sock})
    return device
