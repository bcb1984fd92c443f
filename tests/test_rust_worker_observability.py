"""The Rust worker's metrics and JSON logs (issue 14), real processes on loopback.

- ``--metrics-port``: after a known load through the real forwarder, a
  scrape of http://127.0.0.1:PORT/metrics counts exactly what the client
  got back, per service (handled, failures, handler durations), with the
  names, labels and buckets the Python worker exports too (shared contract);
- ``--log-format json`` (or ZMQFLOW_LOG_FORMAT=json): every line on stderr is
  one JSON object with the shared keys (ts, level, logger, message, and
  event, task_id, service, worker_id, language when known); the worker's
  start, arrival, loss and departure are INFO lines with event
  worker.start, worker.ready / worker.connected, worker.lost and
  worker.gone.
"""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fabric import Fabric, FakeForwarder, free_port, rust_worker_binary, wait_for
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from zmqflow import Client
from zmqflow import protocol as p

#: the shared contract's handler duration buckets (notes; worker_metrics.py has the same)
BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
#: the keys a JSON log line may have (src/zmqflow/logs.py writes the same)
JSON_KEYS = {"ts", "level", "logger", "message", "event", "task_id", "service"}
JSON_KEYS |= {"worker_id", "language"}


@pytest.fixture(scope="session")
def rust_bin() -> Path:
    return rust_worker_binary()


def scrape(port: int) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """(content type, {(sample name, sorted labels): value}) of one scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        ctype = response.headers["Content-Type"]
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return ctype, samples


def by_service(samples: dict[Any, float], name: str) -> dict[str, float]:
    return {dict(labels)["service"]: v for (n, labels), v in samples.items() if n == name}


def test_a_scrape_after_a_known_load_counts_what_the_client_got(
    rust_bin: Path, fabric: Fabric
) -> None:
    fabric.start_forwarder()
    port = free_port()
    fabric.start_rust_worker(
        rust_bin, "echo", "sha256", "rollup", concurrency=2, metrics_port=port, worker_id="rust-m1"
    )
    fabric.wait_workers(1)
    good_csv = b"region,product,quantity,unit_price_cents\neu,w,2,5\n"
    with Client(fabric.frontend, timeout=60) as c:
        echo = c.map("echo", [b"x%d" % i for i in range(120)], timeout=60)
        sha = c.map("sha256", [b"y%d" % i for i in range(45)], timeout=60)
        rollup = c.map("rollup", [good_csv] * 7 + [b"wrong,header\n"] * 3, timeout=60)
    counted: dict[str, tuple[int, int]] = {}
    for service, results in (("echo", echo), ("sha256", sha), ("rollup", rollup)):
        counted[service] = (sum(r.ok for r in results), sum(not r.ok for r in results))
    assert counted == {"echo": (120, 0), "sha256": (45, 0), "rollup": (7, 3)}

    ctype, samples = scrape(port)
    assert ctype.startswith("application/openmetrics-text")
    handled = by_service(samples, "zmqflow_worker_tasks_handled_total")
    failures = by_service(samples, "zmqflow_worker_task_failures_total")
    runs = by_service(samples, "zmqflow_worker_handler_duration_seconds_count")
    assert handled == {service: ok for service, (ok, _) in counted.items()}
    assert failures == {service: bad for service, (_, bad) in counted.items()}
    assert runs == {service: ok + bad for service, (ok, bad) in counted.items()}
    info = {labels: v for (n, labels), v in samples.items() if n == "zmqflow_worker_info"}
    assert info == {(("language", "rust"), ("version", "0.1.0"), ("worker_id", "rust-m1")): 1}
    bounds = sorted(
        float(dict(labels)["le"])
        for (n, labels), _ in samples.items()
        if n == "zmqflow_worker_handler_duration_seconds_bucket"
        and dict(labels)["service"] == "echo"
    )
    assert bounds == [*BUCKETS, float("inf")]
    names = {n for n, _ in samples}
    assert sum(n.startswith("zmqflow_worker_") for n in names) >= 5


def test_only_the_metrics_path_is_served(
    rust_bin: Path, fake: FakeForwarder, fabric: Fabric
) -> None:
    port = free_port()
    fabric.start_rust_worker(
        rust_bin, "echo", connect=fake.endpoint, env={"ZMQFLOW_METRICS_PORT": str(port)}
    )
    fake.expect(p.Ready)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
    assert err.value.code == 404
    _, samples = scrape(port)
    assert by_service(samples, "zmqflow_worker_tasks_handled_total") == {"echo": 0}


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "no log lines"
    return [json.loads(line) for line in lines]  # each line alone is one JSON object


def test_json_log_lines_carry_the_shared_keys_and_the_worker_life_events(
    rust_bin: Path, fake: FakeForwarder, fabric: Fabric
) -> None:
    worker = fabric.start_rust_worker(
        rust_bin,
        "sleep",
        connect=fake.endpoint,
        worker_id="rust-j1",
        heartbeat_interval=0.2,
        log_level="debug",
        env={"ZMQFLOW_LOG_FORMAT": "json"},
    )
    rid, _ = fake.expect(p.Ready)
    fake.task(rid, "t-1", "sleep", b"10")
    assert fake.expect(p.Done)[1].id == "t-1"
    # silent for 3 intervals: the link is lost, a new socket announces again
    fake.expect(p.Ready, timeout=5)
    # drained on SIGTERM: it leaves once it hears the forwarder after its credit-0 READY
    worker.send_signal(signal.SIGTERM)
    while True:
        rid, msg = fake.recv(timeout=5)
        if isinstance(msg, p.Disconnect):
            break
        fake.send(rid, p.WorkerHeartbeat())
    assert worker.wait(10) == 0

    lines = json_lines(fabric.log("worker-rust"))
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= line.keys() <= JSON_KEYS, line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"]), line
        assert line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR"}
        assert (line["worker_id"], line["language"]) == ("rust-j1", "rust")
    events = {(line.get("event"), line["level"]) for line in lines}
    for event in ("worker.start", "worker.ready", "worker.connected", "worker.lost"):
        assert (event, "INFO") in events, event
    for event in ("worker.draining", "worker.gone"):
        assert (event, "INFO") in events, event
    (received,) = [line for line in lines if line.get("event") == "task.received"]
    assert (received["task_id"], received["service"], received["level"]) == (
        "t-1",
        "sleep",
        "DEBUG",
    )
    assert {line["logger"] for line in lines} >= {"zmqflow.worker"}


def test_text_logs_stay_the_default(rust_bin: Path, fake: FakeForwarder, fabric: Fabric) -> None:
    fabric.start_rust_worker(rust_bin, "echo", connect=fake.endpoint)
    fake.expect(p.Ready)
    wait_for(lambda: "READY credit" in fabric.log("worker-rust"), "the READY line")
    first = fabric.log("worker-rust").splitlines()[0]
    assert re.match(r"\d{4}-\d\d-\d\dT\S+Z INFO  zmqflow-worker: ", first), first


def test_a_bad_log_format_is_a_usage_error(rust_bin: Path, fabric: Fabric) -> None:
    worker = fabric.start_rust_worker(rust_bin, "echo", log_format="xml")
    assert worker.wait(10) == 2
    assert "invalid value 'xml' for '--log-format" in fabric.log("worker-rust")
