"""Every limit and name rule of zmqflow, once: what the settings, the
protocol, the broker, the clients and the orchestrator packages import.

Contract: the numbers below are the protocol's (docs/protocol.md) and the
forwarder's defaults; the validators return the value they were given
(stripped where said) or raise ``ValueError`` with a message that names
what is wrong, so a pydantic ``field_validator`` can call them as they are.
The ``valid_*`` tests return a bool and are written for the hot paths (a
whole message's ids in one regex match). ``Limits`` is what the forwarder
enforces, made from its settings in one place (``Limits.of``); the
forwarder tells clients its ``max_batch`` in its HEARTBEAT reply and the
clients cut their batches to fit.

For the orchestrator packages: ``validate_endpoint`` (tcp://HOST:PORT or
ipc:///path, optionally inproc://), ``validate_env_name``,
``curve_pair_rule`` (CURVE key settings go both or neither),
``MAX_ID_BYTES`` / ``ID_CHARS`` / ``valid_id``, ``MAX_KEY_BYTES`` /
``valid_key``, ``MAX_MAP_BYTES`` (the frame limit) and ``DEFAULT_*``
endpoints of the reference stack.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

# ------------------------------------------------------------------ sizes
MAX_MAP_BYTES = 64 * 1024  # a map or id-list frame, and a task's headers once encoded
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # ZMQ_MAXMSGSIZE by default: a larger frame drops its sender
MAX_BATCH = 1000  # items per batched message, until the forwarder says its own max_batch
MAX_BATCH_CEILING = 10_000  # the largest max_batch a forwarder may be given
MAX_ID_BYTES = 64  # a task id (and a service name)
MAX_KEY_BYTES = 256  # an idempotency key, UTF-8
MAX_IPC_PATH_BYTES = 107  # sun_path is 108 bytes with its NUL
MAX_PAYLOAD_BYTES = 1024 * 1024  # the forwarder's default for one task's payload

# ------------------------------------------------------------------ names
ID_CHARS = "A-Za-z0-9._:-"  # a task id's characters
SERVICE_CHARS = "A-Za-z0-9._-"
ENV_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"  # no dot: event topics are <env>.<kind>

# The reference stack's endpoints (compose.yaml's service names and ports).
DEFAULT_FRONTEND = "tcp://forwarder:5555"
DEFAULT_BACKEND = "tcp://forwarder:5556"
DEFAULT_EVENTS_IN = "tcp://forwarder:5557"
DEFAULT_EVENTS_OUT = "tcp://forwarder:5558"

# The id rule, once: tested on ids joined by a newline (not an id character),
# so that a whole message's ids take one regex match (``valid_ids``).
_ID = rf"[{ID_CHARS}]{{1,{MAX_ID_BYTES}}}"
_ID_RE = re.compile(rf"{_ID}\Z")
_IDS_RE = re.compile(rf"{_ID}(?:\n{_ID})*\Z")
_SERVICE_RE = re.compile(rf"[{SERVICE_CHARS}]{{1,{MAX_ID_BYTES}}}\Z")
_ENV_RE = re.compile(ENV_NAME_PATTERN)

ID_RULE = f"1-{MAX_ID_BYTES} characters of [{ID_CHARS}]"
SERVICE_RULE = f"1-{MAX_ID_BYTES} characters of [{SERVICE_CHARS}]"
KEY_RULE = f"1-{MAX_KEY_BYTES} bytes"


def valid_ids(ids: Sequence[str]) -> bool:
    """Every id (each a str: the caller saw to it) follows the id rule: one
    regex match for all of them (a message's ids on the hot path). Joined by
    newlines, the ids come apart exactly when none holds one (the count)."""
    if not ids:
        return True
    joined = "\n".join(ids)
    return joined.count("\n") == len(ids) - 1 and _IDS_RE.match(joined) is not None


def valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.match(value) is not None


def valid_service(value: object) -> bool:
    return isinstance(value, str) and _SERVICE_RE.match(value) is not None


def valid_key(key: str) -> bool:
    """An idempotency key's length rule (any characters)."""
    return 0 < len(key.encode()) <= MAX_KEY_BYTES


def uints(values: Iterable[object]) -> bool:
    """The one rule for every unsigned integer field (``retries``, READY's
    ``credit`` and ``pid``, ``attempt``, ``attempts``): each an int >= 0 and
    not a bool (msgpack's true is a Python bool, an int subclass; the Rust
    side's u64 refuses it). For a batch's field at once (one call)."""
    for value in values:  # noqa: SIM110 (a loop: a generator costs a frame per item)
        if type(value) is not int or value < 0:
            return False
    return True


def uint(value: object) -> bool:
    """``uints`` of one value."""
    return uints((value,))


# ------------------------------------------------------------ validators
def validate_id(value: str) -> str:
    if not valid_id(value):
        raise ValueError(f"task id {value!r} is not {ID_RULE}")
    return value


def validate_endpoint(value: str, *, inproc: bool = True) -> str:
    """A ZeroMQ endpoint we can use: ``tcp://HOST:PORT`` (``*`` as host to
    bind), ``ipc:///path`` (at most 107 bytes) or, when ``inproc``,
    ``inproc://name``. Returns it stripped."""
    value = value.strip()
    kinds = ("tcp://", "ipc://", "inproc://") if inproc else ("tcp://", "ipc://")
    if not value.startswith(kinds):
        raise ValueError(f"endpoint {value!r} must start with {', '.join(kinds)}")
    if value.startswith("tcp://"):
        host, _, port = value[6:].rpartition(":")
        if not host or not port:
            raise ValueError(f"endpoint {value!r} needs a host and a port: tcp://HOST:PORT")
    elif value.startswith("ipc://"):
        if len(value[6:].encode()) > MAX_IPC_PATH_BYTES:
            raise ValueError(f"ipc path of {value!r} is longer than {MAX_IPC_PATH_BYTES} bytes")
        if len(value) == 6:
            raise ValueError(f"endpoint {value!r} needs a path: ipc:///path")
    elif len(value) == 9:
        raise ValueError(f"endpoint {value!r} needs a name: inproc://name")
    return value


def validate_endpoints(values: Iterable[str], *, inproc: bool = True) -> list[str]:
    return [validate_endpoint(value, inproc=inproc) for value in values]


def validate_env_name(value: str) -> str:
    """The environment that scopes event topics (``<env>.<kind>``)."""
    if not _ENV_RE.match(value):
        raise ValueError(f"env {value!r} must be 1-32 characters of [A-Za-z0-9_-] (no dots)")
    return value


def curve_pair_rule(secret: object, server: object, names: tuple[str, str]) -> bool:
    """CURVE needs our secret key and the forwarder's public key together.

    True when both are given, False when neither is (plain); ``ValueError``
    naming the one given and the one missing otherwise. ``names`` are the
    two settings as the user knows them (option, variable or field),
    secret first.
    Empty strings count as not given.
    """
    if not secret and not server:
        return False
    if not secret or not server:
        given, missing = names if secret else names[::-1]
        raise ValueError(
            f"{given} is set but {missing} is not: {names[0]} and {names[1]} go together "
            f"(CURVE needs {names[1]} and {names[0]})"
        )
    return True


# ------------------------------------------------------------ the forwarder's
@dataclass(slots=True)
class Limits:
    """What the forwarder enforces (its settings, in the units the broker uses)."""

    max_retries: int = 5
    max_queue: int = 100_000
    max_queue_bytes: int = 512 * 1024 * 1024
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    max_batch: int = MAX_BATCH
    heartbeat_interval: float = 1.0
    heartbeat_liveness: int = 3
    journal_defer_s: float = 0.0

    @classmethod
    def of(cls, settings: Any) -> Limits:
        """The limits of a ``ForwarderSettings`` (the one copy of these fields)."""
        values = {f.name: getattr(settings, f.name, None) for f in fields(cls)}
        values["journal_defer_s"] = settings.journal_defer_ms / 1000
        return cls(**{k: v for k, v in values.items() if v is not None})
