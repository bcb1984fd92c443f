"""The Prefect benchmark's two flows: the same items through the fabric or as Prefect tasks.

Contract: ``python flows/bench.py fabric|map [--items N] [--rows-per-item R]
[--batch-size B]`` builds N items of R sales rows each (the example data set,
zmqflow.examples.sales, N x R rows; default 10,000 items of 10 rows), runs one flow on
them and prints one JSON line: the way, items, wall time in seconds (flow
call to return, in this process), the flow run id, and a checksum of the
answers (the same for both ways). ``fabric``: one flow, batches of B items
(default 2,500), ONE Prefect task per batch, all at once, the `rollup`
service on the workers. ``map``: one Prefect task per item with ``.map``,
each running the same `rollup` handler in the flow's process (results not
persisted: the cheapest a per-item task gets).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from prefect import flow, task
from prefect.context import get_run_context
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_zmqflow import ZmqflowCredentials, submit_batch
from prefect_zmqflow.setup import DEFAULT_BLOCK

from zmqflow.examples import sales
from zmqflow.handlers import rollup


@dataclass(frozen=True, slots=True)
class Item:
    key: str  # idempotency key, unique per run
    payload: bytes  # the CSV for `rollup`


# Made before the flows start, so that neither way's wall time includes
# building the data set, and the items never travel as flow parameters
# (the server would store every payload with the flow run).
ITEMS: list[Item] = []


def bench_items(count: int, rows_per_item: int) -> list[Item]:
    data = sales.DataSet(items=count, rows_per_item=rows_per_item)
    run = f"bench-{uuid.uuid4().hex[:8]}:{data.tag}"
    return [Item(f"{run}:{i}", payload) for i, payload in enumerate(sales.payloads(data))]


def chunks(items: list[Item], size: int) -> Iterator[list[Item]]:
    return (items[start : start + size] for start in range(0, len(items), size))


def checksum(outputs: list[bytes]) -> str:
    digest = hashlib.sha256()
    for out in outputs:
        digest.update(out + b"\n")
    return digest.hexdigest()


@flow(name="zmqflow-bench-fabric", task_runner=ThreadPoolTaskRunner(max_workers=32))
def bench_fabric(batch_size: int) -> tuple[str, str]:
    items = ITEMS
    credentials = ZmqflowCredentials.load(DEFAULT_BLOCK)
    futures = [
        submit_batch.submit(credentials, "rollup", [i.payload for i in b], [i.key for i in b])
        for b in chunks(items, batch_size)
    ]
    outputs = [a.output for f in futures for a in f.result()]
    return str(get_run_context().flow_run.id), checksum(outputs)


@task(name="rollup-one", persist_result=False)
def rollup_one(payload: bytes) -> bytes:
    return rollup(payload, {})


@flow(name="zmqflow-bench-map")
def bench_map() -> tuple[str, str]:
    items = ITEMS
    futures = rollup_one.map([i.payload for i in items])
    outputs = [f.result() for f in futures]
    return str(get_run_context().flow_run.id), checksum(outputs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("way", choices=["fabric", "map"])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rows-per-item", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=2_500)
    args = parser.parse_args()
    ITEMS[:] = bench_items(args.items, args.rows_per_item)
    started = time.perf_counter()
    if args.way == "fabric":
        run_id, digest = bench_fabric(args.batch_size)
    else:
        run_id, digest = bench_map()
    wall = time.perf_counter() - started
    print(json.dumps({"way": args.way, "items": len(ITEMS), "wall_s": round(wall, 3),
                      "flow_run_id": run_id, "checksum": digest}))  # fmt: skip


if __name__ == "__main__":
    main()
