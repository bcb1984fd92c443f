//! ZFP/2 wire protocol, worker side (docs/protocol.md).
//!
//! Contract: [`encode`] returns the frames a DEALER sends (signature, one
//! command byte, body frames; no routing id, no delimiter) and [`decode`] is
//! its inverse. Anything unusable is a [`ProtocolError`] carrying the
//! refusal code the reference codec (src/zmqflow/protocol.py) would use.
//!
//! - READY and DISCONNECT carry one msgpack map, written with the documented
//!   keys in the documented order (struct field order +
//!   `rmp_serde::to_vec_named`), absent optional values as nil. Decoding
//!   accepts keys in any order and ignores unknown keys.
//! - TASK, RESULT and FAILED carry 1..N items ([`Dispatch`], [`Done`],
//!   [`Failure`]) in exactly one body frame: a msgpack array of item arrays,
//!   fields in the documented order, payloads as `bin`. Encoding writes the
//!   whole body into one buffer sized up front; decoding reads it in one
//!   pass straight from the frame (no intermediate msgpack tree, payloads
//!   copied once into their item) and ignores fields past the documented
//!   ones. [`decode_tasks`] decodes a TASK item by item, so one bad task does
//!   not sink the others; [`batches`] cuts a list of items into runs that
//!   respect the size rule (at most [`MAX_BATCH`] items and
//!   [`MAX_MESSAGE_BYTES`] per message).
//!
//! Strings are `str`, binary values `bin` and integers take their smallest
//! encoding, so the bytes equal docs/protocol-vectors/.

use std::fmt;

use indexmap::IndexMap;
use rmp::decode as mp;
use rmp::encode::{self as mpw, ValueWriteError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Frame 0 of every client-side message.
pub const CLIENT_SIGNATURE: &[u8] = b"ZFC2";
/// Frame 0 of every worker-side message.
pub const WORKER_SIGNATURE: &[u8] = b"ZFW2";
/// Largest msgpack map frame (READY, DISCONNECT) a peer may send; batch
/// bodies are bounded by [`MAX_MESSAGE_BYTES`] only.
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

/// `<dispatch>` = `[id, service, headers, attempt, payload]`: one task of a TASK.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    pub id: String,
    pub service: String,
    pub headers: Headers,
    pub attempt: u64,
    pub payload: Vec<u8>,
}

/// `<done>` = `[id, payload]`: one handler output of a RESULT.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub id: String,
    pub payload: Vec<u8>,
}

/// `<error>` = `[id, error]`: one handler error of a FAILED.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub id: String,
    pub error: String,
}

/// A TASK item that did not decode: its id when it could be read (the first
/// field is a valid id), and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadTask {
    pub id: Option<String>,
    pub error: ProtocolError,
}

/// An item of a batched message: one msgpack array, fields in wire order.
pub trait Item {
    /// Append the item's array to `out` (a body under construction).
    fn write(&self, out: &mut Vec<u8>) -> Result<(), ValueWriteError>;
    /// Bytes the item adds to a body (an upper bound is fine). The default
    /// encodes the item to measure it.
    fn wire_size(&self) -> usize {
        let mut out = Vec::new();
        self.write(&mut out).expect(INFALLIBLE);
        out.len()
    }
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
    /// TASK: 1..N `<dispatch>` items (forwarder → worker).
    Tasks(Vec<Dispatch>),
    /// RESULT: 1..N `<done>` items (worker → forwarder).
    Results(Vec<Done>),
    /// FAILED: 1..N `<error>` items (worker → forwarder).
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

// ------------------------------------------------------------------ encoding

/// Writing msgpack into a `Vec` cannot fail (it only grows).
const INFALLIBLE: &str = "msgpack encoding into a Vec";

/// Bytes an array, str or bin header takes at most.
const HEADER_MAX: usize = 5;

fn pack<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing plain structs of strings and ints cannot fail.
    rmp_serde::to_vec_named(value).expect(INFALLIBLE)
}

