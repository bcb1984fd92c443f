"""ZFP/2 wire protocol: frames to messages and back (see docs/protocol.md).

Contract: ``encode(msg)`` returns the frames a DEALER sends (no routing id,
no delimiter); ``decode(frames)`` is its inverse and raises
``ProtocolError`` with a refusal code for anything it cannot use.
Maps are encoded with their keys in the documented order and batch items as
arrays in the documented field order, so encoding is byte-exact and matches
docs/protocol-vectors/.

Batched commands: SUBMIT, TASK, RESULT and FAILED (both sides) carry 1..N
items in ONE body frame, a msgpack array of item arrays (payloads inside as
``bin``): one frame per message however many items, because per-frame
costs dominated the hot path of the first version. Each item has its own
class (``Task``, ``Dispatch``, ``Done``, ``Error``, ``Result``, ``Failed``);
the message is a list of them, named after what it carries: ``Submit``
(SUBMIT), ``Tasks`` (TASK), ``WorkerResults`` / ``WorkerFailures`` (worker
RESULT / FAILED), ``Results`` / ``Failures`` (client RESULT / FAILED).
``encode`` writes a batch as one message whatever its size; ``encode_split``
cuts it into messages of at most ``max_items`` items and
``MAX_MESSAGE_BYTES`` bytes, which is what senders use. The id lists
(ACCEPTED, REFUSED, COLLECT, RETRY, and READY's inflight) are map or array frames, under the
64 KiB frame limit: ``encode_split`` cuts those into messages whose body
fits it (``split_ids``), so no sender emits a frame its peer refuses.

Each field rule is written once: ``uints`` for every counting field,
``valid_ids`` / ``valid_service`` for names, and one usual-item test per
batched kind (``usual_tasks``, ``usual_dispatches``, ``usual_dones``,
``usual_results``) that both the hot-path decoders (``decode_worker_results``,
``decode_client_results``, ``decode_task_items``, the forwarder's SUBMIT) and
the checked item decoders use: an item that passes is decoded as is, any
other is checked field by field, which says what is wrong. The name rule and
the usual tests are written for a whole batch (one call per message, not per
item, on the hot paths); the test of one item is the batch of that one item.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

import msgpack

# The limits and name rules live in zmqflow.limits; their protocol names stay here.
from zmqflow.limits import (
    MAX_BATCH,
    MAX_MAP_BYTES,
    MAX_MESSAGE_BYTES,
    uint,
    uints,
    valid_id,
    valid_service,
)
from zmqflow.limits import (
    valid_ids as valid_ids,  # re-exported: the protocol's name for the rule
)

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
    # True only on a task's first SUBMIT: the forwarder then skips looking for
    # a stored answer under its id (docs/protocol.md, SUBMIT semantics 4)
    fresh: bool = False


@dataclass(slots=True)
class Submit:
    """SUBMIT (0x01): 1..max_batch tasks."""

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
    """HEARTBEAT (0x06). The forwarder's reply names the forwarder instance
    (``forwarder``), so a client sees a restart at once; a client's has none.
    A reply that also says the forwarder's limits is a ``HeartbeatReply``."""

    forwarder: str | None = None


@dataclass(slots=True)
class HeartbeatReply(Heartbeat):
    """The forwarder's HEARTBEAT reply with its ``max_batch`` (tasks per
    SUBMIT), so a client cuts its batches to fit (a later key of the map:
    a reply without it decodes as a plain ``Heartbeat``)."""

    max_batch: int = MAX_BATCH


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
Batch = Submit | Tasks | WorkerResults | WorkerFailures | Results | Failures
# messages whose ids travel in one map or array frame (READY: its inflight list)
IdList = Accepted | Collect | Retry | Refused | Ready


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


# Batch items travel as msgpack arrays, fields in the order of their class.
def _task_array(t: Task) -> list[Any]:
    return [t.id, t.service, t.payload, t.key, t.headers, t.retries, t.fresh]


def _dispatch_array(d: Dispatch) -> list[Any]:
    return [d.id, d.service, d.headers, d.attempt, d.payload]


def _done_array(d: Done) -> list[Any]:
    return [d.id, d.payload]


def _error_array(e: Error) -> list[Any]:
    return [e.id, e.error]


def _result_array(r: Result) -> list[Any]:
    return [r.id, r.worker, r.attempts, r.cached, r.payload]


