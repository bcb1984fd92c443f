"""The Rust worker with CURVE keys (issue 13), real processes on loopback.

The worker reads the key files ``zmqflow keys generate`` writes (pyzmq's
zmq.auth format): ``--curve-secret`` its own ``NAME.key_secret``,
``--curve-server`` the forwarder's ``NAME.key``, or the ZMQFLOW_CURVE_SECRET /
ZMQFLOW_CURVE_SERVER variables. Two forwarders:
- the real one (``zmqflow forwarder --curve-secret --allow-clients
  --allow-workers``, tests/security_fabric.py's SecureFabric): tasks from a
  keyed client served by the Rust worker; a worker holding a client key or a
  stranger's is not registered until its key is copied into the workers'
  allow-list, then it is, with no restart of either;
- tests/fabric.py's FakeForwarder made a CURVE server, with zmq.auth's
  ThreadAuthenticator as its ZAP handler allowing the public keys of the
  same workers' folder: the worker's READY or its refusal, message by message.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from fabric import Fabric, FakeForwarder, clean_env, rust_worker_binary, wait_for
from security_fabric import Keys, SecureFabric
from zmq.auth.thread import ThreadAuthenticator

from zmqflow import protocol as p
from zmqflow.security.keys import load_secret


@pytest.fixture(scope="session")
def rust_bin() -> Path:
    return rust_worker_binary()


class CurveForwarder:
    """A FakeForwarder that is a CURVE server behind a ZAP allow-list."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        # A context of its own: ZAP's inproc endpoint is per context, and the last
        # test's authenticator may not have released it yet.
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.auth = ThreadAuthenticator(self.ctx)
        self.auth.start()  # before any handshake: without ZAP, CURVE lets every key in
        self.reload()
        secret = load_secret(keys.secret("forwarder"))[1]
        self.fake = FakeForwarder(curve_secret=secret, ctx=self.ctx)

    def reload(self) -> None:
        """Read the allow-list folder again (the real forwarder does it on its own)."""
        self.auth.configure_curve(domain="*", location=str(self.keys.allow_workers))

    def close(self) -> None:
        self.fake.close()
        self.auth.stop()
        self.ctx.term()


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    """worker.key in allow_workers; client, client2 and stranger not there."""
    return Keys(tmp_path / "keys")


@pytest.fixture
def curve(keys: Keys) -> Iterator[CurveForwarder]:
    fwd = CurveForwarder(keys)
    try:
        yield fwd
    finally:
        fwd.close()


# ------------------------------------------------------------ the real forwarder


@pytest.fixture
def secure(tmp_path: Path, keys: Keys) -> Iterator[SecureFabric]:
    fab = SecureFabric(tmp_path, keys)
    try:
        yield fab
    finally:
        fab.stop()


def rust_keys(keys: Keys, name: str) -> dict[str, str]:
    return {
        "curve_secret": str(keys.secret(name)),
        "curve_server": str(keys.public("forwarder")),
    }


def test_the_rust_worker_serves_a_curve_forwarder_s_clients(
    rust_bin: Path, secure: SecureFabric
) -> None:
    secure.start_secure_forwarder()
    secure.start_rust_worker(rust_bin, "echo", "sha256", **rust_keys(secure.keys, "worker"))
    (listed,) = secure.wait_workers(1)["workers"]
    assert listed["language"] == "rust"
    with secure.client() as c:
        results = c.map("echo", [b"%d" % i for i in range(300)], timeout=60)
    assert [r.payload for r in results] == [b"%d" % i for i in range(300)]
    assert {r.worker for r in results} == {listed["id"]}


@pytest.mark.parametrize("key", ["client", "stranger"])
def test_a_rust_worker_refused_by_the_forwarder_gets_in_once_its_key_is_allowed(
    rust_bin: Path, secure: SecureFabric, key: str
) -> None:
    secure.start_secure_forwarder()
    worker = secure.start_rust_worker(
        rust_bin, "echo", heartbeat_interval=0.5, **rust_keys(secure.keys, key)
    )
    refused = f"forwarder refused our key {secure.keys.z85(key)} at {secure.backend}"
    wait_for(lambda: refused in secure.log("worker-rust"), "the refusal in the worker's log")
    assert secure.status()["workers"] == []
    assert secure.keys.z85(key) in secure.log("forwarder")  # it names the key too

    shutil.copy(secure.keys.public(key), secure.keys.allow_workers)
    secure.wait_workers(1, timeout=20)  # the folder watch, then our backoff (5 s at most)
    with secure.client() as c:
        assert c.map("echo", [b"in"], timeout=30)[0].payload == b"in"
    assert worker.poll() is None  # neither was restarted
    assert secure.forwarder is not None and secure.forwarder.poll() is None


