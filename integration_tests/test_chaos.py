"""Chaos under load, against a fresh stack of its own (project zmqflow-chaos-it).

Each test runs one scenario of integration_tests/chaos (the code `make chaos`
runs too) under continuous load from a client on the host that counts every
task, in the bounded form CI affords, and asserts the promises:

- every accepted task completed, none lost, none surfaced twice;
- a dead worker is detected (`worker.lost`) within three heartbeat intervals;
- after a forwarder restart, every worker is registered again within 2 s of
  the restarted forwarder's first `status` answer;
- a worker that comes back registers again; a drained replica requeues nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .chaos import EventWatcher, ScenarioResult, Targets, run_named
from .chaos.report import scenario_table
from .chaos.scenarios import BOUNDED
from .harness import FABRIC_SERVICES, ComposeProject

PROJECT = "zmqflow-chaos-it"
Chaos = tuple[ComposeProject, EventWatcher, Targets]


@pytest.fixture(scope="module")
def chaos() -> Iterator[Chaos]:
    with ComposeProject(PROJECT, FABRIC_SERVICES) as stack:
        stack.wait_workers()
        with EventWatcher(stack.events_out, stack.events_in, stack.env_name) as watcher:
            yield stack, watcher, Targets(heartbeat_interval=stack.heartbeat_interval)


def _run(name: str, chaos: Chaos) -> ScenarioResult:
    stack, watcher, targets = chaos
    result = run_named(name, stack, watcher, targets, **BOUNDED[name])
    from rich.console import Console

    Console(width=160).print(scenario_table(result))  # shown with -s or on failure
    return result


def _assert_promises_kept(result: ScenarioResult) -> None:
    c = result.counts
    assert c.accepted > 0, "no load ran"
    assert c.lost == 0, result.problems()
    assert c.duplicates == 0, result.problems()
    assert c.completed == c.accepted, result.problems()
    assert not result.problems(), result.problems()


def test_sigkilled_python_and_rust_workers_lose_no_task_and_are_detected_within_3_heartbeats(
    chaos: Chaos,
) -> None:
    result = _run("worker-kill", chaos)
    assert len(result.measures) == 2 * BOUNDED["worker-kill"]["rounds"]
    _assert_promises_kept(result)


def test_forwarder_sigkill_and_restart_requeues_its_journal_and_workers_reregister_within_2s(
    chaos: Chaos,
) -> None:
    result = _run("forwarder-restart", chaos)
    assert len(result.measures) == len(BOUNDED["forwarder-restart"]["outages"])
    _assert_promises_kept(result)


def test_paused_workers_are_declared_dead_within_3_heartbeats_and_their_late_answers_surface_once(
    chaos: Chaos,
) -> None:
    result = _run("worker-freeze", chaos)
    _assert_promises_kept(result)


def test_workers_cut_off_the_network_are_detected_and_register_again_when_reconnected(
    chaos: Chaos,
) -> None:
    result = _run("network-cut", chaos)
    _assert_promises_kept(result)


def test_scaling_python_and_rust_replicas_up_and_down_under_load_loses_and_requeues_nothing(
    chaos: Chaos,
) -> None:
    result = _run("scale", chaos)
    _assert_promises_kept(result)
