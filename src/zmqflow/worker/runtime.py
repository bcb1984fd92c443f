"""The worker runtime: serve tasks from a forwarder with handler functions.

Contract (docs/protocol.md#worker-life): the worker announces its services
and credit with READY, runs each task of a TASK on one of ``concurrency``
handler threads (so heartbeats go on while handlers run), answers RESULT or FAILED (a handler
exception is a FAILED carrying its text, never a crash), heartbeats every
interval, and when
the forwarder falls silent for ``heartbeat_liveness`` intervals opens a new
socket with backoff and announces itself again, listing the tasks it still
runs. ``stop()`` (SIGTERM in the CLI) drains: credit 0, finish and answer
everything held, DISCONNECT, return.

Answers are batched per loop turn: everything that finished since the last
send goes out as one RESULT and one FAILED message (split at
``protocol.MAX_BATCH`` items / 64 MiB). No answer is dropped: what cannot be
sent (EAGAIN) stays in the outbox, and what was sent since the forwarder was
last heard is kept too, since closing a silent socket discards what it still
queues; both go out again right after the READY on the next socket (the
forwarder drops late duplicates), as the Rust worker does. A draining worker
that cannot reach the forwarder leaves within 5 s of ``stop()``.

CURVE: with ``curve_secret`` and ``curve_server`` (or their ZMQFLOW_*
variables) every socket is a CURVE client (``security.peer``); a bad key
file raises ``KeyFileError`` at construction. A refused handshake (our key
not allowed, a plain worker at a CURVE forwarder) is seen on the socket
monitor while the new socket waits to hear the forwarder
(``security.handshake``), logged at WARNING with our key and the endpoint,
and answered like a silent forwarder: a new socket after tenacity's
backoff, so a key allowed later registers without a restart.

This module is the I/O shell: sockets, the poll loop, handler threads.
What must survive a socket (running tasks, answers held and unconfirmed,
the READY) is the socket-free ``WorkerCore`` (core.py); the connection
rules (heartbeats, backoff, ``ForwarderRefused``) are zmqflow.connection's,
shared with the clients.

Handler threads pull tasks from a queue rather than going through
``concurrent.futures``: a Future and a wake-up per task cost more than a
short handler itself. A thread wakes the loop only when no wake-up is
already pending, so a burst of answers costs one pipe write.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import queue
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from zmqflow import __version__
from zmqflow import protocol as p
from zmqflow.connection import BACKOFF, ForwarderRefused, ForwarderUnreachable
from zmqflow.handlers import BUILTIN
from zmqflow.security.handshake import HandshakeWatch
from zmqflow.security.peer import resolve
from zmqflow.settings import WorkerSettings
from zmqflow.transport import recv_frames, send_frames
from zmqflow.worker.core import Answer, Item, WorkerCore

if TYPE_CHECKING:
    from zmqflow.worker_metrics import WorkerMetrics

log = logging.getLogger("zmqflow.worker")

__all__ = ["Answer", "ForwarderRefused", "ForwarderSilent", "Item", "Worker", "run_in_thread"]

Handler = Callable[[bytes, Mapping[str, Any]], bytes]

# a draining worker cut off from the forwarder gives up here, to be gone within 5 s
_DRAIN_GIVE_UP_S = 4.0
_TASK_COMMAND = bytes([p.Command.W_TASK])


# no answer from the forwarder within the heartbeat deadline (the connection's name)
ForwarderSilent = ForwarderUnreachable


def load_handler(spec: str) -> Handler:
    """``module:function`` to the function; a clear ValueError otherwise."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"handler {spec!r} must look like module:function")
    try:
        func = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load handler {spec!r}: {exc}") from None
    if not callable(func):
        raise ValueError(f"handler {spec!r} is not callable")
    return func


