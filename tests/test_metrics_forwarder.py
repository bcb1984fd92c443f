"""The forwarder's metrics, ``zmqflow status`` and the client agree (issue 14).

Real processes on loopback (tests/fabric.py): a forwarder with
``--metrics-port`` and ``--log-format json``, Python workers, tasks from the
client CLI; the metrics are read over HTTP as Prometheus does and parsed
with prometheus-client's own parser.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from typing import Any

from fabric import Fabric, free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families

ZMQFLOW = (sys.executable, "-m", "zmqflow")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """Every sample on ``port``'s /metrics, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def status_cli(fabric: Fabric, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmqflow", "status", "--connect", fabric.frontend, *args],
        capture_output=True,
        text=True,
        env=fabric.env,
        timeout=60,
        check=True,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a log that is a JSON object (all of them, with --log-format json)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_metrics_status_and_client_counts_agree_under_a_known_load(fabric: Fabric) -> None:
    count = 400
    port, worker_port = free_port(), free_port()
    fabric.start_forwarder("--metrics-port", str(port), "--log-format", "json")
    fabric.start_worker("echo", extra=("--metrics-port", str(worker_port), "--log-format", "json"))
    fabric.wait_workers(1)

    summary = fabric.summary(fabric.submit_cli("--service", "echo", "--count", str(count)))
    assert summary["completed"] == count, summary

    metrics = scrape(port)
    names = {name for name, _ in metrics if name.startswith("zmqflow_")}
    assert len({n.removesuffix("_total") for n in names}) >= 8, sorted(names)
    echo = {"service": "echo"}
    assert value(metrics, "zmqflow_tasks_accepted_total", **echo) == count
    assert value(metrics, "zmqflow_tasks_completed_total", **echo) == count
    assert value(metrics, "zmqflow_tasks_failed_total", **echo) == 0
    assert value(metrics, "zmqflow_queue_depth", **echo) == 0
    assert value(metrics, "zmqflow_tasks_in_flight", **echo) == 0
    assert value(metrics, "zmqflow_workers_alive", service="echo", language="python") == 1
    assert value(metrics, "zmqflow_workers_connected", language="python") == 1
    for histogram in ("queue_wait", "service", "round_trip"):
        name = f"zmqflow_task_{histogram}_seconds"
        assert value(metrics, f"{name}_count", **echo) == count
        assert value(metrics, f"{name}_bucket", service="echo", le="+Inf") == count
    assert (value(metrics, "zmqflow_journal_commit_seconds_count") or 0) > 0
    assert (value(metrics, "zmqflow_journal_size_bytes") or 0) > 0
    assert value(metrics, "zmqflow_workers_lost_total") == 0

    status = json.loads(status_cli(fabric, "--json").stdout)
    assert status["counters"]["completed"] == count
    assert status["counters"]["accepted"] == count
    assert status["inflight"] == 0
    assert sum(status["queues"].values()) == 0

    worker = scrape(worker_port)
    assert value(worker, "zmqflow_worker_tasks_handled_total", **echo) == count
    assert value(worker, "zmqflow_worker_task_failures_total", **echo) == 0
    assert value(worker, "zmqflow_worker_handler_duration_seconds_count", **echo) == count
    [(labels, info)] = [(dict(k), v) for (n, k), v in worker.items() if n == "zmqflow_worker_info"]
    assert info == 1 and labels["language"] == "python" and labels["worker_id"]

    lines = json_lines(fabric.log("forwarder"))
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    [ready] = [line for line in lines if line.get("event") == "worker.ready"]
    assert ready["worker_id"] == labels["worker_id"]
    assert ready["language"] == "python" and ready["level"] == "INFO"
    worker_lines = json_lines(fabric.log("worker"))
    assert any(line.get("event") == "worker.connected" for line in worker_lines)


def test_a_worker_killed_holding_tasks_shows_as_lost_and_its_tasks_as_requeued(
    fabric: Fabric,
) -> None:
    port = free_port()
    fabric.start_forwarder("--metrics-port", str(port), "--log-format", "json")
    victim = fabric.start_worker("sleep")
    fabric.start_worker("sleep")
    fabric.wait_workers(2)
    submit = fabric.submit_cli("--service", "sleep", "--payload", "50", "--count", "60")
    fabric.wait_holding(victim)
    fabric.kill(victim)  # SIGKILL while it holds tasks
    summary = fabric.summary(submit)
    assert summary["completed"] == 60 and summary["lost"] == 0, summary

    def counted_lost() -> Samples | None:
        metrics = scrape(port)
        return metrics if value(metrics, "zmqflow_workers_lost_total") else None

    metrics = wait_for(counted_lost, "the forwarder to count the killed worker lost")
    status = fabric.status()
    requeued = value(metrics, "zmqflow_tasks_requeued_total", service="sleep")
    assert value(metrics, "zmqflow_workers_lost_total") == status["counters"]["workers_lost"] == 1
    assert requeued is not None and requeued >= 1
    assert requeued == status["counters"]["requeued"]
    assert value(metrics, "zmqflow_tasks_completed_total", service="sleep") == 60
    assert value(metrics, "zmqflow_workers_alive", service="sleep", language="python") == 1

    lost = [
        line for line in json_lines(fabric.log("forwarder")) if line.get("event") == "worker.lost"
    ]
    assert len(lost) == 1 and lost[0]["worker_id"].startswith("py-")


