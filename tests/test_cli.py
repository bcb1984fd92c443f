"""The command line as users and scripts meet it: exit codes and messages."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from fabric import Fabric, free_port
from typer.testing import CliRunner

from zmqflow import cli
from zmqflow.settings import ClientSettings, CurvePeerSettings, ForwarderSettings, WorkerSettings


def zmqflow(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zmqflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_bad_setting_from_the_environment_is_named_and_exits_2() -> None:
    run = zmqflow("forwarder", env={"ZMQFLOW_HEARTBEAT_INTERVAL": "soon"})
    assert run.returncode == 2
    assert "heartbeat_interval" in run.stderr and "ZMQFLOW_HEARTBEAT_INTERVAL" in run.stderr


def test_bad_endpoint_option_is_refused_with_exit_2() -> None:
    run = zmqflow("forwarder", "--frontend", "udp://*:1")
    assert run.returncode == 2
    assert "must start with tcp://" in run.stderr


def test_a_journal_of_an_unknown_schema_version_is_named_and_exits_2(tmp_path: Path) -> None:
    journal = tmp_path / "journal.db"
    with sqlite3.connect(journal) as db:
        db.execute("PRAGMA user_version = 999")
    frontend = f"ipc://{tmp_path}/front.sock"
    backend = f"ipc://{tmp_path}/back.sock"
    run = zmqflow(
        "forwarder", "--frontend", frontend, "--backend", backend, "--journal", str(journal)
    )
    assert run.returncode == 2
    assert "cannot open the journal" in run.stderr and "Traceback" not in run.stderr


def test_worker_for_a_service_without_handler_exits_2() -> None:
    run = zmqflow("worker", "--service", "resize")
    assert run.returncode == 2
    assert "no built-in handler for resize" in run.stderr


def test_worker_with_an_unloadable_handler_exits_2() -> None:
    run = zmqflow("worker", "--service", "x", "--handler", "nowhere.at_all:func")
    assert run.returncode == 2
    assert "cannot load handler" in run.stderr


def test_status_exits_1_when_no_forwarder_answers() -> None:
    started = time.monotonic()
    run = zmqflow("status", "--connect", f"tcp://127.0.0.1:{free_port()}", "--timeout", "1")
    assert run.returncode == 1
    assert "no answer" in run.stderr
    assert time.monotonic() - started < 15


def test_health_fails_for_a_stale_or_missing_file(tmp_path: Path) -> None:
    beat = tmp_path / "beat"
    assert zmqflow("health", "--file", str(beat)).returncode == 1
    beat.touch()
    assert zmqflow("health", "--file", str(beat), "--max-age", "5").returncode == 0
    old = time.time() - 60
    os.utime(beat, (old, old))
    assert zmqflow("health", "--file", str(beat), "--max-age", "5").returncode == 1


def test_submit_summary_is_the_last_line_and_counts_every_task(fabric: Fabric) -> None:
    fabric.start_forwarder()
    fabric.start_worker("echo")
    fabric.wait_workers(1)
    run = zmqflow(
        "submit",
        "--connect",
        fabric.frontend,
        "--service",
        "echo",
        "--count",
        "300",
        "--payload-bytes",
        "100",
        "--json",
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    for key in (
        "submitted",
        "completed",
        "failed",
        "lost",
        "duplicates",
        "elapsed_s",
        "throughput_per_s",
        "p50_ms",
        "p99_ms",
    ):
        assert key in summary
    assert summary["submitted"] == summary["completed"] == 300


def test_submit_to_an_unknown_service_reports_refusals_and_exits_1(fabric: Fabric) -> None:
    fabric.start_forwarder()
    run = zmqflow(
        "submit",
        "--connect",
        fabric.frontend,
        "--service",
        "nope",
        "--count",
        "5",
        "--json",
        "--timeout",
        "10",
    )
    assert run.returncode == 1
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["refused"] == 5 and summary["lost"] == 0
    assert any("unknown_service" in e for e in summary["errors"])


def test_published_events_reach_subscribers_with_sequence_numbers(fabric: Fabric) -> None:
    fabric.start_forwarder()
    sub = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zmqflow",
            "subscribe",
            "--connect",
            fabric.events_out,
            "--topic",
            "dev.demo.",
            "--count",
            "3",
            "--timeout",
            "20",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    pub = zmqflow(  # waits until the subscription reached the forwarder (XPUB)
        "publish",
        "--connect",
        fabric.events_in,
        "--kind",
        "demo.hello",
        "--data",
        '{"n": 1}',
        "--count",
        "3",
        "--wait-subscriber",
        "20",
    )
    assert pub.returncode == 0, pub.stderr
    assert json.loads(pub.stdout)["subscribed"] is True
    out, _ = sub.communicate(timeout=30)
    lines = [json.loads(line) for line in out.strip().splitlines()]
    events, summary = lines[:-1], lines[-1]
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert {e["topic"] for e in events} == {"dev.demo.hello"}
    assert summary == {"received": 3, "missed": 0}


def test_publish_rejects_data_that_is_not_a_json_object() -> None:
    run = zmqflow("publish", "--kind", "x", "--data", "[1, 2]")
    assert run.returncode == 2
    assert "JSON object" in run.stderr


def test_healthcheck_probe_answers_for_a_live_forwarder_and_fails_for_none(
    fabric: Fabric, tmp_path: Path
) -> None:
    probe = [sys.executable, "-m", "zmqflow.healthcheck"]
    fabric.start_forwarder()
    alive = subprocess.run([*probe, "forwarder", fabric.frontend], capture_output=True, text=True)
    assert alive.returncode == 0, alive.stderr
    nobody = f"tcp://127.0.0.1:{free_port()}"
    dead = subprocess.run([*probe, "forwarder", nobody, "1"], capture_output=True, text=True)
    assert dead.returncode == 1 and "no answer" in dead.stderr
    beat = tmp_path / "beat"
    beat.touch()
    assert subprocess.run([*probe, "file", str(beat), "5"]).returncode == 0
    assert subprocess.run([*probe, "file", str(tmp_path / "missing")]).returncode == 1


def test_a_forwarder_given_only_frontend_and_backend_binds_no_event_bus(tmp_path: Path) -> None:
    # 5557 and 5558 held on loopback, as a running stack holds them: a forwarder
    # that bound the event bus on tcp://*:5557 by default would die here.
    held = []
    for port in (5557, 5558):
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            pass  # held already (by a running stack): just as good
        held.append(sock)
    frontend = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zmqflow",
            "forwarder",
            "--frontend",
            frontend,
            "--backend",
            f"tcp://127.0.0.1:{free_port()}",
            "--journal",
            ":memory:",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        status = zmqflow("status", "--connect", frontend, "--timeout", "10", "--json")
        assert status.returncode == 0, status.stderr
        assert proc.poll() is None
        listening = _listening_ports(proc.pid)
        assert len(listening) == 2 and not {5557, 5558} & listening, listening
    finally:
        proc.kill()
        proc.wait(timeout=10)
        for sock in held:
            sock.close()


def _listening_ports(pid: int) -> set[int]:
    """TCP ports a process listens on (Linux /proc: its socket inodes in /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# ------------------------------------------- options generated from the settings

# one valid, non-default value per settings field, as typed on a command line
SAMPLES: dict[str, tuple[str, Any]] = {
    "heartbeat_interval": ("0.25", 0.25),
    "heartbeat_liveness": ("7", 7),
    "log_level": ("DEBUG", "DEBUG"),
    "log_format": ("json", "json"),
    "frontend": ("tcp://127.0.0.1:1", ["tcp://127.0.0.1:1"]),
    "backend": ("ipc:///tmp/zf-b.sock", ["ipc:///tmp/zf-b.sock"]),
    "events_in": ("tcp://127.0.0.1:3", ["tcp://127.0.0.1:3"]),
    "events_out": ("tcp://127.0.0.1:4", ["tcp://127.0.0.1:4"]),
    "journal": (":memory:", ":memory:"),
    "streams": ("tcp://127.0.0.1:9", ["tcp://127.0.0.1:9"]),
    "streams_store": ("/tmp/zf-streams.db", "/tmp/zf-streams.db"),
    "streams_sync": ("normal", "normal"),
    "stream": ("orders=orders.", ["orders=orders."]),
    "stream_max_age_s": ("60.5", 60.5),
    "stream_max_events": ("100", 100),
    "stream_max_bytes": ("4096", 4096),
    "stream_dedup_window_s": ("30", 30.0),
    "stream_max_event_bytes": ("2048", 2048),
    "journal_sync": ("normal", "normal"),
    "journal_defer_ms": ("3.5", 3.5),
    "env": ("prod", "prod"),
    "max_retries": ("9", 9),
    "max_queue": ("11", 11),
    "max_queue_bytes": ("4096", 4096),
    "max_payload_bytes": ("2048", 2048),
    "max_batch": ("13", 13),
    "result_ttl_s": ("60", 60.0),
    "metrics_port": ("9999", 9999),
    "curve_secret": ("/keys/forwarder.key_secret", "/keys/forwarder.key_secret"),
    "allow_clients": ("/keys/clients", "/keys/clients"),
    "allow_workers": ("/keys/workers", "/keys/workers"),
    "insecure": ("true", True),  # a flag on the command line: --insecure
    "max_message_bytes": ("200000", 200000),
    "curve_server": ("/keys/forwarder.key", "/keys/forwarder.key"),
    "connect": ("tcp://127.0.0.1:9", "tcp://127.0.0.1:9"),
    "service": ("resize", ["resize"]),
    "handler": ("pkg.mod:func", ["pkg.mod:func"]),
    "concurrency": ("3", 3),
    "credit": ("5", 5),
    "health_file": ("/tmp/beat", "/tmp/beat"),
    "worker_id": ("w-1", "w-1"),
}
MODELS = {
    "forwarder": ForwarderSettings,
    "worker": WorkerSettings,
    "submit": ClientSettings,
    "status": ClientSettings,
    "dead-letters": ClientSettings,
    "publish": CurvePeerSettings,
    "subscribe": CurvePeerSettings,
}


@pytest.mark.parametrize("command", sorted(MODELS))
def test_every_setting_has_its_option_on_the_command(command: str) -> None:
    click_command = typer.main.get_command(cli.app).commands[command]  # type: ignore[attr-defined]
    options = {opt for param in click_command.params for opt in param.opts}

    for name in MODELS[command].model_fields:
        assert "--" + name.replace("_", "-") in options, name


@pytest.mark.parametrize("model", [ForwarderSettings, WorkerSettings, ClientSettings])
def test_every_option_reaches_its_setting(model: type[Any]) -> None:
    seen: list[Any] = []
    app = typer.Typer()
    app.command()(cli.settings_options(model)(lambda settings: seen.append(settings)))
    args = []
    for name, field in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        args += [flag] if field.annotation is bool else [flag, SAMPLES[name][0]]

    run = CliRunner().invoke(app, args, env={})

    assert run.exit_code == 0, run.output
    assert {n: getattr(seen[0], n) for n in model.model_fields} == {
        n: SAMPLES[n][1] for n in model.model_fields
    }


@pytest.mark.parametrize("model", [ForwarderSettings, WorkerSettings, ClientSettings])
def test_every_setting_reads_its_zmqflow_variable(
    model: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in model.model_fields:
        monkeypatch.setenv(f"ZMQFLOW_{name.upper()}", SAMPLES[name][0])

    settings = model()

    assert {n: getattr(settings, n) for n in model.model_fields} == {
        n: SAMPLES[n][1] for n in model.model_fields
    }


def test_a_generated_option_is_validated_by_the_model_and_named() -> None:
    run = zmqflow("forwarder", "--max-batch", "0")
    assert run.returncode == 2
    assert "max_batch" in run.stderr and "ZMQFLOW_MAX_BATCH" in run.stderr
