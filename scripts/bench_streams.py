"""Durable events in one run: zmqflow streams vs NATS JetStream, plain PUB/SUB beside.

Contract: ``python scripts/bench_streams.py [--out DIR] [--rounds N] [--quick | --scale F]``
measures, for 100 B and 64 KiB events, in the same run on this machine:

- **zmqflow streams**: the streams device (``python -m zmqflow.streams
  device``, SQLite store fsynced per commit) with a confirmed publisher
  (``AsyncPublisher.publish_many``: returns once stored) and a durable
  subscriber (``AsyncSubscriber``, start ``new``, acknowledging each event
  after it is handled);
- **NATS JetStream**: nats-server -js with a file-storage stream, confirmed
  publishes (``js.publish`` awaits the PubAck, ``window`` at once) and a
  durable pull consumer with explicit acks (``fetch`` up to 100, ``ack``
  each): the same promises;
- the same with ``--streams-sync normal`` (no fsync per commit: survives
  the device's crash, not the machine's; what JetStream's file storage does
  by default, which syncs to disk every 2 minutes);
- **zmqflow plain PUB/SUB** (the forwarder's XSUB/XPUB bus): no store, no
  confirmation, no acks; shown for what durability costs.

One "event" is a publish that returns confirmed (streams, JetStream) and
its delivery to the subscriber, which acknowledges it. Throughput: ``count``
events with ``window`` outstanding (streams: one PUBLISH of ``window``
events at a time; JetStream: ``window`` concurrent publishes; PUB/SUB: sent
as fast as the socket takes them), until the subscriber has all. Latency:
``pings`` lone events, each published and received before the next, p50
and p99 of publish start to receipt. Each system's figures are the medians
of ``rounds`` rounds (bench_measure.measure: warm-up, throughput, pings).
It prints a table with the ratios zmqflow/JetStream, writes
``streams.json``, ``streams.md`` (the table as markdown) and
``streams.png`` (throughput and p50 per system and size) into ``--out``.
nats-server comes from Debian (``apt-get install nats-server``), as
scripts/bench_servers.py installs it for ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import zmq
import zmq.asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_measure import (
    Figures,
    free_port,
    measure,
    median_figures,
    port_open,
    processes,
    wait_until,
)

from zmqflow.events import EventEncoder
from zmqflow.streams.client import AsyncPublisher, AsyncSubscriber, list_streams

NATS_SERVER = "/usr/sbin/nats-server"
_RUNS = itertools.count(1)  # durable names, unique in the run: a known name resumes
SIZES = (100, 64 * 1024)


def _payload(size: int) -> bytes:
    return os.urandom(size)


# ------------------------------------------------------------- zmqflow streams
class StreamsRun:
    """Confirmed publish + durable consume through the streams device."""

    def __init__(self, endpoint: str, size: int) -> None:
        self.endpoint = endpoint
        self.size = size

    def __call__(self, count: int, window: int) -> tuple[float, list[float]]:
        return asyncio.run(self._run(count, window))

    async def _run(self, count: int, window: int) -> tuple[float, list[float]]:
        name = f"bench-{os.getpid()}-{next(_RUNS)}"
        blob = _payload(self.size)
        sub = AsyncSubscriber(self.endpoint, "events", name, start="new", window=1000)
        while sub.core.subscribed is None:  # subscribed before the first publish
            await sub.get(0.05)
        pub = AsyncPublisher(self.endpoint, timeout=120)
        sent: dict[str, float] = {}
        rtts: list[float] = []
        received = asyncio.Event()

        async def consume() -> None:
            while len(rtts) < count:
                event = await sub.get(60)
                if event is None:
                    raise RuntimeError(f"streams: {len(rtts)} of {count} events came")
                rtts.append(time.perf_counter() - sent[event.id])
                sub.ack(event)
                received.set()

        async def produce() -> None:
            for start in range(0, count, window):
                batch = [f"{name}-{k}" for k in range(start, min(count, start + window))]
                now = time.perf_counter()
                for event_id in batch:
                    sent[event_id] = now
                await pub.publish_many([("dev.bench", {"b": blob}, i) for i in batch])
                if window == 1:  # a lone event: received before the next
                    await received.wait()
                    received.clear()

        began = time.perf_counter()
        await asyncio.gather(consume(), produce())
        elapsed = time.perf_counter() - began
        await sub.close()
        pub.close()
        return count / elapsed, rtts


# ------------------------------------------------------------ NATS JetStream
class JetStreamRun:
    """Confirmed publishes (PubAck) + a durable pull consumer with explicit acks."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = size

    def __call__(self, count: int, window: int) -> tuple[float, list[float]]:
        return asyncio.run(self._run(count, window))

    async def _run(self, count: int, window: int) -> tuple[float, list[float]]:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        durable = f"bench{os.getpid()}x{next(_RUNS)}"
        nc = await nats.connect(self.url)
        js = nc.jetstream()
        await js.add_consumer(
            "EVENTS",
            ConsumerConfig(
                durable_name=durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.NEW,
                ack_wait=30,
                max_ack_pending=10_000,
            ),
        )
        sub = await js.pull_subscribe("events.bench", durable=durable, stream="EVENTS")
        blob = _payload(self.size)
        sent: dict[str, float] = {}
        rtts: list[float] = []
        received = asyncio.Event()

        async def consume() -> None:
            while len(rtts) < count:
                try:
                    msgs = await sub.fetch(100, timeout=1)
                except nats.errors.TimeoutError:
                    continue
                for msg in msgs:
                    rtts.append(time.perf_counter() - sent[(msg.headers or {})["id"]])
                    await msg.ack()
                received.set()

        todo = iter(range(count))

        async def lane() -> None:
            for k in todo:
                event_id = f"{durable}-{k}"
                sent[event_id] = time.perf_counter()
                await js.publish(
                    "events.bench", blob, headers={"id": event_id, "Nats-Msg-Id": event_id}
                )
                if window == 1:
                    await received.wait()
                    received.clear()

        began = time.perf_counter()
        await asyncio.gather(consume(), *(lane() for _ in range(min(window, count))))
        elapsed = time.perf_counter() - began
        with contextlib.suppress(Exception):  # nats-server 2.9 may fail to unlink under load
            await js.delete_consumer("EVENTS", durable)
        await nc.close()
        return count / elapsed, rtts


