"""The executor's link to the fabric, against a real forwarder and workers.

FabricLink is what ZmqflowExecutor runs in the scheduler: these tests drive
it as the executor does (submit, collect, adopt, forget, close) with the
programs users run (``python -m zmqflow forwarder|worker``) on loopback. The
workers run the built-in ``sleep`` and ``echo`` handlers under the services
the executor names (``airflow.<queue>``); the Airflow side (the handler that
runs workloads) is in test_executor_airflow.py.
"""

from __future__ import annotations

import time
import uuid

import pytest
from fabric import Fabric, free_port, wait_for
from zmqflow_provider.executors.fabric import FabricLink, Outcome
from zmqflow_provider.executors.settings import ExecutorSettings

pytestmark = pytest.mark.timeout(120)

SLEEP = ("--handler", "zmqflow.handlers:sleep", "--concurrency", "2", "--credit", "2")


def link_to(endpoint: str, **settings: float) -> FabricLink:
    link = FabricLink(ExecutorSettings(frontend=endpoint, **settings), heartbeat_interval=0.5)
    link.start()
    return link


def outcomes_of(link: FabricLink, *ids: str, timeout: float = 30.0) -> dict[str, Outcome]:
    seen: dict[str, Outcome] = {}

    def probe() -> bool:
        seen.update((o.task_id, o) for o in link.outcomes())
        return all(i in seen for i in ids)

    wait_for(probe, f"the outcomes of {', '.join(ids)}", timeout)
    return seen


def outcome_of(link: FabricLink, task_id: str, timeout: float = 30.0) -> Outcome:
    return outcomes_of(link, task_id, timeout=timeout)[task_id]


def new_id() -> str:
    return str(uuid.uuid4())


def completed(fabric: Fabric) -> int:
    return int(fabric.status()["counters"].get("completed", 0))


def test_a_workload_runs_on_a_worker_of_its_queue_and_comes_back_ok(fabric: Fabric) -> None:
    fabric.start_forwarder()
    fabric.start_worker("airflow.default", extra=SLEEP)
    fabric.wait_workers(1)
    link = link_to(fabric.frontend)
    try:
        task_id = new_id()
        link.submit(task_id, "default", "airflow.default", b"20", "airflow/d/r/t/-1/try-1")
        outcome = outcome_of(link, task_id)
        assert outcome.ok, outcome
        assert outcome.detail == "20" and outcome.worker
    finally:
        link.close()


def test_one_try_sent_twice_under_two_ids_runs_once(fabric: Fabric) -> None:
    fabric.start_forwarder()
    fabric.start_worker("airflow.default", extra=SLEEP)
    fabric.wait_workers(1)
    link = link_to(fabric.frontend)
    try:
        first, second = new_id(), new_id()
        key = "airflow/dag/run/task/-1/try-1"
        link.submit(first, "default", "airflow.default", b"300", key)
        link.submit(second, "default", "airflow.default", b"300", key)
        both = outcomes_of(link, first, second)
        assert both[first].ok and both[second].ok, both
        assert completed(fabric) == 1
    finally:
        link.close()


def test_a_queue_no_worker_ever_served_fails_at_once_naming_the_queue(fabric: Fabric) -> None:
    fabric.start_forwarder()
    fabric.start_worker("airflow.default", extra=SLEEP)
    fabric.wait_workers(1)
    link = link_to(fabric.frontend)
    try:
        task_id = new_id()
        link.submit(task_id, "gpu", "airflow.gpu", b"1", None)
        outcome = outcome_of(link, task_id, timeout=10)
        assert not outcome.ok
        assert "queue 'gpu'" in outcome.detail and "airflow.gpu" in outcome.detail
        assert "no zmqflow worker has ever served it" in outcome.detail
    finally:
        link.close()


