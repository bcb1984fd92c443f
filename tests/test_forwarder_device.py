"""The forwarder device (src/zmqflow/forwarder/device.py) on real sockets.

A ``Forwarder`` runs its loop in a thread on loopback ports chosen by the
system; a DEALER plays the client. The broker's rules are tested without
sockets in test_broker.py; these tests cover what the device adds: its
settings reach the broker, and a journal it must not read stops it before
it binds anything.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

import zmqflow
from zmqflow import protocol as p
from zmqflow.forwarder import Forwarder
from zmqflow.journal import JournalVersionError
from zmqflow.settings import ForwarderSettings


def settings(tmp_path: Path, **overrides: object) -> ForwarderSettings:
    fields = {
        "frontend": ["tcp://127.0.0.1:*"],
        "backend": ["tcp://127.0.0.1:*"],
        "journal": str(tmp_path / "journal.db"),
        "env": "staging",
        "heartbeat_interval": 0.2,  # stop() takes effect within one interval
    }
    fields.update(overrides)
    return ForwarderSettings(**fields)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Forwarder]:
    device = Forwarder(settings(tmp_path), zmq.Context())
    thread = threading.Thread(target=device.run, daemon=True)
    thread.start()
    yield device
    device.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()


def ask(device: Forwarder, msg: p.Message) -> p.Message:
    """One request from a new DEALER to the frontend; the first reply."""
    sock = device.ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(device.frontend.getsockopt_string(zmq.LAST_ENDPOINT))
        sock.send_multipart(p.encode(msg))
        assert sock.poll(5000), "no reply within 5 s"
        return p.decode(sock.recv_multipart())
    finally:
        sock.close()


def test_a_running_forwarder_answers_status_with_its_identity_from_the_settings(
    running: Forwarder, tmp_path: Path
):
    reply = ask(running, p.StatusRequest())

    assert isinstance(reply, p.Status)
    identity = reply.info["forwarder"]
    assert identity["id"] == running.source
    assert (identity["env"], identity["journal"]) == ("staging", str(tmp_path / "journal.db"))
    assert identity["version"] == zmqflow.__version__
    assert 0 <= identity["uptime_s"] < 60


def test_its_heartbeat_and_status_name_the_same_forwarder(running: Forwarder):
    heartbeat = ask(running, p.Heartbeat())
    status = ask(running, p.StatusRequest())

    assert isinstance(heartbeat, p.Heartbeat)
    assert isinstance(status, p.Status)
    assert heartbeat.forwarder == status.info["forwarder"]["id"]


def test_a_journal_of_an_unknown_schema_version_stops_the_forwarder_before_it_binds(
    tmp_path: Path,
):
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=7")
    ctx = zmq.Context()
    port = ctx.socket(zmq.ROUTER)
    free = port.bind_to_random_port("tcp://127.0.0.1")
    port.close(linger=0)
    endpoint = f"tcp://127.0.0.1:{free}"

    with pytest.raises(JournalVersionError, match="schema version 7"):
        Forwarder(settings(tmp_path, frontend=[endpoint]), ctx)

    # nothing was bound: another forwarder takes the same endpoint at once
    fresh = Forwarder(settings(tmp_path, frontend=[endpoint], journal=":memory:"), ctx)
    fresh.close()
