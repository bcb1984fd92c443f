"""ZmqflowHook: the `zmqflow` connection type and clients built from it.

Contract: a `zmqflow` connection names the forwarder's client endpoint
(``frontend``), the event bus endpoints (``events_in`` to publish,
``events_out`` to subscribe), each tcp:// or ipc://, the environment
``env`` that scopes event topics (``<env>.<kind>``), and CurveZMQ keys as
Z85 text (``curve_server_public_key``, ``curve_secret_key``, optionally
``curve_public_key``), parsed by ``zmqflow_provider.connection``. Every
socket the hook makes carries those keys (``curve()``: the connection's, or
else the files ZMQFLOW_CURVE_SECRET/SERVER name, or none); no key touches a
file. ``endpoints()`` / ``aendpoints()`` parse the connection once (the
async form is for triggers, which have no ORM access); ``client()`` /
``async_client()`` return zmqflow clients; ``publish()`` sends one event. A
connection that does not parse fails with a message naming the connection
and the field.
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import zmq
from airflow.exceptions import AirflowException
from airflow.sdk.bases.hook import BaseHook

from zmqflow import events
from zmqflow.client import AsyncClient, Client
from zmqflow.security.peer import CurveKeys, resolve
from zmqflow_provider.connection import FIELDS, KEY_FIELDS, InvalidConnection, ZmqflowEndpoints

__all__ = ["FIELDS", "KEY_FIELDS", "ZmqflowEndpoints", "ZmqflowHook"]


def _parse(conn_id: str, extra: dict[str, Any]) -> ZmqflowEndpoints:
    try:
        return ZmqflowEndpoints.from_extra(conn_id, extra)
    except InvalidConnection as exc:
        raise AirflowException(str(exc)) from None


def _curve(conn_id: str, endpoints: ZmqflowEndpoints) -> CurveKeys | None:
    try:
        return resolve(endpoints.curve_keys())
    except ValueError as exc:  # ZMQFLOW_CURVE_* naming a bad file (KeyFileError)
        raise AirflowException(f"connection {conn_id!r}: CURVE keys: {exc}") from None


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
            self._endpoints = _parse(self.zmqflow_conn_id, _extra(conn))
        return self._endpoints

    async def aendpoints(self) -> ZmqflowEndpoints:
        if self._endpoints is None:
            conn = await self.aget_connection(self.zmqflow_conn_id)
            self._endpoints = _parse(self.zmqflow_conn_id, _extra(conn))
        return self._endpoints

    def curve(self) -> CurveKeys | None:
        """The keys every socket of this hook carries (see the module contract)."""
        return _curve(self.zmqflow_conn_id, self.endpoints())

    async def acurve(self) -> CurveKeys | None:
        return _curve(self.zmqflow_conn_id, await self.aendpoints())

    def get_conn(self) -> Client:
        return self.client()

    def client(self, timeout: float = 60.0) -> Client:
        return Client(self.endpoints().frontend, timeout=timeout, curve=self.curve())

    async def async_client(self, timeout: float = 60.0) -> AsyncClient:
        frontend, curve = (await self.aendpoints()).frontend, await self.acurve()
        return AsyncClient(frontend, timeout=timeout, curve=curve)

    def publish(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """Publish one event ``<env>.<kind>`` on the bus; returns its topic and seq.

        PUB/SUB drops what is sent before the connection is up (slow joiner),
        so the socket waits until connected, then lingers until the event left.
        """
        endpoints = self.endpoints()
        encoder = events.EventEncoder(endpoints.env, events.new_source("airflow"))
        keys = self.curve()
        sock = zmq.Context.instance().socket(zmq.PUB)
        sock.linger = 5000
        if keys is not None:
            keys.apply(sock)
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
