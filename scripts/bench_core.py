"""make bench-core: zmqflow round trips against raw pyzmq echo, in one run.

Every system answers 100-byte echo tasks; each is measured twice:
- throughput: N tasks with up to WINDOW outstanding (pipelined), after a
  warm-up of WARMUP tasks that is not counted;
- latency: M tasks one at a time (ping-pong), p50 and p99 round trip.
The baseline is raw pyzmq DEALER -> ROUTER echo between two processes,
measured the same way in the same run. The machines are shared and their
speed drifts within seconds, so the whole table is measured ROUNDS times,
one system after the other, and each system's figure is its median over
the rounds; the ratio is a median over the raw echo's median. Prints a
table, writes bench-results/core.json and core.png.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import typer
import zmq
from rich.console import Console
from rich.table import Table

from zmqflow import Client

ROOT = Path(__file__).resolve().parent.parent
RUST_BIN = ROOT / "services" / "worker-rust" / "target" / "release" / "zmqflow-worker"
OUT = ROOT / "bench-results"
console = Console()

ECHO_SERVER = """
import sys, zmq
sock = zmq.Context().socket(zmq.ROUTER)
sock.bind(sys.argv[1])
while True:
    sock.send_multipart(sock.recv_multipart())
"""


@dataclass
class Row:
    system: str
    throughput_per_s: float
    p50_us: float
    p99_us: float
    ratio: float = 0.0  # throughput / baseline throughput


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ------------------------------------------------------------------- raw echo
def raw_echo(count: int, window: int, endpoint: str) -> tuple[float, list[float]]:
    """Pipelined echo; returns (throughput, per-message round trips in seconds)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    payload = b"x" * 92
    sent: dict[int, float] = {}
    rtts: list[float] = []
    next_seq = 0
    start = time.perf_counter()
    while len(rtts) < count:
        while next_seq < count and len(sent) < window:
            sent[next_seq] = time.perf_counter()
            sock.send(next_seq.to_bytes(8, "big") + payload)
            next_seq += 1
        reply = sock.recv()
        rtts.append(time.perf_counter() - sent.pop(int.from_bytes(reply[:8], "big")))
    elapsed = time.perf_counter() - start
    sock.close()
    return count / elapsed, rtts


# -------------------------------------------------------------------- zmqflow
def zmqflow_echo(count: int, window: int, endpoint: str) -> tuple[float, list[float]]:
    payload = b"x" * 100
    with Client(endpoint, timeout=600) as client:
        start = time.perf_counter()
        results = list(client.stream("echo", (payload for _ in range(count)), window=window))
        elapsed = time.perf_counter() - start
    assert len(results) == count and all(r.ok for r in results), "bench tasks failed"
    return count / elapsed, [r.latency_s for r in results]


@contextmanager
def processes(*commands: list[str]) -> Iterator[None]:
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for cmd in commands
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def wait_workers(endpoint: str, count: int) -> None:
    with Client(endpoint) as client:
        until = time.monotonic() + 30
        while len(client.status(5)["workers"]) < count:
            if time.monotonic() > until:
                raise TimeoutError("workers did not register")
            time.sleep(0.1)


def forwarder_cmd(journal: str) -> tuple[list[str], str, str]:
    front, back = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    cmd = [
        sys.executable,
        "-m",
        "zmqflow",
        "forwarder",
        "--frontend",
        front,
        "--backend",
        back,
        "--events-in",
        f"tcp://127.0.0.1:{free_port()}",
        "--events-out",
        f"tcp://127.0.0.1:{free_port()}",
        "--journal",
        journal,
        "--log-level",
        "WARNING",
    ]
    return cmd, front, back


def python_worker(backend: str, credit: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "zmqflow",
        "worker",
        "--connect",
        backend,
        "--service",
        "echo",
        "--credit",
        str(credit),
        "--log-level",
        "WARNING",
    ]


def rust_worker(backend: str, credit: int) -> list[str]:
    return [str(RUST_BIN), "--connect", backend, "--service", "echo", "--credit", str(credit)]


# ---------------------------------------------------------------------- main
def measure(
    name: str,
    run: Callable[[int, int], tuple[float, list[float]]],
    count: int,
    window: int,
    pings: int,
    warmup: int,
) -> Row:
    if warmup:
        run(warmup, window)  # connections, caches, the journal's first pages
    throughput, _ = run(count, window)
    _, rtts = run(pings, 1)
    row = Row(
        name,
        round(throughput, 1),
        round(percentile(rtts, 0.5) * 1e6, 1),
        round(percentile(rtts, 0.99) * 1e6, 1),
    )
    console.print(f"  {name}: {row.throughput_per_s:,.0f}/s, p50 {row.p50_us:,.0f} us")
    return row


