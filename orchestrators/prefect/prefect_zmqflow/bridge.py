"""The event bridge: one long-running process joining the bus and Prefect's events.

Contract: the bridge subscribes to the bus (``events_out``) for the
configured kinds and emits each event into Prefect (``emit_event``), where
deployment ``triggers:`` can run on it; it subscribes to Prefect's event
stream for flow-run and task-run state changes and publishes each on the
bus (``events_in``) as ``<env>.prefect.flow-run.<state>`` /
``<env>.prefect.task-run.<state>``. Its own topics are never sent back. Bad
events are logged and dropped; the process stays up. The health file is
touched every ``health_interval_s`` while both directions run; when one of
them ends, the process exits non-zero so that Compose restarts it. Both bus
sockets carry the CURVE keys the files ZMQFLOW_CURVE_SECRET and
ZMQFLOW_CURVE_SERVER name (``zmqflow.security.peer.resolve``), if set.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import signal
from pathlib import Path

import zmq
import zmq.asyncio
from prefect.events import emit_event
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from prefect_zmqflow.states import OWN_KIND_PREFIX, STATE_PREFIXES, prefect_event, state_event
from zmqflow import events as bus
from zmqflow.security.peer import resolve

log = logging.getLogger("prefect_zmqflow.bridge")


class BridgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZMQFLOW_PREFECT_BRIDGE_")

    env: str = Field(default="dev", validation_alias=AliasChoices("ZMQFLOW_ENV", "env"))
    events_out: str = "tcp://forwarder:5558"  # subscribe here (XPUB)
    events_in: str = "tcp://forwarder:5557"  # publish here (XSUB)
    # Bus kinds (prefixes after "<env>.") sent into Prefect. Not "task.": per-task
    # events exist only while somebody subscribes, and they would cost every task.
    kinds: list[str] = ["data.", "worker."]
    states: bool = True  # publish Prefect state changes on the bus
    health_file: Path = Path("/tmp/prefect-bridge.health")
    health_interval_s: float = 5.0


def _curve(sock: zmq.Socket) -> None:
    keys = resolve()  # ZMQFLOW_CURVE_SECRET/SERVER; checked at start by run()
    if keys is not None:
        keys.apply(sock)


async def bus_to_prefect(settings: BridgeSettings, ctx: zmq.asyncio.Context) -> None:
    sock = ctx.socket(zmq.SUB)
    sock.linger = 0
    _curve(sock)
    for kind in settings.kinds:
        if not kind.startswith(OWN_KIND_PREFIX):
            sock.subscribe(f"{settings.env}.{kind}".encode())
    sock.connect(settings.events_out)
    gaps = bus.GapTracker()
    log.info("bus -> Prefect: %s, kinds %s", settings.events_out, settings.kinds)
    try:
        while True:
            frames = await sock.recv_multipart()
            try:
                event = bus.decode(frames)
            except ValueError as exc:
                log.warning("bad bus event dropped: %s", exc)
                continue
            if gaps.see(event):
                log.warning(
                    "missed %d events from %s before seq %d", gaps.missed, event.source, event.seq
                )
            emitted = emit_event(**prefect_event(settings.env, event))
            log.info(
                "bus %s (seq %d) -> Prefect %s",
                event.topic,
                event.seq,
                emitted.id if emitted else "not emitted",
            )
    finally:
        sock.close()


async def prefect_to_bus(settings: BridgeSettings, ctx: zmq.asyncio.Context) -> None:
    sock = ctx.socket(zmq.PUB)
    sock.linger = 1000
    _curve(sock)
    sock.connect(settings.events_in)
    encoder = bus.EventEncoder(settings.env, bus.new_source("prefect-bridge"))
    # From now on: the subscriber backfills what matches the filter, and
    # states from before the bridge started are history, not news.
    flt = EventFilter(
        occurred=EventOccurredFilter(since=datetime.datetime.now(datetime.UTC)),
        event=EventNameFilter(prefix=list(STATE_PREFIXES)),
    )
    log.info("Prefect states -> bus: %s", settings.events_in)
    try:
        async with get_events_subscriber(filter=flt, reconnect_on_clean_close=True) as events:
            async for event in events:
                mapped = state_event(event)
                if mapped is None:
                    continue
                kind, data = mapped
                await sock.send_multipart(encoder.encode(kind, data))
                log.debug("Prefect %s -> bus %s", event.event, encoder.topic(kind))
    finally:
        sock.close()


async def keep_healthy(settings: BridgeSettings) -> None:
    while True:
        settings.health_file.touch()
        await asyncio.sleep(settings.health_interval_s)


async def run(settings: BridgeSettings) -> None:
    """Until SIGTERM/SIGINT; raises when one direction stops on its own."""
    resolve()  # a bad key file stops the bridge here, naming the file
    ctx = zmq.asyncio.Context()
    jobs = [bus_to_prefect(settings, ctx), keep_healthy(settings)]
    if settings.states:
        jobs.append(prefect_to_bus(settings, ctx))
    tasks = [asyncio.create_task(job) for job in jobs]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
        if stopping not in done:
            failed = next(iter(done))
            raise RuntimeError("a bridge direction stopped") from failed.exception()
    finally:
        for task in [*tasks, stopping]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ctx.destroy(linger=0)


def main() -> None:
    # Prefect configures logging on import (root at WARNING): our own handler.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    settings = BridgeSettings()
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
