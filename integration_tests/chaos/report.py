"""The chaos report.

Contract: a rich table per scenario, a summary table, the problems, and as the
last line one plain JSON object (``summary``) for scripts to read.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from .load import LoadCounts
from .scenarios import ScenarioResult, _fmt


def scenario_table(result: ScenarioResult) -> Table:
    c = result.counts
    verdict = "[green]ok[/]" if result.ok else "[red]FAILED[/]"
    table = Table(
        "fault",
        "peer",
        "detection s",
        "recovery s",
        "note",
        title=f"{result.name}: {result.title} ({verdict}, {result.elapsed_s:.0f}s)",
        caption=(
            f"accepted {c.accepted}  completed {c.completed}  lost {c.lost}  "
            f"duplicates {c.duplicates}  failed {c.failed}  "
            f"(redelivered and dropped by the client: {c.redelivered}; "
            f"answers by language: {c.by_language})"
        ),
        title_justify="left",
    )
    for m in result.measures:
        bad = bool(m.problems())
        table.add_row(
            m.fault,
            m.peer,
            "-" if m.detection_s is None else _limit(m.detection_s, m.detection_limit),
            "-" if m.recovery_s is None else _limit(m.recovery_s, m.recovery_limit),
            m.note,
            style="red" if bad else None,
        )
    return table


def _limit(value: float, limit: float | None) -> str:
    text = _fmt(value)
    return text if limit is None else f"{text} (≤ {limit:g})"


def summary_table(results: list[ScenarioResult]) -> Table:
    table = Table(
        "scenario",
        "accepted",
        "completed",
        "lost",
        "duplicates",
        "detection s (max)",
        "recovery s (max)",
        "result",
        title="chaos summary",
        title_justify="left",
    )
    for r in results:
        c = r.counts
        table.add_row(
            r.name,
            str(c.accepted),
            str(c.completed),
            str(c.lost),
            str(c.duplicates),
            _fmt(r.worst("detection_s")) if r.worst("detection_s") is not None else "-",
            _fmt(r.worst("recovery_s")) if r.worst("recovery_s") is not None else "-",
            "[green]ok[/]" if r.ok else "[red]FAILED[/]",
        )
    return table


def summary(results: list[ScenarioResult], elapsed_s: float, **extra: Any) -> dict[str, Any]:
    total = LoadCounts()
    for r in results:
        total.add(r.counts)
    problems = [p for r in results for p in r.problems()]
    return {
        "scenarios": [r.summary() for r in results],
        "accepted": total.accepted,
        "completed": total.completed,
        "lost": total.lost,
        "duplicates": total.duplicates,
        "failed": total.failed,
        "faults": sum(len(r.measures) for r in results),
        "ok": not problems,
        "problems": problems,
        "elapsed_s": round(elapsed_s, 1),
        **extra,
    }


def print_report(
    console: Console, results: list[ScenarioResult], line: dict[str, Any], tables: bool = True
) -> None:
    """Tables per scenario (unless already printed), the summary, problems, the JSON line."""
    if tables:
        for result in results:
            console.print(scenario_table(result))
    console.print(summary_table(results))
    for problem in line["problems"]:
        console.print(f"[red]problem:[/] {problem}")
    print(json.dumps(line), flush=True)  # the last line: plain JSON, no markup
