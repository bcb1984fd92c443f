"""CPU time per task of each zmqflow process, for 100-byte echo tasks.

Starts a forwarder and N Python workers, runs a warm-up and then COUNT echo
tasks through ``Client.stream`` (WINDOW outstanding), and prints the CPU
time each process spent per task (from /proc/PID/stat; the client's own
from getrusage) and its utilisation (CPU time over wall time). CPU time is
far less sensitive than wall time to what else the machine runs, so this
is the figure to compare between changes (docs/benchmarks.md).

    .venv/bin/python scripts/cpu_per_task.py [--workers 1] [--journal PATH|:memory:]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import forwarder_cmd, python_worker, wait_workers

from zmqflow import Client

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def main(
    workers: int = typer.Option(1, help="Python workers"),
    journal: str = typer.Option("", help="journal path (default: a temporary file), or :memory:"),
    count: int = typer.Option(20_000, help="tasks measured"),
    window: int = typer.Option(200, help="tasks outstanding"),
    credit: int = typer.Option(100, help="worker credit"),
) -> None:
    with tempfile.TemporaryDirectory(prefix="zmqflow-cpu-") as tmp:
        cmd, front, back = forwarder_cmd(journal or str(Path(tmp) / "journal.db"))
        procs = [subprocess.Popen(cmd)]
        procs += [subprocess.Popen(python_worker(back, credit)) for _ in range(workers)]
        try:
            wait_workers(front, workers)
            payload = b"x" * 100
            with Client(front, timeout=600) as client:
                list(client.stream("echo", (payload for _ in range(2000)), window=window))
                before = [cpu_seconds(p.pid) for p in procs]
                mine = resource.getrusage(resource.RUSAGE_SELF)
                start = time.perf_counter()
                answers = list(
                    client.stream("echo", (payload for _ in range(count)), window=window)
                )
                elapsed = time.perf_counter() - start
                after = [cpu_seconds(p.pid) for p in procs]
                mine_after = resource.getrusage(resource.RUSAGE_SELF)
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
    assert len(answers) == count and all(a.ok for a in answers), "echo tasks failed"
    print(f"{count / elapsed:,.0f} tasks/s, window {window}, {workers} worker(s)")
    names = ["forwarder"] + [f"worker {n}" for n in range(workers)]
    spent = [b - a for a, b in zip(before, after, strict=True)]
    client = (mine_after.ru_utime + mine_after.ru_stime) - (mine.ru_utime + mine.ru_stime)
    for name, seconds in [*zip(names, spent, strict=True), ("client", client)]:
        per_task = seconds / count * 1e6
        print(f"  {name:10} {per_task:6.1f} us/task   utilisation {seconds / elapsed:.2f}")


if __name__ == "__main__":
    typer.run(main)
