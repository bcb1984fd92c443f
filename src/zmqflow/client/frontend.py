"""What both client front ends share: the core, the keys, the DEALER they open.

Contract: ``FrontEnd.__init__`` resolves the CURVE keys (``security.peer``)
and makes the ``ClientCore``; ``dealer(ctx)`` opens the DEALER every new
socket is (the session's routing id, no HWM: a client holds what it
submitted anyway, the frame limit, the keys) with a ``HandshakeWatch`` on
it until it first hears the forwarder; ``fallback_refusal()`` is the
refusal to report when a send finds no pipe before the monitor said why.
``blocking.Client`` and ``aio.AsyncClient`` add only their I/O.
"""

from __future__ import annotations

import os
from typing import Any

import zmq

from zmqflow import protocol as p
from zmqflow.client.core import ClientCore
from zmqflow.client.session import ClientSession
from zmqflow.security.handshake import HandshakeRefusal, HandshakeWatch
from zmqflow.security.peer import CurveKeys, resolve


class FrontEnd:
    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float,
        heartbeat_interval: float,
        heartbeat_liveness: int,
        curve: CurveKeys | None,
        curve_secret: str | os.PathLike[str] | None,
        curve_server: str | os.PathLike[str] | None,
    ) -> None:
        self.curve = resolve(curve, curve_secret, curve_server)
        self.core = ClientCore(
            endpoint,
            timeout=timeout,
            heartbeat_interval=heartbeat_interval,
            heartbeat_liveness=heartbeat_liveness,
        )
        self.endpoint = endpoint
        self.timeout = timeout
        self._watch: HandshakeWatch | None = None

    @property
    def session(self) -> ClientSession:
        return self.core.session

    @property
    def reconnects(self) -> int:
        return self.core.reconnects

    def dealer(self, ctx: Any) -> Any:
        """A new DEALER for the forwarder (not yet connected), watched for a refusal."""
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.routing_id = self.core.session.routing_id
        sock.sndhwm = sock.rcvhwm = 0  # a client holds what it submitted anyway
        sock.setsockopt(zmq.MAXMSGSIZE, p.MAX_MESSAGE_BYTES)
        if self.curve is not None:
            self.curve.apply(sock)
        self._watch = HandshakeWatch(sock, self.curve)
        return sock

    def fallback_refusal(self) -> HandshakeRefusal:
        """A refusal not read yet from the monitor: the same fact, fewer details."""
        key = None if self.curve is None else self.curve.public_text
        return HandshakeRefusal(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, 0, self.endpoint, key)

    def _close_watch(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