fn frames(command: u8, body: Vec<Vec<u8>>) -> Frames {
    let mut out = Vec::with_capacity(2 + body.len());
    out.push(WORKER_SIGNATURE.to_vec());
    out.push(vec![command]);
    out.extend(body);
    out
}

// `wire_size` is the default (exact, by encoding): the worker never sends a
// TASK, only the tests encode one.
impl Item for Dispatch {
    fn write(&self, out: &mut Vec<u8>) -> Result<(), ValueWriteError> {
        mpw::write_array_len(out, 5)?;
        mpw::write_str(out, &self.id)?;
        mpw::write_str(out, &self.service)?;
        mpw::write_map_len(out, self.headers.len() as u32)?;
        for (key, value) in &self.headers {
            mpw::write_str(out, key)?;
            rmpv::encode::write_value(out, value)?;
        }
        mpw::write_uint(out, self.attempt)?;
        mpw::write_bin(out, &self.payload)
    }
}

impl Item for Done {
    fn write(&self, out: &mut Vec<u8>) -> Result<(), ValueWriteError> {
        mpw::write_array_len(out, 2)?;
        mpw::write_str(out, &self.id)?;
        mpw::write_bin(out, &self.payload)
    }
    fn wire_size(&self) -> usize {
        HEADER_MAX * 3 + self.id.len() + self.payload.len()
    }
}

impl Item for Failure {
    fn write(&self, out: &mut Vec<u8>) -> Result<(), ValueWriteError> {
        mpw::write_array_len(out, 2)?;
        mpw::write_str(out, &self.id)?;
        mpw::write_str(out, &self.error)
    }
    fn wire_size(&self) -> usize {
        HEADER_MAX * 3 + self.id.len() + self.error.len()
    }
}

/// The frames of a batch of 1..N items: one body, encoded once into a
/// buffer sized from [`Item::wire_size`].
fn batch_frames<T: Item>(command: u8, items: &[T]) -> Frames {
    let size = HEADER_MAX + items.iter().map(Item::wire_size).sum::<usize>();
    let mut body = Vec::with_capacity(size);
    mpw::write_array_len(&mut body, items.len() as u32).expect(INFALLIBLE);
    for item in items {
        item.write(&mut body).expect(INFALLIBLE);
    }
    frames(command, vec![body])
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
    // signature and command frames, and the body's array header
    const HEAD: usize = WORKER_SIGNATURE.len() + 1 + HEADER_MAX;
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

// ------------------------------------------------------------------ decoding

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

/// A map frame (READY, DISCONNECT) into its struct.
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

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

fn valid_service(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

// Batch bodies are read with a cursor, `rd: &mut &[u8]`, over the body frame.
// Each `read_*` consumes exactly one whole value: of the wanted type it is
// returned (strings and payloads borrowed from the frame), of another type it
// is skipped and gives `None`, so a bad field spoils its item only. An `Err`
// means the body itself is not valid msgpack: nothing of it can be trusted.

/// Why a batch item could not be used: the item alone, or the whole body.
enum ItemError {
    Bad(BadTask),
    Body(ProtocolError),
}

impl From<ProtocolError> for ItemError {
    fn from(error: ProtocolError) -> Self {
        ItemError::Body(error)
    }
}

fn not_msgpack(e: impl fmt::Display) -> ProtocolError {
    ProtocolError::malformed(format!("body is not valid msgpack: {e}"))
}

/// Skip one value of any type (strings and binaries are not copied).
fn skip(rd: &mut &[u8]) -> Result<(), ProtocolError> {
    rmpv::decode::read_value_ref(rd)
        .map(drop)
        .map_err(not_msgpack)
}

fn skip_n(rd: &mut &[u8], count: u32) -> Result<(), ProtocolError> {
    for _ in 0..count {
        skip(rd)?;
    }
    Ok(())
}

/// A UTF-8 `str`.
fn read_str<'a>(rd: &mut &'a [u8]) -> Result<Option<&'a str>, ProtocolError> {
    match mp::read_str_from_slice(*rd) {
        Ok((text, rest)) => {
            *rd = rest;
            Ok(Some(text))
        }
        Err(_) => skip(rd).map(|()| None),
    }
}

