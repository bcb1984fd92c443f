"""ZFP/2 codec (docs/protocol.md): byte-exact vectors and every refusal code."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest

from zmqflow import protocol as p

VECTORS = sorted((Path(__file__).resolve().parents[1] / "docs" / "protocol-vectors").glob("*.json"))

C = p.CLIENT_SIGNATURE
W = p.WORKER_SIGNATURE


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _unhex(value: Any) -> Any:
    """The vector's ``message`` with ``<name>_hex`` fields turned into bytes ``<name>``."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key.endswith("_hex"):
                out[key[: -len("_hex")]] = bytes.fromhex(item)
            else:
                out[key] = _unhex(item)
        return out
    if isinstance(value, list):
        return [_unhex(item) for item in value]
    return value


BATCH_ITEMS: dict[str, type] = {
    "Tasks": p.Dispatch,
    "WorkerResults": p.Done,
    "WorkerFailures": p.Error,
    "Results": p.Result,
    "Failures": p.Failed,
}


def _build(type_name: str, fields: dict[str, Any]) -> p.Message:
    if type_name == "Submit":
        return p.Submit([p.Task(**task) for task in fields["tasks"]])
    if type_name in BATCH_ITEMS:
        item = BATCH_ITEMS[type_name]
        return getattr(p, type_name)([item(**fields) for fields in fields["items"]])
    return getattr(p, type_name)(**fields)


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


_TASK_FIELDS = ("id", "service", "payload", "key", "headers", "retries")
_DISPATCH_FIELDS = ("id", "service", "headers", "attempt", "payload")


def _task_item(**overrides: Any) -> list[Any]:
    """A SUBMIT item (an array, fields in documented order)."""
    fields = {"id": "t-1", "service": "echo", "payload": b"", "key": None, "headers": {}}
    fields.update({"retries": None}, **overrides)
    return [fields[name] for name in _TASK_FIELDS]


def _dispatch_item(**overrides: Any) -> list[Any]:
    """A TASK item (an array, fields in documented order)."""
    fields = {"id": "t-1", "service": "echo", "headers": {}, "attempt": 1, "payload": b""}
    fields.update(overrides)
    return [fields[name] for name in _DISPATCH_FIELDS]


def _items_of(msg: p.Message) -> list[Any]:
    return msg.tasks if isinstance(msg, p.Submit) else msg.items  # type: ignore[union-attr]


def _batch(sig: bytes, cmd: int, *items: Any) -> list[bytes]:
    """A batched command: one body frame holding the array of items."""
    return [sig, bytes([cmd]), _pack(list(items))]


def _submit_tasks(frames: list[bytes]) -> list[p.Task | p.ProtocolError]:
    """A SUBMIT decoded task by task, as the forwarder does."""
    return [p.decode_task(item) for item in p.submit_items(frames)]


def _refusal(frames: list[bytes]) -> p.ProtocolError:
    with pytest.raises(p.ProtocolError) as info:
        p.decode(frames)
    return info.value


# ------------------------------------------------------------------ vectors


def test_there_is_a_vector_for_every_documented_message_type():
    types = {_load(path)["type"] for path in VECTORS}
    assert len(VECTORS) >= 25
    assert {"Submit", "Accepted", "Results", "Failures", "Refused", "Ready", "Tasks"} <= types
    assert {"WorkerResults", "WorkerFailures"} <= types


@pytest.mark.parametrize("type_name", sorted(BATCH_ITEMS))
def test_every_batched_command_has_a_single_and_a_multi_item_vector(type_name: str):
    counts = sorted(
        len(_load(path)["message"]["items"]) for path in VECTORS if _load(path)["type"] == type_name
    )
    assert counts[0] == 1
    assert counts[-1] >= 2


