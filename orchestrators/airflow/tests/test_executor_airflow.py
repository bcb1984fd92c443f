"""ZmqflowExecutor and the worker-airflow handler, with Airflow 3.3 itself.

Needs Airflow: skipped in the host's .venv, run by `make test-airflow` in
.venv-airflow (scripts/airflow-venv.sh, from the Airflow image's wheelhouse).
The executor is driven as the scheduler drives it (queue_workload,
heartbeat, get_event_buffer, try_adopt_task_instances, revoke_task, end)
with real ExecuteTask workloads, against a real forwarder and workers on
loopback; the workers echo the payload, so a test sees exactly what travels.
A whole task run through the Execution API is the integration tests' part
(integration_tests/airflow/test_executor.py).
"""

from __future__ import annotations

import json
import os
import sys
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("airflow", reason="needs Airflow: make test-airflow runs it in .venv-airflow")

from fabric import Fabric, wait_for

pytestmark = pytest.mark.timeout(180)

HERE = Path(__file__).resolve().parent
ECHO = ("--handler", "zmqflow.handlers:echo", "--concurrency", "2", "--credit", "2")
SLOW = ("--handler", "executor_handlers:slow_echo", "--concurrency", "2", "--credit", "2")
JWT_SECRET = "test-secret-" + "x" * 64


@pytest.fixture(autouse=True)
def airflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throwaway Airflow home; the workers' handler module on their path."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(tmp_path / "logs"))
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), *sys.path]))
    from airflow.configuration import conf

    conf.set("logging", "base_log_folder", str(tmp_path / "logs"))
    conf.set("api_auth", "jwt_secret", JWT_SECRET)
    return tmp_path


def workload(queue: str = "default", try_number: int = 1, task: str = "hello") -> Any:
    from airflow.executors.workloads import BundleInfo, ExecuteTask
    from airflow.executors.workloads.task import TaskInstanceDTO

    ti_id = uuid.uuid4()
    ti = TaskInstanceDTO(
        id=ti_id,
        task_id=task,
        dag_id="zmqflow_test",
        run_id="manual__1",
        try_number=try_number,
        dag_version_id=uuid.uuid4(),
        map_index=-1,
        queue=queue,
        pool_slots=1,
        priority_weight=1,
        external_executor_id=str(uuid.uuid4()),
    )
    return ExecuteTask(
        ti=ti,
        dag_rel_path=Path("zmqflow_test.py"),
        token="eyJhbGciOi.the-scheduler-token.sig",
        log_path=f"dag_id=zmqflow_test/run_id=manual__1/task_id={task}/attempt={try_number}.log",
        bundle_info=BundleInfo(name="dags-folder"),
    )


