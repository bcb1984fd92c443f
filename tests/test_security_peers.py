"""CURVE on the peer side: clients and workers that connect to a CURVE forwarder.

Specification (issue 13, the peers): a client or worker given its secret key
file and the forwarder's public key file (or the same keys as Z85 text) is a
CURVE client on every socket it opens; an allowed key gets its work done; an
unknown key, or a plain peer at a CURVE forwarder, gets nothing done and
says so clearly at WARNING, naming its public key and the endpoint; a peer
refused and then allowed gets in without being restarted (libzmq never
retries a refused handshake: the peer opens a new socket with backoff); bad
key files stop the program at start with exit 2 and the file's name.

``CurveGate`` is the forwarder of these tests: a scripted one on loopback
(clients' and workers' ROUTERs as CURVE servers behind pyzmq's
ThreadAuthenticator, one ZAP domain per role, speaking the protocol through
the reference codec), so that the peers are tested on their own. ``allow``
copies a public key into a role's folder and reloads it, as the real
forwarder does when its folder changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_client_frontends
import zmq
import zmq.auth
from fabric import Fabric, clean_env, wait_for
from security_fabric import Keys, SecureFabric
from zmq.auth.thread import ThreadAuthenticator

from zmqflow import protocol as p
from zmqflow.client import Client, CurveKeys, ForwarderRefused
from zmqflow.client.core import REOPEN
from zmqflow.security.keys import KeyFileError, generate
from zmqflow.security.peer import resolve

ROLES = ("clients", "workers")
connect = test_client_frontends.connect  # the fixture: one client per front end (parity)


class CurveGate:
    """A scripted CURVE forwarder: routes tasks to the one registered worker, or echoes."""

    def __init__(self, keys: Path, allow: Path) -> None:
        self.ctx = zmq.Context()
        self.allow_dir = allow
        for role in ROLES:
            (allow / role).mkdir(parents=True)
        self.auth = ThreadAuthenticator(self.ctx)
        self.auth.start()
        self.reload()
        public, secret = zmq.auth.load_certificate(keys / "forwarder.key_secret")
        self.public_file = keys / "forwarder.key"
        self.socks: dict[str, zmq.Socket] = {}
        self.endpoints: dict[str, str] = {}
        for role in ROLES:
            sock = self.ctx.socket(zmq.ROUTER)
            sock.linger = 0
            sock.curve_server = True
            sock.curve_publickey, sock.curve_secretkey = public, secret
            sock.zap_domain = role.encode()
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
            port = sock.bind_to_random_port("tcp://127.0.0.1")
            self.socks[role], self.endpoints[role] = sock, f"tcp://127.0.0.1:{port}"
        self.frontend, self.backend = self.endpoints["clients"], self.endpoints["workers"]
        self.workers: dict[bytes, str] = {}  # routing id -> worker id (READY)
        self.owner: dict[str, bytes] = {}  # task id -> client routing id
        self.queue: list[p.Dispatch] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def reload(self) -> None:
        for role in ROLES:
            self.auth.configure_curve(domain=role, location=str(self.allow_dir / role))

    def allow(self, public_file: Path, role: str) -> None:
        shutil.copy(public_file, self.allow_dir / role / public_file.name)
        self.reload()

    def _serve(self) -> None:
        poller = zmq.Poller()
        for sock in self.socks.values():
            poller.register(sock, zmq.POLLIN)
        while not self._stop.is_set():
            for sock, _ in poller.poll(50):
                rid, *frames = sock.recv_multipart()
                msg = p.decode(frames)
                if sock is self.socks["clients"]:
                    self._client(rid, msg)
                else:
                    self._worker(rid, msg)
            if self.queue and self.workers:
                self._send("workers", next(iter(self.workers)), p.Tasks(self.queue))
            for task in self.queue if not self.workers else []:  # no worker: the gate echoes
                answer = p.Result(task.id, "gate", 1, False, task.payload)
                self._send("clients", self.owner.pop(task.id), p.Results([answer]))
            self.queue = []

    def _send(self, role: str, rid: bytes, msg: Any) -> None:
        self.socks[role].send_multipart([rid, *p.encode(msg)])

    def _client(self, rid: bytes, msg: Any) -> None:
        match msg:
            case p.Heartbeat():
                self._send("clients", rid, p.Heartbeat("gate"))
            case p.StatusRequest():
                workers = [{"id": w} for w in self.workers.values()]
                self._send("clients", rid, p.Status({"workers": workers}))
            case p.Submit(tasks):
                self._send("clients", rid, p.Accepted([t.id for t in tasks]))
                for t in tasks:
                    self.owner[t.id] = rid
                    self.queue.append(p.Dispatch(t.id, t.service, t.headers, 1, t.payload))
            case _:
                pass

    def _worker(self, rid: bytes, msg: Any) -> None:
        match msg:
            case p.Ready(worker):
                self.workers[rid] = worker
                self._send("workers", rid, p.WorkerHeartbeat())
            case p.WorkerHeartbeat():
                self._send("workers", rid, p.WorkerHeartbeat())
            case p.WorkerResults(items):
                for done in items:
                    answer = p.Result(done.id, self.workers[rid], 1, False, done.payload)
                    self._send("clients", self.owner.pop(done.id), p.Results([answer]))
            case _:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self.socks.values():
            sock.close(0)
        self.auth.stop()
        self.ctx.term()


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    generate(folder, "forwarder", "alice", "mallory", "worker1")
    return folder


@pytest.fixture
def gate(keys: Path, tmp_path: Path) -> Iterator[CurveGate]:
    gate = CurveGate(keys, tmp_path / "allow")
    gate.allow(keys / "alice.key", "clients")
    try:
        yield gate
    finally:
        gate.close()


class Said(logging.Handler):
    """Records what a logger says; ``wait(text)`` blocks until a line holds it."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._logger = logging.getLogger(name)
        self._logger.addHandler(self)
        # whatever level an earlier test left the root at, warnings reach this handler
        self._level = self._logger.level
        self._logger.setLevel(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.lines.append(record.getMessage())
            self._changed.notify_all()

    def wait(self, text: str, timeout: float = 20.0) -> str:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((line for line in self.lines if text in line), None), timeout
            )
        assert found, f"no log line with {text!r} in {timeout}s: {self.lines}"
        return found

    def close(self) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)
        super().close()


