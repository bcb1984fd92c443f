"""Flow `zmqflow-on-event`: started by a `data.ready` event on the bus.

Contract: the deployment's trigger (prefect.yaml) runs this flow for every
bus event of kind ``data.ready`` that the bridge turned into the Prefect
event ``zmqflow.data.ready``; ``data`` is the event's data map. The flow
rolls up a small data set (``rows`` from the data, default 1,000; ``seed``
likewise) through the fabric in one batch and checks it against the
single-process reference; it fails when they differ.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect_zmqflow import ZmqflowCredentials, sales, submit_batch
from prefect_zmqflow.setup import DEFAULT_BLOCK


@flow(name="zmqflow-on-event")
def zmqflow_on_event(
    data: dict[str, Any] | None = None,
    event_id: str = "",
    block: str = DEFAULT_BLOCK,
) -> dict[str, Any]:
    logger = get_run_logger()
    data = data or {}
    spec = sales.SalesSpec(
        rows=int(data.get("rows", 1_000)), seed=int(data.get("seed", 1)), products=10,
        rows_per_item=100,
    )  # fmt: skip
    credentials = ZmqflowCredentials.load(block)
    rows = sales.generate(spec)
    items = sales.make_items(spec, rows, f"on-event-{event_id or 'manual'}")
    answers = submit_batch(
        credentials, "rollup", [it.payload for it in items], [it.key for it in items]
    )
    result = sales.reduce((it.product, a.output) for it, a in zip(items, answers, strict=True))
    expected = sales.reference(spec, rows)
    if result != expected:
        raise ValueError(f"fabric result {result} differs from the reference {expected}")
    logger.info("event %s (data %s): %s", event_id, data, sales.canonical(result))
    return result
