"""zmqflow_fanout: a million sales rows rolled up by Python and Rust workers.

Contract: task ``rollup`` makes the deterministic data set named by the run's
params (seed, items, rows_per_item, products; defaults: 10,000 items of 100
rows, 1,000,000 rows) inside the task, one CSV work item per chunk of one
product's sales, and hands the items to the fabric's ``rollup`` service with
the deferrable ZmqflowSubmitOperator. Task ``reduce`` merges the answers into
the rollup of the whole set (docs/services.md: rows, regions, top_product,
total_revenue_cents) plus ``items``, equal to
``zmqflow.examples.sales.rollup_dataset`` of the same params.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Context, Param, task
from zmqflow_provider import results
from zmqflow_provider.operators.zmqflow import ZmqflowSubmitOperator

from zmqflow.examples import sales


def sales_items(context: Context) -> list[bytes]:
    return list(sales.payloads(sales.DataSet.from_params(context["params"])))


with DAG(
    dag_id="zmqflow_fanout",
    description="1,000,000 sales rows in 10,000 work items through the zmqflow fabric",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["zmqflow", "example"],
    params={
        "seed": Param(sales.DEFAULT.seed, type="integer"),
        "items": Param(sales.DEFAULT.items, type="integer", minimum=1),
        "rows_per_item": Param(sales.DEFAULT.rows_per_item, type="integer", minimum=1),
        "products": Param(sales.DEFAULT.products, type="integer", minimum=1),
    },
) as dag:
    rollup = ZmqflowSubmitOperator(
        task_id="rollup",
        service="rollup",
        payloads=sales_items,
        timeout_s=1800,
        # A retry collects the stored answers of finished items: cheap, so soon.
        retries=2,
        retry_delay=timedelta(seconds=10),
    )

    @task(task_id="reduce")
    def reduce(answers: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
        return sales.merge(sales.DataSet.from_params(params or {}), results.load(answers))

    reduce(rollup.output)
