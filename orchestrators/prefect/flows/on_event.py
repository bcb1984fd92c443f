"""Flow `zmqflow-on-event`: started by a `data.ready` event on the bus.

Contract: the deployment's trigger (prefect.yaml) runs this flow for every
bus event of kind ``data.ready`` that the bridge turned into the Prefect
event ``zmqflow.data.ready``; ``data`` is the event's data map. The flow
rolls up a small example data set (zmqflow.examples.sales; ``seed``,
``items``, ``rows_per_item`` and ``products`` from the data override
``SMALL``, other keys are ignored, as in Airflow's ``zmqflow_on_event``)
through the fabric in one batch and checks it against the single-process
reference; it fails when they differ.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect_zmqflow import ZmqflowCredentials, submit_batch
from prefect_zmqflow.setup import DEFAULT_BLOCK

from zmqflow.examples import sales

SMALL = {"seed": 1, "items": 10, "rows_per_item": 100, "products": 10}


@flow(name="zmqflow-on-event")
def zmqflow_on_event(
    data: dict[str, Any] | None = None,
    event_id: str = "",
    block: str = DEFAULT_BLOCK,
) -> dict[str, Any]:
    logger = get_run_logger()
    data = data or {}
    data_set = sales.DataSet.from_params({**SMALL, **{k: v for k, v in data.items() if k in SMALL}})
    credentials = ZmqflowCredentials.load(block)
    namespace = f"on-event-{event_id or 'manual'}"
    answers = submit_batch(
        credentials,
        "rollup",
        list(sales.payloads(data_set)),
        [f"{namespace}:{data_set.tag}:{i}" for i in range(data_set.items)],
    )
    result = sales.merge(data_set, [a.output for a in answers])
    expected = sales.rollup_dataset(data_set)
    if result != expected:
        raise ValueError(f"fabric result {result} differs from the reference {expected}")
    logger.info("event %s (data %s): %s", event_id, data, sales.canonical(result))
    return result
