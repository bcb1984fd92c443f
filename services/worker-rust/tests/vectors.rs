//! The shared, normative vectors: docs/protocol-vectors/*.json (byte-exact
//! ZFP/2 messages) and docs/service-vectors/services.json (service inputs to
//! exact outputs or error texts).
//!
//! Worker-side vectors go through the worker's own typed codec both ways.
//! Every vector (client side too) is also checked generically: framing via
//! `protocol::peek`, each msgpack body frame decoded and compared with
//! `message` (map keys and item fields in order, payloads as `bin`), and
//! re-encoded to the same bytes.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use zmqflow_worker::protocol::{self, Dispatch, Done, Failure, Headers, Message, Ready, Side};
use zmqflow_worker::services;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

fn protocol_vectors() -> Vec<(String, Json)> {
    let mut out: Vec<(String, Json)> = std::fs::read_dir(docs().join("protocol-vectors"))
        .expect("docs/protocol-vectors exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                serde_json::from_str(&text).unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn frames_of(vector: &Json) -> Vec<Vec<u8>> {
    vector["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| hex::decode(f.as_str().unwrap()).unwrap())
        .collect()
}

fn command_code(name: &str) -> u8 {
    match name {
        "SUBMIT" => 0x01,
        "ACCEPTED" => 0x02,
        "RESULT" => 0x03,
        "FAILED" => 0x04,
        "REFUSED" => 0x05,
        "HEARTBEAT" => 0x06,
        "COLLECT" => 0x07,
        "STATUS" => 0x08,
        "RETRY" => 0x09,
        "W_READY" => 0x11,
        "W_TASK" => 0x12,
        "W_RESULT" => 0x13,
        "W_FAILED" => 0x14,
        "W_HEARTBEAT" => 0x15,
        "W_DISCONNECT" => 0x16,
        other => panic!("unknown command name {other}"),
    }
}

fn json_to_msgpack(value: &Json) -> rmpv::Value {
    match value {
        Json::Null => rmpv::Value::Nil,
        Json::Bool(b) => rmpv::Value::Boolean(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                rmpv::Value::from(u)
            } else if let Some(i) = n.as_i64() {
                rmpv::Value::from(i)
            } else {
                rmpv::Value::F64(n.as_f64().unwrap())
            }
        }
        Json::String(s) => rmpv::Value::from(s.as_str()),
        Json::Array(items) => rmpv::Value::Array(items.iter().map(json_to_msgpack).collect()),
        Json::Object(map) => rmpv::Value::Map(
            map.iter()
                .map(|(k, v)| (rmpv::Value::from(k.as_str()), json_to_msgpack(v)))
                .collect(),
        ),
    }
}

fn headers_of(value: &Json) -> Headers {
    value
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), json_to_msgpack(v)))
        .collect()
}

fn payload_of(message: &Json) -> Vec<u8> {
    hex::decode(message["payload_hex"].as_str().unwrap()).unwrap()
}

fn text(message: &Json, key: &str) -> String {
    message[key].as_str().unwrap().to_owned()
}

fn items(message: &Json) -> &Vec<Json> {
    message["items"].as_array().unwrap()
}

/// The typed worker message a worker-side vector describes.
fn worker_message(kind: &str, message: &Json) -> Message {
    match kind {
        "Ready" => Message::Ready(serde_json::from_value::<Ready>(message.clone()).unwrap()),
        "Tasks" => Message::Tasks(
            items(message)
                .iter()
                .map(|item| Dispatch {
                    id: text(item, "id"),
                    service: text(item, "service"),
                    headers: headers_of(&item["headers"]),
                    attempt: item["attempt"].as_u64().unwrap(),
                    payload: payload_of(item),
                })
                .collect(),
        ),
        "WorkerResults" => Message::Results(
            items(message)
                .iter()
                .map(|item| Done {
                    id: text(item, "id"),
                    payload: payload_of(item),
                })
                .collect(),
        ),
        "WorkerFailures" => Message::Failures(
            items(message)
                .iter()
                .map(|item| Failure {
                    id: text(item, "id"),
                    error: text(item, "error"),
                })
                .collect(),
        ),
        "WorkerHeartbeat" => Message::Heartbeat,
        "Disconnect" => Message::Disconnect {
            reason: text(message, "reason"),
        },
        other => panic!("not a worker message type: {other}"),
    }
}

