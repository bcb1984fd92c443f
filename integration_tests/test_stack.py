"""The stack from compose.yaml, started by testcontainers: real containers,
real forwarder and workers, a real client on the host. No mocks.

The tests run in file order on one stack (session fixture): the scaling
test comes last because it leaves three worker-python replicas behind.
"""

from __future__ import annotations

import json
import time
from collections import Counter

from zmqflow import Client

from .conftest import PROJECT, Stack

N_TASKS = 1000


def _hostnames(stack: Stack, service: str) -> set[str]:
    # A replica's hostname is its short container id; the Python worker's id
    # defaults to py-<hostname>-<pid>-<random>.
    return {c.attrs["Config"]["Hostname"] for c in stack.containers(service)}


def _answered_by(results: list, host: str) -> int:
    return sum(1 for r in results if r.worker and host in r.worker)


def test_every_service_is_healthy(stack: Stack) -> None:
    containers = stack.docker.containers.list(
        filters={"label": f"com.docker.compose.project={PROJECT}"}
    )
    services = Counter(c.labels["com.docker.compose.service"] for c in containers)
    assert services == {
        "postgres": 1, "forwarder": 1, "worker-python": 1, "worker-rust": 1, "events-log": 1,
    }  # fmt: skip
    for c in containers:
        assert c.attrs["State"]["Health"]["Status"] == "healthy", c.name


def _all_workers(stack: Stack) -> set[str]:
    return _hostnames(stack, "worker-python") | _hostnames(stack, "worker-rust")


def test_workers_of_both_languages_register_on_their_own(stack: Stack) -> None:
    status = stack.wait_for_workers(_all_workers(stack))
    by_language = {w["language"]: w for w in status["workers"]}
    assert set(by_language) == {"python", "rust"}
    for worker in by_language.values():
        assert {"echo", "sleep", "sha256"} <= set(worker["services"])


def test_python_and_rust_replicas_serve_one_service_with_identical_answers(
    stack: Stack,
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


def test_a_service_reaches_the_forwarder_over_ipc(stack: Stack) -> None:
    # events-log shares the socket volume; ask the forwarder over ipc from there.
    (container,) = stack.containers("events-log")
    code, out = container.exec_run(
        ["zmqflow", "status", "--connect", "ipc:///run/zmqflow/frontend.sock", "--json"]
    )
    assert code == 0, out
    status = json.loads(out.decode().strip().splitlines()[-1])
    assert len(status["workers"]) == 2  # the python and the rust replica


def test_client_map_1000_tasks_none_lost_no_duplicates(stack: Stack) -> None:
    payloads = [f"task-{i:04d}".encode() for i in range(N_TASKS)]
    with Client(stack.client_endpoint) as client:
        results = client.map("echo", payloads, timeout=120)
    assert len(results) == N_TASKS
    failed = [r for r in results if not r.ok]
    assert not failed, failed[:5]
    assert [r.payload for r in results] == payloads  # every task answered, in order
    assert len({r.task_id for r in results}) == N_TASKS  # no task answered twice


def test_cli_submit_1000_tasks_from_the_host(stack: Stack) -> None:
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


def test_worker_over_ipc(stack: Stack) -> None:
    """The optional worker-python-ipc (profile ipc-worker) serves over the socket volume."""
    stack.compose_cmd("--profile", "ipc-worker", "up", "--detach", "--wait",
                      "--wait-timeout", "120", "worker-python-ipc")  # fmt: skip
    try:
        ipc_hosts = _hostnames(stack, "worker-python-ipc")
        stack.wait_for_workers(_all_workers(stack) | ipc_hosts)
        with Client(stack.client_endpoint) as client:
            results = client.map("sleep", [b"20"] * 200, timeout=120)
        assert all(r.ok for r in results)
        (host,) = ipc_hosts
        assert _answered_by(results, host) > 0, Counter(r.worker for r in results)
    finally:
        stack.compose_cmd("--profile", "ipc-worker", "rm", "--stop", "--force",
                          "worker-python-ipc")  # fmt: skip
    # SIGTERM drains the worker and it says goodbye: only the tcp workers are left.
    stack.wait_for_workers(_all_workers(stack))


def test_scale_worker_python_from_1_to_3_spreads_tasks(stack: Stack) -> None:
    first = _hostnames(stack, "worker-python")
    assert len(first) == 1
    stack.scale("worker-python", 3)
    hosts = _hostnames(stack, "worker-python")
    assert len(hosts) == 3 and first < hosts

    # Each replica registers on its own: the forwarder lists exactly these three
    # (and the rust replica).
    stack.wait_for_workers(hosts | _hostnames(stack, "worker-rust"))

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
    deadline = time.monotonic() + 10
    logs = ""
    while time.monotonic() < deadline:
        logs = events_log.logs().decode()
        if all(host in logs for host in added):
            break
        time.sleep(0.5)
    missing = [host for host in added if host not in logs]
    assert not missing, f"no worker event for {missing} in events-log:\n{logs}"
