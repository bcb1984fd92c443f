"""The chaos scenarios, shared by integration_tests/test_chaos.py and scripts/chaos.py.

Contract: each scenario restores the stack (one registered replica per
worker service, nothing paused or cut off), runs under continuous load
(``Load``), causes its faults with the docker SDK, measures, and returns a
``ScenarioResult`` whose ``problems()`` lists every broken promise:

- every accepted task completed, none lost, none surfaced twice;
- a dead worker detected (``worker.lost``) within ``liveness`` heartbeat
  intervals of the fault (3 x 1 s by default);
- after a forwarder restart, every worker registered again within 2 s of
  the moment the restarted forwarder first answers ``status``;
- after a worker comes back (restart, unpause, network reconnect), it is
  registered again, and a drained replica (scale down) requeues nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..harness import WORKER_SERVICES, ComposeProject, registered, wait_for
from .load import Load, LoadCounts
from .probes import EventWatcher

LANG = {"worker-python": "python", "worker-rust": "rust"}


@dataclass(frozen=True)
class Targets:
    heartbeat_interval: float = 1.0
    liveness: int = 3
    reregister_after_forwarder_s: float = 2.0
    # Not a promise of the issue, a bound for "it came back at all": a worker
    # that was restarted, unpaused or reconnected registers again within this.
    comeback_s: float = 30.0

    # A silent worker is dead once silent for exactly `liveness` intervals, so a
    # frozen or cut-off worker is detected right at the target: the timings carry
    # the forwarder's loop turn, the docker call's return and, on a loaded 2-core
    # CI machine, process scheduling delay (seen: a few ms idle, more under load).
    resolution_s: float = 0.2

    @property
    def detection_s(self) -> float:
        return self.heartbeat_interval * self.liveness


@dataclass
class Measure:
    fault: str
    peer: str
    detection_s: float | None = None  # fault -> worker.lost; None: not applicable
    recovery_s: float | None = None
    detection_limit: float | None = None
    recovery_limit: float | None = None
    note: str = ""
    resolution_s: float = Targets.resolution_s

    def problems(self) -> list[str]:
        out = []
        if self.detection_limit is not None and not (
            self.detection_s is not None
            and self.detection_s <= self.detection_limit + self.resolution_s
        ):
            out.append(
                f"{self.fault} {self.peer}: detected {_secs(self.detection_s)} "
                f"(target {self.detection_limit:g}s)"
            )
        if self.recovery_limit is not None and not (
            self.recovery_s is not None and self.recovery_s <= self.recovery_limit
        ):
            out.append(
                f"{self.fault} {self.peer}: recovered {_secs(self.recovery_s)} "
                f"(target {self.recovery_limit:g}s)"
            )
        return out


@dataclass
class ScenarioResult:
    name: str
    title: str
    counts: LoadCounts = field(default_factory=LoadCounts)
    measures: list[Measure] = field(default_factory=list)
    extra_problems: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def problems(self) -> list[str]:
        out = [f"{self.name}: {p}" for p in self.counts.problems()]
        out += [f"{self.name}: {p}" for m in self.measures for p in m.problems()]
        out += [f"{self.name}: {p}" for p in self.extra_problems]
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()

    def worst(self, attr: str) -> float | None:
        values = [getattr(m, attr) for m in self.measures if getattr(m, attr) is not None]
        return max(values) if values else None

    def summary(self) -> dict[str, Any]:
        c = self.counts
        return {
            "name": self.name,
            "accepted": c.accepted,
            "completed": c.completed,
            "lost": c.lost,
            "duplicates": c.duplicates,
            "failed": c.failed,
            "redelivered": c.redelivered,
            "faults": len(self.measures),
            "detection_s_max": _round(self.worst("detection_s")),
            "recovery_s_max": _round(self.worst("recovery_s")),
            "elapsed_s": round(self.elapsed_s, 1),
            "ok": self.ok,
            "problems": self.problems(),
        }


def _fmt(value: float | None) -> str:
    return "never" if value is None or math.isinf(value) else f"{value:.2f}"


def _secs(value: float | None) -> str:
    return "never" if value is None or math.isinf(value) else f"in {value:.2f}s"


def _round(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else round(value, 3)


# --------------------------------------------------------------------- helpers
class Run:
    """One scenario's context: the stack, the event watcher, the load, the targets."""

    def __init__(
        self, stack: ComposeProject, watcher: EventWatcher, load: Load, targets: Targets
    ) -> None:
        self.stack = stack
        self.watcher = watcher
        self.load = load
        self.targets = targets

    def victim(self, service: str) -> tuple[Any, str]:
        container = self.stack.containers(service)[0]
        return container, container.attrs["Config"]["Hostname"]

    def wait_holding(self, host: str, timeout: float = 15.0) -> None:
        """Until the worker on ``host`` holds tasks: the fault must hit tasks in flight."""

        def holding() -> bool:
            status = self.stack.status() or {}
            return any(host in w["id"] and w["inflight"] > 0 for w in status.get("workers", []))

        wait_for(holding, timeout, f"the worker on {host} to hold a task", every=0.05)

    def detection(self, host: str, fault_at: float) -> float | None:
        """Seconds from the fault to the forwarder's ``worker.lost`` for ``host``.

        ``fault_at`` is when the docker call causing the fault returned: the
        worker is then surely dead, frozen or cut off (a SIGKILLed worker can be
        detected before that, hence 0)."""
        timeout = self.targets.detection_s + 2 * self.targets.heartbeat_interval + 2
        event = self.watcher.lost(host, fault_at - 1.0, timeout)
        return None if event is None else max(0.0, event.ts - fault_at)

    def comeback(self, host: str, since: float) -> float | None:
        """Seconds from ``since`` until ``host`` announced itself again (``worker.ready``)."""
        event = self.watcher.ready(host, since, self.targets.comeback_s)
        return None if event is None else max(0.0, event.ts - since)

    def settle(self) -> None:
        """Every running replica registered once, and tasks flowing again."""
        self.stack.wait_workers()
        self.load.wait_completed(20)


