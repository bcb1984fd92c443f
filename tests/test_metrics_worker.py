"""The Python worker's metrics (issue 14): the names, labels and buckets shared with
the Rust worker, counted per handler thread and added up at scrape time."""

from __future__ import annotations

import threading

from fabric import Fabric, free_port
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_metrics_forwarder import scrape, value

from zmqflow import protocol as p
from zmqflow.worker import Worker
from zmqflow.worker_metrics import HANDLER_BOUNDS, WorkerMetrics


def _task(service: str, n: int) -> p.Dispatch:
    return p.Dispatch(f"t{n}", service, {}, 1, b"x")


def test_handler_runs_are_counted_per_service_across_threads() -> None:
    metrics = WorkerMetrics("w1", "9.9")

    def ok(payload: bytes, headers: object) -> bytes:
        return payload

    def bad(payload: bytes, headers: object) -> bytes:
        raise RuntimeError("no")

    def thread_body(offset: int) -> None:
        stats = metrics.for_thread(Worker._run_handler)
        for n in range(100):
            stats.timed((ok, _task("echo", offset + n)))
        stats.timed((bad, _task("boom", offset)))

    threads = [threading.Thread(target=thread_body, args=(k * 1000,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    families = {
        f.name: f
        for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())
    }
    samples = {
        (s.name, frozenset(s.labels.items())): s.value for f in families.values() for s in f.samples
    }
    assert value(samples, "zmqflow_worker_tasks_handled_total", service="echo") == 300
    assert value(samples, "zmqflow_worker_task_failures_total", service="echo") == 0
    assert value(samples, "zmqflow_worker_tasks_handled_total", service="boom") == 0
    assert value(samples, "zmqflow_worker_task_failures_total", service="boom") == 3
    assert value(samples, "zmqflow_worker_handler_duration_seconds_count", service="echo") == 300
    assert families["zmqflow_worker_handler_duration_seconds"].type == "histogram"
    les = [
        s.labels["le"]
        for s in families["zmqflow_worker_handler_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["service"] == "echo"
    ]
    assert les == [*(str(float(b)) for b in HANDLER_BOUNDS), "+Inf"]
    assert (
        value(samples, "zmqflow_worker_info", worker_id="w1", language="python", version="9.9") == 1
    )


def test_failed_tasks_are_counted_by_the_worker_and_the_forwarder(fabric: Fabric) -> None:
    port, worker_port = free_port(), free_port()
    fabric.start_forwarder("--metrics-port", str(port))
    fabric.start_worker("sleep", extra=("--metrics-port", str(worker_port)))
    fabric.wait_workers(1)

    submit = fabric.submit_cli("--service", "sleep", "--payload", "not-a-number", "--count", "3")
    summary = fabric.summary(submit)
    assert summary["failed"] == 3, summary

    sleep = {"service": "sleep"}
    worker = scrape(worker_port)
    assert value(worker, "zmqflow_worker_task_failures_total", **sleep) == 3
    assert value(worker, "zmqflow_worker_tasks_handled_total", **sleep) == 0
    assert value(worker, "zmqflow_worker_handler_duration_seconds_count", **sleep) == 3
    forwarder = scrape(port)
    assert value(forwarder, "zmqflow_tasks_failed_total", **sleep) == 3
    assert value(forwarder, "zmqflow_tasks_completed_total", **sleep) == 0
    assert value(forwarder, "zmqflow_task_round_trip_seconds_count", **sleep) == 3
