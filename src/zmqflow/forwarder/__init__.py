"""The forwarder: a ZeroMQ device that journals, routes and tracks tasks.

``device`` owns the sockets and the loop; ``broker`` routes each message,
without sockets, to the module that owns its rule: ``tasks`` (the task
table), ``admission``, ``deferral`` (journaling late), ``aliases`` (stored
answers, COLLECT, RETRY), ``workers`` (liveness), ``completion`` and
``status`` (the snapshot behind STATUS and the metrics), each a mixin over
the tables of ``state`` (``entries``: a task's and a worker's record);
``outbox`` groups replies per destination; ``metrics`` exports Prometheus
figures from the snapshot.
"""

from zmqflow.forwarder.broker import Broker, Limits
from zmqflow.forwarder.device import Forwarder

__all__ = ["Broker", "Forwarder", "Limits"]
