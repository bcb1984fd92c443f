"""The Prefect benchmark's two flows: the same items through the fabric or as Prefect tasks.

Contract: ``python flows/bench.py fabric|map [--items N]`` runs one flow on
the first N items (default 10,000) of the fan-out data set and prints one
JSON line: the way, items, wall time in seconds (flow call to return, in
this process), the flow run id, and the result's checksum (the same for both
ways). ``fabric``: one flow, batches of 500 items, ONE Prefect task per
batch, the `rollup` service on the workers. ``map``: one Prefect task per
item with ``.map``, each running the same `rollup` handler in the flow's
process (results not persisted: the cheapest a per-item task gets).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import uuid

from prefect import flow, task
from prefect.context import get_run_context
from prefect_zmqflow import ZmqflowCredentials, sales, submit_batch
from prefect_zmqflow.setup import DEFAULT_BLOCK

from zmqflow.handlers import rollup

# Made before the flows start, so that neither way's wall time includes
# building the data set, and the items never travel as flow parameters
# (the server would store every payload with the flow run).
ITEMS: list[sales.Item] = []


def bench_items(count: int) -> list[sales.Item]:
    spec = sales.SalesSpec()
    items = sales.make_items(spec, sales.generate(spec), f"bench-{uuid.uuid4().hex[:8]}")
    if len(items) < count:
        raise ValueError(f"the data set has {len(items)} items, fewer than {count}")
    return items[:count]


def checksum(outputs: list[bytes]) -> str:
    digest = hashlib.sha256()
    for out in outputs:
        digest.update(out + b"\n")
    return digest.hexdigest()


@flow(name="zmqflow-bench-fabric")
def bench_fabric(batch_size: int = 500) -> tuple[str, str]:
    items = ITEMS
    credentials = ZmqflowCredentials.load(DEFAULT_BLOCK)
    futures = [
        submit_batch.submit(credentials, "rollup", [i.payload for i in b], [i.key for i in b])
        for b in sales.chunks(items, batch_size)
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
    args = parser.parse_args()
    ITEMS[:] = bench_items(args.items)
    started = time.perf_counter()
    run_id, digest = (bench_fabric if args.way == "fabric" else bench_map)()
    wall = time.perf_counter() - started
    print(json.dumps({"way": args.way, "items": len(ITEMS), "wall_s": round(wall, 3),
                      "flow_run_id": run_id, "checksum": digest}))  # fmt: skip


if __name__ == "__main__":
    main()
