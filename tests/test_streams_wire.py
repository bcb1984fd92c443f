"""The streams message family (ZFS1): byte-exact vectors and the decoder's refusals."""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zmqflow.streams import wire
from zmqflow.streams.core import encode_events
from zmqflow.streams.store import StoredEvent
from zmqflow.streams.subscription import InFlight

ROOT = Path(__file__).resolve().parents[1]
VECTORS = sorted((ROOT / "docs" / "protocol-vectors" / "streams").glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _vector_script() -> Any:
    path = ROOT / "scripts" / "make_streams_vectors.py"
    spec = importlib.util.spec_from_file_location("make_streams_vectors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_vectors_are_what_the_script_makes_from_the_product():
    made = _vector_script().vectors()
    on_disk = {path.stem: _load(path)["frames"] for path in VECTORS}
    assert on_disk == {name: [f.hex() for f in wire.encode(msg)] for name, msg in made.items()}
    assert made["streams-refused-unknown-stream"].reason.startswith(
        "no stream holds topic 'prod.x'"
    )
    assert made["streams-gap"].missed == 1


def test_every_command_has_a_vector():
    assert {_load(path)["command"] for path in VECTORS} == {c.name for c in wire.Command}


@pytest.mark.parametrize("path", VECTORS, ids=lambda path: path.stem)
def test_a_vector_decodes_and_encodes_again_to_the_same_bytes(path: Path):
    frames = [bytes.fromhex(f) for f in _load(path)["frames"]]
    msg = wire.decode(frames)
    assert type(msg).__name__ == _load(path)["type"]
    assert wire.encode(msg) == frames


def test_the_devices_spliced_event_encoding_is_the_codecs():
    entries = [
        InFlight(StoredEvent(7, "e-7", "dev.x", 1.5, wire.pack({"a": [1, b"\x00"]}), 0), 2, 0, 0),
        InFlight(StoredEvent(8, "e-8", "dev.y", 2.0, wire.pack(None), 0), 1, 0, 0),
    ]
    expected = wire.Events(
        [
            wire.Delivery(7, "e-7", "dev.x", 1.5, {"a": [1, b"\x00"]}, 2),
            wire.Delivery(8, "e-8", "dev.y", 2.0, None, 1),
        ]
    )
    assert encode_events(entries) == wire.encode(expected)


@pytest.mark.parametrize(
    ("frames", "code", "words"),
    [
        ([b"ZFS1"], "malformed", "need at least 2"),
        ([b"ZFC2", b"\x01"], "malformed", "signature"),
        ([b"ZFS2", b"\x01"], "bad_version", "version"),
        ([b"ZFS1", b"\x01\x02"], "malformed", "1 byte"),
        ([b"ZFS1", b"\x01", wire.pack([])], "malformed", "non-empty"),
        ([b"ZFS1", b"\x01", wire.pack([["e", "", {}]])], "malformed", "topic"),
        ([b"ZFS1", b"\x03", wire.pack({"stream": "events"})], "malformed", "window"),
        (
            [b"ZFS1", b"\x03", wire.pack({"stream": "e", "start": "seq", "window": 1})],
            "malformed",
            "needs seq",
        ),
        ([b"ZFS1", b"\x07", wire.pack([1, -2])], "malformed", "sequence numbers"),
        ([b"ZFS1", b"\x07", wire.pack([True])], "malformed", "sequence numbers"),
        ([b"ZFS1", b"\x08", b"\x80"], "malformed", "body frames"),
        ([b"ZFS1", b"\x05", wire.pack([[1, "e", "t", 1.0, {}, 1]])], "unknown_command", "EVENT"),
    ],
)
def test_what_the_device_cannot_use_is_refused_with_a_code_and_words(frames, code, words):
    with pytest.raises(wire.ProtocolError) as caught:
        wire.decode_request(frames)
    assert caught.value.code == code
    assert words in caught.value.reason


def test_a_publish_body_over_the_devices_limit_is_too_large():
    frames = wire.encode(wire.Publish([wire.PublishItem("e", "dev.x", {"b": b"x" * 100})]))
    with pytest.raises(wire.ProtocolError) as caught:
        wire.decode_request(frames, max_publish_bytes=50)
    assert caught.value.code == "too_large"


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=5))
def test_no_frames_make_the_decoder_raise_anything_but_a_protocol_error(frames):
    with contextlib.suppress(wire.ProtocolError):
        wire.decode_request(frames)
    with contextlib.suppress(wire.ProtocolError):
        wire.decode([b"ZFS1", *frames])
