"""make bench-core: zmqflow round trips against raw pyzmq echo, in one run.

Every system answers 100-byte echo tasks; each is measured twice:
- throughput: N tasks with up to WINDOW outstanding (pipelined), after a
  warm-up of WARMUP tasks that is not counted;
- latency: M tasks one at a time (ping-pong), p50 and p99 round trip.
The "CURVE" rows run the same fabric with CurveZMQ and the forwarder's ZAP
roles on every socket (docs/security.md): what encryption costs, same run.
The "metrics" rows give the forwarder and the worker a --metrics-port
(docs/observability.md): what counting costs, same run (a scrape is not
part of it: Prometheus reads every 15 s).
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
import statistics
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import typer
from bench_measure import Figures, Run, measure, median_figures
from bench_zmq import (
    curve_keys,
    echo_servers,
    fabric,
    raw_echo,
    rust_worker_binary,
    zmqflow_echo,
)
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-results"
console = Console()


@dataclass
class Row:
    system: str
    throughput_per_s: float
    p50_us: float
    p99_us: float
    ratio: float = 0.0  # throughput / baseline throughput


# ---------------------------------------------------------------------- main
# name, workers, language, journal on, CURVE on every socket (what it costs: issue 13),
# metrics ports on the forwarder and the workers (what counting costs: issue 14)
SETUPS: list[tuple[str, int, str, bool, bool, bool]] = [
    ("zmqflow, 1 python worker", 1, "python", True, False, False),
    ("zmqflow, 2 python workers", 2, "python", True, False, False),
    ("zmqflow, 1 python worker, no journal", 1, "python", False, False, False),
    ("zmqflow, 1 rust worker", 1, "rust", True, False, False),
    ("zmqflow, 2 rust workers", 2, "rust", True, False, False),
    ("zmqflow, 1 python worker, CURVE", 1, "python", True, True, False),
    ("zmqflow, 1 rust worker, CURVE", 1, "rust", True, True, False),
    ("zmqflow, 1 python worker, metrics", 1, "python", True, False, True),
    ("zmqflow, 1 rust worker, metrics", 1, "rust", True, False, True),
]


def report(name: str, figures: Figures) -> Row:
    console.print(f"  {name}: {figures.throughput_per_s:,.0f}/s, p50 {figures.p50_us:,.0f} us")
    return Row(name, figures.throughput_per_s, figures.p50_us, figures.p99_us)


def median_row(rows: list[Row]) -> Row:
    figures = median_figures([Figures(r.throughput_per_s, r.p50_us, r.p99_us) for r in rows])
    return Row(rows[0].system, figures.throughput_per_s, figures.p50_us, figures.p99_us)


def main(
    count: int = typer.Option(50_000, help="tasks per throughput run"),
    window: int = typer.Option(200, help="tasks outstanding in throughput runs"),
    pings: int = typer.Option(2_000, help="one-at-a-time round trips for latency"),
    credit: int = typer.Option(100, help="worker credit"),
    warmup: int = typer.Option(5_000, help="tasks run before each throughput run, not counted"),
    rounds: int = typer.Option(3, help="times the whole table is measured (medians reported)"),
) -> None:
    logs = Path(tempfile.mkdtemp(prefix="zmqflow-bench-"))
    console.print(
        f"[bold]bench-core[/]: {count} tasks (after {warmup} warm-up), window {window}, "
        f"{pings} pings, 100-byte echo, {rounds} rounds, {os.cpu_count()} cores"
    )
    setups = SETUPS
    binary = rust_worker_binary()
    if binary is None:
        console.print("[yellow]no Rust worker and no cargo to build it: Rust rows left out[/]")
        setups = [s for s in SETUPS if s[2] != "rust"]
    elif (
        "--curve-secret"
        not in subprocess.run([binary, "--help"], capture_output=True).stdout.decode()
    ):
        console.print("[yellow]this Rust worker has no --curve-secret: its CURVE row left out[/]")
        setups = [s for s in setups if not (s[2] == "rust" and s[4])]
    measured: list[list[Row]] = [[] for _ in range(len(setups) + 1)]  # per system, per round
    keyring = curve_keys(logs / "keys")
    floor = "raw pyzmq DEALER-ROUTER echo"
    try:
        for round_no in range(1, rounds + 1):
            console.print(f"[bold]round {round_no}/{rounds}[/]")
            with echo_servers(1, logs) as endpoints:
                run: Run = partial(raw_echo, endpoints=endpoints)
                measured[0].append(report(floor, measure(run, count, window, pings, warmup)))
            for n, (name, workers, language, journal, curve, metrics) in enumerate(setups):
                keys = keyring if curve else None
                with fabric(
                    workers, language, "tcp", journal, logs, credit, keys, metrics
                ) as front:
                    run = partial(zmqflow_echo, endpoint=front, keys=keys)
                    measured[n + 1].append(report(name, measure(run, count, window, pings, warmup)))
    finally:
        shutil.rmtree(logs, ignore_errors=True)

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
