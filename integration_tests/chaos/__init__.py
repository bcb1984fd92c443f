"""The chaos suite, one implementation for `make chaos`/`make soak` (scripts/chaos.py)
and the bounded CI run (integration_tests/test_chaos.py)."""

from .load import Load, LoadCounts
from .probes import EventWatcher
from .report import print_report, summary
from .scenarios import SCENARIOS, ScenarioResult, Targets, run_named
from .stack import ChaosStack

__all__ = [
    "SCENARIOS",
    "ChaosStack",
    "EventWatcher",
    "Load",
    "LoadCounts",
    "ScenarioResult",
    "Targets",
    "print_report",
    "run_named",
    "summary",
]