def _vector_script() -> Any:
    path = Path(__file__).resolve().parents[1] / "scripts" / "make_protocol_vectors.py"
    spec = importlib.util.spec_from_file_location("make_protocol_vectors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_vectors_are_what_the_script_makes_with_the_products_own_texts():
    made = _vector_script().vectors()

    on_disk = {path.stem: _load(path)["frames"] for path in VECTORS}
    assert on_disk == {name: [f.hex() for f in p.encode(msg)] for name, msg in made.items()}
    assert made["client-refused"].reason == "no worker has ever offered service 'nope'"
    assert made["client-failed-dead-letter"].items[0].error == "worker lost on each of 6 attempts"


@pytest.mark.parametrize("path", VECTORS, ids=lambda path: path.stem)
def test_vector_decodes_to_its_message(path: Path):
    vector = _load(path)
    frames = [bytes.fromhex(frame) for frame in vector["frames"]]

    msg = p.decode(frames)

    assert type(msg).__name__ == vector["type"]
    assert dataclasses.asdict(msg) == _unhex(vector["message"])


@pytest.mark.parametrize("path", VECTORS, ids=lambda path: path.stem)
def test_vector_message_encodes_byte_exactly_to_its_frames(path: Path):
    vector = _load(path)
    msg = _build(vector["type"], _unhex(vector["message"]))

    assert [frame.hex() for frame in p.encode(msg)] == vector["frames"]


@pytest.mark.parametrize("path", VECTORS, ids=lambda path: path.stem)
def test_vector_command_byte_matches_its_command_name(path: Path):
    vector = _load(path)
    assert bytes.fromhex(vector["frames"][1])[0] == p.Command[vector["command"]]


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("frames", [[], [C]], ids=["no-frames", "signature-only"])
def test_fewer_than_two_frames_is_malformed(frames: list[bytes]):
    assert _refusal(frames).code == "malformed"


@pytest.mark.parametrize("sig", [b"ZFX1", b"HTTP", b"ZFC", b"ZFC10", b""])
def test_a_frame_that_is_not_a_signature_is_malformed(sig: bytes):
    err = _refusal([sig, b"\x06"])
    assert err.code == "malformed"
    assert err.ids == []


@pytest.mark.parametrize("sig", [b"ZFC1", b"ZFW1", b"ZFC0", b"ZFW3"])
def test_a_signature_of_another_protocol_version_is_bad_version(sig: bytes):
    assert _refusal([sig, b"\x06"]).code == "bad_version"


@pytest.mark.parametrize("cmd", [b"\x00", b"\x0a", b"\x10", b"\x17", b"\xff"])
def test_an_unknown_command_byte_is_unknown_command(cmd: bytes):
    sig = C if cmd[0] < 0x10 else W
    assert _refusal([sig, cmd]).code == "unknown_command"


@pytest.mark.parametrize("cmd", [b"", b"\x06\x06"])
def test_a_command_frame_that_is_not_one_byte_is_malformed(cmd: bytes):
    assert _refusal([C, cmd]).code == "malformed"


def test_a_worker_command_under_the_client_signature_is_unknown_command():
    frames = p.encode(p.Ready("w", "python", ["echo"], 1))
    assert _refusal([C, *frames[1:]]).code == "unknown_command"


def test_a_client_command_under_the_worker_signature_is_unknown_command():
    assert _refusal([W, bytes([p.Command.HEARTBEAT])]).code == "unknown_command"


_ITEM = {
    0x01: _task_item(),
    0x03: ["t", "w", 1, False, b""],
    0x04: ["t", "handler_error", "boom", None, 1],
    0x12: _dispatch_item(),
    0x13: ["t", b""],
    0x14: ["t", "boom"],
}


@pytest.mark.parametrize(
    "frames",
    [
        [C, b"\x02"],  # ACCEPTED without its id array
        [C, b"\x02", _pack([]), _pack([])],
        [C, b"\x05"],
        [C, b"\x06", b""],  # HEARTBEAT takes no body
        [C, b"\x07"],
        [C, b"\x08", _pack({}), _pack({})],
        [C, b"\x09"],
        [W, b"\x11"],
        [W, b"\x15", b""],
        [W, b"\x16"],
    ],
    ids=lambda frames: f"{frames[0].decode()}-{frames[1].hex()}-{len(frames) - 2}-bodies",
)
def test_a_wrong_number_of_body_frames_is_malformed(frames: list[bytes]):
    assert _refusal(frames).code == "malformed"


@pytest.mark.parametrize("cmd", sorted(_ITEM), ids=lambda cmd: p.Command(cmd).name)
def test_a_batched_command_needs_exactly_one_body_frame(cmd: int):
    sig = C if cmd < 0x10 else W
    one = _batch(sig, cmd, _ITEM[cmd])
    assert _refusal(one[:2]).code == "malformed"  # no body
    assert _refusal([*one, one[2]]).code == "malformed"  # two bodies (the v1 layout)
    assert len(_items_of(p.decode(one))) == 1  # exactly one body frame: fine


@pytest.mark.parametrize("cmd", sorted(_ITEM), ids=lambda cmd: p.Command(cmd).name)
@pytest.mark.parametrize(
    "body",
    [_pack([]), _pack({"id": "t"}), _pack("items"), b"\xc1"],
    ids=["empty-array", "map", "string", "not-msgpack"],
)
def test_a_batched_body_that_is_not_a_non_empty_array_is_malformed(cmd: int, body: bytes):
    sig = C if cmd < 0x10 else W
    assert _refusal([sig, bytes([cmd]), body]).code == "malformed"


@pytest.mark.parametrize("cmd", sorted(_ITEM), ids=lambda cmd: p.Command(cmd).name)
def test_an_item_with_fields_missing_is_malformed_and_named_by_its_id(cmd: int):
    sig = C if cmd < 0x10 else W
    err = _refusal(_batch(sig, cmd, _ITEM[cmd][:-1]))
    assert err.code == "malformed"
    assert err.ids == [_ITEM[cmd][0]]


@pytest.mark.parametrize("cmd", sorted(_ITEM), ids=lambda cmd: p.Command(cmd).name)
def test_item_decoders_ignore_fields_past_the_listed_ones(cmd: int):
    sig = C if cmd < 0x10 else W
    plain = p.decode(_batch(sig, cmd, _ITEM[cmd]))
    assert p.decode(_batch(sig, cmd, [*_ITEM[cmd], "future", {"x": 1}])) == plain


@pytest.mark.parametrize("body", [b"\xc1", b"\x92\x01", b"\xa5abc", b"\x81"])
def test_a_body_that_is_not_msgpack_is_malformed(body: bytes):
    assert _refusal([C, b"\x07", body]).code == "malformed"


def test_a_body_of_the_wrong_shape_is_malformed():
    assert _refusal([C, b"\x07", _pack({"ids": ["t-1"]})]).code == "malformed"
    assert _refusal([C, b"\x07", _pack(["t-1", 2])]).code == "malformed"
    assert _refusal([W, b"\x16", _pack(["drained"])]).code == "malformed"
    assert _refusal([C, b"\x04", _pack({"id": "t", "code": "x"})]).code == "malformed"


def test_a_msgpack_body_over_64_kib_is_malformed_even_when_valid():
    ids = [f"t-{i:06d}" for i in range(8000)]
    body = _pack(ids)
    assert len(body) > p.MAX_MAP_BYTES

    err = _refusal([C, b"\x07", body])

    assert err.code == "malformed"
    assert "64 KiB" in err.reason


def test_a_msgpack_body_of_exactly_64_kib_is_accepted():
    text = "x" * (p.MAX_MAP_BYTES - 5)  # str32 header is 5 bytes
    body = _pack({"reason": text})
    body = _pack({"reason": "x" * (p.MAX_MAP_BYTES - len(body) + len(text))})
    assert len(body) == p.MAX_MAP_BYTES

    assert isinstance(p.decode([W, b"\x16", body]), p.Disconnect)


def test_a_batch_body_is_not_held_to_the_64_kib_map_limit():
    payload = b"\x00" * (p.MAX_MAP_BYTES * 4)
    msg = p.decode(_batch(C, 0x01, _task_item(payload=payload)))
    assert isinstance(msg, p.Submit)
    assert msg.tasks[0].payload == payload


def test_ready_without_services_or_with_negative_credit_is_malformed():
    def ready(**overrides: Any) -> list[bytes]:
        frames = p.encode(p.Ready("w", "python", ["echo"], 1))
        body = msgpack.unpackb(frames[2])
        body.update(overrides)
        return [W, frames[1], _pack(body)]

    assert isinstance(p.decode(ready()), p.Ready)
    assert _refusal(ready(services=[])).code == "malformed"
    assert _refusal(ready(services=["bad name"])).code == "malformed"
    assert _refusal(ready(credit=-1)).code == "malformed"
    assert _refusal(ready(inflight=[1])).code == "malformed"


@pytest.mark.parametrize("pid", ["abc", [1], {"n": 1}])
def test_ready_with_a_pid_that_is_not_an_int_is_malformed(pid: Any):
    frames = p.encode(p.Ready("w", "python", ["echo"], 1))
    body = msgpack.unpackb(frames[2])
    body["pid"] = pid

    assert _refusal([W, frames[1], _pack(body)]).code == "malformed"


def test_map_decoders_accept_keys_in_any_order_and_ignore_unknown_keys():
    body = _pack({"future": [1, 2], "reason": "no", "code": "queue_full", "ids": ["t-9"]})

    msg = p.decode([C, b"\x05", body])

    assert msg == p.Refused(["t-9"], "queue_full", "no")


def test_every_message_round_trips_through_encode_and_decode():
    messages: list[p.Message] = [
        p.Submit([p.Task("a", "echo", b"1", "k", {"h": 1.5, "n": None}, 3)]),
        p.Accepted(["a", "b"]),
        p.Results([p.Result("a", "w", 2, True, b"\x00")]),
        p.Results([p.Result("a", "w", 2, True, b"\x00"), p.Result("b", "v", 1, False, b"")]),
        p.Failures([p.Failed("a", "handler_error", "boom", None, 1)]),
        p.Failures(
            [p.Failed("a", "handler_error", "boom", None, 1), p.Failed("b", "x", "y", "w", 2)]
        ),
        p.Refused(["a"], "queue_full", "full"),
        p.Heartbeat(),
        p.Collect([]),
        p.StatusRequest(),
        p.Status({"workers": [], "counters": {"accepted": 1}}),
        p.Retry(["a"]),
        p.Ready("w", "rust", ["echo", "sleep"], 0, ["a"], "1", 2, "h"),
        p.Tasks([p.Dispatch("a", "echo", {"x": True}, 4, b"data")]),
        p.Tasks([p.Dispatch("a", "echo", {}, 1, b"1"), p.Dispatch("b", "sleep", {}, 2, b"")]),
        p.WorkerResults([p.Done("a", b"")]),
        p.WorkerResults([p.Done("a", b""), p.Done("b", b"\xff")]),
        p.WorkerFailures([p.Error("a", "bad")]),
        p.WorkerFailures([p.Error("a", "bad"), p.Error("b", "worse")]),
        p.WorkerHeartbeat(),
        p.Disconnect("drained"),
    ]
    for msg in messages:
        assert p.decode(p.encode(msg)) == msg


def test_encode_rejects_objects_that_are_not_messages():
    with pytest.raises(TypeError):
        p.encode("SUBMIT")  # type: ignore[arg-type]


def test_encode_refuses_an_empty_batch():
    for batch in (p.Tasks([]), p.WorkerResults([]), p.WorkerFailures([]), p.Results([])):
        with pytest.raises(ValueError):
            p.encode(batch)
    assert p.encode_split(p.Failures([])) == []


# ------------------------------------------------------------ batch splitting


def _results(count: int, payload: bytes = b"x") -> p.Results:
    return p.Results([p.Result(f"t-{i}", "w", 1, False, payload) for i in range(count)])


def test_encode_split_keeps_a_batch_within_max_items_in_one_message():
    batch = _results(5)

    (frames,) = p.encode_split(batch, max_items=5)

    assert frames == p.encode(batch)


def test_encode_split_cuts_at_max_items_and_keeps_the_order():
    messages = p.encode_split(_results(2500), max_items=1000)

    decoded = [p.decode(frames) for frames in messages]
    assert [len(m.items) for m in decoded] == [1000, 1000, 500]
    assert [r.id for m in decoded for r in m.items] == [f"t-{i}" for i in range(2500)]


def test_encode_split_uses_the_protocol_default_of_max_items():
    messages = p.encode_split(_results(p.MAX_BATCH + 1))
    assert [len(p.decode(f).items) for f in messages] == [p.MAX_BATCH, 1]


def test_encode_split_halves_a_group_whose_headers_make_it_too_large():
    headers = {"blob": "h" * 300}
    batch = p.Tasks([p.Dispatch(f"t-{i}", "echo", headers, 1, b"") for i in range(8)])

    messages = p.encode_split(batch, max_bytes=1000)

    assert all(sum(map(len, frames)) <= 1000 for frames in messages)
    assert [d.id for f in messages for d in p.decode(f).items] == [f"t-{i}" for i in range(8)]


def test_encode_split_keeps_each_message_under_the_byte_cap():
    batch = p.WorkerResults([p.Done(f"t-{i}", b"x" * 400) for i in range(10)])

    messages = p.encode_split(batch, max_bytes=1000)

    assert all(sum(map(len, frames)) <= 1000 for frames in messages)
    assert [len(p.decode(f).items) for f in messages] == [2, 2, 2, 2, 2]


def test_encode_split_sends_an_item_larger_than_the_cap_alone():
    batch = p.Tasks(
        [
            p.Dispatch("small-1", "echo", {}, 1, b"a"),
            p.Dispatch("huge", "echo", {}, 1, b"x" * 2000),
            p.Dispatch("small-2", "echo", {}, 1, b"b"),
        ]
    )

    messages = p.encode_split(batch, max_bytes=1000)

    assert [[d.id for d in p.decode(f).items] for f in messages] == [
        ["small-1"],
        ["huge"],
        ["small-2"],
    ]


def test_the_default_byte_cap_is_the_64_mib_message_limit():
    payload = b"x" * (20 * 1024 * 1024)

    messages = p.encode_split(p.WorkerResults([p.Done(f"t-{i}", payload) for i in range(4)]))

    assert [len(p.decode(f).items) for f in messages] == [3, 1]
    assert all(sum(map(len, f)) <= p.MAX_MESSAGE_BYTES for f in messages)


# ------------------------------------------------------------ task by task


def test_decode_task_items_keeps_the_good_tasks_when_one_is_bad():
    frames = _batch(
        W,
        0x12,
        _dispatch_item(id="good-1", payload=b"one"),
        _dispatch_item(id="bad-attempt", attempt="1", payload=b"two"),
        "not an array",
        _dispatch_item(id="good-2", headers={"h": 1}, payload=b"four"),
    )

    items = p.decode_task_items(frames)

    assert items[0] == p.Dispatch("good-1", "echo", {}, 1, b"one")
    assert isinstance(items[1], p.ProtocolError)
    assert (items[1].code, items[1].ids) == ("malformed", ["bad-attempt"])
    assert isinstance(items[2], p.ProtocolError)
    assert items[2].ids == []
    assert items[3] == p.Dispatch("good-2", "echo", {"h": 1}, 1, b"four")


def test_decode_of_a_task_batch_raises_for_its_first_bad_task():
    err = _refusal(_batch(W, 0x12, _dispatch_item(id="ok"), _dispatch_item(id="t-x", service=5)))
    assert (err.code, err.ids) == ("malformed", ["t-x"])


def test_one_bad_item_makes_a_batched_answer_malformed():
    good = ["t", "w", 1, False, b""]
    assert _refusal(_batch(C, 0x03, good, ["u"])).code == "malformed"
    assert _refusal(_batch(W, 0x14, ["t", "e"], ["u", 5])).code == "malformed"


# -------------------------------------------------------- submit, task by task


def test_a_submit_decoded_task_by_task_keeps_the_good_tasks_when_one_is_bad():
    frames = _batch(
        C,
        0x01,
        _task_item(id="good-1", payload=b"one"),
        _task_item(id="bad-key", key=7, payload=b"two"),
        {"id": "map-not-array"},
        _task_item(id="good-2", payload=b"four"),
    )

    items = _submit_tasks(frames)

    assert [type(item) for item in items] == [p.Task, p.ProtocolError, p.ProtocolError, p.Task]
    assert (items[0].id, items[0].payload) == ("good-1", b"one")
    assert (items[3].id, items[3].payload) == ("good-2", b"four")
    assert items[1].code == "malformed"
    assert items[1].ids == ["bad-key"]  # refused by id when the id could be read
    assert items[2].ids == []


@pytest.mark.parametrize("attempt", [-1, True, 1.0], ids=["negative", "bool", "float"])
def test_a_task_attempt_must_be_a_non_negative_int_as_in_the_rust_worker(attempt: Any):
    frames = _batch(W, 0x12, _dispatch_item(id="t-x", attempt=attempt, payload=b"p"))

    (item,) = p.decode_task_items(frames)

    assert isinstance(item, p.ProtocolError)
    assert (item.code, item.ids) == ("malformed", ["t-x"])


@pytest.mark.parametrize(
    "overrides",
    [
        {"headers": [1]},
        {"retries": -1},
        {"retries": "2"},
        {"service": 5},
        {"key": b"bin"},
        {"payload": "text"},
    ],
    ids=["headers-list", "negative-retries", "string-retries", "service-int", "key-bin", "str"],
)
def test_a_bad_task_field_is_refused_by_the_task_id(overrides: dict[str, Any]):
    (item,) = _submit_tasks(_batch(C, 0x01, _task_item(id="t-x", **overrides)))
    assert isinstance(item, p.ProtocolError)
    assert (item.code, item.ids) == ("malformed", ["t-x"])


def test_decode_of_submit_raises_for_the_first_bad_task():
    err = _refusal(_batch(C, 0x01, _task_item(id="ok"), _task_item(id="t-x", retries=-1)))
    assert (err.code, err.ids) == ("malformed", ["t-x"])


def test_task_headers_over_64_kib_are_refused_without_killing_the_batch():
    huge = _task_item(id="huge", headers={"blob": "x" * p.MAX_MAP_BYTES})

    items = _submit_tasks(_batch(C, 0x01, huge, _task_item(id="small")))

    assert isinstance(items[0], p.ProtocolError)
    assert (items[0].code, items[0].ids) == ("malformed", ["huge"])
    assert isinstance(items[1], p.Task)


def test_nil_optional_task_fields_take_their_defaults():
    (task,) = _submit_tasks(_batch(C, 0x01, ["t", "echo", b"x", None, {}, None]))
    assert task == p.Task("t", "echo", b"x", None, {}, None)


@pytest.mark.parametrize(
    ("extra", "fresh"),
    [([], False), ([True], True), ([False], False), ([1], False), (["y"], False)],
)
def test_only_a_true_seventh_field_marks_a_task_fresh(extra: list[Any], fresh: bool):
    (task,) = _submit_tasks(_batch(C, 0x01, ["t", "echo", b"x", None, {}, None, *extra]))
    assert task.fresh is fresh


# ------------------------------------------------------------- identifiers


@pytest.mark.parametrize("value", ["a", "A-z.0_9:x", "x" * 64])
def test_valid_ids(value: str):
    assert p.valid_id(value)


@pytest.mark.parametrize("value", ["", "x" * 65, "a b", "a/b", "é", "a\n", None, b"a"])
def test_invalid_ids(value: Any):
    assert not p.valid_id(value)


def test_service_names_do_not_allow_colons_but_ids_do():
    assert p.valid_id("a:b")
    assert not p.valid_service("a:b")
    assert p.valid_service("my-service.v2_x")
    assert not p.valid_service("")
    assert not p.valid_service("s" * 65)


def test_a_heartbeat_reply_carries_the_forwarder_id_and_a_request_none():
    assert p.encode(p.Heartbeat()) == [C, b"\x06"]
    assert p.decode(p.encode(p.Heartbeat("fwd-1"))) == p.Heartbeat("fwd-1")
    assert _refusal([C, b"\x06", _pack({"forwarder": 7})]).code == "malformed"
    assert _refusal([C, b"\x06", _pack({}), _pack({})]).code == "malformed"


# ---------------------------------------------------- unsigned integer fields

NOT_UNSIGNED = pytest.mark.parametrize(
    "value", [-1, True, False, 1.0, "1"], ids=["negative", "true", "false", "float", "str"]
)


@pytest.mark.parametrize("value", [0, 1, 2**63])
def test_an_unsigned_int_is_an_int_of_zero_or_more(value: int):
    assert p.uint(value)


@NOT_UNSIGNED
def test_an_unsigned_int_is_not_a_bool_a_negative_or_another_type(value: Any):
    assert not p.uint(value)


def _ready_body(**overrides: Any) -> bytes:
    body = {"worker": "w", "language": "python", "services": ["echo"], "credit": 1}
    body.update({"inflight": [], "version": "1", "pid": 7, "host": "h"}, **overrides)
    return _pack(body)


@NOT_UNSIGNED
def test_submit_retries_must_be_unsigned(value: Any):
    (item,) = _submit_tasks(_batch(C, 0x01, _task_item(id="t-x", retries=value)))
    assert isinstance(item, p.ProtocolError)
    assert (item.code, item.ids) == ("malformed", ["t-x"])


@NOT_UNSIGNED
@pytest.mark.parametrize("field", ["credit", "pid"])
def test_ready_credit_and_pid_must_be_unsigned(field: str, value: Any):
    err = _refusal([W, b"\x11", _ready_body(**{field: value})])
    assert err.code == "malformed"
    assert field in err.reason


@NOT_UNSIGNED
def test_task_attempt_must_be_unsigned(value: Any):
    (item,) = p.decode_task_items(_batch(W, 0x12, _dispatch_item(id="t-x", attempt=value)))
    assert isinstance(item, p.ProtocolError)
    assert (item.code, item.ids) == ("malformed", ["t-x"])


@NOT_UNSIGNED
def test_client_result_and_failed_attempts_must_be_unsigned(value: Any):
    result = ["t-x", "w", value, False, b""]
    failed = ["t-x", "handler_error", "e", "w", value]
    for frames in (_batch(C, 0x03, result), _batch(C, 0x04, failed)):
        err = _refusal(frames)
        assert (err.code, err.ids) == ("malformed", ["t-x"])
    assert p.decode_client_results(_batch(C, 0x03, result)) is None  # the hot path agrees


def test_a_ready_without_pid_or_inflight_takes_their_defaults():
    body = msgpack.unpackb(_ready_body())
    del body["pid"], body["inflight"]

    ready = p.decode([W, b"\x11", _pack(body)])

    assert (ready.pid, ready.inflight) == (0, [])


def test_client_result_cached_must_be_a_bool_and_failed_worker_a_str_or_nil():
    assert _refusal(_batch(C, 0x03, ["t-x", "w", 1, 1, b""])).ids == ["t-x"]
    assert _refusal(_batch(C, 0x04, ["t-x", "dead_letter", "e", 5, 1])).ids == ["t-x"]
    (failed,) = p.decode(_batch(C, 0x04, ["t-x", "dead_letter", "e", None, 1])).items
    assert failed.worker is None


# --------------------------------------------- the usual items, one test each


@pytest.mark.parametrize(
    ("usual", "good", "bad"),
    [
        (p.usual_task, ["t", "s", b"", None, {}, None], ["t", "s", b"", None, {"h": 1}, None]),
        (p.usual_dispatch, ["t", "s", {}, 1, b""], ["t", "s", {}, True, b""]),
        (p.usual_done, ["t", b""], ["t", ""]),
        (p.usual_result, ["t", "w", 1, False, b""], ["t", "w", -1, False, b""]),
    ],
    ids=["task", "dispatch", "done", "result"],
)
def test_each_usual_test_takes_its_well_typed_item_and_declines_others(usual, good, bad):
    assert usual(good)
    assert not usual(bad)
    assert not usual(tuple(good))  # msgpack gives lists; anything else is not usual
    assert not usual(good[:-1])


def test_the_forwarder_reads_the_ids_it_can_from_a_submit_it_refuses_whole():
    items = [["a"], ["bad id!"], "x", [], [7], ["b", "echo"]]
    assert p.readable_ids(items) == ["a", "b"]


@pytest.mark.parametrize("command", [0x06, 0x08], ids=["heartbeat", "status"])
def test_a_client_request_with_a_body_is_refused_saying_it_takes_none(command: int):
    with pytest.raises(p.ProtocolError) as info:
        p.decode_request([C, bytes([command]), _pack({})])
    err = info.value
    assert err.code == "malformed"
    assert "takes no body" in err.reason
    assert "forwarder" not in err.reason  # not about the reply's field