def restore(stack: ComposeProject) -> None:
    """Back to one running replica of each worker, all registered (between scenarios):
    unpaused, on the network, started."""
    for service in ("forwarder", *WORKER_SERVICES):
        for c in stack.containers(service, running=False):
            c.reload()
            if c.status == "paused":
                c.unpause()
            if stack.network.name not in c.attrs["NetworkSettings"]["Networks"]:
                stack.network.connect(c, aliases=[service])
            if c.status != "running":
                c.start()
    stack.scale(dict.fromkeys(WORKER_SERVICES, 1))
    stack.wait_workers()


def run_scenario(
    name: str,
    title: str,
    stack: ComposeProject,
    watcher: EventWatcher,
    targets: Targets,
    body: Callable[[Run, ScenarioResult], None],
) -> ScenarioResult:
    """Restore the stack, start the load, run ``body``, drain and count."""
    restore(stack)
    result = ScenarioResult(name, title)
    started = time.monotonic()
    load = Load(stack.client_endpoint)
    load.start()
    try:
        run = Run(stack, watcher, load, targets)
        load.wait_completed(20)
        body(run, result)
        run.settle()
    finally:
        result.counts = load.stop()
        result.elapsed_s = time.monotonic() - started
    return result


# ------------------------------------------------------------------- scenarios
def kill_workers(run: Run, result: ScenarioResult, rounds: int = 2) -> None:
    """SIGKILL each worker kind mid-task, ``rounds`` times, and start it again."""
    for _ in range(rounds):
        for service in WORKER_SERVICES:
            container, host = run.victim(service)
            run.wait_holding(host)
            container.kill()  # SIGKILL; marked stopped: no restart policy brings it back
            fault_at = time.time()  # the call returned: the fault is in effect
            detected = run.detection(host, fault_at)
            started_at = time.time()
            container.start()
            result.measures.append(
                Measure(
                    "SIGKILL + start",
                    f"{service} {host}",
                    detected if detected is not None else math.inf,
                    run.comeback(host, started_at),
                    detection_limit=run.targets.detection_s,
                    recovery_limit=run.targets.comeback_s,
                    note="recovery: container start -> worker.ready",
                )
            )
            run.settle()


