//! The leasehold sidecar: one lock service behind an HTTP front end (axum)
//! and a gRPC front end (tonic).
//!
//! ```text
//! client ──HTTP──┐  access (token, rate)   ┌─► service ──► LockStore ──► backend
//!                ├─ trace ─────────────────┤   one path per request:
//! client ──gRPC──┘  wire (message ↔ op)    │   admin check, operation, metrics
//! ```
//!
//! | module | what |
//! |---|---|
//! | [`service`] | the operations, their validation, waits, holds, and the one path of every request and store call |
//! | [`wire`] | the protobuf messages of both APIs to and from the service's operations |
//! | [`http`], [`grpc`] | the front ends: routes and methods, each a thin mapping |
//! | [`access`] | the app token and the rate limit, one layer in front of both |
//! | [`observe`] | metrics and traces |
//! | [`admin`] | the metrics listener: `/metrics`, `/v1/health`, the live view |
//! | [`server`], [`net`] | listeners, TLS, connection limits, shutdown |
//! | [`app`], [`auth`], [`error`] | shared state, tokens, the one error table |
//!
//! Imports run one way: front ends use `wire` and `service`; `service` uses
//! `observe`; nothing below uses what is above it.

pub mod access;
pub mod admin;
pub mod app;
pub mod auth;
pub mod embedded;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod grpc;
pub mod http;
pub mod net;
pub mod observe;
pub mod server;
pub mod service;
pub mod wire;

pub use app::AppState;
pub use server::{ListenConfig, Listeners, serve};