@pytest.fixture
def executor(fabric: Fabric, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AIRFLOW__ZMQFLOW_EXECUTOR__FRONTEND", fabric.frontend)
    monkeypatch.setenv("AIRFLOW__ZMQFLOW_EXECUTOR__QUEUE_TIMEOUT_S", "2")
    from zmqflow_provider.executors import ZmqflowExecutor

    ex = ZmqflowExecutor(parallelism=8)
    ex.start()
    try:
        yield ex
    finally:
        ex.end()


def events_for(executor: Any, key: Any, timeout: float = 30.0) -> tuple[str, Any]:
    seen: dict[Any, tuple[str, Any]] = {}

    def probe() -> bool:
        executor.heartbeat()  # trigger_tasks + sync, as the scheduler's loop does
        seen.update(executor.get_event_buffer())
        return key in seen

    wait_for(probe, f"an executor event for {key}", timeout)
    return seen[key]


def test_a_task_instance_runs_on_a_worker_of_its_queue_without_its_token(
    fabric: Fabric, executor: Any
) -> None:
    fabric.start_forwarder()
    fabric.start_worker("airflow.default", extra=ECHO)
    fabric.wait_workers(1)
    work = workload()
    executor.queue_workload(work, session=None)
    state, info = events_for(executor, work.ti.key)
    assert state == "success", info
    travelled = json.loads(info)  # the echo worker answered with the payload itself
    assert "token" not in travelled and "the-scheduler-token" not in info
    assert travelled["ti"]["id"] == str(work.ti.id)
    assert work.ti.key not in executor.running


def test_a_queue_nobody_serves_fails_the_task_with_its_name_in_the_task_log(
    fabric: Fabric, executor: Any, airflow_home: Path
) -> None:
    fabric.start_forwarder()
    fabric.start_worker("airflow.default", extra=ECHO)
    fabric.wait_workers(1)
    work = workload(queue="gpu")
    executor.queue_workload(work, session=None)
    state, info = events_for(executor, work.ti.key)
    assert state == "failed" and "queue 'gpu'" in info and "airflow.gpu" in info
    log = (airflow_home / "logs" / work.log_path).read_text()
    assert "queue 'gpu'" in json.loads(log.splitlines()[-1])["event"]


def test_a_queue_name_that_makes_no_service_fails_at_once(executor: Any) -> None:
    work = workload(queue="my queue")
    executor.queue_workload(work, session=None)
    state, info = events_for(executor, work.ti.key, timeout=5)
    assert state == "failed" and "queue 'my queue'" in info


def test_a_restarted_scheduler_adopts_running_workloads_and_they_finish_once(
    fabric: Fabric, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zmqflow_provider.executors import ZmqflowExecutor

    fabric.start_forwarder()
    worker = fabric.start_worker("airflow.default", extra=SLOW)
    fabric.wait_workers(1)
    monkeypatch.setenv("AIRFLOW__ZMQFLOW_EXECUTOR__FRONTEND", fabric.frontend)
    old = ZmqflowExecutor(parallelism=8)
    old.start()
    running, unsent = workload(task="running"), workload(task="unsent")
    old.queue_workload(running, session=None)
    old.heartbeat()
    fabric.wait_holding(worker)
    old.end()  # the scheduler stops; its task keeps running on the worker

    new = ZmqflowExecutor(parallelism=8)
    new.start()
    try:

        def ti(work: Any) -> Any:
            return types.SimpleNamespace(
                key=work.ti.key, queue="default", external_executor_id=work.ti.external_executor_id
            )

        # `unsent` was QUEUED by the old scheduler but never reached the forwarder
        not_adopted = new.try_adopt_task_instances([ti(running), ti(unsent)])
        assert [t.key for t in not_adopted] == [unsent.ti.key]
        state, _ = events_for(new, running.ti.key)
        assert state == "success"
        assert fabric.status()["counters"]["completed"] == 1
    finally:
        new.end()


def idle(status: dict[str, Any]) -> bool:
    return status["inflight"] == 0 and not any(status["queues"].values())


def test_a_revoked_task_instance_gets_no_event(fabric: Fabric, executor: Any) -> None:
    fabric.start_forwarder()
    fabric.start_worker("airflow.default", extra=SLOW)
    fabric.wait_workers(1)
    revoked, kept = workload(task="revoked"), workload(task="kept")
    executor.queue_workload(revoked, session=None)
    executor.queue_workload(kept, session=None)
    executor.heartbeat()
    executor.revoke_task(ti=types.SimpleNamespace(key=revoked.ti.key))
    assert revoked.ti.key not in executor.running
    state, _ = events_for(executor, kept.ti.key)
    assert state == "success"
    # the revoked one may never have been sent (forgotten before its turn came) or
    # may have run: either way, once the forwarder holds nothing, no event is owed
    wait_for(lambda: idle(fabric.status()), "the forwarder to hold nothing")
    executor.heartbeat()
    assert revoked.ti.key not in executor.get_event_buffer()


def test_a_workload_over_the_payload_limit_fails_at_once_with_the_sizes(executor: Any) -> None:
    big = workload()
    big.bundle_info.name = "b" * 2_000_000  # a workload too large for one task
    executor.queue_workload(big, session=None)
    state, info = events_for(executor, big.ti.key, timeout=5)
    assert state == "failed" and "over the forwarder's payload limit" in info


def test_the_worker_mints_the_schedulers_token_for_the_task_instance() -> None:
    import jwt
    from zmqflow_provider.executors.worker import mint_token

    ti_id = str(uuid.uuid4())
    claims = jwt.decode(
        mint_token(ti_id), JWT_SECRET, algorithms=["HS512"], options={"verify_aud": False}
    )
    assert claims["sub"] == ti_id and claims["scope"] == "workload"


def test_the_handler_fails_a_workload_it_cannot_run_naming_the_task_and_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from zmqflow_provider.executors import wire
    from zmqflow_provider.executors.worker import WorkloadFailed, run_workload

    monkeypatch.setenv("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "http://127.0.0.1:9/execution/")
    payload = wire.to_wire(workload().model_dump(mode="json"))
    with pytest.raises(WorkloadFailed) as err:
        run_workload(payload, {})
    text = str(err.value)
    assert "zmqflow_test.hello run manual__1 try 1" in text and "exit code" in text
    with pytest.raises(wire.BadWorkload):
        run_workload(b'{"type": "ExecuteTask", "token": "x", "ti": {"id": 1}}', {})
