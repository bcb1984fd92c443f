"""The client's logic without sockets: one core under Client and AsyncClient.

Contract: every client operation (submit, submit_many, submit_tasks, map,
as_completed, stream, result, collect, status, retry_dead_letters) is a
generator here. It yields I/O requests and is sent back their outcome;
``blocking.Client`` serves them with blocking calls, ``aio.AsyncClient``
with awaits, so that pumping, heartbeats, reconnection (tenacity's backoff),
resync and result bookkeeping are written once. A generator's return value
is the operation's result; its exceptions are the operation's.

Requests, as ``(op, argument)`` tuples (plain tuples: the pump runs per
message batch on the hot path):

- ``(SEND, [frames, ...])`` -> None: send these messages in order, or a
  HandshakeRefusal when the socket takes none: a DEALER refused at the handshake has
  no pipe left, and a blocking send on it would never return;
- ``(RECV, seconds)`` -> bool or HandshakeRefusal: wait up to ``seconds`` for input,
  hand every message waiting to ``session.on_message``; True when anything
  came; a ``security.handshake.HandshakeRefusal`` (falsy) as soon as the socket's
  monitor says the forwarder refused our handshake;
- ``(REOPEN, None)`` -> None: close the socket, open a new one with the
  session's routing id and CURVE keys, connected to the same endpoint;
- ``(SLEEP, seconds)`` -> None: back off between reconnection attempts;
- ``(DELIVER, None)`` -> None (iterators only): give the caller the results
  in ``session.ready``, oldest first, one at a time. Results the caller did
  not take (it stopped iterating) stay in ``ready``.

A refused handshake is never retried by libzmq: the core answers a HandshakeRefusal
(logged at WARNING, naming our key and the endpoint) with the reconnection
path a silent forwarder gets, new sockets with tenacity's backoff, so a key
allowed later gets in without a restart; one-off questions (status, retry)
raise ``ForwarderRefused`` instead, and the next call starts on a new socket.

The connection rules (heartbeats, backoff, refusals, ``ForwarderRefused``)
are zmqflow.connection's, shared with the worker. The same pattern as
pyzmq's ``zmq.auth``: the logic in one base, thin thread and asyncio
wrappers around it.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any, TypeVar

from tenacity import Retrying, retry_if_exception_type, stop_after_delay

from zmqflow import protocol as p
from zmqflow.client.ids import new_id
from zmqflow.client.session import ClientSession, TaskRefused, TaskResult
from zmqflow.connection import BACKOFF, ForwarderRefused, ForwarderUnreachable
from zmqflow.security.handshake import HandshakeRefusal

log = logging.getLogger("zmqflow.client")

SEND, RECV, REOPEN, SLEEP, DELIVER = range(5)
Op = tuple[int, Any]
T = TypeVar("T")
Steps = Generator[Op, Any, T]

_DELIVER: Op = (DELIVER, None)
_HEARTBEAT = p.encode(p.Heartbeat())
_STATUS_REQUEST = p.encode(p.StatusRequest())


class ClientCore:
    """Protocol session plus the timing rules of a connected client."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 60.0,
        heartbeat_interval: float = 1.0,
        heartbeat_liveness: int = 3,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.interval = heartbeat_interval
        self.deadline_s = heartbeat_interval * heartbeat_liveness
        self.session = ClientSession()
        self.reconnects = 0
        self.last_heard = time.monotonic()
        self.last_sent = 0.0
        self.refused: HandshakeRefusal | None = None  # the current socket was refused: never heard

    def _until(self, timeout: float | None) -> float:
        return time.monotonic() + (self.timeout if timeout is None else timeout)

    # ---------------------------------------------------------- plumbing
    def send(self, messages: list[list[bytes]]) -> Steps[None]:
        if messages:
            if self.refused is not None:
                # a refused socket may have no pipe left, and a send on it would
                # block for ever: a new socket (resync and backoff come with pump)
                yield (REOPEN, None)
                self.refused = None
            refused = yield (SEND, messages)
            if refused is not None:  # lost with the socket; resync sends what matters
                self.refused = refused
                log.warning("%s", refused.message)
                return
            self.last_sent = time.monotonic()

    def recv(self, wait_s: float) -> Steps[bool]:
        heard: bool | HandshakeRefusal = yield (RECV, wait_s)
        if heard is True:
            self.last_heard = time.monotonic()
            return True
        if heard is not False:  # the socket will never be let in: say so, once per socket
            self.refused = heard
            log.warning("%s", heard.message)
        return False

    def pump(self, until: float) -> Steps[None]:
        """Read what arrives until ``until`` (or something arrives); keep the line alive.

        Heartbeat every interval; a forwarder silent for the deadline is
        reconnected; outstanding work without progress for two deadlines is
        resynced (a forwarder that restarted within the deadline looks alive).
        """
        now = time.monotonic()
        if now - self.last_sent > self.deadline_s:
            # we said nothing for a while (an idle client): the forwarder had no
            # reason to speak, so its silence counts from now, not from then
            self.last_heard = now
        wait = max(0.0, min(until, self.last_sent + self.interval) - now)
        yield from self.recv(wait)
        if self.refused is not None:
            yield from self.reconnect(until)
            return
        now = time.monotonic()
        session = self.session
        if now - self.last_sent >= self.interval or session.want_heartbeat:
            session.want_heartbeat = False  # (the reply tells the forwarder's max_batch)
            yield from self.send([_HEARTBEAT])
        if now - self.last_heard > self.deadline_s:
            yield from self.reconnect(until)
        elif session.outstanding and now - session.last_progress > 2 * self.deadline_s:
            yield from self.send(session.resync_frames())

    def reconnect(self, until: float) -> Steps[None]:
        """New sockets with backoff until the forwarder answers; then resync.

        Raises ForwarderUnreachable when ``until`` passes first.
        """
        if self.refused is None:
            log.warning(
                "forwarder silent for %.1fs: reconnecting", time.monotonic() - self.last_heard
            )
        delays: list[float] = []  # tenacity's backoff, slept by the front end
        for attempt in Retrying(
            retry=retry_if_exception_type(ForwarderUnreachable),
            wait=BACKOFF,
            stop=stop_after_delay(max(0.0, until - time.monotonic())),
            sleep=delays.append,
            reraise=True,
        ):
            if delays:
                yield (SLEEP, delays.pop())
            yield (REOPEN, None)
            self.refused = None
            yield from self.send([_HEARTBEAT])
            heard = yield from self.recv(self.deadline_s)
            with attempt:
                if self.refused is not None:
                    raise ForwarderRefused(self.refused.message)
                if not heard:
                    raise ForwarderUnreachable(f"no answer from {self.endpoint}")
        self.reconnects += 1
        yield from self.send(self.session.resync_frames())
        log.info("reconnected; %d tasks outstanding", self.session.outstanding)

    def wait(
        self,
        done: Callable[[], bool],
        what: str,
        timeout: float | None = None,
        reconnect: bool = True,
    ) -> Steps[None]:
        """Pump until ``done()``; ForwarderUnreachable after ``timeout``.

        ``reconnect=False`` only reads (no heartbeats, no reconnection): for
        one-off questions (status, retry) whose caller wants a quick no.
        """
        until = self._until(timeout)
        while not done():
            now = time.monotonic()
            if now >= until:
                raise ForwarderUnreachable(f"no {what} from {self.endpoint} in time")
            if reconnect:
                yield from self.pump(until)
            else:
                yield from self.recv(until - now)
                if self.refused is not None:
                    raise ForwarderRefused(self.refused.message)

    def renew_refused(self, until: float) -> Steps[None]:
        """A refused socket never gets in: before a one-off question, a new one."""
        if self.refused is not None:
            yield from self.reconnect(until)

    # --------------------------------------------------------- operations
    def submit_tasks(self, tasks: list[p.Task], wait_accepted: bool = True) -> Steps[list[str]]:
        """SUBMIT tasks (ids chosen by the caller); their ids once all are ACCEPTED or refused."""
        session = self.session
        yield from self.send(session.submit_frames(tasks))
        ids = [t.id for t in tasks]
        if wait_accepted:
            is_accepted = session.is_accepted
            yield from self.wait(lambda: all(is_accepted(i) for i in ids), "acceptance")
        return ids

    def submit_many(
        self,
        service: str,
        payloads: Iterable[bytes],
        keys: Iterable[str | None] | None = None,
        headers: Mapping[str, Any] | None = None,
        retries: int | None = None,
        wait_accepted: bool = True,
    ) -> Steps[list[str]]:
        tasks = ClientSession.new_tasks(service, payloads, keys, headers, retries)
        return (yield from self.submit_tasks(tasks, wait_accepted))

    def submit(
        self,
        service: str,
        payload: bytes,
        key: str | None,
        headers: Mapping[str, Any] | None,
        retries: int | None,
    ) -> Steps[str]:
        task_id = (yield from self.submit_many(service, [payload], [key], headers, retries))[0]
        ready = self.session.ready
        for result in ready:
            if result.task_id == task_id and result.refused:
                ready.remove(result)
                raise TaskRefused(result.code or "", result.error or "", [task_id])
        return task_id

    def collect(self, ids: Iterable[str]) -> Steps[None]:
        yield from self.send(self.session.collect_frames(ids))

    def as_completed(self, timeout: float | None) -> Steps[None]:
        until = self._until(timeout)
        session = self.session
        while True:
            if session.ready:
                yield _DELIVER
            if not session.outstanding:
                return
            if time.monotonic() >= until:
                raise TimeoutError(f"{session.outstanding} tasks still unanswered")
            yield from self.pump(until)

    def stream(
        self,
        service: str,
        payloads: Iterable[bytes],
        window: int,
        timeout: float | None,
        headers: Mapping[str, Any] | None = None,
        retries: int | None = None,
    ) -> Steps[None]:
        if window < 1:
            raise ValueError("window must be at least 1")
        until = self._until(timeout)
        session = self.session
        source = iter(payloads)
        exhausted = False
        while True:
            room = window - session.outstanding
            # top up in batches of a quarter window: one SUBMIT per task costs the forwarder
            if room >= max(1, window // 4) and not exhausted:
                batch = [
                    p.Task(
                        new_id(), service, bytes(payload), None, dict(headers or {}), retries, True
                    )
                    for payload in itertools.islice(source, room)
                ]
                exhausted = len(batch) < room
                yield from self.send(session.submit_frames(batch))
            if session.ready:
                yield _DELIVER
            if exhausted and not session.outstanding:
                return
            if time.monotonic() >= until:
                raise TimeoutError(f"{session.outstanding} tasks still unanswered")
            yield from self.pump(until)

    def result(self, task_id: str, timeout: float | None) -> Steps[TaskResult]:
        until = self._until(timeout)
        session = self.session
        while True:
            for result in session.ready:
                if result.task_id == task_id:
                    session.ready.remove(result)
                    return result
            if task_id not in session.pending:
                raise KeyError(f"task {task_id!r} is not outstanding in this client")
            if time.monotonic() >= until:
                raise TimeoutError(f"no answer for {task_id} yet")
            yield from self.pump(until)

    def map(
        self,
        service: str,
        payloads: Iterable[bytes],
        timeout: float | None,
        headers: Mapping[str, Any] | None = None,
        retries: int | None = None,
    ) -> Steps[list[TaskResult]]:
        """The answers in payload order; other tasks' answers stay for their readers."""
        ids = yield from self.submit_many(
            service, payloads, None, headers, retries, wait_accepted=False
        )
        until = self._until(timeout)
        session = self.session
        wanted = set(ids)
        by_id: dict[str, TaskResult] = {}
        while True:
            ready = session.ready
            if ready:
                others = [r for r in ready if r.task_id not in wanted]
                by_id.update((r.task_id, r) for r in ready if r.task_id in wanted)
                ready.clear()  # in place: front ends hold this deque
                ready.extend(others)
            if len(by_id) == len(ids):
                return [by_id[i] for i in ids]
            if time.monotonic() >= until:
                raise TimeoutError(f"{len(ids) - len(by_id)} tasks still unanswered")
            yield from self.pump(until)

    def status(self, timeout: float) -> Steps[dict[str, Any]]:
        session = self.session
        yield from self.renew_refused(self._until(timeout))
        session.status = None
        yield from self.send([_STATUS_REQUEST])
        yield from self.wait(lambda: session.status is not None, "status", timeout, False)
        assert session.status is not None
        return session.status

    def retry_dead_letters(self, ids: Iterable[str], timeout: float) -> Steps[list[str]]:
        ids = list(ids)
        if ids:
            return (yield from self._retry(ids, timeout))
        # every dead letter: each RETRY moves what one ACCEPTED lists; ask
        # again until a reply moves nothing new
        moved: list[str] = []
        seen: set[str] = set()
        while True:
            part = [i for i in (yield from self._retry([], timeout)) if i not in seen]
            if not part:
                return moved
            moved.extend(part)
            seen.update(part)

    def _retry(self, ids: list[str], timeout: float) -> Steps[list[str]]:
        session = self.session
        yield from self.renew_refused(self._until(timeout))
        session.accepted_ids.clear()
        requests = session.retry_frames(ids)
        yield from self.send(requests)
        # one ACCEPTED per RETRY message (each fits the frame limit as its request did)
        replies = session.accepted_ids
        yield from self.wait(lambda: len(replies) >= len(requests), "retry", timeout, False)
        moved = [task_id for _ in requests for task_id in replies.popleft()]
        session.reopen(moved)  # the forwarder already routes their answers here
        return moved
