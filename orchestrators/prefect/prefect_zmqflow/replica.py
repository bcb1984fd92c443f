"""The replica side of ZmqflowTaskRunner: a zmqflow handler that runs one Prefect task run.

Contract: ``run_task_run(payload, headers) -> bytes`` is an ordinary zmqflow
handler (``zmqflow worker --service prefect.task --handler
prefect_zmqflow.replica:run_task_run``). The payload is the cloudpickled call
``ZmqflowTaskRunner`` made (task, task run id, parameters with upstream
states, wait_for states, dependencies, the flow run's serialized context);
it is run by Prefect's own task engine (``run_task_sync``, or
``run_task_async`` on a fresh event loop for async tasks) with
``return_type="state"``: the engine hydrates the context (settings, flow
run, tags), creates the task run under the given id and reports its states
and logs to the Prefect API. The answer is the cloudpickled final state.
Before answering, the events the engine queued are sent, so that a replica
killed right after answering leaves no task run Running on the server.

A payload that does not unpickle (the task's module is not importable here,
say) raises a ValueError naming the cause, never the payload's content: the
runner turns it into a Crashed state. An exception that escapes the engine
(BaseException included: a task calling sys.exit must not end the handler
thread) is answered as a Crashed state.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from typing import Any

import cloudpickle
from prefect.context import SettingsContext
from prefect.events.worker import EventsWorker
from prefect.states import Crashed
from prefect.task_engine import run_task_async, run_task_sync

from prefect_zmqflow.task_runners import PAYLOAD_FORMAT

log = logging.getLogger("prefect_zmqflow.replica")


def run_task_run(payload: bytes, headers: Mapping[str, Any] | None = None) -> bytes:
    call = _call(payload)
    task = call["task"]
    try:
        if task.isasync:
            state = asyncio.run(run_task_async(**call, return_type="state"))
        else:
            state = run_task_sync(**call, return_type="state")
    except BaseException as exc:
        state = Crashed(message=f"task run crashed on its replica: {exc!r}")
    _send_events(call["context"]["settings_context"])
    return cloudpickle.dumps(state)


def _call(payload: bytes) -> dict[str, Any]:
    """The keyword arguments of the task engine, from a ZmqflowTaskRunner payload."""
    try:
        form, shared, call = cloudpickle.loads(payload)
        if form != PAYLOAD_FORMAT:
            raise ValueError(f"payload format {form}, this replica reads {PAYLOAD_FORMAT}")
        settings, flow_run = _shared(shared)
    except Exception as exc:
        raise ValueError(
            f"the task run did not unpickle on this replica: {type(exc).__name__}: {exc} "
            f"(is the flow's module importable here: mounted flows folder, PYTHONPATH, "
            f"the same Python packages?)"
        ) from None
    # A SettingsContext made from model instances validates nothing again.
    call["context"] = {
        "settings_context": {"profile": settings.profile, "settings": settings.settings},
        "flow_run_context": dict(flow_run),
        **call["context"],
    }
    return call


@functools.lru_cache(maxsize=16)
def _shared(shared: bytes) -> tuple[SettingsContext, dict[str, Any]]:
    """The flow run's part of the context, the same for all its task runs: unpickled
    and its settings built once (building Prefect's Settings from their dump is
    most of what a task run costs here otherwise)."""
    parts = cloudpickle.loads(shared)
    settings = parts.get("settings_context")
    return SettingsContext(**settings) if settings else SettingsContext.get(), parts.get(
        "flow_run_context", {}
    )


def _send_events(settings: dict[str, Any]) -> None:
    """Wait until the engine's queued state events have left (no-op when none).

    Under the flow run's settings, as the engine ran: the events client of
    other settings (no PREFECT_API_URL) would start an ephemeral server.
    """
    with EventsWorker._instance_lock:
        started = bool(EventsWorker._instances)
    if not started:
        return
    try:
        with SettingsContext(**settings):
            EventsWorker.instance().wait_until_empty()
    except Exception as exc:  # the answer matters more than the record
        log.warning("events not flushed: %s", exc)
