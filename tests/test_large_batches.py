"""Large batches end to end: id lists longer than one frame holds.

Contract: thousands of tasks that cannot finish at once are all ACCEPTED
(the forwarder cuts its ACCEPTED into messages that fit the 64 KiB frame
limit), and a client that collects thousands of outstanding tasks after a
forwarder restart gets every answer (its COLLECT is cut the same way; a
resync sends the same COLLECT, tests/test_client_session.py). Real forwarder and worker
processes on loopback; every task is counted.
"""

from __future__ import annotations

import signal

from fabric import Fabric

COUNT = 5000


def _known_service_without_workers(fabric: Fabric) -> None:
    """The forwarder knows ``echo`` (a worker offered it once) but no worker runs:
    every task submitted now waits, so its ACCEPTED lists thousands of ids."""
    fabric.start_forwarder()
    worker = fabric.start_worker("echo")
    fabric.wait_workers(1)
    fabric.kill(worker, signal.SIGTERM)
    fabric.wait_workers(0)


def _payloads() -> list[bytes]:
    return [f"item-{i}".encode() for i in range(COUNT)]


def test_5000_tasks_without_a_worker_are_all_accepted_then_all_complete_once_one_starts(
    fabric: Fabric,
) -> None:
    _known_service_without_workers(fabric)
    with fabric.client(timeout=60) as client:
        ids = client.submit_many("echo", _payloads(), wait_accepted=True)
        assert len(set(ids)) == COUNT
        assert fabric.status()["queues"] == {"echo": COUNT}

        fabric.start_worker("echo")
        answers = {r.task_id: r for r in client.as_completed(timeout=120)}

    assert set(answers) == set(ids)
    assert all(r.ok for r in answers.values())
    assert sorted(r.payload for r in answers.values()) == sorted(_payloads())
    counters = fabric.status()["counters"]
    assert counters["completed"] == COUNT
    assert counters["malformed"] == 0


def test_5000_outstanding_tasks_are_all_collected_after_a_forwarder_sigkill_and_restart(
    fabric: Fabric,
) -> None:
    _known_service_without_workers(fabric)
    with fabric.client(timeout=60) as submitter:
        ids = submitter.submit_many("echo", _payloads(), wait_accepted=True)
    assert fabric.forwarder is not None
    fabric.kill(fabric.forwarder)  # every task accepted, none answered
    fabric.start_forwarder()  # on its journal
    # Another client: the restarted forwarder routes these tasks to the
    # submitter, so only a COLLECT of all 5,000 ids (several frames) gets them.
    with fabric.client(timeout=60) as collector:
        collector.collect(ids)
        fabric.start_worker("echo")
        answers = {r.task_id: r for r in collector.as_completed(timeout=120)}

    assert set(answers) == set(ids)
    assert all(r.ok for r in answers.values())
    assert sorted(r.payload for r in answers.values()) == sorted(_payloads())
    status = fabric.status()
    assert status["counters"]["malformed"] == 0  # no COLLECT refused as oversize
    assert status["counters"]["refused"] == 0
    assert "unfinished tasks queued again" in fabric.log("forwarder")


def test_a_forwarder_with_max_batch_500_completes_all_2000_tasks_of_one_submit(
    fabric: Fabric,
) -> None:
    """The client cuts its batches to the forwarder's max_batch, which the
    forwarder tells in its HEARTBEAT reply (issue 23: every task was refused
    ``too_large`` while the client cut at 1,000 whatever the forwarder said)."""
    fabric.start_forwarder("--max-batch", "500")
    fabric.start_worker("echo")
    fabric.wait_workers(1)

    summary = fabric.summary(fabric.submit_cli("--service", "echo", "--count", "2000"))

    assert (summary["submitted"], summary["completed"]) == (2000, 2000)
    assert (summary["failed"], summary["lost"]) == (0, 0)
    counters = fabric.status()["counters"]
    assert counters["completed"] == 2000
