"""The streams message family (ZFS/1): frames to messages and back (docs/streams.md).

Contract: the framing of ZFP/2 (zmqflow.protocol): frame 0 a 4-byte
signature, ``ZFS1`` here; frame 1 a one-byte command; then msgpack body
frames, maps with their keys in the documented order and batch items as
arrays in the documented field order, so that ``encode`` is byte-exact and
matches docs/protocol-vectors/streams/. ``decode(frames)`` is its inverse
and raises zmqflow.protocol's ``ProtocolError`` with a refusal code for
anything it cannot use; the field rules (ids, names, unsigned ints) are
protocol.py's, imported, so a rule lives in one place.

Two commands read both ways, as STATUS does in ZFP/2: LIST and HEARTBEAT
have no body as a request and one map as the device's reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

from zmqflow.limits import (
    ID_RULE,
    MAX_MAP_BYTES,
    MAX_MESSAGE_BYTES,
    SERVICE_RULE,
    uint,
    uints,
    valid_id,
    valid_service,
)
from zmqflow.protocol import ProtocolError

SIGNATURE = b"ZFS1"
MAX_TOPIC_BYTES = 256
START_POSITIONS = ("new", "all", "seq", "time")

__all__ = [
    "MAX_MAP_BYTES",
    "MAX_MESSAGE_BYTES",
    "SIGNATURE",
    "START_POSITIONS",
    "Ack",
    "Command",
    "Delivery",
    "Events",
    "Gap",
    "Heartbeat",
    "ListRequest",
    "Listing",
    "ProtocolError",
    "Publish",
    "PublishItem",
    "Refused",
    "Stored",
    "StoredItem",
    "Subscribe",
    "Subscribed",
    "decode",
    "encode",
    "valid_name",
    "valid_topic",
]


class Command(IntEnum):
    PUBLISH = 0x01
    STORED = 0x02
    SUBSCRIBE = 0x03
    SUBSCRIBED = 0x04
    EVENT = 0x05
    GAP = 0x06
    ACK = 0x07
    LIST = 0x08
    HEARTBEAT = 0x09
    REFUSED = 0x0F


def valid_name(value: object) -> bool:
    """A stream's or a durable subscriber's name: the service-name rule of ZFP/2."""
    return valid_service(value)


def valid_topic(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value.encode()) <= MAX_TOPIC_BYTES


# ------------------------------------------------------------------ messages


@dataclass(slots=True)
class PublishItem:
    """One event as a publisher sends it: ``id`` is its dedup key."""

    id: str
    topic: str
    data: Any = field(default_factory=dict)


@dataclass(slots=True)
class Publish:
    """PUBLISH (0x01): 1..N events, stored together before one STORED."""

    items: list[PublishItem]


@dataclass(slots=True)
class StoredItem:
    """One stored event: its stream and sequence number; ``duplicate`` when the
    id was stored already within the dedup window (``seq`` is the first one's)."""

    id: str
    stream: str
    seq: int
    duplicate: bool


@dataclass(slots=True)
class Stored:
    """STORED (0x02): the events of a PUBLISH that are stored, in its order."""

    items: list[StoredItem]


@dataclass(slots=True)
class Subscribe:
    """SUBSCRIBE (0x03): attach this connection to a subscriber of ``stream``.

    ``name`` set: durable (its position survives both sides' restarts; a name
    seen before resumes and ignores ``start``); nil: ephemeral, gone when the
    connection is. ``start`` for a new name: ``new``, ``all``, ``seq`` (from
    ``seq`` on) or ``time`` (events stored at ``time``, Unix seconds, or later).
    ``topic``: a prefix; events of other topics count as acknowledged.
    ``window``: events in flight (unacknowledged) at most; ``ack_wait_ms``:
    an event unacknowledged that long is delivered again.
    """

    stream: str
    name: str | None = None
    start: str = "new"
    seq: int | None = None
    time: float | None = None
    topic: str = ""
    window: int = 100
    ack_wait_ms: int = 30_000


@dataclass(slots=True)
class Subscribed:
    """SUBSCRIBED (0x04): where the subscriber stands.

    ``position``: every event up to it is acknowledged; ``first``/``last``: the
    stream's oldest and newest retained sequence numbers (0 when empty);
    ``missed``: events that fell out of retention before this subscriber got them
    (also sent as GAP when it happens).
    """

    stream: str
    name: str | None
    resumed: bool
    position: int
    first: int
    last: int
    missed: int


@dataclass(slots=True)
class Delivery:
    """One event delivered: ``attempt`` is 1 the first time, more on redelivery."""

    seq: int
    id: str
    topic: str
    ts: float
    data: Any
    attempt: int


@dataclass(slots=True)
class Events:
    """EVENT (0x05): 1..N events for one subscriber, in sequence order."""

    items: list[Delivery]


@dataclass(slots=True)
class Gap:
    """GAP (0x06): the events ``first``..``last`` (``missed`` of them) fell out of
    retention before this subscriber got them; delivery goes on after ``last``."""

    stream: str
    name: str | None
    missed: int
    first: int
    last: int


@dataclass(slots=True)
class Ack:
    """ACK (0x07): these events are handled (sequence numbers)."""

    seqs: list[int]


@dataclass(slots=True)
class ListRequest:
    """LIST (0x08) without a body: what streams and subscribers are there?"""


@dataclass(slots=True)
class Listing:
    """LIST (0x08) reply: ``{device, streams: [...], subscribers: [...]}``."""

    info: dict[str, Any]


@dataclass(slots=True)
class Heartbeat:
    """HEARTBEAT (0x09): the device's reply names the device instance."""

    device: str | None = None


@dataclass(slots=True)
class Refused:
    """REFUSED (0x0F): ``ids`` are the events concerned (none: the whole message)."""

    ids: list[str]
    code: str
    reason: str


Message = (
    Publish
    | Stored
    | Subscribe
    | Subscribed
    | Events
    | Gap
    | Ack
    | ListRequest
    | Listing
    | Heartbeat
    | Refused
)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _cmd(code: Command) -> bytes:
    return bytes((code,))


def encode(msg: Message) -> list[bytes]:
    """Frames for ``msg``, signature first."""
    match msg:
        case Publish(items):
            return _batch(Command.PUBLISH, [[i.id, i.topic, i.data] for i in items])
        case Stored(items):
            return _batch(Command.STORED, [[i.id, i.stream, i.seq, i.duplicate] for i in items])
        case Events(items):
            return _batch(
                Command.EVENT, [[d.seq, d.id, d.topic, d.ts, d.data, d.attempt] for d in items]
            )
        case Subscribe():
            body = {
                "stream": msg.stream,
                "name": msg.name,
                "start": msg.start,
                "seq": msg.seq,
                "time": msg.time,
                "topic": msg.topic,
                "window": msg.window,
                "ack_wait_ms": msg.ack_wait_ms,
            }
            return [SIGNATURE, _cmd(Command.SUBSCRIBE), pack(body)]
        case Subscribed():
            body = {
                "stream": msg.stream,
                "name": msg.name,
                "resumed": msg.resumed,
                "position": msg.position,
                "first": msg.first,
                "last": msg.last,
                "missed": msg.missed,
            }
            return [SIGNATURE, _cmd(Command.SUBSCRIBED), pack(body)]
        case Gap():
            body = {
                "stream": msg.stream,
                "name": msg.name,
                "missed": msg.missed,
                "first": msg.first,
                "last": msg.last,
            }
            return [SIGNATURE, _cmd(Command.GAP), pack(body)]
        case Ack(seqs):
            return [SIGNATURE, _cmd(Command.ACK), pack(seqs)]
        case ListRequest():
            return [SIGNATURE, _cmd(Command.LIST)]
        case Listing(info):
            return [SIGNATURE, _cmd(Command.LIST), pack(info)]
        case Heartbeat(device):
            if device is None:
                return [SIGNATURE, _cmd(Command.HEARTBEAT)]
            return [SIGNATURE, _cmd(Command.HEARTBEAT), pack({"device": device})]
        case Refused(ids, code, reason):
            body = {"ids": ids, "code": code, "reason": reason}
            return [SIGNATURE, _cmd(Command.REFUSED), pack(body)]
    raise TypeError(f"not a streams message: {msg!r}")


def _batch(code: Command, items: list[list[Any]]) -> list[bytes]:
    if not items:
        raise ValueError(f"{code.name} needs at least one item")
    return [SIGNATURE, _cmd(code), pack(items)]


# ------------------------------------------------------------------ decoding

_COMMANDS = {int(c): c for c in Command}


def _unpack(frame: bytes, name: str, limit: int = MAX_MAP_BYTES) -> Any:
    if len(frame) > limit:
        raise ProtocolError("too_large", f"{name} body of {len(frame)} bytes exceeds {limit}")
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError("malformed", f"{name} body is not valid msgpack: {exc}") from None


def _bodies(frames: list[bytes], count: int, name: str) -> None:
    if len(frames) - 2 != count:
        raise ProtocolError("malformed", f"{name} takes {count} body frames, got {len(frames) - 2}")


def _map(frames: list[bytes], name: str) -> dict[str, Any]:
    _bodies(frames, 1, name)
    body = _unpack(frames[2], name)
    if not isinstance(body, dict):
        raise ProtocolError("malformed", f"{name} body is not a map")
    return body


def _get(body: dict[str, Any], name: str, key: str, kinds: type | tuple[type, ...]) -> Any:
    value = body.get(key)
    if not isinstance(value, kinds):
        raise ProtocolError("malformed", f"{name} field {key!r} missing or of the wrong type")
    return value


def _count(body: dict[str, Any], name: str, key: str) -> int:
    value = body.get(key)
    if not uint(value):
        raise ProtocolError("malformed", f"{name} field {key!r} must be a non-negative int")
    return value


def _items(frames: list[bytes], name: str, limit: int) -> list[Any]:
    _bodies(frames, 1, name)
    items = _unpack(frames[2], name, limit)
    if not isinstance(items, list) or not items:
        raise ProtocolError("malformed", f"{name} body must be a non-empty array of items")
    return items


def publish_items(frames: list[bytes], limit: int = MAX_MESSAGE_BYTES) -> list[Any]:
    """A PUBLISH's items, undecoded (raises for a body that is not one non-empty
    array): the device checks each with ``publish_item`` so that one bad event
    is refused alone."""
    return _items(frames, "PUBLISH", limit)


def publish_item(item: Any) -> PublishItem:
    """One PUBLISH item, checked; ``ProtocolError`` (with its id when readable)."""
    if not isinstance(item, list) or len(item) < 3:
        raise ProtocolError("malformed", "PUBLISH item must be an array [id, topic, data]")
    event_id, topic, data = item[:3]
    if not valid_id(event_id):
        raise ProtocolError("malformed", f"PUBLISH item id must be {ID_RULE}")
    if not valid_topic(topic):
        raise ProtocolError(
            "malformed",
            f"PUBLISH item topic must be a string of 1-{MAX_TOPIC_BYTES} bytes",
            [event_id],
        )
    return PublishItem(event_id, topic, data)


def _stored_item(item: Any) -> StoredItem:
    if not (
        isinstance(item, list)
        and len(item) >= 4
        and isinstance(item[0], str)
        and isinstance(item[1], str)
        and uint(item[2])
        and type(item[3]) is bool
    ):
        raise ProtocolError("malformed", "STORED item must be [id, stream, seq, duplicate]")
    return StoredItem(item[0], item[1], item[2], item[3])


def _delivery(item: Any) -> Delivery:
    if not (
        isinstance(item, list)
        and len(item) >= 6
        and isinstance(item[1], str)
        and isinstance(item[2], str)
        and isinstance(item[3], float | int)
        and uints((item[0], item[5]))
    ):
        raise ProtocolError("malformed", "EVENT item must be [seq, id, topic, ts, data, attempt]")
    return Delivery(item[0], item[1], item[2], float(item[3]), item[4], item[5])


def _subscribe(body: dict[str, Any]) -> Subscribe:
    name = "SUBSCRIBE"
    stream = _get(body, name, "stream", str)
    if not valid_name(stream):
        raise ProtocolError("malformed", f"SUBSCRIBE stream must be {SERVICE_RULE}")
    durable = body.get("name")
    if durable is not None and not valid_name(durable):
        raise ProtocolError("malformed", f"SUBSCRIBE name must be nil or {SERVICE_RULE}")
    start = body.get("start", "new")
    if start not in START_POSITIONS:
        raise ProtocolError("malformed", f"SUBSCRIBE start must be one of {START_POSITIONS}")
    seq = body.get("seq")
    if start == "seq" and not (uint(seq) and seq >= 1):
        raise ProtocolError("malformed", "SUBSCRIBE start 'seq' needs seq, an int >= 1")
    when = body.get("time")
    if start == "time" and (not isinstance(when, int | float) or isinstance(when, bool)):
        raise ProtocolError("malformed", "SUBSCRIBE start 'time' needs time, Unix seconds")
    topic = body.get("topic") or ""
    if not isinstance(topic, str) or len(topic.encode()) > MAX_TOPIC_BYTES:
        raise ProtocolError("malformed", "SUBSCRIBE topic must be a string prefix")
    window = _count(body, name, "window")
    if not 1 <= window <= 10_000:
        raise ProtocolError("malformed", "SUBSCRIBE window must be 1..10000")
    ack_wait_ms = _count(body, name, "ack_wait_ms")
    if not 10 <= ack_wait_ms <= 86_400_000:
        raise ProtocolError("malformed", "SUBSCRIBE ack_wait_ms must be 10..86400000")
    return Subscribe(
        stream,
        durable,
        start,
        seq if start == "seq" else None,
        float(when) if start == "time" else None,
        topic,
        window,
        ack_wait_ms,
    )


def decode_request(frames: list[bytes], max_publish_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """``decode`` for the device: what a client may send (PUBLISH, SUBSCRIBE,
    ACK, LIST and HEARTBEAT requests); anything else is ``unknown_command``."""
    code = _command(frames)
    if code is Command.PUBLISH:
        items = publish_items(frames, max_publish_bytes)
        return Publish([publish_item(i) for i in items])
    if code is Command.SUBSCRIBE:
        return _subscribe(_map(frames, "SUBSCRIBE"))
    if code is Command.ACK:
        _bodies(frames, 1, "ACK")
        seqs = _unpack(frames[2], "ACK")
        if not isinstance(seqs, list) or not uints(seqs):
            raise ProtocolError("malformed", "ACK body must be an array of sequence numbers")
        return Ack(seqs)
    if code in (Command.LIST, Command.HEARTBEAT):
        _bodies(frames, 0, f"a client's {code.name}")
        return ListRequest() if code is Command.LIST else Heartbeat()
    raise ProtocolError("unknown_command", f"{code.name} is not a client command")


def _command(frames: list[bytes]) -> Command:
    if len(frames) < 2:
        raise ProtocolError("malformed", f"message has {len(frames)} frames, need at least 2")
    if frames[0] != SIGNATURE:
        if len(frames[0]) == 4 and frames[0][:3] == b"ZFS":
            raise ProtocolError("bad_version", f"unsupported streams version {frames[0]!r}")
        raise ProtocolError("malformed", "first frame is not the streams signature ZFS1")
    if len(frames[1]) != 1:
        raise ProtocolError("malformed", "command frame must be 1 byte")
    code = _COMMANDS.get(frames[1][0])
    if code is None:
        raise ProtocolError("unknown_command", f"unknown command 0x{frames[1][0]:02x}")
    return code


def decode(frames: list[bytes]) -> Message:
    """Decode one message (frames as a DEALER sees them), either direction."""
    code = _command(frames)
    if code in (Command.PUBLISH, Command.SUBSCRIBE, Command.ACK):
        return decode_request(frames)
    if code is Command.STORED:
        return Stored([_stored_item(i) for i in _items(frames, "STORED", MAX_MESSAGE_BYTES)])
    if code is Command.EVENT:
        return Events([_delivery(i) for i in _items(frames, "EVENT", MAX_MESSAGE_BYTES)])
    if code is Command.SUBSCRIBED:
        b = _map(frames, "SUBSCRIBED")
        name = b.get("name")
        return Subscribed(
            _get(b, "SUBSCRIBED", "stream", str),
            name if isinstance(name, str) else None,
            bool(b.get("resumed")),
            _count(b, "SUBSCRIBED", "position"),
            _count(b, "SUBSCRIBED", "first"),
            _count(b, "SUBSCRIBED", "last"),
            _count(b, "SUBSCRIBED", "missed"),
        )
    if code is Command.GAP:
        b = _map(frames, "GAP")
        name = b.get("name")
        return Gap(
            _get(b, "GAP", "stream", str),
            name if isinstance(name, str) else None,
            _count(b, "GAP", "missed"),
            _count(b, "GAP", "first"),
            _count(b, "GAP", "last"),
        )
    if code is Command.LIST:
        if len(frames) == 2:
            return ListRequest()
        _bodies(frames, 1, "LIST")
        info = _unpack(frames[2], "LIST", MAX_MESSAGE_BYTES)
        if not isinstance(info, dict):
            raise ProtocolError("malformed", "LIST reply is not a map")
        return Listing(info)
    if code is Command.HEARTBEAT:
        if len(frames) == 2:
            return Heartbeat()
        return Heartbeat(_get(_map(frames, "HEARTBEAT"), "HEARTBEAT", "device", str))
    b = _map(frames, "REFUSED")
    ids = _get(b, "REFUSED", "ids", list)
    return Refused(ids, _get(b, "REFUSED", "code", str), _get(b, "REFUSED", "reason", str))
