"""The zmqflow block's CurveZMQ keys reach the client's socket.

Needs Prefect (the zmqflow/prefect image, or a venv with
orchestrators/prefect/requirements.txt); skipped without it. A real CURVE
server on loopback (pyzmq's ThreadAuthenticator, one allowed client key)
answers STATUS, which is what ``connect()`` waits for.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

pytest.importorskip("prefect")

from prefect_zmqflow.credentials import ZmqflowCredentials
from prefect_zmqflow.errors import ForwarderUnreachableError, ZmqflowError

from zmqflow import protocol as p
from zmqflow.security.keys import generate


def z85(keys: Path, name: str) -> tuple[str, str]:
    public, secret = zmq.auth.load_certificate(keys / f"{name}.key_secret")
    return public.decode(), secret.decode()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate(tmp_path / "keys", "forwarder", "prefect", "stranger")
    (tmp_path / "allowed").mkdir()
    (tmp_path / "allowed" / "prefect.key").write_bytes(
        (tmp_path / "keys" / "prefect.key").read_bytes()
    )
    return tmp_path / "keys"


@pytest.fixture
def forwarder(keys: Path) -> Iterator[str]:
    """A CURVE ROUTER that answers STATUS, letting in only the `prefect` key."""
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


def block(forwarder: str, keys: Path, name: str, **fields: object) -> ZmqflowCredentials:
    public, secret = z85(keys, name)
    values: dict[str, object] = {
        "frontend": forwarder,
        "curve_server_public_key": z85(keys, "forwarder")[0],
        "curve_public_key": public,
        "curve_secret_key": secret,
        "connect_attempts": 2,
        "probe_timeout_s": 2.0,
    }
    values.update(fields)
    return ZmqflowCredentials(**values)


def test_a_block_with_an_allowed_key_connects_with_it(forwarder: str, keys: Path) -> None:
    credentials = block(forwarder, keys, "prefect")

    with credentials.connect() as client:
        assert client.status(timeout=5) == {"workers": []}
        assert client.curve is not None
        assert client.curve.public_text == z85(keys, "prefect")[0]


def test_a_block_whose_key_is_refused_says_which_key(forwarder: str, keys: Path) -> None:
    credentials = block(forwarder, keys, "stranger")

    with pytest.raises(ForwarderUnreachableError, match="refused this block's key") as error:
        credentials.connect()

    assert z85(keys, "stranger")[0] in str(error.value)


def test_a_block_with_half_a_key_pair_is_an_error_naming_the_fields(keys: Path) -> None:
    credentials = block("tcp://127.0.0.1:1", keys, "prefect", curve_server_public_key=None)

    with pytest.raises(ZmqflowError, match="CURVE needs curve_server_public_key"):
        credentials.connect()


def test_a_block_key_that_is_not_z85_is_an_error_naming_the_field(keys: Path) -> None:
    credentials = block("tcp://127.0.0.1:1", keys, "prefect", curve_secret_key="~" * 40)

    with pytest.raises(ZmqflowError, match="curve_secret_key: not a Z85 key"):
        credentials.curve_keys()


def test_a_block_without_keys_has_none(keys: Path) -> None:
    credentials = ZmqflowCredentials(frontend="tcp://127.0.0.1:1")

    assert credentials.curve_keys() is None