def restart_forwarder(
    run: Run, result: ScenarioResult, outages: tuple[float, ...] = (1.0, 5.0)
) -> None:
    """SIGKILL the forwarder, start it again after each outage; measure re-registration."""
    stack = run.stack
    for outage in outages:
        hosts = stack.hosts(*WORKER_SERVICES)
        run.wait_holding(next(iter(hosts)))
        forwarder = stack.kill("forwarder")
        time.sleep(outage)  # the fault: how long the forwarder stays down
        forwarder.start()
        wait_for(
            lambda: stack.status(timeout=0.2) is not None,
            run.targets.comeback_s,
            "the restarted forwarder to answer",
            every=0.0,
        )
        answered_at = time.time()
        registered_at = None
        deadline = answered_at + run.targets.comeback_s
        while registered_at is None and time.time() < deadline:
            status = stack.status(timeout=0.5)
            if status is not None and registered(status, hosts):
                registered_at = time.time()
            else:
                time.sleep(0.02)
        recovered = forwarder.logs(tail=200).decode(errors="replace")
        requeued = [line for line in recovered.splitlines() if "unfinished tasks queued" in line]
        result.measures.append(
            Measure(
                f"SIGKILL, down {outage:g}s",
                f"forwarder ({len(hosts)} workers)",
                None,
                None if registered_at is None else registered_at - answered_at,
                recovery_limit=run.targets.reregister_after_forwarder_s,
                note=(requeued[-1].split(": ", 1)[-1] if requeued else "journal: nothing queued")
                + "; recovery: first status answer -> all workers registered",
            )
        )
        run.settle()


def freeze_workers(run: Run, result: ScenarioResult, frozen_s: float | None = None) -> None:
    """`docker pause` each worker kind past the heartbeat deadline, then unpause it."""
    frozen_s = frozen_s or run.targets.detection_s + 2 * run.targets.heartbeat_interval
    for service in WORKER_SERVICES:
        container, host = run.victim(service)
        run.wait_holding(host)
        container.pause()
        fault_at = time.time()  # the call returned: the fault is in effect
        detected = run.detection(host, fault_at)
        time.sleep(max(0.0, fault_at + frozen_s - time.time()))
        thawed_at = time.time()
        container.unpause()
        result.measures.append(
            Measure(
                f"pause {frozen_s:g}s",
                f"{service} {host}",
                detected if detected is not None else math.inf,
                run.comeback(host, thawed_at),
                detection_limit=run.targets.detection_s,
                recovery_limit=run.targets.comeback_s,
                note="recovery: unpause -> worker.ready",
            )
        )
        run.settle()


def cut_workers(run: Run, result: ScenarioResult, cut_s: float | None = None) -> None:
    """Disconnect each worker kind from the compose network, then connect it again
    with its service alias."""
    cut_s = cut_s or run.targets.detection_s + 2 * run.targets.heartbeat_interval
    network = run.stack.network
    for service in WORKER_SERVICES:
        container, host = run.victim(service)
        container.reload()
        aliases = container.attrs["NetworkSettings"]["Networks"][network.name].get("Aliases")
        run.wait_holding(host)
        network.disconnect(container)
        fault_at = time.time()  # the call returned: the fault is in effect
        detected = run.detection(host, fault_at)
        time.sleep(max(0.0, fault_at + cut_s - time.time()))
        joined_at = time.time()
        network.connect(container, aliases=aliases or [service])
        result.measures.append(
            Measure(
                f"network cut {cut_s:g}s",
                f"{service} {host}",
                detected if detected is not None else math.inf,
                run.comeback(host, joined_at),
                detection_limit=run.targets.detection_s,
                recovery_limit=run.targets.comeback_s,
                note="recovery: network connect -> worker.ready",
            )
        )
        run.settle()


