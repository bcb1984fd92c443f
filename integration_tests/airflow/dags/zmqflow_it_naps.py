"""Four tasks that each sleep a while (params.seconds) and say where they ran:
long enough to kill a replica or restart the scheduler under them."""

from __future__ import annotations

import socket
import time
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, task

with DAG(
    dag_id="zmqflow_it_naps",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
    params={"seconds": Param(15, type="integer", minimum=0)},
    default_args={"retries": 2, "retry_delay": timedelta(seconds=1)},
) as dag:

    @task
    def nap(i: int, params: dict | None = None) -> dict[str, object]:
        seconds = int((params or {}).get("seconds", 15))
        print(f"nap {i} on {socket.gethostname()} for {seconds} s", flush=True)
        time.sleep(seconds)
        return {"i": i, "host": socket.gethostname()}

    nap.expand(i=[0, 1, 2, 3])
