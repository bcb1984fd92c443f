"""Clients: submit tasks to a forwarder and collect their answers.

``session`` holds the protocol state without sockets; ``blocking.Client``
and ``aio.AsyncClient`` drive it over a DEALER socket.
"""

from zmqflow.client.aio import AsyncClient
from zmqflow.client.blocking import Client, ForwarderUnreachable
from zmqflow.client.session import Refused, TaskResult

__all__ = ["AsyncClient", "Client", "ForwarderUnreachable", "Refused", "TaskResult"]
