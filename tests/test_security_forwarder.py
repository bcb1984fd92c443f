"""The forwarder's security (issue 13): CURVE and roles on every socket, plain only on purpose.

Real processes on loopback: a forwarder started with keys (tests/security_fabric.py),
clients and workers holding keys, raw pyzmq peers, and how their handshakes end as
the connecting side's socket monitor sees them.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from fabric import Fabric, free_port, wait_for
from security_fabric import Keys, SecureFabric, handshake, raw_socket

from zmqflow import protocol as p
from zmqflow.security.authenticator import RoleAuthenticator, load_allow_list
from zmqflow.security.keys import load_public
from zmqflow.security.policy import tcp_exposure


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys")


@pytest.fixture
def secure(tmp_path: Path, keys: Keys) -> Iterator[SecureFabric]:
    fab = SecureFabric(tmp_path, keys)
    try:
        yield fab
    finally:
        fab.stop()


def every_endpoint(fab: SecureFabric) -> list[tuple[str, int]]:
    return [
        (fab.frontend, zmq.DEALER),
        (fab.frontend_ipc, zmq.DEALER),
        (fab.backend, zmq.DEALER),
        (fab.backend_ipc, zmq.DEALER),
        (fab.events_in, zmq.PUB),
        (fab.events_out, zmq.SUB),
    ]


# ------------------------------------------------------------- allowed peers
def test_an_allowed_client_completes_tasks_through_an_allowed_worker(
    secure: SecureFabric,
) -> None:
    secure.start_secure_forwarder()
    secure.start_keyed_worker("worker", "echo")
    secure.wait_workers(1)
    with secure.client() as client:
        results = list(client.map("echo", [b"task-%d" % n for n in range(50)], timeout=60))
    assert [r.payload for r in results] == [b"task-%d" % n for n in range(50)]


def test_every_socket_tcp_and_ipc_is_a_curve_server_that_refuses_plain_peers(
    secure: SecureFabric, keys: Keys
) -> None:
    secure.start_secure_forwarder()
    for endpoint, kind in every_endpoint(secure):
        # the peer sees the mismatch, or the forwarder hanging up on it first
        assert handshake(endpoint, None, None, kind) in ("plain refused", "failed"), endpoint
    # the forwarder's monitor thread writes it: wait for the line, not a moment
    wait_for(
        lambda: "zmtp_mechanism_mismatch: a plain (non-CURVE) peer" in secure.log("forwarder"),
        "the forwarder's warning about a plain peer",
    )


def test_a_key_is_let_in_only_where_its_role_allows_it(secure: SecureFabric, keys: Keys) -> None:
    secure.start_secure_forwarder()
    client, worker = keys.secret("client"), keys.secret("worker")
    outcomes = {
        (endpoint, name): handshake(endpoint, key, keys.server, kind)
        for endpoint, kind in every_endpoint(secure)
        for name, key in (("client", client), ("worker", worker))
    }
    client_side = {secure.frontend, secure.frontend_ipc, secure.events_in, secure.events_out}
    assert outcomes == {
        (endpoint, name): (
            "succeeded" if (endpoint in client_side) == (name == "client") else "refused"
        )
        for endpoint, name in outcomes
    }
    log = secure.log("forwarder")
    assert f"refused CURVE key {keys.z85('worker')} from 127.0.0.1 for zmqflow.clients" in log
    assert f"refused CURVE key {keys.z85('client')} from 127.0.0.1 for zmqflow.workers" in log
    assert "wrong role" in log


def test_an_unknown_key_is_refused_and_logged_with_its_z85_text_and_address(
    secure: SecureFabric, keys: Keys
) -> None:
    secure.start_secure_forwarder()
    assert handshake(secure.frontend, keys.secret("stranger"), keys.server) == "refused"
    line = f"refused CURVE key {keys.z85('stranger')} from 127.0.0.1 for zmqflow.clients: "
    line += "Unknown key"
    wait_for(lambda: line in secure.log("forwarder"), "the refusal in the forwarder's log")


def test_an_unknown_client_gets_no_answer(secure: SecureFabric, keys: Keys) -> None:
    secure.start_secure_forwarder()
    sock = raw_socket(secure.frontend, zmq.DEALER, keys.secret("stranger"), keys.server)
    sock.send_multipart(p.encode(p.StatusRequest()), zmq.NOBLOCK)
    z85 = keys.z85("stranger")
    wait_for(lambda: f"refused CURVE key {z85}" in secure.log("forwarder"), "the refusal")
    assert not sock.poll(500)  # refused at the handshake: the request never left
    sock.close()


def test_a_worker_holding_a_client_key_is_not_registered(secure: SecureFabric, keys: Keys) -> None:
    secure.start_secure_forwarder()
    impostor = secure.start_keyed_worker("client", "echo")
    honest = secure.start_keyed_worker("worker", "echo")
    z85 = keys.z85("client")
    wait_for(
        lambda: f"refused CURVE key {z85} from 127.0.0.1 for zmqflow.workers" in secure.log("fo"),
        "the impostor's refusal",
    )
    workers = secure.wait_workers(1)["workers"]
    assert [w["pid"] for w in workers] == [honest.pid]
    assert impostor.poll() is None  # it keeps trying; it is simply never let in


def test_a_wrong_server_key_never_completes_a_handshake(secure: SecureFabric, keys: Keys) -> None:
    secure.start_secure_forwarder()
    wrong_server = zmq.curve_keypair()[0]
    assert handshake(secure.frontend, keys.secret("client"), wrong_server, timeout=3) != "succeeded"


# --------------------------------------------------------------- rotation
def test_a_key_copied_into_the_allow_list_gets_in_and_removed_is_refused_without_restart(
    secure: SecureFabric, keys: Keys
) -> None:
    forwarder = secure.start_secure_forwarder()
    stranger = keys.secret("stranger")
    assert handshake(secure.frontend, stranger, keys.server) == "refused"

    shutil.copy(keys.public("stranger"), keys.allow_clients / "newcomer.key")
    wait_for(
        lambda: handshake(secure.frontend, stranger, keys.server) == "succeeded",
        "the copied key to be let in",
    )
    (keys.allow_clients / "newcomer.key").unlink()
    wait_for(
        lambda: handshake(secure.frontend, stranger, keys.server) == "refused",
        "the removed key to be refused",
    )
    assert forwarder.poll() is None
    assert "added newcomer.key" in secure.log("forwarder")
    assert "removed newcomer.key" in secure.log("forwarder")


def _rewrite_unseen(path: Path, old: str, new: str) -> None:
    """Swap a key inside a .key file so that size, mtime and inode stay as they were:
    the folder watch sees nothing, only a forced reload (SIGHUP) notices."""
    before = path.stat()
    text = path.read_text()
    assert old in text and len(old) == len(new)
    with path.open("r+") as f:
        f.write(text.replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )


def test_sighup_reloads_the_allow_lists_both_ways_without_restart(
    secure: SecureFabric, keys: Keys
) -> None:
    shutil.copy(keys.public("client2"), keys.allow_clients / "slot.key")
    forwarder = secure.start_secure_forwarder()
    client2, stranger = keys.secret("client2"), keys.secret("stranger")
    assert handshake(secure.frontend, client2, keys.server) == "succeeded"
    assert handshake(secure.frontend, stranger, keys.server) == "refused"

    _rewrite_unseen(keys.allow_clients / "slot.key", keys.z85("client2"), keys.z85("stranger"))
    forwarder.send_signal(signal.SIGHUP)
    wait_for(
        lambda: handshake(secure.frontend, stranger, keys.server) == "succeeded",
        "the key swapped in to be let in after SIGHUP",
    )
    assert handshake(secure.frontend, client2, keys.server) == "refused"
    assert forwarder.poll() is None
    assert "reloading the allow-lists" in secure.log("forwarder")


# ------------------------------------------------------------- plain mode
def _forwarder(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "zmqflow", "forwarder", "--journal", ":memory:", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _loopback() -> list[str]:
    return [
        "--frontend",
        f"tcp://127.0.0.1:{free_port()}",
        "--backend",
        f"tcp://127.0.0.1:{free_port()}",
    ]


@pytest.mark.parametrize("host", ["*", "0.0.0.0", "[::]", "10.1.2.3"])
def test_a_plain_forwarder_binding_beyond_loopback_refuses_to_start(host: str) -> None:
    run = _forwarder(
        "--frontend", f"tcp://{host}:{free_port()}", "--backend", f"tcp://127.0.0.1:{free_port()}"
    )
    assert run.returncode == 2
    assert "refusing to bind" in run.stderr and "without CURVE" in run.stderr
    assert "--insecure" in run.stderr and "--curve-secret" in run.stderr


def test_the_default_endpoints_refuse_to_start_without_keys() -> None:
    run = _forwarder()
    assert run.returncode == 2
    assert "tcp://*:5555" in run.stderr and "tcp://*:5556" in run.stderr


def test_a_plain_forwarder_on_loopback_and_ipc_starts_with_a_warning(fabric: Fabric) -> None:
    fabric.start_forwarder()  # loopback tcp and ipc, no keys
    assert fabric.status()["workers"] == []
    assert "no --curve-secret: plain ZeroMQ on loopback and ipc only" in fabric.log("forwarder")


def test_insecure_lets_a_plain_forwarder_bind_a_wildcard_with_a_warning(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "zmqflow", "forwarder", "--journal", ":memory:", "--insecure"]
    cmd += ["--frontend", f"tcp://*:{port}", "--backend", f"tcp://127.0.0.1:{free_port()}"]
    log = tmp_path / "forwarder.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        from zmqflow.client import Client

        with Client(f"tcp://127.0.0.1:{port}", timeout=10) as client:
            assert client.status(10)["workers"] == []
        assert "plain mode on purpose (--insecure)" in log.read_text()
    finally:
        proc.kill()
        proc.wait()


def test_allow_lists_without_a_secret_key_refuse_to_start(keys: Keys) -> None:
    run = _forwarder(*_loopback(), "--allow-clients", str(keys.allow_clients))
    assert run.returncode == 2
    assert "--allow-clients given without --curve-secret" in run.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no-workers-folder", "--allow-workers DIR (ZMQFLOW_ALLOW_WORKERS) is needed"),
        ("missing-folder", "not a folder"),
        ("public-as-secret", "no secret-key line"),
    ],
)
def test_a_secured_forwarder_with_unusable_settings_refuses_to_start(
    keys: Keys, change: str, message: str
) -> None:
    args = dict(zip(keys.forwarder_args()[::2], keys.forwarder_args()[1::2], strict=True))
    if change == "no-workers-folder":
        del args["--allow-workers"]
    elif change == "missing-folder":
        args["--allow-clients"] = str(keys.folder / "nowhere")
    else:
        args["--curve-secret"] = str(keys.public("forwarder"))
    flat = [part for pair in args.items() for part in pair]
    run = _forwarder(*_loopback(), *flat)
    assert run.returncode == 2
    assert message in run.stderr


# -------------------------------------------------------------- bad input
def test_an_oversized_message_drops_its_sender_and_the_forwarder_stays_up(
    secure: SecureFabric, keys: Keys
) -> None:
    forwarder = secure.start_secure_forwarder(
        "--max-payload-bytes", "100000", "--max-message-bytes", "200000"
    )
    sock = raw_socket(secure.frontend, zmq.DEALER, keys.secret("client"), keys.server)
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
    assert zmq.utils.monitor.recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
    sock.send_multipart([p.CLIENT_SIGNATURE, b"\x01", b"x" * 300_000])
    assert zmq.utils.monitor.recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
    sock.disable_monitor()
    sock.close()
    monitor.close()

    assert forwarder.poll() is None
    info = secure.status()
    assert info["workers"] == []
    secure.start_keyed_worker("worker", "echo")
    secure.wait_workers(1)
    with secure.client() as client:  # a task of the largest allowed payload still goes through
        assert client.map("echo", [b"y" * 100_000], timeout=30)[0].payload == b"y" * 100_000


def test_an_event_for_another_environments_topic_is_dropped_and_logged(
    secure: SecureFabric, keys: Keys
) -> None:
    secure.start_secure_forwarder()  # env dev
    sub = raw_socket(secure.events_out, zmq.SUB, keys.secret("client"), keys.server)
    sub.subscribe(b"")
    pub = raw_socket(secure.events_in, zmq.XPUB, keys.secret("client"), keys.server)
    assert pub.poll(20_000) and pub.recv() == b"\x01"  # the subscription reached the publisher

    pub.send_multipart([b"prod.orders", b"not for dev"])
    pub.send_multipart([b"devil.x", b"not dev. either"])
    pub.send_multipart([b"dev.orders", b"for dev"])

    assert sub.poll(20_000)
    assert sub.recv_multipart() == [b"dev.orders", b"for dev"]  # the others never came out
    log = secure.log("forwarder")
    assert f"dropped an event for topic b'prod.orders' from key {keys.z85('client')}" in log
    assert "b'devil.x'" not in log  # once per publisher
    pub.close()
    sub.close()


def test_ipc_socket_files_are_not_open_to_other_users(secure: SecureFabric) -> None:
    secure.start_secure_forwarder()
    for endpoint in (secure.frontend_ipc, secure.backend_ipc):
        mode = stat.S_IMODE(os.stat(endpoint[len("ipc://") :]).st_mode)
        assert mode & 0o007 == 0, oct(mode)
        assert mode == 0o660


def test_a_port_scan_does_not_disturb_the_forwarder(secure: SecureFabric) -> None:
    forwarder = secure.start_secure_forwarder()
    port = int(secure.frontend.rsplit(":", 1)[1])
    for junk in (b"", b"GET / HTTP/1.0\r\n\r\n", os.urandom(512)):
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(junk)
    assert secure.status()["workers"] == []
    assert forwarder.poll() is None


# ---------------------------------------------------------- the pieces alone
@pytest.mark.parametrize(
    ("endpoint", "exposure"),
    [
        ("tcp://127.0.0.1:5555", "local"),
        ("tcp://127.0.0.1:*", "local"),
        ("tcp://127.9.8.7:5555", "local"),
        ("tcp://localhost:5555", "local"),
        ("tcp://[::1]:5555", "local"),
        ("ipc:///run/zmqflow/frontend.sock", "local"),
        ("inproc://x", "local"),
        ("tcp://*:5555", "wildcard"),
        ("tcp://0.0.0.0:5555", "wildcard"),
        ("tcp://[::]:5555", "wildcard"),
        ("tcp://192.168.1.10:5555", "network"),
        ("tcp://eth0:5555", "network"),
        ("tcp://forwarder:5555", "network"),
    ],
)
def test_tcp_exposure_tells_loopback_from_wildcard_and_network(
    endpoint: str, exposure: str
) -> None:
    assert tcp_exposure(endpoint) == exposure


def test_an_unusable_file_in_an_allow_folder_is_skipped_not_fatal(
    keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    (keys.allow_clients / "broken.key").write_text('curve\n    public-key = "short"\n')
    caplog.set_level(logging.WARNING, logger="zmqflow.security")  # whatever root's level is
    allowed = load_allow_list(keys.allow_clients)
    assert allowed == {load_public(keys.public("client")): "client.key"}
    assert "broken.key" in caplog.text and "skipped" in caplog.text


def test_a_removed_allow_folder_allows_nobody(tmp_path: Path, keys: Keys) -> None:
    auth = RoleAuthenticator({"zmqflow.clients": keys.allow_clients}, zmq.Context())
    assert auth.certs["zmqflow.clients"]
    shutil.rmtree(keys.allow_clients)
    auth.refresh()
    assert auth.certs["zmqflow.clients"] == {}


def test_refresh_reloads_only_a_folder_that_changed(keys: Keys) -> None:
    auth = RoleAuthenticator(
        {"zmqflow.clients": keys.allow_clients, "zmqflow.workers": keys.allow_workers},
        zmq.Context(),
    )
    before = {d: id(c) for d, c in auth.certs.items()}
    shutil.copy(keys.public("stranger"), keys.allow_workers)
    auth.refresh()
    assert id(auth.certs["zmqflow.clients"]) == before["zmqflow.clients"]
    assert load_public(keys.public("stranger")) in auth.certs["zmqflow.workers"]


def test_handshakes_and_refused_events_are_counted_in_the_metrics(
    secure: SecureFabric, keys: Keys
) -> None:
    port = free_port()
    secure.start_secure_forwarder("--metrics-port", str(port))
    assert handshake(secure.frontend, keys.secret("client"), keys.server) == "succeeded"
    assert handshake(secure.frontend, keys.secret("stranger"), keys.server) == "refused"
    assert handshake(secure.backend, keys.secret("client"), keys.server) == "refused"
    assert handshake(secure.frontend, None, None) != "succeeded"
    sub = raw_socket(secure.events_out, zmq.SUB, keys.secret("client"), keys.server)
    sub.subscribe(b"")
    pub = raw_socket(secure.events_in, zmq.XPUB, keys.secret("client"), keys.server)
    assert pub.poll(20_000) and pub.recv() == b"\x01"
    pub.send_multipart([b"prod.x", b""])
    pub.send_multipart([b"dev.x", b""])
    assert sub.poll(20_000)  # dev.x came out: prod.x was handled before it

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            text = page.read().decode()
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(("zmqflow_handshakes", "zmqflow_events_refused"))
        }

    wanted = {
        'zmqflow_handshakes_total{domain="zmqflow.clients",outcome="accepted"}': 3.0,  # + the bus
        'zmqflow_handshakes_total{domain="zmqflow.clients",outcome="refused"}': 1.0,
        'zmqflow_handshakes_total{domain="zmqflow.workers",outcome="refused"}': 1.0,
        "zmqflow_events_refused_total": 1.0,
    }
    figures = wait_for(
        lambda: (f := scrape()) and all(f.get(k, 0) >= v for k, v in wanted.items()) and f,
        "the metrics to show the handshakes",
    )
    assert figures["zmqflow_handshakes_failed_total"] >= 1  # the plain peer
    pub.close()
    sub.close()
