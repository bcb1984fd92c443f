"""The executor's settings, checked (no Airflow import).

Contract: ``ExecutorSettings.from_lookup(get)`` reads the options of the
Airflow config section ``[zmqflow_executor]`` through ``get(option)``
(None when unset; environment: ``AIRFLOW__ZMQFLOW_EXECUTOR__<OPTION>``) and
fails with ``InvalidExecutorSettings`` naming the option and what it wants,
so a bad setting stops the scheduler at start with one clear line rather
than failing tasks later. Defaults fit the compose stack.

- ``frontend``: the forwarder's client endpoint (tcp:// or ipc://); default
  ZMQFLOW_AIRFLOW_FRONTEND, else tcp://forwarder:5555. CURVE keys come from
  ZMQFLOW_CURVE_SECRET / ZMQFLOW_CURVE_SERVER (zmqflow.security.peer).
- ``service_format``: the fabric service of a task's queue, ``airflow.{queue}``
  by default; it must hold ``{queue}`` once and no other field.
- ``queue_timeout_s``: how long accepted workloads of a queue wait while no
  worker serves that queue before their task instances fail (120 s).
- ``accept_timeout_s``: how long a workload may wait for the forwarder to
  accept (journal) it before its task instance fails (60 s): a forwarder
  that is down or refuses this scheduler's key.
- ``adopt_timeout_s``: how long a starting scheduler asks the forwarder
  about the workloads of a dead one (10 s).
- ``retries``: how often the forwarder may hand a workload to another
  worker after losing one (2). A task that had started is refused by the
  Execution API on the second worker (it is RUNNING), so the answer is a
  quick failure that Airflow's own retry rules take from there.
- ``max_payload_bytes``: the forwarder's payload limit (1 MiB by default);
  a larger workload fails at once with the sizes in the message.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zmqflow_provider.executors.routing import check_format

SECTION = "zmqflow_executor"


class InvalidExecutorSettings(ValueError):
    """A ``[zmqflow_executor]`` option that does not parse; the message names it."""


def _default_frontend() -> str:
    return os.environ.get("ZMQFLOW_AIRFLOW_FRONTEND") or "tcp://forwarder:5555"


class ExecutorSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    frontend: str = Field(default_factory=_default_frontend)
    service_format: str = "airflow.{queue}"
    queue_timeout_s: float = Field(120.0, gt=0)
    accept_timeout_s: float = Field(60.0, gt=0)
    adopt_timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(2, ge=0, le=100)
    max_payload_bytes: int = Field(1024 * 1024, ge=1024)

    @field_validator("frontend")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("tcp://") and ":" in value[6:]:
            return value
        if value.startswith("ipc://") and 0 < len(value[6:].encode()) <= 107:
            return value
        raise ValueError(f"{value!r} is not tcp://HOST:PORT or ipc:///path (at most 107 bytes)")

    @field_validator("service_format")
    @classmethod
    def _format(cls, value: str) -> str:
        check_format(value)
        return value

    @classmethod
    def from_lookup(cls, get: Callable[[str], str | None]) -> ExecutorSettings:
        given = {name: value for name in cls.model_fields if (value := get(name)) is not None}
        try:
            return cls(**given)
        except ValidationError as exc:
            problems = "; ".join(
                f"{SECTION}.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidExecutorSettings(f"ZmqflowExecutor settings: {problems}") from None
