//! ZFP/1 wire protocol, worker side (docs/protocol.md).
//!
//! Contract: [`encode`] returns the frames a DEALER sends (signature, one
//! command byte, body frames; no routing id, no delimiter) and [`decode`] is
//! its inverse. TASK, RESULT and FAILED are batches of 1..N items
//! ([`Dispatch`], [`Done`], [`Failure`]); [`batches`] cuts a list of items
//! into runs that respect the size rule (at most [`MAX_BATCH`] items and
//! [`MAX_MESSAGE_BYTES`] per message) and [`decode_tasks`] decodes a TASK
//! item by item, so one bad task does not sink the others. msgpack maps are written with the documented keys in the
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
/// Largest whole message (ZMQ_MAXMSGSIZE of the forwarder link).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Most items a batched message carries (the forwarder's default `max_batch`).
pub const MAX_BATCH: usize = 1000;

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

/// `{dispatch}` plus the payload frame: one task of a TASK.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    pub id: String,
    pub service: String,
    pub headers: Headers,
    pub attempt: u64,
    pub payload: Vec<u8>,
}

/// `{done}` plus the payload frame: one handler output of a RESULT.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub id: String,
    pub payload: Vec<u8>,
}

/// `{error}`: one handler error of a FAILED.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub id: String,
    pub error: String,
}

/// A TASK item that did not decode: its id when it could be read, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadTask {
    pub id: Option<String>,
    pub error: ProtocolError,
}

/// An item of a batched message: its body frames and their size.
pub trait Item {
    /// The item's body frames, in wire order.
    fn frames(&self) -> Vec<Vec<u8>>;
    /// Bytes the item adds to a message (an upper bound is fine).
    fn wire_size(&self) -> usize {
        self.frames().iter().map(Vec::len).sum()
    }
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
    /// TASK: 1..N `{dispatch}` + payload (forwarder → worker).
    Tasks(Vec<Dispatch>),
    /// RESULT: 1..N `{done}` + payload (worker → forwarder).
    Results(Vec<Done>),
    /// FAILED: 1..N `{error}` (worker → forwarder).
    Failures(Vec<Failure>),
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

impl Item for Dispatch {
    fn frames(&self) -> Vec<Vec<u8>> {
        let body = DispatchBody {
            id: self.id.clone(),
            service: self.service.clone(),
            headers: self.headers.clone(),
            attempt: self.attempt,
        };
        vec![pack(&body), self.payload.clone()]
    }
}

impl Item for Done {
    fn frames(&self) -> Vec<Vec<u8>> {
        let body = DoneBody {
            id: self.id.clone(),
        };
        vec![pack(&body), self.payload.clone()]
    }
    fn wire_size(&self) -> usize {
        // {"id": str}: map and key 4 bytes, str header at most 5
        self.payload.len() + self.id.len() + 9
    }
}

impl Item for Failure {
    fn frames(&self) -> Vec<Vec<u8>> {
        let body = ErrorBody {
            id: self.id.clone(),
            error: self.error.clone(),
        };
        vec![pack(&body)]
    }
    fn wire_size(&self) -> usize {
        // {"id": str, "error": str}: map and keys 10 bytes, str headers at most 10
        self.id.len() + self.error.len() + 20
    }
}

fn batch_frames<T: Item>(command: u8, items: &[T]) -> Frames {
    frames(command, items.iter().flat_map(Item::frames).collect())
}

/// RESULT frames for 1..N outputs.
pub fn results_frames(items: &[Done]) -> Frames {
    batch_frames(cmd::RESULT, items)
}

/// FAILED frames for 1..N errors.
pub fn failures_frames(items: &[Failure]) -> Frames {
    batch_frames(cmd::FAILED, items)
}

/// `items` cut into runs of one message each, in order: at most `max_items`
/// items and `max_bytes` bytes per run (an item larger than that on its own
/// travels alone). Empty input, no runs.
pub fn batches<T: Item>(items: &[T], max_items: usize, max_bytes: usize) -> Vec<&[T]> {
    const HEAD: usize = 5; // signature and command frames
    let mut out = Vec::new();
    let (mut start, mut size) = (0, HEAD);
    for (i, item) in items.iter().enumerate() {
        let n = item.wire_size();
        if i > start && (i - start >= max_items || size + n > max_bytes) {
            out.push(&items[start..i]);
            (start, size) = (i, HEAD);
        }
        size += n;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// Frames for `msg`, signature first; a batch becomes one message whatever
/// its size (senders split with [`batches`] first).
pub fn encode(msg: &Message) -> Frames {
    match msg {
        Message::Ready(ready) => frames(cmd::READY, vec![pack(ready)]),
        Message::Tasks(items) => batch_frames(cmd::TASK, items),
        Message::Results(items) => results_frames(items),
        Message::Failures(items) => failures_frames(items),
        Message::Heartbeat => frames(cmd::HEARTBEAT, vec![]),
        Message::Disconnect { reason } => frames(
            cmd::DISCONNECT,
            vec![pack(&ByeBody {
                reason: reason.clone(),
            })],
        ),
    }
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

fn pairs<'a>(frames: &'a [Vec<u8>], name: &str) -> Result<&'a [Vec<u8>], ProtocolError> {
    let body = &frames[2..];
    if body.is_empty() || !body.len().is_multiple_of(2) {
        return Err(ProtocolError::malformed(format!(
            "{name} takes 1 or more header/payload pairs"
        )));
    }
    Ok(body)
}

fn decode_dispatch(header: &[u8], payload: &[u8]) -> Result<Dispatch, BadTask> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: String,
    }
    match unpack::<DispatchBody>(header) {
        Ok(b) => Ok(Dispatch {
            id: b.id,
            service: b.service,
            headers: b.headers,
            attempt: b.attempt,
            payload: payload.to_vec(),
        }),
        Err(error) => Err(BadTask {
            id: unpack::<IdOnly>(header).ok().map(|b| b.id),
            error,
        }),
    }
}

