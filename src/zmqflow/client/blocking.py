"""The blocking client: ``client.core``'s operations served with blocking calls.

Contract: ``submit`` returns once the forwarder has journaled the task
(ACCEPTED) and raises ``Refused`` when it will not take it; ``as_completed``
and ``stream`` yield each task's one answer as it arrives; ``map`` submits
and returns the answers in order. A forwarder that falls silent (killed,
restarted, unreachable) is reconnected with tenacity's backoff, and
outstanding work is collected by task id: finished work is never submitted
again. The logic is ``ClientCore``'s; this module only does the socket I/O
it asks for (see core.py for the requests).

CURVE: ``curve`` (a ``security.peer.CurveKeys``) or ``curve_secret`` and
``curve_server`` (key files), else the files ZMQFLOW_CURVE_SECRET and
ZMQFLOW_CURVE_SERVER name (``security.peer.resolve``); bad keys raise at
construction (``KeyFileError`` naming the file, or ``ValueError``). Each new
socket is watched for a refused handshake until it first hears the
forwarder (``security.handshake``); RECV reports a refusal to the core.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import zmq

from zmqflow import protocol as p
from zmqflow.client.core import (
    DELIVER,
    RECV,
    REOPEN,
    SEND,
    SLEEP,
    ForwarderUnreachable,
    Op,
    Steps,
)
from zmqflow.client.frontend import FrontEnd
from zmqflow.client.session import TaskResult
from zmqflow.security.handshake import HandshakeRefusal
from zmqflow.security.peer import CurveKeys
from zmqflow.transport import recv_frames, send_frames

T = TypeVar("T")

__all__ = ["Client", "ForwarderUnreachable"]


class Client(FrontEnd):
    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5555",
        *,
        timeout: float = 60.0,
        heartbeat_interval: float = 1.0,
        heartbeat_liveness: int = 3,
        ctx: zmq.Context | None = None,
        curve: CurveKeys | None = None,
        curve_secret: str | os.PathLike[str] | None = None,
        curve_server: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(
            endpoint,
            timeout=timeout,
            heartbeat_interval=heartbeat_interval,
            heartbeat_liveness=heartbeat_liveness,
            curve=curve,
            curve_secret=curve_secret,
            curve_server=curve_server,
        )
        self.ctx = ctx or zmq.Context.instance()
        self._poller = zmq.Poller()
        self._sock = self._new_socket()

    # ---------------------------------------------------------- plumbing
    def _new_socket(self) -> zmq.Socket:
        sock = self.dealer(self.ctx)
        assert self._watch is not None
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(self._watch.socket, zmq.POLLIN)
        sock.connect(self.endpoint)
        return sock

    def _refusal(self) -> HandshakeRefusal:
        refusal = self._watch.read() if self._watch is not None else None
        return refusal if refusal is not None else self.fallback_refusal()

    def _io(self, op: int, arg: Any) -> Any:
        if op == RECV:
            sock = self._sock
            if self._watch is None:
                if not sock.poll(int(arg * 1000)):
                    return False
            else:  # not heard yet on this socket: a refused handshake is the other answer
                ready = dict(self._poller.poll(int(arg * 1000)))
                if self._watch.socket in ready:
                    refusal = self._watch.read()
                    if refusal is not None:
                        return refusal
                if sock not in ready:
                    return False
                self._close_watch()  # heard: the hot path polls one socket
            on_message = self.core.session.on_message
            while True:
                try:
                    frames = recv_frames(sock)
                except zmq.Again:
                    return True
                on_message(frames)
        if op == SEND:
            sock = self._sock
            try:
                for frames in arg:
                    send_frames(sock, frames)
            except zmq.Again:  # no pipe: the handshake was refused (HWM is unlimited)
                return self._refusal()
        elif op == REOPEN:
            self._close_watch()
            self._sock.close(linger=0)
            self._sock = self._new_socket()
        elif op == SLEEP:
            time.sleep(arg)
        return None

    def _run(self, steps: Steps[T]) -> T:
        io = self._io
        reply: Any = None
        try:
            while True:
                op: Op = steps.send(reply)
                reply = io(*op)
        except StopIteration as done:
            return done.value

    def _iterate(self, steps: Steps[None]) -> Iterator[TaskResult]:
        io, ready = self._io, self.core.session.ready
        reply: Any = None
        while True:
            try:
                op: Op = steps.send(reply)
            except StopIteration:
                return
            if op[0] == DELIVER:
                while ready:
                    yield ready.popleft()
                reply = None
            else:
                reply = io(*op)

    # --------------------------------------------------------------- API
    def submit_many(
        self,
        service: str,
        payloads: Iterable[bytes],
        *,
        keys: Iterable[str | None] | None = None,
        headers: Mapping[str, Any] | None = None,
        retries: int | None = None,
        wait_accepted: bool = True,
    ) -> list[str]:
        """Submit tasks in batches; returns their ids once all are ACCEPTED or refused.

        Refusals wait in ``as_completed`` as results whose ``refused`` is true.
        """
        return self._run(
            self.core.submit_many(service, payloads, keys, headers, retries, wait_accepted)
        )

    def submit_tasks(self, tasks: Iterable[p.Task], *, wait_accepted: bool = True) -> list[str]:
        """Submit tasks whose ids the caller chose (``ClientSession.new_id()``); as submit_many."""
        return self._run(self.core.submit_tasks(list(tasks), wait_accepted))

    def submit(
        self,
        service: str,
        payload: bytes = b"",
        *,
        key: str | None = None,
        headers: Mapping[str, Any] | None = None,
        retries: int | None = None,
    ) -> str:
        """Submit one task; its id once ACCEPTED. Raises Refused."""
        return self._run(self.core.submit(service, payload, key, headers, retries))

    def collect(self, ids: Iterable[str]) -> None:
        """Follow tasks submitted by another client (or an earlier run)."""
        self._run(self.core.collect(ids))

    def as_completed(self, timeout: float | None = None) -> Iterator[TaskResult]:
        """Yield answers as they arrive until none is outstanding.

        Raises TimeoutError if answers are still missing after ``timeout``.
        """
        return self._iterate(self.core.as_completed(timeout))

    def stream(
        self,
        service: str,
        payloads: Iterable[bytes],
        *,
        window: int = 1000,
        timeout: float | None = None,
        headers: Mapping[str, Any] | None = None,
        retries: int | None = None,
    ) -> Iterator[TaskResult]:
        """Submit lazily, keeping at most ``window`` tasks outstanding; yield answers.

        Memory stays bounded however many payloads the iterable holds.
        """
        return self._iterate(self.core.stream(service, payloads, window, timeout, headers, retries))

    def result(self, task_id: str, timeout: float | None = None) -> TaskResult:
        """The answer of one task this client submitted (or collects)."""
        return self._run(self.core.result(task_id, timeout))

    def map(
        self,
        service: str,
        payloads: Iterable[bytes],
        timeout: float | None = None,
        *,
        headers: Mapping[str, Any] | None = None,
        retries: int | None = None,
    ) -> list[TaskResult]:
        """Run ``service`` on each payload; the answers in payload order."""
        return self._run(self.core.map(service, payloads, timeout, headers, retries))

    def status(self, timeout: float = 3.0) -> dict[str, Any]:
        """The forwarder's view: workers, queues, in-flight, dead letters."""
        return self._run(self.core.status(timeout))

    def retry_dead_letters(self, ids: Iterable[str] = (), timeout: float = 10.0) -> list[str]:
        """Queue dead letters again (all when ``ids`` is empty); their results come here."""
        return self._run(self.core.retry_dead_letters(ids, timeout))

    def close(self) -> None:
        self._close_watch()
        self._sock.close(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
