"""CURVE in the compose stack: keys made by the `keys` one-shot, every socket
closed to whoever is not in an allow-list, a key let in at runtime.

Its own project (zmqflow-security-it) on free host ports, the fabric alone.
This process holds the harness's client key (harness.host_keys, seeded into
the allow-list before the stack starts); the keys these tests refuse or let
in at runtime are made here, in a temporary folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from zmqflow.client import Client, ForwarderUnreachable
from zmqflow.security import generate, load_public

from .harness import FABRIC_SERVICES, ComposeProject, wait_for

PROJECT = "zmqflow-security-it"
ROLES = {  # service -> the only secret key it may hold
    "worker-python": "worker-python",
    "worker-rust": "worker-rust",
    "events-log": "events-log",
}


@pytest.fixture(scope="module")
def stack() -> Iterator[ComposeProject]:
    with ComposeProject(PROJECT, FABRIC_SERVICES) as project:
        project.wait_workers()
        yield project


def _completes(stack: ComposeProject, timeout: float = 5.0, **keys: Path) -> int:
    """How many of 20 echo tasks a fresh client holding ``keys`` gets answered."""
    try:
        with Client(stack.client_endpoint, timeout=timeout, **keys) as client:
            return sum(r.ok for r in client.map("echo", [b"x"] * 20, timeout=timeout))
    except (ForwarderUnreachable, TimeoutError):
        return 0


def _started(stack: ComposeProject) -> dict[str, str]:
    """Each running container's start time: unchanged means not restarted."""
    return {
        c.name: c.attrs["State"]["StartedAt"]
        for service in FABRIC_SERVICES
        for c in stack.containers(service)
    }


def test_every_service_holds_only_its_own_secret_and_the_forwarder_public_key(
    stack: ComposeProject,
) -> None:
    for service, role in ROLES.items():
        out = stack.exec(service, "ls", "/etc/zmqflow/keys")
        assert out.returncode == 0, out.stderr
        assert sorted(out.stdout.split()) == sorted(
            [f"{role}.key", f"{role}.key_secret", "forwarder.key"]
        ), (service, out.stdout)
    out = stack.exec("forwarder", "ls", "/etc/zmqflow/keys", "/etc/zmqflow/allow-workers")
    listing = out.stdout.split()
    assert "forwarder.key_secret" in listing and "worker-python.key" in listing
    secrets = {name for name in listing if name.endswith(".key_secret")}
    assert secrets == {"forwarder.key_secret", "forwarder-health.key_secret"}, listing
    # and no key text in the compose configuration
    config = stack.compose_cmd("config").stdout
    assert load_public(stack.keys.forwarder_public).decode() not in config


def test_a_plain_client_completes_nothing_and_the_forwarder_says_why(
    stack: ComposeProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = stack.counters()["accepted"]
    monkeypatch.delenv("ZMQFLOW_CURVE_SECRET")
    monkeypatch.delenv("ZMQFLOW_CURVE_SERVER")
    assert _completes(stack) == 0
    monkeypatch.undo()
    assert stack.counters()["accepted"] == before
    wait_for(
        lambda: "handshake failed" in stack.logs("forwarder", tail=200),
        10,
        "the forwarder to log the plain client's failed handshake",
    )


def test_an_unknown_key_completes_nothing_and_the_forwarder_names_it(
    stack: ComposeProject, tmp_path: Path
) -> None:
    generate(tmp_path, "stranger")
    before = stack.counters()["accepted"]
    keys = {
        "curve_secret": tmp_path / "stranger.key_secret",
        "curve_server": stack.keys.forwarder_public,
    }
    assert _completes(stack, **keys) == 0
    assert stack.counters()["accepted"] == before
    stranger = load_public(tmp_path / "stranger.key").decode()
    wait_for(
        lambda: f"refused CURVE key {stranger}" in stack.logs("forwarder", tail=200),
        10,
        "the forwarder to log the stranger's key",
    )


def test_a_worker_key_used_as_a_client_is_refused(stack: ComposeProject) -> None:
    out = stack.exec(
        "worker-python", "zmqflow", "status", "--connect", "tcp://forwarder:5555",
        "--curve-secret", "/etc/zmqflow/keys/worker-python.key_secret",
        "--curve-server", "/etc/zmqflow/keys/forwarder.key", "--timeout", "3",
    )  # fmt: skip
    assert out.returncode != 0, out.stdout


def test_a_client_key_added_at_runtime_is_let_in_within_seconds_without_a_restart(
    stack: ComposeProject, tmp_path: Path
) -> None:
    generate(tmp_path, "late")
    keys = {
        "curve_secret": tmp_path / "late.key_secret",
        "curve_server": stack.keys.forwarder_public,
    }
    assert _completes(stack, timeout=3.0, **keys) == 0
    started = _started(stack)

    stack.allow_client(tmp_path / "late.key")
    # The forwarder re-reads the allow-list folder about every second.
    wait_for(lambda: _completes(stack, timeout=3.0, **keys) == 20, 30, "the late key to get in")
    assert _started(stack) == started  # nothing restarted