def _failed_array(f: Failed) -> list[Any]:
    return [f.id, f.code, f.error, f.worker, f.attempts]


# batch class -> (signature, command frame, item as an array)
_BATCHES: dict[type, tuple[bytes, bytes, Callable[[Any], list[Any]]]] = {
    Submit: (CLIENT_SIGNATURE, _cmd(Command.SUBMIT), _task_array),
    Tasks: (WORKER_SIGNATURE, _cmd(Command.W_TASK), _dispatch_array),
    WorkerResults: (WORKER_SIGNATURE, _cmd(Command.W_RESULT), _done_array),
    WorkerFailures: (WORKER_SIGNATURE, _cmd(Command.W_FAILED), _error_array),
    Results: (CLIENT_SIGNATURE, _cmd(Command.RESULT), _result_array),
    Failures: (CLIENT_SIGNATURE, _cmd(Command.FAILED), _failed_array),
}


def _items(msg: Batch) -> list[Any]:
    return msg.tasks if isinstance(msg, Submit) else msg.items


# Item arrays built directly, for senders on the hot path (the forwarder's
# outboxes): the same fields, in the same order, as the classes above.
def dispatch_items(tasks: Iterable[Any]) -> list[list[Any]]:
    """TASK items (``Dispatch``) of the forwarder's tasks: objects with ``id``,
    ``service``, ``headers``, ``attempts`` (the attempt this is) and ``payload``.
    One call for a batch."""
    return [[t.id, t.service, t.headers, t.attempts, t.payload] for t in tasks]


def result_item(
    task_id: str, worker: str, attempts: int, cached: bool, payload: bytes
) -> list[Any]:
    """A client RESULT item (``Result``)."""
    return [task_id, worker, attempts, cached, payload]


def failed_item(
    task_id: str, code: str, error: str, worker: str | None, attempts: int
) -> list[Any]:
    """A client FAILED item (``Failed``)."""
    return [task_id, code, error, worker, attempts]


def _size_guess(item: list[Any]) -> int:
    """Bytes an item array takes once packed, near enough for splitting (headers aside)."""
    return sum(len(f) for f in item if isinstance(f, bytes | str)) + 64


def encode_split(
    msg: Batch | IdList, max_items: int = MAX_BATCH, max_bytes: int = MAX_MESSAGE_BYTES
) -> list[list[bytes]]:
    """``msg`` as one or more messages, items in order (none for an empty batch).

    Each message holds at most ``max_items`` items, and its frames add up to at
    most ``max_bytes`` unless a single item is larger on its own (it then
    travels alone). An id list (ACCEPTED, REFUSED, COLLECT, RETRY, READY's
    inflight) is cut so each body frame stays within ``MAX_MAP_BYTES``. This is the size rule of
    docs/protocol.md for senders.
    """
    if isinstance(msg, Accepted | Collect | Retry | Refused | Ready):
        whole = encode(msg)
        if len(whole[2]) <= MAX_MAP_BYTES:  # the usual case: packed once, no count per id
            return [whole]
        return [encode(part) for part in _split_id_list(msg)]
    as_array = _BATCHES[type(msg)][2]
    return encode_items(type(msg), [as_array(item) for item in _items(msg)], max_items, max_bytes)


