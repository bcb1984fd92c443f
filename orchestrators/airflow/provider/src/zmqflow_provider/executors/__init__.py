"""ZmqflowExecutor: Airflow task instances run on zmqflow worker replicas.

Contract: ``ZmqflowExecutor`` (module ``executor``) is the Airflow 3.3
executor; ``settings``, ``routing`` and ``fabric`` import nothing from
Airflow (the host's fast tests run them against a real forwarder), and
``worker`` holds the handler the worker-airflow replicas run
(``zmqflow worker --handler zmqflow_provider.executors.worker:run_workload``).
Importing this package imports Airflow only when ``ZmqflowExecutor`` is asked
for, so ``AIRFLOW__CORE__EXECUTOR=zmqflow_provider.executors.ZmqflowExecutor``
works and the pure modules stay light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ZmqflowExecutor"]


def __getattr__(name: str) -> Any:
    if name == "ZmqflowExecutor":
        from zmqflow_provider.executors.executor import ZmqflowExecutor

        return ZmqflowExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
