"""Settings (src/zmqflow/settings.py): CLI values over ZMQFLOW_* variables over defaults."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from zmqflow.settings import ClientSettings, ForwarderSettings, WorkerSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ZMQFLOW_"):
            monkeypatch.delenv(name)


def test_defaults():
    s = ForwarderSettings()
    assert s.frontend == ["tcp://*:5555"]
    assert s.backend == ["tcp://*:5556"]
    assert (s.events_in, s.events_out) == ([], [])  # the event bus binds only where asked
    assert (s.max_retries, s.max_batch, s.heartbeat_interval, s.heartbeat_liveness) == (
        5,
        1000,
        1.0,
        3,
    )


def test_endpoint_lists_from_the_environment_are_comma_separated(monkeypatch):
    monkeypatch.setenv("ZMQFLOW_FRONTEND", "tcp://*:6000, ipc:///tmp/zmqflow/front.sock,")

    assert ForwarderSettings().frontend == ["tcp://*:6000", "ipc:///tmp/zmqflow/front.sock"]


def test_a_single_endpoint_in_the_environment_is_a_list_of_one(monkeypatch):
    monkeypatch.setenv("ZMQFLOW_BACKEND", "tcp://127.0.0.1:7000")
    assert ForwarderSettings().backend == ["tcp://127.0.0.1:7000"]


def test_explicit_values_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("ZMQFLOW_FRONTEND", "tcp://*:6000")
    monkeypatch.setenv("ZMQFLOW_MAX_RETRIES", "9")

    s = ForwarderSettings(frontend=["tcp://*:7000"])

    assert s.frontend == ["tcp://*:7000"]
    assert s.max_retries == 9


def test_worker_service_lists_from_the_environment(monkeypatch):
    monkeypatch.setenv("ZMQFLOW_SERVICE", "echo,sha256")
    assert WorkerSettings().service == ["echo", "sha256"]


@pytest.mark.parametrize("value", ["http://x:1", "*:5555", "tcp//x:1", ""])
def test_an_endpoint_without_a_zeromq_transport_is_rejected(monkeypatch, value):
    monkeypatch.setenv("ZMQFLOW_FRONTEND", f"tcp://*:5555,{value}" if value else "udp://x")
    with pytest.raises(ValidationError, match="must start with"):
        ForwarderSettings()


def test_bad_connect_endpoints_are_rejected_for_workers_and_clients():
    with pytest.raises(ValidationError):
        WorkerSettings(connect="localhost:5556")
    with pytest.raises(ValidationError):
        ClientSettings(connect="zmq://localhost:5555")


def test_an_ipc_path_longer_than_a_unix_socket_allows_is_rejected():
    with pytest.raises(ValidationError, match="longer than 107"):
        ForwarderSettings(backend=["ipc:///" + "x" * 107])


def test_an_ipc_path_of_107_bytes_is_accepted():
    endpoint = "ipc://" + "/" + "x" * 106
    assert ForwarderSettings(backend=[endpoint]).backend == [endpoint]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ZMQFLOW_HEARTBEAT_INTERVAL", "0"),
        ("ZMQFLOW_MAX_BATCH", "0"),
        ("ZMQFLOW_ENV", "has space"),
        ("ZMQFLOW_LOG_LEVEL", "LOUD"),
        ("ZMQFLOW_JOURNAL_SYNC", "maybe"),
        ("ZMQFLOW_JOURNAL_DEFER_MS", "-1"),
    ],
)
def test_out_of_range_values_are_rejected(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        ForwarderSettings()
