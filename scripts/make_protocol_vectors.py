"""Write docs/protocol-vectors/*.json from the reference messages below.

Each vector: name, command, frames (hex strings, signature first) and
message (the decoded fields; raw byte fields as `payload_hex`). Batched
commands (TASK, RESULT, FAILED) have a one-item vector and a `-batch` one;
their message is `{"items": [...]}`. Run once when
the protocol changes; tests in every language decode and re-encode them.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from zmqflow import protocol as p

OUT = Path(__file__).resolve().parent.parent / "docs" / "protocol-vectors"
SHA256_ABC = bytes.fromhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")

VECTORS: dict[str, p.Message] = {
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
    "client-failed-handler": p.Failures(
        [p.Failed("t-5", "handler_error", "ValueError: bad input", "py-host-17-ab12", 1)]
    ),
    "client-failed-dead-letter": p.Failures(
        [p.Failed("t-6", "dead_letter", "worker lost 6 times", None, 6)]
    ),
    "client-failed-batch": p.Failures(
        [
            p.Failed("t-5", "handler_error", "ValueError: bad input", "py-host-17-ab12", 1),
            p.Failed("t-6", "dead_letter", "worker lost 6 times", None, 6),
        ]
    ),
    "client-refused": p.Refused(["t-7"], "unknown_service", "no worker ever offered 'nope'"),
    "client-refused-malformed": p.Refused(
        [], "malformed", "first frame is not a zmqflow signature"
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
    "worker-failed": p.WorkerFailures([p.Error("t-5", "ValueError: bad input")]),
    "worker-failed-batch": p.WorkerFailures(
        [
            p.Error("t-5", "ValueError: bad input"),
            p.Error("t-7", "service 'nope' not served here"),
        ]
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
    for name, msg in VECTORS.items():
        frames = p.encode(msg)
        vector = {
            "name": name,
            "command": p.Command(frames[1][0]).name,
            "type": type(msg).__name__,
            "frames": [f.hex() for f in frames],
            "message": to_json(msg),
        }
        (OUT / f"{name}.json").write_text(json.dumps(vector, indent=2) + "\n")
    print(f"wrote {len(VECTORS)} vectors to {OUT}")


if __name__ == "__main__":
    main()
