"""ZmqflowHook: the `zmqflow` connection type and clients built from it.

Contract: a `zmqflow` connection names the forwarder's client endpoint
(``frontend``), the event bus endpoints (``events_in`` to publish,
``events_out`` to subscribe), each tcp:// or ipc://, and the environment
``env`` that scopes event topics (``<env>.<kind>``). CurveZMQ key fields are
validated (Z85, 40 characters) but not applied yet: they are reserved for
the security work. ``endpoints()`` / ``aendpoints()`` parse the connection
once (the async form is for triggers, which have no ORM access);
``client()`` / ``async_client()`` return zmqflow clients; ``publish()``
sends one event. A connection that does not parse fails with a message
naming the connection and the field.
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import zmq
from airflow.exceptions import AirflowException
from airflow.sdk.bases.hook import BaseHook
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from zmqflow import events
from zmqflow.client import AsyncClient, Client

FIELDS = ("frontend", "events_in", "events_out", "env")
KEY_FIELDS = ("curve_server_public_key", "curve_public_key", "curve_secret_key")


class ZmqflowEndpoints(BaseModel):
    """What a `zmqflow` connection says, checked."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    frontend: str = "tcp://forwarder:5555"
    events_in: str = "tcp://forwarder:5557"
    events_out: str = "tcp://forwarder:5558"
    env: str = "dev"
    curve_server_public_key: str | None = None
    curve_public_key: str | None = None
    curve_secret_key: str | None = None

    @field_validator("frontend", "events_in", "events_out")
    @classmethod
    def _transport(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("tcp://") and ":" in value[6:]:
            return value
        if value.startswith("ipc://") and len(value) > 6:
            # the kernel's limit on a socket path (sun_path, 108 bytes with the NUL)
            if len(value[6:].encode()) > 107:
                raise ValueError("ipc socket path is longer than 107 bytes")
            return value
        raise ValueError(f"{value!r} is not tcp://HOST:PORT or ipc:///path")

    @field_validator("env")
    @classmethod
    def _env(cls, value: str) -> str:
        if not value or "." in value:
            raise ValueError("env must be non-empty and without dots (topics are <env>.<kind>)")
        return value

    @field_validator(*KEY_FIELDS)
    @classmethod
    def _z85_key(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if len(value) != 40:
            raise ValueError("a CurveZMQ key in Z85 is 40 characters")
        return value

    @classmethod
    def from_extra(cls, conn_id: str, extra: dict[str, Any]) -> ZmqflowEndpoints:
        # The UI stores form fields either plainly or as extra__zmqflow__NAME.
        values = {}
        for name in (*FIELDS, *KEY_FIELDS):
            value = extra.get(name, extra.get(f"extra__zmqflow__{name}"))
            if value not in (None, ""):
                values[name] = value
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise AirflowException(
                f"connection {conn_id!r} is not a valid zmqflow connection: {problems}"
            ) from None


def _extra(conn: Any) -> dict[str, Any]:
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else json.loads(conn.extra or "{}")
    return dict(extra or {})


class ZmqflowHook(BaseHook):
    """Clients and events for a zmqflow forwarder named by an Airflow connection."""

    conn_name_attr = "zmqflow_conn_id"
    default_conn_name = "zmqflow_default"
    conn_type = "zmqflow"
    hook_name = "zmqflow"
    _publish_settle_s: ClassVar[float] = 0.3

    def __init__(self, zmqflow_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.zmqflow_conn_id = zmqflow_conn_id
        self._endpoints: ZmqflowEndpoints | None = None

    def endpoints(self) -> ZmqflowEndpoints:
        if self._endpoints is None:
            conn = self.get_connection(self.zmqflow_conn_id)
            self._endpoints = ZmqflowEndpoints.from_extra(self.zmqflow_conn_id, _extra(conn))
        return self._endpoints

    async def aendpoints(self) -> ZmqflowEndpoints:
        if self._endpoints is None:
            conn = await self.aget_connection(self.zmqflow_conn_id)
            self._endpoints = ZmqflowEndpoints.from_extra(self.zmqflow_conn_id, _extra(conn))
        return self._endpoints

    def get_conn(self) -> Client:
        return self.client()

    def client(self, timeout: float = 60.0) -> Client:
        return Client(self.endpoints().frontend, timeout=timeout)

    async def async_client(self, timeout: float = 60.0) -> AsyncClient:
        return AsyncClient((await self.aendpoints()).frontend, timeout=timeout)

    def publish(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """Publish one event ``<env>.<kind>`` on the bus; returns its topic and seq.

        PUB/SUB drops what is sent before the connection is up (slow joiner),
        so the socket waits until connected, then lingers until the event left.
        """
        endpoints = self.endpoints()
        encoder = events.EventEncoder(endpoints.env, events.new_source("airflow"))
        sock = zmq.Context.instance().socket(zmq.PUB)
        sock.linger = 5000
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        try:
            sock.connect(endpoints.events_in)
            if not monitor.poll(10_000):
                raise AirflowException(
                    f"could not connect to the event bus at {endpoints.events_in}"
                )
            # The XSUB side learns the subscriptions it forwards upstream just
            # after the handshake; a short settle lets the first event through.
            time.sleep(self._publish_settle_s)
            sock.send_multipart(encoder.encode(kind, data))
        finally:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close()
        return {"topic": encoder.topic(kind), "source": encoder.source, "seq": encoder.seq}

    def test_connection(self) -> tuple[bool, str]:
        try:
            with self.client(timeout=5) as client:
                status = client.status(timeout=5)
        except Exception as exc:
            return False, f"no answer from {self.endpoints().frontend}: {exc}"
        services = sorted({s for w in status.get("workers", []) for s in w.get("services", [])})
        return True, f"forwarder {status['forwarder']['id']} answers; services: {services}"