def median_row(rows: list[Row]) -> Row:
    """One system's figures over the rounds: the median of each."""
    return Row(
        rows[0].system,
        round(statistics.median(r.throughput_per_s for r in rows), 1),
        round(statistics.median(r.p50_us for r in rows), 1),
        round(statistics.median(r.p99_us for r in rows), 1),
    )


def main(
    count: int = typer.Option(50_000, help="tasks per throughput run"),
    window: int = typer.Option(200, help="tasks outstanding in throughput runs"),
    pings: int = typer.Option(2_000, help="one-at-a-time round trips for latency"),
    credit: int = typer.Option(100, help="worker credit"),
    warmup: int = typer.Option(5_000, help="tasks run before each throughput run, not counted"),
    rounds: int = typer.Option(3, help="times the whole table is measured (medians reported)"),
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="zmqflow-bench-"))
    console.print(
        f"[bold]bench-core[/]: {count} tasks (after {warmup} warm-up), window {window}, "
        f"{pings} pings, 100-byte echo, {rounds} rounds, {os.cpu_count()} cores"
    )
    setups: list[tuple[str, str, list[Callable[[str, int], list[str]]]]] = [
        ("zmqflow, 1 python worker", "journal", [python_worker]),
        ("zmqflow, 2 python workers", "journal", [python_worker, python_worker]),
        ("zmqflow, 1 python worker, no journal", ":memory:", [python_worker]),
    ]
    if RUST_BIN.exists():
        setups.append(("zmqflow, 1 rust worker", "journal", [rust_worker]))
        setups.append(("zmqflow, 2 rust workers", "journal", [rust_worker, rust_worker]))
    else:
        console.print(
            f"[yellow]no Rust worker at {RUST_BIN}: build it with "
            "`cargo build --release` in services/worker-rust[/]"
        )
    measured: list[list[Row]] = [[] for _ in range(len(setups) + 1)]  # per system, per round
    try:
        for round_no in range(1, rounds + 1):
            console.print(f"[bold]round {round_no}/{rounds}[/]")
            endpoint = f"tcp://127.0.0.1:{free_port()}"
            with processes([sys.executable, "-c", ECHO_SERVER, endpoint]):
                time.sleep(0.5)
                measured[0].append(
                    measure(
                        "raw pyzmq DEALER-ROUTER echo",
                        lambda n, w, endpoint=endpoint: raw_echo(n, w, endpoint),
                        count,
                        window,
                        pings,
                        warmup,
                    )
                )
            for n, (name, journal, workers) in enumerate(setups):
                path = journal if journal == ":memory:" else str(tmp / f"journal-{round_no}-{n}.db")
                cmd, front, back = forwarder_cmd(path)
                with processes(cmd, *(w(back, credit) for w in workers)):
                    wait_workers(front, len(workers))
                    measured[n + 1].append(
                        measure(
                            name,
                            lambda c, w, front=front: zmqflow_echo(c, w, front),
                            count,
                            window,
                            pings,
                            warmup,
                        )
                    )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [median_row(per_round) for per_round in measured]
    base = rows[0].throughput_per_s
    for row in rows:
        row.ratio = round(row.throughput_per_s / base, 3)
    table = Table(
        "system",
        "round trips/s",
        "vs raw",
        "p50 us (1 at a time)",
        "p99 us",
        title=f"bench-core: 100-byte echo round trips (median of {rounds} rounds)",
    )
    for row in rows:
        table.add_row(
            row.system,
            f"{row.throughput_per_s:,.0f}",
            f"{row.ratio:.2f}",
            f"{row.p50_us:,.0f}",
            f"{row.p99_us:,.0f}",
        )
    console.print(table)
    OUT.mkdir(exist_ok=True)
    (OUT / "core.json").write_text(
        json.dumps(
            {
                "medians": [asdict(r) for r in rows],
                "rounds": [[asdict(r) for r in per_round] for per_round in measured],
            },
            indent=2,
        )
        + "\n"
    )
    plot(rows, OUT / "core.png")
    console.print(f"wrote {OUT / 'core.json'} and {OUT / 'core.png'}")
    print(
        json.dumps(
            {
                "baseline_per_s": base,
                "rows": [asdict(r) for r in rows],
                "median_ratio": statistics.median(r.ratio for r in rows[1:]),
            }
        )
    )


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [r.system for r in rows]
    left.barh(names, [r.throughput_per_s for r in rows], color="#4477aa")
    left.set_xlabel("round trips per second (pipelined)")
    left.invert_yaxis()
    right.barh(names, [r.p50_us for r in rows], color="#66ccee", label="p50")
    right.barh(
        names,
        [r.p99_us - r.p50_us for r in rows],
        left=[r.p50_us for r in rows],
        color="#ccbb44",
        label="p99",
    )
    right.set_xlabel("round trip, one at a time (us)")
    right.invert_yaxis()
    right.set_yticklabels([])
    right.legend()
    fig.suptitle("zmqflow bench-core, 100-byte echo, same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    typer.run(main)