#[test]
fn worker_vectors_decode_and_encode_byte_exact() {
    let mut seen = 0;
    for (name, vector) in protocol_vectors() {
        if !name.starts_with("worker-") {
            continue;
        }
        let frames = frames_of(&vector);
        let want = worker_message(vector["type"].as_str().unwrap(), &vector["message"]);
        assert_eq!(protocol::decode(&frames).unwrap(), want, "{name}: decode");
        if let Message::Tasks(items) = &want {
            let each: Vec<_> = items.iter().cloned().map(Ok).collect();
            assert_eq!(protocol::decode_tasks(&frames), Ok(each), "{name}");
        }
        assert_eq!(protocol::encode(&want), frames, "{name}: encode");
        seen += 1;
    }
    assert_eq!(seen, 10, "worker-side vectors found");
}

/// The msgpack value of each body frame a vector's `message` stands for, in
/// order: for SUBMIT and the batched TASK, RESULT and FAILED, one array of
/// items, each an array of the item's fields in the vector's key order
/// (`payload_hex` as `bin`); for ACCEPTED, COLLECT and RETRY the id array;
/// nothing for an empty message; otherwise one map.
fn expected_bodies(kind: &str, message: &Json) -> Vec<rmpv::Value> {
    let object = message.as_object().unwrap();
    if let Some(list) = object.get("tasks").or_else(|| object.get("items")) {
        let items = list
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                let fields = item.as_object().unwrap().iter().map(|(key, value)| {
                    if key == "payload_hex" {
                        rmpv::Value::Binary(payload_of(item))
                    } else {
                        json_to_msgpack(value)
                    }
                });
                rmpv::Value::Array(fields.collect())
            })
            .collect();
        return vec![rmpv::Value::Array(items)];
    }
    if matches!(kind, "Accepted" | "Collect" | "Retry") {
        return vec![json_to_msgpack(&message["ids"])];
    }
    if kind == "Heartbeat" && message["forwarder"].is_null() {
        return vec![]; // a client's HEARTBEAT; the forwarder's reply has a map
    }
    if object.is_empty() {
        return vec![];
    }
    vec![json_to_msgpack(message)]
}

#[test]
fn every_vector_has_valid_framing_and_ordered_bodies() {
    let vectors = protocol_vectors();
    assert!(
        vectors.len() >= 25,
        "only {} protocol vectors",
        vectors.len()
    );
    for (name, vector) in vectors {
        let frames = frames_of(&vector);
        let (side, code) = protocol::peek(&frames).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            side,
            if name.starts_with("client-") {
                Side::Client
            } else {
                Side::Worker
            },
            "{name}"
        );
        assert_eq!(
            code,
            command_code(vector["command"].as_str().unwrap()),
            "{name}: command"
        );
        let bodies = expected_bodies(vector["type"].as_str().unwrap(), &vector["message"]);
        assert_eq!(frames.len() - 2, bodies.len(), "{name}: body frame count");
        for (i, (frame, want)) in frames[2..].iter().zip(bodies).enumerate() {
            // Value equality compares maps entry by entry, so this also
            // checks the documented key order.
            let got = rmpv::decode::read_value(&mut frame.as_slice()).unwrap();
            assert_eq!(got, want, "{name}: frame {}", i + 2);
            let mut again = Vec::new();
            rmpv::encode::write_value(&mut again, &want).unwrap();
            assert_eq!(&again, frame, "{name}: frame {} re-encoded", i + 2);
        }
    }
}

#[test]
fn client_vectors_are_not_worker_messages() {
    for (name, vector) in protocol_vectors() {
        if name.starts_with("client-") {
            let err = protocol::decode(&frames_of(&vector)).unwrap_err();
            assert_eq!(err.code, "unknown_command", "{name}");
        }
    }
}

#[test]
fn service_vectors_byte_exact() {
    let path = docs().join("service-vectors/services.json");
    let vectors: Vec<Json> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(vectors.len() >= 18);
    for (i, vector) in vectors.iter().enumerate() {
        let service = vector["service"].as_str().unwrap();
        let handler =
            services::lookup(service).unwrap_or_else(|| panic!("no handler for {service}"));
        let payload = hex::decode(vector["payload_hex"].as_str().unwrap()).unwrap();
        let got = handler(&payload, &Headers::new());
        match (vector.get("output_hex"), vector.get("error")) {
            (Some(out), _) => {
                let want = hex::decode(out.as_str().unwrap()).unwrap();
                assert_eq!(
                    got.as_deref(),
                    Ok(want.as_slice()),
                    "vector {i} ({service})"
                );
            }
            (None, Some(err)) => assert_eq!(
                got,
                Err(err.as_str().unwrap().to_owned()),
                "vector {i} ({service})"
            ),
            _ => panic!("vector {i} has neither output_hex nor error"),
        }
    }
}
