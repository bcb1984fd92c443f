"""zmqflow_executor_demo: ordinary Airflow tasks, spread over the worker-airflow replicas.

Nothing here knows about zmqflow: a BashOperator, a PythonOperator, a
``@task`` mapped over 100 items and a reduce. The stack's executor
(ZmqflowExecutor) hands each task instance to a worker-airflow replica over
the fabric; every task returns the host it ran on, and so does each task
instance's ``hostname`` in the UI (Grid view, task instance details) and the
REST API. ``reduce`` returns how many items each replica squared.
Scale the replicas and run it again:
``docker compose up -d --scale worker-airflow=3``.
"""

from __future__ import annotations

import socket
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, task


def where() -> dict[str, Any]:
    return {"host": socket.gethostname()}


with DAG(
    dag_id="zmqflow_executor_demo",
    description="Ordinary tasks run by ZmqflowExecutor on the worker-airflow replicas",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["zmqflow", "example", "executor"],
    default_args={"retries": 2, "retry_delay": timedelta(seconds=2)},
) as dag:
    # the last line of its output is its XCom: the replica's hostname
    bash = BashOperator(task_id="bash", bash_command='echo "bash ran on $(hostname)"; hostname')
    python = PythonOperator(task_id="python", python_callable=where)

    @task
    def items() -> list[int]:
        return list(range(100))

    @task
    def square(n: int) -> dict[str, Any]:
        return {"n": n, "square": n * n, "host": socket.gethostname()}

    @task
    def reduce(squares: list[dict[str, Any]]) -> dict[str, Any]:
        squares = list(squares)
        return {
            "items": len(squares),
            "sum_of_squares": sum(s["square"] for s in squares),
            "items_per_host": dict(Counter(s["host"] for s in squares)),
            "reduce_host": socket.gethostname(),
        }

    [bash, python] >> reduce(square.expand(n=items()))