def resolve_handlers(services: list[str], handlers: list[str]) -> dict[str, Handler]:
    """Pair services with handlers: one each, one for all, or built-ins by name."""
    if not services:
        raise ValueError("give at least one --service")
    if len(handlers) == len(services):
        return {s: load_handler(h) for s, h in zip(services, handlers, strict=True)}
    if len(handlers) == 1:
        return dict.fromkeys(services, load_handler(handlers[0]))
    if handlers:
        raise ValueError("give one --handler, or one per --service")
    unknown = [s for s in services if s not in BUILTIN]
    if unknown:
        raise ValueError(
            f"no built-in handler for {', '.join(unknown)}: give --handler MODULE:FUNC "
            f"(built-ins: {', '.join(BUILTIN)})"
        )
    return {s: BUILTIN[s] for s in services}


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        handlers: Mapping[str, Handler],
        ctx: zmq.Context | None = None,
    ) -> None:
        for service in handlers:
            if not p.valid_service(service):
                raise ValueError(f"invalid service name {service!r}")
        self.settings = settings
        self.handlers = dict(handlers)
        self.ctx = ctx or zmq.Context.instance()
        self.id = settings.worker_id or (
            f"py-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        )
        self.core = WorkerCore(
            self.id,
            self.handlers,
            settings.credit or 2 * settings.concurrency,
            settings.heartbeat_interval,
            settings.heartbeat_liveness,
        )
        # silence counts from the start (reset when a socket opens), not from boot
        self.core.liveness.last_heard = time.monotonic()
        self.curve = resolve(None, settings.curve_secret, settings.curve_server)
        self._watch: HandshakeWatch | None = None  # the new socket's, until it hears us
        self._todo: queue.SimpleQueue[tuple[Handler, p.Dispatch] | None] = queue.SimpleQueue()
        # answers as (task id, output, error): output is None when the handler failed
        self._done: queue.SimpleQueue[Answer] = queue.SimpleQueue()
        self._wake_pending = False
        self._threads = [
            threading.Thread(target=self._handler_thread, name=f"handler-{n}", daemon=True)
            for n in range(settings.concurrency)
        ]
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller = zmq.Poller()
        self._draining = False
        self._drain_deadline = math.inf  # when a drain gives up on an unreachable forwarder
        self._sock: zmq.Socket | None = None
        self._told_held = False  # "answers held" logged once per socket
        self._health_touched = 0.0
        self.metrics: WorkerMetrics | None = None  # see start_metrics

    @property
    def credit(self) -> int:
        return self.core.credit

    @property
    def completed(self) -> int:
        return self.core.completed

    @property
    def _running(self) -> set[str]:
        return self.core.running

    @property
    def _last_heard(self) -> float:
        return self.core.liveness.last_heard

    @property
    def _ever_heard(self) -> bool:
        return self.core.ever_heard

    def start_metrics(self) -> None:
        """Serve Prometheus metrics on ``settings.metrics_port`` (OSError if it is taken);
        ``run()`` calls it when the port is set, before the handler threads start."""
        from zmqflow.worker_metrics import WorkerMetrics

        if self.metrics is None and self.settings.metrics_port:
            metrics = WorkerMetrics(self.id, __version__)
            metrics.serve(self.settings.metrics_port)
            self.metrics = metrics

    # ----------------------------------------------------------- control
    def stop(self) -> None:
        """Drain and leave (safe to call from a signal handler or another thread)."""
        if not self._draining:
            self._drain_deadline = time.monotonic() + _DRAIN_GIVE_UP_S
        self._draining = self.core.draining = True
        self._wake()

    def run(self) -> None:
        log.info(
            "worker %s: services %s, concurrency %d, credit %d, forwarder %s",
            self.id,
            ",".join(self.handlers),
            self.settings.concurrency,
            self.credit,
            self.settings.connect,
            extra=self._log_fields("worker.start"),
        )
        self.start_metrics()
        for thread in self._threads:
            thread.start()
        linger_ms = 1000  # time for the last DISCONNECT to leave
        try:
            self._connect_with_backoff()
            self._serve()
        except ForwarderSilent:
            linger_ms = 0  # nobody to send to: what is queued would only hold up the exit
            # only raised while draining: the forwarder requeues what we held
            log.warning(
                "drain: forwarder unreachable, leaving %d tasks and %d answers behind",
                len(self._running),
                self._held_answers(),
            )
        finally:
            for _ in self._threads:
                self._todo.put(None)  # each thread stops after its current task
            self._close_watch()
            if self._sock is not None:
                self._sock.close(linger=linger_ms)
            os.close(self._wake_r)
            os.close(self._wake_w)
            if self.metrics is not None:
                self.metrics.close()

    def _log_fields(self, event: str) -> dict[str, str]:
        """``extra=`` of this worker's log lines (zmqflow.logs: the JSON line's keys)."""
        return {"event": event, "worker_id": self.id, "language": "python"}

    # ------------------------------------------------------- connection
    @property
    def _deadline(self) -> float:
        return self.core.liveness.deadline

    def _ready(self) -> p.Ready:
        return self.core.ready()

    def _handshake(self) -> None:
        """New socket, READY, and wait to hear the forwarder; ForwarderSilent if not.

        Answers sent on the old socket since the forwarder was last heard may
        have died with it: they go back to the outbox, listed in the READY.
        """
        self._close_watch()
        if self._sock is not None:
            self._sock.close(linger=0)
        self.core.new_socket(time.monotonic())
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, p.MAX_MESSAGE_BYTES)
        if self.curve is not None:
            self.curve.apply(sock)
        watch = self._watch = HandshakeWatch(sock, self.curve)
        sock.connect(self.settings.connect)
        self._sock = sock
        self._poller = zmq.Poller()
        self._poller.register(sock, zmq.POLLIN)
        self._poller.register(self._wake_r, zmq.POLLIN)
        self._poller.register(watch.socket, zmq.POLLIN)
        self.core.liveness.last_heard = time.monotonic()  # the silence clock starts now
        self._told_held = False
        for frames in p.encode_split(self._ready()):
            sock.send_multipart(frames)
        until = min(time.monotonic() + self._deadline, self._drain_deadline)
        while True:
            ready = dict(self._poller.poll(max(0, int((until - time.monotonic()) * 1000))))
            if sock in ready:
                break
            if watch.socket in ready:
                refusal = watch.read()
                if refusal is not None:  # never let in on this socket: a new one
                    log.warning("%s", refusal.message)
                    raise ForwarderRefused(refusal.message)
            if self._wake_r in ready:  # answers wait in _done; a stop may have come
                self._clear_wake()
                self._wake_pending = False
            if time.monotonic() >= until or (self._draining and self._nothing_held()):
                raise ForwarderSilent(f"no answer from {self.settings.connect}")
        self._poller.unregister(watch.socket)  # heard: the loop polls as before
        self._close_watch()
        self.core.liveness.last_heard = time.monotonic()
        self._flush()  # answers held while the forwarder was away, right after READY

    def _close_watch(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def _nothing_held(self) -> bool:
        return self.core.nothing_held(not self._done.empty())

    def _held_answers(self) -> int:
        return self.core.held_answers()

    def _connect_with_backoff(self) -> None:
        for attempt in Retrying(
            retry=retry_if_exception_type(ForwarderSilent),
            wait=self._backoff,
            sleep=self._sleep,
            before_sleep=lambda state: log.warning(
                "forwarder %s, new socket in %.1fs (attempt %d)",
                "refused us" if isinstance(_failure(state), ForwarderRefused) else "silent",
                state.next_action.sleep if state.next_action else 0,
                state.attempt_number,
            ),
            stop=self._give_up,
            reraise=True,
        ):
            with attempt:
                if self._draining and self._nothing_held():
                    # nothing to hand back: no need to wait for a forwarder
                    raise ForwarderSilent("draining with nothing held")
                self._handshake()
        log.info(
            "worker %s connected to %s",
            self.id,
            self.settings.connect,
            extra=self._log_fields("worker.connected"),
        )

    def _backoff(self, state: RetryCallState) -> float:
        """0.1 s doubling to 5 s; while draining, never past the drain's deadline."""
        delay = BACKOFF(state)
        return min(delay, max(0.0, self._drain_deadline - time.monotonic()))

    def _sleep(self, seconds: float) -> None:
        """Back off, but wake at once for ``stop()`` (its pipe byte)."""
        until = time.monotonic() + seconds
        while not self._draining:
            left = until - time.monotonic()
            if left <= 0 or not select.select([self._wake_r], [], [], left)[0]:
                return
            self._clear_wake()  # an answer's wake-up: _done keeps the answer
            self._wake_pending = False

    def _give_up(self, state: RetryCallState) -> bool:
        """Reconnect forever, but while draining for 5 s at most (docs/protocol.md)."""
        return self._draining and (time.monotonic() >= self._drain_deadline or self._nothing_held())

    # ------------------------------------------------------------- loop
    def _serve(self) -> None:
        interval = self.settings.heartbeat_interval
        next_beat = time.monotonic() + interval
        announced_drain = 0.0  # when the credit-0 READY went out (0: not yet)
        while True:
            assert self._sock is not None
            sock = self._sock
            now = time.monotonic()
            wake = next_beat
            if now < self._drain_deadline < wake:
                wake = self._drain_deadline  # a drain must not oversleep its deadline
            timeout = max(0.0, wake - now)
            ready = dict(self._poller.poll(int(timeout * 1000)))
            if self._wake_r in ready:
                # Empty the pipe, then clear the flag, then read answers (below): a
                # thread that finds the flag clear writes a byte this read cannot eat.
                self._clear_wake()
                self._wake_pending = False
            if sock in ready:
                self._read(sock)
            self._send_answers()
            if self._draining and not announced_drain:
                with contextlib.suppress(zmq.Again):  # unreachable: the deadline decides
                    for frames in p.encode_split(self._ready()):  # credit 0: send nothing more
                        send_frames(sock, frames)
                announced_drain = time.monotonic()
                log.info("draining: %d tasks to finish", len(self._running))
            # Leave only once the forwarder was heard after that READY: a TASK it
            # sent before reading it arrives first (ZeroMQ keeps order per peer).
            last_heard = self.core.liveness.last_heard
            if announced_drain and last_heard > announced_drain and self._nothing_held():
                sock.send_multipart(p.encode(p.Disconnect("drained")))
                log.info(
                    "worker %s drained and left (%d tasks done)",
                    self.id,
                    self.completed,
                    extra=self._log_fields("worker.gone"),
                )
                return
            now = time.monotonic()
            last_heard = self.core.liveness.last_heard
            if now >= self._drain_deadline and now - last_heard > 2 * interval:
                # the forwarder requeues what we hold once it finds us silent
                raise ForwarderSilent("draining, forwarder unreachable")
            if now >= next_beat:
                with contextlib.suppress(zmq.Again):  # the silence check below handles it
                    send_frames(sock, p.encode(p.WorkerHeartbeat()))
                next_beat = now + interval
                if self.core.liveness.silent(now):
                    if self.core.ever_heard:
                        log.warning("forwarder silent for %.1fs: reconnecting", now - last_heard)
                    else:
                        log.warning("forwarder never answered: reconnecting")
                    self._connect_with_backoff()
                    announced_drain = 0.0

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe wakes the loop anyway
            os.write(self._wake_w, b"!")

    def _clear_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _read(self, sock: zmq.Socket) -> None:
        announce = False  # DISCONNECTs come in bursts: answer them with one READY
        while True:
            try:
                frames = recv_frames(sock)
            except zmq.Again:
                if announce:
                    for frames in p.encode_split(self._ready()):
                        sock.send_multipart(frames)
                return
            self._heard()
            if frames[0] == p.WORKER_SIGNATURE and frames[1:2] == [_TASK_COMMAND]:
                self._take_tasks(frames)
                continue
            try:
                msg = p.decode(frames)
            except p.ProtocolError as exc:
                log.warning("bad message from forwarder dropped: %s", exc)
                continue
            match msg:
                case p.WorkerHeartbeat():
                    pass
                case p.Disconnect(reason):
                    if not announce:
                        log.info("forwarder asked to announce again (%s)", reason)
                    announce = True
                case _:
                    log.warning("unexpected %s from forwarder dropped", type(msg).__name__)

    def _heard(self) -> None:
        now = time.monotonic()
        self.core.heard(now)
        path = self.settings.health_file
        if path and now - self._health_touched > 0.5:
            Path(path).touch()
            self._health_touched = now

    # ------------------------------------------------------------ tasks
    def _take_tasks(self, frames: list[bytes]) -> None:
        """Start every task of a TASK; a task that does not decode is answered FAILED."""
        try:
            items = p.decode_task_items(frames)
        except p.ProtocolError as exc:
            log.warning("bad TASK from forwarder dropped: %s", exc)
            return
        for item in items:
            if isinstance(item, p.Dispatch):
                self._start(item)
            elif item.ids and p.valid_id(item.ids[0]):  # an answer needs a usable id
                log.warning(
                    "malformed task %s: %s",
                    item.ids[0],
                    item,
                    extra={**self._log_fields("task.malformed"), "task_id": item.ids[0]},
                )
                self._done.put((item.ids[0], None, f"malformed task: {item}"))
            else:
                log.warning("task without a readable id dropped: %s", item)

    def _start(self, task: p.Dispatch) -> None:
        handler = self.handlers.get(task.service)
        if handler is None:
            self._done.put((task.id, None, f"service {task.service!r} not served here"))
            return
        self._running.add(task.id)
        self._todo.put((handler, task))

    def _handler_thread(self) -> None:
        stats = self.metrics.for_thread(self._run_handler) if self.metrics is not None else None
        while True:
            job = self._todo.get()
            if job is None:
                return
            if stats is None:
                self._done.put(self._run_handler(*job))
            else:  # counted and timed per service (worker_metrics.py)
                self._done.put(stats.timed(job))
            # The loop empties the pipe, clears the flag, then reads answers: an answer
            # put after that read finds the flag clear, or a wake-up still to come.
            if not self._wake_pending:
                self._wake_pending = True
                self._wake()

    @staticmethod
    def _run_handler(handler: Handler, task: p.Dispatch) -> Answer:
        try:
            out = handler(task.payload, task.headers)
            if isinstance(out, str):
                out = out.encode()
            elif not isinstance(out, bytes | bytearray | memoryview):
                raise TypeError(f"handler returned {type(out).__name__}, expected bytes")
            return (task.id, bytes(out), None)
        except Exception as exc:  # the handler's failure is the task's answer
            error = str(exc) or type(exc).__name__
            log.info(
                "task %s (%s) failed: %s",
                task.id,
                task.service,
                error,
                extra={"event": "task.failed", "task_id": task.id, "service": task.service},
            )
            return (task.id, None, error)

    def _send_answers(self) -> None:
        """Send what finished since the last call as one RESULT and one FAILED (split if huge)."""
        get = self._done.get_nowait
        answers: list[Answer] = []
        while True:
            try:
                answers.append(get())
            except queue.Empty:
                break
        self.core.take_answers(answers)
        done, errors = self.core.outbox
        if done or errors:
            self._flush()

    def _flush(self) -> None:
        """Send the outbox; what the socket will not take (EAGAIN) stays for later."""
        sock = self._sock
        if sock is None:
            return

        def send(frames: list[bytes]) -> bool:
            try:
                send_frames(sock, frames)
            except zmq.Again:
                return False
            return True

        if not self.core.flush(send) and not self._told_held:
            log.warning("answers held: forwarder not reachable, sent when it is")
            self._told_held = True


def _failure(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome else None


def run_in_thread(worker: Worker) -> threading.Thread:
    """Start ``worker.run`` in a daemon thread (tests and embedding)."""
    thread = threading.Thread(target=worker.run, name=f"zmqflow-worker-{worker.id}", daemon=True)
    thread.start()
    return thread
