"""What the suite observes on the event bus (the forwarder's STATUS probes are in
integration_tests/harness.py).

Contract: ``EventWatcher`` subscribes to ``<env>.worker.`` (and
``forwarder.``) on the forwarder's events-out port (the forwarder publishes
only while someone subscribes) and keeps every event with its ``ts`` (the
forwarder's clock, Unix seconds: the same kernel clock as the host's
``time.time()``). A fault's detection time
is the ``worker.lost`` ts minus the moment the fault took effect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import zmq

from zmqflow import events
from zmqflow.events import Event

from ..harness import curve_socket


class EventWatcher:
    def __init__(self, events_out: str, events_in: str, env: str = "dev") -> None:
        self.endpoint = events_out
        self.events_in = events_in
        self.prefix = f"{env}."
        self.events: list[Event] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-events", daemon=True)

    def __enter__(self) -> EventWatcher:
        self._thread.start()
        # PUB/SUB slow joiner: make sure our subscription reached the forwarder.
        self.wait_subscribed()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        sock = curve_socket(zmq.SUB)  # the bus is CURVE too: the harness's client key
        sock.subscribe(f"{self.prefix}worker.".encode())
        sock.subscribe(f"{self.prefix}forwarder.".encode())
        sock.subscribe(f"{self.prefix}chaos.".encode())
        sock.connect(self.endpoint)
        try:
            while not self._stop.is_set():
                if not sock.poll(200):
                    continue
                try:
                    event = events.decode(sock.recv_multipart())
                except ValueError:
                    continue
                with self._cond:
                    self.events.append(event)
                    self._cond.notify_all()
        finally:
            sock.close()

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Publish probe events until one comes back: the subscription is live."""
        pub = curve_socket(zmq.PUB)
        pub.connect(self.events_in)
        encoder = events.EventEncoder(self.prefix.rstrip("."), events.new_source("chaos"))
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                pub.send_multipart(encoder.encode("chaos.probe", {}))
                if self.wait_for(lambda e: e.topic.endswith("chaos.probe"), 0.0, timeout=0.2):
                    return
        finally:
            pub.close()
        raise AssertionError(f"no events from {self.endpoint} within {timeout}s")

    def wait_for(
        self, match: Callable[[Event], bool], since: float, timeout: float
    ) -> Event | None:
        """The first event with ts >= ``since`` that matches, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events:
                    if event.ts >= since and match(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def lost(self, host: str, since: float, timeout: float) -> Event | None:
        return self.wait_for(_worker_event("worker.lost", host), since, timeout)

    def ready(self, host: str, since: float, timeout: float) -> Event | None:
        return self.wait_for(_worker_event("worker.ready", host), since, timeout)

    def left(self, host: str, since: float, timeout: float) -> Event | None:
        return self.wait_for(_worker_event("worker.left", host), since, timeout)


def _worker_event(kind: str, host: str) -> Callable[[Event], bool]:
    def match(event: Event) -> bool:
        return event.topic.endswith(kind) and host in str(event.data.get("worker", ""))

    return match
