"""prefect-zmqflow: run zmqflow services from Prefect 3 flows.

Contract: the public names are the block ``ZmqflowCredentials`` (registered
with ``prefect block register -m prefect_zmqflow``), the task
``submit_batch`` (one Prefect task per batch of items), ``ItemAnswer`` and
the errors, and ``ZmqflowTaskRunner`` (a flow's own tasks on zmqflow worker
replicas, whose handler is ``prefect_zmqflow.replica:run_task_run``). The
event bridge runs as ``python -m prefect_zmqflow.bridge``.
"""

from prefect_zmqflow.batch import ItemAnswer, run_batch
from prefect_zmqflow.credentials import ZmqflowCredentials
from prefect_zmqflow.errors import (
    BatchFailedError,
    BatchRefusedError,
    ForwarderUnreachableError,
    UnknownServiceError,
    ZmqflowError,
)
from prefect_zmqflow.task_runners import (
    PayloadTooLargeError,
    PrefectZmqflowFuture,
    ZmqflowTaskRunner,
)
from prefect_zmqflow.tasks import submit_batch

__all__ = [
    "BatchFailedError",
    "BatchRefusedError",
    "ForwarderUnreachableError",
    "ItemAnswer",
    "PayloadTooLargeError",
    "PrefectZmqflowFuture",
    "UnknownServiceError",
    "ZmqflowCredentials",
    "ZmqflowError",
    "ZmqflowTaskRunner",
    "run_batch",
    "submit_batch",
]