@pytest.fixture
def said() -> Iterator[Said]:
    handler = Said("zmqflow.client")
    try:
        yield handler
    finally:
        handler.close()


def public_text(keys: Path, name: str) -> str:
    return zmq.auth.load_certificate(keys / f"{name}.key")[0].decode()


def _curve_client(connect: Any, gate: CurveGate, keys: Path, name: str, **options: Any) -> Any:
    return connect(
        gate.frontend,
        curve_secret=keys / f"{name}.key_secret",
        curve_server=gate.public_file,
        heartbeat_interval=0.5,
        **options,
    )


# ------------------------------------------------------------------ the keys


def test_keys_from_files_and_from_z85_text_are_the_same_keys(keys: Path) -> None:
    from_files = CurveKeys.from_files(keys / "alice.key_secret", keys / "forwarder.key")
    public, secret = zmq.auth.load_certificate(keys / "alice.key_secret")
    server = zmq.auth.load_certificate(keys / "forwarder.key")[0]

    from_text = CurveKeys.from_z85(secret=secret.decode(), server=server.decode())

    assert from_text == from_files
    assert (from_files.public, from_files.secret, from_files.server) == (public, secret, server)
    assert secret.decode() not in repr(from_files)  # a secret never reaches a log line


def test_z85_text_that_is_no_key_or_a_foreign_public_key_is_refused_naming_the_field(
    keys: Path,
) -> None:
    secret = zmq.auth.load_certificate(keys / "alice.key_secret")[1].decode()
    server = public_text(keys, "forwarder")

    with pytest.raises(ValueError, match="server public key: a CurveZMQ key in Z85 is 40"):
        CurveKeys.from_z85(secret=secret, server=server[:-1])
    with pytest.raises(ValueError, match="secret key: not a Z85 key"):
        CurveKeys.from_z85(secret="~" * 40, server=server)
    with pytest.raises(ValueError, match="public key: does not belong to the secret key"):
        CurveKeys.from_z85(secret=secret, server=server, public=public_text(keys, "mallory"))


def test_bad_key_files_raise_naming_the_file(keys: Path, tmp_path: Path) -> None:
    garbled = tmp_path / "garbled.key_secret"
    garbled.write_text('curve\n    public-key = "short"\n    secret-key = "short"\n')

    for secret_file, server_file, culprit in [
        (tmp_path / "missing.key_secret", keys / "forwarder.key", "missing.key_secret"),
        (keys / "alice.key", keys / "forwarder.key", "alice.key"),  # a public file as secret
        (garbled, keys / "forwarder.key", "garbled.key_secret"),
        (keys / "alice.key_secret", tmp_path / "nope.key", "nope.key"),
    ]:
        with pytest.raises(KeyFileError, match=culprit):
            Client("tcp://127.0.0.1:1", curve_secret=secret_file, curve_server=server_file)


