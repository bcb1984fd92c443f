"""ZmqflowTaskRunner: a Prefect flow's own tasks (``.submit``, ``.map``) on zmqflow workers.

Contract (as prefect-dask's DaskTaskRunner, read in PrefectHQ/prefect):

- ``submit`` returns at once a ``PrefectZmqflowFuture``; a resolver thread
  waits for the task's upstream futures, puts their final states in place of
  the futures (in ``parameters`` and ``wait_for``), cloudpickles the task run
  (task, task run id, parameters, upstream states, dependencies and the flow
  run's serialized context, settings included) and hands it to the
  dispatcher thread, which owns the one zmqflow ``Client`` of the runner.
  The payload goes to ``service`` (default ``prefect.task``) under the
  idempotency key ``prefect-task-run:<task run id>``. A replica runs it with
  Prefect's own task engine (``prefect_zmqflow.replica``), so the task run,
  its states and logs are on the Prefect server as with Dask, and answers
  the final state, which resolves the future.
- A replica that dies mid-task: the forwarder gives the SAME task run (same
  id, same payload) to another replica, up to ``replays`` times; past that
  the future's state is Crashed and the server's task run is set Crashed,
  so no task run is left Running. Other refusals and failures of the fabric
  are Crashed states naming the cause; a payload over ``max_payload_bytes``
  is a Failed state (``PayloadTooLargeError``) naming its size and the limit.
  Payloads are never logged.
- Where the fabric is, in order: ``credentials`` (a ``ZmqflowCredentials``
  block, or the name of a saved one), ``frontend=``, the environment
  (ZMQFLOW_PREFECT_FRONTEND, CURVE key files from ZMQFLOW_CURVE_SECRET and
  ZMQFLOW_CURVE_SERVER, as every zmqflow client), else the saved block
  ZMQFLOW_PREFECT_BLOCK (default ``fabric``), else the block's defaults.
  Nothing connects before the first submit: ``duplicate()`` (which Prefect
  calls on the replica to rebuild the flow run context) is cheap and the
  runner pickles without its threads and sockets.
- ``__exit__`` waits for every task run still out (as ThreadPoolTaskRunner
  does), then closes the client.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import cloudpickle
from prefect.client.schemas.objects import RunInput
from prefect.context import (
    AssetContext,
    EngineContext,
    SettingsContext,
    TagsContext,
    TaskRunContext,
    _deployment_id,
    _deployment_parameters,
)
from prefect.futures import PrefectConcurrentFuture, PrefectFuture, PrefectFutureList
from prefect.states import Crashed, Failed, State
from prefect.task_runners import TaskRunner
from prefect.tasks import Task
from prefect.utilities.collections import visit_collection

from prefect_zmqflow.credentials import ZmqflowCredentials
from prefect_zmqflow.errors import ZmqflowError
from zmqflow.client import Client, ForwarderUnreachable, TaskResult

R = TypeVar("R")

DEFAULT_SERVICE = "prefect.task"
DEFAULT_BLOCK = "fabric"
# The forwarder's own default (zmqflow forwarder --max-payload-bytes): larger
# payloads would be refused there anyway, after the journey.
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
KEY_PREFIX = "prefect-task-run:"
# The payload: cloudpickle of (PAYLOAD_FORMAT, shared context bytes, the call).
PAYLOAD_FORMAT = 1
# How long the dispatcher reads answers before it looks for new submissions:
# the latency a submission can wait while answers are outstanding.
_POLL_S = 0.005

log = logging.getLogger("prefect_zmqflow.task_runner")


class PayloadTooLargeError(ZmqflowError):
    """A task run's pickled payload is larger than the fabric takes."""


class PrefectZmqflowFuture(PrefectConcurrentFuture[R]):
    """A task run handed to zmqflow workers: its wrapped future resolves to the final State.

    ``wait()``, ``result()`` and ``add_done_callback()`` are Prefect's
    concurrent-future ones (``PrefectWrappedFuture``): the dispatcher sets the
    wrapped future's result to the state the replica's task engine ended in.
    """


@dataclass(slots=True)
class _Job:
    task_run_id: uuid.UUID
    name: str
    payload: bytes | None
    future: concurrent.futures.Future[State[Any]]


