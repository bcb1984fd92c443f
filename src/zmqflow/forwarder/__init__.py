"""The forwarder: a ZeroMQ device that journals, routes and tracks tasks.

``broker`` holds the tables and the routing rules without sockets;
``device`` owns the sockets and the loop; ``metrics`` exports Prometheus
figures.
"""

from zmqflow.forwarder.broker import Broker, Limits
from zmqflow.forwarder.device import Forwarder

__all__ = ["Broker", "Forwarder", "Limits"]
