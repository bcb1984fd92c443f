//! ZFP/1 wire protocol, worker side (docs/protocol.md).
//!
//! Contract: [`encode`] returns the frames a DEALER sends (signature, one
//! command byte, body frames; no routing id, no delimiter) and [`decode`] is
//! its inverse. msgpack maps are written with the documented keys in the
//! documented order (struct field order + `rmp_serde::to_vec_named`), absent
//! optional values as nil and integers in their smallest encoding, so the
//! bytes equal docs/protocol-vectors/. Decoding accepts keys in any order and
//! ignores unknown keys. Anything unusable is a [`ProtocolError`] carrying the
//! refusal code the reference codec (src/zmqflow/protocol.py) would use.

use std::fmt;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Frame 0 of every client-side message.
pub const CLIENT_SIGNATURE: &[u8] = b"ZFC1";
/// Frame 0 of every worker-side message.
pub const WORKER_SIGNATURE: &[u8] = b"ZFW1";
/// Largest msgpack body frame a peer may send.
pub const MAX_MAP_BYTES: usize = 64 * 1024;

/// Worker-side command codes (frame 1).
pub mod cmd {
    pub const READY: u8 = 0x11;
    pub const TASK: u8 = 0x12;
    pub const RESULT: u8 = 0x13;
    pub const FAILED: u8 = 0x14;
    pub const HEARTBEAT: u8 = 0x15;
    pub const DISCONNECT: u8 = 0x16;
}

/// Task headers: str → str | int | float | bool | nil, in wire order.
pub type Headers = IndexMap<String, rmpv::Value>;

/// One message as a DEALER sends or receives it: a list of frames.
pub type Frames = Vec<Vec<u8>>;

/// `{ready}`: the worker announces itself, its services and its credit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    pub worker: String,
    pub language: String,
    pub services: Vec<String>,
    pub credit: u64,
    #[serde(default)]
    pub inflight: Vec<String>,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub pid: u64,
    #[serde(default)]
    pub host: String,
}

/// `{dispatch}` plus the payload frame: a task handed to this worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    pub id: String,
    pub service: String,
    pub headers: Headers,
    pub attempt: u64,
    pub payload: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct DispatchBody {
    id: String,
    service: String,
    headers: Headers,
    attempt: u64,
}

#[derive(Serialize, Deserialize)]
struct DoneBody {
    id: String,
}

#[derive(Serialize, Deserialize)]
struct ErrorBody {
    id: String,
    error: String,
}

#[derive(Serialize, Deserialize)]
struct ByeBody {
    reason: String,
}

/// Every worker-side message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// READY (worker → forwarder).
    Ready(Ready),
    /// TASK (forwarder → worker).
    Task(Dispatch),
    /// RESULT `{done}` + payload (worker → forwarder).
    Done { id: String, payload: Vec<u8> },
    /// FAILED `{error}` (worker → forwarder).
    Error { id: String, error: String },
    /// HEARTBEAT (both ways).
    Heartbeat,
    /// DISCONNECT `{bye}` (both ways).
    Disconnect { reason: String },
}

/// A message that cannot be used; `code` is a documented refusal code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: &'static str,
    pub reason: String,
}

impl ProtocolError {
    fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
    fn malformed(reason: impl Into<String>) -> Self {
        Self::new("malformed", reason)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}

impl std::error::Error for ProtocolError {}

fn pack<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain structs of strings, ints and msgpack values into a
    // Vec cannot fail.
    rmp_serde::to_vec_named(value).expect("msgpack encoding of a protocol map")
}

fn unpack<T: DeserializeOwned>(frame: &[u8]) -> Result<T, ProtocolError> {
    if frame.len() > MAX_MAP_BYTES {
        return Err(ProtocolError::malformed(format!(
            "body frame of {} bytes exceeds 64 KiB",
            frame.len()
        )));
    }
    rmp_serde::from_slice(frame)
        .map_err(|e| ProtocolError::malformed(format!("body is not a valid map: {e}")))
}

fn frames(command: u8, body: Vec<Vec<u8>>) -> Frames {
    let mut out = Vec::with_capacity(2 + body.len());
    out.push(WORKER_SIGNATURE.to_vec());
    out.push(vec![command]);
    out.extend(body);
    out
}

/// Frames for `msg`, signature first.
pub fn encode(msg: &Message) -> Frames {
    match msg {
        Message::Ready(ready) => frames(cmd::READY, vec![pack(ready)]),
        Message::Task(d) => {
            let body = DispatchBody {
                id: d.id.clone(),
                service: d.service.clone(),
                headers: d.headers.clone(),
                attempt: d.attempt,
            };
            frames(cmd::TASK, vec![pack(&body), d.payload.clone()])
        }
        Message::Done { id, payload } => result_frames(id, payload.clone()),
        Message::Error { id, error } => failed_frames(id, error),
        Message::Heartbeat => frames(cmd::HEARTBEAT, vec![]),
        Message::Disconnect { reason } => frames(
            cmd::DISCONNECT,
            vec![pack(&ByeBody {
                reason: reason.clone(),
            })],
        ),
    }
}