/// A `bin`.
fn read_bin<'a>(rd: &mut &'a [u8]) -> Result<Option<&'a [u8]>, ProtocolError> {
    let mut cursor = *rd;
    if let Ok(len) = mp::read_bin_len(&mut cursor) {
        if let Some((bytes, rest)) = cursor.split_at_checked(len as usize) {
            *rd = rest;
            return Ok(Some(bytes));
        }
    }
    skip(rd).map(|()| None)
}

/// An integer ≥ 0.
fn read_uint(rd: &mut &[u8]) -> Result<Option<u64>, ProtocolError> {
    let mut cursor = *rd;
    match mp::read_int::<u64, _>(&mut cursor) {
        Ok(value) => {
            *rd = cursor;
            Ok(Some(value))
        }
        Err(_) => skip(rd).map(|()| None),
    }
}

/// An array header: the array's length; its elements are read next.
fn read_array_len(rd: &mut &[u8]) -> Result<Option<u32>, ProtocolError> {
    let mut cursor = *rd;
    match mp::read_array_len(&mut cursor) {
        Ok(len) => {
            *rd = cursor;
            Ok(Some(len))
        }
        Err(_) => skip(rd).map(|()| None),
    }
}

/// Task headers: a map with str keys, read entry by entry into its final
/// form. Values are kept as they are, whatever their msgpack type.
fn read_headers(rd: &mut &[u8]) -> Result<Option<Headers>, ProtocolError> {
    let mut cursor = *rd;
    let Ok(len) = mp::read_map_len(&mut cursor) else {
        return skip(rd).map(|()| None);
    };
    *rd = cursor;
    // Each entry takes 2 bytes at least: a bogus length cannot over-allocate.
    let mut headers = Headers::with_capacity((len as usize).min(rd.len() / 2));
    let mut str_keys = true;
    for _ in 0..len {
        let key = read_str(rd)?;
        let value = rmpv::decode::read_value(rd).map_err(not_msgpack)?;
        match key {
            Some(key) if str_keys => {
                headers.insert(key.to_owned(), value);
            }
            _ => str_keys = false,
        }
    }
    Ok(str_keys.then_some(headers))
}

fn bad_item(id: Option<&str>, reason: String) -> ItemError {
    ItemError::Bad(BadTask {
        id: id.filter(|id| valid_id(id)).map(str::to_owned),
        error: ProtocolError::malformed(reason),
    })
}

fn no_id(name: &str) -> ItemError {
    bad_item(None, format!("{name} item id must be a string"))
}

fn wrong_type(name: &str, id: &str, field: &str) -> ItemError {
    bad_item(
        Some(id),
        format!("{name} item field '{field}' has the wrong type"),
    )
}

/// Open one item of a batch: its field count when it is an array of at
/// least `fields` fields. Anything else is consumed whole and is a bad item,
/// with its id when its first field is a valid id.
fn open_item(rd: &mut &[u8], name: &str, fields: u32) -> Result<u32, ItemError> {
    let len = read_array_len(rd)?;
    if let Some(len) = len.filter(|&len| len >= fields) {
        return Ok(len);
    }
    let id = match len {
        Some(len) if len > 0 => {
            let first = read_str(rd)?;
            skip_n(rd, len - 1)?;
            first
        }
        _ => None,
    };
    Err(bad_item(
        id,
        format!("{name} item must be an array of at least {fields} fields"),
    ))
}

