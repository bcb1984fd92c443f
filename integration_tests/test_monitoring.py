"""Prometheus (compose profile `monitoring`) on a scaled stack: every replica
found through Docker's DNS and scraped, the rules loaded and evaluated.

Its own project (zmqflow-monitoring-it), the fabric plus prometheus, with
three Python and two Rust worker replicas; Prometheus's HTTP API is read
from the host on a free port.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from zmqflow.client import Client

from .harness import FABRIC_SERVICES, WORKER_SERVICES, ComposeProject, ensure_images, wait_for

PROJECT = "zmqflow-monitoring-it"
REPLICAS = {"worker-python": 3, "worker-rust": 2}


@pytest.fixture(scope="module")
def stack() -> Iterator[ComposeProject]:
    ensure_images(["prometheus"])
    with ComposeProject(
        PROJECT,
        (*FABRIC_SERVICES, "prometheus"),
        ports=("PROMETHEUS_PUBLISH_PORT",),
        env={"COMPOSE_PROFILES": "monitoring"},
        replicas=REPLICAS,
    ) as project:
        yield project


def _api(stack: ComposeProject, path: str, **query: str) -> Any:
    port = stack.ports["PROMETHEUS_PUBLISH_PORT"]
    url = f"http://127.0.0.1:{port}/api/v1/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    return body["data"]


def _worker_ips(stack: ComposeProject) -> set[str]:
    network = f"{stack.project}_default"
    return {
        c.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        for service in WORKER_SERVICES
        for c in stack.containers(service)
    }


def _targets_up(stack: ComposeProject, expected: set[str]) -> dict[str, Any] | None:
    """The active targets when the forwarder and exactly the ``expected`` worker
    addresses (ip, port 9101) are all up; else None."""
    targets = _api(stack, "targets", state="active")["activeTargets"]
    workers = {
        t["labels"]["instance"]: t for t in targets if t["labels"]["job"] == "zmqflow-workers"
    }
    forwarder = [t for t in targets if t["labels"]["job"] == "zmqflow-forwarder"]
    up = {i for i, t in workers.items() if t["health"] == "up"}
    ok = up == {f"{ip}:9101" for ip in expected} and forwarder[0]["health"] == "up"
    return {"workers": workers, "forwarder": forwarder} if ok and len(up) == len(workers) else None


def test_every_worker_replica_and_the_forwarder_are_scraped_as_they_scale(
    stack: ComposeProject,
) -> None:
    ips = _worker_ips(stack)
    assert len(ips) == sum(REPLICAS.values())
    found = wait_for(
        lambda: _targets_up(stack, ips), 90, "5 worker targets and the forwarder up", 2
    )
    services = {t["labels"]["compose_service"] for t in found["workers"].values()}
    assert services == set(WORKER_SERVICES)

    # One more Python replica: found through DNS and scraped, nothing restarted.
    stack.scale({"worker-python": 4})
    ips = _worker_ips(stack)
    assert len(ips) == 6
    wait_for(lambda: _targets_up(stack, ips), 90, "6 worker targets up", 2)


def test_recording_and_alert_rules_are_loaded_and_throughput_is_recorded(
    stack: ComposeProject,
) -> None:
    groups = {g["name"]: g for g in _api(stack, "rules")["groups"]}
    assert {"zmqflow-throughput", "zmqflow-latency", "zmqflow-alerts"} <= set(groups)
    alerts = {r["name"] for r in groups["zmqflow-alerts"]["rules"]}
    assert {"ZmqflowServiceWithoutWorkers", "ZmqflowQueueGrowing", "ZmqflowDeadLetters"} <= alerts
    for group in groups.values():
        for rule in group["rules"]:
            assert rule["health"] != "err", rule

    def recorded() -> float | None:
        with Client(stack.client_endpoint) as client:
            assert all(r.ok for r in client.map("echo", [b"m"] * 200, timeout=60))
        series = _api(
            stack, "query", query='service:zmqflow_tasks_completed:rate1m{service="echo"}'
        )
        handled = _api(stack, "query", query="sum(service:zmqflow_worker_tasks_handled:rate1m)")
        if series["result"] and handled["result"]:
            rate = float(series["result"][0]["value"][1])
            return rate if rate > 0 and float(handled["result"][0]["value"][1]) > 0 else None
        return None

    # Two scrapes (15 s apart) and an evaluation after the first tasks.
    wait_for(recorded, 120, "echo's throughput in the recording rules", 3)
