"""Run provider code inside an Airflow container against the live forwarder.

Contract: ``run_inside(container, code, env)`` runs Python ``code`` with the
container's Airflow and provider (not the host's, which has no Airflow), with
extra environment variables (e.g. AIRFLOW_CONN_* connections), and returns the
last line of its stdout parsed as JSON; a non-zero exit fails with the output.
``CONTEXT`` is a prelude that defines ``context(task_id)``: the parts of a
task context the operator reads, for calling ``execute`` directly.
"""

from __future__ import annotations

import json
from typing import Any

CONTEXT = """
import json, types
def context(task_id, run_id="it-run", try_number=1):
    ti = types.SimpleNamespace(dag_id="it_checks", run_id=run_id, task_id=task_id,
                               map_index=-1, try_number=try_number)
    return {"ti": ti, "params": {}}
"""


def run_inside(container: Any, code: str, env: dict[str, str] | None = None) -> Any:
    result = container.exec_run(["python", "-c", CONTEXT + code], environment=env or {}, demux=True)
    out = (result.output[0] or b"").decode()
    err = (result.output[1] or b"").decode()
    assert result.exit_code == 0, f"exit {result.exit_code}\n{out}\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])
