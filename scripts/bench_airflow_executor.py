"""make bench-airflow-executor: LocalExecutor, CeleryExecutor and ZmqflowExecutor
running the same DAG on one stack, in one run.

The stack is a compose project of its own (``zmqflow-bench-executor``, free
host ports, taken down afterwards): compose.yaml's fabric and Airflow with
the three executors configured at once
(``ZmqflowExecutor,LocalExecutor,CeleryExecutor``), a Redis broker (Debian's
redis-server) and Celery workers from the same image
(``zmqflow/airflow-bench``: the Airflow image plus redis-server and
apache-airflow-providers-celery, built here from a host wheelhouse). The
same number of slots everywhere: LocalExecutor's ``parallelism`` (8)
processes in the scheduler, 2 Celery workers of concurrency 4, 2
worker-airflow replicas of 4 slots.

Each DAG of orchestrators/airflow/bench/bench_dags.py (200 mapped tasks that
return their input) runs ROUNDS times per executor, executors interleaved.
Per run: wall time (the DAG run's start to end), tasks per second, and the
delay from queued to running of every task instance (``start_date -
queued_when``), p50 and p99. The table, the ratios against Celery, and a
plot go to bench-results/airflow-executor.{json,png}.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from integration_tests.airflow.api import AirflowApi, wait_for  # noqa: E402
from integration_tests.harness import ComposeProject, ensure_images, setting  # noqa: E402

OUT = ROOT / "bench-results"
BENCH = ROOT / "orchestrators" / "airflow" / "bench"
WHEELS = ROOT / ".build" / "wheels" / "airflow-bench"
CELERY = ("apache-airflow-providers-celery==3.26.0", "apache-airflow==3.3.2")
EXECUTORS = ("local", "celery", "zmqflow")
ADMIN = ("admin", "bench-secret")
SERVICES = (
    "postgres",
    "forwarder",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "worker-airflow",
    "redis",
    "worker-celery",
)
console = Console()


def say(text: str) -> None:
    console.print(f"[bold]bench-airflow-executor[/] {text}")


def bench_image() -> str:
    """zmqflow/airflow-bench: the Airflow image + redis-server + the Celery provider."""
    prefix = setting("ZMQFLOW_IMAGE_PREFIX", "zmqflow")
    tag = setting("ZMQFLOW_IMAGE_TAG", "dev")
    ensure_images(("postgres", "forwarder", "airflow"))
    subprocess.run(
        ["bash", "scripts/wheelhouse.sh", str(WHEELS), *CELERY],
        cwd=ROOT,
        check=True,
        env={**os.environ, "CONSTRAINTS": "orchestrators/airflow/constraints.txt"},
    )
    (WHEELS / "requirements.txt").write_text("\n".join(CELERY) + "\n")
    image = f"{prefix}/airflow-bench:{tag}"
    say(f"building {image}")
    subprocess.run(
        ["docker", "build", "--build-arg", f"AIRFLOW_IMAGE={prefix}/airflow:{tag}",
         "-f", str(BENCH / "Dockerfile"), "-t", image, "."],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return image


def override(image: str, folder: Path) -> Path:
    """The benchmark's additions to compose.yaml: image, executors, Redis, Celery workers."""
    celery = {
        "AIRFLOW__CORE__EXECUTOR": (
            "zmqflow_provider.executors.ZmqflowExecutor,LocalExecutor,CeleryExecutor"
        ),
        "AIRFLOW__CELERY__BROKER_URL": "redis://redis:6379/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": (
            "db+postgresql://airflow:airflow@postgres:5432/airflow"
        ),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "4",
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
    }
    airflow = {"image": image, "environment": celery}
    services: dict[str, Any] = {
        name: airflow
        for name in (
            "airflow-init",
            "airflow-apiserver",
            "airflow-scheduler",
            "airflow-dag-processor",
            "airflow-triggerer",
            "worker-airflow",
        )
    }
    services["redis"] = {
        "image": image,
        "pull_policy": "never",
        "user": "10001:10001",
        "init": True,
        "entrypoint": ["redis-server"],
        "command": ["--bind", "0.0.0.0", "--protected-mode", "no", "--save", "",
                    "--appendonly", "no", "--dir", "/tmp"],
        "healthcheck": {
            "test": ["CMD", "redis-cli", "ping"],
            "interval": "5s", "timeout": "5s", "retries": 5,
        },
    }  # fmt: skip
    services["worker-celery"] = {
        "extends": {"file": str(ROOT / "compose.yaml"), "service": "worker-airflow"},
        "image": image,
        "environment": celery,
        "command": ["airflow", "celery", "worker", "--concurrency", "4"],
        "healthcheck": {
            # a celery worker process in the container (the broker is checked by redis's)
            "test": ["CMD-SHELL", "grep -qs celery /proc/[0-9]*/cmdline"],
            "interval": "10s", "timeout": "5s", "retries": 3, "start_period": "60s",
        },
        "depends_on": {"redis": {"condition": "service_healthy"}},
    }  # fmt: skip
    path = folder / "compose.bench.yaml"
    path.write_text(json.dumps({"services": services}, indent=2))  # JSON is YAML
    return path


