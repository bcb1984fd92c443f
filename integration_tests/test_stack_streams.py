"""Durable event streams on the stack: the forwarder container runs the streams
device (`--streams`, store on the journal volume) on host port 5559.

Issue 21's check, on real containers: an event confirmed just before a
forwarder SIGKILL is still delivered to a durable subscriber once the
forwarder is back; a subscriber that was away gets every event, once, in order.
"""

from __future__ import annotations

import json
from typing import Any

from zmqflow.streams.client import DeviceUnavailable, Publisher, StreamRefused, list_streams

from .harness import ComposeProject, wait_for


def _listing(stack: ComposeProject) -> dict[str, Any] | None:
    try:
        return list_streams(stack.streams, timeout=1.0)
    except (DeviceUnavailable, StreamRefused):
        # while the container restarts, Docker's port proxy accepts and hangs up:
        # a handshake that fails, not a refusal of our key
        return None


def _subscribe(stack: ComposeProject, *args: str) -> list[dict[str, Any]]:
    run = stack.cli("streams", "subscribe", "--connect", stack.streams, *args, timeout=120)
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines() if line.strip()]


def test_an_event_confirmed_before_a_forwarder_sigkill_reaches_its_durable_subscriber(
    stack: ComposeProject,
) -> None:
    wait_for(lambda: _listing(stack), 60, "the forwarder's streams device")
    assert _subscribe(stack, "--durable", "it-consumer", "--timeout", "1")[-1]["received"] == 0

    with Publisher(stack.streams, timeout=30.0) as pub:
        for n in range(20):  # published while the durable subscriber is away
            pub.publish(f"{stack.env_name}.data.ready", {"n": n}, id=f"it-{n}")
        last = pub.publish(f"{stack.env_name}.data.ready", {"n": 20}, id="it-last")
    assert not last.duplicate

    forwarder = stack.kill("forwarder")  # confirmed, never delivered
    forwarder.start()
    wait_for(lambda: _listing(stack), 90, "the restarted forwarder's streams device")

    rows = _subscribe(stack, "--durable", "it-consumer", "--count", "21", "--timeout", "30")
    events = [r for r in rows if "seq" in r]
    assert [e["data"]["n"] for e in events] == list(range(21))  # every one, in order, once
    assert rows[-1]["received"] == 21
    stack.wait_workers()  # the fabric is whole again for whatever runs next