def test_a_queue_whose_workers_are_all_gone_fails_after_the_queue_timeout(
    fabric: Fabric,
) -> None:
    fabric.start_forwarder()
    gpu = fabric.start_worker("airflow.gpu", extra=SLEEP)
    fabric.wait_workers(1)
    fabric.kill(gpu)
    fabric.wait_workers(0)
    link = link_to(fabric.frontend, queue_timeout_s=1.0)
    try:
        task_id = new_id()
        started = time.monotonic()
        link.submit(task_id, "gpu", "airflow.gpu", b"1", None)
        outcome = outcome_of(link, task_id, timeout=20)
        assert not outcome.ok
        assert "queue 'gpu'" in outcome.detail and "has served it for 1 s" in outcome.detail
        assert time.monotonic() - started < 10
    finally:
        link.close()


def test_a_forwarder_that_is_down_fails_workloads_after_the_accept_timeout_then_serves(
    fabric: Fabric,
) -> None:
    """The scheduler's start with the forwarder down: the link keeps running, the
    workload fails with a clear message, and work flows once the forwarder is up."""
    link = link_to(fabric.frontend, accept_timeout_s=1.5)
    try:
        lost = new_id()
        link.submit(lost, "default", "airflow.default", b"1", None)
        outcome = outcome_of(link, lost, timeout=30)
        assert not outcome.ok
        assert fabric.frontend in outcome.detail and "did not accept" in outcome.detail
        fabric.start_forwarder()
        fabric.start_worker("airflow.default", extra=SLEEP)
        fabric.wait_workers(1)
        later = new_id()
        link.submit(later, "default", "airflow.default", b"5", None)
        assert outcome_of(link, later, timeout=60).ok
    finally:
        link.close()


def test_a_new_link_adopts_a_running_workload_and_it_finishes_once(fabric: Fabric) -> None:
    """A scheduler restarted mid-task: the new one re-attaches by id."""
    fabric.start_forwarder()
    worker = fabric.start_worker("airflow.default", extra=SLEEP)
    fabric.wait_workers(1)
    old = link_to(fabric.frontend)
    task_id = new_id()
    old.submit(task_id, "default", "airflow.default", b"1500", "airflow/d/r/t/-1/try-1")
    fabric.wait_holding(worker)
    assert old.close() == []  # accepted: nothing left half-submitted
    new = link_to(fabric.frontend)
    try:
        assert new.adopt([task_id]) == set()
        new.collect({task_id: ("default", "airflow.default")})
        assert outcome_of(new, task_id).ok
        assert completed(fabric) == 1
    finally:
        new.close()


def test_adoption_hands_back_ids_the_forwarder_never_saw(fabric: Fabric) -> None:
    fabric.start_forwarder()
    link = link_to(fabric.frontend)
    try:
        never_sent = new_id()
        assert link.adopt([never_sent]) == {never_sent}
    finally:
        link.close()


def test_a_forgotten_workload_has_no_outcome(fabric: Fabric) -> None:
    fabric.start_forwarder()
    fabric.start_worker("airflow.default", extra=SLEEP)
    fabric.wait_workers(1)
    link = link_to(fabric.frontend)
    try:
        revoked, kept = new_id(), new_id()
        link.submit(revoked, "default", "airflow.default", b"200", None)
        link.forget(revoked)
        link.submit(kept, "default", "airflow.default", b"400", None)
        assert outcome_of(link, kept).ok
        wait_for(lambda: completed(fabric) >= 1, "the kept workload to finish")
        assert [o for o in link.outcomes() if o.task_id == revoked] == []
    finally:
        link.close()


def test_a_workload_over_the_payload_limit_is_refused_clearly(fabric: Fabric) -> None:
    fabric.start_forwarder()
    fabric.start_worker("airflow.default", extra=("--handler", "zmqflow.handlers:echo"))
    fabric.wait_workers(1)
    link = link_to(fabric.frontend)
    try:
        task_id = new_id()
        link.submit(task_id, "default", "airflow.default", b"x" * (2 * 1024 * 1024), None)
        outcome = outcome_of(link, task_id)
        assert not outcome.ok and "too large" in outcome.detail
    finally:
        link.close()


def test_closing_returns_what_the_forwarder_never_accepted() -> None:
    link = link_to(f"tcp://127.0.0.1:{free_port()}")
    task_id = new_id()
    link.submit(task_id, "default", "airflow.default", b"1", None)
    assert link.close(timeout=0.5) == [task_id]