/// A TASK (frames as a DEALER sees them, signature and command checked by
/// the caller or not) decoded item by item; `Err` only when the body is not
/// a list of pairs.
pub fn decode_tasks(frames: &[Vec<u8>]) -> Result<Vec<Result<Dispatch, BadTask>>, ProtocolError> {
    let body = pairs(frames, "TASK")?;
    Ok(body
        .chunks_exact(2)
        .map(|pair| decode_dispatch(&pair[0], &pair[1]))
        .collect())
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
            let items = decode_tasks(frames)?
                .into_iter()
                .collect::<Result<Vec<_>, BadTask>>()
                .map_err(|bad| bad.error)?;
            Ok(Message::Tasks(items))
        }
        cmd::RESULT => {
            let items = pairs(frames, "RESULT")?
                .chunks_exact(2)
                .map(|pair| {
                    let b: DoneBody = unpack(&pair[0])?;
                    Ok(Done {
                        id: b.id,
                        payload: pair[1].clone(),
                    })
                })
                .collect::<Result<Vec<_>, ProtocolError>>()?;
            Ok(Message::Results(items))
        }
        cmd::FAILED => {
            if frames.len() < 3 {
                return Err(ProtocolError::malformed(
                    "FAILED takes 1 or more body frames",
                ));
            }
            let items = frames[2..]
                .iter()
                .map(|frame| {
                    let b: ErrorBody = unpack(frame)?;
                    Ok(Failure {
                        id: b.id,
                        error: b.error,
                    })
                })
                .collect::<Result<Vec<_>, ProtocolError>>()?;
            Ok(Message::Failures(items))
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
        let task = Message::Tasks(vec![Dispatch {
            id: "t".into(),
            service: "echo".into(),
            headers,
            attempt: 1,
            payload: b"x".to_vec(),
        }]);
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

    fn dispatch_body(id: &str, attempt: rmpv::Value) -> Vec<u8> {
        let map = rmpv::Value::Map(vec![
            ("id".into(), id.into()),
            ("service".into(), "echo".into()),
            ("headers".into(), rmpv::Value::Map(vec![])),
            ("attempt".into(), attempt),
        ]);
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &map).unwrap();
        out
    }

    #[test]
    fn a_bad_task_keeps_its_id_and_does_not_sink_the_batch() {
        let msg = vec![
            WORKER_SIGNATURE.to_vec(),
            vec![cmd::TASK],
            dispatch_body("good-1", 1.into()),
            b"one".to_vec(),
            // {"id": "t-9"} without service/headers/attempt
            b"\x81\xa2id\xa3t-9".to_vec(),
            vec![],
            vec![0xc1],
            vec![],
            dispatch_body("good-2", 2.into()),
            b"two".to_vec(),
        ];
        assert_eq!(decode(&msg).unwrap_err().code, "malformed");
        let items = decode_tasks(&msg).unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].as_ref().unwrap().id, "good-1");
        assert_eq!(items[1].as_ref().unwrap_err().id.as_deref(), Some("t-9"));
        assert_eq!(items[2].as_ref().unwrap_err().id, None);
        let last = items[3].as_ref().unwrap();
        assert_eq!((last.id.as_str(), last.attempt), ("good-2", 2));
        assert_eq!(last.payload, b"two");
    }

    #[test]
    fn batches_need_at_least_one_whole_item() {
        let code = |f: Frames| decode(&f).unwrap_err().code;
        let w = || WORKER_SIGNATURE.to_vec();
        assert_eq!(code(vec![w(), vec![cmd::TASK]]), "malformed");
        assert_eq!(code(vec![w(), vec![cmd::RESULT]]), "malformed");
        assert_eq!(code(vec![w(), vec![cmd::FAILED]]), "malformed");
        let done = b"\x81\xa2id\xa1t".to_vec();
        assert_eq!(
            code(vec![w(), vec![cmd::RESULT], done.clone(), vec![], done]),
            "malformed"
        );
    }

    #[test]
    fn batched_answers_round_trip() {
        let results = Message::Results(vec![
            Done {
                id: "a".into(),
                payload: b"A".to_vec(),
            },
            Done {
                id: "b".into(),
                payload: vec![],
            },
        ]);
        let failures = Message::Failures(vec![
            Failure {
                id: "c".into(),
                error: "boom".into(),
            },
            Failure {
                id: "d".into(),
                error: "bang".into(),
            },
        ]);
        for msg in [results, failures] {
            assert_eq!(decode(&encode(&msg)).unwrap(), msg);
        }
    }

    fn dones(count: usize, size: usize) -> Vec<Done> {
        (0..count)
            .map(|i| Done {
                id: format!("t-{i}"),
                payload: vec![b'x'; size],
            })
            .collect()
    }

    #[test]
    fn batches_split_at_max_items_in_order() {
        let items = dones(2500, 1);
        let runs = batches(&items, MAX_BATCH, MAX_MESSAGE_BYTES);
        assert_eq!(
            runs.iter().map(|r| r.len()).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        let ids: Vec<&str> = runs
            .iter()
            .flat_map(|r| r.iter().map(|d| d.id.as_str()))
            .collect();
        assert_eq!(ids, items.iter().map(|d| d.id.as_str()).collect::<Vec<_>>());
        assert!(batches::<Done>(&[], MAX_BATCH, MAX_MESSAGE_BYTES).is_empty());
    }

    #[test]
    fn batches_keep_each_message_under_the_byte_cap() {
        let items = dones(10, 400);
        let runs = batches(&items, MAX_BATCH, 1000);
        assert_eq!(runs.iter().map(|r| r.len()).collect::<Vec<_>>(), [2; 5]);
        for run in runs {
            let size: usize = results_frames(run).iter().map(Vec::len).sum();
            assert!(size <= 1000, "{size}");
        }
        let mut mixed = dones(3, 1);
        mixed[1].payload = vec![0; 5000];
        let runs = batches(&mixed, MAX_BATCH, 1000);
        assert_eq!(runs.iter().map(|r| r.len()).collect::<Vec<_>>(), [1, 1, 1]);
    }
}
