"""The ZFP/2 messages, one class per command (docs/protocol.md).

Contract: a batched message is a list of items (protocol/items.py), named
after what it carries: ``Submit`` (SUBMIT of ``SubmitItem``), ``Tasks``
(TASK of ``TaskItem``), ``WorkerResults`` / ``WorkerFailures`` (a worker's
RESULT / FAILED), ``Results`` / ``Failures`` (a client's RESULT / FAILED).
The message class names are the ``type`` of docs/protocol-vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from zmqflow.limits import MAX_BATCH
from zmqflow.protocol.items import (
    FailureItem,
    ResultItem,
    SubmitItem,
    TaskItem,
    WorkerFailureItem,
    WorkerResultItem,
)

# --------------------------------------------------------------- client side


@dataclass(slots=True)
class Submit:
    """SUBMIT (0x01): 1..max_batch tasks."""

    tasks: list[SubmitItem]


@dataclass(slots=True)
class Accepted:
    ids: list[str]


@dataclass(slots=True)
class Results:
    """RESULT (0x03): 1..N answers for one client."""

    items: list[ResultItem]


@dataclass(slots=True)
class Failures:
    """FAILED (0x04): 1..N failures for one client."""

    items: list[FailureItem]


@dataclass(slots=True)
class Refused:
    """REFUSED (0x05): the forwarder did not take these ids (or a message)."""

    ids: list[str]
    code: str
    reason: str


@dataclass(slots=True)
class Heartbeat:
    """HEARTBEAT (0x06). The forwarder's reply names the forwarder instance
    (``forwarder``), so a client sees a restart at once; a client's has none.
    A reply that also says the forwarder's limits is a ``HeartbeatReply``."""

    forwarder: str | None = None


@dataclass(slots=True)
class HeartbeatReply(Heartbeat):
    """The forwarder's HEARTBEAT reply with its ``max_batch`` (tasks per
    SUBMIT), so a client cuts its batches to fit (a later key of the map:
    a reply without it decodes as a plain ``Heartbeat``)."""

    max_batch: int = MAX_BATCH


@dataclass(slots=True)
class Collect:
    ids: list[str]


@dataclass(slots=True)
class StatusRequest:
    pass


@dataclass(slots=True)
class Status:
    info: dict[str, Any]


@dataclass(slots=True)
class Retry:
    ids: list[str]


# --------------------------------------------------------------- worker side


@dataclass(slots=True)
class Ready:
    worker: str
    language: str
    services: list[str]
    credit: int
    inflight: list[str] = field(default_factory=list)
    version: str = ""
    pid: int = 0
    host: str = ""


@dataclass(slots=True)
class Tasks:
    """TASK (0x12): 1..N tasks for one worker, never more than its free credit."""

    items: list[TaskItem]


@dataclass(slots=True)
class WorkerResults:
    """RESULT (0x13): 1..N handler outputs from one worker."""

    items: list[WorkerResultItem]


@dataclass(slots=True)
class WorkerFailures:
    """FAILED (0x14): 1..N handler errors from one worker."""

    items: list[WorkerFailureItem]


@dataclass(slots=True)
class WorkerHeartbeat:
    pass


@dataclass(slots=True)
class Disconnect:
    reason: str


Message = (
    Submit
    | Accepted
    | Results
    | Failures
    | Refused
    | Heartbeat
    | Collect
    | StatusRequest
    | Status
    | Retry
    | Ready
    | Tasks
    | WorkerResults
    | WorkerFailures
    | WorkerHeartbeat
    | Disconnect
)
Batch = Submit | Tasks | WorkerResults | WorkerFailures | Results | Failures
# messages whose ids travel in one map or array frame (READY: its inflight list)
IdList = Accepted | Collect | Retry | Refused | Ready
