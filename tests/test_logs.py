"""Log lines of every zmqflow program: the shared JSON line, or text (zmqflow.logs)."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys

import pytest
from fabric import clean_env

from zmqflow import logs


def _format(fmt: str, record: logging.LogRecord) -> str:
    handler_formatter = (
        logs.JsonLineFormatter() if fmt == "json" else logging.Formatter(logs.TEXT_FORMAT)
    )
    return handler_formatter.format(record)


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("zmqflow.forwarder", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_a_json_line_has_the_shared_keys_and_the_context_given() -> None:
    record = _record(
        "worker %s ready",
        "w1",
        event="worker.ready",
        worker_id="w1",
        language="python",
        unrelated="not written",
    )
    line = json.loads(_format("json", record))
    assert line == {
        "ts": line["ts"],
        "level": "INFO",
        "logger": "zmqflow.forwarder",
        "message": "worker w1 ready",
        "event": "worker.ready",
        "worker_id": "w1",
        "language": "python",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])


def test_fields_leaves_out_unknown_context() -> None:
    assert logs.fields(task_id="t1", service=None) == {"task_id": "t1"}


def test_an_exception_goes_into_the_json_line() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        record = logging.LogRecord(
            "zmqflow.worker", logging.ERROR, __file__, 1, "boom", (), sys.exc_info()
        )
    line = json.loads(_format("json", record))
    assert line["level"] == "ERROR" and "ValueError: bad" in line["exc_info"]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_the_worker_logs_in_the_format_asked_for(fmt: str) -> None:
    """Its first line (it starts; no forwarder needed) in the format asked for."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zmqflow",
            "worker",
            "--connect",
            "tcp://127.0.0.1:1",
            "--service",
            "echo",
            "--worker-id",
            "w-logs",
            "--log-format",
            fmt,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
    finally:
        proc.kill()
        proc.wait(timeout=30)
    if fmt == "json":
        line = json.loads(first)
        assert line["logger"] == "zmqflow.worker" and line["level"] == "INFO"
        assert (line["event"], line["worker_id"], line["language"]) == (
            "worker.start",
            "w-logs",
            "python",
        )
    else:
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO zmqflow\.worker: ", first)


def test_a_bad_log_format_is_refused_plainly() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "zmqflow", "status", "--log-format", "xml"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert run.returncode == 2 and "log_format" in run.stderr
