"""make bench-prefect: 10,000 items through the fabric from one Prefect flow,
against 10,000 Prefect tasks with .map, on the same Prefect server, in one run.

Both flows run inside the stack's prefect-worker container (flows/bench.py,
baked into the zmqflow/prefect image) against the stack's Prefect server on
PostgreSQL, on the same items (10,000 `rollup` payloads of 10 sales rows
each): `fabric` hands them to the `rollup` service in 4 batches of 2,500
(one Prefect task per batch), `map` runs one Prefect task per item with the
same rollup handler in the flow's process. Wall time is the flow call to its
return. Then the task-run records are counted on the server, right after
the flow returned and again until all are there or ``--wait`` seconds passed
(the server writes them from events, behind the flow), with the events the
server dropped ("Subscription queue is full" in its log). Both ways must
give the same checksum, and the fabric way must keep every record. Prints a
table and writes bench-results/prefect.json.

Runs against the compose project of scripts/compose.sh (`make up`'s stack);
COMPOSE_PROJECT_NAME picks another.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-results"
COUNT_TASK_RUNS = """
import json, sys, urllib.request
body = json.dumps({"flow_runs": {"id": {"any_": [sys.argv[1]]}}}).encode()
req = urllib.request.Request("http://prefect-server:4200/api/task_runs/count", data=body,
                             headers={"Content-Type": "application/json"}, method="POST")
print(urllib.request.urlopen(req, timeout=30).read().decode())
"""


def in_worker(*args: str, timeout: float = 1800) -> str:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "compose.sh"), "exec", "-T", "prefect-worker", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def run_way(way: str, items: int, rows_per_item: int, batch: int) -> dict[str, Any]:
    out = in_worker(
        "python", "/opt/prefect/flows/bench.py", way, "--items", str(items),
        "--rows-per-item", str(rows_per_item), "--batch-size", str(batch),
    )  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def count_task_runs(flow_run_id: str) -> int:
    return int(in_worker("python", "-c", COUNT_TASK_RUNS, flow_run_id, timeout=60))


def task_runs(flow_run_id: str, expected: int, wait_s: float) -> tuple[int, int, float]:
    """Task-run records of a flow run: (right after the flow returned, once all are
    there or after ``wait_s``, seconds it took). The server writes them from events,
    behind the flow; events it dropped never become records."""
    first = count_task_runs(flow_run_id)
    started = time.monotonic()
    count = first
    while count < expected and time.monotonic() - started < wait_s:
        time.sleep(5)
        count = count_task_runs(flow_run_id)
    return first, count, time.monotonic() - started


def dropped_events(since: str) -> int:
    """The server's "Subscription queue is full, dropping message" warnings since ``since``."""
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "compose.sh"), "logs", "--since", since, "prefect-server"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return proc.stdout.count("Subscription queue is full")


def main(
    items: int = typer.Option(10_000, help="work items for each way"),
    rows_per_item: int = typer.Option(10, help="sales rows in each item"),
    batch: int = typer.Option(2_500, help="items per Prefect task on the fabric way"),
    wait: float = typer.Option(300, help="seconds to wait for task-run records after a flow"),
) -> None:
    console = Console()
    results: dict[str, dict[str, Any]] = {}
    for way, expected in (("fabric", -(-items // batch)), ("map", items)):
        console.print(f"[bold]{way}[/]: {items} items ...")
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        result = run_way(way, items, rows_per_item, batch)
        result["expected_task_runs"] = expected
        at_end, later, waited = task_runs(result["flow_run_id"], expected, wait)
        result["task_runs_at_return"], result["task_runs"] = at_end, later
        result["task_runs_waited_s"] = round(waited, 1)
        result["events_dropped"] = dropped_events(since)
        results[way] = result
    fabric, mapped = results["fabric"], results["map"]
    ratio = mapped["wall_s"] / fabric["wall_s"]
    table = Table("way", "items", "Prefect tasks", "records at return", "records later",
                  "events dropped", "wall s", "items/s",
                  title=f"Prefect: {items} items, fabric vs .map (ratio {ratio:.1f}x)")  # fmt: skip
    for way, r in results.items():
        table.add_row(way, str(r["items"]), str(r["expected_task_runs"]),
                      str(r["task_runs_at_return"]),
                      f"{r['task_runs']} (+{r['task_runs_waited_s']:.0f}s)",
                      str(r["events_dropped"]), f"{r['wall_s']:.2f}",
                      f"{r['items'] / r['wall_s']:.0f}")  # fmt: skip
    console.print(table)
    same = fabric["checksum"] == mapped["checksum"]
    summary = {"items": items, "ratio": round(ratio, 1), "same_result": same,
               "fabric_task_runs_kept": fabric["task_runs"] == fabric["expected_task_runs"],
               "map_task_runs_kept": mapped["task_runs"] == mapped["expected_task_runs"],
               "ways": results}  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "prefect.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    if not same or not summary["fabric_task_runs_kept"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
