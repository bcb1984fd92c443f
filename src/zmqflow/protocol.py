"""ZFP/1 wire protocol: frames to messages and back (see docs/protocol.md).

Contract: ``encode(msg)`` returns the frames a DEALER sends (no routing id,
no delimiter); ``decode(frames)`` is its inverse and raises
``ProtocolError`` with a refusal code for anything it cannot use.
Maps are encoded with their keys in the documented order, so encoding is
byte-exact and matches docs/protocol-vectors/.

Batched commands: TASK, RESULT and FAILED (both sides) carry 1..N items, the
way SUBMIT carries tasks. Each item has its own class (``Dispatch``,
``Done``, ``Error``, ``Result``, ``Failed``); the message is a list of them,
named after what it carries: ``Tasks`` (TASK), ``WorkerResults`` /
``WorkerFailures`` (worker RESULT / FAILED), ``Results`` / ``Failures``
(client RESULT / FAILED). ``encode`` writes a batch as one message whatever
its size; ``encode_split`` cuts it into messages of at most ``max_items``
items and ``MAX_MESSAGE_BYTES`` bytes, which is what senders use.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import msgpack

CLIENT_SIGNATURE = b"ZFC1"
WORKER_SIGNATURE = b"ZFW1"

MAX_MAP_BYTES = 64 * 1024
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_BATCH = 1000  # items per batched message, unless the forwarder's max_batch says otherwise

_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")
_SERVICE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


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


def valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID_RE.match(value) is not None


def valid_service(value: object) -> bool:
    return isinstance(value, str) and _SERVICE_RE.match(value) is not None


# --------------------------------------------------------------- client side


@dataclass(slots=True)
class Task:
    """One task as a client submits it."""

    id: str
    service: str
    payload: bytes = b""
    key: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    retries: int | None = None

    def header(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "key": self.key,
            "headers": self.headers,
            "retries": self.retries,
        }


@dataclass(slots=True)
class Submit:
    tasks: list[Task]


@dataclass(slots=True)
class Accepted:
    ids: list[str]


@dataclass(slots=True)
class Result:
    """One item of a client RESULT: a task's answer and its payload."""

    id: str
    worker: str
    attempts: int
    cached: bool
    payload: bytes


@dataclass(slots=True)
class Failed:
    """One item of a client FAILED: a task that ended without a result."""

    id: str
    code: str
    error: str
    worker: str | None
    attempts: int


@dataclass(slots=True)
class Results:
    """RESULT (0x03): 1..N answers for one client."""

    items: list[Result]


@dataclass(slots=True)
class Failures:
    """FAILED (0x04): 1..N failures for one client."""

    items: list[Failed]


@dataclass(slots=True)
class Refused:
    ids: list[str]
    code: str
    reason: str


@dataclass(slots=True)
class Heartbeat:
    pass


@dataclass(slots=True)
class Collect:
    ids: list[str]


@dataclass(slots=True)
class StatusRequest:
    pass


@dataclass(slots=True)
class Status:
    info: dict[str, Any]


@dataclass(slots=True)
class Retry:
    ids: list[str]


# --------------------------------------------------------------- worker side


@dataclass(slots=True)
class Ready:
    worker: str
    language: str
    services: list[str]
    credit: int
    inflight: list[str] = field(default_factory=list)
    version: str = ""
    pid: int = 0
    host: str = ""


@dataclass(slots=True)
class Dispatch:
    """One item of a TASK: a task as the forwarder hands it to a worker."""

    id: str
    service: str
    headers: dict[str, Any]
    attempt: int
    payload: bytes


@dataclass(slots=True)
class Done:
    """One item of a worker RESULT: the handler's output for a task."""

    id: str
    payload: bytes


@dataclass(slots=True)
class Error:
    """One item of a worker FAILED: the handler's error text for a task."""

    id: str
    error: str


@dataclass(slots=True)
class Tasks:
    """TASK (0x12): 1..N tasks for one worker, never more than its free credit."""

    items: list[Dispatch]


@dataclass(slots=True)
class WorkerResults:
    """RESULT (0x13): 1..N handler outputs from one worker."""

    items: list[Done]


@dataclass(slots=True)
class WorkerFailures:
    """FAILED (0x14): 1..N handler errors from one worker."""

    items: list[Error]


@dataclass(slots=True)
class WorkerHeartbeat:
    pass


@dataclass(slots=True)
class Disconnect:
    reason: str


Message = (
    Submit
    | Accepted
    | Results
    | Failures
    | Refused
    | Heartbeat
    | Collect
    | StatusRequest
    | Status
    | Retry
    | Ready
    | Tasks
    | WorkerResults
    | WorkerFailures
    | WorkerHeartbeat
    | Disconnect
)
Batch = Tasks | WorkerResults | WorkerFailures | Results | Failures
Item = Dispatch | Done | Error | Result | Failed


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _unpack(frame: bytes) -> Any:
    if len(frame) > MAX_MAP_BYTES:
        raise ProtocolError("malformed", f"body frame of {len(frame)} bytes exceeds 64 KiB")
    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError("malformed", f"body is not valid msgpack: {exc}") from None


