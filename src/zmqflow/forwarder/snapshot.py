"""The broker's numbers at one moment (made by status.py, read by STATUS and metrics).

Contract: plain copies, no reference into the broker's tables: a
``Snapshot`` may be read on another thread while the loop goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class WorkerView:
    id: str
    language: str
    services: list[str]
    credit: int
    inflight: int
    last_heartbeat_s: float
    host: str
    pid: int
    version: str


@dataclass(slots=True)
class Snapshot:
    forwarder: dict[str, Any]  # id, version, env, uptime_s, journal
    workers: list[WorkerView]
    services: list[str]  # every service a worker ever offered, sorted
    queues: dict[str, int]  # queued tasks per service
    inflight_by_service: dict[str, int]
    unjournaled: int  # held, not yet acknowledged
    counters: dict[str, int]
    heartbeat_misses: int
