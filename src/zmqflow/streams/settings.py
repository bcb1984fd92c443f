"""Settings of the streams device: every one a CLI option or a ZMQFLOW_* variable.

Contract: ``StreamFields`` holds the streams' own settings (endpoints, store
file, streams and their retention limits, dedup window, event size); the
forwarder's settings can take them in by inheritance (``class
ForwarderSettings(_Base, StreamFields)``: this module imports nothing of
zmqflow.settings, so there is no import cycle; its rules are zmqflow.limits').
``StreamDeviceSettings`` is the standalone device's (``python -m
zmqflow.streams device``): the stream fields plus the security and logging
fields the forwarder has, under the same names and variables.

A stream is ``NAME=SUFFIX`` (``--stream``, repeatable; ZMQFLOW_STREAM
comma separated): it holds the topics starting ``<env>.SUFFIX``; the
default ``events=`` holds every topic of the environment. Retention
defaults (ZMQFLOW_STREAM_MAX_AGE_S, _MAX_EVENTS, _MAX_BYTES) apply to
every stream.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from zmqflow.limits import (
    ENV_NAME_PATTERN,
    MAX_MAP_BYTES,
    MAX_MESSAGE_BYTES,
    validate_endpoints,
)
from zmqflow.streams.store import Limits, StreamConfig

EndpointList = Annotated[list[str], NoDecode]
_STREAM_RE = re.compile(r"([A-Za-z0-9._-]{1,64})=([A-Za-z0-9._:*-]{0,200})\Z")


def _split(value: Any) -> Any:
    """A comma-separated variable as a list (as zmqflow.settings reads lists)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class StreamFields(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZMQFLOW_", extra="ignore")

    streams: EndpointList = Field(
        [], description="streams device ROUTER endpoints (none: no streams device)"
    )
    streams_store: str = Field("zmqflow-streams.db", description="SQLite stream store path")
    streams_sync: Literal["full", "normal"] = Field(
        "full", description="full: fsync each commit holding events; normal: survives a crash"
    )
    stream: EndpointList = Field(
        ["events="], description="NAME=SUFFIX: a stream of the topics <env>.SUFFIX*"
    )
    stream_max_age_s: float = Field(
        7 * 86400.0, ge=0, description="events older than this are dropped (0: no limit)"
    )
    stream_max_events: int = Field(
        1_000_000, ge=0, description="events kept per stream at most (0: no limit)"
    )
    stream_max_bytes: int = Field(
        1 << 30, ge=0, description="bytes kept per stream at most (0: no limit)"
    )
    stream_dedup_window_s: float = Field(
        120.0, ge=0, le=86400, description="a publish id seen within this is stored once"
    )
    stream_max_event_bytes: int = Field(
        1 << 20, ge=256, le=MAX_MESSAGE_BYTES - MAX_MAP_BYTES, description="one event at most"
    )

    _split_stream_lists = field_validator("streams", "stream", mode="before")(_split)

    @field_validator("streams")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        return validate_endpoints(value)

    @field_validator("stream")
    @classmethod
    def _streams(cls, value: list[str]) -> list[str]:
        names = set()
        for spec in value:
            match = _STREAM_RE.match(spec)
            if match is None:
                raise ValueError(
                    f"stream {spec!r} must be NAME=SUFFIX, e.g. events= or orders=orders."
                )
            if match[1] in names:
                raise ValueError(f"stream {match[1]!r} given twice")
            names.add(match[1])
        return value

    def stream_configs(self, env: str) -> list[StreamConfig]:
        """The streams, each with its full topic prefix and the retention limits."""
        limits = Limits(self.stream_max_age_s, self.stream_max_events, self.stream_max_bytes)
        out = []
        for spec in self.stream:
            name, suffix = spec.split("=", 1)
            out.append(StreamConfig(name, f"{env}.{suffix}", limits))
        return out


class StreamDeviceSettings(StreamFields):
    """The standalone device: streams, plus the forwarder's security and logging fields."""

    streams: EndpointList = Field(
        ["tcp://127.0.0.1:5559"], description="streams device ROUTER endpoints"
    )
    env: str = Field("dev", pattern=ENV_NAME_PATTERN, description="event topic prefix")
    curve_secret: str | None = Field(
        None, description="the device's NAME.key_secret file; turns CURVE on"
    )
    allow_clients: str | None = Field(
        None, description="folder of *.key files that may publish and subscribe"
    )
    insecure: bool = Field(False, description="allow plain tcp on non-loopback addresses")
    max_message_bytes: int = Field(
        MAX_MESSAGE_BYTES,
        ge=MAX_MAP_BYTES,
        description="ZMQ_MAXMSGSIZE: a larger frame drops its sender",
    )
    heartbeat_interval: float = Field(1.0, gt=0, le=60, description="seconds between ticks")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus port; 0 turns it off")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    log_format: Literal["text", "json"] = Field("text", description="text, or JSON lines")
