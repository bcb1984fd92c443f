"""The blocking client.

Contract: ``submit`` returns once the forwarder has journaled the task
(ACCEPTED) and raises ``Refused`` when it will not take it; ``as_completed``
yields each task's one answer as it arrives; ``map`` submits and returns the
answers in order. A forwarder that falls silent (killed, restarted,
unreachable) is reconnected with tenacity's backoff, and outstanding work is
collected by task id: finished work is never submitted again.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import zmq
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from zmqflow import protocol as p
from zmqflow.client.ids import new_id
from zmqflow.client.session import ClientSession, Refused, TaskResult
from zmqflow.transport import recv_frames

log = logging.getLogger("zmqflow.client")


class ForwarderUnreachable(TimeoutError):
    """The forwarder did not answer within the time given."""


class Client:
    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5555",
        *,
        timeout: float = 60.0,
        heartbeat_interval: float = 1.0,
        heartbeat_liveness: int = 3,
        ctx: zmq.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.interval = heartbeat_interval
        self.deadline_s = heartbeat_interval * heartbeat_liveness
        self.ctx = ctx or zmq.Context.instance()
        self.session = ClientSession()
        self.reconnects = 0
        self._sock = self._new_socket()
        self._last_heard = time.monotonic()
        self._last_sent = 0.0

    # ---------------------------------------------------------- plumbing
    def _new_socket(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.routing_id = self.session.routing_id
        sock.sndhwm = sock.rcvhwm = 0  # a client holds what it submitted anyway
        sock.setsockopt(zmq.MAXMSGSIZE, p.MAX_MESSAGE_BYTES)
        sock.connect(self.endpoint)
        return sock

    def _send(self, frames: list[bytes]) -> None:
        self._sock.send_multipart(frames)
        self._last_sent = time.monotonic()

    def _pump(self, until: float) -> None:
        """Read what arrives until ``until`` (or something arrives); keep the line alive."""
        now = time.monotonic()
        wait = max(0.0, min(until, self._last_sent + self.interval) - now)
        if self._sock.poll(int(wait * 1000)):
            while True:
                try:
                    frames = recv_frames(self._sock)
                except zmq.Again:
                    break
                self.session.on_message(frames)
            self._last_heard = time.monotonic()
        now = time.monotonic()
        if now - self._last_sent >= self.interval:
            self._send(p.encode(p.Heartbeat()))
        if now - self._last_heard > self.deadline_s:
            self._reconnect(until)
        elif self.session.outstanding and now - self.session.last_progress > 2 * self.deadline_s:
            for frames in self.session.resync_frames():
                self._send(frames)

    def _reconnect(self, until: float) -> None:
        log.warning("forwarder silent for %.1fs: reconnecting", time.monotonic() - self._last_heard)

        def attempt() -> None:
            self._sock.close(linger=0)
            self._sock = self._new_socket()
            self._send(p.encode(p.Heartbeat()))
            if not self._sock.poll(int(self.deadline_s * 1000)):
                raise ForwarderUnreachable(f"no answer from {self.endpoint}")

        Retrying(
            retry=retry_if_exception_type(ForwarderUnreachable),
            wait=wait_exponential(multiplier=0.1, min=0.1, max=5),
            stop=stop_after_delay(max(0.0, until - time.monotonic())),
            reraise=True,
        )(attempt)
        self.reconnects += 1
        self._last_heard = time.monotonic()
        for frames in self.session.resync_frames():
            self._send(frames)
        log.info("reconnected; %d tasks outstanding", self.session.outstanding)

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
        """Submit tasks in batches; returns their ids once all are ACCEPTED or refused."""
        tasks = ClientSession.new_tasks(service, payloads, keys, headers, retries)
        for frames in self.session.submit_frames(tasks):
            self._send(frames)
        ids = [t.id for t in tasks]
        if wait_accepted:
            self._wait(lambda: all(self.session.is_accepted(i) for i in ids), "acceptance")
        return ids

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
        task_id = self.submit_many(
            service, [payload], keys=[key], headers=headers, retries=retries
        )[0]
        for result in self.session.ready:
            if result.task_id == task_id and result.refused:
                self.session.ready.remove(result)
                raise Refused(result.code or "", result.error or "", [task_id])
        return task_id

    def collect(self, ids: Iterable[str]) -> None:
        """Follow tasks submitted by another client (or an earlier run)."""
        self._send(self.session.collect_frames(ids))

    def as_completed(self, timeout: float | None = None) -> Iterator[TaskResult]:
        """Yield answers as they arrive until none is outstanding.

        Raises TimeoutError if answers are still missing after ``timeout``.
        """
        until = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            while self.session.ready:
                yield self.session.ready.popleft()
            if not self.session.outstanding:
                return
            if time.monotonic() >= until:
                raise TimeoutError(f"{self.session.outstanding} tasks still unanswered")
            self._pump(until)

    def stream(
        self,
        service: str,
        payloads: Iterable[bytes],
        *,
        window: int = 1000,
        timeout: float | None = None,
    ) -> Iterator[TaskResult]:
        """Submit lazily, keeping at most ``window`` tasks outstanding; yield answers.

        Memory stays bounded however many payloads the iterable holds.
        """
        until = time.monotonic() + (self.timeout if timeout is None else timeout)
        source = iter(payloads)
        exhausted = False
        while True:
            room = window - self.session.outstanding
            # top up in batches of a quarter window: one SUBMIT per task costs the forwarder
            if room >= max(1, window // 4) and not exhausted:
                batch = [
                    p.Task(new_id(), service, bytes(payload), fresh=True)
                    for payload in itertools.islice(source, room)
                ]
                exhausted = len(batch) < room
                for frames in self.session.submit_frames(batch):
                    self._send(frames)
            while self.session.ready:
                yield self.session.ready.popleft()
            if exhausted and not self.session.outstanding:
                return
            if time.monotonic() >= until:
                raise TimeoutError(f"{self.session.outstanding} tasks still unanswered")
            self._pump(until)

    def result(self, task_id: str, timeout: float | None = None) -> TaskResult:
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
            self._pump(until)

    def map(
        self, service: str, payloads: Iterable[bytes], timeout: float | None = None
    ) -> list[TaskResult]:
        """Run ``service`` on each payload; the answers in payload order."""
        ids = self.submit_many(service, payloads, wait_accepted=False)
        by_id = {r.task_id: r for r in self.as_completed(timeout)}
        return [by_id[i] for i in ids]

    def status(self, timeout: float = 3.0) -> dict[str, Any]:
        """The forwarder's view: workers, queues, in-flight, dead letters."""
        self.session.status = None
        self._send(p.encode(p.StatusRequest()))
        self._wait(lambda: self.session.status is not None, "status", timeout, reconnect=False)
        assert self.session.status is not None
        return self.session.status

    def retry_dead_letters(self, ids: Iterable[str] = (), timeout: float = 10.0) -> list[str]:
        """Queue dead letters again (all when ``ids`` is empty); their results come here."""
        ids = list(ids)
        self.session.accepted_ids.clear()
        self._send(p.encode(p.Retry(ids)))
        self._wait(lambda: bool(self.session.accepted_ids), "retry", timeout, reconnect=False)
        moved = self.session.accepted_ids.popleft()
        self.session.reopen(moved)  # the forwarder already routes their answers here
        return moved

    def _wait(
        self, done: Any, what: str, timeout: float | None = None, reconnect: bool = True
    ) -> None:
        until = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not done():
            if time.monotonic() >= until:
                raise ForwarderUnreachable(f"no {what} from {self.endpoint} in time")
            if reconnect:
                self._pump(until)
            elif self._sock.poll(int(max(0.0, until - time.monotonic()) * 1000)):
                self.session.on_message(self._sock.recv_multipart())

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