def encode_items(
    kind: type,
    items: list[list[Any]],
    max_items: int = MAX_BATCH,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> list[list[bytes]]:
    """Like ``encode_split``, for a batch of ``kind`` given as item arrays.

    Items are grouped by a size guess; a packed group that still exceeds the
    cap (large headers) is halved until it fits.
    """
    sig, cmd, _ = _BATCHES[kind]
    budget = max_bytes - len(sig) - len(cmd)
    out: list[list[bytes]] = []

    def emit(chunk: list[Any]) -> None:
        body = _pack(chunk)
        if len(body) > budget and len(chunk) > 1:
            half = len(chunk) // 2
            emit(chunk[:half])
            emit(chunk[half:])
        else:
            out.append([sig, cmd, body])

    if not items:
        return out
    if len(items) <= max_items:  # the usual case: one message, packed once
        body = _pack(items)
        if len(body) <= budget:
            return [[sig, cmd, body]]
    chunk: list[Any] = []
    size = 0
    for item in items:
        guess = _size_guess(item)
        if chunk and (len(chunk) >= max_items or size + guess > budget):
            emit(chunk)
            chunk, size = [], 0
        chunk.append(item)
        size += guess
    if chunk:
        emit(chunk)
    return out


def _packed_str_size(value: str) -> int:
    """Bytes msgpack takes for a str: its UTF-8 length plus its header."""
    n = len(value.encode())
    return n + (1 if n < 32 else 2 if n < 0x100 else 3 if n < 0x10000 else 5)


def split_ids(ids: list[str], budget: int = MAX_MAP_BYTES) -> list[list[str]]:
    """``ids`` in order, in runs whose msgpack array takes at most ``budget``
    bytes (an id too large on its own travels alone); ``[[]]`` for none."""
    runs: list[list[str]] = []
    run: list[str] = []
    size = 5  # the largest array header
    for task_id in ids:
        item = _packed_str_size(task_id)
        if run and size + item > budget:
            runs.append(run)
            run, size = [], 5
        run.append(task_id)
        size += item
    if run or not runs:
        runs.append(run)
    return runs


def _split_id_list(msg: IdList) -> list[IdList]:
    """An id-list message as messages whose body frame fits ``MAX_MAP_BYTES``.
    An empty list stays one message: it means something (REFUSED not tied
    to an id, RETRY of every dead letter)."""
    if isinstance(msg, Refused):
        overhead = len(_pack({"ids": [], "code": msg.code, "reason": msg.reason}))
        runs = split_ids(msg.ids, MAX_MAP_BYTES - overhead)
        return [Refused(run, msg.code, msg.reason) for run in runs]
    if isinstance(msg, Ready):
        # a READY again from a known worker adds its inflight ids (the broker's _ready)
        overhead = len(encode(replace(msg, inflight=[]))[2])
        return [
            replace(msg, inflight=run) for run in split_ids(msg.inflight, MAX_MAP_BYTES - overhead)
        ]
    return [type(msg)(run) for run in split_ids(msg.ids)]


def encode(msg: Message) -> list[bytes]:
    """Frames for ``msg``, signature first; a batch becomes one message, however large."""
    batch = _BATCHES.get(type(msg))
    if batch is not None:
        items = _items(msg)  # type: ignore[arg-type]
        if not items:
            raise ValueError(f"{type(msg).__name__} needs at least one item")
        sig, cmd, as_array = batch
        return [sig, cmd, _pack([as_array(item) for item in items])]
    match msg:
        case Accepted(ids):
            return [CLIENT_SIGNATURE, _cmd(Command.ACCEPTED), _pack(ids)]
        case Refused(ids, code, reason):
            body = {"ids": ids, "code": code, "reason": reason}
            return [CLIENT_SIGNATURE, _cmd(Command.REFUSED), _pack(body)]
        case HeartbeatReply(forwarder, max_batch):
            body = {"forwarder": forwarder, "max_batch": max_batch}
            return [CLIENT_SIGNATURE, _cmd(Command.HEARTBEAT), _pack(body)]
        case Heartbeat(forwarder):
            if forwarder is None:
                return [CLIENT_SIGNATURE, _cmd(Command.HEARTBEAT)]
            return [CLIENT_SIGNATURE, _cmd(Command.HEARTBEAT), _pack({"forwarder": forwarder})]
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


def _batch_body(frames: list[bytes], name: str) -> list[Any]:
    """The items of a batched command: one body frame, a non-empty msgpack array."""
    if len(frames) != 3:
        raise ProtocolError(
            "malformed", f"{name} takes 1 body frame (an array of items), got {len(frames) - 2}"
        )
    try:
        items = msgpack.unpackb(frames[2], raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError("malformed", f"{name} body is not valid msgpack: {exc}") from None
    if not isinstance(items, list) or not items:
        raise ProtocolError("malformed", f"{name} body must be a non-empty array of items")
    return items


def _fields(item: Any, name: str, count: int) -> list[Any]:
    """An item's first ``count`` fields (more are allowed: later versions may add some).

    A ``ProtocolError`` carries the item's id when it can be read.
    """
    if not isinstance(item, list) or len(item) < count:
        item_id = item[0] if isinstance(item, list) and item and valid_id(item[0]) else None
        raise ProtocolError(
            "malformed",
            f"{name} item must be an array of at least {count} fields",
            [item_id] if item_id else None,
        )
    if not isinstance(item[0], str):
        raise ProtocolError("malformed", f"{name} item id must be a string")
    return item


def _wrong(name: str, field_name: str, item_id: str) -> ProtocolError:
    return ProtocolError(
        "malformed", f"{name} item field {field_name!r} has the wrong type", [item_id]
    )


# The usual items: one test each, which the hot-path decoders and the checked
# decoders below share. An item that passes is valid; one that does not takes
# the checked decoder, which says what is wrong (or accepts a rarer valid form).
# Each test is written for a whole batch (one loop, inlined: a call per item
# costs as much as the test); the test of one item is the batch of that item.


def usual_tasks(items: Sequence[Any]) -> bool:
    """Every item is a SUBMIT item of the usual task: ``id``, ``service``
    strings, a ``bin`` payload, no key, empty headers, no retries (``fresh``
    and later fields may follow). Ids and services are not checked against
    their patterns here: the forwarder does that against the services it knows."""
    for item in items:
        if not (
            type(item) is list
            and len(item) >= 6
            and type(item[0]) is str
            and type(item[1]) is str
            and type(item[2]) is bytes
            and item[3] is None
            and type(item[4]) is dict
            and not item[4]
            and item[5] is None
        ):
            return False
    return True


def usual_task(item: Any) -> bool:
    """``usual_tasks`` of one item."""
    return usual_tasks((item,))


def usual_dispatches(items: Sequence[Any]) -> bool:
    """Every item is a TASK item with every field of the right type."""
    for item in items:
        if not (
            type(item) is list
            and len(item) >= 5
            and type(item[0]) is str
            and type(item[1]) is str
            and type(item[2]) is dict
            and type(item[4]) is bytes
        ):
            return False
    return uints([item[3] for item in items])


def usual_dispatch(item: Any) -> bool:
    """``usual_dispatches`` of one item."""
    return usual_dispatches((item,))


def usual_dones(items: Sequence[Any]) -> bool:
    """Every item is a worker RESULT item with every field of the right type."""
    for item in items:
        if not (
            type(item) is list
            and len(item) >= 2
            and type(item[0]) is str
            and type(item[1]) is bytes
        ):
            return False
    return True


def usual_done(item: Any) -> bool:
    """``usual_dones`` of one item."""
    return usual_dones((item,))


def usual_results(items: Sequence[Any]) -> bool:
    """Every item is a client RESULT item with every field of the right type."""
    for item in items:
        if not (
            type(item) is list
            and len(item) >= 5
            and type(item[0]) is str
            and type(item[1]) is str
            and type(item[3]) is bool
            and type(item[4]) is bytes
        ):
            return False
    return uints([item[2] for item in items])


def usual_result(item: Any) -> bool:
    """``usual_results`` of one item."""
    return usual_results((item,))


def _dispatch_from(item: Any) -> Dispatch:
    if usual_dispatch(item):
        return Dispatch(item[0], item[1], item[2], item[3], item[4])
    task_id, service, headers, attempt, payload = _fields(item, "TASK", 5)[:5]
    if not isinstance(service, str):
        raise _wrong("TASK", "service", task_id)
    if not isinstance(headers, dict):
        raise _wrong("TASK", "headers", task_id)
    if not uint(attempt):
        raise _wrong("TASK", "attempt", task_id)
    if not isinstance(payload, bytes):
        raise _wrong("TASK", "payload", task_id)
    return Dispatch(task_id, service, headers, attempt, payload)


def _task_from(item: Any) -> Task:
    if usual_task(item):
        return Task(item[0], item[1], item[2], None, {}, None, is_fresh(item))
    task_id, service, payload, key, headers, retries = _fields(item, "SUBMIT", 6)[:6]
    if not isinstance(service, str):
        raise _wrong("SUBMIT", "service", task_id)
    if not isinstance(payload, bytes):
        raise _wrong("SUBMIT", "payload", task_id)
    if key is not None and not isinstance(key, str):
        raise ProtocolError("malformed", "key must be a string or nil", [task_id])
    if not isinstance(headers, dict):
        raise ProtocolError("malformed", "headers must be a map", [task_id])
    if headers and len(_pack(headers)) > MAX_MAP_BYTES:
        raise ProtocolError("malformed", "headers exceed 64 KiB once encoded", [task_id])
    if retries is not None and not uint(retries):
        raise ProtocolError("malformed", "retries must be a non-negative int or nil", [task_id])
    return Task(task_id, service, payload, key, headers, retries, is_fresh(item))


def all_fresh(items: Sequence[list[Any]]) -> bool:
    """Every SUBMIT item's ``fresh`` flag is set: it came with a later revision
    of version 2, so absent means false, and only ``true`` is true."""
    for item in items:  # noqa: SIM110 (a loop: a generator costs a frame per item)
        if not (len(item) > 6 and item[6] is True):
            return False
    return True


def is_fresh(item: list[Any]) -> bool:
    """A SUBMIT item's ``fresh`` flag (``all_fresh`` of one item)."""
    return all_fresh((item,))


def _result_from(item: Any) -> Result:
    if usual_result(item):
        return Result(item[0], item[1], item[2], item[3], item[4])
    task_id, worker, attempts, cached, payload = _fields(item, "RESULT", 5)[:5]
    if not isinstance(worker, str):
        raise _wrong("RESULT", "worker", task_id)
    if not uint(attempts):
        raise _wrong("RESULT", "attempts", task_id)
    if type(cached) is not bool:
        raise _wrong("RESULT", "cached", task_id)
    if not isinstance(payload, bytes):
        raise _wrong("RESULT", "payload", task_id)
    return Result(task_id, worker, attempts, cached, payload)


def _failed_from(item: Any) -> Failed:
    task_id, code, error, worker, attempts = _fields(item, "FAILED", 5)[:5]
    if not isinstance(code, str):
        raise _wrong("FAILED", "code", task_id)
    if not isinstance(error, str):
        raise _wrong("FAILED", "error", task_id)
    if worker is not None and not isinstance(worker, str):
        raise _wrong("FAILED", "worker", task_id)
    if not uint(attempts):
        raise _wrong("FAILED", "attempts", task_id)
    return Failed(task_id, code, error, worker, attempts)


def _done_from(item: Any) -> Done:
    if usual_done(item):
        return Done(item[0], item[1])
    task_id, payload = _fields(item, "RESULT", 2)[:2]
    if not isinstance(payload, bytes):
        raise _wrong("RESULT", "payload", task_id)
    return Done(task_id, payload)


def _error_from(item: Any) -> Error:
    task_id, error = _fields(item, "FAILED", 2)[:2]
    if not isinstance(error, str):
        raise _wrong("FAILED", "error", task_id)
    return Error(task_id, error)


def _each(items: list[Any], decode_item: Callable[[Any], Any]) -> list[Any]:
    """Decode item by item: a bad one becomes its ``ProtocolError``, the rest go on."""
    out: list[Any] = []
    for item in items:
        try:
            out.append(decode_item(item))
        except ProtocolError as exc:
            out.append(exc)
    return out


def _all(items: list[Any], decode_item: Callable[[Any], Any]) -> list[Any]:
    """Decode every item; the first bad one sinks the message."""
    return [decode_item(item) for item in items]


def _usual_items(
    frames: list[bytes], usual: Callable[[Sequence[Any]], bool]
) -> list[list[Any]] | None:
    """A batched message's items as arrays when it is one body frame of a
    non-empty array whose items all pass ``usual`` (a batch test); None otherwise, and for
    anything malformed: the caller then takes ``decode`` (or the item-by-item
    decoder) and its error reporting. The hot paths use this, without an
    object per item."""
    if len(frames) != 3:
        return None
    try:
        items = msgpack.unpackb(frames[2], raw=False, strict_map_key=True)
    except Exception:  # msgpack raises several unrelated types
        return None
    if type(items) is not list or not items or not usual(items):
        return None
    return items


def decode_worker_results(frames: list[bytes]) -> list[list[Any]] | None:
    """A worker RESULT's items as ``[id, payload, ...]`` arrays (``usual_done``),
    or None (the forwarder's hot path)."""
    return _usual_items(frames, usual_dones)


def decode_client_results(frames: list[bytes]) -> list[list[Any]] | None:
    """A client RESULT's items as ``[id, worker, attempts, cached, payload, ...]``
    arrays (``usual_result``), or None (the client's hot path)."""
    return _usual_items(frames, usual_results)


def decode_task_items(frames: list[bytes]) -> list[Dispatch | ProtocolError]:
    """TASK body decoded item by item, so one bad task does not sink the batch.

    A bad item is a ``ProtocolError`` whose ``ids`` hold its id when it could
    be read (the worker answers it FAILED ``malformed task: ...``).
    """
    items = _batch_body(frames, "TASK")
    if usual_dispatches(items):  # the usual batch: one test, no call per item
        return [Dispatch(i[0], i[1], i[2], i[3], i[4]) for i in items]
    return _each(items, _dispatch_from)


def submit_items(frames: list[bytes]) -> list[Any]:
    """A SUBMIT's items, undecoded (raises ``ProtocolError`` for a body that is not
    one non-empty array): the forwarder reads the body once, tests each item with
    ``usual_task`` and decodes the others with ``decode_task``."""
    return _batch_body(frames, "SUBMIT")


def decode_task(item: Any) -> Task | ProtocolError:
    """One SUBMIT item as a ``Task``, or the ``ProtocolError`` saying what is wrong."""
    try:
        return _task_from(item)
    except ProtocolError as exc:
        return exc


def readable_ids(items: list[Any]) -> list[str]:
    """The valid ids at the head of these item arrays (for a refusal of them all)."""
    return [i[0] for i in items if type(i) is list and i and valid_id(i[0])]


def decode_request(frames: list[bytes]) -> Message:
    """``decode`` for the forwarder's frontend. A client's HEARTBEAT and STATUS
    take no body (with one they would read as the forwarder's replies)."""
    if (
        len(frames) > 2
        and frames[0] == CLIENT_SIGNATURE
        and frames[1] in (_cmd(Command.HEARTBEAT), _cmd(Command.STATUS))
    ):
        name = Command(frames[1][0]).name
        raise ProtocolError(
            "malformed", f"a client's {name} takes no body frames, got {len(frames) - 2}"
        )
    return decode(frames)


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
        return Submit(_all(_batch_body(frames, "SUBMIT"), _task_from))
    if code is Command.ACCEPTED:
        _body_count(frames, 1, "ACCEPTED")
        return Accepted(_id_list(frames[2]))
    if code is Command.RESULT:
        return Results(_all(_batch_body(frames, "RESULT"), _result_from))
    if code is Command.FAILED:
        return Failures(_all(_batch_body(frames, "FAILED"), _failed_from))
    if code is Command.REFUSED:
        _body_count(frames, 1, "REFUSED")
        b = _unpack(frames[2])
        return Refused(_field(b, "ids", list), _field(b, "code", str), _field(b, "reason", str))
    if code is Command.HEARTBEAT:
        if len(frames) == 2:
            return Heartbeat()
        _body_count(frames, 1, "HEARTBEAT")
        b = _unpack(frames[2])
        forwarder = _field(b, "forwarder", str)
        max_batch = b.get("max_batch")
        if max_batch is None:
            return Heartbeat(forwarder)
        if not (uint(max_batch) and max_batch >= 1):
            raise ProtocolError("malformed", "HEARTBEAT max_batch must be a positive int")
        return HeartbeatReply(forwarder, max_batch)
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
        credit = b.get("credit")
        if not uint(credit):
            raise ProtocolError("malformed", "READY credit must be a non-negative int")
        inflight = b.get("inflight")
        if inflight is None:
            inflight = []
        if not isinstance(inflight, list) or not all(isinstance(i, str) for i in inflight):
            raise ProtocolError("malformed", "READY inflight must be an array of ids")
        pid = b.get("pid")
        if pid is None:
            pid = 0
        if not uint(pid):
            raise ProtocolError("malformed", "READY pid must be a non-negative int")
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
        return Tasks(_all(_batch_body(frames, "TASK"), _dispatch_from))
    if code is Command.W_RESULT:
        return WorkerResults(_all(_batch_body(frames, "RESULT"), _done_from))
    if code is Command.W_FAILED:
        return WorkerFailures(_all(_batch_body(frames, "FAILED"), _error_from))
    if code is Command.W_HEARTBEAT:
        _body_count(frames, 0, "HEARTBEAT")
        return WorkerHeartbeat()
    # W_DISCONNECT
    _body_count(frames, 1, "DISCONNECT")
    return Disconnect(_field(_unpack(frames[2]), "reason", str))
