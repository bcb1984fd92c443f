"""make bench-airflow: the same work items through the fabric and through
Airflow's own dynamic task mapping, on a running stack, in one run.

Both sides roll up items of the example sales data set (100 rows each):
- fabric: DAG zmqflow_bench_fabric, one deferrable ZmqflowSubmitOperator task
  with ITEMS items (default 10,000); its task time is the task instance's
  duration, from start to success, deferral included (also reported: the
  items' time in the fabric, first SUBMIT to last answer, ``fabric_s``);
- mapping: DAG zmqflow_bench_mapping, one mapped task instance per item,
  MAPPED of them (default 200, at most 1,024: Airflow's max_map_length); its
  time is from the first mapped instance's start to the last one's end.
Seconds per item and the ratio (mapping / fabric) are printed and written to
bench-results/airflow.json. The stack: `make up` (REST API on
127.0.0.1:$AIRFLOW_PUBLISH_PORT, login from .env).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from integration_tests.airflow.api import AirflowApi  # noqa: E402

OUT = ROOT / "bench-results"
console = Console()


def _env() -> dict[str, str]:
    lines = (ROOT / ".env").read_text().splitlines()
    return dict(ln.split("=", 1) for ln in lines if "=" in ln and not ln.lstrip().startswith("#"))


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _mapped(api: AirflowApi, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = api._call(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
            params={"task_id": task_id, "limit": 100, "offset": len(out)},
        )["task_instances"]
        out.extend(page)
        if len(page) < 100:
            return out


def run_fabric(api: AirflowApi, items: int) -> dict[str, Any]:
    dag = "zmqflow_bench_fabric"
    started = time.monotonic()
    run_id = api.trigger(dag, {"items": items})
    api.wait_run(dag, run_id, timeout=1800)
    ti = api.task_instance(dag, run_id, "rollup")
    value = api.xcom(dag, run_id, "rollup")
    assert value["count"] == items and not value["failed"], value
    task_s = _ts(ti["end_date"]) - _ts(ti["start_date"])
    return {
        "items": items,
        "task_s": round(task_s, 3),
        "run_s": round(time.monotonic() - started, 3),
        "s_per_item": task_s / items,
        # first SUBMIT to last answer collected: the items' time in the fabric
        "fabric_s": value["fabric_s"],
        "workers": value["workers"],
    }


def run_mapping(api: AirflowApi, items: int) -> dict[str, Any]:
    dag = "zmqflow_bench_mapping"
    started = time.monotonic()
    run_id = api.trigger(dag, {"items": items})
    api.wait_run(dag, run_id, timeout=7200)
    tis = _mapped(api, dag, run_id, "rollup_item")
    assert len(tis) == items and all(t["state"] == "success" for t in tis), len(tis)
    first = min(_ts(t["start_date"]) for t in tis)
    last = max(_ts(t["end_date"]) for t in tis)
    return {
        "items": items,
        "task_s": round(last - first, 3),
        "run_s": round(time.monotonic() - started, 3),
        "s_per_item": (last - first) / items,
    }


def main(
    items: Annotated[int, typer.Option(help="work items through the fabric")] = 10_000,
    mapped: Annotated[int, typer.Option(help="mapped task instances (<= 1024)")] = 200,
    api_url: Annotated[
        str | None, typer.Option(help="default: 127.0.0.1:AIRFLOW_PUBLISH_PORT")
    ] = None,
    user: Annotated[str | None, typer.Option()] = None,
    password: Annotated[str | None, typer.Option()] = None,
) -> None:
    if not 1 <= mapped <= 1024:
        raise typer.BadParameter("--mapped must be 1..1024 (Airflow's max_map_length)")
    env = _env()
    api = AirflowApi(
        api_url or f"http://127.0.0.1:{env.get('AIRFLOW_PUBLISH_PORT', '8080')}",
        user or env.get("AIRFLOW_ADMIN_USER", "admin"),
        password or env.get("AIRFLOW_ADMIN_PASSWORD", "admin"),
    )
    api.login()
    console.print(f"fabric: {items} items through zmqflow_bench_fabric ...")
    fabric = run_fabric(api, items)
    console.print(f"mapping: {mapped} mapped tasks in zmqflow_bench_mapping ...")
    mapping = run_mapping(api, mapped)
    ratio = mapping["s_per_item"] / fabric["s_per_item"]

    table = Table(title="Airflow: the same rollup items, fabric vs dynamic task mapping")
    for column in ("way", "items", "task time s", "s per item", "items/s"):
        table.add_column(column, justify="right")
    for name, r in (("deferrable operator (fabric)", fabric), ("dynamic task mapping", mapping)):
        table.add_row(
            name,
            f"{r['items']:,}",
            f"{r['task_s']:.1f}",
            f"{r['s_per_item']:.6f}",
            f"{1 / r['s_per_item']:,.1f}",
        )
    console.print(table)
    console.print(
        f"mapping takes {ratio:,.0f} times as long per item as the fabric task; the items "
        f"spent {fabric['fabric_s']:.1f} s in the fabric (first SUBMIT to last answer)"
    )
    OUT.mkdir(exist_ok=True)
    result = {"fabric": fabric, "mapping": mapping, "ratio_per_item": ratio}
    (OUT / "airflow.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    typer.run(main)
