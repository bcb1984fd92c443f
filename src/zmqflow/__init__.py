"""zmqflow: a loss-free ZeroMQ task and event fabric for Airflow and Prefect."""

__version__ = "0.1.0"

from zmqflow.client import AsyncClient, Client, Refused, TaskResult

__all__ = ["AsyncClient", "Client", "Refused", "TaskResult", "__version__"]
