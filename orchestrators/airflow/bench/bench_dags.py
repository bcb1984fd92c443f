"""The executor benchmark's DAGs: the same 200 trivial mapped tasks, one DAG per executor.

Copied by scripts/bench_airflow_executor.py into its own DAGs folder (not the
stack's: the Celery executor is configured only in the benchmark's stack).
Each DAG pins its executor; ``zmqflow_bench_executor_zmqflow`` uses the
default one, ZmqflowExecutor. TASKS mapped instances of a task that returns
its input: what is measured is the executor, not the work.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

TASKS = 200
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor", "zmqflow": None}

for name, executor in EXECUTORS.items():
    with DAG(
        dag_id=f"zmqflow_bench_executor_{name}",
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        is_paused_upon_creation=False,
        max_active_tasks=64,
        tags=["zmqflow", "bench"],
        default_args={"executor": executor} if executor else {},
    ) as dag:

        @task
        def noop(i: int) -> int:
            return i

        noop.expand(i=list(range(TASKS)))
    globals()[dag.dag_id] = dag