def scale_workers(run: Run, result: ScenarioResult, up_to: int = 3, rounds: int = 1) -> None:
    """Scale both worker kinds up and back down under load: new replicas register,
    removed ones drain (SIGTERM) and requeue nothing."""
    stack = run.stack
    for _ in range(rounds):
        before = stack.hosts(*WORKER_SERVICES)
        started_at = time.time()
        stack.scale(dict.fromkeys(WORKER_SERVICES, up_to))
        hosts = stack.hosts(*WORKER_SERVICES)
        stack.wait_workers(hosts)
        added = hosts - before
        result.measures.append(
            Measure(
                f"scale up to {up_to}+{up_to}",
                f"{len(added)} new replicas",
                None,
                time.time() - started_at,
                note="recovery: compose up --scale -> all registered",
            )
        )
        run.load.wait_completed(50)
        requeued = (stack.status() or {}).get("counters", {}).get("requeued", 0)
        lost_before = time.time()
        started_at = time.time()
        stack.scale(dict.fromkeys(WORKER_SERVICES, 1))
        remaining = stack.hosts(*WORKER_SERVICES)
        stack.wait_workers(remaining)
        removed = hosts - remaining
        after = (stack.status() or {}).get("counters", {}).get("requeued", 0)
        left = [h for h in removed if run.watcher.left(h, lost_before, timeout=5) is not None]
        lost = [h for h in removed if run.watcher.lost(h, lost_before, timeout=0) is not None]
        result.measures.append(
            Measure(
                "scale down to 1+1",
                f"{len(removed)} replicas drained",
                None,
                time.time() - started_at,
                note=f"{len(left)} left (drained), {after - requeued} tasks requeued",
            )
        )
        if after != requeued:
            result.extra_problems.append(f"scale down requeued {after - requeued} tasks")
        if lost or len(left) != len(removed):
            result.extra_problems.append(
                f"scale down: {len(left)} of {len(removed)} replicas left drained, "
                f"{len(lost)} were declared lost"
            )


SCENARIOS: dict[str, tuple[str, Callable[..., None]]] = {
    "worker-kill": ("SIGKILL worker containers mid-task and start them again", kill_workers),
    "forwarder-restart": ("SIGKILL the forwarder and start it on its journal", restart_forwarder),
    "worker-freeze": ("docker pause workers past the heartbeat deadline", freeze_workers),
    "network-cut": ("cut workers off the network and reconnect them", cut_workers),
    "scale": ("scale worker replicas up and down under load", scale_workers),
}


def run_named(
    name: str,
    stack: ComposeProject,
    watcher: EventWatcher,
    targets: Targets,
    **options: Any,
) -> ScenarioResult:
    title, body = SCENARIOS[name]
    return run_scenario(
        name, title, stack, watcher, targets, lambda run, result: body(run, result, **options)
    )


# How much of each scenario a run does: CI and `make chaos` run BOUNDED (a
# few minutes in all); `make soak` repeats SOAK rounds until its time is up.
BOUNDED: dict[str, dict[str, Any]] = {
    "worker-kill": {"rounds": 2},
    "forwarder-restart": {"outages": (1.0, 5.0)},
    "worker-freeze": {},
    "network-cut": {},
    "scale": {"rounds": 1},
}
SOAK: dict[str, dict[str, Any]] = {
    "worker-kill": {"rounds": 5},
    "forwarder-restart": {"outages": (0.5, 2.0, 5.0, 10.0)},
    "worker-freeze": {},
    "network-cut": {},
    "scale": {"rounds": 2},
}
