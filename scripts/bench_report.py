"""What `make bench` writes: the table, docs/benchmarks.md's section, the plot.

Contract: ``Row`` is one measured configuration with its medians over the
rounds, its ratios to the floor of the same payload and worker count in the
same run, and what its system promises (``PROMISES``: broker killed, dead
worker's task). ``console_table`` renders rows for the terminal;
``markdown_section`` renders the "Against other systems" section (table,
headline ratios, how to reproduce, what limits zmqflow, what is not
measured yet) and ``write_section`` puts it between the BEGIN/END markers
of docs/benchmarks.md, or after its introduction the first time, leaving
every other section alone. ``plot`` draws throughput and lone-task p50 per
configuration (log scales: the systems differ by orders of magnitude).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_measure import Figures
from rich.table import Table

BEGIN = "<!-- make bench: begin (written by scripts/bench.py) -->"
END = "<!-- make bench: end -->"

# What each system promises, as run here: the table's two short columns (broker
# killed, dead worker's task redelivered), then why, for the notes below it.
PROMISES: dict[str, tuple[str, str, str]] = {
    "floor": ("lost", "no", "no broker: nothing is kept, nothing is redelivered"),
    "zmqflow-journal": (
        "kept",
        "yes, in 3 s",
        "ACCEPTED only after the journal's fsynced commit; a worker's in-flight tasks "
        "are requeued once it misses 3 heartbeats (1 s each)",
    ),
    "zmqflow-memory": (
        "lost",
        "yes, in 3 s",
        "journal in memory: accepted tasks die with the forwarder (tasks not yet "
        "acknowledged are sent again by the client); dead workers as with the journal",
    ),
    "celery-redis": (
        "lost",
        "yes, in 1 h",
        "Redis run without snapshots or AOF (with appendfsync always it would keep "
        "them); acks_late: an unacknowledged task is redelivered after the Redis "
        "transport's visibility_timeout, 1 h by default",
    ),
    "celery-rabbitmq": (
        "kept",
        "yes, at once",
        "durable queue and persistent messages (without publisher confirms a message "
        "being sent can still be lost); acks_late: a dead worker's unacknowledged "
        "task is requeued when its channel closes",
    ),
    "nats": ("lost", "no", "core NATS keeps nothing; a requester whose worker died times out"),
    "jetstream": (
        "kept",
        "yes, in 30 s",
        "file-store stream, PubAck after the write (fsynced within sync_interval, 2 min "
        "by default: a machine crash can lose acknowledged messages); a message not "
        "acknowledged within ack_wait (30 s here) is redelivered",
    ),
}


@dataclass
class Row:
    key: str
    system: str
    promise: str
    workers: int
    payload_bytes: int
    tasks: int
    window: int
    throughput_per_s: float
    p50_us: float
    p99_us: float
    throughput_vs_floor: float | None = None
    p50_vs_floor: float | None = None
    p99_vs_floor: float | None = None
    rounds: list[Figures] = field(default_factory=list)

    @property
    def broker_killed(self) -> str:
        return PROMISES[self.promise][0]

    @property
    def dead_worker(self) -> str:
        return PROMISES[self.promise][1]

    @property
    def promise_why(self) -> str:
        return PROMISES[self.promise][2]

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "system": self.system,
            "workers": self.workers,
            "payload_bytes": self.payload_bytes,
            "tasks": self.tasks,
            "window": self.window,
            "throughput_per_s": self.throughput_per_s,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "throughput_vs_floor": self.throughput_vs_floor,
            "p50_vs_floor": self.p50_vs_floor,
            "p99_vs_floor": self.p99_vs_floor,
            "broker_killed": self.broker_killed,
            "dead_worker_task": self.dead_worker,
            "promise_key": self.promise,
            "promise": self.promise_why,
            "rounds": [vars(r) for r in self.rounds],
        }

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> Row:
        return cls(
            saved["key"], saved["system"], saved["promise_key"], saved["workers"],
            saved["payload_bytes"],
            saved["tasks"], saved["window"], saved["throughput_per_s"], saved["p50_us"],
            saved["p99_us"], saved["throughput_vs_floor"], saved["p50_vs_floor"],
            saved["p99_vs_floor"], [Figures(**r) for r in saved["rounds"]],
        )  # fmt: skip


def size(payload: int) -> str:
    return f"{payload // 1024} KiB" if payload >= 1024 else f"{payload} B"


def ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


def micros(us: float) -> str:
    return f"{us / 1000:,.1f} ms" if us >= 10_000 else f"{us:,.0f} µs"


def console_table(rows: list[Row], title: str) -> Table:
    table = Table(
        "system", "w", "payload", "tasks", "tasks/s", "xfloor", "p50", "xfloor", "p99", "xfloor",
        title=title,
    )  # fmt: skip
    for r in rows:
        table.add_row(
            r.system,
            str(r.workers),
            size(r.payload_bytes),
            f"{r.tasks:,}",
            f"{r.throughput_per_s:,.0f}",
            ratio(r.throughput_vs_floor),
            micros(r.p50_us),
            ratio(r.p50_vs_floor),
            micros(r.p99_us),
            ratio(r.p99_vs_floor),
        )
    return table


def markdown_table(rows: list[Row]) -> str:
    lines = [
        "| system | workers | payload | tasks | tasks/s | x floor | p50, lone task | x floor "
        "| p99 | x floor | broker killed | dead worker's task redelivered |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.system} | {r.workers} | {size(r.payload_bytes)} | {r.tasks:,} "
            f"| {r.throughput_per_s:,.0f} | {ratio(r.throughput_vs_floor)} "
            f"| {micros(r.p50_us)} | {ratio(r.p50_vs_floor)} "
            f"| {micros(r.p99_us)} | {ratio(r.p99_vs_floor)} "
            f"| {r.broker_killed} | {r.dead_worker} |"
        )
    return "\n".join(lines)


def write_section(doc: Path, section: str) -> None:
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{section.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:  # first time: right after the introduction, before the first section
        at = text.find("\n## ")
        text = (
            text.rstrip() + "\n\n" + block + "\n"
            if at < 0
            else text[: at + 1] + block + "\n\n" + text[at + 1 :]
        )
    doc.write_text(text)


def plot(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(dict.fromkeys(r.system for r in rows))
    configs = sorted({(r.payload_bytes, r.workers) for r in rows})
    colors = ["#4477aa", "#66ccee", "#228833", "#ccbb44", "#ee6677", "#aa3377"]
    height = 0.8 / max(1, len(configs))
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.55 * len(systems) + 2), sharey=True)
    for n, (payload, workers) in enumerate(configs):
        label = f"{size(payload)}, {workers} worker{'s' if workers > 1 else ''}"
        ys, tput, p50 = [], [], []
        for r in rows:
            if (r.payload_bytes, r.workers) == (payload, workers):
                ys.append(systems.index(r.system) + n * height - 0.4 + height / 2)
                tput.append(r.throughput_per_s)
                p50.append(r.p50_us)
        color = colors[n % len(colors)]
        left.barh(ys, tput, height=height, color=color, label=label)
        right.barh(ys, p50, height=height, color=color, label=label)
    left.set_xscale("log")
    left.set_xlabel("tasks per second, window of 200 (log)")
    right.set_xscale("log")
    right.set_xlabel("p50 round trip of a lone task, µs (log)")
    left.set_yticks(range(len(systems)), systems)
    left.invert_yaxis()
    left.legend(loc="lower right", fontsize=8)
    for ax in (left, right):
        ax.grid(axis="x", which="both", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# The goals: throughput ratios at least, latency ratios at most.
COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "<": operator.lt,
}
GOALS: dict[str, tuple[str, float]] = {
    "zmqflow_vs_floor": (">=", 0.5),
    "zmqflow_vs_nats": (">=", 2.0),
    "zmqflow_vs_jetstream": (">=", 4.0),
    "zmqflow_vs_celery": (">=", 50.0),
    "latency_p50_vs_floor": ("<=", 2.0),
    "latency_p50_vs_nats": ("<", 1.0),
}
LOADED = 2.5  # a 1-minute load average above this on 2 cores: other work shares the machine


def find(rows: list[Row], key: str, payload: int, workers: int) -> Row | None:
    """The row of one configuration, None when it was not measured."""
    return next(
        (r for r in rows if (r.key, r.payload_bytes, r.workers) == (key, payload, workers)), None
    )


def _versus(rows: list[Row], a: str, b: str, payload: int, workers: int, what: str) -> str | None:
    one, two = find(rows, a, payload, workers), find(rows, b, payload, workers)
    if not one or not two:
        return None
    return (
        f"{what}: {one.throughput_per_s:,.0f}/s against {two.throughput_per_s:,.0f}/s "
        f"({one.throughput_per_s / two.throughput_per_s:.2f}x), lone-task p50 "
        f"{micros(one.p50_us)} against {micros(two.p50_us)}"
    )


def promise_notes(rows: list[Row]) -> list[str]:
    systems: dict[str, list[str]] = {}
    for r in rows:
        names = systems.setdefault(r.promise, [])
        if r.system not in names:
            names.append(r.system)
    return [f"- {'; '.join(names)}: {PROMISES[key][2]}." for key, names in systems.items()]


def markdown_section(rows: list[Row], result: dict[str, Any]) -> str:
    head: dict[str, float | None] = result["headline"]
    met: dict[str, bool | None] = result["goals_met"]
    sizes = result["sizes"]
    before, after = result["load_average_before"], result["load_average_after"]
    if before[0] > LOADED:
        load_note = (
            f" **The machine was loaded** (1-minute load above {LOADED} on 2 cores when the "
            "run started: other work was running), so every figure is lower and noisier "
            "than on a quiet machine; the ratios, measured in the same run, are what to read."
        )
    elif after[0] > LOADED:
        load_note = (
            f" The run started on a quiet machine (1-minute load below {LOADED}); other work "
            f"started during it ({after[0]} at the end), so some configurations ran on a "
            "busier one."
        )
    else:
        load_note = ""
    servers = "; ".join(result["servers"].values()) or "none"
    out = [
        "## Against other systems: `make bench`",
        "",
        "`scripts/bench.py` runs, in one run and side by side, the same trivial echo "
        "task through raw pyzmq (the floor: one DEALER, ROUTER echo processes, no broker; "
        "and, at 100 B, the same through libzmq's C proxy: a broker that does nothing), "
        "zmqflow (forwarder with Python or Rust workers, tcp or ipc, journal on as shipped "
        "or in memory), Celery 5 on Redis and on RabbitMQ, NATS core request-reply and a "
        "NATS JetStream work-queue stream with explicit acks, at 100 B and 64 KiB, with 1 "
        "and 4 worker processes. Each configuration gets a warm-up of a tenth of its tasks "
        f"(not counted), then its tasks with the same client window ({result['window']}), "
        "then lone tasks one at a time for p50 and p99. The whole table is measured "
        f"{result['rounds']} time{'s' * (result['rounds'] > 1)}, one configuration after "
        "the other, and every figure is "
        "the median of its rounds; each ratio is to the floor of the same payload and "
        "worker count in the same run. The benchmark starts every server itself on "
        "loopback (free ports, temp folders) and kills it at the end.",
        "",
        f"Run of {result['date']}: {result['elapsed_s'] / 60:.1f} minutes, "
        f"{result['cores']} cores, load average (1, 5, 15 min) {', '.join(map(str, before))} "
        f"before and {', '.join(map(str, after))} after. Servers: {servers}; "
        f"Python {result['python']}."
        + load_note
        + (" **A `--quick` smoke run: counts too small to quote.**" if result["quick"] else ""),
        "",
        "Tasks per configuration: "
        f"{sizes['tasks']:,} at 100 B and {sizes['tasks_large']:,} at 64 KiB for the "
        f"floor, zmqflow and NATS, {sizes['celery_tasks']:,} for Celery (one to two orders "
        "of magnitude slower: the same count would not fit the 20 minutes); lone tasks: "
        f"{sizes['pings']:,} ({sizes['celery_pings']:,} for Celery).",
        "",
        "### The issue's goals, in this run",
        "",
        "| ratio | measured | goal | met |",
        "| --- | ---: | ---: | --- |",
    ]
    for key, (op, bound) in GOALS.items():
        value = head.get(key)
        verdict = {True: "yes", False: "**no**", None: "not measured"}[met.get(key)]
        out.append(f"| `{key}` | {ratio(value)} | {op} {bound:g} | {verdict} |")
    out += [
        "",
        "Throughput ratios: zmqflow with Python workers, 100 B, 4 workers, tcp, journal on, "
        "over the other system in the same configuration (`zmqflow_vs_celery`: Celery on "
        "Redis). Latency ratios: a lone task's p50 through zmqflow (Python worker, tcp, "
        "journal on, 1 worker) over the other's, also with 1 worker.",
        "",
        markdown_table(rows),
        "",
        "![make bench: throughput and lone-task p50 per system](benchmarks.png)",
        "",
        "Columns: *tasks/s* with the window full; *p50, p99*: round trip of a lone task, "
        "submit to answer, one at a time; *x floor*: over raw pyzmq with the same payload "
        "and workers (above 1 is faster for tasks/s, slower for latency); *broker killed*: "
        "what happens to tasks the broker has taken when its process is killed, as "
        "configured here; *dead worker's task*: whether a task a killed worker held runs "
        "again. Each system is set up as its own documentation advises for reliable short "
        "tasks: Celery with `task_acks_late`, `task_reject_on_worker_lost` and a prefetch "
        "multiplier of 100 (large, for many short tasks); JetStream with a work-queue "
        "stream on file storage, explicit acks after the work, pull consumers fetching up "
        "to 100; zmqflow workers with a credit of 100. Same window (200) everywhere.",
        "",
        "What the last two columns rest on, as run here:",
        "",
        *promise_notes(rows),
        "",
        "### How to reproduce",
        "",
        f"`make bench` ({result['elapsed_s'] / 60:.0f} minutes in the run above; apt-get "
        "installs redis-server, "
        "rabbitmq-server and nats-server when missing; the Rust worker is built with "
        "`cargo build --release --locked` when missing). `make bench ARGS=--quick` is a "
        "smoke run of one round with tiny counts (it leaves the docs alone unless given "
        "`--docs`). Options: `--rounds` (3), `--tasks` "
        "(20,000), `--tasks-large` (2,000), `--celery-tasks` (500), `--pings` (500), "
        "`--celery-pings` (100), `--window` (200), `--payload` and `--workers` (repeatable), "
        "`--only KEY` (repeatable; keys: `floor`, `zmqflow/python/tcp/journal`, "
        "`zmqflow/rust/...`, `proxy`, `nats/core`, `nats/jetstream`, `celery/redis`, "
        "`celery/rabbitmq`; a prefix selects all below it), `--no-docs`. Output: this "
        "section and docs/benchmarks.png, bench-results/bench.json (every round of every "
        "row), and a last line of JSON with the ratios above.",
        "",
        "### Not measured yet",
        "",
        *(
            f"- **{what}** failed in this run: {why}"
            for what, why in result.get("failed", {}).items()
        ),
        "- **zmqflow with CURVE on**: not yet, the security issue (CurveZMQ with an "
        "allow-list on every socket) has not landed; there is no CURVE row until it has.",
        "- **Airflow and Prefect fan-outs** (10,000 items through the fabric against the "
        "orchestrators' own mapping) need the Docker stack and have their own commands "
        "and sections in this document (`make bench-airflow`, `make bench-prefect`); "
        "`make bench` does not run them.",
        "",
        "### What limits zmqflow now",
        "",
    ]
    facts = [
        _versus(rows, "zmqflow/python/tcp/memory", "zmqflow/python/tcp/journal", 100, 1,
                "Journal off against on (1 Python worker, 100 B)"),
        _versus(rows, "zmqflow/python/tcp/memory", "zmqflow/python/tcp/journal", 65536, 1,
                "Journal off against on (1 Python worker, 64 KiB: the journal keeps every "
                "answer, so its cost grows with the payload)"),
        _versus(rows, "zmqflow/python/ipc/journal", "zmqflow/python/tcp/journal", 100, 1,
                "ipc against tcp (1 Python worker, 100 B)"),
        _versus(rows, "zmqflow/rust/tcp/journal", "zmqflow/python/tcp/journal", 100, 1,
                "Rust against Python worker (1 worker, 100 B)"),
    ]  # fmt: skip
    proxy, floor = find(rows, "proxy", 100, 1), find(rows, "floor", 100, 1)
    lone = find(rows, "zmqflow/python/tcp/journal", 100, 1)
    if proxy and floor and lone:
        shape = proxy.p50_us / floor.p50_us
        facts.append(
            f"A lone task through libzmq's C proxy, three processes and four hops with no "
            f"work on the way (what any broker in its own process costs): p50 "
            f"{micros(proxy.p50_us)}, {shape:.1f}x the floor's {micros(floor.p50_us)}; "
            f"zmqflow's {micros(lone.p50_us)} is {lone.p50_us / proxy.p50_us:.1f}x that"
            + (
                ". A lone-task goal of at most 2 times raw echo is below what a broker that "
                "does nothing reaches here, measured this way"
                if shape > 2
                else ""
            )
        )
    variants = [
        r for r in rows if r.key.startswith("zmqflow/") and (r.payload_bytes, r.workers) == (100, 1)
    ]
    if len(variants) >= 3:
        low, high = min(r.p50_us for r in variants), max(r.p50_us for r in variants)
        if high <= 1.15 * low:
            facts.append(
                f"Neither the journal, nor ipc against tcp, nor a Rust worker moves a lone "
                f"task's p50 by more than 15% ({micros(low)} to {micros(high)} over the "
                f"{len(variants)} zmqflow rows at 100 B, 1 worker): its time goes in the "
                "forwarder's and the client's turns, not in the journal, the wire or the "
                "handler"
            )
    four = find(rows, "zmqflow/python/tcp/journal", 100, 4)
    one = find(rows, "zmqflow/python/tcp/journal", 100, 1)
    if four and one:
        facts.append(
            f"4 Python workers against 1 (100 B): {four.throughput_per_s:,.0f}/s against "
            f"{one.throughput_per_s:,.0f}/s: on 2 cores, more workers compete with the "
            "forwarder and the client for the CPU; the echo handler takes no time, so there "
            "is nothing for them to do in parallel"
        )
    out += [f"- {f}." for f in facts if f]
    out += ["", LIMITS]
    return "\n".join(out) + "\n"


LIMITS = """\
The lone task is where zmqflow is furthest from the issue's goals. Its
round trip passes three processes and four socket hops (client, forwarder,
worker, forwarder, client) where the floor passes two processes and two
hops; the C-proxy row is that shape with no work on the way. The rest of
zmqflow's lone-task time is Python work per message at each hop (a wake-up
from poll, a msgpack decode and encode, the forwarder's bookkeeping of the
task: queues, in-flight table, deferred journal entry, one commit per loop
turn), none of which is shared with other tasks when only one is in
flight.

