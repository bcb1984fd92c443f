"""A DAG as a user writes one, knowing nothing of zmqflow: dropped into the
DAGs folder by a test while the stack runs, it must run on worker-airflow
replicas without an image rebuild."""

from __future__ import annotations

import platform
import socket
from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, task

with DAG(
    dag_id="zmqflow_it_dropped_in",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
) as dag:
    greet = BashOperator(task_id="greet", bash_command="echo hello from $(hostname)")

    @task
    def describe() -> dict[str, str]:
        return {"host": socket.gethostname(), "python": platform.python_version()}

    greet >> describe()