def dags_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="zmqflow-bench-dags-"))
    folder.chmod(0o755)
    shutil.copy(BENCH / "bench_dags.py", folder / "bench_dags.py")
    (folder / "bench_dags.py").chmod(0o644)
    return folder


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(api: AirflowApi, executor: str) -> dict[str, Any]:
    dag_id = f"zmqflow_bench_executor_{executor}"
    run_id = api.trigger(dag_id)
    run = api.wait_run(dag_id, run_id, timeout=1800)
    tis = api.task_instances(dag_id, run_id)
    delays = [
        _ts(t["start_date"]) - _ts(t["queued_when"])
        for t in tis
        if t.get("start_date") and t.get("queued_when")
    ]
    wall = _ts(run["end_date"]) - _ts(run["start_date"])
    return {
        "executor": executor,
        "tasks": len(tis),
        "wall_s": round(wall, 2),
        "tasks_per_s": round(len(tis) / wall, 2),
        "queued_to_running_p50_ms": round(1000 * percentile(delays, 0.5), 1),
        "queued_to_running_p99_ms": round(1000 * percentile(delays, 0.99), 1),
        "hosts": sorted({t["hostname"] for t in tis}),
    }


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for executor in EXECUTORS:
        mine = [r for r in runs if r["executor"] == executor]
        rows.append(
            {
                "executor": executor,
                "runs": len(mine),
                **{
                    k: round(statistics.median(r[k] for r in mine), 2)
                    for k in (
                        "wall_s",
                        "tasks_per_s",
                        "queued_to_running_p50_ms",
                        "queued_to_running_p99_ms",
                    )
                },
            }
        )
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    celery = next(r for r in rows if r["executor"] == "celery")
    table = Table(title="200 mapped trivial tasks, 8 slots per executor (medians)")
    for col in ("executor", "runs", "wall s", "tasks/s", "queued→running p50 ms",
                "p99 ms", "tasks/s vs Celery", "p50 vs Celery"):  # fmt: skip
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["executor"],
            str(r["runs"]),
            f"{r['wall_s']:.1f}",
            f"{r['tasks_per_s']:.2f}",
            f"{r['queued_to_running_p50_ms']:.0f}",
            f"{r['queued_to_running_p99_ms']:.0f}",
            f"{r['tasks_per_s'] / celery['tasks_per_s']:.2f}",
            f"{r['queued_to_running_p50_ms'] / celery['queued_to_running_p50_ms']:.2f}",
        )
    console.print(table)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["executor"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(names, [r["tasks_per_s"] for r in rows], color=["#888", "#c66", "#4a7"])
    left.set_title("tasks per second (higher is better)")
    x = range(len(rows))
    right.bar([i - 0.2 for i in x], [r["queued_to_running_p50_ms"] for r in rows], 0.4,
              label="p50")  # fmt: skip
    right.bar([i + 0.2 for i in x], [r["queued_to_running_p99_ms"] for r in rows], 0.4,
              label="p99")  # fmt: skip
    right.set_xticks(list(x), names)
    right.set_title("queued → running, ms (lower is better)")
    right.legend()
    fig.suptitle("Airflow executors: 200 mapped trivial tasks, 8 slots each")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(
    rounds: Annotated[int, typer.Option(min=1, help="runs per executor")] = 2,
    keep: Annotated[bool, typer.Option(help="leave the stack up afterwards")] = False,
) -> None:
    OUT.mkdir(exist_ok=True)
    image = bench_image()
    folder = Path(tempfile.mkdtemp(prefix="zmqflow-bench-"))
    dags = dags_folder()
    stack = ComposeProject(
        "zmqflow-bench-executor",
        SERVICES,
        ports=("AIRFLOW_PUBLISH_PORT",),
        env={
            "AIRFLOW_ADMIN_USER": ADMIN[0],
            "AIRFLOW_ADMIN_PASSWORD": ADMIN[1],
            "AIRFLOW_DAGS_DIR": str(dags),
            "AIRFLOW_DAG_REFRESH_INTERVAL": "10",
        },
        replicas={"worker-airflow": 2, "worker-celery": 2},
        wait_timeout=600,
    )
    stack.compose.compose_file_name = ["compose.yaml", str(override(image, folder))]
    say("starting the stack (fabric, Airflow, Redis, 2 Celery workers, 2 worker-airflow)")
    stack.up()
    runs: list[dict[str, Any]] = []
    try:
        api = AirflowApi(f"http://127.0.0.1:{stack.ports['AIRFLOW_PUBLISH_PORT']}", *ADMIN)
        wait_for(lambda: api.login() or True, 180, "a token from POST /auth/token")
        for executor in EXECUTORS:
            wait_for(
                lambda e=executor: api.dag(f"zmqflow_bench_executor_{e}")["is_paused"] is False,
                300,
                f"the {executor} DAG parsed",
                interval=2,
            )
        for n in range(rounds):
            for executor in EXECUTORS:
                started = time.monotonic()
                result = measure(api, executor)
                runs.append(result)
                say(
                    f"round {n + 1} {executor}: {result['wall_s']} s, "
                    f"{result['tasks_per_s']} tasks/s, queued→running p50 "
                    f"{result['queued_to_running_p50_ms']} ms "
                    f"({time.monotonic() - started:.0f} s with polling)"
                )
    finally:
        if not keep:
            stack.down()
        shutil.rmtree(dags, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    rows = summarize(runs)
    report(rows)
    (OUT / "airflow-executor.json").write_text(
        json.dumps({"runs": runs, "summary": rows}, indent=2)
    )
    plot(rows, OUT / "airflow-executor.png")
    say(f"written: {OUT / 'airflow-executor.json'}, {OUT / 'airflow-executor.png'}")


if __name__ == "__main__":
    typer.run(main)