def test_status_watch_refreshes_a_bounded_number_of_times(fabric: Fabric) -> None:
    fabric.start_forwarder()
    fabric.start_worker("echo")
    fabric.wait_workers(1)

    lines = status_cli(
        fabric, "--watch", "--json", "--interval", "0.05", "--refreshes", "3"
    ).stdout.splitlines()
    assert len(lines) == 3
    assert all(len(json.loads(line)["workers"]) == 1 for line in lines)

    screen = status_cli(fabric, "--watch", "--interval", "0.05", "--refreshes", "2").stdout
    assert "1 workers" in screen and "echo" in screen


def test_the_recorder_observes_each_answered_task_with_its_own_stamps() -> None:
    from zmqflow.forwarder.broker import TaskEntry
    from zmqflow.forwarder.metrics import BOUNDS, Recorder

    def entry(task_id: str, service: str, accepted: float, dispatched: float) -> TaskEntry:
        task = TaskEntry(task_id, service, None, {}, b"", 5, 1, b"c", 0, True, accepted)
        task.worker, task.dispatched_at = b"w", dispatched
        return task

    tasks = {
        "a1": entry("a1", "echo", 10.0, 10.0),  # waited 0, ran 0.02
        "a2": entry("a2", "echo", 10.0, 10.0),
        "b1": entry("b1", "echo", 9.0, 10.0),  # waited 1.0, ran 0.02
        "c1": entry("c1", "sleep", 10.0, 10.0),
    }
    tasks["q1"] = entry("q1", "echo", 10.0, 10.0)
    tasks["q1"].worker = None  # queued again: its answer is late, not observed
    recorder = Recorder()
    recorder.accepted([["a1", "echo"], ["a2", "echo"], ["c1", "sleep"], ["b1", "echo"]])
    answers = [["a1", b""], ["a2", b""], ["b1", b""], ["c1", b""], ["q1", b""], ["gone", b""]]
    recorder.answered(tasks, answers, failed=False, now=10.02)

    echo, sleep = recorder.services["echo"], recorder.services["sleep"]
    assert (echo.accepted, echo.completed, echo.failed) == (3, 3, 0)
    assert (sleep.accepted, sleep.completed) == (1, 1)
    le = {bound: i for i, bound in enumerate(BOUNDS)}
    assert echo.queue_wait.counts[0] == 2 and echo.queue_wait.counts[le[1.0]] == 1
    assert echo.service_time.counts[le[0.025]] == 3
    assert echo.round_trip.counts[le[0.025]] == 2 and echo.round_trip.counts[le[2.5]] == 1
    assert abs(echo.round_trip.sum - (0.02 * 2 + 1.02)) < 1e-9
    assert sum(echo.round_trip.counts) == 3 and sum(sleep.round_trip.counts) == 1


def test_event_bus_messages_are_counted_in_out_and_dropped(fabric: Fabric) -> None:
    port = free_port()
    fabric.start_forwarder("--metrics-port", str(port))
    subscriber = subprocess.Popen(
        [*ZMQFLOW, "subscribe", "--connect", fabric.events_out, "--topic", "", "--timeout", "60"],
        stdout=subprocess.DEVNULL,
        env=fabric.env,
    )
    try:
        for env, count in (("dev", 3), ("elsewhere", 2)):
            subprocess.run(
                [
                    *(*ZMQFLOW, "publish", "--connect", fabric.events_in, "--kind", "demo.hello"),
                    *("--env", env, "--count", str(count), "--wait-subscriber", "20"),
                ],
                env=fabric.env,
                check=True,
                capture_output=True,
                timeout=60,
            )

        def counted() -> Samples | None:
            metrics = scrape(port)
            return metrics if value(metrics, "zmqflow_events_refused_total") == 2 else None

        metrics = wait_for(counted, "the forwarder to count 2 dropped events")
        assert value(metrics, "zmqflow_event_bus_messages_total", direction="in") == 5
        # out: the 3 in its env, and the forwarder's own events (it saw a subscriber)
        assert (value(metrics, "zmqflow_event_bus_messages_total", direction="out") or 0) >= 3
    finally:
        subscriber.kill()
        subscriber.wait(timeout=30)


def test_a_service_nobody_serves_shows_zero_workers_alive(tmp_path: Any) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from zmqflow import protocol as p
    from zmqflow.forwarder.broker import Broker, Limits
    from zmqflow.forwarder.metrics import BrokerCollector, Recorder
    from zmqflow.journal import Journal

    broker = Broker(Journal(str(tmp_path / "j.db")), Limits())
    ready = p.Ready("w1", "rust", ["echo", "resize"], 4, [], "1", 1, "h")
    broker.on_worker(b"w1", p.encode(ready), 0.0)
    broker.on_worker(b"w1", p.encode(p.Disconnect("bye")), 0.0)  # it leaves
    registry = CollectorRegistry()
    registry.register(BrokerCollector(broker, Recorder()))
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(generate_latest(registry).decode())
        for s in f.samples
    }
    assert value(samples, "zmqflow_workers_alive", service="echo", language="") == 0
    assert value(samples, "zmqflow_workers_alive", service="resize", language="") == 0
    assert value(samples, "zmqflow_queue_depth", service="resize") == 0
