"""make bench-prefect: 10,000 items through the fabric from one Prefect flow,
against 10,000 Prefect tasks with .map, on the same Prefect server, in one run.

Both flows run inside the stack's prefect-worker container (flows/bench.py,
baked into the zmqflow/prefect image) against the stack's Prefect server on
PostgreSQL: `fabric` hands the items to the `rollup` service in 20 batches
(one Prefect task per batch), `map` runs one Prefect task per item with the
same rollup handler in the flow's process. Wall time is the flow call to its
return. Then every task-run record is counted on the server (task-run
records are written from events, after the flow returns: counted until the
figure stops moving), and both ways must give the same checksum. Prints a
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


def run_way(way: str, items: int) -> dict[str, Any]:
    out = in_worker("python", "/opt/prefect/flows/bench.py", way, "--items", str(items))
    return json.loads(out.strip().splitlines()[-1])


def task_runs(flow_run_id: str, expected: int, settle_s: float = 20.0) -> int:
    """Task-run records of a flow run, once the count reaches ``expected`` or stops moving."""
    last, since = -1, time.monotonic()
    while True:
        count = int(in_worker("python", "-c", COUNT_TASK_RUNS, flow_run_id, timeout=60))
        if count == expected:
            return count
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since > settle_s:
            return count
        time.sleep(1)


BATCH = 500  # items per Prefect task on the fabric way (flows/bench.py's default)


def main(items: int = typer.Option(10_000, help="work items for each way")) -> None:
    console = Console()
    results: dict[str, dict[str, Any]] = {}
    for way, expected in (("fabric", -(-items // BATCH)), ("map", items)):
        console.print(f"[bold]{way}[/]: {items} items ...")
        result = run_way(way, items)
        result["expected_task_runs"] = expected
        result["task_runs"] = task_runs(result["flow_run_id"], expected)
        results[way] = result
    fabric, mapped = results["fabric"], results["map"]
    ratio = mapped["wall_s"] / fabric["wall_s"]
    table = Table("way", "items", "Prefect tasks", "task-run records", "wall s", "items/s",
                  title=f"Prefect: {items} items, fabric vs .map (ratio {ratio:.1f}x)")  # fmt: skip
    for way, r in results.items():
        table.add_row(way, str(r["items"]), str(r["expected_task_runs"]), str(r["task_runs"]),
                      f"{r['wall_s']:.2f}", f"{r['items'] / r['wall_s']:.0f}")  # fmt: skip
    console.print(table)
    same = fabric["checksum"] == mapped["checksum"]
    kept = all(r["task_runs"] == r["expected_task_runs"] for r in results.values())
    summary = {"items": items, "ratio": round(ratio, 1), "same_result": same,
               "all_task_runs_kept": kept, "ways": results}  # fmt: skip
    OUT.mkdir(exist_ok=True)
    (OUT / "prefect.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    if not same:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
