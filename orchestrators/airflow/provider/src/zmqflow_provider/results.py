"""Where a submission's answers go: XCom when small, a shared volume when not.

Contract: ``store(...)`` returns the one JSON-able value the operator puts in
XCom, a map with ``service``, ``count``, ``failed`` (item index -> error
text), ``cached`` (answers the forwarder had stored when the trigger
collected them: finished earlier, by this try or an earlier one),
``workers`` (worker id -> answers it computed), ``fabric_s`` (seconds
from the first SUBMIT to the last answer, set by the trigger), and either ``outputs``
(the answers in item order) or ``path`` (a JSON file on the volume shared
by the triggerer and the task runners, written atomically).
``load(value)`` gives the answers in item order from either form (None for
a failed item), so consumers never care which was used. Answers
are kept as text (UTF-8) or, for binary output, base64 with ``encoding``
saying so.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_DIR = os.environ.get("ZMQFLOW_AIRFLOW_RESULTS_DIR", "/opt/airflow/shared/results")
INLINE_MAX_BYTES = 64 * 1024  # above this, answers go to a file, not the metadata database


def to_base64(payload: bytes) -> str:
    return base64.b64encode(payload).decode()


def store(
    *,
    service: str,
    outputs: Sequence[str | None],
    failed: dict[int, str],
    cached: int,
    workers: dict[str, int],
    encoding: str,
    path: str | None,
    inline_max_bytes: int = INLINE_MAX_BYTES,
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "service": service,
        "count": len(outputs),
        "failed": {str(i): e for i, e in sorted(failed.items())},
        "cached": cached,
        "workers": dict(sorted(workers.items())),
        "encoding": encoding,
    }
    size = sum(len(o) for o in outputs if o is not None)
    if path is None or size <= inline_max_bytes:
        value["outputs"] = list(outputs)
        return value
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(list(outputs), separators=(",", ":")))
    os.replace(tmp, target)  # readers see the whole file or none
    value["path"] = str(target)
    value["bytes"] = size
    return value


def load(value: dict[str, Any]) -> list[str | bytes | None]:
    """The answers in item order (str, or bytes for base64 output; None when failed)."""
    if "outputs" in value:
        outputs = value["outputs"]
    elif "path" in value:
        outputs = json.loads(Path(value["path"]).read_text())
    else:
        raise ValueError("not a zmqflow results value (no outputs and no path)")
    if len(outputs) != value["count"]:
        raise ValueError(f"expected {value['count']} answers, found {len(outputs)}")
    if value.get("encoding") == "base64":
        return [None if o is None else base64.b64decode(o) for o in outputs]
    return outputs


def default_path(results_dir: str, dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in run_id)
    suffix = "" if map_index < 0 else f".{map_index}"
    return str(Path(results_dir) / dag_id / safe / f"{task_id}{suffix}.json")
