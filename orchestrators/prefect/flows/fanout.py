"""Flow `zmqflow-fanout`: a million sales rows rolled up through the fabric.

Contract: the flow rolls up the example data set ``zmqflow.examples.sales``
names (the same as Airflow's ``zmqflow_fanout``; defaults ``sales.DEFAULT``:
10,000 one-product items of 100 rows, 1,000,000 rows) with the `rollup`
service, handing the items to the fabric in batches of ``batch_size`` (ONE
Prefect task per batch, its payloads made from the data set as it is
submitted; Python and Rust workers share the items). It merges the answers into one result (rows,
regions, top_product, total_revenue_cents, items), writes it as the
markdown artifact ``zmqflow-fanout-result`` (the canonical JSON in a code
block) and returns it. Item keys are ``<namespace>:<data set tag>:<index>``:
a run with the same namespace and data reuses finished batches (Prefect's
cache) and finished items (the forwarder's journal) of an earlier run that
crashed.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_zmqflow import ZmqflowCredentials, submit_batch
from prefect_zmqflow.setup import DEFAULT_BLOCK

from zmqflow.examples import sales

ARTIFACT_KEY = "zmqflow-fanout-result"


def item_keys(namespace: str, data: sales.DataSet, indices: range) -> list[str]:
    return [f"{namespace}:{data.tag}:{i}" for i in indices]


@flow(name="zmqflow-fanout", task_runner=ThreadPoolTaskRunner(max_workers=4))
def zmqflow_fanout(
    seed: int = sales.DEFAULT.seed,
    items: int = sales.DEFAULT.items,
    rows_per_item: int = sales.DEFAULT.rows_per_item,
    products: int = sales.DEFAULT.products,
    batch_size: int = 500,
    namespace: str = "fanout",
    block: str = DEFAULT_BLOCK,
) -> dict[str, Any]:
    logger = get_run_logger()
    data = sales.DataSet(seed=seed, items=items, rows_per_item=rows_per_item, products=products)
    credentials = ZmqflowCredentials.load(block)
    batches = [range(s, min(s + batch_size, data.items)) for s in range(0, data.items, batch_size)]
    logger.info(
        "%d rows -> %d items -> %d batches of up to %d",
        data.rows, data.items, len(batches), batch_size,
    )  # fmt: skip
    futures = [
        submit_batch.with_options(task_run_name=f"rollup-batch-{i:04d}").submit(
            credentials,
            "rollup",
            [sales.item_csv(data, index) for index in batch],
            item_keys(namespace, data, batch),
        )
        for i, batch in enumerate(batches)
    ]
    answers = [a.output for future in futures for a in future.result()]
    result = sales.merge(data, answers)
    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=f"```json\n{sales.canonical(result)}\n```\n",
        description=f"zmqflow-fanout: {result['rows']} rows in {result['items']} items",
    )
    logger.info("result: %s", sales.canonical(result))
    return result
