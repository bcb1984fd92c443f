"""Benchmark DAGs for `make bench-airflow` (scripts/bench_airflow.py).

Contract: both DAGs roll up items of the example sales data set
(zmqflow.examples.sales) and are triggered, never scheduled.
- ``zmqflow_bench_fabric``: one deferrable ZmqflowSubmitOperator task,
  ``rollup``, hands ``items`` items (conf; default 10,000) to the fabric.
- ``zmqflow_bench_mapping``: Airflow's own way: dynamic task mapping, one
  mapped task instance per item (``items`` in conf, at most
  ``max_map_length``, 1,024 by default), each computing its item's rollup
  in the task process with the same code the Python worker runs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Context, Param, task
from zmqflow_provider.operators.zmqflow import ZmqflowSubmitOperator

from zmqflow import handlers
from zmqflow.examples import sales

PARAMS = {
    "seed": Param(sales.DEFAULT.seed, type="integer"),
    "items": Param(sales.DEFAULT.items, type="integer", minimum=1),
    "rows_per_item": Param(sales.DEFAULT.rows_per_item, type="integer", minimum=1),
    "products": Param(sales.DEFAULT.products, type="integer", minimum=1),
}


def _items(context: Context) -> list[bytes]:
    return list(sales.payloads(sales.DataSet.from_params(context["params"])))


with DAG(
    dag_id="zmqflow_bench_fabric",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["zmqflow", "benchmark"],
    params=PARAMS,
):
    ZmqflowSubmitOperator(task_id="rollup", service="rollup", payloads=_items, timeout_s=1800)


with DAG(
    dag_id="zmqflow_bench_mapping",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["zmqflow", "benchmark"],
    params={**PARAMS, "items": Param(200, type="integer", minimum=1, maximum=1024)},
):

    @task
    def indices(params: dict[str, Any] | None = None) -> list[int]:
        return list(range(int((params or {})["items"])))

    @task
    def rollup_item(index: int, params: dict[str, Any] | None = None) -> str:
        data = sales.DataSet.from_params(params or {})
        return handlers.rollup(sales.item_csv(data, index)).decode()

    rollup_item.expand(index=indices())
