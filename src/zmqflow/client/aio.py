"""The asyncio client: ``client.core``'s operations served with awaits.

Contract: every method of ``zmqflow.client.blocking.Client``, with the same
arguments, results and errors, as a coroutine; ``as_completed`` and
``stream`` are async iterators. The logic is ``ClientCore``'s, the same the
blocking client runs (reconnection with tenacity's backoff included); this
module only does the socket I/O it asks for (see core.py for the requests).
CURVE keys and the watch for a refused handshake: as ``Client``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, TypeVar

import zmq
import zmq.asyncio

from zmqflow import protocol as p
from zmqflow.client.core import DELIVER, RECV, REOPEN, SEND, SLEEP, Op, Steps
from zmqflow.client.frontend import FrontEnd
from zmqflow.client.session import TaskResult
from zmqflow.security.peer import CurveKeys

T = TypeVar("T")


class AsyncClient(FrontEnd):
    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5555",
        *,
        timeout: float = 60.0,
        heartbeat_interval: float = 1.0,
        heartbeat_liveness: int = 3,
        ctx: zmq.asyncio.Context | None = None,
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
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self._poller = zmq.asyncio.Poller()
        self._sock = self._new_socket()

    # ---------------------------------------------------------- plumbing
    def _new_socket(self) -> zmq.asyncio.Socket:
        sock = self.dealer(self.ctx)
        assert self._watch is not None
        self._poller = zmq.asyncio.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(self._watch.socket, zmq.POLLIN)
        sock.connect(self.endpoint)
        return sock

    async def _io(self, op: int, arg: Any) -> Any:
        if op == RECV:
            sock = self._sock
            watch = self._watch
            if watch is None:
                if not await sock.poll(int(arg * 1000)):
                    return False
            else:  # not heard yet on this socket: a refused handshake is the other answer
                ready = dict(await self._poller.poll(int(arg * 1000)))
                if watch.socket in ready:
                    refusal = await watch.aread()
                    if refusal is not None:
                        return refusal
                if sock not in ready:
                    return False
                self._close_watch()  # heard: the hot path polls one socket
            on_message = self.core.session.on_message
            while True:
                try:
                    frames = await sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    return True
                on_message(frames)
        if op == SEND:
            sock = self._sock
            try:
                for frames in arg:
                    await sock.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:  # no pipe: the handshake was refused (HWM is unlimited)
                refusal = await self._watch.aread() if self._watch is not None else None
                return refusal if refusal is not None else self.fallback_refusal()
        elif op == REOPEN:
            self._close_watch()
            self._sock.close(linger=0)
            self._sock = self._new_socket()
        elif op == SLEEP:
            await asyncio.sleep(arg)
        return None

    async def _run(self, steps: Steps[T]) -> T:
        io = self._io
        reply: Any = None
        try:
            while True:
                op: Op = steps.send(reply)
                reply = await io(*op)
        except StopIteration as done:
            return done.value

    async def _iterate(self, steps: Steps[None]) -> AsyncIterator[TaskResult]:
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
                reply = await io(*op)

    # --------------------------------------------------------------- API
    async def submit_many(
        self,
        service: str,
        payloads: Iterable[bytes],
        *,
        keys: Iterable[str | None] | None = None,
        headers: Mapping[str, Any] | None = None,
        retries: int | None = None,
        wait_accepted: bool = True,
    ) -> list[str]:
        """Submit tasks in batches; returns their ids once all are ACCEPTED or refused."""
        return await self._run(
            self.core.submit_many(service, payloads, keys, headers, retries, wait_accepted)
        )

    async def submit_tasks(
        self, tasks: Iterable[p.Task], *, wait_accepted: bool = True
    ) -> list[str]:
        """Submit tasks whose ids the caller chose (``ClientSession.new_id()``); as submit_many."""
        return await self._run(self.core.submit_tasks(list(tasks), wait_accepted))

    async def submit(
        self,
        service: str,
        payload: bytes = b"",
        *,
        key: str | None = None,
        headers: Mapping[str, Any] | None = None,
        retries: int | None = None,
    ) -> str:
        """Submit one task; its id once ACCEPTED. Raises Refused."""
        return await self._run(self.core.submit(service, payload, key, headers, retries))

    async def collect(self, ids: Iterable[str]) -> None:
        """Follow tasks submitted by another client (or an earlier run)."""
        await self._run(self.core.collect(ids))

    def as_completed(self, timeout: float | None = None) -> AsyncIterator[TaskResult]:
        """Yield answers as they arrive until none is outstanding (``async for``)."""
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
    ) -> AsyncIterator[TaskResult]:
        """Submit lazily, keeping at most ``window`` tasks outstanding (``async for``)."""
        return self._iterate(self.core.stream(service, payloads, window, timeout, headers, retries))

    async def result(self, task_id: str, timeout: float | None = None) -> TaskResult:
        """The answer of one task this client submitted (or collects)."""
        return await self._run(self.core.result(task_id, timeout))

    async def map(
        self,
        service: str,
        payloads: Iterable[bytes],
        timeout: float | None = None,
        *,
        headers: Mapping[str, Any] | None = None,
        retries: int | None = None,
    ) -> list[TaskResult]:
        """Run ``service`` on each payload; the answers in payload order."""
        return await self._run(self.core.map(service, payloads, timeout, headers, retries))

    async def status(self, timeout: float = 3.0) -> dict[str, Any]:
        """The forwarder's view: workers, queues, in-flight, dead letters."""
        return await self._run(self.core.status(timeout))

    async def retry_dead_letters(self, ids: Iterable[str] = (), timeout: float = 10.0) -> list[str]:
        """Queue dead letters again (all when ``ids`` is empty); their results come here."""
        return await self._run(self.core.retry_dead_letters(ids, timeout))

    def close(self) -> None:
        self._close_watch()
        self._sock.close(linger=0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