_COMMAND_FRAMES = [bytes((i,)) for i in range(256)]
_COMMANDS = {int(c): c for c in Command}


def _cmd(code: Command) -> bytes:
    return _COMMAND_FRAMES[code]


def _dispatch_frames(d: Dispatch) -> list[bytes]:
    body = {"id": d.id, "service": d.service, "headers": d.headers, "attempt": d.attempt}
    return [_pack(body), d.payload]


def _done_frames(d: Done) -> list[bytes]:
    return [_pack({"id": d.id}), d.payload]


def _error_frames(e: Error) -> list[bytes]:
    return [_pack({"id": e.id, "error": e.error})]


def _result_frames(r: Result) -> list[bytes]:
    body = {"id": r.id, "worker": r.worker, "attempts": r.attempts, "cached": r.cached}
    return [_pack(body), r.payload]


def _failed_frames(f: Failed) -> list[bytes]:
    body = {
        "id": f.id,
        "code": f.code,
        "error": f.error,
        "worker": f.worker,
        "attempts": f.attempts,
    }
    return [_pack(body)]


# batch class -> (signature, command frame, body frames of one item)
_BATCHES: dict[type, tuple[bytes, bytes, Callable[[Any], list[bytes]]]] = {
    Tasks: (WORKER_SIGNATURE, _cmd(Command.W_TASK), _dispatch_frames),
    WorkerResults: (WORKER_SIGNATURE, _cmd(Command.W_RESULT), _done_frames),
    WorkerFailures: (WORKER_SIGNATURE, _cmd(Command.W_FAILED), _error_frames),
    Results: (CLIENT_SIGNATURE, _cmd(Command.RESULT), _result_frames),
    Failures: (CLIENT_SIGNATURE, _cmd(Command.FAILED), _failed_frames),
}


def encode_split(
    msg: Batch, max_items: int = MAX_BATCH, max_bytes: int = MAX_MESSAGE_BYTES
) -> list[list[bytes]]:
    """``msg`` as one or more messages, items in order (none for an empty batch).

    Each message holds at most ``max_items`` items, and its frames add up to at
    most ``max_bytes`` unless a single item is larger on its own (it then
    travels alone). This is the size rule of docs/protocol.md for senders.
    """
    sig, cmd, item_frames = _BATCHES[type(msg)]
    out: list[list[bytes]] = []
    frames: list[bytes] = []
    count = size = 0
    for item in msg.items:
        body = item_frames(item)
        length = sum(map(len, body))
        if count and (count >= max_items or size + length > max_bytes):
            out.append(frames)
            count = 0
        if not count:
            frames = [sig, cmd]
            size = len(sig) + len(cmd)
        frames.extend(body)
        count += 1
        size += length
    if count:
        out.append(frames)
    return out


def encode(msg: Message) -> list[bytes]:
    """Frames for ``msg``, signature first; a batch becomes one message, however large."""
    batch = _BATCHES.get(type(msg))
    if batch is not None:
        items = msg.items  # type: ignore[union-attr]
        if not items:
            raise ValueError(f"{type(msg).__name__} needs at least one item")
        sig, cmd, item_frames = batch
        frames = [sig, cmd]
        for item in items:
            frames.extend(item_frames(item))
        return frames
    match msg:
        case Accepted(ids):
            return [CLIENT_SIGNATURE, _cmd(Command.ACCEPTED), _pack(ids)]
        case Submit(tasks):
            frames = [CLIENT_SIGNATURE, _cmd(Command.SUBMIT)]
            for task in tasks:
                frames.append(_pack(task.header()))
                frames.append(task.payload)
            return frames
        case Refused(ids, code, reason):
            body = {"ids": ids, "code": code, "reason": reason}
            return [CLIENT_SIGNATURE, _cmd(Command.REFUSED), _pack(body)]
        case Heartbeat():
            return [CLIENT_SIGNATURE, _cmd(Command.HEARTBEAT)]
        case Collect(ids):
            return [CLIENT_SIGNATURE, _cmd(Command.COLLECT), _pack(ids)]
        case StatusRequest():
            return [CLIENT_SIGNATURE, _cmd(Command.STATUS)]
        case Status(info):
            return [CLIENT_SIGNATURE, _cmd(Command.STATUS), _pack(info)]
        case Retry(ids):
            return [CLIENT_SIGNATURE, _cmd(Command.RETRY), _pack(ids)]
        case Ready():
            body = {
                "worker": msg.worker,
                "language": msg.language,
                "services": msg.services,
                "credit": msg.credit,
                "inflight": msg.inflight,
                "version": msg.version,
                "pid": msg.pid,
                "host": msg.host,
            }
            return [WORKER_SIGNATURE, _cmd(Command.W_READY), _pack(body)]
        case WorkerHeartbeat():
            return [WORKER_SIGNATURE, _cmd(Command.W_HEARTBEAT)]
        case Disconnect(reason):
            return [WORKER_SIGNATURE, _cmd(Command.W_DISCONNECT), _pack({"reason": reason})]
    raise TypeError(f"not a protocol message: {msg!r}")