async def _jetstream_stream(url: str) -> None:
    import nats
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig

    nc = await nats.connect(url)
    js = nc.jetstream()
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream("EVENTS")
    await js.add_stream(
        StreamConfig(
            name="EVENTS",
            subjects=["events.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_bytes=1 << 30,
            duplicate_window=120,
        )
    )
    await nc.close()


# ---------------------------------------------------------- plain PUB/SUB bus
class PubSubRun:
    """The forwarder's live bus: PUB -> XSUB/XPUB -> SUB, nothing stored or confirmed."""

    def __init__(self, events_in: str, events_out: str, size: int) -> None:
        self.events_in, self.events_out = events_in, events_out
        self.size = size
        self.lost = 0  # events the bus dropped (high-water marks): it promises none

    def __call__(self, count: int, window: int) -> tuple[float, list[float]]:
        return asyncio.run(self._run(count, window))

    async def _run(self, count: int, window: int) -> tuple[float, list[float]]:
        ctx = zmq.asyncio.Context.instance()
        pub = ctx.socket(zmq.XPUB)  # hears the subscription: sends once someone listens
        pub.sndhwm = 0
        pub.connect(self.events_in)
        sub = ctx.socket(zmq.SUB)
        sub.rcvhwm = 0
        sub.subscribe(b"dev.bench")
        sub.connect(self.events_out)
        while (await asyncio.wait_for(pub.recv(), 30))[:1] != b"\x01":
            pass  # the forwarder passed our subscription up: events reach the SUB now
        encoder = EventEncoder("dev", "bench")
        blob = _payload(self.size)
        sent: list[float] = []
        rtts: list[float] = []
        received = asyncio.Event()

        done = asyncio.Event()

        async def consume() -> None:
            while len(rtts) < count:
                try:  # the bus drops at its high-water marks: stop when nothing more comes
                    frames = await asyncio.wait_for(
                        sub.recv_multipart(), 2 if done.is_set() else 60
                    )
                except TimeoutError:
                    self.lost += count - len(rtts)
                    return
                seq = int.from_bytes(frames[1][-8:], "big")
                rtts.append(time.perf_counter() - sent[seq])
                received.set()

        async def produce() -> None:
            for k in range(count):
                sent.append(time.perf_counter())
                frames = encoder.encode("bench", {"b": blob})
                await pub.send_multipart([frames[0], frames[1] + k.to_bytes(8, "big")])
                if window == 1:
                    await received.wait()
                    received.clear()
                elif k % window == window - 1:
                    await asyncio.sleep(0)
            done.set()

        began = time.perf_counter()
        await asyncio.gather(consume(), produce())
        elapsed = time.perf_counter() - began
        pub.close(0)
        sub.close(0)
        return len(rtts) / elapsed, rtts


# -------------------------------------------------------------------- report
def table(results: dict[str, dict[int, Figures]]) -> str:
    lines = [
        "| system | event | events/s | p50 | p99 | throughput vs JetStream | p50 vs JetStream |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for system, by_size in results.items():
        for size, f in by_size.items():
            js = results["NATS JetStream (file, explicit acks)"][size]
            lines.append(
                f"| {system} | {'100 B' if size == 100 else '64 KiB'} | {f.throughput_per_s:,.0f} "
                f"| {f.p50_us / 1000:.2f} ms | {f.p99_us / 1000:.2f} ms "
                f"| {f.throughput_per_s / js.throughput_per_s:.2f}x "
                f"| {f.p50_us / js.p50_us:.2f}x |"
            )
    return "\n".join(lines)


def plot(results: dict[str, dict[int, Figures]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(systems)
    for i, system in enumerate(systems):
        xs = [n + i * width for n in range(len(SIZES))]
        axes[0].bar(xs, [results[system][s].throughput_per_s for s in SIZES], width, label=system)
        axes[1].bar(xs, [results[system][s].p50_us / 1000 for s in SIZES], width, label=system)
    for ax, title in zip(
        axes, ("events/s (confirmed + consumed)", "p50 ms (lone event)"), strict=True
    ):
        ax.set_xticks([n + width * (len(systems) - 1) / 2 for n in range(len(SIZES))])
        ax.set_xticklabels(["100 B", "64 KiB"])
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle("Durable events on one 2-core machine, same run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "bench-streams")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the events (smoke run)")
    parser.add_argument("--scale", type=float, default=1.0, help="events counts times this")
    args = parser.parse_args()
    # a SIGTERM (timeout, Ctrl-C's cousin) unwinds: processes() then kills the servers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    args.out.mkdir(parents=True, exist_ok=True)
    if not Path(NATS_SERVER).exists():
        raise SystemExit("bench_streams: nats-server missing: apt-get install -y nats-server")
    scale = 0.1 if args.quick else args.scale
    plan = {
        100: (int(5000 * scale), 100, int(200 * scale)),
        64 * 1024: (int(1000 * scale), 50, int(100 * scale)),
    }
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    results: dict[str, dict[int, Figures]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-streams-") as scratch:
        tmp = Path(scratch)
        streams_ep = f"tcp://127.0.0.1:{free_port()}"
        normal_ep = f"tcp://127.0.0.1:{free_port()}"
        nats_port = free_port()
        fwd = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("fe", "be", "in", "out")}
        py = sys.executable
        commands = [
            [py, "-m", "zmqflow.streams", "device", "--streams", streams_ep,
             "--streams-store", str(tmp / "streams.db"), "--log-level", "WARNING"],
            [py, "-m", "zmqflow.streams", "device", "--streams", normal_ep,
             "--streams-store", str(tmp / "normal.db"), "--streams-sync", "normal",
             "--log-level", "WARNING"],
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", str(tmp / "nats")],
            [py, "-m", "zmqflow", "forwarder", "--frontend", fwd["fe"], "--backend", fwd["be"],
             "--events-in", fwd["in"], "--events-out", fwd["out"], "--journal", str(tmp / "j.db"),
             "--log-level", "WARNING"],
        ]  # fmt: skip
        with processes(*commands, logs=logs, name="bench-streams"):
            wait_until(lambda: _lists(streams_ep) and _lists(normal_ep), 30, "streams devices")
            wait_until(port_open(nats_port), 30, "nats-server")
            wait_until(port_open(int(fwd["out"].rsplit(":", 1)[1])), 30, "forwarder")
            nats_url = f"nats://127.0.0.1:{nats_port}"
            asyncio.run(_jetstream_stream(nats_url))
            systems: dict[str, Callable[[int], Callable[[int, int], tuple[float, list[float]]]]] = {
                "zmqflow streams (fsync, durable acks)": lambda s: StreamsRun(streams_ep, s),
                "zmqflow streams (sync normal, durable acks)": lambda s: StreamsRun(normal_ep, s),
                "NATS JetStream (file, explicit acks)": lambda s: JetStreamRun(nats_url, s),
                "zmqflow plain PUB/SUB (live, no store)": lambda s: PubSubRun(
                    fwd["in"], fwd["out"], s
                ),
            }
            for name in systems:
                results[name] = {}
            for size in SIZES:
                count, window, pings = plan[size]
                rounds: dict[str, list[Figures]] = {name: [] for name in systems}
                for r in range(args.rounds):
                    for name, make in systems.items():  # interleaved: load hits all alike
                        run = make(size)
                        figures = measure(run, count, window, pings, warmup=min(200, count))
                        rounds[name].append(figures)
                        lost = getattr(run, "lost", 0)
                        print(f"round {r + 1} {size} B {name}: {figures} lost {lost}", flush=True)
                for name in systems:
                    results[name][size] = median_figures(rounds[name])
    md = table(results)
    print(md)
    load = os.getloadavg()[0]
    (args.out / "streams.md").write_text(md + f"\n\n1-minute load average at the end: {load:.2f}\n")
    (args.out / "streams.json").write_text(
        json.dumps(
            {name: {str(s): asdict(f) for s, f in r.items()} for name, r in results.items()},
            indent=2,
        )
    )
    plot(results, args.out / "streams.png")
    print(f"wrote {args.out}/streams.md, streams.json, streams.png (load average {load:.2f})")


def _lists(endpoint: str) -> bool:
    try:
        list_streams(endpoint, timeout=0.5)
        return True
    except Exception:
        return False


if __name__ == "__main__":
    main()
