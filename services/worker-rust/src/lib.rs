//! zmqflow worker in Rust: the worker side of ZFP/2 (docs/protocol.md) and
//! the built-in services (docs/services.md).
//!
//! Modules, one concept each: [`protocol`] (frames ⇄ messages),
//! [`services`] (handlers), [`config`] (CLI and environment), [`worker`]
//! (the socket loop and handler pool). The binary is src/main.rs.

pub mod config;
pub mod protocol;
pub mod services;
pub mod worker;
