"""make bench: zmqflow against raw ZeroMQ, Celery, NATS and JetStream, one run.

Contract: every system answers the same trivial echo task, at payloads of
100 B and 64 KiB, with 1 and 4 worker processes, measured by
``bench_measure.measure`` (a warm-up of a tenth of the tasks, not counted;
``tasks`` with the same client window of 200; then lone tasks one at a time
for p50/p99). The whole table is measured ``--rounds`` times, one
configuration after the other, and each figure is the median of its rounds;
ratios are to the raw pyzmq floor of the same payload and worker count in
the same run. Servers (redis-server, rabbitmq-server, nats-server -js) are
installed with apt-get when missing, started by the benchmark on loopback
ports with temp folders, and killed at the end. Writes bench-results/
bench.json (every round), docs/benchmarks.png and docs/benchmarks.md's
"Against other systems" section (unless --no-docs); its last printed line
is one JSON object with the headline ratios (see ``headline``).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import bench_servers
import typer
from bench_celery import celery_echo, celery_workers
from bench_measure import Figures, Run, measure, median_figures
from bench_nats import nats_echo, nats_workers
from bench_report import (
    COMPARE,
    GOALS,
    Row,
    console_table,
    find,
    markdown_section,
    plot,
    write_section,
)
from bench_zmq import (
    echo_servers,
    fabric,
    proxied_echo_servers,
    raw_echo,
    rust_worker_binary,
    zmqflow_echo,
)
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

ROOT = Path(__file__).resolve().parent.parent
console = Console(width=max(Console().width, 150))  # the table has 10 columns
SMALL, LARGE = 100, 64 * 1024
# The configuration every headline ratio is about (the goals).
HEAD_TPUT = ("zmqflow/python/tcp/journal", SMALL, 4)
HEAD_LONE = ("zmqflow/python/tcp/journal", SMALL, 1)


@dataclass(frozen=True)
class Cell:
    key: str  # family/variant, what --only matches by prefix
    system: str
    promise: str  # a key of bench_report.PROMISES
    workers: int
    payload: int
    tasks: int
    pings: int


@dataclass(frozen=True)
class Sizes:
    tasks: int  # 100 B, fast systems
    tasks_large: int  # 64 KiB, fast systems
    celery_tasks: int  # Celery, both payloads: two orders of magnitude slower
    pings: int
    celery_pings: int
    window: int


def plan(payloads: list[int], workers: list[int], sizes: Sizes, rust: bool) -> list[Cell]:
    """Every configuration, grouped by (payload, workers) so each sits near its floor."""
    cells: list[Cell] = []
    for payload in payloads:
        fast = sizes.tasks if payload <= 1024 else sizes.tasks_large
        for n in workers:
            add = partial(Cell, workers=n, payload=payload, tasks=fast, pings=sizes.pings)
            cells.append(add("floor", "raw pyzmq DEALER-ROUTER echo (floor)", "floor"))
            if payload == SMALL:  # what any broker in its own process costs, at the least
                cells.append(add("proxy", "raw pyzmq through libzmq's C proxy", "floor"))
            cells.append(
                add(
                    "zmqflow/python/tcp/journal",
                    "zmqflow, Python workers, tcp, journal",
                    "zmqflow-journal",
                )
            )
            if rust:
                cells.append(
                    add(
                        "zmqflow/rust/tcp/journal",
                        "zmqflow, Rust workers, tcp, journal",
                        "zmqflow-journal",
                    )
                )
            if payload == SMALL:  # the transport's share, at the headline size
                cells.append(
                    add(
                        "zmqflow/python/ipc/journal",
                        "zmqflow, Python workers, ipc, journal",
                        "zmqflow-journal",
                    )
                )
            cells.append(  # the journal's share: it grows with the payload (answers are kept)
                add(
                    "zmqflow/python/tcp/memory",
                    "zmqflow, Python workers, tcp, no journal",
                    "zmqflow-memory",
                )
            )
            cells.append(add("nats/core", "NATS core request-reply", "nats"))
            cells.append(
                add("nats/jetstream", "NATS JetStream work queue, explicit acks", "jetstream")
            )
            slow = partial(add, tasks=sizes.celery_tasks, pings=sizes.celery_pings)
            cells.append(slow("celery/redis", "Celery on Redis, results on", "celery-redis"))
            cells.append(
                slow("celery/rabbitmq", "Celery on RabbitMQ, rpc results", "celery-rabbitmq")
            )
    return cells


class Servers:
    """Brokers started on first use and stopped together at the end."""

    def __init__(self, stack: ExitStack, logs: Path) -> None:
        self.stack, self.logs = stack, logs
        self.urls: dict[str, str] = {}
        self.broken: dict[str, Exception] = {}  # a server that failed is not started again

    def url(self, name: str) -> str:
        if name in self.broken:
            raise RuntimeError(f"{name} did not start: {self.broken[name]}")
        if name not in self.urls:
            start: Callable[[Path], AbstractContextManager[str]] = getattr(bench_servers, name)
            try:
                self.urls[name] = self.stack.enter_context(start(self.logs))
            except Exception as exc:
                self.broken[name] = exc
                raise
        return self.urls[name]


@contextmanager
def started(cell: Cell, servers: Servers, logs: Path) -> Iterator[Run]:
    family, _, variant = cell.key.partition("/")
    n, size = cell.workers, cell.payload
    if family in ("floor", "proxy"):
        servers_ = echo_servers if family == "floor" else proxied_echo_servers
        with servers_(n, logs) as endpoints:
            yield partial(raw_echo, endpoints=endpoints, payload_bytes=size)
    elif family == "zmqflow":
        language, transport, journal = variant.split("/")
        with fabric(n, language, transport, journal == "journal", logs) as front:
            yield partial(zmqflow_echo, endpoint=front, payload_bytes=size)
    elif family == "nats":
        url = servers.url("nats")
        with nats_workers(n, variant, url, logs):
            yield partial(nats_echo, url=url, mode=variant, payload_bytes=size)
    elif family == "celery":
        broker = servers.url(variant)
        backend = broker if variant == "redis" else "rpc://"
        with celery_workers(n, broker, backend, logs) as app:
            yield partial(celery_echo, app=app, payload_bytes=size)
    else:
        raise ValueError(f"unknown system {cell.key}")


def divide(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def headline(rows: list[Row]) -> dict[str, float | None]:
    """The issue's ratios: throughput at (Python, 100 B, 4 workers, tcp, journal), lone p50."""
    ours = find(rows, *HEAD_TPUT)
    lone = find(rows, *HEAD_LONE)

    def tput(key: str, payload: int = SMALL, workers: int = 4) -> float | None:
        theirs = find(rows, key, payload, workers)
        return divide(ours.throughput_per_s if ours else None, theirs and theirs.throughput_per_s)

    def p50(key: str) -> float | None:
        theirs = find(rows, key, SMALL, 1)
        return divide(lone.p50_us if lone else None, theirs and theirs.p50_us)

    return {
        "zmqflow_vs_floor": tput("floor"),
        "zmqflow_vs_nats": tput("nats/core"),
        "zmqflow_vs_jetstream": tput("nats/jetstream"),
        "zmqflow_vs_celery": tput("celery/redis"),
        "zmqflow_vs_celery_rabbitmq": tput("celery/rabbitmq"),
        "latency_p50_vs_floor": p50("floor"),
        "latency_p50_vs_nats": p50("nats/core"),
        "latency_p50_vs_jetstream": p50("nats/jetstream"),
    }


