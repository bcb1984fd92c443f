"""Bad input from an authenticated peer never hurts anyone else (issue 13).

A rogue client holding a valid client key floods the forwarder with random and
malformed multipart messages (tests/security_fabric.py ``rogue_message``: noise
frames, any command byte, random msgpack bodies, SUBMITs whose items are nearly
right, wrong signatures; fixed seed) from its own process, while a legitimate
client runs tasks through a worker: the forwarder stays up, counts what it
refused, and every legitimate task completes within its timeout. The same from
a rogue holding a valid worker key on the backend: it is never registered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fabric import wait_for
from security_fabric import Keys, SecureFabric

ROGUE_MESSAGES = 100_000
LEGIT_TASKS = 2_000
TASK_TIMEOUT_S = 60.0
TESTS = Path(__file__).resolve().parent


@pytest.fixture
def secure(tmp_path: Path) -> Iterator[SecureFabric]:
    fab = SecureFabric(tmp_path, Keys(tmp_path / "keys"))
    try:
        yield fab
    finally:
        fab.stop()


def start_rogue(
    fab: SecureFabric, seed: int, count: int, worker: bool = False
) -> subprocess.Popen[str]:
    keys = fab.keys
    endpoint, key = (fab.backend, "worker") if worker else (fab.frontend, "client")
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
        "from security_fabric import run_rogue; "
        f"run_rogue({endpoint!r}, {str(keys.secret(key))!r}, "
        f"{str(keys.public('forwarder'))!r}, {seed}, {count}, worker={worker})"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_rogue_client_flooding_malformed_messages_hurts_no_legitimate_task(
    secure: SecureFabric,
) -> None:
    forwarder = secure.start_secure_forwarder()
    secure.start_keyed_worker("worker", "echo")
    secure.wait_workers(1)
    rogue = start_rogue(secure, seed=20261130, count=ROGUE_MESSAGES)
    try:
        wait_for(
            lambda: secure.status(10)["counters"]["malformed"] >= 1_000,
            "the rogue's messages to reach the forwarder",
            timeout=60,
        )
        payloads = [b"legit-%d" % n for n in range(LEGIT_TASKS)]
        with secure.client(timeout=TASK_TIMEOUT_S) as client:
            ids = client.submit_many("echo", payloads)  # all 2,000 in flight at once
            results = {r.task_id: r for r in client.as_completed(TASK_TIMEOUT_S)}
            malformed_meanwhile = client.status(10)["counters"]["malformed"]
        assert rogue.poll() is None or malformed_meanwhile > 1_000  # it flooded meanwhile
        out, err = rogue.communicate(timeout=300)
    finally:
        if rogue.poll() is None:
            rogue.kill()
            rogue.wait()

    assert rogue.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"sent": ROGUE_MESSAGES}
    assert sorted(results) == sorted(ids)
    assert all(r.ok for r in results.values())
    assert [results[i].payload for i in ids] == payloads
    assert max(r.latency_s for r in results.values()) < TASK_TIMEOUT_S

    # the forwarder goes through the whole flood, refusing and counting, and stays up
    wait_for(
        lambda: secure.status(10)["counters"]["malformed"] >= 0.9 * ROGUE_MESSAGES,
        "the forwarder to count the rogue's messages as malformed",
        timeout=300,
    )
    counters = secure.status(10)["counters"]
    assert counters["accepted"] == LEGIT_TASKS  # nothing of the rogue's was taken as a task
    assert counters["completed"] == LEGIT_TASKS
    assert forwarder.poll() is None
    assert "Traceback" not in secure.log("forwarder")


def test_a_rogue_worker_sending_malformed_messages_hurts_no_task_and_is_never_registered(
    secure: SecureFabric,
) -> None:
    forwarder = secure.start_secure_forwarder()
    honest = secure.start_keyed_worker("worker", "echo")
    secure.wait_workers(1)
    rogue = start_rogue(secure, seed=7, count=20_000, worker=True)  # holds a valid worker key
    try:
        payloads = [b"legit-%d" % n for n in range(500)]
        with secure.client(timeout=TASK_TIMEOUT_S) as client:
            results = client.map("echo", payloads, timeout=TASK_TIMEOUT_S)
        out, err = rogue.communicate(timeout=300)
        assert json.loads(out.strip().splitlines()[-1]) == {"sent": 20_000}
    finally:
        if rogue.poll() is None:
            rogue.kill()
            rogue.wait()
    assert rogue.returncode == 0, err
    assert [r.payload for r in results] == payloads
    assert max(r.latency_s for r in results) < TASK_TIMEOUT_S
    wait_for(
        lambda: secure.status(10)["counters"]["malformed"] >= 10_000,
        "the forwarder to count the rogue worker's messages as malformed",
        timeout=300,
    )
    info = secure.status(10)
    assert [w["pid"] for w in info["workers"]] == [honest.pid]
    assert forwarder.poll() is None
    assert "Traceback" not in secure.log("forwarder")