/// `<dispatch>` = `[id, service, headers, attempt, payload, …]`.
fn read_dispatch(rd: &mut &[u8]) -> Result<Dispatch, ItemError> {
    let len = open_item(rd, "TASK", 5)?;
    let id = read_str(rd)?;
    let service = read_str(rd)?;
    let headers = read_headers(rd)?;
    let attempt = read_uint(rd)?;
    let payload = read_bin(rd)?;
    skip_n(rd, len - 5)?;
    let id = id.ok_or_else(|| no_id("TASK"))?;
    let wrong = |field| wrong_type("TASK", id, field);
    Ok(Dispatch {
        id: id.to_owned(),
        service: service.ok_or_else(|| wrong("service"))?.to_owned(),
        headers: headers.ok_or_else(|| wrong("headers"))?,
        attempt: attempt.ok_or_else(|| wrong("attempt"))?,
        payload: payload.ok_or_else(|| wrong("payload"))?.to_vec(),
    })
}

/// `<done>` = `[id, payload, …]`.
fn read_done(rd: &mut &[u8]) -> Result<Done, ItemError> {
    let len = open_item(rd, "RESULT", 2)?;
    let id = read_str(rd)?;
    let payload = read_bin(rd)?;
    skip_n(rd, len - 2)?;
    let id = id.ok_or_else(|| no_id("RESULT"))?;
    Ok(Done {
        id: id.to_owned(),
        payload: payload
            .ok_or_else(|| wrong_type("RESULT", id, "payload"))?
            .to_vec(),
    })
}

/// `<error>` = `[id, error, …]`.
fn read_failure(rd: &mut &[u8]) -> Result<Failure, ItemError> {
    let len = open_item(rd, "FAILED", 2)?;
    let id = read_str(rd)?;
    let error = read_str(rd)?;
    skip_n(rd, len - 2)?;
    let id = id.ok_or_else(|| no_id("FAILED"))?;
    Ok(Failure {
        id: id.to_owned(),
        error: error
            .ok_or_else(|| wrong_type("FAILED", id, "error"))?
            .to_owned(),
    })
}

/// The items of a batched command, decoded one by one with `read`: exactly
/// one body frame, a non-empty msgpack array and nothing after it. `Err`
/// when the body as a whole is unusable; a bad item is an `Err` in its slot.
fn batch_items<T>(
    frames: &[Vec<u8>],
    name: &str,
    read: fn(&mut &[u8]) -> Result<T, ItemError>,
) -> Result<Vec<Result<T, BadTask>>, ProtocolError> {
    let got = frames.len().saturating_sub(2);
    if got != 1 {
        return Err(ProtocolError::malformed(format!(
            "{name} takes 1 body frame (an array of items), got {got}"
        )));
    }
    let mut rd = frames[2].as_slice();
    let count = match mp::read_array_len(&mut rd) {
        Ok(count) if count > 0 => count,
        _ => {
            return Err(ProtocolError::malformed(format!(
                "{name} body must be a non-empty array of items"
            )))
        }
    };
    // Each item takes 1 byte at least: a bogus count cannot over-allocate.
    let mut items = Vec::with_capacity((count as usize).min(rd.len()));
    for _ in 0..count {
        match read(&mut rd) {
            Ok(item) => items.push(Ok(item)),
            Err(ItemError::Bad(bad)) => items.push(Err(bad)),
            Err(ItemError::Body(error)) => return Err(error),
        }
    }
    if !rd.is_empty() {
        return Err(not_msgpack(format!(
            "{} bytes after the array of items",
            rd.len()
        )));
    }
    Ok(items)
}

/// Every item of a batch, or the error of the first bad one.
fn all_items<T>(
    frames: &[Vec<u8>],
    name: &str,
    read: fn(&mut &[u8]) -> Result<T, ItemError>,
) -> Result<Vec<T>, ProtocolError> {
    batch_items(frames, name, read)?
        .into_iter()
        .map(|item| item.map_err(|bad| bad.error))
        .collect()
}

