"""The executor's pure rules: settings, queue routing, idempotency keys, the wire form."""

from __future__ import annotations

import json

import pytest
from zmqflow_provider.executors import routing, wire
from zmqflow_provider.executors.settings import ExecutorSettings, InvalidExecutorSettings


def settings_from(**options: str) -> ExecutorSettings:
    return ExecutorSettings.from_lookup(options.get)


def test_defaults_route_queues_to_airflow_services() -> None:
    settings = settings_from(frontend="ipc:///run/zmqflow/frontend.sock")
    assert routing.service_for(settings.service_format, "default") == "airflow.default"
    assert routing.service_for(settings.service_format, None) == "airflow.default"
    assert routing.service_for("team-a.{queue}", "gpu") == "team-a.gpu"


@pytest.mark.parametrize(
    ("fmt", "says"),
    [
        ("airflow.default", "must hold the field {queue} once"),
        ("airflow.{queue}.{queue}", "must hold the field {queue} once"),
        ("airflow.{name}", "must hold the field {queue} once"),
        ("airflow/{queue}", "not a valid service name"),
        ("airflow.{queue", "does not parse"),
    ],
)
def test_a_bad_service_format_stops_the_executor_naming_the_option(fmt: str, says: str) -> None:
    with pytest.raises(InvalidExecutorSettings) as err:
        settings_from(service_format=fmt)
    assert "zmqflow_executor.service_format" in str(err.value) and says in str(err.value)


def test_bad_numbers_and_endpoints_are_named() -> None:
    with pytest.raises(InvalidExecutorSettings, match=r"zmqflow_executor\.queue_timeout_s"):
        settings_from(queue_timeout_s="soon")
    with pytest.raises(InvalidExecutorSettings, match=r"zmqflow_executor\.frontend"):
        settings_from(frontend="forwarder:5555")


def test_a_queue_that_makes_no_service_name_is_unroutable_naming_it() -> None:
    with pytest.raises(routing.UnroutableQueue, match="queue 'my queue'"):
        routing.service_for("airflow.{queue}", "my queue")


def test_keys_differ_per_try_and_fit_the_protocol() -> None:
    one = routing.idempotency_key("dag", "run", "task", -1, 1)
    two = routing.idempotency_key("dag", "run", "task", -1, 2)
    assert one != two and one.endswith("try-1")
    assert routing.idempotency_key("dag", "run", "task", 3, 1) != one
    long = routing.idempotency_key("d" * 250, "r" * 250, "t" * 250, -1, 7)
    assert len(long.encode()) <= 256 and long.endswith("try-7")


def test_the_wire_form_has_no_token_and_is_checked() -> None:
    workload = {"type": "ExecuteTask", "token": "eyJ.secret.jwt", "ti": {"id": "abc"}}
    payload = wire.to_wire(workload)
    assert b"secret" not in payload and b"token" not in payload
    assert wire.from_wire(payload) == {"type": "ExecuteTask", "ti": {"id": "abc"}}
    with pytest.raises(wire.BadWorkload, match="carries a token"):
        wire.from_wire(json.dumps(workload).encode())
    with pytest.raises(wire.BadWorkload, match="not JSON"):
        wire.from_wire(b"\xff")
    with pytest.raises(wire.BadWorkload, match="not an ExecuteTask"):
        wire.from_wire(b'{"type": "ExecuteCallback"}')
