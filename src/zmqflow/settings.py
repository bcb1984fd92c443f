"""Configuration: every setting from a CLI option or a ZMQFLOW_* variable.

Contract: options given on the command line win over the environment, which
wins over the defaults here. Lists read from the environment are comma
separated (``ZMQFLOW_FRONTEND=tcp://*:5555,ipc:///run/zmqflow/frontend.sock``).
Bad values raise pydantic's ``ValidationError``; the CLI prints it and exits 2.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from zmqflow.limits import (
    ENV_NAME_PATTERN,
    MAX_BATCH,
    MAX_BATCH_CEILING,
    MAX_MAP_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_PAYLOAD_BYTES,
    validate_endpoint,
    validate_endpoints,
)
from zmqflow.streams.settings import StreamFields

EndpointList = Annotated[list[str], NoDecode]


class UnusableSetting(ValueError):
    """A setting that parses but cannot be used: a journal path that cannot be
    opened or created, a key file that cannot be read, a port in use. The
    CLI ends the process with exit 2 and ``line()``, never a traceback."""

    def __init__(self, setting: str, value: object, cause: str) -> None:
        super().__init__(f"{setting} = {value}: {cause}")
        self.setting, self.value, self.cause = setting, value, cause

    def line(self) -> str:
        option = self.setting.replace("_", "-")
        return (
            f"cannot use setting {self.setting} (--{option}, ZMQFLOW_{self.setting.upper()}) "
            f"= {self.value}: {self.cause}"
        )


def key_file_setting(settings: object, path: str | None) -> str:
    """The setting of ``settings`` that named the key file ``path`` (the key
    file settings, then the allow-list folders holding it)."""
    for name in ("curve_secret", "curve_server"):
        if path is not None and getattr(settings, name, None) == path:
            return name
    for name in ("allow_clients", "allow_workers"):
        folder = getattr(settings, name, None)
        if path is not None and folder and path.startswith(folder.rstrip("/") + "/"):
            return name
    return "curve_secret"


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class _Base(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZMQFLOW_", extra="ignore")

    heartbeat_interval: float = Field(1.0, gt=0, le=60, description="seconds between heartbeats")
    heartbeat_liveness: int = Field(3, ge=1, le=100, description="silent intervals before dead")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    log_format: Literal["text", "json"] = Field(
        "text", description="log lines on stderr: text, or one JSON object per line"
    )


class CurvePeerSettings(BaseSettings):
    """A connecting peer's CURVE key files (security/peer.py); both or neither."""

    model_config = SettingsConfigDict(env_prefix="ZMQFLOW_", extra="ignore")

    curve_secret: str | None = Field(
        None, description="our secret key file (NAME.key_secret); CURVE with --curve-server"
    )
    curve_server: str | None = Field(None, description="the forwarder's public key file (NAME.key)")


class ForwarderSettings(_Base, StreamFields):
    frontend: EndpointList = Field(["tcp://*:5555"], description="clients' endpoints (ROUTER)")
    backend: EndpointList = Field(["tcp://*:5556"], description="workers' endpoints (ROUTER)")
    # The event bus binds only where asked: a default port on every interface
    # would clash with a running stack and open ports nobody asked for.
    events_in: EndpointList = Field([], description="event bus XSUB endpoints (none: no bus)")
    events_out: EndpointList = Field([], description="event bus XPUB endpoints (none: no bus)")
    journal: str = Field("zmqflow-journal.db", description="SQLite journal path, or :memory:")
    journal_sync: Literal["full", "normal"] = Field(
        "full", description="full: fsync per commit; normal: survives a process crash only"
    )
    journal_defer_ms: float = Field(
        10.0, ge=0, le=1000, description="how long a new task may wait to be journaled"
    )
    env: str = Field("dev", pattern=ENV_NAME_PATTERN, description="event topic prefix")
    max_retries: int = Field(5, ge=0, le=1000, description="requeues before a dead letter")
    max_queue: int = Field(100_000, ge=1, description="unfinished tasks held in all at most")
    max_queue_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, description="queued payload bytes in all at most"
    )
    max_payload_bytes: int = Field(
        MAX_PAYLOAD_BYTES,
        ge=1,
        le=MAX_MESSAGE_BYTES - MAX_MAP_BYTES,
        description="one task's payload at most",
    )
    max_batch: int = Field(
        MAX_BATCH, ge=1, le=MAX_BATCH_CEILING, description="tasks per SUBMIT or TASK message"
    )
    result_ttl_s: float = Field(3600.0, gt=0, description="seconds answers stay collectable")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port; 0 turns it off")
    # Security (docs/security.md): with curve_secret every bound socket is a CURVE server.
    curve_secret: str | None = Field(
        None, description="the forwarder's NAME.key_secret file; turns CURVE on for every socket"
    )
    allow_clients: str | None = Field(
        None, description="folder of *.key files that may submit, read status and use events"
    )
    allow_workers: str | None = Field(
        None, description="folder of *.key files that may register as workers"
    )
    insecure: bool = Field(False, description="allow plain tcp on non-loopback addresses")
    max_message_bytes: int = Field(
        MAX_MESSAGE_BYTES,
        ge=MAX_MAP_BYTES,
        description="ZMQ_MAXMSGSIZE on every socket: a larger frame drops its sender",
    )

    _split_lists = field_validator("frontend", "backend", "events_in", "events_out", mode="before")(
        _split
    )

    @field_validator("frontend", "backend", "events_in", "events_out")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        return validate_endpoints(value)

    @field_validator("max_message_bytes")
    @classmethod
    def _room_for_a_payload(cls, value: int, info: ValidationInfo) -> int:
        payload = info.data.get("max_payload_bytes", 0)
        if value < payload + MAX_MAP_BYTES:
            raise ValueError(f"must be at least max_payload_bytes + {MAX_MAP_BYTES} (headers)")
        return value


class WorkerSettings(_Base, CurvePeerSettings):
    connect: str = Field("tcp://127.0.0.1:5556", description="forwarder backend endpoint")
    service: EndpointList = Field([], description="service to serve")
    handler: EndpointList = Field(
        [], description="MODULE:FUNC; one, or one per --service; built-ins need none"
    )
    concurrency: int = Field(1, ge=1, le=1024, description="handler threads")
    credit: int | None = Field(None, ge=1, le=100_000, description="tasks held; 2x concurrency")
    health_file: str | None = Field(None, description="touched when the forwarder is heard")
    worker_id: str | None = Field(None, description="id in READY (py-<host>-<pid>-<rand>)")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port; 0 turns it off")

    _split_lists = field_validator("service", "handler", mode="before")(_split)

    @field_validator("connect")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return validate_endpoint(value)


class ClientSettings(_Base, CurvePeerSettings):
    connect: str = Field("tcp://127.0.0.1:5555", description="forwarder frontend endpoint")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="log level"
    )

    @field_validator("connect")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        return validate_endpoint(value)
