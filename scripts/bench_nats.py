"""NATS in `make bench`: core request-reply and a JetStream work queue.

Contract: ``nats_workers(n, mode, url, logs)`` starts n worker processes
(this file run as a program) and yields once each has subscribed:
- ``core``: a queue-group subscription on ``echo`` that answers each
  request with ``msg.respond`` (NATS's at-most-once request-reply);
- ``jetstream``: a pull consumer ``workers`` of the work-queue stream
  ``WORK`` (file storage, explicit acks, ``ack_wait`` 30 s), fetching up to
  PREFETCH messages at a time; each is answered on the subject its ``reply``
  header names, then acknowledged (ack after the work, like acks_late).
For jetstream the stream and consumer are created fresh before the workers
start. ``nats_echo`` is the Run: ``window`` concurrent lanes, each a
request (core) or a JetStream publish, whose PubAck is the broker's promise,
then the answer (jetstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats
from bench_measure import processes, wait_until
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

PREFETCH = 100  # messages a worker fetches at once; zmqflow's credit (bench_zmq.CREDIT)
STREAM, SUBJECT, CONSUMER = "WORK", "work.echo", "workers"
CORE_SUBJECT = "echo"


# -------------------------------------------------------------------- workers
async def _core_worker(url: str, ready: Path) -> None:
    nc = await nats.connect(url)

    async def answer(msg: nats.aio.msg.Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(CORE_SUBJECT, queue="echo-workers", cb=answer)
    await nc.flush()
    ready.touch()
    await asyncio.Event().wait()


async def _jetstream_worker(url: str, ready: Path) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(SUBJECT, durable=CONSUMER, stream=STREAM)
    ready.touch()
    while True:
        try:
            msgs = await sub.fetch(PREFETCH, timeout=1)
        except nats.errors.TimeoutError:
            continue
        for msg in msgs:
            headers = msg.headers or {}
            await nc.publish(headers["reply"], msg.data, headers={"id": headers["id"]})
            await msg.ack()


async def _setup_stream(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream(STREAM)
    await js.add_stream(
        StreamConfig(
            name=STREAM,
            subjects=[SUBJECT],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
    )
    await js.add_consumer(
        STREAM,
        ConsumerConfig(
            durable_name=CONSUMER,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30,
            max_ack_pending=10_000,
        ),
    )
    await nc.close()


@contextmanager
def nats_workers(count: int, mode: str, url: str, logs: Path) -> Iterator[str]:
    if mode == "jetstream":
        asyncio.run(_setup_stream(url))
    flags = [logs / f"nats-ready-{time.monotonic_ns()}-{n}" for n in range(count)]
    commands = [[sys.executable, __file__, mode, url, str(flag)] for flag in flags]
    with processes(*commands, logs=logs, name=f"nats-{mode}"):
        wait_until(lambda: all(f.exists() for f in flags), 60, f"nats {mode} workers")
        yield url


# --------------------------------------------------------------------- client
async def _run(
    count: int, window: int, url: str, mode: str, payload_bytes: int
) -> tuple[float, list[float]]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    payload = b"x" * payload_bytes
    inbox = nc.new_inbox()
    waiting: dict[str, asyncio.Future[bytes]] = {}

    async def answered(msg: nats.aio.msg.Msg) -> None:
        future = waiting.pop((msg.headers or {}).get("id", ""), None)
        if future is not None and not future.done():
            future.set_result(msg.data)

    if mode == "jetstream":
        await nc.subscribe(inbox, cb=answered)
        await nc.flush()
    rtts: list[float] = []
    todo = iter(range(count))

    async def lane() -> None:
        for n in todo:
            began = time.perf_counter()
            if mode == "core":
                reply = (await nc.request(CORE_SUBJECT, payload, timeout=120)).data
            else:
                future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
                waiting[str(n)] = future
                await js.publish(SUBJECT, payload, headers={"id": str(n), "reply": inbox})
                reply = await asyncio.wait_for(future, 120)
            rtts.append(time.perf_counter() - began)
            if len(reply) != payload_bytes:
                raise RuntimeError(f"nats: echo of {len(reply)} bytes, sent {payload_bytes}")

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(min(window, count))))
    elapsed = time.perf_counter() - start
    await nc.close()
    return count / elapsed, rtts


def nats_echo(
    count: int, window: int, url: str, mode: str, payload_bytes: int = 100
) -> tuple[float, list[float]]:
    return asyncio.run(_run(count, window, url, mode, payload_bytes))


if __name__ == "__main__":
    worker = _core_worker if sys.argv[1] == "core" else _jetstream_worker
    asyncio.run(worker(sys.argv[2], Path(sys.argv[3])))
