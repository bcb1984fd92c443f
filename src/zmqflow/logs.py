"""Logging set-up of every zmqflow program: plain text, or one JSON object per line.

Contract: ``setup(level, fmt)`` sends the root logger's records to stderr,
as text (``2026-11-30 08:15:02,123 INFO zmqflow.forwarder: ...``) or, with
``fmt="json"``, as the JSON line shared with the Rust worker::

    {"ts": "2026-11-30T08:15:02.123Z", "level": "INFO", "logger": "zmqflow.forwarder",
     "message": "...", "event": "worker.ready", "worker_id": "py-...", "language": "python"}

``ts`` is UTC with milliseconds; ``event``, ``task_id``, ``service``,
``worker_id`` and ``language`` appear when the log call passes them in
``extra=`` (``fields(...)`` builds that dict, leaving out unknown values);
other extras are not written, so every line has the same small set of keys.
A record with an exception also carries ``exc_info`` (the traceback text).
python-json-logger does the JSON; this module only names the keys.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal

from pythonjsonlogger.json import JsonFormatter

#: the optional keys of a JSON line, given through ``extra=``
CONTEXT_KEYS = ("event", "task_id", "service", "worker_id", "language")
_KEYS = frozenset(("ts", "level", "logger", "message", *CONTEXT_KEYS, "exc_info", "stack_info"))
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLineFormatter(JsonFormatter):
    """The shared JSON line: ts (UTC, ms, Z), level, logger, message, context keys."""

    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"},
            json_ensure_ascii=False,
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in log_data.items() if k in _KEYS and v is not None}


def fields(**context: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the context keys given, without the unknown (None) ones."""
    return {k: v for k, v in context.items() if v is not None}


def setup(level: str = "INFO", fmt: Literal["text", "json"] | str = "text") -> None:
    """Log to stderr at ``level``, as text or JSON lines (replaces earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
