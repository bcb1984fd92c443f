"""The frames every ZFP/2 message starts with, and the error of a bad one.

Contract: a message is ``[signature, command, body...]``; ``pack`` and
``unpack`` are the msgpack rules of docs/protocol.md (``bin`` for bytes,
str keys only, a map frame within ``MAX_MAP_BYTES``); ``ProtocolError``
carries the REFUSED code to answer a message with.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

import msgpack

from zmqflow.limits import MAX_MAP_BYTES

CLIENT_SIGNATURE = b"ZFC2"
WORKER_SIGNATURE = b"ZFW2"


class Command(IntEnum):
    # client side
    SUBMIT = 0x01
    ACCEPTED = 0x02
    RESULT = 0x03
    FAILED = 0x04
    REFUSED = 0x05
    HEARTBEAT = 0x06
    COLLECT = 0x07
    STATUS = 0x08
    RETRY = 0x09
    # worker side
    W_READY = 0x11
    W_TASK = 0x12
    W_RESULT = 0x13
    W_FAILED = 0x14
    W_HEARTBEAT = 0x15
    W_DISCONNECT = 0x16


class ProtocolError(ValueError):
    """A message that cannot be used; ``code`` is the REFUSED code to answer with."""

    def __init__(self, code: str, reason: str, ids: list[str] | None = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.ids = ids or []


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpack(frame: bytes) -> Any:
    """A map or id-list frame (at most ``MAX_MAP_BYTES``)."""
    if len(frame) > MAX_MAP_BYTES:
        raise ProtocolError("malformed", f"body frame of {len(frame)} bytes exceeds 64 KiB")
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError("malformed", f"body is not valid msgpack: {exc}") from None


_COMMAND_FRAMES = [bytes((i,)) for i in range(256)]
COMMANDS = {int(c): c for c in Command}


def command_frame(code: Command) -> bytes:
    return _COMMAND_FRAMES[code]
