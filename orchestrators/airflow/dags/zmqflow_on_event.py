"""zmqflow_on_event: runs when an event of kind `data.ready` arrives on the bus.

Contract: an AssetWatcher on MessageQueueTrigger(scheme="zmq",
kind="data.ready") turns each `<env>.data.ready` event into an asset event
that schedules a run (events arriving while a run is being created may be
folded into one run). The run reads the event's ``data`` (optional keys:
seed, items, rows_per_item, products: a small data set by default), rolls it up
through the fabric's ``rollup`` service and publishes
`pipeline.rollup.complete` with the result and the event it answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
from airflow.sdk import DAG, Asset, AssetWatcher, Context, task
from zmqflow_provider import results
from zmqflow_provider.operators.zmqflow import (
    ZmqflowPublishEventOperator,
    ZmqflowSubmitOperator,
)

from zmqflow.examples import sales

SMALL = {"seed": 7, "items": 20, "rows_per_item": 50, "products": 5}

data_ready = Asset(
    name="zmqflow_data_ready",
    watchers=[
        AssetWatcher(
            name="zmqflow_data_ready_watcher",
            trigger=MessageQueueTrigger(scheme="zmq", kind="data.ready"),
        )
    ],
)


def _event(context: Context) -> dict[str, Any]:
    """The bus event behind this run: the latest triggering asset event's payload."""
    for asset_events in context["triggering_asset_events"].values():
        for asset_event in reversed(list(asset_events)):
            payload = (asset_event.extra or {}).get("payload")
            if payload:
                return payload
    return {}


def _data_set(event: dict[str, Any]) -> sales.DataSet:
    data = event.get("data") or {}
    return sales.DataSet.from_params({**SMALL, **{k: v for k, v in data.items() if k in SMALL}})


with DAG(
    dag_id="zmqflow_on_event",
    description="data.ready on the bus -> rollup on the fabric -> pipeline.rollup.complete",
    schedule=[data_ready],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["zmqflow", "example", "events"],
) as dag:

    @task
    def receive(**context: Any) -> dict[str, Any]:
        event = _event(context)
        print(f"event {event.get('topic')} from {event.get('source')} seq {event.get('seq')}")
        return event

    event = receive()

    rollup = ZmqflowSubmitOperator(
        task_id="rollup",
        service="rollup",
        payloads=lambda context: list(
            sales.payloads(_data_set(context["ti"].xcom_pull(task_ids="receive")))
        ),
        timeout_s=300,
    )

    @task
    def summarize(event: dict[str, Any], answers: dict[str, Any]) -> dict[str, Any]:
        data_set = _data_set(event)
        rollup_result = sales.merge(data_set, results.load(answers))
        return {
            "event": {k: event.get(k) for k in ("topic", "source", "seq", "data")},
            "rollup": rollup_result,
        }

    summary = summarize(event, rollup.output)

    publish = ZmqflowPublishEventOperator(
        task_id="publish_complete",
        kind="pipeline.rollup.complete",
        data=summary,
    )
    event >> rollup
    summary >> publish
