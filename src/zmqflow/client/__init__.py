"""Clients: submit tasks to a forwarder and collect their answers.

``session`` holds the protocol state without sockets, ``core`` every client
operation without sockets (pump, reconnect, resync, result bookkeeping);
``blocking.Client`` and ``aio.AsyncClient`` serve the core's I/O over a
DEALER socket, one with blocking calls, one with awaits.
"""

from zmqflow.client.aio import AsyncClient
from zmqflow.client.blocking import Client
from zmqflow.client.core import ForwarderRefused, ForwarderUnreachable
from zmqflow.client.session import Refused, TaskRefused, TaskResult
from zmqflow.security.peer import CurveKeys

__all__ = [
    "AsyncClient",
    "Client",
    "CurveKeys",
    "ForwarderRefused",
    "ForwarderUnreachable",
    "Refused",
    "TaskRefused",
    "TaskResult",
]
