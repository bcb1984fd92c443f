"""What a `zmqflow` connection says, checked (no Airflow import: fast tests run it).

Contract: ``ZmqflowEndpoints.from_extra(conn_id, extra)`` reads the
connection's extra fields (plain or ``extra__zmqflow__NAME``): the
forwarder's client endpoint (``frontend``), the event bus endpoints
(``events_in`` to publish, ``events_out`` to subscribe), each tcp:// or
ipc://, the environment ``env`` that scopes event topics, and the CurveZMQ
keys as Z85 text: ``curve_server_public_key`` (the forwarder's) and
``curve_secret_key`` (this client's) together, ``curve_public_key``
optional and checked against the secret. ``curve_keys()`` gives them as a
``zmqflow.security.peer.CurveKeys`` (None when the connection holds none:
the clients then use ZMQFLOW_CURVE_SECRET/SERVER if set). Anything that
does not parse raises ``InvalidConnection`` naming the connection and the
field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from zmqflow.security.peer import CurveKeys

FIELDS = ("frontend", "events_in", "events_out", "env")
KEY_FIELDS = ("curve_server_public_key", "curve_public_key", "curve_secret_key")


class InvalidConnection(ValueError):
    """A `zmqflow` connection that does not parse; the message names it and the field."""


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
    def _z85_text(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @model_validator(mode="after")
    def _keys(self) -> ZmqflowEndpoints:
        given = [name for name in KEY_FIELDS if getattr(self, name) is not None]
        if given and (self.curve_server_public_key is None or self.curve_secret_key is None):
            raise ValueError(
                f"{', '.join(given)} set: CURVE needs curve_server_public_key and "
                f"curve_secret_key (curve_public_key is optional)"
            )
        if given:
            self.curve_keys()  # Z85, 40 characters, the public key matching the secret
        return self

    def curve_keys(self) -> CurveKeys | None:
        """The connection's CURVE keys; None when it holds none."""
        if self.curve_secret_key is None or self.curve_server_public_key is None:
            return None
        return CurveKeys.from_z85(
            secret=self.curve_secret_key,
            server=self.curve_server_public_key,
            public=self.curve_public_key,
            names=("curve_secret_key", "curve_server_public_key", "curve_public_key"),
        )

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
                f"{'.'.join(map(str, e['loc'])) or 'keys'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidConnection(
                f"connection {conn_id!r} is not a valid zmqflow connection: {problems}"
            ) from None
