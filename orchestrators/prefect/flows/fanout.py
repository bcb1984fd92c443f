"""Flow `zmqflow-fanout`: a million sales rows rolled up through the fabric.

Contract: the flow builds the deterministic data set ``SalesSpec`` names,
cuts it into one-product items for the `rollup` service (at least 10,000
with the defaults), hands them to the fabric in batches of ``batch_size``
(ONE Prefect task per batch; Python and Rust workers share the items),
folds the answers into one result (rows, regions, top_product,
total_revenue_cents, items), writes it as the markdown artifact
``zmqflow-fanout-result`` (the canonical JSON in a code block) and returns
it. Item keys are ``<namespace>:<data set>:<product>:<chunk>``: a run with
the same namespace and data reuses finished batches (Prefect's cache) and
finished items (the forwarder's journal) of an earlier run that crashed.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_zmqflow import ZmqflowCredentials, sales, submit_batch
from prefect_zmqflow.setup import DEFAULT_BLOCK

ARTIFACT_KEY = "zmqflow-fanout-result"


@flow(name="zmqflow-fanout", task_runner=ThreadPoolTaskRunner(max_workers=4))
def zmqflow_fanout(
    rows: int = 1_000_000,
    seed: int = 20261130,
    products: int = 200,
    rows_per_item: int = 100,
    batch_size: int = 500,
    namespace: str = "fanout",
    block: str = DEFAULT_BLOCK,
) -> dict[str, Any]:
    logger = get_run_logger()
    spec = sales.SalesSpec(rows=rows, seed=seed, products=products, rows_per_item=rows_per_item)
    credentials = ZmqflowCredentials.load(block)
    items = sales.make_items(spec, sales.generate(spec), namespace)
    batches = list(sales.chunks(items, batch_size))
    logger.info(
        "%d rows -> %d items -> %d batches of up to %d", rows, len(items), len(batches), batch_size
    )
    futures = [
        submit_batch.with_options(task_run_name=f"rollup-batch-{i:04d}").submit(
            credentials, "rollup", [it.payload for it in batch], [it.key for it in batch]
        )
        for i, batch in enumerate(batches)
    ]
    answers = []
    for batch, future in zip(batches, futures, strict=True):
        answers.extend((it.product, a.output) for it, a in zip(batch, future.result(), strict=True))
    result = sales.reduce(answers)
    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=f"```json\n{sales.canonical(result)}\n```\n",
        description=f"zmqflow-fanout: {result['rows']} rows in {result['items']} items",
    )
    logger.info("result: %s", sales.canonical(result))
    return result
