"""Flow `zmqflow-taskrunner-demo`: a flow's own tasks on the worker-prefect replicas.

Contract: ``zmqflow_taskrunner_demo(n)`` maps the task ``score`` over
``range(n)`` (default 1,000) on ``ZmqflowTaskRunner()`` (no arguments: the
stack's forwarder from the environment, service ``prefect.task``), then
reduces the n results with the task ``combine`` into ``{count, total,
checksum, hosts}``: ``total`` and ``checksum`` depend on the inputs alone
(``expected(n)`` computes them without Prefect), ``hosts`` counts the task
runs each replica ran (every task records the host it ran on). The result is
also the markdown artifact ``zmqflow-taskrunner-demo-result`` (JSON in a code
block).

Run from the command line with another runner, for comparison:
``python flows/taskrunner_demo.py --n 300 --runner threads`` prints the
result as one JSON line (``--runner zmqflow`` is the deployment's).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_zmqflow import ZmqflowTaskRunner

ARTIFACT_KEY = "zmqflow-taskrunner-demo-result"


def value_of(i: int) -> int:
    """What ``score`` computes for item i, without Prefect."""
    return int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:4], "big") % 1000


@task(name="score")
def score(i: int) -> dict[str, Any]:
    return {"i": i, "value": value_of(i), "host": socket.gethostname()}


@task(name="combine")
def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    hosts: dict[str, int] = {}
    for r in results:
        hosts[r["host"]] = hosts.get(r["host"], 0) + 1
    return {
        "count": len(results),
        "total": sum(r["value"] for r in results),
        "checksum": checksum([r["i"] for r in results]),
        "hosts": dict(sorted(hosts.items())),
    }


def checksum(indices: list[int]) -> str:
    """One hash of the items' order and content: each result once, in map order."""
    return hashlib.sha256(",".join(map(str, indices)).encode()).hexdigest()[:16]


def expected(n: int) -> dict[str, Any]:
    """The result's input-only part, computed in one process without Prefect."""
    return {"count": n, "total": sum(map(value_of, range(n))), "checksum": checksum(list(range(n)))}


@flow(name="zmqflow-taskrunner-demo", task_runner=ZmqflowTaskRunner())
def zmqflow_taskrunner_demo(n: int = 1000) -> dict[str, Any]:
    results = score.map(range(n))
    summary = combine.submit(results).result()
    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=f"```json\n{json.dumps(summary, indent=2, sort_keys=True)}\n```",
        description=f"{n} mapped task runs and their reduce, with the hosts that ran them",
    )
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--runner", choices=["zmqflow", "threads"], default="zmqflow")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    runner = (
        ThreadPoolTaskRunner(max_workers=args.threads)
        if args.runner == "threads"
        else ZmqflowTaskRunner()
    )
    result = zmqflow_taskrunner_demo.with_options(task_runner=runner)(n=args.n)
    print(json.dumps(result, sort_keys=True))
