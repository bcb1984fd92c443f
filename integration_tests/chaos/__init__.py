"""The chaos suite, one implementation for `make chaos`/`make soak` (scripts/chaos.py)
and the bounded CI run (integration_tests/test_chaos.py).

Contract: scenarios run against an integration_tests.harness.ComposeProject
of the fabric; ``run_named`` runs one under load and returns what it counted
and measured; ``report`` turns results into tables and one JSON line.
"""

from .load import Load, LoadCounts
from .probes import EventWatcher
from .report import print_report, summary
from .scenarios import SCENARIOS, ScenarioResult, Targets, run_named

__all__ = [
    "SCENARIOS",
    "EventWatcher",
    "Load",
    "LoadCounts",
    "ScenarioResult",
    "Targets",
    "print_report",
    "run_named",
    "summary",
]