def test_half_a_key_pair_is_an_error_never_a_plain_connection(
    keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=r"curve_server .* is not"):
        resolve(None, keys / "alice.key_secret", None)
    monkeypatch.setenv("ZMQFLOW_CURVE_SERVER", str(keys / "forwarder.key"))
    with pytest.raises(ValueError, match="ZMQFLOW_CURVE_SERVER is set but ZMQFLOW_CURVE_SECRET"):
        Client("tcp://127.0.0.1:1")


def test_clients_read_their_key_files_from_the_environment(
    keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZMQFLOW_CURVE_SECRET", str(keys / "alice.key_secret"))
    monkeypatch.setenv("ZMQFLOW_CURVE_SERVER", str(keys / "forwarder.key"))

    with Client("tcp://127.0.0.1:1") as client:
        assert client.curve == CurveKeys.from_files(
            keys / "alice.key_secret", keys / "forwarder.key"
        )
        assert client._sock.get(zmq.MECHANISM) == zmq.CURVE


# --------------------------------------------------------------- clients


def test_an_allowed_key_gets_its_tasks_done(gate: CurveGate, keys: Path, connect: Any) -> None:
    client = _curve_client(connect, gate, keys, "alice", timeout=30)

    results = client.map("echo", [b"one", b"two"])

    assert [r.payload for r in results] == [b"one", b"two"]
    assert client.reconnects == 0
    assert client._watch is None  # heard: the monitor is gone, one socket is polled


def test_an_unknown_key_gets_nothing_done_and_says_which_key_was_refused_where(
    gate: CurveGate, keys: Path, connect: Any, said: Said
) -> None:
    client = _curve_client(connect, gate, keys, "mallory", timeout=2)

    with pytest.raises((TimeoutError, ForwarderRefused)):
        client.map("echo", [b"x"])

    line = said.wait("forwarder refused our key")
    assert public_text(keys, "mallory") in line
    assert gate.frontend in line
    assert not gate.owner and not gate.queue  # nothing reached the forwarder


def test_status_from_an_unknown_key_fails_at_once_with_the_reason(
    gate: CurveGate, keys: Path, connect: Any
) -> None:
    client = _curve_client(connect, gate, keys, "mallory", timeout=2)

    with pytest.raises(ForwarderRefused, match=re.escape(public_text(keys, "mallory"))):
        client.status(timeout=10)


def test_a_plain_client_at_a_curve_forwarder_gets_nothing_done_and_is_told_why(
    gate: CurveGate, connect: Any, said: Said
) -> None:
    client = connect(gate.frontend, timeout=2, heartbeat_interval=0.5)

    with pytest.raises((TimeoutError, ForwarderRefused)):
        client.map("echo", [b"x"])

    assert "refused a plain connection" in said.wait(gate.frontend)
    assert not gate.owner


def test_a_refused_client_gets_in_once_its_key_is_allowed_without_a_restart(
    gate: CurveGate, keys: Path, connect: Any, said: Said
) -> None:
    client = _curve_client(connect, gate, keys, "mallory", timeout=60)
    allowed = threading.Thread(
        target=lambda: (
            said.wait("forwarder refused our key"),
            gate.allow(keys / "mallory.key", "clients"),
        )
    )
    allowed.start()

    results = client.map("echo", [b"a", b"b", b"c"])  # refused, then let in, same client

    allowed.join()
    assert [r.payload for r in results] == [b"a", b"b", b"c"]
    assert client.reconnects >= 1


# --------------------------------------------------------------- workers


def _worker_args(gate: CurveGate, keys: Path, name: str) -> list[str]:
    return [
        "--connect",
        gate.backend,
        "--service",
        "echo",
        "--worker-id",
        name,
        "--curve-secret",
        str(keys / f"{name}.key_secret"),
        "--curve-server",
        str(gate.public_file),
    ]


def test_a_refused_worker_registers_once_allowed_and_then_runs_tasks(
    gate: CurveGate, keys: Path, fabric: Fabric
) -> None:
    worker = fabric._spawn(
        "worker", [sys.executable, "-m", "zmqflow", "worker", *_worker_args(gate, keys, "worker1")]
    )
    line = wait_for(
        lambda: next(
            (s for s in fabric.log("worker").splitlines() if "refused our key" in s), None
        ),
        "the worker's refusal in its log",
    )
    assert public_text(keys, "worker1") in line and gate.backend in line
    assert not gate.workers

    gate.allow(keys / "worker1.key", "workers")

    wait_for(lambda: "worker1" in gate.workers.values(), "the worker registered")
    with Client(
        gate.frontend, curve_secret=keys / "alice.key_secret", curve_server=gate.public_file
    ) as client:
        assert [w["id"] for w in client.status()["workers"]] == ["worker1"]
        results = client.map("echo", [b"w1", b"w2"], timeout=30)
    assert [(r.payload, r.worker) for r in results] == [(b"w1", "worker1"), (b"w2", "worker1")]
    assert worker.poll() is None  # the same process all along


def test_a_plain_worker_at_a_curve_forwarder_never_registers_and_says_why(
    gate: CurveGate, fabric: Fabric
) -> None:
    fabric.start_worker("echo", connect=gate.backend)

    wait_for(lambda: "refused a plain connection" in fabric.log("worker"), "the worker's refusal")
    assert not gate.workers


# ------------------------------------------------------------ command line


ZMQFLOW = [sys.executable, "-m", "zmqflow"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmqflow", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )


@pytest.mark.parametrize(
    "command",
    [
        ["worker", "--service", "echo"],
        ["submit", "--service", "echo"],
        ["status"],
        ["dead-letters"],
        ["publish", "--kind", "x"],
        ["subscribe", "--timeout", "1"],
    ],
)
def test_every_peer_command_stops_at_start_with_exit_2_naming_a_bad_key_file(
    command: list[str], keys: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere.key_secret"

    done = _cli(
        *command, "--curve-secret", str(missing), "--curve-server", str(keys / "forwarder.key")
    )

    assert done.returncode == 2, done.stderr
    assert str(missing) in done.stderr.replace("\n", "")


def test_submit_with_an_allowed_key_completes_and_an_unknown_key_completes_none(
    gate: CurveGate, keys: Path
) -> None:
    def submit(name: str) -> subprocess.CompletedProcess[str]:
        return _cli(
            "submit",
            "--connect",
            gate.frontend,
            "--service",
            "echo",
            "--count",
            "5",
            "--timeout",
            "3",
            "--json",
            "--curve-secret",
            str(keys / f"{name}.key_secret"),
            "--curve-server",
            str(gate.public_file),
        )

    allowed, unknown = submit("alice"), submit("mallory")

    assert allowed.returncode == 0, allowed.stderr
    assert '"completed": 5' in allowed.stdout
    assert unknown.returncode == 1
    assert '"completed": 0' in unknown.stdout
    assert f"forwarder refused our key {public_text(keys, 'mallory')}" in unknown.stderr


def test_status_of_a_refused_key_exits_1_with_the_reason(gate: CurveGate, keys: Path) -> None:
    done = _cli(
        "status",
        "--connect",
        gate.frontend,
        "--curve-secret",
        str(keys / "mallory.key_secret"),
        "--curve-server",
        str(gate.public_file),
    )

    assert done.returncode == 1
    assert "refused our key" in done.stderr


def test_publish_and_subscribe_use_their_keys_on_the_event_bus(keys: Path, tmp_path: Path) -> None:
    """A CURVE XSUB/XPUB pair (no ZAP: the bus's roles are the forwarder's) relays one event."""
    ctx = zmq.Context.instance()
    public, secret = zmq.auth.load_certificate(keys / "forwarder.key_secret")
    ends = []
    for kind in (zmq.XSUB, zmq.XPUB):
        sock = ctx.socket(kind)
        sock.linger = 0
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = public, secret
        ends.append((sock, f"tcp://127.0.0.1:{sock.bind_to_random_port('tcp://127.0.0.1')}"))
    (xsub, events_in), (xpub, events_out) = ends
    proxy = threading.Thread(target=_relay, args=(xsub, xpub), daemon=True)
    proxy.start()
    curve = ["--curve-secret", str(keys / "alice.key_secret"), "--curve-server"]
    curve.append(str(keys / "forwarder.key"))
    env = {**clean_env(), "ZMQFLOW_ENV": "t"}
    sub = subprocess.Popen(
        [*ZMQFLOW, "subscribe", "--connect", events_out, "--topic", "t.", "--count", "1", *curve],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    pub = subprocess.run(
        [*ZMQFLOW, "publish", "--connect", events_in, "--kind", "k", "--data", '{"n": 1}', *curve],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    out, _ = sub.communicate(timeout=60)

    assert '"subscribed": true' in pub.stdout, pub.stderr
    assert '"topic": "t.k"' in out and '"data": {"n": 1}' in out


def _relay(xsub: zmq.Socket, xpub: zmq.Socket) -> None:
    with contextlib.suppress(zmq.ContextTerminated):
        zmq.proxy(xsub, xpub)


def test_key_files_are_read_once_per_client_not_per_socket(
    gate: CurveGate, keys: Path, tmp_path: Path
) -> None:
    """Reconnecting reuses the keys read at construction (no file access on the way)."""
    secret = tmp_path / "alice.key_secret"
    shutil.copy(keys / "alice.key_secret", secret)
    with Client(
        gate.frontend, curve_secret=secret, curve_server=gate.public_file, timeout=30
    ) as client:
        os.unlink(secret)
        client._io(REOPEN, None)  # a new socket, the same keys
        assert [r.payload for r in client.map("echo", [b"k"])] == [b"k"]


# ------------------------------------------------- the real forwarder, with keys
@pytest.fixture
def real_keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "real-keys")


@pytest.fixture
def secure(tmp_path: Path, real_keys: Keys) -> Iterator[SecureFabric]:
    fab = SecureFabric(tmp_path, real_keys)
    try:
        fab.start_secure_forwarder()
        yield fab
    finally:
        fab.stop()


def test_a_client_refused_by_the_forwarder_completes_its_tasks_once_its_key_is_copied_in(
    secure: SecureFabric, real_keys: Keys, connect: Any, said: Said
) -> None:
    secure.start_keyed_worker("worker", "echo")
    secure.wait_workers(1)
    client = connect(
        secure.frontend,
        timeout=60,
        heartbeat_interval=secure.heartbeat_interval,
        curve_secret=real_keys.secret("stranger"),
        curve_server=real_keys.public("forwarder"),
    )
    copied = threading.Thread(
        target=lambda: (
            said.wait(f"forwarder refused our key {real_keys.z85('stranger')}"),
            shutil.copy(real_keys.public("stranger"), real_keys.allow_clients),
        )
    )
    copied.start()

    results = client.map("echo", [b"r%d" % n for n in range(20)])  # the same client throughout

    copied.join()
    assert [r.payload for r in results] == [b"r%d" % n for n in range(20)]
    assert secure.frontend in said.wait("forwarder refused our key")


def test_a_worker_refused_by_the_forwarder_registers_once_its_key_is_copied_in(
    secure: SecureFabric, real_keys: Keys
) -> None:
    worker = secure.start_keyed_worker("stranger", "echo")
    z85 = real_keys.z85("stranger")
    wait_for(
        lambda: f"forwarder refused our key {z85} at {secure.backend}" in secure.log("worker"),
        "the worker's refusal in its log",
    )
    assert secure.status()["workers"] == []

    shutil.copy(real_keys.public("stranger"), real_keys.allow_workers)

    registered = secure.wait_workers(1, timeout=30)["workers"]
    assert [w["pid"] for w in registered] == [worker.pid]  # the same process, not restarted
    with secure.client() as client:
        results = client.map("echo", [b"a", b"b"], timeout=60)
    assert [r.payload for r in results] == [b"a", b"b"]
    assert worker.poll() is None


@pytest.mark.parametrize("who", ["stranger", "worker", None])
def test_submit_with_an_unknown_key_a_worker_key_or_no_key_completes_none_and_says_why(
    secure: SecureFabric, real_keys: Keys, who: str | None
) -> None:
    secure.start_keyed_worker("worker", "echo")
    secure.wait_workers(1)
    keys = real_keys.peer_args(who) if who else ()
    done = _cli(
        *("submit", "--connect", secure.frontend, "--service", "echo", "--count", "3"),
        *("--timeout", "3", "--json", *keys),
    )

    assert done.returncode == 1
    assert '"completed": 0' in done.stdout
    if who:
        assert f"forwarder refused our key {real_keys.z85(who)}" in done.stderr
    else:
        assert "refused a plain connection" in done.stderr


def test_submit_with_an_allowed_key_completes_through_the_real_forwarder(
    secure: SecureFabric, real_keys: Keys
) -> None:
    secure.start_keyed_worker("worker", "echo")
    secure.wait_workers(1)

    summary = secure.summary(
        secure.submit_cli("--service", "echo", "--count", "200", *real_keys.peer_args("client"))
    )

    assert (summary["completed"], summary["lost"], summary["reconnects"]) == (200, 0, 0)
