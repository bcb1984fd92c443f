"""Write docs/protocol-vectors/*.json from the reference messages below.

Each vector: name, command, frames (hex strings, signature first) and
message (the decoded fields; raw byte fields as `payload_hex`). Batched
commands (TASK, RESULT, FAILED) have a one-item vector and a `-batch` one;
their message is `{"items": [...]}`. Run once when
the protocol changes; tests in every language decode and re-encode them,
and tests/test_protocol.py checks the files are what ``vectors()`` makes.

Texts the product writes (a refusal's reason, a dead letter's error, a
handler's error as the Python worker reports it) are taken from the product
itself, by running a broker and the worker's rule, so the vectors show the
real strings.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from zmqflow import protocol as p
from zmqflow.forwarder.broker import Broker, Limits
from zmqflow.journal import Journal

OUT = Path(__file__).resolve().parent.parent / "docs" / "protocol-vectors"
SHA256_ABC = bytes.fromhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def _forwarder_replies(*client: p.Message | list[bytes], lose_worker: int = 0) -> list[p.Message]:
    """What a fresh broker (defaults, one ``echo`` worker) answers client
    ``c``, after losing its worker ``lose_worker`` times."""
    logging.getLogger("zmqflow").setLevel(logging.ERROR)  # the refusals are meant
    broker = Broker(Journal(":memory:"), Limits(), forwarder_id="f")
    ready = p.encode(p.Ready("w", "python", ["echo"], 1, [], "1", 1, "h"))
    broker.on_worker(b"w", ready, 0.0)
    for msg in client:
        broker.on_client(b"c", msg if isinstance(msg, list) else p.encode(msg))
    for _ in range(lose_worker):
        broker.on_worker(b"w", ready, 0.0)
        broker.dispatch()
        broker.outbox_workers.take()
        broker.worker_unreachable(b"w")
    broker.journal_due()
    return [p.decode(frames) for rid, frames in broker.outbox_clients.take() if rid == b"c"]


def vectors() -> dict[str, p.Message]:
    """Every vector, by name."""
    (unknown_service,) = _forwarder_replies(p.Submit([p.Task("t-7", "nope", b"", fresh=True)]))
    (not_ours,) = _forwarder_replies([b"GET / HTTP/1.1", b"\x01"])
    replies = _forwarder_replies(p.Submit([p.Task("t-6", "echo", b"", fresh=True)]), lose_worker=6)
    dead = next(m for m in replies if isinstance(m, p.Failures)).items[0]
    bad_input = str(ValueError("bad input"))  # a Python handler's error text: str(exc)
    return {name: msg for name, msg in _VECTORS.items() if name not in _FROM_THE_PRODUCT} | {
        "client-refused": unknown_service,
        "client-refused-malformed": not_ours,
        "client-failed-handler": p.Failures(
            [p.Failed("t-5", "handler_error", bad_input, "py-host-17-ab12", 1)]
        ),
        "client-failed-dead-letter": p.Failures([dead]),
        "client-failed-batch": p.Failures(
            [p.Failed("t-5", "handler_error", bad_input, "py-host-17-ab12", 1), dead]
        ),
        "worker-failed": p.WorkerFailures([p.Error("t-5", bad_input)]),
        "worker-failed-batch": p.WorkerFailures(
            [p.Error("t-5", bad_input), p.Error("t-7", "service 'nope' not served here")]
        ),
    }


_FROM_THE_PRODUCT = {
    "client-refused",
    "client-refused-malformed",
    "client-failed-handler",
    "client-failed-dead-letter",
    "client-failed-batch",
    "worker-failed",
    "worker-failed-batch",
}

_VECTORS: dict[str, p.Message] = {
    "client-submit-one": p.Submit([p.Task("t-1", "echo", b"hello", fresh=True)]),
    "client-submit-batch": p.Submit(
        [
            p.Task(
                "t-2",
                "sha256",
                b"abc",
                key="order-42",
                headers={"trace": "x1", "prio": 3},
                retries=2,
            ),
            p.Task("t-3", "sleep", b"5"),
        ]
    ),
    "client-accepted": p.Accepted(["t-2", "t-3"]),
    "client-result": p.Results([p.Result("t-1", "py-host-17-ab12", 1, False, b"hello")]),
    "client-result-cached": p.Results([p.Result("t-4", "rust-host-9-cd34", 2, True, b"\x00\xff")]),
    "client-result-batch": p.Results(
        [
            p.Result("t-1", "py-host-17-ab12", 1, False, b"hello"),
            p.Result("t-4", "rust-host-9-cd34", 2, True, b"\x00\xff"),
            p.Result("t-8", "py-host-17-ab12", 1, False, b""),
        ]
    ),
    "client-heartbeat": p.Heartbeat(),
    "client-heartbeat-reply": p.Heartbeat("forwarder-host-1-ab12"),
    "client-collect": p.Collect(["t-1", "t-2"]),
    "client-status-request": p.StatusRequest(),
    "client-retry-all": p.Retry([]),
    "worker-ready": p.Ready(
        "py-host-17-ab12", "python", ["echo", "sha256"], 4, [], "0.1.0", 17, "host"
    ),
    "worker-ready-inflight": p.Ready(
        "rust-host-9-cd34", "rust", ["sleep"], 0, ["t-3"], "0.1.0", 9, "host"
    ),
    "worker-task": p.Tasks([p.Dispatch("t-2", "sha256", {"trace": "x1", "prio": 3}, 1, b"abc")]),
    "worker-task-batch": p.Tasks(
        [
            p.Dispatch("t-2", "sha256", {"trace": "x1", "prio": 3}, 1, b"abc"),
            p.Dispatch("t-3", "sleep", {}, 2, b"5"),
            p.Dispatch("t-9", "echo", {"flag": True, "none": None}, 1, b""),
        ]
    ),
    "worker-result": p.WorkerResults([p.Done("t-2", SHA256_ABC)]),
    "worker-result-batch": p.WorkerResults(
        [p.Done("t-2", SHA256_ABC), p.Done("t-3", b""), p.Done("t-9", b"\x00\x01")]
    ),
    "worker-heartbeat": p.WorkerHeartbeat(),
    "worker-disconnect": p.Disconnect("drained"),
}


def to_json(msg: p.Message) -> dict:
    def fix(value):
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if isinstance(v, bytes):
                    out[f"{k}_hex"] = v.hex()
                else:
                    out[k] = fix(v)
            return out
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    return fix(asdict(msg))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    made = vectors()
    for name, msg in sorted(made.items()):
        frames = p.encode(msg)
        vector = {
            "name": name,
            "command": p.Command(frames[1][0]).name,
            "type": type(msg).__name__,
            "frames": [f.hex() for f in frames],
            "message": to_json(msg),
        }
        (OUT / f"{name}.json").write_text(json.dumps(vector, indent=2) + "\n")
    print(f"wrote {len(made)} vectors to {OUT}")


if __name__ == "__main__":
    main()
