"""A task on a queue no worker serves: it must fail, naming the queue in its log."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="zmqflow_it_unserved_queue",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    is_paused_upon_creation=False,
) as dag:
    BashOperator(task_id="nowhere", bash_command="echo never", queue="nowhere", retries=0)
