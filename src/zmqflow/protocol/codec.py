"""ZFP/2 messages to frames and back (docs/protocol.md).

Contract: ``encode(msg)`` returns the frames a DEALER sends (no routing id,
no delimiter); ``decode(frames)`` is its inverse and raises
``ProtocolError`` with a refusal code for anything it cannot use. Maps are
encoded with their keys in the documented order and batch items as arrays
in the order of their field table (items.py), so encoding is byte-exact and
matches docs/protocol-vectors/. ``encode_split`` is the size rule for
senders: batches cut at ``max_items`` items and ``MAX_MESSAGE_BYTES``, id
lists cut so each body frame fits ``MAX_MAP_BYTES``. The hot-path decoders
(``decode_worker_results``, ``decode_client_results``, ``decode_task_items``,
the forwarder's ``submit_items``) test a whole batch with the kind's usual
test and hand back arrays; anything else takes the checked decoders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import msgpack

from zmqflow.limits import (
    MAX_BATCH,
    MAX_MAP_BYTES,
    MAX_MESSAGE_BYTES,
    uint,
    valid_id,
    valid_service,
)
from zmqflow.protocol.frames import (
    CLIENT_SIGNATURE,
    COMMANDS,
    WORKER_SIGNATURE,
    Command,
    ProtocolError,
    command_frame,
    pack,
    unpack,
)
from zmqflow.protocol.items import (
    FAILURE_ITEM,
    RESULT_ITEM,
    SUBMIT_ITEM,
    TASK_ITEM,
    WORKER_FAILURE_ITEM,
    WORKER_RESULT_ITEM,
    ItemKind,
    SubmitItem,
    TaskItem,
    usual_dispatches,
    usual_dones,
    usual_results,
)
from zmqflow.protocol.messages import (
    Accepted,
    Batch,
    Collect,
    Disconnect,
    Failures,
    Heartbeat,
    HeartbeatReply,
    IdList,
    Message,
    Ready,
    Refused,
    Results,
    Retry,
    Status,
    StatusRequest,
    Submit,
    Tasks,
    WorkerFailures,
    WorkerHeartbeat,
    WorkerResults,
)

_pack, _unpack, _cmd, _COMMANDS = pack, unpack, command_frame, COMMANDS

# batch class -> (signature, command frame, its items' field table)
_BATCHES: dict[type, tuple[bytes, bytes, ItemKind]] = {
    Submit: (CLIENT_SIGNATURE, _cmd(Command.SUBMIT), SUBMIT_ITEM),
    Tasks: (WORKER_SIGNATURE, _cmd(Command.W_TASK), TASK_ITEM),
    WorkerResults: (WORKER_SIGNATURE, _cmd(Command.W_RESULT), WORKER_RESULT_ITEM),
    WorkerFailures: (WORKER_SIGNATURE, _cmd(Command.W_FAILED), WORKER_FAILURE_ITEM),
    Results: (CLIENT_SIGNATURE, _cmd(Command.RESULT), RESULT_ITEM),
    Failures: (CLIENT_SIGNATURE, _cmd(Command.FAILED), FAILURE_ITEM),
}


def _items(msg: Batch) -> list[Any]:
    return msg.tasks if isinstance(msg, Submit) else msg.items


def _size_guess(item: Sequence[Any]) -> int:
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
    as_array = _BATCHES[type(msg)][2].as_array
    return encode_items(type(msg), list(map(as_array, _items(msg))), max_items, max_bytes)


def encode_items(
    kind: type,
    items: Sequence[Sequence[Any]],
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
        sig, cmd, kind = batch
        return [sig, cmd, _pack(list(map(kind.as_array, items)))]
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


def decode_task_items(frames: list[bytes]) -> list[TaskItem | ProtocolError]:
    """TASK body decoded item by item, so one bad task does not sink the batch.

    A bad item is a ``ProtocolError`` whose ``ids`` hold its id when it could
    be read (the worker answers it FAILED ``malformed task: ...``).
    """
    items = _batch_body(frames, "TASK")
    if usual_dispatches(items):  # the usual batch: one test, no call per item
        return [TaskItem(i[0], i[1], i[2], i[3], i[4]) for i in items]
    return _each(items, TASK_ITEM.decode)


def submit_items(frames: list[bytes]) -> list[Any]:
    """A SUBMIT's items, undecoded (raises ``ProtocolError`` for a body that is not
    one non-empty array): the forwarder reads the body once, tests each item with
    ``usual_task`` and decodes the others with ``decode_task``."""
    return _batch_body(frames, "SUBMIT")


def decode_task(item: Any) -> SubmitItem | ProtocolError:
    """One SUBMIT item as a ``SubmitItem``, or the ``ProtocolError`` saying what is wrong."""
    try:
        return SUBMIT_ITEM.decode(item)
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
        return Submit(_all(_batch_body(frames, "SUBMIT"), SUBMIT_ITEM.decode))
    if code is Command.ACCEPTED:
        _body_count(frames, 1, "ACCEPTED")
        return Accepted(_id_list(frames[2]))
    if code is Command.RESULT:
        return Results(_all(_batch_body(frames, "RESULT"), RESULT_ITEM.decode))
    if code is Command.FAILED:
        return Failures(_all(_batch_body(frames, "FAILED"), FAILURE_ITEM.decode))
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
        return Tasks(_all(_batch_body(frames, "TASK"), TASK_ITEM.decode))
    if code is Command.W_RESULT:
        return WorkerResults(_all(_batch_body(frames, "RESULT"), WORKER_RESULT_ITEM.decode))
    if code is Command.W_FAILED:
        return WorkerFailures(_all(_batch_body(frames, "FAILED"), WORKER_FAILURE_ITEM.decode))
    if code is Command.W_HEARTBEAT:
        _body_count(frames, 0, "HEARTBEAT")
        return WorkerHeartbeat()
    # W_DISCONNECT
    _body_count(frames, 1, "DISCONNECT")
    return Disconnect(_field(_unpack(frames[2]), "reason", str))