/// RESULT frames without cloning the payload (the hot path).
pub fn result_frames(id: &str, payload: Vec<u8>) -> Frames {
    frames(
        cmd::RESULT,
        vec![pack(&DoneBody { id: id.to_owned() }), payload],
    )
}

/// FAILED frames.
pub fn failed_frames(id: &str, error: &str) -> Frames {
    let body = ErrorBody {
        id: id.to_owned(),
        error: error.to_owned(),
    };
    frames(cmd::FAILED, vec![pack(&body)])
}

/// Which side a message belongs to, from its signature and command frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Worker,
}

/// Check frames 0 and 1 the way the reference codec does; returns the side
/// and the command byte. Client commands are < 0x10, worker ones ≥ 0x10.
pub fn peek(frames: &[Vec<u8>]) -> Result<(Side, u8), ProtocolError> {
    if frames.len() < 2 {
        return Err(ProtocolError::malformed(format!(
            "message has {} frames, need at least 2",
            frames.len()
        )));
    }
    let (sig, command) = (&frames[0], &frames[1]);
    let side = if sig == CLIENT_SIGNATURE {
        Side::Client
    } else if sig == WORKER_SIGNATURE {
        Side::Worker
    } else if sig.len() == 4 && (sig.starts_with(b"ZFC") || sig.starts_with(b"ZFW")) {
        return Err(ProtocolError::new(
            "bad_version",
            format!(
                "unsupported protocol version {}",
                String::from_utf8_lossy(sig)
            ),
        ));
    } else {
        return Err(ProtocolError::malformed(
            "first frame is not a zmqflow signature",
        ));
    };
    if command.len() != 1 {
        return Err(ProtocolError::malformed("command frame must be 1 byte"));
    }
    let code = command[0];
    let known = matches!(code, 0x01..=0x09 | 0x11..=0x16);
    if !known {
        return Err(ProtocolError::new(
            "unknown_command",
            format!("unknown command 0x{code:02x}"),
        ));
    }
    if (side == Side::Client) != (code < 0x10) {
        return Err(ProtocolError::new(
            "unknown_command",
            format!("command 0x{code:02x} under the wrong signature"),
        ));
    }
    Ok((side, code))
}

fn body_count(frames: &[Vec<u8>], count: usize, name: &str) -> Result<(), ProtocolError> {
    let got = frames.len() - 2;
    if got != count {
        return Err(ProtocolError::malformed(format!(
            "{name} takes {count} body frames, got {got}"
        )));
    }
    Ok(())
}

