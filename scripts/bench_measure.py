"""Measuring primitives shared by `make bench-core` and `make bench`.

Contract: a system under test is a ``Run``: ``run(count, window)`` sends
``count`` echo tasks with at most ``window`` outstanding and returns its
throughput (tasks/s) and each task's round trip in seconds. ``measure``
turns a Run into ``Figures`` the one way every benchmark here does it: a
warm-up that is not counted, a pipelined throughput run, then ``pings``
tasks one at a time for the p50/p99 of a lone task. ``median_figures``
folds the rounds of one system into its medians. ``processes`` starts the
programs a system needs and always kills (and reaps) them, logging each to
a file when given a folder; ``wait_until`` waits on a probe, never a bare
sleep.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

Run = Callable[[int, int], tuple[float, list[float]]]


@dataclass
class Figures:
    throughput_per_s: float
    p50_us: float
    p99_us: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(run: Run, count: int, window: int, pings: int, warmup: int) -> Figures:
    if warmup:
        run(warmup, window)  # connections, caches, a journal's first pages, JIT-free warm paths
    throughput, _ = run(count, window)
    _, rtts = run(pings, 1)
    return Figures(
        round(throughput, 1),
        round(percentile(rtts, 0.5) * 1e6, 1),
        round(percentile(rtts, 0.99) * 1e6, 1),
    )


def median_figures(rounds: Sequence[Figures]) -> Figures:
    """One system's figures over the rounds: the median of each."""
    return Figures(
        round(statistics.median(r.throughput_per_s for r in rounds), 1),
        round(statistics.median(r.p50_us for r in rounds), 1),
        round(statistics.median(r.p99_us for r in rounds), 1),
    )


def wait_until(probe: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    until = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > until:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(step)


def port_open(port: int) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    return probe


@contextmanager
def processes(
    *commands: Sequence[str],
    logs: Path | None = None,
    env: Mapping[str, str] | None = None,
    name: str = "proc",
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``commands``, each in its own process group; kill every group at the end.

    A group, because servers and worker pools fork helpers (RabbitMQ's
    erl_child_setup, Celery's prefork children) that must not outlive the
    benchmark.
    """
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for n, cmd in enumerate(commands):
            out = open(logs / f"{name}-{n}.log", "ab") if logs else None  # noqa: SIM115
            try:
                procs.append(
                    subprocess.Popen(
                        list(cmd),
                        stdout=out or subprocess.DEVNULL,
                        stderr=subprocess.STDOUT,
                        env=dict(env) if env is not None else None,
                        start_new_session=True,  # its own group: helpers it forks die with it
                    )
                )
            finally:
                if out:
                    out.close()  # the child has its own copy
        yield procs
    finally:
        for proc in procs:
            stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group ``proc`` leads and reap its leader.

    Everything started here is disposable (temp dirs, loopback ports), so
    nothing is gained by a graceful stop, and a draining worker would only
    slow the run down.
    """
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
