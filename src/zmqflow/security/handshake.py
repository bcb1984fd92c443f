"""Refused handshakes, seen from the connecting side through the socket monitor.

Contract: a peer the forwarder refuses (ZAP says no, a plain peer at a CURVE
forwarder, a wrong forwarder key) hears nothing at all, and libzmq does not
try that socket again once the forwarder allows it: the only sign is an
event on the socket monitor. ``HandshakeWatch(sock, keys)`` watches a socket
from its creation, before it connects, for HANDSHAKE_FAILED_AUTH,
HANDSHAKE_FAILED_PROTOCOL and HANDSHAKE_FAILED_NO_DETAIL; ``refusal(frames)``
turns one monitor message into a ``HandshakeRefusal`` whose ``message`` names our
key (Z85, as in its .key file) and the endpoint; ``read()`` takes every
waiting message without blocking (``aread()`` on asyncio sockets). What to
do about a refusal (a new socket after a backoff) is the caller's rule:
``client.core`` for clients, ``worker`` for the Python worker.

The watch costs only while the socket has not yet heard the forwarder:
callers ``close()`` it at the first message, so that the hot path polls one
socket as before. A ``HandshakeRefusal`` is falsy: for code asking "did anything
arrive?" a refusal is "no".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import parse_monitor_message

from zmqflow.security.peer import CurveKeys

REFUSED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
_MECHANISM_MISMATCH = 0x11000002  # ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
_watches = itertools.count()


@dataclass(frozen=True, slots=True)
class HandshakeRefusal:
    """One refused handshake: what happened, where, with which of our keys."""

    event: int
    value: int
    endpoint: str
    key: str | None  # our public key (Z85), None for a plain socket

    def __bool__(self) -> bool:
        return False

    @property
    def message(self) -> str:
        if self.event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return (
                f"forwarder refused our key {self.key} at {self.endpoint} "
                f"(ZAP status {self.value}): its allow-list does not hold this public key"
            )
        if self.key is None:  # a mechanism mismatch, or the forwarder hung up first
            return (
                f"forwarder at {self.endpoint} refused a plain connection: it wants CURVE "
                f"(give --curve-secret and --curve-server)"
            )
        if self.event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and self.value == _MECHANISM_MISMATCH:
            return (
                f"forwarder at {self.endpoint} refused our CURVE key {self.key}: "
                f"it is not a CURVE forwarder (plain mode)"
            )
        if self.event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            return (
                f"handshake with the forwarder at {self.endpoint} failed "
                f"(protocol error 0x{self.value:x}), our key {self.key}"
            )
        return (
            f"handshake with the forwarder at {self.endpoint} failed with our key {self.key}: "
            f"is the forwarder's public key (--curve-server) right?"
        )


class HandshakeWatch:
    """The monitor of one socket, for refused handshakes only."""

    def __init__(self, sock: zmq.Socket, keys: CurveKeys | None) -> None:
        self._sock = sock
        self.key = None if keys is None else keys.public_text
        # inproc names must be unique per context: the fd a closed socket had is reused
        self.socket: zmq.Socket = sock.get_monitor_socket(
            REFUSED, f"inproc://zmqflow-handshake-{id(sock):x}-{next(_watches)}"
        )

    def refusal(self, frames: list[bytes]) -> HandshakeRefusal | None:
        try:
            event = parse_monitor_message(frames)
        except RuntimeError:
            return None
        return HandshakeRefusal(
            int(event["event"]),
            int(event["value"]),
            event["endpoint"].decode(errors="replace"),
            self.key,
        )

    def read(self) -> HandshakeRefusal | None:
        """The last refusal waiting on a sync monitor socket, without blocking."""
        found = None
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return found
            refusal = self.refusal(frames)
            if refusal is not None:  # a HandshakeRefusal is falsy: no `or` here
                found = refusal

    async def aread(self) -> HandshakeRefusal | None:
        """``read`` for a watch made on an asyncio socket (its monitor is one too)."""
        found = None
        while True:
            try:
                frames = await self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return found
            refusal = self.refusal(frames)
            if refusal is not None:
                found = refusal

    def close(self) -> None:
        """Stop monitoring (the socket itself stays open)."""
        if not self._sock.closed:
            self._sock.disable_monitor()
        self.socket.close(linger=0)


Refusal = HandshakeRefusal  # its first name, kept for importers
