"""Handshakes and disconnects on the forwarder's sockets, from libzmq's socket monitor.

Contract: ``HandshakeMonitor(ctx, sockets).start()`` attaches a monitor to
each bound socket (``name -> socket``; called from the thread that owns the
sockets, before their loop runs) and logs in its own thread: accepted
connections, handshakes that succeeded and disconnects at DEBUG; a
handshake refused by ZAP at DEBUG too (the ZAP handler has logged it with
the key) and one that failed with no detail (mostly a peer that hung up)
at DEBUG; any other failed handshake (a plain peer on a CURVE socket, a
wrong server key, a broken greeting) at WARNING, at most once a minute per
socket and reason, with the count since. Monitor events come per
connection, never per message: the hot path pays nothing. ``stop()`` ends
the thread and detaches the monitors (before the sockets close).
"""

from __future__ import annotations

import contextlib
import logging
import struct
import threading
import time

import zmq

from zmqflow.repeats import Repeats, since

log = logging.getLogger("zmqflow.security")

_EVENTS = (
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
_PROTOCOL_ERRORS = {
    getattr(zmq, name): name.removeprefix("PROTOCOL_ERROR_").lower()
    for name in dir(zmq)
    if name.startswith("PROTOCOL_ERROR_")
}
_HINTS = {
    zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: "a plain (non-CURVE) peer",
    zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: "a peer with the wrong server public key?",
}


class HandshakeMonitor:
    def __init__(self, ctx: zmq.Context, sockets: dict[str, zmq.Socket]) -> None:
        self.ctx = ctx
        self.sockets = sockets
        self.failed = 0  # handshakes failed for reasons other than ZAP
        self._pairs: dict[zmq.Socket, str] = {}
        self._stop = f"inproc://zmqflow-monitor-stop-{id(self)}"
        self._wake: zmq.Socket | None = None
        self._thread: threading.Thread | None = None
        self._repeats = Repeats()  # one warning per socket and reason a minute

    def start(self) -> None:
        for name, sock in self.sockets.items():
            self._pairs[sock.get_monitor_socket(_EVENTS)] = name
        self._wake = self.ctx.socket(zmq.PAIR)
        self._wake.bind(self._stop)
        wake_end = self.ctx.socket(zmq.PAIR)
        wake_end.connect(self._stop)
        self._thread = threading.Thread(
            target=self._run, args=(wake_end,), name="zmqflow-monitor", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None or self._wake is None:
            return
        self._wake.send(b"")
        self._thread.join(5)
        self._wake.close(linger=0)
        for sock in self.sockets.values():
            with contextlib.suppress(zmq.ZMQError):  # closed already
                sock.disable_monitor()
        self._thread = None

    def _run(self, wake: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(wake, zmq.POLLIN)
        for pair in self._pairs:
            poller.register(pair, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if wake in ready:
                    return
                for pair, name in self._pairs.items():
                    while pair in ready:
                        try:
                            frames = pair.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._event(name, frames)
        finally:
            wake.close(linger=0)
            for pair in self._pairs:
                pair.close(linger=0)

    def _event(self, name: str, frames: list[bytes]) -> None:
        if len(frames) != 2 or len(frames[0]) != 6:
            return
        event, value = struct.unpack("=Hi", frames[0])
        endpoint = frames[1].decode("utf-8", "replace")
        if event == zmq.EVENT_ACCEPTED:
            log.debug("%s: connection accepted on %s", name, endpoint)
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            log.debug("%s: handshake succeeded on %s", name, endpoint)
        elif event == zmq.EVENT_DISCONNECTED:
            log.debug("%s: peer disconnected from %s", name, endpoint)
        elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            log.debug("%s: handshake refused by ZAP on %s (status %d)", name, endpoint, value)
        elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:  # mostly a peer that hung up
            self.failed += 1
            log.debug("%s: handshake failed on %s: %s", name, endpoint, zmq.strerror(value))
        else:
            self.failed += 1
            reason = _PROTOCOL_ERRORS.get(value, f"error {value}")
            hint = _HINTS.get(value, "")
            self._warn(name, endpoint, reason + (f": {hint}" if hint else ""))

    def _warn(self, name: str, endpoint: str, reason: str) -> None:
        quiet = self._repeats.due((name, reason), time.monotonic())
        if quiet is None:
            return
        log.warning("%s: handshake failed on %s: %s%s", name, endpoint, reason, since(quiet))
