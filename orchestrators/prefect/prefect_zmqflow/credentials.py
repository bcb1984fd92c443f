"""The zmqflow block: where the fabric is, and the CurveZMQ keys to reach it.

Contract: ``ZmqflowCredentials`` holds the forwarder's client (frontend)
endpoint, its event endpoints, the event environment and the CurveZMQ keys
(secret fields, stored encrypted by Prefect). ``connect()`` returns a
zmqflow ``Client`` only once the forwarder has answered a STATUS request:
tenacity retries with exponential backoff, then ``ForwarderUnreachableError``
says which endpoint was tried, how often and for how long, or, when the
forwarder refused our key, which key it refused. ``curve_keys()``: the
block's keys (Z85 text: the forwarder's public key and this client's secret
key, its public key optional and checked) as the client's
``zmqflow.security.peer.CurveKeys``, never written to a file; half a pair
or text that is no key is a ``ZmqflowError`` naming the field. A block
without keys uses the files ZMQFLOW_CURVE_SECRET/SERVER name, if any.
"""

from __future__ import annotations

import time
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from prefect_zmqflow.errors import ForwarderUnreachableError, ZmqflowError
from zmqflow.client import Client, CurveKeys, ForwarderRefused, ForwarderUnreachable


class ZmqflowCredentials(Block):
    """Endpoints and keys of a zmqflow fabric (forwarder + workers)."""

    _block_type_name = "zmqflow Credentials"
    _block_type_slug = "zmqflow-credentials"
    _description = (
        "Where a zmqflow forwarder listens (clients and events) and the CurveZMQ keys "
        "to reach it. Used by the prefect-zmqflow tasks and the event bridge."
    )
    _documentation_url = "https://github.com/zmqflow/zmqflow/tree/main/orchestrators/prefect"  # type: ignore[assignment]

    frontend: str = Field(
        default="tcp://forwarder:5555",
        description="Client endpoint (ROUTER) of the forwarder: tcp://host:port or ipc://path.",
    )
    events_in: str = Field(
        default="tcp://forwarder:5557", description="Event bus input (XSUB): publishers connect."
    )
    events_out: str = Field(
        default="tcp://forwarder:5558", description="Event bus output (XPUB): subscribers connect."
    )
    env: str = Field(default="dev", description="Environment prefix of event topics (<env>.kind).")
    timeout_s: float = Field(
        default=900.0, gt=0, description="Seconds a batch may take until every item is answered."
    )
    connect_attempts: int = Field(
        default=5, ge=1, description="STATUS probes before giving up on the forwarder."
    )
    probe_timeout_s: float = Field(default=2.0, gt=0, description="Seconds each probe waits.")
    curve_server_public_key: SecretStr | None = Field(
        default=None, description="CurveZMQ public key of the forwarder (Z85)."
    )
    curve_public_key: SecretStr | None = Field(
        default=None, description="CurveZMQ public key of this client (Z85)."
    )
    curve_secret_key: SecretStr | None = Field(
        default=None, description="CurveZMQ secret key of this client (Z85)."
    )

    def curve_keys(self) -> CurveKeys | None:
        """The block's CURVE keys; None when it holds none."""
        text = {
            name: value.get_secret_value().strip() or None
            for name, value in (
                ("curve_server_public_key", self.curve_server_public_key),
                ("curve_public_key", self.curve_public_key),
                ("curve_secret_key", self.curve_secret_key),
            )
            if value is not None
        }
        given = [name for name, value in text.items() if value]
        if not given:
            return None
        server, secret = text.get("curve_server_public_key"), text.get("curve_secret_key")
        if server is None or secret is None:
            raise ZmqflowError(
                f"zmqflow block: {', '.join(given)} set, but CURVE needs "
                f"curve_server_public_key and curve_secret_key (curve_public_key is optional)"
            )
        try:
            return CurveKeys.from_z85(
                secret=secret,
                server=server,
                public=text.get("curve_public_key"),
                names=("curve_secret_key", "curve_server_public_key", "curve_public_key"),
            )
        except ValueError as exc:
            raise ZmqflowError(f"zmqflow block: {exc}") from None

    def connect(self) -> Client:
        """A Client whose forwarder has answered; raises ForwarderUnreachableError."""
        curve = self.curve_keys()
        started = time.monotonic()
        try:
            client = Client(self.frontend, timeout=self.timeout_s, curve=curve)
        except ValueError as exc:  # ZMQFLOW_CURVE_* naming a file that cannot be used
            raise ZmqflowError(f"zmqflow block: CURVE keys: {exc}") from None
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(self.connect_attempts),
                wait=wait_exponential(multiplier=0.5, min=0.5, max=8),
                retry=retry_if_exception_type(ForwarderUnreachable),
            ):
                with attempt:
                    client.status(timeout=self.probe_timeout_s)
        except RetryError as failed:
            client.close()
            last = failed.last_attempt.exception()
            if isinstance(last, ForwarderRefused):
                raise ForwarderUnreachableError(
                    f"the zmqflow forwarder at {self.frontend} refused this block's key "
                    f"after {self.connect_attempts} attempts: {last}"
                ) from None
            raise ForwarderUnreachableError(
                f"no zmqflow forwarder answered at {self.frontend}: {self.connect_attempts} "
                f"STATUS probes of {self.probe_timeout_s:g}s each, with exponential backoff, "
                f"over {time.monotonic() - started:.1f}s"
            ) from None
        except BaseException:
            client.close()
            raise
        return client

    def probe(self) -> dict[str, Any]:
        """The forwarder's STATUS (workers, queues, counters); raises when unreachable."""
        with self.connect() as client:
            return client.status(timeout=self.probe_timeout_s)
