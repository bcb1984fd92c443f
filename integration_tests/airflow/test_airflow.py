"""Airflow 3 on the fabric, end to end: the REST API, the real Airflow services,
PostgreSQL, the forwarder and Python and Rust workers (orchestrators/airflow).

Each test says what it proves in its name. Faults are caused, never assumed:
workers are SIGKILLed and the triggerer restarted through the docker SDK, and
every work item is accounted for by comparing the whole run's answer with a
single-process rollup of the same data.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
import zmq

from integration_tests.airflow.api import wait_for
from integration_tests.airflow.conftest import AirflowStack
from integration_tests.airflow.inside import run_inside
from integration_tests.harness import ZMQFLOW, curve_socket
from zmqflow.examples import sales

pytestmark = pytest.mark.timeout(900)

FANOUT = "zmqflow_fanout"
ON_EVENT = "zmqflow_on_event"
FULL = sales.DEFAULT  # the DAG's defaults: 10,000 items, 1,000,000 rows


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    """The single-process rollup of the DAG's default data set."""
    return sales.rollup_dataset(FULL)


def _rollup_deferred(airflow: AirflowStack, run_id: str) -> bool:
    ti = airflow.api.task_instance(FANOUT, run_id, "rollup")
    return ti["state"] == "deferred"


def _answer(airflow: AirflowStack, run_id: str) -> dict[str, Any]:
    return airflow.api.xcom(FANOUT, run_id, "reduce")


def test_fanout_of_a_million_rows_equals_the_single_process_rollup(
    airflow: AirflowStack, expected: dict[str, Any]
) -> None:
    assert FULL.rows >= 1_000_000 and FULL.items >= 10_000
    run_id = airflow.api.trigger(FANOUT)
    airflow.api.wait_run(FANOUT, run_id, timeout=600)
    assert _answer(airflow, run_id) == expected
    rollup = airflow.api.xcom(FANOUT, run_id, "rollup")
    assert rollup["count"] == FULL.items and rollup["failed"] == {}
    # Both languages did the work: worker ids are py-... and the Rust worker's own.
    workers = rollup["workers"]
    assert sum(workers.values()) == FULL.items
    assert any(w.startswith("py-") for w in workers), workers
    assert any(not w.startswith("py-") for w in workers), workers


def test_clearing_a_finished_fanout_collects_stored_answers_without_running_items_again(
    airflow: AirflowStack, expected: dict[str, Any]
) -> None:
    run_id = airflow.api.trigger(FANOUT)
    airflow.api.wait_run(FANOUT, run_id, timeout=600)
    before = airflow.completed()
    airflow.api.clear(FANOUT, run_id, ["rollup"])
    wait_for(
        lambda: airflow.api.task_instance(FANOUT, run_id, "rollup")["try_number"] >= 2,
        120,
        "the cleared rollup to start again",
    )
    airflow.api.wait_run(FANOUT, run_id, timeout=600)
    # the forwarder's count of tasks finished by workers did not move: the
    # cleared task's 10,000 items were answered from stored results
    assert airflow.completed() == before, "items ran again"
    rollup = airflow.api.xcom(FANOUT, run_id, "rollup")
    assert rollup["count"] == FULL.items and rollup["cached"] == FULL.items
    assert _answer(airflow, run_id) == expected


def test_fanout_survives_a_python_and_a_rust_worker_sigkilled_mid_run(
    airflow: AirflowStack, expected: dict[str, Any]
) -> None:
    airflow.scale({"worker-python": 2, "worker-rust": 2})
    victims = [airflow.containers("worker-python")[0], airflow.containers("worker-rust")[0]]
    start = airflow.completed()
    lost_before = airflow.counters().get("workers_lost", 0)
    run_id = airflow.api.trigger(FANOUT)
    # Kill once the fabric has finished some items of this run but not all.
    wait_for(lambda: airflow.completed() - start >= 500, 300, "the first 500 items done", 0.1)
    for container in victims:
        container.kill(signal="SIGKILL")
    at_kill = airflow.completed() - start
    assert at_kill < FULL.items, f"the run was over ({at_kill} items) before the kill"
    airflow.api.wait_run(FANOUT, run_id, timeout=600)
    assert _answer(airflow, run_id) == expected
    rollup = airflow.api.xcom(FANOUT, run_id, "rollup")
    assert rollup["failed"] == {} and rollup["count"] == FULL.items
    # the forwarder noticed both deaths (and requeued what they held)
    assert airflow.counters()["workers_lost"] >= lost_before + 2


def test_fanout_survives_a_triggerer_restart_while_deferred(
    airflow: AirflowStack, expected: dict[str, Any]
) -> None:
    # No worker runs while the triggerer restarts: the run is surely mid-way.
    workers = airflow.containers("worker-python") + airflow.containers("worker-rust")
    for container in workers:
        container.stop(timeout=20)
    try:
        run_id = airflow.api.trigger(FANOUT)
        wait_for(lambda: _rollup_deferred(airflow, run_id), 300, "rollup deferred", 1.0)
        (triggerer,) = airflow.containers("airflow-triggerer")
        triggerer.restart(timeout=30)
    finally:
        for container in workers:
            container.start()
    airflow.api.wait_run(FANOUT, run_id, timeout=600)
    assert _answer(airflow, run_id) == expected


def _subscribe(endpoint: str, topic: str) -> zmq.Socket:
    sock = curve_socket(zmq.SUB)  # the bus is CURVE: the harness's client key
    sock.setsockopt_string(zmq.SUBSCRIBE, topic)
    sock.connect(endpoint)
    return sock


