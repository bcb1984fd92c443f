"""The asyncio client: the blocking client's contract, awaitable.

Contract: as ``zmqflow.client.blocking.Client``; ``as_completed`` is an async
iterator. Reconnection uses tenacity's AsyncRetrying with the same backoff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import zmq
import zmq.asyncio
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from zmqflow import protocol as p
from zmqflow.client.blocking import ForwarderUnreachable
from zmqflow.client.session import ClientSession, Refused, TaskResult

log = logging.getLogger("zmqflow.client")


class AsyncClient:
    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5555",
        *,
        timeout: float = 60.0,
        heartbeat_interval: float = 1.0,
        heartbeat_liveness: int = 3,
        ctx: zmq.asyncio.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.interval = heartbeat_interval
        self.deadline_s = heartbeat_interval * heartbeat_liveness
        self.ctx = ctx or zmq.asyncio.Context.instance()
        self.session = ClientSession()
        self.reconnects = 0
        self._sock = self._new_socket()
        self._last_heard = time.monotonic()
        self._last_sent = 0.0

    def _new_socket(self) -> zmq.asyncio.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.routing_id = self.session.routing_id
        sock.sndhwm = sock.rcvhwm = 0
        sock.setsockopt(zmq.MAXMSGSIZE, p.MAX_MESSAGE_BYTES)
        sock.connect(self.endpoint)
        return sock

    async def _send(self, frames: list[bytes]) -> None:
        await self._sock.send_multipart(frames)
        self._last_sent = time.monotonic()

    async def _pump(self, until: float) -> None:
        now = time.monotonic()
        wait = max(0.0, min(until, self._last_sent + self.interval) - now)
        if await self._sock.poll(int(wait * 1000)):
            while True:
                try:
                    frames = await self._sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self.session.on_message(frames)
            self._last_heard = time.monotonic()
        now = time.monotonic()
        if now - self._last_sent >= self.interval:
            await self._send(p.encode(p.Heartbeat()))
        if now - self._last_heard > self.deadline_s:
            await self._reconnect(until)
        elif self.session.outstanding and now - self.session.last_progress > 2 * self.deadline_s:
            for frames in self.session.resync_frames():
                await self._send(frames)

    async def _reconnect(self, until: float) -> None:
        log.warning("forwarder silent for %.1fs: reconnecting", time.monotonic() - self._last_heard)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(ForwarderUnreachable),
            wait=wait_exponential(multiplier=0.1, min=0.1, max=5),
            stop=stop_after_delay(max(0.0, until - time.monotonic())),
            reraise=True,
        ):
            with attempt:
                self._sock.close(linger=0)
                self._sock = self._new_socket()
                await self._send(p.encode(p.Heartbeat()))
                if not await self._sock.poll(int(self.deadline_s * 1000)):
                    raise ForwarderUnreachable(f"no answer from {self.endpoint}")
        self.reconnects += 1
        self._last_heard = time.monotonic()
        for frames in self.session.resync_frames():
            await self._send(frames)

    async def _wait(self, done: Any, what: str, timeout: float | None = None) -> None:
        until = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not done():
            if time.monotonic() >= until:
                raise ForwarderUnreachable(f"no {what} from {self.endpoint} in time")
            await self._pump(until)

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
        tasks = ClientSession.new_tasks(service, payloads, keys, headers, retries)
        for frames in self.session.submit_frames(tasks):
            await self._send(frames)
        ids = [t.id for t in tasks]
        if wait_accepted:
            await self._wait(lambda: all(self.session.is_accepted(i) for i in ids), "acceptance")
        return ids

    async def submit(
        self,
        service: str,
        payload: bytes = b"",
        *,
        key: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        task_id = (await self.submit_many(service, [payload], keys=[key], headers=headers))[0]
        for result in self.session.ready:
            if result.task_id == task_id and result.refused:
                self.session.ready.remove(result)
                raise Refused(result.code or "", result.error or "", [task_id])
        return task_id

    async def as_completed(self, timeout: float | None = None) -> AsyncIterator[TaskResult]:
        until = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            while self.session.ready:
                yield self.session.ready.popleft()
            if not self.session.outstanding:
                return
            if time.monotonic() >= until:
                raise TimeoutError(f"{self.session.outstanding} tasks still unanswered")
            await self._pump(until)

    async def result(self, task_id: str, timeout: float | None = None) -> TaskResult:
        until = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for result in self.session.ready:
                if result.task_id == task_id:
                    self.session.ready.remove(result)
                    return result
            if task_id not in self.session.pending:
                raise KeyError(f"task {task_id!r} is not outstanding in this client")
            if time.monotonic() >= until:
                raise TimeoutError(f"no answer for {task_id} yet")
            await self._pump(until)

    async def map(
        self, service: str, payloads: Iterable[bytes], timeout: float | None = None
    ) -> list[TaskResult]:
        ids = await self.submit_many(service, payloads, wait_accepted=False)
        by_id = {r.task_id: r async for r in self.as_completed(timeout)}
        return [by_id[i] for i in ids]

    async def collect(self, ids: Iterable[str]) -> None:
        await self._send(self.session.collect_frames(ids))

    async def status(self, timeout: float = 3.0) -> dict[str, Any]:
        self.session.status = None
        await self._send(p.encode(p.StatusRequest()))
        await self._wait(lambda: self.session.status is not None, "status", timeout)
        assert self.session.status is not None
        return self.session.status

    def close(self) -> None:
        self._sock.close(linger=0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
