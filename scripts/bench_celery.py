"""Celery 5 in `make bench`: the app its workers run, and the client's Run.

Contract: ``make_app(broker, backend)`` is the one Celery configuration of
the benchmark, set as Celery's docs advise for reliable short tasks:
``task_acks_late`` (a task is acknowledged after it ran, so a dead worker's
task goes back to the queue) with ``task_reject_on_worker_lost`` (a child
killed mid-task is redelivered, not acknowledged), and a large
``worker_prefetch_multiplier`` (the Optimizing guide: for many short tasks
a large multiplier; it is the same PREFETCH every system gets). Workers run
``python -m celery -A bench_celery worker`` with the URLs in
BENCH_CELERY_BROKER / BENCH_CELERY_BACKEND and touch BENCH_CELERY_READY
once ready. ``celery_echo`` is the Run: up to ``window`` AsyncResults
outstanding, waited on oldest first (``.get()``, what a Celery user
writes). Payloads are str (JSON carries no bytes).
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench_measure import processes, wait_until
from celery import Celery
from celery.result import AsyncResult
from celery.signals import worker_ready

PREFETCH = 100  # tasks a worker process reserves; zmqflow's credit (bench_zmq.CREDIT)
QUEUE = "bench"
TASK = "bench.echo"


def echo(payload: str) -> str:
    return payload


def make_app(broker: str, backend: str) -> Celery:
    app = Celery("bench", broker=broker, backend=backend)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=PREFETCH,
        task_default_queue=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        worker_disable_rate_limits=True,  # the Optimizing guide: nothing here uses them
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        result_expires=600,
    )
    app.task(name=TASK)(echo)
    return app


app = make_app(
    os.environ.get("BENCH_CELERY_BROKER", "memory://"),
    os.environ.get("BENCH_CELERY_BACKEND", "cache+memory://"),
)


@worker_ready.connect
def _ready(**_: Any) -> None:
    if flag := os.environ.get("BENCH_CELERY_READY"):
        Path(flag).touch()


@contextmanager
def celery_workers(processes_: int, broker: str, backend: str, logs: Path) -> Iterator[Celery]:
    """One Celery worker with ``processes_`` prefork children; yields a client app."""
    flag = logs / f"celery-ready-{time.monotonic_ns()}"
    env = dict(
        os.environ,
        PYTHONPATH=str(Path(__file__).resolve().parent),
        BENCH_CELERY_BROKER=broker,
        BENCH_CELERY_BACKEND=backend,
        BENCH_CELERY_READY=str(flag),
    )
    cmd = [
        sys.executable, "-m", "celery", "-A", "bench_celery", "worker",
        "--pool", "prefork",
        "--concurrency", str(processes_),
        "--queues", QUEUE,
        "--loglevel", "WARNING",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    client = make_app(broker, backend)
    with processes(cmd, logs=logs, name="celery", env=env):
        wait_until(flag.exists, 120, "celery worker")
        try:
            yield client
        finally:
            client.close()


def celery_echo(
    count: int, window: int, app: Celery, payload_bytes: int = 100
) -> tuple[float, list[float]]:
    payload = "x" * payload_bytes
    outstanding: deque[tuple[float, AsyncResult]] = deque()
    rtts: list[float] = []
    sent = 0
    start = time.perf_counter()
    while len(rtts) < count:
        while sent < count and len(outstanding) < window:
            outstanding.append((time.perf_counter(), app.send_task(TASK, args=[payload])))
            sent += 1
        began, result = outstanding.popleft()
        answer = result.get(timeout=120)
        rtts.append(time.perf_counter() - began)
        if len(answer) != payload_bytes:
            raise RuntimeError(f"celery: echo of {len(answer)} characters, sent {payload_bytes}")
    elapsed = time.perf_counter() - start
    return count / elapsed, rtts