fn valid_service(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Decode one worker-side message (frames as a DEALER sees them).
pub fn decode(frames: &[Vec<u8>]) -> Result<Message, ProtocolError> {
    let (side, code) = peek(frames)?;
    if side == Side::Client {
        return Err(ProtocolError::new(
            "unknown_command",
            format!("client command 0x{code:02x} on the worker side"),
        ));
    }
    match code {
        cmd::READY => {
            body_count(frames, 1, "READY")?;
            let ready: Ready = unpack(&frames[2])?;
            if ready.services.is_empty() || !ready.services.iter().all(|s| valid_service(s)) {
                return Err(ProtocolError::malformed(
                    "READY needs one or more valid service names",
                ));
            }
            Ok(Message::Ready(ready))
        }
        cmd::TASK => {
            body_count(frames, 2, "TASK")?;
            let b: DispatchBody = unpack(&frames[2])?;
            Ok(Message::Task(Dispatch {
                id: b.id,
                service: b.service,
                headers: b.headers,
                attempt: b.attempt,
                payload: frames[3].clone(),
            }))
        }
        cmd::RESULT => {
            body_count(frames, 2, "RESULT")?;
            let b: DoneBody = unpack(&frames[2])?;
            Ok(Message::Done {
                id: b.id,
                payload: frames[3].clone(),
            })
        }
        cmd::FAILED => {
            body_count(frames, 1, "FAILED")?;
            let b: ErrorBody = unpack(&frames[2])?;
            Ok(Message::Error {
                id: b.id,
                error: b.error,
            })
        }
        cmd::HEARTBEAT => {
            body_count(frames, 0, "HEARTBEAT")?;
            Ok(Message::Heartbeat)
        }
        _ => {
            body_count(frames, 1, "DISCONNECT")?;
            let b: ByeBody = unpack(&frames[2])?;
            Ok(Message::Disconnect { reason: b.reason })
        }
    }
}

/// Best effort: the `id` of a TASK whose body did not decode as a whole,
/// so that the worker can still answer it with FAILED.
pub fn salvage_task_id(frames: &[Vec<u8>]) -> Option<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    let body = frames.get(2)?;
    unpack::<IdOnly>(body).ok().map(|b| b.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat() -> Frames {
        vec![WORKER_SIGNATURE.to_vec(), vec![cmd::HEARTBEAT]]
    }

    #[test]
    fn heartbeat_round_trip() {
        assert_eq!(encode(&Message::Heartbeat), heartbeat());
        assert_eq!(decode(&heartbeat()).unwrap(), Message::Heartbeat);
    }

    #[test]
    fn integers_use_the_smallest_encoding() {
        // The same bytes msgpack-python writes for these values.
        let cases: [(u64, &[u8]); 6] = [
            (0, &[0x00]),
            (127, &[0x7f]),
            (128, &[0xcc, 0x80]),
            (255, &[0xcc, 0xff]),
            (256, &[0xcd, 0x01, 0x00]),
            (70000, &[0xce, 0x00, 0x01, 0x11, 0x70]),
        ];
        for (value, want) in cases {
            let ready = Ready {
                worker: "w".into(),
                language: "rust".into(),
                services: vec!["echo".into()],
                credit: value,
                inflight: vec![],
                version: String::new(),
                pid: 0,
                host: String::new(),
            };
            let body = pack(&ready);
            let needle = [b"\xa6credit".as_slice(), want].concat();
            assert!(
                body.windows(needle.len()).any(|w| w == needle.as_slice()),
                "credit {value} not encoded as {want:02x?}"
            );
        }
    }

    #[test]
    fn header_values_keep_their_types_and_order() {
        let mut headers = Headers::new();
        headers.insert("z".into(), rmpv::Value::Nil);
        headers.insert("a".into(), rmpv::Value::Boolean(true));
        headers.insert("n".into(), rmpv::Value::from(-5));
        headers.insert("f".into(), rmpv::Value::F64(1.5));
        let task = Message::Task(Dispatch {
            id: "t".into(),
            service: "echo".into(),
            headers,
            attempt: 1,
            payload: b"x".to_vec(),
        });
        let wire = encode(&task);
        assert_eq!(decode(&wire).unwrap(), task);
        let body = &wire[2];
        let expect_headers: &[u8] =
            b"\x84\xa1z\xc0\xa1a\xc3\xa1n\xfb\xa1f\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00";
        assert!(body
            .windows(expect_headers.len())
            .any(|w| w == expect_headers));
    }

    #[test]
    fn keys_in_any_order_and_unknown_keys_are_accepted() {
        // {"extra": 1, "reason": "x"}
        let body = b"\x82\xa5extra\x01\xa6reason\xa1x".to_vec();
        let msg = vec![WORKER_SIGNATURE.to_vec(), vec![cmd::DISCONNECT], body];
        assert_eq!(
            decode(&msg).unwrap(),
            Message::Disconnect { reason: "x".into() }
        );
    }

    #[test]
    fn bad_frames_are_refused_with_the_reference_codes() {
        let code = |f: Frames| decode(&f).unwrap_err().code;
        assert_eq!(code(vec![b"ZFW1".to_vec()]), "malformed");
        assert_eq!(code(vec![b"ZFW2".to_vec(), vec![0x15]]), "bad_version");
        assert_eq!(code(vec![b"HTTP".to_vec(), vec![0x15]]), "malformed");
        assert_eq!(code(vec![b"ZFW1".to_vec(), vec![0x15, 0]]), "malformed");
        assert_eq!(code(vec![b"ZFW1".to_vec(), vec![0x30]]), "unknown_command");
        assert_eq!(code(vec![b"ZFW1".to_vec(), vec![0x06]]), "unknown_command");
        assert_eq!(
            code(vec![b"ZFW1".to_vec(), vec![0x15], vec![]]),
            "malformed"
        );
        assert_eq!(
            code(vec![b"ZFW1".to_vec(), vec![0x12], vec![0xc1], vec![]]),
            "malformed"
        );
        let big = vec![0x90; MAX_MAP_BYTES + 1];
        assert_eq!(code(vec![b"ZFW1".to_vec(), vec![0x16], big]), "malformed");
    }

    #[test]
    fn task_id_is_salvaged_from_a_bad_task() {
        // {"id": "t-9"} without service/headers/attempt
        let body = b"\x81\xa2id\xa3t-9".to_vec();
        let msg = vec![WORKER_SIGNATURE.to_vec(), vec![cmd::TASK], body, vec![]];
        assert!(decode(&msg).is_err());
        assert_eq!(salvage_task_id(&msg).as_deref(), Some("t-9"));
    }
}
