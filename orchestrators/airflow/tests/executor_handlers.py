"""Handlers for the executor tests' workers (imported by `zmqflow worker --handler`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any


def slow_echo(payload: bytes, headers: Mapping[str, Any] | None = None) -> bytes:
    """Hold the workload a while (a task that runs), then answer with it."""
    time.sleep(1.5)
    return payload
