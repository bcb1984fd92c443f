"""`make bench` (scripts/bench.py): its output's shape, on a tiny real run.

The command runs the raw pyzmq floor and one zmqflow configuration with a
few hundred tasks (real processes on loopback, no brokers, no Docker), and
the report's pure parts (headline ratios, goals, the docs section) are
checked on rows made here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench  # noqa: E402
import bench_report  # noqa: E402

HEADLINE_KEYS = {
    "zmqflow_vs_floor",
    "zmqflow_vs_nats",
    "zmqflow_vs_jetstream",
    "zmqflow_vs_celery",
    "latency_p50_vs_floor",
    "latency_p50_vs_nats",
}


def row(key: str, workers: int, tput: float, p50: float, payload: int = 100) -> bench_report.Row:
    promise = "floor" if key == "floor" else "zmqflow-journal"
    return bench_report.Row(key, key, promise, workers, payload, 100, 200, tput, p50, 2 * p50)


@pytest.mark.timeout(120)
def test_a_tiny_run_of_the_floor_and_zmqflow_prints_the_headline_json_last(
    tmp_path: Path,
) -> None:
    docs = ROOT / "docs" / "benchmarks.md"
    before = docs.read_bytes() if docs.exists() else b""
    run = subprocess.run(
        [
            sys.executable, str(ROOT / "scripts" / "bench.py"),
            "--rounds", "1", "--tasks", "300", "--pings", "30",
            "--payload", "100", "--workers", "1",
            "--only", "floor", "--only", "zmqflow/python/tcp/journal",
            "--no-docs", "--out", str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:] + run.stdout[-2000:]
    last = json.loads(run.stdout.strip().splitlines()[-1])
    assert last.keys() >= HEADLINE_KEYS
    assert last["latency_p50_vs_floor"] > 0
    # no NATS, Celery or 4-worker rows in this run: their ratios say so, none is made up
    assert last["zmqflow_vs_nats"] is None and last["zmqflow_vs_floor"] is None
    assert last["goals_met"]["zmqflow_vs_celery"] is None

    report = json.loads((tmp_path / "bench.json").read_text())
    rows = {r["key"]: r for r in report["rows"]}
    assert set(rows) == {"floor", "zmqflow/python/tcp/journal"}
    assert rows["floor"]["throughput_vs_floor"] == 1.0
    ours = rows["zmqflow/python/tcp/journal"]
    assert ours["throughput_per_s"] > 0 and ours["p50_us"] > 0 and ours["p99_us"] >= ours["p50_us"]
    assert ours["throughput_vs_floor"] == pytest.approx(
        ours["throughput_per_s"] / rows["floor"]["throughput_per_s"], rel=1e-2
    )
    assert ours["broker_killed"].startswith("kept") and ours["dead_worker_task"]
    assert len(ours["rounds"]) == 1 and ours["tasks"] == 300
    assert report["load_average_before"] and report["elapsed_s"] > 0
    assert (docs.read_bytes() if docs.exists() else b"") == before, "--no-docs wrote the docs"


def test_headline_divides_zmqflow_by_each_system_at_100_bytes_4_workers_and_lone_p50_at_1() -> None:
    rows = [
        row("floor", 4, 80_000, 70),
        row("floor", 1, 60_000, 80),
        row("zmqflow/python/tcp/journal", 4, 40_000, 900),
        row("zmqflow/python/tcp/journal", 1, 30_000, 400),
        row("nats/core", 4, 10_000, 300),
        row("nats/core", 1, 12_000, 200),
        row("nats/jetstream", 4, 4_000, 1_000),
        row("celery/redis", 4, 200, 6_000),
        row("zmqflow/python/tcp/journal", 4, 1, 1, payload=65536),  # another payload: ignored
    ]
    head = bench.headline(rows)
    assert head["zmqflow_vs_floor"] == 0.5
    assert head["zmqflow_vs_nats"] == 4.0
    assert head["zmqflow_vs_jetstream"] == 10.0
    assert head["zmqflow_vs_celery"] == 200.0
    assert head["zmqflow_vs_celery_rabbitmq"] is None
    assert head["latency_p50_vs_floor"] == 5.0
    assert head["latency_p50_vs_nats"] == 2.0
    met = bench.goals_met(head)
    assert met["zmqflow_vs_floor"] and met["zmqflow_vs_jetstream"] and met["zmqflow_vs_celery"]
    assert not met["latency_p50_vs_floor"] and not met["latency_p50_vs_nats"]


def test_the_docs_section_goes_before_the_first_section_then_is_replaced_in_place(
    tmp_path: Path,
) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nIntro.\n\n## Airflow\n\nTheirs.\n")
    bench_report.write_section(doc, "## Against other systems\n\nfirst\n")
    first = doc.read_text()
    assert first.index("first") < first.index("## Airflow")
    bench_report.write_section(doc, "## Against other systems\n\nsecond\n")
    second = doc.read_text()
    assert "first" not in second and "second" in second
    assert second.startswith("# Benchmarks\n\nIntro.\n") and second.endswith(
        "## Airflow\n\nTheirs.\n"
    )
    assert second.count(bench_report.BEGIN) == 1
