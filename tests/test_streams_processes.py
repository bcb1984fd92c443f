"""The streams device and its clients as real processes on loopback.

The device is ``python -m zmqflow.streams device``; subscribers are the CLI
(``subscribe --durable``) or a small handler script; publishers use the
Python client (a publish returns once STORED). Every wait is a probe on
the device's LIST or on a process's output, never a sleep.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fabric import clean_env, free_port, wait_for

from zmqflow.security.keys import generate
from zmqflow.streams.client import DeviceUnavailable, Publisher, StreamRefused, list_streams


class StreamsFabric:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.store = tmp / "streams.db"
        self.device: subprocess.Popen[bytes] | None = None
        self._procs: list[subprocess.Popen[bytes]] = []
        self._n = 0

    def spawn(self, name: str, args: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        self._n += 1
        log = open(self.tmp / f"{self._n:02d}-{name}.log", "wb")  # noqa: SIM115 - owned by Popen
        proc = subprocess.Popen(
            args,
            stdout=kw.pop("stdout", log),
            stderr=log,
            env={**clean_env(), "PYTHONUNBUFFERED": "1"},
            **kw,
        )
        self._procs.append(proc)
        return proc

    def start_device(self, *extra: str) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "zmqflow.streams", "device"]
        args += ["--streams", self.endpoint, "--streams-store", str(self.store), *extra]
        self.device = self.spawn("device", args)
        wait_for(self.listing, "the streams device to answer LIST")
        return self.device

    def listing(self) -> dict[str, Any] | None:
        try:
            return list_streams(self.endpoint, timeout=0.5)
        except DeviceUnavailable:
            return None

    def subscriber(self, name: str) -> dict[str, Any] | None:
        info = self.listing() or {}
        return next((s for s in info.get("subscribers", []) if s["name"] == name), None)

    def subscribe_cli(self, *args: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "zmqflow.streams", "subscribe", "--connect", self.endpoint]
        return self.spawn("subscribe", [*cmd, *args], stdout=subprocess.PIPE)

    def publisher(self) -> Publisher:
        return Publisher(self.endpoint, timeout=10.0)

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.fixture
def streams(tmp_path: Path) -> Iterator[StreamsFabric]:
    fab = StreamsFabric(tmp_path)
    try:
        yield fab
    finally:
        fab.stop()


def lines(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> list[dict[str, Any]]:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out.decode()
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def register(streams: StreamsFabric, name: str, start: str = "new") -> None:
    """A durable subscriber that subscribed once and left."""
    rows = lines(streams.subscribe_cli("--durable", name, "--from", start, "--timeout", "0.5"))
    assert rows[-1]["received"] == 0
    assert streams.subscriber(name) is not None


def test_a_durable_subscriber_stopped_gets_exactly_the_100_events_published_meanwhile(streams):
    streams.start_device()
    register(streams, "analytics")
    with streams.publisher() as pub:
        for n in range(100):
            pub.publish("dev.data.ready", {"n": n})
    rows = lines(
        streams.subscribe_cli("--durable", "analytics", "--count", "100", "--timeout", "10")
    )
    events = [r for r in rows if "seq" in r]
    assert [e["data"]["n"] for e in events] == list(range(100))  # in order, none twice
    assert [e["seq"] for e in events] == list(range(1, 101))
    assert rows[-1] == {"received": 100, "missed": 0, "redelivered": 0}
    again = lines(streams.subscribe_cli("--durable", "analytics", "--timeout", "1"))
    assert again == [{"received": 0, "missed": 0, "redelivered": 0}]


def test_an_event_confirmed_before_the_device_is_killed_is_delivered_after_its_restart(streams):
    streams.start_device()
    register(streams, "triggerer")
    with streams.publisher() as pub:
        confirmation = pub.publish("dev.data.ready", {"file": "a.csv"}, id="evt-1")
    assert (confirmation.seq, confirmation.duplicate) == (1, False)
    streams.device.send_signal(signal.SIGKILL)  # before anything was delivered
    streams.device.wait(10)
    streams.start_device()
    rows = lines(streams.subscribe_cli("--durable", "triggerer", "--count", "1", "--timeout", "10"))
    assert [(r["id"], r["data"]) for r in rows if "seq" in r] == [("evt-1", {"file": "a.csv"})]
    with streams.publisher() as pub:  # the same id again: stored once
        assert pub.publish("dev.data.ready", {"file": "a.csv"}, id="evt-1").duplicate


HANDLER = textwrap.dedent(
    """
    import sys, time
    from zmqflow.streams.client import Subscriber

    endpoint, log, hang_at = sys.argv[1], sys.argv[2], int(sys.argv[3])

    def handle(event):
        with open(log, "a") as f:
            f.write(f"{event.seq} {event.attempt}\\n")
        if event.seq == hang_at:
            time.sleep(3600)  # killed here, mid-handler

    sub = Subscriber(endpoint, "events", "worker", start="all", ack_wait=30)
    sub.run(handle, idle_timeout=3)
    sub.close()
    """
)


def test_a_subscriber_killed_mid_handler_gets_that_event_again_and_not_the_acked_ones(
    streams, tmp_path
):
    streams.start_device()
    with streams.publisher() as pub:
        pub.publish_many([("dev.job", {"n": n}) for n in range(1, 11)])
    log = tmp_path / "handled.txt"
    script = tmp_path / "handler.py"
    script.write_text(HANDLER)
    first = streams.spawn("handler", [sys.executable, str(script), streams.endpoint, str(log), "5"])
    wait_for(lambda: log.exists() and "5 1" in log.read_text(), "the handler to start on 5")
    # acks of 1..4 went out before the handler took 5; wait until the device stored them
    wait_for(lambda: (streams.subscriber("worker") or {}).get("position") == 4, "position 4 stored")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    second = streams.spawn(
        "handler", [sys.executable, str(script), streams.endpoint, str(log), "0"]
    )
    wait_for(lambda: log.read_text().count("\n") >= 11, "events 5..10 handled again")
    second.wait(30)
    handled = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    assert handled[:5] == [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]
    seqs_after = [seq for seq, _ in handled[5:]]
    assert seqs_after == [5, 6, 7, 8, 9, 10]  # 5 again; 1..4 were acknowledged: not again
    assert handled[5][1] >= 2  # the device says it is a redelivery
    assert streams.subscriber("worker")["position"] == 10


def test_past_the_retention_limit_the_oldest_are_dropped_and_a_resuming_subscriber_is_told_how_many(
    streams,
):
    streams.start_device("--stream-max-events", "10")
    register(streams, "slow")
    with streams.publisher() as pub:
        pub.publish_many([("dev.tick", {"n": n}) for n in range(1, 31)])
    info = streams.listing()
    (events,) = info["streams"]
    assert (events["events"], events["first"], events["last"], events["dropped_events"]) == (
        10,
        21,
        30,
        20,
    )
    rows = lines(streams.subscribe_cli("--durable", "slow", "--timeout", "2"))
    assert rows[0] == {"missed": 20, "first": 1, "last": 20}
    assert [r["seq"] for r in rows if "seq" in r] == list(range(21, 31))
    assert rows[-1]["missed"] == 20


def test_bad_input_gets_a_clear_refusal_and_the_device_stays_up(streams):
    import zmq

    from zmqflow.streams import wire

    streams.start_device("--stream-max-event-bytes", "1024")
    with streams.publisher() as pub:
        with pytest.raises(StreamRefused, match="too_large"):
            pub.publish("dev.big", {"blob": b"x" * 2000})
        with pytest.raises(StreamRefused, match=r"unknown_stream: no stream holds topic 'prod\.x'"):
            pub.publish("prod.x", {})
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(streams.endpoint)
    for junk in ([b"GET / HTTP/1.1"], [wire.SIGNATURE, b"\x01", b"\xc1"], [b"ZFS1", b"\x99"]):
        sock.send_multipart(junk)
        assert sock.poll(5000), junk
        reply = wire.decode(sock.recv_multipart())
        assert isinstance(reply, wire.Refused) and reply.reason
    sock.close()
    with streams.publisher() as pub:
        assert pub.publish("dev.ok", {}).seq == 1
    assert streams.device.poll() is None


def test_a_publish_to_a_device_that_is_down_fails_with_a_clear_error(tmp_path):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with (
        Publisher(endpoint, timeout=1.0, attempt_s=0.3) as pub,
        pytest.raises(DeviceUnavailable, match="is it running"),
    ):
        pub.publish("dev.x", {})


def test_with_curve_an_allowed_key_publishes_and_a_stranger_is_refused_by_name(streams, tmp_path):
    keys = tmp_path / "keys"
    generate(keys, "device", "client", "stranger")
    allow = keys / "allow"
    allow.mkdir()
    (allow / "client.key").write_bytes((keys / "client.key").read_bytes())
    streams.endpoint = f"tcp://127.0.0.1:{free_port()}"
    args = [sys.executable, "-m", "zmqflow.streams", "device", "--streams", streams.endpoint]
    args += [
        "--streams-store",
        str(streams.store),
        "--curve-secret",
        str(keys / "device.key_secret"),
    ]
    streams.device = streams.spawn("device", [*args, "--allow-clients", str(allow)])
    with Publisher(
        streams.endpoint,
        curve_secret=keys / "client.key_secret",
        curve_server=keys / "device.key",
        timeout=20,
    ) as pub:
        assert pub.publish("dev.x", {}).seq == 1
    with (
        Publisher(
            streams.endpoint,
            curve_secret=keys / "stranger.key_secret",
            curve_server=keys / "device.key",
            timeout=10,
        ) as pub,
        pytest.raises(StreamRefused, match="allow-list does not hold this public key"),
    ):
        pub.publish("dev.x", {})
    with (
        Publisher(streams.endpoint, timeout=10) as pub,
        pytest.raises(StreamRefused, match="wants CURVE"),
    ):
        pub.publish("dev.x", {})
