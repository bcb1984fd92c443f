"""Tasks and flows of the task-runner tests, importable by name on the replicas.

Each task reports the process it ran in, so a test can tell that the
replicas ran it and not the flow's own process.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from prefect import task
from prefect.cache_policies import INPUTS


@task
def where(x: int) -> tuple[int, int]:
    return x, os.getpid()


@task
def add(x: int, y: int) -> int:
    return x + y


@task
def square(x: int) -> int:
    return x * x


@task
def total(values: list[int]) -> int:
    return sum(values)


@task
async def async_double(x: int) -> tuple[int, int]:
    await asyncio.sleep(0.01)
    return 2 * x, os.getpid()


@task
def stamp(path: str, text: str, delay_s: float = 0.0) -> str:
    """Appends text to a file after a delay: the order of stamps is the order of runs."""
    time.sleep(delay_s)
    with open(path, "a") as out:
        out.write(text + "\n")
    return text


@task(retries=2, retry_delay_seconds=0)
def always_fails(marker: str) -> None:
    with open(marker, "a") as out:
        out.write("attempt\n")
    raise ValueError(f"bad input {Path(marker).name}")


@task(cache_policy=INPUTS, persist_result=True)
def cached_square(x: int, marker: str) -> int:
    with open(marker, "a") as out:
        out.write("ran\n")
    return x * x


@task
def slow_where(x: int, pid_file: str, delay_s: float) -> tuple[int, int]:
    """Writes its pid first, then takes its time: a test can kill the replica running it."""
    with open(pid_file, "a") as out:
        out.write(f"{os.getpid()}\n")
    time.sleep(delay_s)
    return x, os.getpid()


@task
def echo_bytes(data: bytes) -> int:
    return len(data)


# ---- flows (their task runner is given by the test: flow.with_options) ----
from prefect import flow  # noqa: E402
from prefect.futures import wait  # noqa: E402


@flow
def submit_one() -> tuple[int, tuple[int, int]]:
    return add.submit(1, 2).result(), where.submit(7).result()


@flow
def map_and_reduce(n: int) -> tuple[list[int], int]:
    squares = square.map(range(n))
    return squares.result(), total.submit(squares).result()


@flow
def ordered(path: str) -> list[str]:
    first = stamp.submit(path, "first", delay_s=0.5)
    second = stamp.submit(path, "second", wait_for=[first])
    return [first.result(), second.result()]


@flow
def run_async(n: int) -> list[tuple[int, int]]:
    return async_double.map(range(n)).result()


def _outcome(future) -> tuple[str, str, str]:
    """A final state as plain data (a flow returning a State would take it as its own)."""
    wait([future])
    state = future.state
    return state.name, state.message or "", repr(future.result(raise_on_failure=False))


@flow
def fails(marker: str) -> tuple[str, str, str]:
    return _outcome(always_fails.submit(marker))


@flow
def cached(x: int, marker: str) -> tuple[int, str]:
    future = cached_square.submit(x, marker)
    value = future.result()
    return value, future.state.name


@flow
def slow_map(n: int, pid_file: str, delay_s: float) -> list[tuple[int, int]]:
    return slow_where.map(range(n), pid_file=pid_file, delay_s=delay_s).result()


@flow
def big_parameter(size: int) -> tuple[str, str, str]:
    return _outcome(echo_bytes.submit(b"x" * size))
