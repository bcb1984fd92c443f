"""The streams clients (sync and asyncio), the CLI's --from and the metrics,
against a real device serving in a thread of the test process on loopback."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
import zmq
from fabric import free_port, wait_for
from prometheus_client import CollectorRegistry, generate_latest

from zmqflow.streams.cli import parse_start
from zmqflow.streams.client import (
    AsyncPublisher,
    AsyncSubscriber,
    Publisher,
    StreamEvent,
    Subscriber,
    list_streams,
)
from zmqflow.streams.device import StreamDevice, standalone
from zmqflow.streams.metrics import StreamsCollector
from zmqflow.streams.settings import StreamDeviceSettings


class ThreadDevice:
    def __init__(self, tmp: Path) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.settings = StreamDeviceSettings(
            streams=[self.endpoint], streams_store=str(tmp / "streams.db"), streams_sync="normal"
        )
        self.ctx = zmq.Context()
        self.device: StreamDevice | None = None

    def start(self) -> StreamDevice:
        self.device = standalone(self.settings, self.ctx)
        self.device.start_thread()
        wait_for(lambda: list_streams(self.endpoint, timeout=0.5), "the device to answer")
        return self.device

    def stop(self) -> None:
        if self.device is not None:
            self.device.stop()
            self.device.join(10)
            self.device.security.stop()
            self.device = None


@pytest.fixture
def device(tmp_path: Path) -> Iterator[ThreadDevice]:
    dev = ThreadDevice(tmp_path)
    dev.start()
    try:
        yield dev
    finally:
        dev.stop()
        dev.ctx.term()


def test_the_sync_iterator_acks_each_event_once_its_body_returned_and_a_break_leaves_it(device):
    with Publisher(device.endpoint) as pub:
        pub.publish_many([("dev.x", {"n": n}) for n in range(3)])
    with Subscriber(device.endpoint, name="it", start="all") as sub:
        seen = []
        for event in sub:
            seen.append(event.seq)
            if event.seq == 2:
                break  # the body of 2 did not finish: 2 is not acknowledged
    with Subscriber(device.endpoint, name="it", start="all") as sub:
        again = [sub.get(5).seq, sub.get(5).seq]
    assert seen == [1, 2]
    assert again == [2, 3]


def test_publish_many_of_more_than_a_messages_worth_is_stored_whole_in_order(device):
    with Publisher(device.endpoint) as pub:
        stored = pub.publish_many([("dev.x", {"n": n}) for n in range(2500)])
    assert [c.seq for c in stored] == list(range(1, 2501))


def test_a_handler_that_raises_gets_its_event_again_after_the_ack_wait(device):
    calls: list[tuple[int, int]] = []

    def handler(event: StreamEvent) -> None:
        calls.append((event.seq, event.attempt))
        if event.attempt == 1:
            raise RuntimeError("first try fails")

    with Publisher(device.endpoint) as pub:
        pub.publish("dev.x", {})
    with Subscriber(device.endpoint, name="retry", start="all", ack_wait=0.2) as sub:
        assert sub.run(handler, count=1, idle_timeout=5) == 1
    assert calls == [(1, 1), (1, 2)]


def test_asyncio_publish_and_durable_subscribe_resume_where_they_left_off(device):
    async def scenario() -> tuple[list[int], list[int]]:
        async with AsyncPublisher(device.endpoint) as pub:
            stored = await pub.publish_many([("dev.a", {"n": n}, f"id-{n}") for n in range(5)])
            assert [c.seq for c in stored] == [1, 2, 3, 4, 5]
            assert (await pub.publish("dev.a", {"n": 0}, id="id-0")).duplicate
        first: list[int] = []

        async def handle(event: StreamEvent) -> None:
            first.append(event.seq)

        async with AsyncSubscriber(device.endpoint, name="aio", start="all") as sub:
            await sub.run(handle, count=3)
        rest: list[int] = []
        async with AsyncSubscriber(device.endpoint, name="aio", start="all") as sub:
            async for event in sub:
                rest.append(event.seq)
                if event.seq == 5:
                    await sub.close()  # the loop body ran: 5 acknowledged by the close below
                    break
        return first, rest

    first, rest = asyncio.run(scenario())
    assert (first, rest) == ([1, 2, 3], [4, 5])


def test_a_live_subscriber_carries_on_across_a_device_restart(device):
    with Subscriber(device.endpoint, name="live", start="all", heartbeat_interval=0.2) as sub:
        with Publisher(device.endpoint) as pub:
            pub.publish("dev.x", {"n": 1})
        assert sub.get(5).seq == 1
        device.stop()
        device.start()
        with Publisher(device.endpoint, timeout=10) as pub:
            pub.publish("dev.x", {"n": 2})
        event = sub.get(10)
        assert (event.seq, event.data) == (2, {"n": 2})
        assert sub.core.resubscribes >= 1


def test_the_metrics_show_streams_and_durable_subscribers(device):
    with Publisher(device.endpoint) as pub:
        pub.publish_many([("dev.x", {}) for _ in range(4)])
    with Subscriber(device.endpoint, name="m", start="all", window=1) as sub:
        sub.ack(sub.get(5))
        sub.get(5)
    registry = CollectorRegistry()
    registry.register(StreamsCollector(device.device.core))
    text = generate_latest(registry).decode()
    assert 'zmqflow_stream_events{stream="events"} 4.0' in text
    assert (
        'zmqflow_stream_subscriber_position{durable="True",stream="events",subscriber="m"} 1.0'
        in text
    )
    assert (
        'zmqflow_stream_subscriber_lag{durable="True",stream="events",subscriber="m"} 3.0' in text
    )
    assert "zmqflow_stream_published_events_total 4.0" in text


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("new", ("new", None, None)),
        ("all", ("all", None, None)),
        ("seq:42", ("seq", 42, None)),
        ("seq 42", ("seq", 42, None)),
        ("42", ("seq", 42, None)),
        ("time:1700000000", ("time", None, 1700000000.0)),
        ("time:2023-11-14T22:13:20+00:00", ("time", None, 1700000000.0)),
    ],
)
def test_from_takes_new_all_a_sequence_number_or_a_time(text, parsed):
    assert parse_start(text) == parsed


@pytest.mark.parametrize("text", ["seq:0", "seq", "time:yesterday", "soon"])
def test_a_bad_from_names_what_it_takes(text):
    with pytest.raises(typer.BadParameter, match="new, all, seq:N"):
        parse_start(text)


def test_the_device_serves_tcp_and_ipc_at_once(tmp_path):
    ipc_dir = Path("/tmp") / f"zfs-{free_port()}"  # ipc paths stay under 107 bytes
    ipc = f"ipc://{ipc_dir}/streams.sock"
    tcp = f"tcp://127.0.0.1:{free_port()}"
    settings = StreamDeviceSettings(streams=[tcp, ipc], streams_store=str(tmp_path / "s.db"))
    ctx = zmq.Context()
    device = standalone(settings, ctx)
    device.start_thread()
    try:
        with Publisher(ipc) as pub:
            assert pub.publish("dev.x", {"via": "ipc"}).seq == 1
        with Subscriber(tcp, name="both", start="all") as sub:
            assert sub.get(5).data == {"via": "ipc"}
        assert oct((ipc_dir / "streams.sock").stat().st_mode & 0o777) == "0o660"
    finally:
        device.stop()
        device.join(10)
        device.security.stop()
        ctx.term()
        shutil.rmtree(ipc_dir, ignore_errors=True)


def test_an_endpoint_in_use_or_a_store_that_cannot_open_names_its_setting(device, tmp_path):
    from zmqflow.settings import UnusableSetting

    taken = StreamDeviceSettings(streams=[device.endpoint], streams_store=str(tmp_path / "b.db"))
    with pytest.raises(UnusableSetting, match="cannot bind") as caught:
        standalone(taken, zmq.Context.instance())
    assert caught.value.setting == "streams"
    unopenable = StreamDeviceSettings(
        streams=[f"tcp://127.0.0.1:{free_port()}"], streams_store=str(tmp_path / "no" / "s.db")
    )
    with pytest.raises(UnusableSetting) as caught:
        standalone(unopenable, zmq.Context.instance())
    assert caught.value.setting == "streams_store"
