"""The executor's line to the forwarder: one client, owned by one thread.

Contract (no Airflow import): ``FabricLink`` takes workloads from the
scheduler's thread without blocking it (``submit``, ``collect``, ``forget``)
and hands back one ``Outcome`` per workload (``outcomes()``), whatever
happens to the forwarder:

- ``submit`` sends a workload under the id the caller chose (the task
  instance's pre-assigned external executor id) and its idempotency key; it
  is journaled by the forwarder (ACCEPTED) before any worker may run it.
- Every workload ends in exactly one Outcome: the worker's answer (``ok``),
  a failure naming the worker and its error, or a refusal in words a user
  can act on: a queue no worker has ever served (``unknown_service``), a
  queue whose workers are all gone for ``queue_timeout_s``, a forwarder that
  did not accept the workload within ``accept_timeout_s`` (down, or our
  key refused), a payload over the limit. Each names the queue, the fabric
  service, the forwarder and what was tried.
- ``collect`` re-attaches to workloads handed over by an earlier link (a
  scheduler that died): their answers come here. ``adopt`` is the
  synchronous question a starting scheduler asks first: which of these ids
  does the forwarder not know at all (never submitted: the scheduler died
  between queuing and sending)?
- ``forget`` drops a workload (revoked): no Outcome for it. The protocol has
  no cancel; a worker that still gets it is refused by Airflow's Execution
  API, since the task instance is no longer QUEUED.
- ``close`` stops the thread, after a last chance (bounded) for what was
  given to reach the forwarder; it returns the ids that never did.

The client is zmqflow's blocking ``Client`` on this link's own thread: the
scheduler's loop never waits on a socket, and a forwarder that is down costs
the scheduler nothing but the Outcomes that say so.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from zmqflow import protocol as p
from zmqflow.client import Client, CurveKeys, ForwarderUnreachable, TaskResult
from zmqflow_provider.executors.settings import ExecutorSettings

log = logging.getLogger("zmqflow_provider.executors")

_POLL_S = 0.02  # one pump of the client while answers are owed
_IDLE_S = 0.5  # the thread's wait when nothing is owed (a submit wakes it at once)
_CHECK_EVERY_S = 2.0  # how often owed workloads are checked (STATUS, acceptance)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one workload ended on the fabric."""

    task_id: str
    ok: bool
    detail: str  # the worker's answer (ok) or what went wrong, in words
    worker: str | None = None


@dataclass(slots=True)
class _Owed:
    queue: str
    service: str
    since: float  # monotonic: submitted or collected


@dataclass(slots=True)
class _Inbox:
    submits: list[p.Task] = field(default_factory=list)
    collects: list[str] = field(default_factory=list)
    forgets: list[str] = field(default_factory=list)


