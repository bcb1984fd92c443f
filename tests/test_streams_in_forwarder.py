"""The streams device inside the forwarder: `zmqflow forwarder --streams EP`.

The forwarder runs the same device as ``python -m zmqflow.streams device``
(tests/test_streams_processes.py) on a thread of its own process, with its
store beside the journal; these tests show it is there and keeps its promise
across a forwarder SIGKILL.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from fabric import Fabric, free_port, wait_for

from zmqflow.streams.client import DeviceUnavailable, Publisher, list_streams


def _listing(endpoint: str) -> dict[str, Any] | None:
    try:
        return list_streams(endpoint, timeout=0.5)
    except DeviceUnavailable:
        return None


def _subscribe(fab: Fabric, endpoint: str, *args: str) -> list[dict[str, Any]]:
    cmd = [sys.executable, "-m", "zmqflow", "streams", "subscribe", "--connect", endpoint]
    out = subprocess.run(
        [*cmd, *args], capture_output=True, env=fab.env, timeout=60, check=True
    ).stdout
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def test_a_forwarder_with_streams_stores_an_event_it_confirmed_across_its_sigkill(
    tmp_path: Path,
) -> None:
    fab = Fabric(tmp_path)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    store = str(tmp_path / "streams.db")
    try:
        fab.start_forwarder("--streams", endpoint, "--streams-store", store)
        wait_for(lambda: _listing(endpoint), "the forwarder's streams device to answer LIST")
        # a durable subscriber that registered once and left
        first = _subscribe(fab, endpoint, "--durable", "triggerer", "--timeout", "0.5")
        assert first[-1]["received"] == 0
        with Publisher(endpoint, timeout=10.0) as pub:
            stored = pub.publish("dev.data.ready", {"file": "a.csv"}, id="evt-1")
        assert (stored.seq, stored.duplicate) == (1, False)

        assert fab.forwarder is not None
        fab.forwarder.send_signal(signal.SIGKILL)  # before the event was delivered
        fab.forwarder.wait(10)
        fab.start_forwarder("--streams", endpoint, "--streams-store", store)
        wait_for(lambda: _listing(endpoint), "the restarted forwarder's streams device")

        rows = _subscribe(
            fab, endpoint, "--durable", "triggerer", "--count", "1", "--timeout", "10"
        )
        assert [(r["id"], r["data"]) for r in rows if "seq" in r] == [("evt-1", {"file": "a.csv"})]
        assert fab.status()["workers"] == []  # the forwarder's own side answers as before
    finally:
        fab.stop()
