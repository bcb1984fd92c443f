"""Keys and probes for the security tests: a CURVE forwarder on loopback, raw peers.

Contract: ``Keys(folder)`` generates the forwarder's, a client's, a
worker's and a stranger's key pairs and the two allow-list folders (the
client's public key in ``allow_clients``, the worker's in ``allow_workers``).
``SecureFabric`` is ``Fabric`` whose forwarder runs with those keys and
whose clients (``client()``, ``status()``) hold the client key; its workers
are given their key with ``worker_keys(...)``. ``handshake(endpoint, kind,
secret_file, server_key)`` connects a raw socket and returns how the
handshake ended, from the connecting side's socket monitor: "succeeded",
"refused" (ZAP said no), "plain refused" (mechanism mismatch) or another
failure's name; ``raw_socket`` makes such a socket for the caller to use.
"""

from __future__ import annotations

import shutil
import struct
import time
from pathlib import Path
from typing import Any

import zmq
from fabric import Fabric

from zmqflow.client import Client
from zmqflow.security.keys import generate, load_public, load_secret


class Keys:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        generate(folder, "forwarder", "client", "worker", "stranger", "client2")
        self.allow_clients = folder / "allow-clients"
        self.allow_workers = folder / "allow-workers"
        self.allow_clients.mkdir()
        self.allow_workers.mkdir()
        shutil.copy(folder / "client.key", self.allow_clients)
        shutil.copy(folder / "worker.key", self.allow_workers)
        self.server = load_public(folder / "forwarder.key")

    def secret(self, name: str) -> Path:
        return self.folder / f"{name}.key_secret"

    def public(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def z85(self, name: str) -> str:
        return load_public(self.public(name)).decode()

    def forwarder_args(self) -> list[str]:
        return [
            "--curve-secret",
            str(self.secret("forwarder")),
            "--allow-clients",
            str(self.allow_clients),
            "--allow-workers",
            str(self.allow_workers),
        ]

    def peer_args(self, name: str) -> tuple[str, ...]:
        return (
            "--curve-secret",
            str(self.secret(name)),
            "--curve-server",
            str(self.public("forwarder")),
        )


class SecureFabric(Fabric):
    def __init__(self, tmp: Path, keys: Keys, client_key: str = "client") -> None:
        super().__init__(tmp)
        self.keys = keys
        self.client_key = client_key

    def start_secure_forwarder(self, *extra: str) -> Any:
        return self.start_forwarder(*self.keys.forwarder_args(), *extra)

    def client(self, endpoint: str | None = None, timeout: float = 60.0) -> Client:
        return Client(
            endpoint or self.frontend,
            timeout=timeout,
            heartbeat_interval=self.heartbeat_interval,
            curve_secret=self.keys.secret(self.client_key),
            curve_server=self.keys.public("forwarder"),
        )

    def start_keyed_worker(self, key: str, *services: str) -> Any:
        return self.start_worker(*services, extra=self.keys.peer_args(key))


def raw_socket(
    endpoint: str, kind: int, secret_file: Path | None, server_key: bytes | None
) -> zmq.Socket:
    """A socket of ``kind`` connected to ``endpoint``: CURVE with these keys, or plain."""
    sock = zmq.Context.instance().socket(kind)
    sock.linger = 0
    if secret_file is not None:
        sock.curve_publickey, sock.curve_secretkey = load_secret(secret_file)
        sock.curve_serverkey = server_key
    sock.connect(endpoint)
    return sock


_OUTCOMES = {
    zmq.EVENT_HANDSHAKE_SUCCEEDED: "succeeded",
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol error",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "failed",
}


def handshake(
    endpoint: str,
    secret_file: Path | None,
    server_key: bytes | None,
    kind: int = zmq.DEALER,
    timeout: float = 20.0,
) -> str:
    """How a new connection's handshake ends, as the connecting side's monitor sees it."""
    sock = zmq.Context.instance().socket(kind)
    sock.linger = 0
    monitor = sock.get_monitor_socket(sum(_OUTCOMES))
    try:
        if secret_file is not None:
            sock.curve_publickey, sock.curve_secretkey = load_secret(secret_file)
            sock.curve_serverkey = server_key
        sock.connect(endpoint)
        until = time.monotonic() + timeout
        while (left := until - time.monotonic()) > 0:
            if not monitor.poll(int(left * 1000)):
                break
            head, _ = monitor.recv_multipart()
            event, value = struct.unpack("=Hi", head)
            if event in _OUTCOMES:
                if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                    return "plain refused"
                return _OUTCOMES[event]
        return "no outcome"
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
