//! zmqflow worker in Rust: the worker side of ZFP/2 (docs/protocol.md) and
//! the built-in services (docs/services.md).
//!
//! Modules, one concept each: [`protocol`] (frames ⇄ messages),
//! [`services`] (handlers), [`config`] (CLI and environment), [`keys`]
//! (CURVE key files), [`handshake`] (refused handshakes from the socket
//! monitor), [`metrics`] (Prometheus), [`logging`] (text or JSON lines),
//! [`worker`] (the socket loop and handler pool). The binary is src/main.rs.

pub mod config;
pub mod handshake;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod services;
pub mod worker;
