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

import json
import random
import shutil
import struct
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq
from fabric import Fabric

from zmqflow import protocol as p
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


# ------------------------------------------------------------------ the rogue
_SIGNATURES = [p.CLIENT_SIGNATURE, p.WORKER_SIGNATURE, b"ZFC1", b"", b"ZFC2\x00", b"\xff" * 4]
_CLIENT_COMMANDS = [bytes((int(c),)) for c in p.Command if int(c) < 0x10]


def _junk_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(12 if depth < 3 else 8)
    if pick == 0:
        return None
    if pick == 1:
        return rng.random() < 0.5
    if pick == 2:
        return rng.choice([0, -1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, rng.randrange(-999, 999)])
    if pick == 3:
        return rng.choice([0.0, -1.5, float("inf"), float("nan"), 1e300])
    if pick == 4:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(0, 80)))
    if pick == 5:
        return rng.randbytes(rng.randrange(0, 200))
    if pick == 6:
        return rng.choice(["", "echo", "x" * 65, "a/b", "t-1", "\x00", "é"])
    if pick == 7:
        return rng.randrange(0, 1000)
    if pick in (8, 9):
        return [_junk_value(rng, depth + 1) for _ in range(rng.randrange(0, 8))]
    names = ["id", "service", "k", "", "retries", "ids", "x" * 70]
    return {rng.choice(names): _junk_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


def _bad_item(rng: random.Random) -> list[Any]:
    """A SUBMIT item that is always refused (its id is never valid), other fields random."""
    item: list[Any] = [
        rng.choice(["", "x" * 65, "bad id", "a/b", None, 7, b"bytes-id", ["t"], "é"]),
        rng.choice(["echo", "", "x" * 65, None, 3, "ok-service", b"svc"]),
        rng.choice([b"payload", "text", None, 5, rng.randbytes(rng.randrange(0, 300))]),
        rng.choice([None, "k", "", "x" * 300, 1, b"k"]),
        rng.choice([{}, {"a": 1}, None, [], {"x" * 70: "y"}, {1: 2}]),
        rng.choice([None, 0, 3, -1, 2**64 - 1, -(2**63), 1001, "3"]),
        rng.choice([True, False, None, 1, "yes"]),
    ]
    del item[rng.randrange(4, 8) :]  # sometimes short
    if rng.random() < 0.2:
        item.append(_junk_value(rng))
    return item


def rogue_message(rng: random.Random) -> list[bytes]:
    """One random, malformed client message (multipart): wrong framing, commands, bodies."""
    pick = rng.random()
    if pick < 0.15:  # frames of noise
        return [rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.randrange(1, 7))]
    if pick < 0.30:  # a real signature, any command byte, a noise body (or none, or several)
        frames = [p.CLIENT_SIGNATURE, bytes((rng.randrange(256),))]
        return frames + [rng.randbytes(rng.randrange(0, 100)) for _ in range(rng.randrange(0, 3))]
    if pick < 0.55:  # a client command whose body is msgpack of something random
        body = msgpack.packb(_junk_value(rng), use_bin_type=True)
        return [p.CLIENT_SIGNATURE, rng.choice(_CLIENT_COMMANDS), body]
    if pick < 0.85:  # SUBMIT with items that look nearly right
        items = [_bad_item(rng) for _ in range(rng.randrange(0, 6))]
        body = msgpack.packb(items, use_bin_type=True)
        if rng.random() < 0.1:
            body = body[: rng.randrange(0, max(1, len(body)))]  # cut short
        frames = [p.CLIENT_SIGNATURE, bytes((p.Command.SUBMIT,)), body]
        if rng.random() < 0.1:
            frames.append(b"trailing")
        return frames
    # wrong signatures and worker commands on the client side
    command = bytes((rng.choice(list(p.Command)),))
    return [rng.choice(_SIGNATURES), command, msgpack.packb(_junk_value(rng), use_bin_type=True)]


_WORKER_COMMANDS = [bytes((int(c),)) for c in p.Command if int(c) >= 0x10]


def rogue_worker_message(rng: random.Random) -> list[bytes]:
    """One random, malformed worker message: the client-side kinds, mostly worker-signed."""
    frames = rogue_message(rng)
    if rng.random() < 0.7:
        frames[0] = p.WORKER_SIGNATURE
        if len(frames) > 1 and rng.random() < 0.8:
            frames[1] = rng.choice(_WORKER_COMMANDS)
    return frames


def run_rogue(
    endpoint: str, secret_file: str, server_file: str, seed: int, count: int, worker: bool = False
) -> None:
    """Send ``count`` rogue messages from a DEALER holding a (valid) key; never read replies.

    ``worker``: worker-side messages (``rogue_worker_message``) for the backend.
    """
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.sndhwm = 1000
    sock.curve_publickey, sock.curve_secretkey = load_secret(secret_file)
    sock.curve_serverkey = load_public(server_file)
    sock.connect(endpoint)
    rng = random.Random(seed)
    make = rogue_worker_message if worker else rogue_message
    for _ in range(count):
        sock.send_multipart(make(rng))  # blocks at the high-water mark, as a peer would
    print(json.dumps({"sent": count}), flush=True)
    sock.close(linger=60_000)  # let the last ones reach the forwarder