# ------------------------------------------------- a scripted CURVE forwarder


def test_an_allowed_worker_registers_and_serves_over_curve(
    rust_bin: Path, keys: Keys, curve: CurveForwarder, fabric: Fabric
) -> None:
    worker = fabric.start_rust_worker(
        rust_bin, "echo", connect=curve.fake.endpoint, **rust_keys(keys, "worker")
    )
    rid, ready = curve.fake.expect(p.Ready)
    assert ready.language == "rust"
    curve.fake.task(rid, "t-1", "echo", b"sealed")
    assert curve.fake.expect(p.Done)[1] == p.Done("t-1", b"sealed")
    assert worker.poll() is None
    assert f"with CURVE, our key {keys.z85('worker')}" in fabric.log("worker-rust")


def test_the_key_files_can_come_from_zmqflow_variables(
    rust_bin: Path, keys: Keys, curve: CurveForwarder, fabric: Fabric
) -> None:
    fabric.start_rust_worker(
        rust_bin,
        "echo",
        connect=curve.fake.endpoint,
        env={
            "ZMQFLOW_CURVE_SECRET": str(keys.secret("worker")),
            "ZMQFLOW_CURVE_SERVER": str(keys.public("forwarder")),
        },
    )
    curve.fake.expect(p.Ready)


def test_a_refused_worker_is_logged_and_gets_in_once_allowed_without_a_restart(
    rust_bin: Path, keys: Keys, curve: CurveForwarder, fabric: Fabric
) -> None:
    worker = fabric.start_rust_worker(
        rust_bin,
        "echo",
        connect=curve.fake.endpoint,
        heartbeat_interval=0.5,
        **rust_keys(keys, "stranger"),
    )
    refused = f"forwarder refused our key {keys.z85('stranger')} at {curve.fake.endpoint}"
    wait_for(lambda: refused in fabric.log("worker-rust"), "the refusal in the worker's log")
    # libzmq never retries a refused socket: the worker keeps making new ones
    wait_for(lambda: fabric.log("worker-rust").count(refused) >= 2, "a second refused socket", 15)
    with pytest.raises(AssertionError, match="nothing from the worker"):
        curve.fake.recv(timeout=0.5)

    shutil.copy(keys.public("stranger"), keys.allow_workers)
    curve.reload()
    rid, _ = curve.fake.expect(p.Ready, timeout=15)  # the backoff is at most 5 s
    curve.fake.task(rid, "t-1", "echo", b"in at last")
    assert curve.fake.expect(p.Done)[1] == p.Done("t-1", b"in at last")
    assert worker.poll() is None  # the same process all along


def test_a_plain_worker_at_a_curve_forwarder_is_told_to_give_keys(
    rust_bin: Path, curve: CurveForwarder, fabric: Fabric
) -> None:
    worker = fabric.start_rust_worker(rust_bin, "echo", connect=curve.fake.endpoint)
    wait_for(
        lambda: "refused a plain connection: it wants CURVE" in fabric.log("worker-rust"),
        "the refusal in the worker's log",
    )
    assert worker.poll() is None


def run_worker(rust_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(rust_bin), "--connect", "tcp://127.0.0.1:1", "--service", "echo", *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=10,
    )


def test_a_bad_key_file_is_a_usage_error_naming_the_file(rust_bin: Path, keys: Keys) -> None:
    missing = keys.folder / "nobody.key_secret"
    run = run_worker(
        rust_bin, "--curve-secret", str(missing), "--curve-server", str(keys.public("forwarder"))
    )
    assert run.returncode == 2
    assert f"key file {missing}: missing" in run.stderr

    # the forwarder's public file given as our secret one
    public = keys.public("worker")
    run = run_worker(rust_bin, "--curve-secret", str(public), "--curve-server", str(public))
    assert run.returncode == 2
    assert f"key file {public}: no secret-key line" in run.stderr

    broken = keys.folder / "broken.key"
    broken.write_text('curve\n    public-key = "not z85 at all"\n')
    run = run_worker(
        rust_bin, "--curve-secret", str(keys.secret("worker")), "--curve-server", str(broken)
    )
    assert run.returncode == 2
    assert f"key file {broken}: the public key is 14 characters, not 40 of Z85" in run.stderr


def test_half_a_key_pair_is_a_usage_error(rust_bin: Path, keys: Keys) -> None:
    run = run_worker(rust_bin, "--curve-secret", str(keys.secret("worker")))
    assert run.returncode == 2
    assert "--curve-secret and --curve-server go together" in run.stderr
