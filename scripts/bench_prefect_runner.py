"""make bench-prefect-runner: one flow of 1,000 small tasks on three task runners, in one run.

The flow (orchestrators/prefect/flows/bench_runners.py) maps a tiny task over
``--tasks`` items and sums the results, on

- ``ThreadPoolTaskRunner(max_workers=S)``, in the flow's process;
- prefect-dask's ``DaskTaskRunner`` on a ``distributed.LocalCluster`` of
  ``--replicas`` worker processes with ``--concurrency`` threads each,
  started before the clock (as the replicas are);
- ``ZmqflowTaskRunner`` over a local forwarder and ``--replicas`` replica
  processes running worker-prefect's command (``zmqflow worker --service
  ... --handler prefect_zmqflow.replica:run_task_run --concurrency C``),

so S = replicas x concurrency slots each. All three report to the same
Prefect server: PREFECT_API_URL, default the `make up` stack's
http://127.0.0.1:4200/api (PostgreSQL); when nothing answers there, a
temporary server of Prefect's test harness (SQLite), said in the output.
Each runner first runs a 20-task warm-up flow (imports, connections), then
the timed flow: wall time from the flow call to its return, tasks per
second, and the task-run records the server holds for that flow run, right
after and once all are there (or ``--wait`` seconds passed). Every run must
return the expected sum. Prints a table, writes
bench-results/prefect-runner.json and a plot bench-results/prefect-runner.png.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "orchestrators" / "prefect" / "flows"
OUT = ROOT / "bench-results"
SERVICE = "prefect.bench"
RUNNERS = ("thread-pool", "dask", "zmqflow")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(path: str, body: Any = None) -> Any:
    url = os.environ["PREFECT_API_URL"].rstrip("/") + path
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


def task_runs(flow_run_id: str, expected: int, wait_s: float) -> tuple[int, int]:
    """Task-run records of a flow run: right after the flow returned, and once all are
    there (or after ``wait_s``); the server writes them from events, behind the flow."""

    def count() -> int:
        return api("/task_runs/count", {"flow_runs": {"id": {"any_": [flow_run_id]}}})

    first = latest = count()
    until = time.monotonic() + wait_s
    while latest < expected and time.monotonic() < until:
        time.sleep(2)
        latest = count()
    return first, latest


@contextlib.contextmanager
def local_fabric(replicas: int, concurrency: int, logs: Path) -> Iterator[str]:
    """A forwarder and replica processes on loopback; yields the client endpoint."""
    frontend, backend = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQFLOW_")}
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, *args: str) -> None:
        out = (logs / f"{name}.log").open("ab")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "zmqflow", *args], env=env, stdout=out, stderr=out
            )
        )

    spawn("forwarder", "forwarder", f"--frontend={frontend}", f"--backend={backend}",
          f"--journal={logs / 'journal.db'}")  # fmt: skip
    for n in range(replicas):
        spawn(f"replica-{n}", "worker", f"--connect={backend}", f"--service={SERVICE}",
              "--handler=prefect_zmqflow.replica:run_task_run",
              f"--concurrency={concurrency}")  # fmt: skip
    try:
        from zmqflow.client import Client

        until = time.monotonic() + 120
        while True:
            with contextlib.suppress(TimeoutError), Client(frontend, timeout=5) as client:
                workers = client.status(timeout=3).get("workers", [])
                if sum(SERVICE in w.get("services", []) for w in workers) == replicas:
                    break
            if time.monotonic() > until:
                raise RuntimeError(f"{replicas} replicas did not register; logs in {logs}")
            time.sleep(0.5)
        yield frontend
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def timed(flow: Any, runner: Any, n: int) -> tuple[float, Any]:
    started = time.perf_counter()
    result = flow.with_options(task_runner=runner)(n=n)
    return time.perf_counter() - started, result


def main(
    tasks: int = typer.Option(1000, help="mapped tasks in the timed flow"),
    replicas: int = typer.Option(2, help="replica processes (Dask: worker processes)"),
    concurrency: int = typer.Option(4, help="threads per replica (Dask: threads per worker)"),
    wait: float = typer.Option(120.0, help="seconds to wait for every task-run record"),
) -> None:
    os.environ.setdefault("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    for name in [k for k in os.environ if k.startswith("ZMQFLOW_CURVE_")]:
        del os.environ[name]  # the local forwarder is plain; the stack's keys are not for it
    # the processes that run the tasks import the flow's module by name
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(FLOWS), os.environ.get("PYTHONPATH")])
    )
    sys.path.insert(0, str(FLOWS))
    with contextlib.ExitStack() as stack:
        try:
            api("/health")
            server = os.environ["PREFECT_API_URL"]
        except OSError as exc:
            from prefect.settings import PREFECT_API_URL
            from prefect.testing.utilities import prefect_test_harness

            print(f"no Prefect server at {os.environ['PREFECT_API_URL']} ({exc}): a temporary one")
            stack.enter_context(prefect_test_harness(server_startup_timeout=300))
            os.environ["PREFECT_API_URL"] = server = str(PREFECT_API_URL.value())
            server += " (temporary, SQLite)"
        run(tasks, replicas, concurrency, wait, server)


def run(tasks: int, replicas: int, concurrency: int, wait: float, server: str) -> None:
    import bench_runners
    from distributed import LocalCluster
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner
    from prefect_zmqflow import ZmqflowTaskRunner

    slots = replicas * concurrency
    console = Console()
    rows: list[dict[str, Any]] = []
    logs = Path(tempfile.mkdtemp(prefix="bench-prefect-runner-"))
    with (
        LocalCluster(
            n_workers=replicas, threads_per_worker=concurrency, processes=True,
            dashboard_address=None,
        ) as cluster,
        local_fabric(replicas, concurrency, logs) as frontend,
    ):  # fmt: skip
        makers: dict[str, Callable[[], Any]] = {
            "thread-pool": lambda: ThreadPoolTaskRunner(max_workers=slots),
            "dask": lambda: DaskTaskRunner(address=cluster.scheduler_address),
            "zmqflow": lambda: ZmqflowTaskRunner(frontend=frontend, service=SERVICE),
        }
        for name in RUNNERS:
            console.print(f"[bold]{name}[/]: warm-up (20 tasks), then {tasks} tasks")
            timed(bench_runners.bench_runners, makers[name](), 20)
            wall, (result, flow_run_id) = timed(bench_runners.bench_runners, makers[name](), tasks)
            assert result == bench_runners.expected(tasks), (name, result)
            first, last = task_runs(flow_run_id, tasks, wait)
            rows.append(
                {
                    "runner": name,
                    "tasks": tasks,
                    "slots": slots,
                    "wall_s": round(wall, 2),
                    "tasks_per_s": round(tasks / wall, 1),
                    "records_at_return": first,
                    "records": last,
                    "flow_run_id": flow_run_id,
                }
            )
            console.print(rows[-1])
    base = {r["runner"]: r for r in rows}
    table = Table(title=f"{tasks} tasks, {replicas} x {concurrency} slots; server {server}")
    for col in ("runner", "wall s", "tasks/s", "vs thread pool", "vs Dask", "task runs recorded"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["runner"], f"{r['wall_s']:.1f}", f"{r['tasks_per_s']:.1f}",
            f"{r['tasks_per_s'] / base['thread-pool']['tasks_per_s']:.2f}x",
            f"{r['tasks_per_s'] / base['dask']['tasks_per_s']:.2f}x",
            f"{r['records']} of {r['tasks']} ({r['records_at_return']} at return)",
        )  # fmt: skip
    console.print(table)
    OUT.mkdir(exist_ok=True)
    (OUT / "prefect-runner.json").write_text(json.dumps({"server": server, "rows": rows}, indent=2))
    plot(rows, OUT / "prefect-runner.png", f"{tasks} tasks, {replicas} x {concurrency} slots")
    console.print(f"wrote {OUT / 'prefect-runner.json'} and {OUT / 'prefect-runner.png'}")


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [r["runner"] for r in rows]
    values = [r["tasks_per_s"] for r in rows]
    bars = ax.bar(names, values, color=["#888888", "#4c72b0", "#dd8452"][: len(rows)])
    ax.bar_label(bars, fmt="%.1f")
    ax.set_ylabel("tasks per second")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    typer.run(main)