class FabricLink:
    def __init__(
        self,
        settings: ExecutorSettings,
        *,
        curve: CurveKeys | None = None,
        heartbeat_interval: float = 1.0,
    ) -> None:
        self.settings = settings
        self.curve = curve
        self.heartbeat_interval = heartbeat_interval
        self._lock = threading.Lock()
        self._inbox = _Inbox()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._owed: dict[str, _Owed] = {}  # the link thread's own
        self._unserved_since: dict[str, float] = {}
        self._last_error: str | None = None
        self._unsent: list[str] = []
        self._routes: dict[str, tuple[str, str]] = {}  # collected ids: (queue, service)
        self._close_within = 5.0
        self._thread: threading.Thread | None = None

    # ------------------------------------------------ the scheduler's side
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="zmqflow-executor", daemon=True)
        self._thread.start()

    def submit(
        self, task_id: str, queue_name: str, service: str, payload: bytes, key: str | None
    ) -> None:
        if not p.valid_id(task_id):
            raise ValueError(f"task id {task_id!r} is not a valid fabric task id")
        task = p.Task(
            task_id,
            service,
            payload,
            key,
            {"queue": queue_name},
            self.settings.retries,
            fresh=True,  # the scheduler assigns a new id every time it queues a try
        )
        with self._lock:
            self._inbox.submits.append(task)
        self._wake.set()

    def collect(self, routes: dict[str, tuple[str, str]]) -> None:
        """Follow these ids (id -> (queue, service)), handed over by an earlier link."""
        with self._lock:
            self._inbox.collects.extend(routes)
            self._routes.update(routes)
        self._wake.set()

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._inbox.forgets.append(task_id)
        self._wake.set()

    def outcomes(self) -> list[Outcome]:
        out: list[Outcome] = []
        while True:
            try:
                out.append(self._outcomes.get_nowait())
            except queue.Empty:
                return out

    def adopt(self, ids: Iterable[str]) -> set[str]:
        """The ids the forwarder does not know (never submitted, or expired).

        Asked on a client of its own: COLLECT, then STATUS as a barrier (the
        forwarder's refusals of the COLLECT leave before its STATUS reply).
        A forwarder that does not answer within ``adopt_timeout_s``: every id
        counts as known, and the link finds out later (an unknown one then
        fails, naming why).
        """
        ids = [i for i in ids if p.valid_id(i)]
        if not ids:
            return set()
        timeout = self.settings.adopt_timeout_s
        try:
            with self._client(timeout) as client:
                client.collect(ids)
                client.status(timeout)
                return {
                    r.task_id
                    for r in client.session.ready
                    if r.refused and r.code == "unknown_task"
                }
        except ForwarderUnreachable as exc:
            log.warning(
                "adoption: forwarder %s did not answer (%s); the %d workloads count as known",
                self.settings.frontend,
                exc,
                len(ids),
            )
            return set()

    def close(self, timeout: float = 5.0) -> list[str]:
        """Stop; wait up to ``timeout`` for what was given to be accepted first.

        Returns the ids never accepted by the forwarder (the caller fails them:
        a new scheduler cannot adopt what the forwarder never took).
        """
        if self._thread is None:
            return []
        self._close_within = timeout
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout + 10)
        return list(self._unsent)

    # ------------------------------------------------------ the link thread
    def _client(self, timeout: float) -> Client:
        return Client(
            self.settings.frontend,
            timeout=timeout,
            heartbeat_interval=self.heartbeat_interval,
            curve=self.curve,
        )

    def _run(self) -> None:
        client = self._client(self.settings.accept_timeout_s)
        next_check = time.monotonic() + _CHECK_EVERY_S
        try:
            while not self._stop.is_set():
                self._take_inbox(client)
                if client.session.outstanding:
                    self._pump(client, _POLL_S)
                else:
                    self._wake.wait(_IDLE_S)
                    self._wake.clear()
                if time.monotonic() >= next_check:
                    self._check(client)
                    next_check = time.monotonic() + _CHECK_EVERY_S
            self._take_inbox(client)
            self._finish(client)
        except Exception:  # never silent: the owed workloads fail, naming it
            log.exception("zmqflow executor link stopped")
            for task_id in list(self._owed):
                self._fail(task_id, "the executor's link to the fabric stopped on an error")
        finally:
            client.close()

    def _take_inbox(self, client: Client) -> None:
        with self._lock:
            inbox, self._inbox = self._inbox, _Inbox()
            routes = dict(self._routes)
            self._routes.clear()
        now = time.monotonic()
        for task_id in inbox.forgets:
            self._owed.pop(task_id, None)
            client.session.pending.pop(task_id, None)  # its answer, if any, is dropped
        forgotten = set(inbox.forgets)
        tasks = [t for t in inbox.submits if t.id not in forgotten]
        for task in tasks:
            self._owed[task.id] = _Owed(task.headers["queue"], task.service, now)
        if tasks:
            try:
                client.submit_tasks(tasks, wait_accepted=False)
            except ValueError as exc:  # an id reused within this link
                for task in tasks:
                    self._fail(task.id, f"not submitted: {exc}")
        ids = [i for i in inbox.collects if i not in forgotten and i not in self._owed]
        for task_id in ids:
            q, service = routes.get(task_id, ("?", "?"))
            self._owed[task_id] = _Owed(q, service, now)
        if ids:
            client.collect(ids)

    def _pump(self, client: Client, seconds: float) -> None:
        try:
            for result in client.as_completed(timeout=seconds):
                self._answer(result)
            self._last_error = None
        except ForwarderUnreachable as exc:
            self._last_error = str(exc)
        except TimeoutError:
            pass  # answers still owed: the next turn

    def _answer(self, r: TaskResult) -> None:
        owed = self._owed.pop(r.task_id, None)
        if owed is None:
            return  # forgotten (revoked), or failed here already
        if r.ok:
            self._outcomes.put(Outcome(r.task_id, True, _text(r.payload), r.worker))
            return
        where = f"queue {owed.queue!r} (fabric service {owed.service!r})"
        if r.code == "unknown_service":
            detail = (
                f"{where}: no zmqflow worker has ever served it at {self.settings.frontend}; "
                f"start replicas for it, e.g. worker-airflow with --service={owed.service}"
            )
        elif r.code == "too_large":
            detail = f"{where}: the forwarder refused the workload as too large ({r.error})"
        elif r.code == "unknown_task":
            detail = (
                f"{where}: the forwarder at {self.settings.frontend} does not know this "
                f"workload (never submitted, or its answer expired)"
            )
        elif r.code == "dead_letter":
            detail = (
                f"{where}: the workload lost its worker {r.attempts} times and is a dead "
                f"letter ({r.error})"
            )
        elif r.refused:
            detail = f"{where}: refused by the forwarder ({r.code}: {r.error})"
        else:
            detail = f"{where}: worker {r.worker} reported: {r.error}"
        self._outcomes.put(Outcome(r.task_id, False, detail, r.worker))

    def _fail(self, task_id: str, detail: str) -> None:
        self._owed.pop(task_id, None)
        self._outcomes.put(Outcome(task_id, False, detail))

    def _check(self, client: Client) -> None:
        """Fail what waits too long: not accepted, or on a queue nobody serves."""
        if not self._owed:
            self._unserved_since.clear()
            return
        now = time.monotonic()
        session = client.session
        for task_id, owed in list(self._owed.items()):
            if session.is_accepted(task_id) or now - owed.since < self.settings.accept_timeout_s:
                continue
            session.pending.pop(task_id, None)
            self._fail(
                task_id,
                f"queue {owed.queue!r} (fabric service {owed.service!r}): the forwarder at "
                f"{self.settings.frontend} did not accept the workload within "
                f"{self.settings.accept_timeout_s:g} s ({client.reconnects} reconnects; last: "
                f"{self._last_error or 'no answer'}): is it running, and is this scheduler's "
                f"CURVE key in its allow-list?",
            )
        try:
            status = client.status(timeout=1.0)
        except ForwarderUnreachable as exc:
            self._last_error = str(exc)
            return
        served = {s for w in status.get("workers", []) for s in w.get("services", [])}
        waiting = {o.service for o in self._owed.values()}
        for service in list(self._unserved_since):
            if service in served or service not in waiting:
                del self._unserved_since[service]
        for service in waiting - served:
            since = self._unserved_since.setdefault(service, now)
            if now - since < self.settings.queue_timeout_s:
                continue
            workers = sorted({w.get("id", "?") for w in status.get("workers", [])})
            for task_id, owed in list(self._owed.items()):
                if owed.service == service:
                    session.pending.pop(task_id, None)
                    self._fail(
                        task_id,
                        f"queue {owed.queue!r} (fabric service {service!r}): no worker at "
                        f"{self.settings.frontend} has served it for "
                        f"{self.settings.queue_timeout_s:g} s (workers connected: "
                        f"{', '.join(workers) or 'none'})",
                    )
            del self._unserved_since[service]

    def _finish(self, client: Client) -> None:
        """Closing: give unaccepted workloads a bounded last chance to be accepted."""
        session = client.session
        until = time.monotonic() + self._close_within
        while time.monotonic() < until and any(not session.is_accepted(i) for i in self._owed):
            self._pump(client, 0.1)
        self._unsent = [i for i in self._owed if not session.is_accepted(i)]


def _text(payload: bytes) -> str:
    try:
        return json.dumps(json.loads(payload), sort_keys=True)
    except (ValueError, UnicodeDecodeError):
        return payload[:200].decode(errors="replace")
