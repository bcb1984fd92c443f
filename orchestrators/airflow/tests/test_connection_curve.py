"""A `zmqflow` connection's CurveZMQ keys reach the client's socket.

The hook builds its clients from ``ZmqflowEndpoints.curve_keys()``; these
tests hold that part to its contract with a real CURVE server on loopback
(pyzmq's ThreadAuthenticator allowing one client key), no Airflow needed.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmqflow_provider.connection import InvalidConnection, ZmqflowEndpoints

from zmqflow import protocol as p
from zmqflow.client import Client, ForwarderRefused
from zmqflow.security.keys import generate


def z85(keys: Path, name: str) -> tuple[str, str]:
    public, secret = zmq.auth.load_certificate(keys / f"{name}.key_secret")
    return public.decode(), secret.decode()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate(tmp_path / "keys", "forwarder", "airflow", "stranger")
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "airflow.key").write_bytes(
        (tmp_path / "keys" / "airflow.key").read_bytes()
    )
    return tmp_path / "keys"


@pytest.fixture
def forwarder(keys: Path) -> Iterator[str]:
    """A CURVE ROUTER that answers STATUS, letting in only the `airflow` key."""
    ctx = zmq.Context()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="clients", location=str(keys.parent / "allowed"))
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.curve_server = True
    sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(
        keys / "forwarder.key_secret"
    )
    sock.zap_domain = b"clients"
    sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
    endpoint = f"tcp://127.0.0.1:{sock.bind_to_random_port('tcp://127.0.0.1')}"
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            if sock.poll(50):
                rid, *frames = sock.recv_multipart()
                if isinstance(p.decode(frames), p.StatusRequest):
                    sock.send_multipart([rid, *p.encode(p.Status({"workers": []}))])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield endpoint
    stop.set()
    thread.join(5)
    sock.close(0)
    auth.stop()
    ctx.term()


def connection(forwarder: str, keys: Path, name: str, prefix: str = "") -> ZmqflowEndpoints:
    public, secret = z85(keys, name)
    extra = {
        "frontend": forwarder,
        "curve_server_public_key": z85(keys, "forwarder")[0],
        "curve_public_key": public,
        "curve_secret_key": secret,
    }
    return ZmqflowEndpoints.from_extra("zmqflow_default", {prefix + k: v for k, v in extra.items()})


@pytest.mark.parametrize("prefix", ["", "extra__zmqflow__"])
def test_the_keys_of_a_connection_get_a_client_into_a_curve_forwarder(
    forwarder: str, keys: Path, prefix: str
) -> None:
    endpoints = connection(forwarder, keys, "airflow", prefix)

    with Client(endpoints.frontend, curve=endpoints.curve_keys(), timeout=10) as client:
        assert client.status(timeout=10) == {"workers": []}


def test_a_connection_with_a_key_the_forwarder_does_not_allow_is_refused(
    forwarder: str, keys: Path
) -> None:
    endpoints = connection(forwarder, keys, "stranger")

    with (
        Client(endpoints.frontend, curve=endpoints.curve_keys(), timeout=10) as client,
        pytest.raises(ForwarderRefused, match=re.escape(z85(keys, "stranger")[0])),
    ):
        client.status(timeout=10)


def test_a_connection_without_keys_gives_none_and_its_clients_stay_plain(keys: Path) -> None:
    endpoints = ZmqflowEndpoints.from_extra("c", {"frontend": "tcp://127.0.0.1:1"})

    assert endpoints.curve_keys() is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"curve_server_public_key": None}, "CURVE needs curve_server_public_key"),
        ({"curve_secret_key": None}, "CURVE needs curve_server_public_key and curve_secret_key"),
        ({"curve_secret_key": "x" * 39}, "curve_secret_key: a CurveZMQ key in Z85 is 40"),
        ({"curve_server_public_key": "~" * 40}, "curve_server_public_key: not a Z85 key"),
        ({"curve_public_key": "stranger"}, "curve_public_key: does not belong to"),
    ],
)
def test_keys_that_cannot_work_fail_naming_the_connection_and_the_field(
    keys: Path, change: dict[str, str | None], message: str
) -> None:
    public, secret = z85(keys, "airflow")
    extra: dict[str, str | None] = {
        "curve_server_public_key": z85(keys, "forwarder")[0],
        "curve_public_key": public,
        "curve_secret_key": secret,
    }
    if change.get("curve_public_key") == "stranger":
        change = {"curve_public_key": z85(keys, "stranger")[0]}
    extra.update(change)

    with pytest.raises(InvalidConnection, match="connection 'zmqflow_default'") as error:
        ZmqflowEndpoints.from_extra("zmqflow_default", extra)

    assert message in str(error.value)
    assert secret not in str(error.value)  # a secret never reaches a log line