# ------------------------------------------------------------------ decoding


def _field(body: Any, name: str, kinds: type | tuple[type, ...]) -> Any:
    if not isinstance(body, dict):
        raise ProtocolError("malformed", "body is not a map")
    value = body.get(name)
    if not isinstance(value, kinds):
        raise ProtocolError("malformed", f"field {name!r} missing or of the wrong type")
    return value


def _id_list(frame: bytes) -> list[str]:
    ids = _unpack(frame)
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ProtocolError("malformed", "expected an array of task ids")
    return ids


def _body_count(frames: list[bytes], count: int, name: str) -> None:
    if len(frames) - 2 != count:
        raise ProtocolError("malformed", f"{name} takes {count} body frames, got {len(frames) - 2}")


def _pairs(frames: list[bytes], name: str) -> list[bytes]:
    """The body of a batch of ``{map}, payload`` pairs: at least one, whole pairs."""
    body = frames[2:]
    if not body or len(body) % 2:
        raise ProtocolError("malformed", f"{name} takes 1 or more header/payload pairs")
    return body


def _singles(frames: list[bytes], name: str) -> list[bytes]:
    """The body of a batch of ``{map}`` frames: at least one."""
    if len(frames) < 3:
        raise ProtocolError("malformed", f"{name} takes 1 or more body frames")
    return frames[2:]


def _decode_dispatch(header_frame: bytes, payload: bytes) -> Dispatch:
    b = _unpack(header_frame)
    task_id = _field(b, "id", str)
    try:
        return Dispatch(
            task_id,
            _field(b, "service", str),
            _field(b, "headers", dict),
            _field(b, "attempt", int),
            payload,
        )
    except ProtocolError as exc:
        raise ProtocolError(exc.code, exc.reason, [task_id]) from None


def decode_task_items(frames: list[bytes]) -> list[Dispatch | ProtocolError]:
    """TASK body decoded item by item, so one bad task does not sink the batch.

    A bad item is a ``ProtocolError`` whose ``ids`` hold its id when it could
    be read (the worker answers it FAILED ``malformed task: ...``).
    """
    body = _pairs(frames, "TASK")
    out: list[Dispatch | ProtocolError] = []
    for i in range(0, len(body), 2):
        try:
            out.append(_decode_dispatch(body[i], body[i + 1]))
        except ProtocolError as exc:
            out.append(exc)
    return out


def _decode_result(header_frame: bytes, payload: bytes) -> Result:
    b = _unpack(header_frame)
    return Result(
        _field(b, "id", str),
        _field(b, "worker", str),
        _field(b, "attempts", int),
        bool(b.get("cached", False)),
        payload,
    )


def _decode_failed(frame: bytes) -> Failed:
    b = _unpack(frame)
    worker = b.get("worker") if isinstance(b, dict) else None
    return Failed(
        _field(b, "id", str),
        _field(b, "code", str),
        _field(b, "error", str),
        worker if isinstance(worker, str) else None,
        _field(b, "attempts", int),
    )


def _decode_task(header_frame: bytes, payload: bytes) -> Task:
    header = _unpack(header_frame)
    task_id = _field(header, "id", str)
    key = header.get("key")
    headers = header.get("headers") or {}
    retries = header.get("retries")
    if key is not None and not isinstance(key, str):
        raise ProtocolError("malformed", "key must be a string or nil", [task_id])
    if not isinstance(headers, dict):
        raise ProtocolError("malformed", "headers must be a map", [task_id])
    if retries is not None and (not isinstance(retries, int) or retries < 0):
        raise ProtocolError("malformed", "retries must be a non-negative int", [task_id])
    service = header.get("service")
    if not isinstance(service, str):
        raise ProtocolError("malformed", "service must be a string", [task_id])
    return Task(task_id, service, payload, key, headers, retries)


def decode_submit_tasks(frames: list[bytes]) -> list[Task | ProtocolError]:
    """SUBMIT body decoded task by task, so one bad task does not sink the batch."""
    body = frames[2:]
    if not body or len(body) % 2:
        raise ProtocolError("malformed", "SUBMIT takes header/payload pairs")
    out: list[Task | ProtocolError] = []
    for i in range(0, len(body), 2):
        try:
            out.append(_decode_task(body[i], body[i + 1]))
        except ProtocolError as exc:
            out.append(exc)
    return out


