"""ZmqflowTaskRunner against a real forwarder and real worker replicas (conftest.py).

Each test runs a flow of runner_tasks in this process on a ZmqflowTaskRunner;
its task runs go through the forwarder to the replicas, which run them with
Prefect's task engine against Prefect's test harness server.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

pytest.importorskip("prefect")

import runner_tasks as rt
from conftest import LocalFabric, wait_for
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterTaskRunId,
)
from prefect.client.schemas.objects import TaskRun
from prefect_zmqflow.task_runners import ZmqflowTaskRunner


def runner(fabric: LocalFabric, **options: Any) -> ZmqflowTaskRunner:
    return ZmqflowTaskRunner(frontend=fabric.frontend, **options)


def task_runs(flow_run_id: UUID) -> list[TaskRun]:
    with get_client(sync_client=True) as api:
        return api.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


def all_final(flow_run_id: UUID, count: int) -> list[TaskRun] | None:
    """The flow run's task runs once the server has ``count`` of them, all final."""
    runs = task_runs(flow_run_id)
    if len(runs) == count and all(r.state and r.state.is_final() for r in runs):
        return runs
    return None


def test_a_submitted_task_runs_on_a_replica_and_returns_its_result(fabric: LocalFabric) -> None:
    flow = rt.submit_one.with_options(task_runner=runner(fabric))

    total, (x, pid) = flow()

    assert total == 3
    assert x == 7
    assert pid in {w.pid for w in fabric.workers}
    assert pid != os.getpid()


def test_map_and_reduce_give_the_results_and_the_server_records_every_task_run(
    fabric: LocalFabric,
) -> None:
    flow = rt.map_and_reduce.with_options(task_runner=runner(fabric))

    state = flow(30, return_state=True)
    squares, total = state.result()

    assert squares == [x * x for x in range(30)]
    assert total == sum(x * x for x in range(30))
    runs = wait_for(lambda: all_final(state.state_details.flow_run_id, 31), "31 final task runs")
    assert {r.state.name for r in runs} == {"Completed"}


def test_wait_for_runs_the_second_task_after_the_first(fabric: LocalFabric, tmp_path: Path) -> None:
    path = tmp_path / "stamps"
    flow = rt.ordered.with_options(task_runner=runner(fabric))

    assert flow(str(path)) == ["first", "second"]
    assert path.read_text().split() == ["first", "second"]


def test_async_tasks_run_on_the_replicas(fabric: LocalFabric) -> None:
    flow = rt.run_async.with_options(task_runner=runner(fabric))

    results = flow(8)

    assert [value for value, _ in results] == [2 * x for x in range(8)]
    assert {pid for _, pid in results} <= {w.pid for w in fabric.workers}


def test_a_failing_task_is_retried_then_failed_with_its_traceback_in_the_logs(
    fabric: LocalFabric, tmp_path: Path
) -> None:
    marker = tmp_path / "attempts"
    flow = rt.fails.with_options(task_runner=runner(fabric))

    state = flow(str(marker), return_state=True)
    name, message, error = state.result()

    assert name == "Failed"
    assert "bad input attempts" in message
    assert error == "ValueError('bad input attempts')"
    assert marker.read_text().count("attempt") == 3  # retries=2

    def traceback_logged() -> bool:
        runs = task_runs(state.state_details.flow_run_id)
        if not runs:
            return False
        with get_client(sync_client=True) as api:
            logs = api.read_logs(
                log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[runs[0].id]))
            )
        text = "\n".join(log.message for log in logs)
        return "Traceback" in text and "ValueError: bad input attempts" in text

    wait_for(traceback_logged, "the task run's traceback in its logs on the server")


def test_a_cached_task_is_not_run_again_and_its_result_reads_back(
    fabric: LocalFabric, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    flow = rt.cached.with_options(task_runner=runner(fabric))

    first = flow(12, str(marker))
    second = flow(12, str(marker))

    assert first == (144, "Completed")
    assert second == (144, "Cached")
    assert marker.read_text().count("ran") == 1


def test_a_payload_over_the_limit_fails_naming_its_size_and_the_limit(fabric: LocalFabric) -> None:
    flow = rt.big_parameter.with_options(task_runner=runner(fabric, max_payload_bytes=100_000))

    name, message, error = flow(200_000)

    assert name == "Failed"
    assert "over the limit of 100,000 bytes" in message
    assert "PayloadTooLargeError" in error
    size = int(message.split(" is ")[1].split(" bytes")[0].replace(",", ""))
    assert size > 200_000


def test_a_service_nobody_serves_crashes_the_task_run_saying_so(fabric: LocalFabric) -> None:
    flow = rt.big_parameter.with_options(task_runner=runner(fabric, service="nobody.here"))

    name, message, _ = flow(10)

    assert name == "Crashed"
    assert "no zmqflow worker has ever offered service 'nobody.here'" in message


def test_task_runs_of_a_killed_replica_are_replayed_once_on_another(
    fabric: LocalFabric, tmp_path: Path
) -> None:
    service = "prefect.chaos"
    victim = fabric.add_worker(service=service)
    wait_for(lambda: fabric.serving(service) == 1, "the victim replica")
    pid_file = tmp_path / "pids"
    flow = rt.slow_map.with_options(task_runner=runner(fabric, service=service))
    outcome: dict[str, Any] = {}

    def run() -> None:
        outcome["state"] = flow(4, str(pid_file), 3.0, return_state=True)

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(
        lambda: pid_file.exists() and str(victim.pid) in pid_file.read_text(),
        "a task run started on the victim",
    )
    victim.send_signal(signal.SIGKILL)
    survivor = fabric.add_worker(service=service)
    thread.join(120)

    state = outcome["state"]
    results = state.result()
    assert [x for x, _ in results] == [0, 1, 2, 3]  # each result once, in order
    assert {pid for _, pid in results} == {survivor.pid}
    runs = wait_for(lambda: all_final(state.state_details.flow_run_id, 4), "4 final task runs")
    assert {r.state.name for r in runs} == {"Completed"}  # same task runs, none left Running


def test_the_runner_pickles_and_duplicates_without_connecting() -> None:
    original = ZmqflowTaskRunner(frontend="tcp://127.0.0.1:9", service="pool-a", replays=1)

    copy = pickle.loads(pickle.dumps(original))
    started = time.monotonic()
    with copy.duplicate() as duplicate:
        assert duplicate == original
    assert time.monotonic() - started < 1.0  # nothing connects before a submit
    assert ZmqflowTaskRunner(service="pool-b") != original
