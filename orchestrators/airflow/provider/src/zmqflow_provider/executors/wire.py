"""A workload as it travels on the fabric: its JSON without the token.

Contract (no Airflow import): ``to_wire(workload_dict)`` is the payload the
executor submits, the workload's JSON (``model_dump(mode="json")``) with its
``token`` left out, so that no JWT is ever on the wire, in the forwarder's
journal or in a dead letter; ``from_wire(payload)`` is that dict again for
the worker, which mints a fresh token itself (``worker.mint_token``) right
before it runs the task. ``label(workload_dict)`` names the task instance
for log lines. A payload that is not a workload raises ``BadWorkload``
saying what is wrong.
"""

from __future__ import annotations

import json
from typing import Any

TOKEN_FIELD = "token"


class BadWorkload(ValueError):
    """A payload that is not an ExecuteTask workload from ZmqflowExecutor."""


def to_wire(workload: dict[str, Any]) -> bytes:
    body = {k: v for k, v in workload.items() if k != TOKEN_FIELD}
    return json.dumps(body, separators=(",", ":")).encode()


def from_wire(payload: bytes) -> dict[str, Any]:
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadWorkload(f"the payload is not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("type") != "ExecuteTask":
        kind = body.get("type") if isinstance(body, dict) else type(body).__name__
        raise BadWorkload(f"the payload is not an ExecuteTask workload (type {kind!r})")
    if not isinstance(body.get("ti"), dict) or "id" not in body["ti"]:
        raise BadWorkload("the workload has no task instance (ti.id)")
    if TOKEN_FIELD in body:
        raise BadWorkload("the workload carries a token: workloads travel without one")
    return body


def label(workload: dict[str, Any]) -> str:
    ti = workload.get("ti") or {}
    index = ti.get("map_index", -1)
    mapped = f"[{index}]" if index is not None and index >= 0 else ""
    return (
        f"{ti.get('dag_id')}.{ti.get('task_id')}{mapped} run {ti.get('run_id')} "
        f"try {ti.get('try_number')}"
    )
