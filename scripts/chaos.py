"""`make chaos` / `make soak`: the chaos suite against a fresh stack, with a report.

Starts compose.yaml under its own project (free host ports), runs every
scenario of integration_tests/chaos under continuous load, prints a table per
scenario and a summary, and as its last line one JSON object (scenarios,
accepted, completed, lost, duplicates, ok, problems). Exits 1 if any task was
lost or surfaced twice, or a target was missed. The pytest suite
(integration_tests/test_chaos.py) runs the same code, bounded.

    scripts/chaos.sh [--soak] [--minutes M] [--only NAME]... [--keep]
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from integration_tests.chaos import (
    SCENARIOS,
    EventWatcher,
    ScenarioResult,
    Targets,
    print_report,
    run_named,
    summary,
)
from integration_tests.chaos.report import scenario_table
from integration_tests.chaos.scenarios import BOUNDED, SOAK
from integration_tests.harness import FABRIC_SERVICES, ComposeProject

app = typer.Typer(add_completion=False)


@app.command()
def main(
    soak: Annotated[bool, typer.Option(help="repeat the scenarios until --minutes pass")] = False,
    minutes: Annotated[
        float, typer.Option(envvar="SOAK_MINUTES", help="soak duration in minutes")
    ] = 10.0,
    only: Annotated[
        list[str] | None, typer.Option(help=f"scenario to run; repeatable: {', '.join(SCENARIOS)}")
    ] = None,
    keep: Annotated[bool, typer.Option(help="leave the stack running afterwards")] = False,
    project: Annotated[str, typer.Option(help="compose project name")] = "zmqflow-chaos",
) -> None:
    """Kill, restart, freeze, cut off and scale peers under load; a table per scenario."""
    names = only or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise typer.BadParameter(f"unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
    console = Console(width=None if sys.stdout.isatty() else 150)
    started = time.monotonic()
    stack = ComposeProject(project, FABRIC_SERVICES)
    targets = Targets(heartbeat_interval=stack.heartbeat_interval)
    results: list[ScenarioResult] = []
    console.print(f"[bold]chaos[/]: starting a fresh stack (project {project})")
    try:
        stack.up()
        stack.wait_workers()
    except Exception as exc:  # still end with the JSON line
        traceback.print_exc()
        line = summary([], time.monotonic() - started, mode="soak" if soak else "bounded")
        line.update(ok=False, problems=[f"the stack did not start: {type(exc).__name__}: {exc}"])
        print_report(console, [], line)
        raise typer.Exit(1) from None
    console.print(f"stack up in {time.monotonic() - started:.0f}s; scenarios: {', '.join(names)}")
    rounds = 0
    try:
        with EventWatcher(stack.events_out, stack.events_in, stack.env_name) as watcher:
            options = SOAK if soak else BOUNDED
            until = started + minutes * 60
            while True:
                rounds += 1
                for name in names:
                    result = _run(name, stack, watcher, targets, options[name])
                    results.append(result)
                    console.print(scenario_table(result))
                if not soak or time.monotonic() >= until:
                    break
    finally:
        if not keep:
            stack.down()
    line = summary(
        results,
        time.monotonic() - started,
        mode="soak" if soak else "bounded",
        rounds=rounds,
        heartbeat_interval_s=targets.heartbeat_interval,
    )
    print_report(console, results, line, tables=False)  # tables came as they finished
    raise typer.Exit(0 if line["ok"] else 1)


def _run(
    name: str, stack: ComposeProject, watcher: EventWatcher, targets: Targets, options: dict
) -> ScenarioResult:
    try:
        return run_named(name, stack, watcher, targets, **options)
    except Exception as exc:  # a scenario that could not finish is a failed one
        traceback.print_exc()
        result = ScenarioResult(name, SCENARIOS[name][0])
        result.extra_problems.append(f"did not finish: {type(exc).__name__}: {exc}")
        return result


if __name__ == "__main__":
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    app()
