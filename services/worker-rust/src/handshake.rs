//! Refused handshakes, seen from the worker's side through the socket monitor.
//!
//! Contract: a worker the forwarder refuses (ZAP says no, a plain worker at a
//! CURVE forwarder, a wrong forwarder key) hears nothing at all, and libzmq
//! does not try that socket again once the forwarder allows it: the only
//! sign is an event on the socket monitor. [`Watch::new`] starts watching a
//! socket before it connects for HANDSHAKE_FAILED_AUTH,
//! HANDSHAKE_FAILED_PROTOCOL and HANDSHAKE_FAILED_NO_DETAIL (a PAIR socket on
//! the monitor's inproc endpoint); [`Watch::read`] takes every waiting event
//! without blocking and returns the last [`Refusal`], whose message names
//! our key (Z85, as in its .key file) and the endpoint, in the words of the
//! Python side (src/zmqflow/security/handshake.py). What to do about a
//! refusal (a new socket after a backoff) is the worker's rule (worker.rs).
//! The worker drops the watch once the forwarder has spoken on the socket,
//! so that the hot path polls what it polled before.

use std::sync::atomic::{AtomicUsize, Ordering};

use zmq::SocketEvent;

/// ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: CURVE met NULL, or the other way round.
const MECHANISM_MISMATCH: u32 = 0x1100_0002;

static WATCHES: AtomicUsize = AtomicUsize::new(0);

/// The events that mean "this socket will never get in".
fn refused_events() -> i32 {
    (SocketEvent::HANDSHAKE_FAILED_AUTH as i32)
        | (SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32)
        | (SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32)
}

/// How a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The forwarder's ZAP handler said no (`status` 400, 500, ...).
    Auth { status: u32 },
    /// A CURVE peer met a plain one.
    MechanismMismatch,
    /// Another ZMTP protocol error (`code` as libzmq numbers it).
    Protocol { code: u32 },
    /// No detail: typically the forwarder could not decrypt our HELLO (wrong server key).
    NoDetail,
}

/// One refused handshake: how, where, with which of our keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub cause: Cause,
    pub endpoint: String,
    /// Our public key (Z85), `None` for a plain socket.
    pub key: Option<String>,
}

impl Refusal {
    /// A monitor message (event frame, endpoint frame); `None` for anything else.
    pub fn from_frames(frames: &[Vec<u8>], key: Option<&str>) -> Option<Refusal> {
        let [event, endpoint] = frames else {
            return None;
        };
        let event: &[u8; 6] = event.as_slice().try_into().ok()?;
        let id = u16::from_ne_bytes([event[0], event[1]]);
        let value = u32::from_ne_bytes([event[2], event[3], event[4], event[5]]);
        // (SocketEvent::from_raw panics on an id it does not know: compare instead)
        let cause = if id == SocketEvent::HANDSHAKE_FAILED_AUTH.to_raw() {
            Cause::Auth { status: value }
        } else if id == SocketEvent::HANDSHAKE_FAILED_PROTOCOL.to_raw() {
            if value == MECHANISM_MISMATCH {
                Cause::MechanismMismatch
            } else {
                Cause::Protocol { code: value }
            }
        } else if id == SocketEvent::HANDSHAKE_FAILED_NO_DETAIL.to_raw() {
            Cause::NoDetail
        } else {
            return None;
        };
        Some(Refusal {
            cause,
            endpoint: String::from_utf8_lossy(endpoint).into_owned(),
            key: key.map(str::to_owned),
        })
    }

    /// What to log: names our key and the endpoint.
    pub fn message(&self) -> String {
        let endpoint = &self.endpoint;
        let key = self.key.as_deref().unwrap_or("(none: plain)");
        match (self.cause, &self.key) {
            (Cause::Auth { status }, _) => format!(
                "forwarder refused our key {key} at {endpoint} (ZAP status {status}): \
                 its allow-list does not hold this public key"
            ),
            // A mechanism mismatch, or the forwarder hung up first (NO_DETAIL):
            // on a plain socket both mean a CURVE forwarder, as in handshake.py.
            (Cause::MechanismMismatch | Cause::NoDetail | Cause::Protocol { .. }, None) => format!(
                "forwarder at {endpoint} refused a plain connection: it wants CURVE \
                 (give --curve-secret and --curve-server)"
            ),
            (Cause::MechanismMismatch, Some(_)) => format!(
                "forwarder at {endpoint} refused our CURVE key {key}: \
                 it is not a CURVE forwarder (plain mode)"
            ),
            (Cause::Protocol { code }, _) => format!(
                "handshake with the forwarder at {endpoint} failed \
                 (protocol error 0x{code:x}), our key {key}"
            ),
            (Cause::NoDetail, _) => format!(
                "handshake with the forwarder at {endpoint} failed with our key {key}: \
                 is the forwarder's public key (--curve-server) right?"
            ),
        }
    }
}