def decode(frames: list[bytes]) -> Message:
    """Decode one message (frames as a DEALER sees them)."""
    if len(frames) < 2:
        raise ProtocolError("malformed", f"message has {len(frames)} frames, need at least 2")
    sig, cmd = frames[0], frames[1]
    if sig not in (CLIENT_SIGNATURE, WORKER_SIGNATURE):
        if len(sig) == 4 and sig[:3] in (b"ZFC", b"ZFW"):
            raise ProtocolError("bad_version", f"unsupported protocol version {sig!r}")
        raise ProtocolError("malformed", "first frame is not a zmqflow signature")
    if len(cmd) != 1:
        raise ProtocolError("malformed", "command frame must be 1 byte")
    code = _COMMANDS.get(cmd[0])
    if code is None:
        raise ProtocolError("unknown_command", f"unknown command 0x{cmd[0]:02x}")
    if (sig == CLIENT_SIGNATURE) != (code < 0x10):
        raise ProtocolError("unknown_command", f"command {code.name} under signature {sig!r}")

    if code is Command.SUBMIT:
        tasks = decode_submit_tasks(frames)
        for item in tasks:
            if isinstance(item, ProtocolError):
                raise item
        return Submit([t for t in tasks if isinstance(t, Task)])
    if code is Command.ACCEPTED:
        _body_count(frames, 1, "ACCEPTED")
        return Accepted(_id_list(frames[2]))
    if code is Command.RESULT:
        body = _pairs(frames, "RESULT")
        return Results([_decode_result(body[i], body[i + 1]) for i in range(0, len(body), 2)])
    if code is Command.FAILED:
        return Failures([_decode_failed(frame) for frame in _singles(frames, "FAILED")])
    if code is Command.REFUSED:
        _body_count(frames, 1, "REFUSED")
        b = _unpack(frames[2])
        return Refused(_field(b, "ids", list), _field(b, "code", str), _field(b, "reason", str))
    if code is Command.HEARTBEAT:
        _body_count(frames, 0, "HEARTBEAT")
        return Heartbeat()
    if code is Command.COLLECT:
        _body_count(frames, 1, "COLLECT")
        return Collect(_id_list(frames[2]))
    if code is Command.STATUS:
        if len(frames) == 2:
            return StatusRequest()
        _body_count(frames, 1, "STATUS")
        info = _unpack(frames[2]) if len(frames[2]) <= MAX_MAP_BYTES else None
        if not isinstance(info, dict):
            raise ProtocolError("malformed", "STATUS reply is not a map")
        return Status(info)
    if code is Command.RETRY:
        _body_count(frames, 1, "RETRY")
        return Retry(_id_list(frames[2]))
    if code is Command.W_READY:
        _body_count(frames, 1, "READY")
        b = _unpack(frames[2])
        services = _field(b, "services", list)
        if not services or not all(valid_service(s) for s in services):
            raise ProtocolError("malformed", "READY needs one or more valid service names")
        credit = _field(b, "credit", int)
        if credit < 0:
            raise ProtocolError("malformed", "credit must be >= 0")
        inflight = b.get("inflight") or []
        if not isinstance(inflight, list) or not all(isinstance(i, str) for i in inflight):
            raise ProtocolError("malformed", "inflight must be an array of ids")
        pid = b.get("pid") or 0
        if not isinstance(pid, int):
            raise ProtocolError("malformed", "pid must be an int")
        return Ready(
            _field(b, "worker", str),
            _field(b, "language", str),
            services,
            credit,
            inflight,
            str(b.get("version") or ""),
            pid,
            str(b.get("host") or ""),
        )
    if code is Command.W_TASK:
        dispatches = decode_task_items(frames)
        for item in dispatches:
            if isinstance(item, ProtocolError):
                raise item
        return Tasks([d for d in dispatches if isinstance(d, Dispatch)])
    if code is Command.W_RESULT:
        body = _pairs(frames, "RESULT")
        return WorkerResults(
            [Done(_field(_unpack(body[i]), "id", str), body[i + 1]) for i in range(0, len(body), 2)]
        )
    if code is Command.W_FAILED:
        items = []
        for frame in _singles(frames, "FAILED"):
            b = _unpack(frame)
            items.append(Error(_field(b, "id", str), _field(b, "error", str)))
        return WorkerFailures(items)
    if code is Command.W_HEARTBEAT:
        _body_count(frames, 0, "HEARTBEAT")
        return WorkerHeartbeat()
    # W_DISCONNECT
    _body_count(frames, 1, "DISCONNECT")
    return Disconnect(_field(_unpack(frames[2]), "reason", str))
