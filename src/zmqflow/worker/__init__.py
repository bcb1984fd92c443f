"""The Python worker: serve tasks from a forwarder with handler functions.

``core.WorkerCore`` holds the worker's protocol state without sockets (tasks
running, answers held and unconfirmed, the READY); ``runtime.Worker`` is
the I/O shell around it (sockets, the poll loop, handler threads). Their
connection rules are zmqflow.connection's, the clients' too. Everything is
importable from ``zmqflow.worker`` as before.
"""

from zmqflow.worker.core import Answer, Item, WorkerCore
from zmqflow.worker.runtime import (
    ForwarderRefused,
    ForwarderSilent,
    Handler,
    Worker,
    load_handler,
    resolve_handlers,
    run_in_thread,
)

__all__ = [
    "Answer",
    "ForwarderRefused",
    "ForwarderSilent",
    "Handler",
    "Item",
    "Worker",
    "WorkerCore",
    "load_handler",
    "resolve_handlers",
    "run_in_thread",
]
