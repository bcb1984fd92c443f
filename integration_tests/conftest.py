"""Fixtures for the core tests against the real stack, started from compose.yaml.

Contract: the session-scoped ``stack`` fixture is the fabric alone
(harness.FABRIC_SERVICES) in compose project ``zmqflow-it`` (or
ZMQFLOW_IT_PROJECT) on free host ports, through harness.ComposeProject: up
and healthy before the first test, down with its volumes after the last
(unless ZMQFLOW_IT_KEEP=1). Missing images are built once collection is over.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .harness import FABRIC_SERVICES, ComposeProject, ensure_images

PROJECT = os.environ.get("ZMQFLOW_IT_PROJECT", "zmqflow-it")


def pytest_collection_finish(session: pytest.Session) -> None:
    # Build missing images here, not in the fixture: pytest-timeout counts a
    # fixture's setup against the first test, and a first build takes minutes.
    if session.items and not session.config.option.collectonly:
        ensure_images()


@pytest.fixture(scope="session")
def stack() -> Iterator[ComposeProject]:
    with ComposeProject(PROJECT, FABRIC_SERVICES) as project:
        yield project
