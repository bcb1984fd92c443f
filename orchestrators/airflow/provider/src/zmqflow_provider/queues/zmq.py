"""The `zmq` scheme for common-messaging's MessageQueueTrigger.

Contract: ``MessageQueueTrigger(scheme="zmq", kind=..., zmqflow_conn_id=...,
env=..., prefix=...)`` builds a ``ZmqflowEventTrigger`` with those keyword
arguments, so an AssetWatcher schedules a DAG on events ``<env>.<kind>``
from the zmqflow bus. Registered through get_provider_info's ``queues``.
"""

from __future__ import annotations

from airflow.providers.common.messaging.providers.base_provider import BaseMessageQueueProvider
from airflow.triggers.base import BaseEventTrigger

from zmqflow_provider.triggers.zmqflow import ZmqflowEventTrigger


class ZmqMessageQueueProvider(BaseMessageQueueProvider):
    scheme = "zmq"

    def trigger_class(self) -> type[BaseEventTrigger]:
        return ZmqflowEventTrigger
