"""The stack from compose.yaml, started by testcontainers: real containers,
real forwarder and workers, a real client on the host. No mocks.

The tests run in file order on one stack (session fixture): the scaling
test comes last because it leaves three worker-python replicas behind.
"""

from __future__ import annotations

import json
from collections import Counter

from zmqflow import Client

from .conftest import PROJECT
from .harness import WORKER_SERVICES, ComposeProject, wait_for

N_TASKS = 1000


def _answered_by(results: list, host: str) -> int:
    return sum(1 for r in results if r.worker and host in r.worker)


def test_every_service_is_healthy(stack: ComposeProject) -> None:
    containers = stack.docker.containers.list(
        filters={"label": f"com.docker.compose.project={PROJECT}"}
    )
    services = Counter(c.labels["com.docker.compose.service"] for c in containers)
    assert services == {
        "postgres": 1, "forwarder": 1, "worker-python": 1, "worker-rust": 1, "events-log": 1,
    }  # fmt: skip
    for c in containers:
        assert c.attrs["State"]["Health"]["Status"] == "healthy", c.name


def test_workers_of_both_languages_register_on_their_own(stack: ComposeProject) -> None:
    status = stack.wait_workers()
    by_language = {w["language"]: w for w in status["workers"]}
    assert set(by_language) == {"python", "rust"}
    for worker in by_language.values():
        assert {"echo", "sleep", "sha256"} <= set(worker["services"])


def test_python_and_rust_replicas_serve_one_service_with_identical_answers(
    stack: ComposeProject,
) -> None:
    import hashlib

    payloads = [f"block-{i}".encode() for i in range(600)]
    with Client(stack.client_endpoint) as client:
        results = client.map("sha256", payloads, timeout=120)
    assert [r.payload for r in results] == [
        hashlib.sha256(p).hexdigest().encode() for p in payloads
    ]
    languages = Counter(r.worker.split("-", 1)[0] for r in results if r.worker)
    assert languages["py"] > 0 and languages["rust"] > 0, languages


def test_a_service_reaches_the_forwarder_over_ipc(stack: ComposeProject) -> None:
    # events-log shares the socket volume; ask the forwarder over ipc from there.
    out = stack.exec(
        "events-log", "zmqflow", "status", "--connect", "ipc:///run/zmqflow/frontend.sock", "--json"
    )
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(status["workers"]) == 2  # the python and the rust replica


def test_client_map_1000_tasks_none_lost_no_duplicates(stack: ComposeProject) -> None:
    payloads = [f"task-{i:04d}".encode() for i in range(N_TASKS)]
    with Client(stack.client_endpoint) as client:
        results = client.map("echo", payloads, timeout=120)
    assert len(results) == N_TASKS
    failed = [r for r in results if not r.ok]
    assert not failed, failed[:5]
    assert [r.payload for r in results] == payloads  # every task answered, in order
    assert len({r.task_id for r in results}) == N_TASKS  # no task answered twice


def test_cli_submit_1000_tasks_from_the_host(stack: ComposeProject) -> None:
    out = stack.cli(
        "submit", "--connect", stack.client_endpoint, "--service", "echo",
        "--count", str(N_TASKS), "--payload-bytes", "100", "--timeout", "120", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["submitted"] == N_TASKS
    assert report["completed"] == N_TASKS
    assert report["failed"] == 0
    assert report["lost"] == 0
    assert report["duplicates"] == 0


def test_worker_over_ipc(stack: ComposeProject) -> None:
    """The optional worker-python-ipc (profile ipc-worker) serves over the socket volume."""
    stack.compose_cmd("--profile", "ipc-worker", "up", "--detach", "--wait",
                      "--wait-timeout", "120", "worker-python-ipc")  # fmt: skip
    try:
        ipc_hosts = stack.hosts("worker-python-ipc")
        stack.wait_workers(stack.hosts(*WORKER_SERVICES) | ipc_hosts)
        with Client(stack.client_endpoint) as client:
            results = client.map("sleep", [b"20"] * 200, timeout=120)
        assert all(r.ok for r in results)
        (host,) = ipc_hosts
        assert _answered_by(results, host) > 0, Counter(r.worker for r in results)
    finally:
        stack.compose_cmd("--profile", "ipc-worker", "rm", "--stop", "--force",
                          "worker-python-ipc")  # fmt: skip
    # SIGTERM drains the worker and it says goodbye: only the tcp workers are left.
    stack.wait_workers()


def test_scale_worker_python_from_1_to_3_spreads_tasks(stack: ComposeProject) -> None:
    first = stack.hosts("worker-python")
    assert len(first) == 1
    stack.scale({"worker-python": 3})
    hosts = stack.hosts("worker-python")
    assert len(hosts) == 3 and first < hosts

    # Each replica registers on its own: the forwarder lists exactly these three
    # (and the rust replica).
    stack.wait_workers(hosts | stack.hosts("worker-rust"))

    # Tasks that take a while, so that no single replica can take them all.
    with Client(stack.client_endpoint) as client:
        results = client.map("sleep", [b"20"] * 400, timeout=120)
    assert all(r.ok for r in results), [r for r in results if not r.ok][:5]
    assert len({r.task_id for r in results}) == len(results)
    for host in hosts:
        assert _answered_by(results, host) > 0, (host, Counter(r.worker for r in results))

    # events-log (over ipc) saw the two new replicas arrive. Not the first
    # one: it started together with events-log, and an event published
    # before a subscriber joins is gone (PUB/SUB).
    (events_log,) = stack.containers("events-log")
    added = hosts - first
    wait_for(
        lambda: all(host in events_log.logs().decode() for host in added),
        10,
        f"events-log to show a worker event for each of {sorted(added)}",
    )
