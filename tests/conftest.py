"""Shared fixtures.

Contract: ``fabric`` is a real forwarder-and-workers set on loopback (every
process killed at teardown); ``fake`` is the scripted forwarder of the worker
tests (tests/fabric.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fabric import Fabric, FakeForwarder


@pytest.fixture
def fabric(tmp_path: Path) -> Iterator[Fabric]:
    fab = Fabric(tmp_path)
    try:
        yield fab
    finally:
        fab.stop()


@pytest.fixture
def fake() -> Iterator[FakeForwarder]:
    fwd = FakeForwarder()
    try:
        yield fwd
    finally:
        fwd.close()