def test_a_data_ready_event_from_the_host_runs_zmqflow_on_event(airflow: AirflowStack) -> None:
    data = {"seed": 11, "items": 12, "rows_per_item": 40, "products": 4, "note": "from the host"}
    complete = _subscribe(airflow.events_out, "dev.pipeline.rollup.complete")
    before = {r["dag_run_id"] for r in airflow.api.runs(ON_EVENT)}

    def publish_and_look() -> list[dict[str, Any]]:
        # The AssetWatcher subscribes once its trigger runs in the triggerer;
        # until a run appears, publish again (events may fold into one run).
        out = subprocess.run(
            [ZMQFLOW, "publish", "--connect", airflow.events_in,
             "--kind", "data.ready", "--data", json.dumps(data)],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert json.loads(out.stdout.strip().splitlines()[-1])["published"] == 1
        return wait_for_new_run(3)

    def wait_for_new_run(seconds: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while True:
            new = [r for r in airflow.api.runs(ON_EVENT) if r["dag_run_id"] not in before]
            if new or time.monotonic() >= deadline:
                return new
            time.sleep(0.5)

    runs = wait_for(publish_and_look, 180, "a zmqflow_on_event run after data.ready", 0.1)
    run_id = runs[-1]["dag_run_id"]
    airflow.api.wait_run(ON_EVENT, run_id, timeout=300)

    summary = airflow.api.xcom(ON_EVENT, run_id, "summarize")
    assert summary["event"]["topic"] == "dev.data.ready"
    assert summary["event"]["data"] == data
    data_set = sales.DataSet(seed=11, items=12, rows_per_item=40, products=4)
    assert summary["rollup"] == sales.rollup_dataset(data_set)
    # ... and told downstream subscribers.
    assert complete.poll(30_000), "no pipeline.rollup.complete event"
    topic, _body = complete.recv_multipart()
    assert topic == b"dev.pipeline.rollup.complete"
    complete.close()


# ---- bad input: a clear error, nothing lost, the process stays up ----------
# The operator runs inside the scheduler container (Airflow is not on the
# host) against this stack's forwarder, with connections from AIRFLOW_CONN_*.
# (outside a task, Airflow's SDK reads connections from the environment only)
NOWHERE = json.dumps({"conn_type": "zmqflow", "extra": {"frontend": "tcp://127.0.0.1:9"}})
STACK = {
    "AIRFLOW_CONN_ZMQFLOW_DEFAULT": json.dumps(
        {"conn_type": "zmqflow", "extra": {"frontend": "ipc:///run/zmqflow/frontend.sock"}}
    )
}


def _attempt(call: str) -> str:
    return f"""
from airflow.exceptions import AirflowException
from zmqflow_provider.operators.zmqflow import ZmqflowSubmitOperator
try:
    value = {call}
    print(json.dumps({{"ok": True, "value": value}}))
except AirflowException as exc:
    print(json.dumps({{"ok": False, "error": str(exc)}}))
"""


def test_an_unknown_service_fails_the_task_naming_the_service(airflow: AirflowStack) -> None:
    (scheduler,) = airflow.containers("airflow-scheduler")
    out = run_inside(
        scheduler,
        _attempt(
            'ZmqflowSubmitOperator(task_id="t", service="no-such-service", payloads=[b"x"],'
            ' deferrable=False).execute(context("t"))'
        ),
        env=STACK,
    )
    assert out["ok"] is False
    assert "service 'no-such-service' is unknown to the zmqflow forwarder" in out["error"]


def test_a_forwarder_that_never_answers_is_retried_with_backoff_then_named(
    airflow: AirflowStack,
) -> None:
    (scheduler,) = airflow.containers("airflow-scheduler")
    started = time.monotonic()
    out = run_inside(
        scheduler,
        _attempt(
            'ZmqflowSubmitOperator(task_id="t", service="rollup", payloads=[b"x"],'
            ' zmqflow_conn_id="nowhere", connect_attempts=3, accept_timeout_s=2,'
            ' deferrable=False).execute(context("t"))'
        ),
        env={"AIRFLOW_CONN_NOWHERE": NOWHERE},
    )
    assert out["ok"] is False
    assert "tcp://127.0.0.1:9" in out["error"] and "3 attempts" in out["error"]
    # 3 tries of 2 s with 1 s and 2 s of backoff between them
    assert time.monotonic() - started >= 9


def test_failing_items_fail_the_task_with_their_errors_or_are_returned_on_request(
    airflow: AirflowStack,
) -> None:
    (scheduler,) = airflow.containers("airflow-scheduler")
    good = sales.item_csv(sales.DataSet(items=2, rows_per_item=3), 0).decode()
    payloads = [
        good,
        "not,a,rollup,header\n",
        good,
        "region,product,quantity,unit_price_cents\neu,x,-1,5\n",
    ]
    call = (
        f'ZmqflowSubmitOperator(task_id="{{tid}}", service="rollup", payloads={payloads!r},'
        ' deferrable=False, fail_on_item_error={fail}).execute(context("{tid}"))'
    )
    failed = run_inside(scheduler, _attempt(call.format(tid="fails", fail=True)), env=STACK)
    assert failed["ok"] is False
    assert "2 of 4 'rollup' items failed" in failed["error"]
    assert "item 1: handler_error: rollup: header must be" in failed["error"]
    assert (
        "item 3: handler_error: rollup: line 2: quantity is not a non-negative integer"
        in (failed["error"])
    )
    returned = run_inside(scheduler, _attempt(call.format(tid="returns", fail=False)), env=STACK)
    assert returned["ok"] is True
    value = returned["value"]
    assert sorted(value["failed"]) == ["1", "3"]
    assert value["outputs"][1] is None and value["outputs"][3] is None
    assert json.loads(value["outputs"][0])["rows"] == 3