class ZmqflowTaskRunner(TaskRunner[PrefectZmqflowFuture[Any]]):
    """Runs each task run on a zmqflow worker replica (``worker-prefect`` in the stack).

    Args:
        credentials: a ``ZmqflowCredentials`` block, or the name of a saved one.
        frontend: the forwarder's client endpoint, when no block is given.
        service: the zmqflow service the replicas serve (one pool per name).
        replays: how often a task run lost with its replica is given to another.
        max_payload_bytes: the largest pickled task run sent (the forwarder's limit).
    """

    def __init__(
        self,
        credentials: ZmqflowCredentials | str | None = None,
        *,
        frontend: str | None = None,
        service: str = DEFAULT_SERVICE,
        replays: int = 3,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        if replays < 0:
            raise ValueError("replays must be 0 or more")
        if max_payload_bytes < 1:
            raise ValueError("max_payload_bytes must be positive")
        super().__init__()
        self.credentials = credentials
        self.frontend = frontend
        self.service = service
        self.replays = replays
        self.max_payload_bytes = max_payload_bytes
        self._dispatcher: _Dispatcher | None = None
        self._resolver: concurrent.futures.ThreadPoolExecutor | None = None
        self._outstanding: set[concurrent.futures.Future[State[Any]]] = set()
        self._lock = threading.Lock()
        self._context = contextvars.copy_context()
        # (settings context, flow run context, their pickled serialization)
        self._shared: tuple[Any, Any, bytes] | None = None

    # ------------------------------------------------------- configuration
    def _settings(self) -> tuple[Any, ...]:
        return (self.credentials, self.frontend, self.service, self.replays, self.max_payload_bytes)

    def duplicate(self) -> Self:
        """The same settings, nothing started (Prefect calls it on the replica)."""
        return type(self)(
            self.credentials,
            frontend=self.frontend,
            service=self.service,
            replays=self.replays,
            max_payload_bytes=self.max_payload_bytes,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ZmqflowTaskRunner) and self._settings() == other._settings()

    def __hash__(self) -> int:
        return hash((type(self), self.frontend, self.service, self.replays))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for runtime in ("_dispatcher", "_resolver", "_outstanding", "_lock", "_context", "_shared"):
            state.pop(runtime, None)
        state["_started"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._dispatcher = None
        self._resolver = None
        self._outstanding = set()
        self._lock = threading.Lock()
        self._context = contextvars.copy_context()
        self._shared = None

    def resolve_credentials(self) -> ZmqflowCredentials:
        """The block this runner connects with (see the module's contract for the order)."""
        if isinstance(self.credentials, ZmqflowCredentials):
            return self.credentials
        if isinstance(self.credentials, str):
            return ZmqflowCredentials.load(self.credentials)
        frontend = self.frontend or os.environ.get("ZMQFLOW_PREFECT_FRONTEND")
        if frontend:
            return ZmqflowCredentials(frontend=frontend)
        name = os.environ.get("ZMQFLOW_PREFECT_BLOCK", DEFAULT_BLOCK)
        try:
            return ZmqflowCredentials.load(name)
        except ValueError:  # no such document: the block's defaults
            return ZmqflowCredentials()

    # ------------------------------------------------------------ lifecycle
    def __enter__(self) -> Self:
        super().__enter__()
        # Nothing more until the first submit: Prefect enters a duplicate of the
        # flow's runner on the replica for every task run it hydrates there.
        self._context = contextvars.copy_context()
        return self

    def _start_threads(self) -> tuple[_Dispatcher, concurrent.futures.ThreadPoolExecutor]:
        with self._lock:
            if self._dispatcher is None or self._resolver is None:
                # Prefect's contexts (settings, flow run) are context variables: the
                # dispatcher runs in a copy of the flow's, as a thread pool task would.
                self._dispatcher = _Dispatcher(self, self._context)
                self._resolver = concurrent.futures.ThreadPoolExecutor(
                    max_workers=4, thread_name_prefix="zmqflow-resolve"
                )
            return self._dispatcher, self._resolver

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        with self._lock:
            outstanding = list(self._outstanding)
        concurrent.futures.wait(outstanding)
        if self._resolver is not None:
            self._resolver.shutdown(wait=True)
            self._resolver = None
        if self._dispatcher is not None:
            self._dispatcher.stop()
            self._dispatcher = None
        super().__exit__(exc_type, exc_value, traceback)

    # --------------------------------------------------------------- submit
    def submit(
        self,
        task: Task[Any, Any],
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
        dependencies: dict[str, set[RunInput]] | None = None,
    ) -> PrefectZmqflowFuture[Any]:
        if not self._started:
            raise RuntimeError("The task runner must be started before submitting work.")
        _, resolver = self._start_threads()
        task_run_id = uuid.uuid4()
        # The context is read here, in the caller's thread: it lives in context variables.
        shared, context = self._context_parts(task, task_run_id, dependencies)
        done: concurrent.futures.Future[State[Any]] = concurrent.futures.Future()
        with self._lock:
            self._outstanding.add(done)
        done.add_done_callback(self._forget)
        resolver.submit(
            self._resolve_and_send,
            done,
            task,
            task_run_id,
            parameters,
            list(wait_for or ()),
            dependencies,
            shared,
            context,
        )
        return PrefectZmqflowFuture(task_run_id=task_run_id, wrapped_future=done)

    def _context_parts(
        self,
        task: Task[Any, Any],
        task_run_id: uuid.UUID,
        dependencies: dict[str, set[RunInput]] | None,
    ) -> tuple[bytes, dict[str, Any]]:
        """``serialize_context()`` in two parts: the flow run's and the settings'
        (the same for every task run of a flow run: pickled once, cached by the
        identity of those contexts) and the rest (tags, parent task run, assets)."""
        settings, flow_run = SettingsContext.get(), EngineContext.get()
        with self._lock:
            cached = self._shared
            if cached is None or cached[0] is not settings or cached[1] is not flow_run:
                shared = cloudpickle.dumps(
                    {
                        "settings_context": settings.serialize() if settings else {},
                        "flow_run_context": flow_run.serialize() if flow_run else {},
                    }
                )
                cached = self._shared = (settings, flow_run, shared)
        task_run = TaskRunContext.get()
        tags_context = TagsContext.get()
        # serialize_context() does the same from these (private in prefect 3.8, pinned)
        deployment_id, deployment_parameters = _deployment_id.get(), _deployment_parameters.get()
        context = {
            "task_run_context": task_run.serialize() if task_run else {},
            "tags_context": tags_context.serialize() if tags_context else {},
            "asset_context": AssetContext.from_task_and_inputs(
                task=task,
                task_run_id=task_run_id,
                task_inputs=dependencies or {},
                copy_to_child_ctx=True,
            ).serialize(),
            "deployment_id": str(deployment_id) if deployment_id else None,
            "deployment_parameters": deployment_parameters,
        }
        return cached[2], context

    def map(
        self,
        task: Task[Any, Any],
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
    ) -> PrefectFutureList[PrefectZmqflowFuture[Any]]:
        return super().map(task, parameters, wait_for)

    def _forget(self, done: concurrent.futures.Future[State[Any]]) -> None:
        with self._lock:
            self._outstanding.discard(done)

    def _resolve_and_send(
        self,
        done: concurrent.futures.Future[State[Any]],
        task: Task[Any, Any],
        task_run_id: uuid.UUID,
        parameters: dict[str, Any],
        wait_for: list[PrefectFuture[Any]],
        dependencies: dict[str, set[RunInput]] | None,
        shared: bytes,
        context: dict[str, Any],
    ) -> None:
        """Upstream futures to their final states, the payload, then the dispatcher."""
        try:
            call = {
                "task": task,
                "task_run_id": task_run_id,
                "parameters": _futures_to_states(parameters),
                "wait_for": _final_states(wait_for) or None,
                "dependencies": dependencies,
                "context": context,
            }
            payload = cloudpickle.dumps((PAYLOAD_FORMAT, shared, call))
        except Exception as exc:  # the task run's answer, not a crash of ours
            done.set_result(
                Crashed(message=f"task run {task.name!r} could not be sent: {exc!r}", data=exc)
            )
            return
        if len(payload) > self.max_payload_bytes:
            error = PayloadTooLargeError(
                f"task run {task.name!r} ({task_run_id}) is {len(payload):,} bytes pickled, over "
                f"the limit of {self.max_payload_bytes:,} bytes (ZmqflowTaskRunner "
                f"max_payload_bytes, the forwarder's --max-payload-bytes): pass large data "
                f"through result storage or a file instead of a parameter"
            )
            done.set_result(Failed(message=str(error), data=error))
            return
        assert self._dispatcher is not None
        self._dispatcher.send(_Job(task_run_id, task.name, payload, done))


def _final_states(futures: list[PrefectFuture[Any]]) -> list[State[Any]]:
    for future in futures:
        future.wait()
    return [future.state for future in futures]


def _futures_to_states(parameters: dict[str, Any]) -> dict[str, Any]:
    """Each PrefectFuture in the parameters replaced by its final state: the replica's
    engine resolves states to data (or NotReady for a failed upstream), and
    records the upstream link from the state's task run id."""

    def to_state(expr: Any) -> Any:
        if isinstance(expr, PrefectFuture):
            expr.wait()
            return expr.state
        return expr

    return visit_collection(parameters, visit_fn=to_state, return_data=True)


class _Dispatcher:
    """The thread that owns the runner's zmqflow Client: submits, reads answers."""

    def __init__(self, runner: ZmqflowTaskRunner, context: contextvars.Context) -> None:
        self.runner = runner
        self.inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.jobs: dict[str, _Job] = {}  # zmqflow task id -> job
        self.broken: BaseException | None = None
        self.thread = threading.Thread(
            target=context.run, args=(self._run,), name="zmqflow-dispatcher", daemon=True
        )
        self.thread.start()

    def send(self, job: _Job) -> None:
        self.inbox.put(job)

    def stop(self) -> None:
        self.inbox.put(None)
        self.thread.join()

    # ---------------------------------------------------------------- loop
    def _run(self) -> None:
        client: Client | None = None
        try:
            client = self.runner.resolve_credentials().connect()
        except BaseException as exc:
            self.broken = exc
        try:
            self._serve(client)
        finally:
            if client is not None:
                client.close()

    def _serve(self, client: Client | None) -> None:
        stopping = False
        silent_since: float | None = None
        while not (stopping and not self.jobs):
            # Block for work only when nothing is out; else take what came and read.
            items: list[_Job | None] = []
            try:
                items.append(self.inbox.get(block=not self.jobs))
                while True:
                    items.append(self.inbox.get_nowait())
            except queue.Empty:
                pass
            batch = [job for job in items if job is not None]
            stopping = stopping or len(batch) < len(items)
            if batch:
                self._submit(client, batch)
            if not self.jobs or client is None:
                continue
            try:
                for result in client.as_completed(timeout=_POLL_S):
                    self._answer(result)
                silent_since = None
            except ForwarderUnreachable as exc:  # reconnecting: give up after timeout_s
                silent_since = silent_since or time.monotonic()
                timeout = self.runner_timeout()
                if time.monotonic() - silent_since > timeout:
                    self._fail_all(
                        f"the zmqflow forwarder at {client.endpoint} was silent for "
                        f"{timeout:g}s with {len(self.jobs)} task runs out: {exc}"
                    )
            except TimeoutError:  # answers still out: look for new submissions
                silent_since = None

    def runner_timeout(self) -> float:
        credentials = self.runner.credentials
        return credentials.timeout_s if isinstance(credentials, ZmqflowCredentials) else 900.0

    def _submit(self, client: Client | None, batch: list[_Job]) -> None:
        if client is None:
            for job in batch:
                self._crash(job, f"no zmqflow forwarder to send it to: {self.broken}")
            return
        runner = self.runner
        payloads = [job.payload or b"" for job in batch]
        for job in batch:
            job.payload = None  # the client holds it until it is accepted, not us
        ids = client.submit_many(
            runner.service,
            payloads,
            keys=[KEY_PREFIX + str(job.task_run_id) for job in batch],
            retries=runner.replays,
            wait_accepted=False,
        )
        self.jobs.update(zip(ids, batch, strict=True))

    def _answer(self, result: TaskResult) -> None:
        job = self.jobs.pop(result.task_id, None)
        if job is None:
            return
        if result.ok:
            try:
                state = cloudpickle.loads(result.payload)
            except Exception as exc:
                self._crash(job, f"its final state from {result.worker} did not unpickle: {exc!r}")
                return
            job.future.set_result(state)
        elif result.code == "too_large":
            error = PayloadTooLargeError(
                f"task run {job.name!r} ({job.task_run_id}) refused by the forwarder: "
                f"{result.error}"
            )
            job.future.set_result(Failed(message=str(error), data=error))
        elif result.code == "unknown_service":
            self._crash(
                job,
                f"no zmqflow worker has ever offered service {self.runner.service!r}: start "
                f"replicas serving it (in the stack: "
                f"docker compose up -d --scale worker-prefect=2)",
            )
        elif result.code == "dead_letter":
            self._crash(
                job,
                f"its replica was lost {result.attempts} times (last {result.worker}); "
                f"not replayed again (ZmqflowTaskRunner replays={self.runner.replays})",
                on_server=True,
            )
        else:
            self._crash(job, f"zmqflow answered {result.code}: {result.error}", on_server=True)

    def _crash(self, job: _Job, why: str, on_server: bool = False) -> None:
        message = f"Task run {job.name!r} ({job.task_run_id}) crashed on the zmqflow fabric: {why}"
        state = Crashed(message=message)
        if on_server:
            self._set_on_server(job, state)
        if not job.future.done():
            job.future.set_result(state)

    def _set_on_server(self, job: _Job, state: State[Any]) -> None:
        """A task run its replica left Running: Crashed on the server too."""
        from prefect.client.orchestration import get_client

        try:
            with get_client(sync_client=True) as api:
                api.set_task_run_state(job.task_run_id, state, force=True)
        except Exception as exc:
            log.warning("could not set task run %s Crashed: %s", job.task_run_id, exc)

    def _fail_all(self, why: str) -> None:
        for job in list(self.jobs.values()):
            self._crash(job, why, on_server=True)
        self.jobs.clear()