/// The monitor of one socket, for refused handshakes only.
pub struct Watch {
    /// Our end of the monitor (PAIR).
    pub socket: zmq::Socket,
    key: Option<String>,
}

impl Watch {
    /// Watch `socket` (call before it connects); `key` is our public key text.
    pub fn new(
        ctx: &zmq::Context,
        socket: &zmq::Socket,
        key: Option<&str>,
    ) -> Result<Watch, zmq::Error> {
        // inproc names must be unique in the context: one per watch.
        let endpoint = format!(
            "inproc://zmqflow-handshake-{}",
            WATCHES.fetch_add(1, Ordering::Relaxed)
        );
        socket.monitor(&endpoint, refused_events())?;
        let pair = ctx.socket(zmq::PAIR)?;
        pair.set_linger(0)?;
        pair.connect(&endpoint)?;
        Ok(Watch {
            socket: pair,
            key: key.map(str::to_owned),
        })
    }

    /// The last refusal waiting, without blocking.
    pub fn read(&self) -> Option<Refusal> {
        let mut found = None;
        while let Ok(frames) = self.socket.recv_multipart(zmq::DONTWAIT) {
            if let Some(refusal) = Refusal::from_frames(&frames, self.key.as_deref()) {
                found = Some(refusal);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(event: SocketEvent, value: u32) -> Vec<Vec<u8>> {
        let mut head = (event as u16).to_ne_bytes().to_vec();
        head.extend_from_slice(&value.to_ne_bytes());
        vec![head, b"tcp://127.0.0.1:5556".to_vec()]
    }

    #[test]
    fn a_zap_refusal_names_our_key_and_the_endpoint() {
        let r = Refusal::from_frames(
            &frames(SocketEvent::HANDSHAKE_FAILED_AUTH, 400),
            Some("3#j&k/7IPuprgKWJL=60715lFE$b?QEERwhdEt!&"),
        )
        .unwrap();
        assert_eq!(r.cause, Cause::Auth { status: 400 });
        assert_eq!(
            r.message(),
            "forwarder refused our key 3#j&k/7IPuprgKWJL=60715lFE$b?QEERwhdEt!& at \
             tcp://127.0.0.1:5556 (ZAP status 400): its allow-list does not hold this public key"
        );
    }

    #[test]
    fn a_plain_worker_at_a_curve_forwarder_is_told_to_give_keys() {
        let r = Refusal::from_frames(
            &frames(SocketEvent::HANDSHAKE_FAILED_PROTOCOL, MECHANISM_MISMATCH),
            None,
        )
        .unwrap();
        assert_eq!(r.cause, Cause::MechanismMismatch);
        assert!(r
            .message()
            .contains("give --curve-secret and --curve-server"));
    }

    #[test]
    fn a_plain_worker_the_forwarder_hung_up_on_is_told_to_give_keys_too() {
        // libzmq reports NO_DETAIL when the CURVE server closes before the
        // mismatch is seen on our side: the same advice, as in handshake.py.
        let r = Refusal::from_frames(&frames(SocketEvent::HANDSHAKE_FAILED_NO_DETAIL, 0), None)
            .unwrap();
        assert_eq!(r.cause, Cause::NoDetail);
        assert!(r
            .message()
            .contains("refused a plain connection: it wants CURVE"));
    }

    #[test]
    fn other_events_and_shapes_are_not_refusals() {
        assert_eq!(
            Refusal::from_frames(&frames(SocketEvent::HANDSHAKE_SUCCEEDED, 0), None),
            None
        );
        assert_eq!(Refusal::from_frames(&[vec![1, 2, 3]], None), None);
        assert_eq!(Refusal::from_frames(&[vec![1, 2], vec![]], None), None);
    }
}
