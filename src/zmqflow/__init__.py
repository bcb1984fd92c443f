"""zmqflow: a loss-free ZeroMQ task and event fabric for Airflow and Prefect."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AsyncClient", "Client", "Refused", "TaskRefused", "TaskResult", "__version__"]

if TYPE_CHECKING:
    from zmqflow.client import AsyncClient, Client, Refused, TaskRefused, TaskResult


def __getattr__(name: str) -> Any:
    # The clients load on first use, so that `import zmqflow.healthcheck` (run
    # by every container's healthcheck) does not pay for asyncio and the rest.
    if name in __all__:
        from zmqflow import client

        return getattr(client, name)
    raise AttributeError(f"module 'zmqflow' has no attribute {name!r}")
