"""Where a task instance's workload goes on the fabric, and under which key.

Contract (no Airflow import): ``service_for(fmt, queue)`` is the fabric
service of an Airflow queue (``airflow.default`` for queue ``default`` with
the default format), or ``UnroutableQueue`` naming the queue when the result
is not a valid service name (protocol: 1 to 64 bytes of [A-Za-z0-9._-]);
``check_format`` refuses a format without exactly one ``{queue}`` field.
``idempotency_key`` is the task instance's key with its try number, readable
when it fits the protocol's 256 bytes and hashed otherwise (the same rule as
the operator's item keys, ``zmqflow_provider.keys``): one try of one task
instance never runs twice at once on the fabric, whatever ids it is sent under.
"""

from __future__ import annotations

import string

from zmqflow import protocol as p
from zmqflow_provider.keys import MAX_KEY_BYTES, Scope


class UnroutableQueue(ValueError):
    """A task's queue that makes no valid fabric service name."""


def check_format(fmt: str) -> None:
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(fmt) if name is not None]
    except ValueError as exc:
        raise ValueError(f"service_format {fmt!r} does not parse: {exc}") from None
    if fields != ["queue"]:
        raise ValueError(
            f"service_format {fmt!r} must hold the field {{queue}} once and no other "
            f"(found {fields or 'none'}), e.g. 'airflow.{{queue}}'"
        )
    sample = fmt.format(queue="default")
    if not p.valid_service(sample):
        raise ValueError(
            f"service_format {fmt!r} makes {sample!r} for queue 'default', not a valid "
            f"service name (1 to 64 of A-Z a-z 0-9 . _ -)"
        )


def service_for(fmt: str, queue: str | None) -> str:
    queue = queue or "default"
    service = fmt.format(queue=queue)
    if not p.valid_service(service):
        raise UnroutableQueue(
            f"queue {queue!r} makes the fabric service {service!r} (format {fmt!r}), which "
            f"is not a valid service name: use 1 to 64 of A-Z a-z 0-9 . _ - in queue names"
        )
    return service


def idempotency_key(dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> str:
    scope = Scope(dag_id, run_id, task_id, map_index)
    key = f"{scope.key_prefix()}try-{try_number}"
    if len(key.encode()) <= MAX_KEY_BYTES:
        return key
    return f"airflow/{scope.digest}/try-{try_number}"