/// A TASK (frames as a DEALER sees them, signature and command checked by
/// the caller or not) decoded item by item in one pass over its body: a bad
/// item is a [`BadTask`] in its slot and the others are unaffected. `Err`
/// only when the body is not one non-empty msgpack array.
pub fn decode_tasks(frames: &[Vec<u8>]) -> Result<Vec<Result<Dispatch, BadTask>>, ProtocolError> {
    batch_items(frames, "TASK", read_dispatch)
}

/// Decode one worker-side message (frames as a DEALER sees them). A batch
/// with one bad item is unusable as a whole.
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
        cmd::TASK => all_items(frames, "TASK", read_dispatch).map(Message::Tasks),
        cmd::RESULT => all_items(frames, "RESULT", read_done).map(Message::Results),
        cmd::FAILED => all_items(frames, "FAILED", read_failure).map(Message::Failures),
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
    use rmpv::Value;

    fn heartbeat() -> Frames {
        vec![WORKER_SIGNATURE.to_vec(), vec![cmd::HEARTBEAT]]
    }

    /// msgpack bytes of `value`.
    fn packed(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, value).unwrap();
        out
    }

    /// One body frame: the array of `items`.
    fn body(items: Vec<Value>) -> Vec<u8> {
        packed(&Value::Array(items))
    }

    fn bin(bytes: &[u8]) -> Value {
        Value::Binary(bytes.to_vec())
    }

    /// A well-formed `<dispatch>` for echo.
    fn dispatch_item(id: &str, attempt: u64, payload: &[u8]) -> Value {
        Value::Array(vec![
            id.into(),
            "echo".into(),
            Value::Map(vec![]),
            attempt.into(),
            bin(payload),
        ])
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
            // A TASK item's attempt: after the (empty) headers, before the payload.
            let task = Message::Tasks(vec![Dispatch {
                id: "t".into(),
                service: "echo".into(),
                headers: Headers::new(),
                attempt: value,
                payload: vec![],
            }]);
            let wire = encode(&task);
            let needle = [&[0x80], want, &[0xc4, 0x00]].concat();
            assert!(
                wire[2].ends_with(&needle),
                "attempt {value} not encoded as {want:02x?}"
            );
            assert_eq!(decode(&wire).unwrap(), task);
        }
    }

    #[test]
    fn header_values_keep_their_types_and_order() {
        let mut headers = Headers::new();
        headers.insert("z".into(), Value::Nil);
        headers.insert("a".into(), Value::Boolean(true));
        headers.insert("n".into(), Value::from(-5));
        headers.insert("f".into(), Value::F64(1.5));
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
        let msg = frames(cmd::DISCONNECT, vec![body]);
        assert_eq!(
            decode(&msg).unwrap(),
            Message::Disconnect { reason: "x".into() }
        );
    }

    #[test]
    fn bad_frames_are_refused_with_the_reference_codes() {
        let code = |f: Frames| decode(&f).unwrap_err().code;
        assert_eq!(code(vec![b"ZFW2".to_vec()]), "malformed");
        assert_eq!(code(vec![b"ZFW1".to_vec(), vec![0x15]]), "bad_version");
        assert_eq!(code(vec![b"ZFW3".to_vec(), vec![0x15]]), "bad_version");
        assert_eq!(code(vec![b"HTTP".to_vec(), vec![0x15]]), "malformed");
        assert_eq!(code(vec![b"ZFW2".to_vec(), vec![0x15, 0]]), "malformed");
        assert_eq!(code(vec![b"ZFW2".to_vec(), vec![0x30]]), "unknown_command");
        assert_eq!(code(vec![b"ZFW2".to_vec(), vec![0x06]]), "unknown_command");
        assert_eq!(
            code(vec![b"ZFW2".to_vec(), vec![0x15], vec![]]),
            "malformed"
        );
        let big = vec![0x90; MAX_MAP_BYTES + 1];
        assert_eq!(code(vec![b"ZFW2".to_vec(), vec![0x16], big]), "malformed");
    }

    #[test]
    fn a_bad_task_keeps_its_id_and_does_not_sink_the_batch() {
        let items = vec![
            dispatch_item("good-1", 1, b"one"),
            // too short: the id is still read
            Value::Array(vec!["t-9".into()]),
            // a field of the wrong type
            Value::Array(vec![
                "t-8".into(),
                5.into(),
                Value::Map(vec![]),
                1.into(),
                bin(b""),
            ]),
            // headers with a key that is not a str
            Value::Array(vec![
                "t-7".into(),
                "echo".into(),
                Value::Map(vec![(1.into(), 2.into())]),
                1.into(),
                bin(b""),
            ]),
            // the payload as str instead of bin
            Value::Array(vec![
                "t-6".into(),
                "echo".into(),
                Value::Map(vec![]),
                1.into(),
                "x".into(),
            ]),
            // not an array
            Value::from(42),
            // an id that is not a str
            Value::Array(vec![
                7.into(),
                "echo".into(),
                Value::Map(vec![]),
                1.into(),
                bin(b""),
            ]),
            // a str id that is not a valid id
            Value::Array(vec![
                "no spaces".into(),
                "echo".into(),
                Value::Map(vec![]),
                (-1).into(),
                bin(b""),
            ]),
            dispatch_item("good-2", 2, b"two"),
        ];
        let msg = frames(cmd::TASK, vec![body(items)]);
        assert_eq!(decode(&msg).unwrap_err().code, "malformed");
        let items = decode_tasks(&msg).unwrap();
        assert_eq!(items.len(), 9);
        assert_eq!(items[0].as_ref().unwrap().id, "good-1");
        let bad: Vec<Option<&str>> = items[1..8]
            .iter()
            .map(|item| item.as_ref().unwrap_err().id.as_deref())
            .collect();
        assert_eq!(
            bad,
            [
                Some("t-9"),
                Some("t-8"),
                Some("t-7"),
                Some("t-6"),
                None,
                None,
                None
            ]
        );
        let reason = |i: usize| items[i].as_ref().unwrap_err().error.to_string();
        assert_eq!(
            reason(1),
            "malformed: TASK item must be an array of at least 5 fields"
        );
        assert_eq!(
            reason(2),
            "malformed: TASK item field 'service' has the wrong type"
        );
        assert_eq!(
            reason(3),
            "malformed: TASK item field 'headers' has the wrong type"
        );
        assert_eq!(
            reason(4),
            "malformed: TASK item field 'payload' has the wrong type"
        );
        assert_eq!(reason(6), "malformed: TASK item id must be a string");
        let last = items[8].as_ref().unwrap();
        assert_eq!((last.id.as_str(), last.attempt), ("good-2", 2));
        assert_eq!(last.payload, b"two");
    }

    #[test]
    fn fields_past_the_documented_ones_are_ignored() {
        let extra = || vec![Value::from("later"), Value::Array(vec![1.into()])];
        let mut task = vec![
            "t".into(),
            "echo".into(),
            Value::Map(vec![]),
            3.into(),
            bin(b"p"),
        ];
        task.extend(extra());
        let mut done = vec!["d".into(), bin(b"out")];
        done.extend(extra());
        let mut error = vec!["e".into(), "boom".into()];
        error.extend(extra());
        let decoded = |command, item| {
            let msg = frames(command, vec![body(vec![Value::Array(item)])]);
            decode(&msg).unwrap()
        };
        assert_eq!(
            decoded(cmd::TASK, task),
            Message::Tasks(vec![Dispatch {
                id: "t".into(),
                service: "echo".into(),
                headers: Headers::new(),
                attempt: 3,
                payload: b"p".to_vec(),
            }])
        );
        assert_eq!(
            decoded(cmd::RESULT, done),
            Message::Results(vec![Done {
                id: "d".into(),
                payload: b"out".to_vec(),
            }])
        );
        assert_eq!(
            decoded(cmd::FAILED, error),
            Message::Failures(vec![Failure {
                id: "e".into(),
                error: "boom".into(),
            }])
        );
    }

    #[test]
    fn a_batch_body_is_one_non_empty_array() {
        let good = || body(vec![dispatch_item("t", 1, b"x")]);
        let done = || body(vec![Value::Array(vec!["t".into(), bin(b"x")])]);
        let truncated = {
            let mut b = body(vec![
                dispatch_item("a", 1, b"x"),
                dispatch_item("b", 1, b"y"),
            ]);
            b.pop();
            b
        };
        let bodies: Vec<(&str, Vec<Vec<u8>>)> = vec![
            ("no body frame", vec![]),
            ("two body frames", vec![good(), good()]),
            (
                "the version 1 layout",
                vec![packed(&Value::Map(vec![])), vec![]],
            ),
            ("an empty array", vec![body(vec![])]),
            ("a map", vec![packed(&Value::Map(vec![]))]),
            ("not msgpack", vec![vec![0xc1]]),
            ("an empty frame", vec![vec![]]),
            ("bytes after the array", vec![[good(), vec![0x00]].concat()]),
            ("a truncated last item", vec![truncated]),
        ];
        for (what, body_frames) in bodies {
            for command in [cmd::TASK, cmd::RESULT, cmd::FAILED] {
                let msg = frames(command, body_frames.clone());
                let err = decode(&msg).unwrap_err();
                assert_eq!(err.code, "malformed", "{what}, 0x{command:02x}");
            }
            let msg = frames(cmd::TASK, body_frames);
            assert!(decode_tasks(&msg).is_err(), "{what}");
        }
        assert!(decode(&frames(cmd::TASK, vec![good()])).is_ok());
        assert!(decode(&frames(cmd::RESULT, vec![done()])).is_ok());
        // A RESULT or FAILED with one bad item is unusable as a whole.
        let mixed = body(vec![
            Value::Array(vec!["t".into(), bin(b"x")]),
            Value::Array(vec!["u".into(), "not bin".into()]),
        ]);
        let err = decode(&frames(cmd::RESULT, vec![mixed])).unwrap_err();
        assert_eq!(err.reason, "RESULT item field 'payload' has the wrong type");
    }

    #[test]
    fn payloads_are_not_held_to_the_map_limit() {
        let payload = vec![0xab; MAX_MAP_BYTES * 4 + 3];
        let task = Message::Tasks(vec![Dispatch {
            id: "big".into(),
            service: "echo".into(),
            headers: Headers::new(),
            attempt: 1,
            payload: payload.clone(),
        }]);
        let results = Message::Results(vec![Done {
            id: "big".into(),
            payload,
        }]);
        for msg in [task, results] {
            let wire = encode(&msg);
            assert_eq!(wire.len(), 3);
            assert_eq!(decode(&wire).unwrap(), msg);
        }
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
            let wire = encode(&msg);
            assert_eq!(wire.len(), 3, "one body frame");
            assert_eq!(decode(&wire).unwrap(), msg);
        }
    }

    #[test]
    fn wire_sizes_bound_the_encoded_items() {
        let long = "x".repeat(70_000);
        let dones = [
            Done {
                id: "t".into(),
                payload: vec![],
            },
            Done {
                id: long.clone(),
                payload: vec![1; 300],
            },
        ];
        let failures = [
            Failure {
                id: "t".into(),
                error: String::new(),
            },
            Failure {
                id: "t".into(),
                error: long,
            },
        ];
        fn encoded<T: Item>(item: &T) -> usize {
            let mut out = Vec::new();
            item.write(&mut out).unwrap();
            out.len()
        }
        for d in &dones {
            assert!(encoded(d) <= d.wire_size());
        }
        for f in &failures {
            assert!(encoded(f) <= f.wire_size());
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
