"""Settings that parse but cannot be used end the process with exit 2 and one
line naming the setting, its value and the cause, never a traceback (issue 23):
a journal path that cannot be opened or created, a key file that cannot be
read, a port in use, for the forwarder, the worker and the client commands."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fabric import free_port


def zmqflow(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZMQFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "zmqflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def the_one_line(run: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, no traceback, and exactly one error line, holding every word."""
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if "not started" in line]
    assert len(lines) == 1, run.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another socket listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def forwarder(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return zmqflow(
        "forwarder",
        "--frontend",
        f"ipc://{tmp_path}/front.sock",
        "--backend",
        f"ipc://{tmp_path}/back.sock",
        "--journal",
        str(tmp_path / "journal.db"),
        *args,
    )


def test_a_journal_path_the_forwarder_cannot_create_is_named_with_its_cause(tmp_path):
    run = forwarder(tmp_path, "--journal", "/proc/nope/j.db")
    the_one_line(run, "journal", "--journal", "/proc/nope/j.db", "unable to open database file")


def test_a_journal_path_that_is_a_folder_is_named(tmp_path):
    run = forwarder(tmp_path, "--journal", str(tmp_path))
    the_one_line(run, "journal", str(tmp_path))


def test_a_journal_file_that_is_not_a_database_is_named(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not SQLite" * 100)
    run = forwarder(tmp_path, "--journal", str(junk))
    the_one_line(run, "journal", str(junk), "not a database")


def test_a_forwarder_key_file_it_cannot_read_is_named(tmp_path):
    missing = tmp_path / "forwarder.key_secret"
    run = forwarder(tmp_path, "--curve-secret", str(missing))
    the_one_line(run, "curve_secret", "ZMQFLOW_CURVE_SECRET", str(missing), "missing")


def test_a_forwarder_port_in_use_is_named_with_its_endpoint(tmp_path, taken_port):
    endpoint = f"tcp://127.0.0.1:{taken_port}"
    run = forwarder(tmp_path, "--frontend", endpoint)
    the_one_line(run, "frontend", endpoint, "Address already in use")


def test_a_forwarder_metrics_port_in_use_is_named(tmp_path, taken_port):
    run = forwarder(tmp_path, "--metrics-port", str(taken_port))
    the_one_line(run, "metrics_port", str(taken_port), "Address already in use")


def test_a_worker_key_file_it_cannot_read_is_named(tmp_path):
    server = tmp_path / "forwarder.key"
    server.write_text("not a key file\n")
    secret = tmp_path / "missing.key_secret"
    run = zmqflow(
        "worker",
        "--service",
        "echo",
        "--connect",
        f"tcp://127.0.0.1:{free_port()}",
        "--curve-secret",
        str(secret),
        "--curve-server",
        str(server),
    )
    the_one_line(run, "curve_secret", str(secret), "missing")


def test_a_worker_metrics_port_in_use_is_named(taken_port):
    run = zmqflow(
        "worker",
        "--service",
        "echo",
        "--connect",
        f"tcp://127.0.0.1:{free_port()}",
        "--metrics-port",
        str(taken_port),
    )
    the_one_line(run, "metrics_port", str(taken_port), "Address already in use")


def test_a_client_key_file_it_cannot_read_is_named(tmp_path):
    secret = tmp_path / "client.key_secret"
    secret.write_text('metadata\ncurve\n    public-key = "short"\n')
    server = tmp_path / "forwarder.key"
    run = zmqflow(
        "status",
        "--connect",
        f"tcp://127.0.0.1:{free_port()}",
        "--curve-secret",
        str(secret),
        "--curve-server",
        str(server),
        "--timeout",
        "1",
    )
    the_one_line(run, "curve_secret", str(secret))