def goals_met(head: dict[str, float | None]) -> dict[str, bool | None]:
    return {
        key: None if head.get(key) is None else COMPARE[op](head[key], bound)
        for key, (op, bound) in GOALS.items()
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(
    rounds: int = typer.Option(3, help="times the whole table is measured (medians reported)"),
    tasks: int = typer.Option(20_000, help="tasks per throughput run, 100 B, fast systems"),
    tasks_large: int = typer.Option(2_000, help="tasks per throughput run, 64 KiB, fast systems"),
    celery_tasks: int = typer.Option(500, help="tasks per throughput run for Celery"),
    pings: int = typer.Option(500, help="lone tasks, one at a time, for p50/p99"),
    celery_pings: int = typer.Option(100, help="lone tasks for Celery"),
    window: int = typer.Option(200, help="tasks outstanding in throughput runs, every system"),
    payload: Annotated[list[int] | None, typer.Option(help="payload bytes [100, 65536]")] = None,
    workers: Annotated[list[int] | None, typer.Option(help="worker processes [1, 4]")] = None,
    only: Annotated[list[str] | None, typer.Option(help="keys starting with these")] = None,
    quick: bool = typer.Option(False, help="a smoke run: 1 round, tiny counts (about 2 min)"),
    docs: Annotated[
        bool | None,
        typer.Option("--docs/--no-docs", help="write the docs section and PNG [not with --quick]"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="folder for bench.json")] = None,
    report_from: Annotated[
        Path | None, typer.Option(help="measure nothing: render this bench.json again")
    ] = None,
) -> None:
    payload, workers = payload or [SMALL, LARGE], workers or [1, 4]
    out = out or ROOT / "bench-results"
    docs = not quick if docs is None else docs  # a smoke run's figures are not for quoting
    if report_from:
        republish(report_from, out, docs)
        return
    if quick:
        rounds, tasks, tasks_large, celery_tasks = 1, 2_000, 200, 40
        pings, celery_pings = 100, 20
    sizes = Sizes(tasks, tasks_large, celery_tasks, pings, celery_pings, window)
    began, load_before = time.monotonic(), load()
    wants_rust = not only or any(
        o.startswith("zmqflow/rust") or "zmqflow/rust".startswith(o) for o in only
    )
    # cargo only when Rust rows are asked for
    rust = wants_rust and rust_worker_binary() is not None
    if wants_rust and not rust:
        console.print("[yellow]no Rust worker and no cargo to build it: Rust rows left out[/]")
    cells = [
        c
        for c in plan(payload, workers, sizes, rust)
        if not only or any(c.key.startswith(o) for o in only)
    ]
    if any(c.key.startswith(("nats", "celery")) for c in cells):
        bench_servers.ensure_packages(lambda text: console.print(f"[yellow]{text}[/]"))
    console.print(
        f"[bold]make bench[/]: {len(cells)} configurations x {rounds} rounds, window {window}, "
        f"{os.cpu_count()} cores, load average {load_before}"
    )
    measured: dict[Cell, list[Figures]] = {c: [] for c in cells}
    failed: dict[Cell, str] = {}  # skipped in later rounds, listed in the report
    with (
        tempfile.TemporaryDirectory(prefix="zmqflow-bench-") as tmp,
        ExitStack() as stack,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
    ):
        logs = Path(tmp)
        servers = Servers(stack, logs)
        bar = progress.add_task("starting", total=len(cells) * rounds)
        for round_no in range(1, rounds + 1):
            for cell in cells:
                label = f"round {round_no}/{rounds}: {cell.system}, {cell.workers}w"
                label += f", {cell.payload:>5} B"
                progress.update(bar, description=label)
                progress.advance(bar)
                if cell in failed:
                    continue
                try:
                    with started(cell, servers, logs) as run:
                        figures = measure(run, cell.tasks, window, cell.pings, cell.tasks // 10)
                except Exception as exc:  # one broken system must not cost the whole table
                    failed[cell] = f"{type(exc).__name__}: {exc}"
                    progress.console.print(f"  [red]{label}: failed, {failed[cell]}[/]")
                    continue
                measured[cell].append(figures)
                progress.console.print(
                    f"  {label}: {figures.throughput_per_s:>9,.0f}/s, "
                    f"p50 {figures.p50_us:>8,.0f} us"
                )

    rows = [
        Row(
            c.key, c.system, c.promise, c.workers, c.payload, c.tasks, window,
            **vars(median_figures(measured[c])), rounds=measured[c],
        )
        for c in cells
        if c not in failed
    ]  # fmt: skip
    for row in rows:
        floor = find(rows, "floor", row.payload_bytes, row.workers)
        if floor:
            row.throughput_vs_floor = divide(row.throughput_per_s, floor.throughput_per_s)
            row.p50_vs_floor = divide(row.p50_us, floor.p50_us)
            row.p99_vs_floor = divide(row.p99_us, floor.p99_us)
    head = headline(rows)
    meta: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": round(time.monotonic() - began, 1),
        "load_average_before": load_before,
        "load_average_after": load(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "rounds": rounds,
        "window": window,
        "quick": quick,
        "sizes": vars(sizes),
        "servers": bench_servers.versions() if any(r.key[:1] in "nc" for r in rows) else {},
    }
    result = {
        **meta,
        "title": (
            f"make bench: echo round trips, median of {rounds} round{'s' * (rounds > 1)}, "
            f"{meta['date']}, load average {load_before[0]} to {meta['load_average_after'][0]}"
        ),
        "headline": head,
        "goals_met": goals_met(head),
        "failed": {f"{c.key}, {c.workers} workers, {c.payload} B": e for c, e in failed.items()},
    }
    publish(rows, result, out, docs)
    if failed:
        raise typer.Exit(1)


def publish(rows: list[Row], result: dict[str, Any], out: Path, docs: bool) -> None:
    """The table, bench.json, and (with docs) the PNG and docs/benchmarks.md; JSON last."""
    console.print(console_table(rows, result["title"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(
        json.dumps({**result, "rows": [r.as_json() for r in rows]}, indent=2) + "\n"
    )
    console.print(f"wrote {out / 'bench.json'}")
    if docs:
        png = ROOT / "docs" / "benchmarks.png"
        plot(rows, png, result["title"])
        write_section(ROOT / "docs" / "benchmarks.md", markdown_section(rows, result))
        console.print(f"wrote {png} and docs/benchmarks.md")
    summary = {**result["headline"], "goals_met": result["goals_met"]}
    print(
        json.dumps({**summary, "failed": len(result["failed"]), "elapsed_s": result["elapsed_s"]})
    )


def republish(source: Path, out: Path, docs: bool) -> None:
    """Render an earlier run's bench.json again (after a change to the report's text)."""
    saved = json.loads(source.read_text())
    rows = [Row.from_json(r) for r in saved.pop("rows")]
    publish(rows, saved, out, docs)


if __name__ == "__main__":
    typer.run(main)