One task traced through the three processes (`strace -f` of a forwarder,
one Python worker and a client sending lone tasks over tcp, journal on,
2026-11-30; strace slows every call, so it gives counts, not times): per
task, 18 system calls in the client, 52 in the forwarder and 23 in the
worker. Every message crosses between a Python thread and libzmq's I/O
thread through an eventfd on both sides, and the worker hands each task to
its handler thread and the answer back through a pipe: 10 thread wake-ups
per lone task (client 2, forwarder 4, worker 4), each of which may also
wait for one of the 2 cores. In the forwarder, 24 of the 52 calls are
libzmq's zero-timeout mailbox polls over its four sockets (two loop turns)
and 4 are the journal's WAL writes of the commit the RESULT waits for (no
fsync: the task finished before it was due to be journaled). The next
steps on this path: fewer hand-overs in the worker (run a handler that
takes no time on the loop's thread), and fewer socket checks per forwarder
turn; see "Where the time goes now" below for the batched case.

With a full window the same chain bounds throughput: tasks travel in
batches of up to a worker's credit, one message per batch per hop, so the
per-task cost falls; the NATS and JetStream clients publish and
acknowledge message by message, which is where zmqflow gains on them,
while their servers are compiled Go, which is where they gain on zmqflow.
On 2 cores, four worker
processes compete with the forwarder and the client for the CPU while the
echo handler gives them nothing to do in parallel (compare each system's
1- and 4-worker rows). Celery sends every task as its own broker message
and every answer as its own result-backend write and notification, with
its client waiting on each AsyncResult: nothing is batched, which is why
it is one to two orders of magnitude behind the others."""
