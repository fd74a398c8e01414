//! End-to-end tests of `leasehold serve`: the real binary, over real
//! sockets, with real backends.

mod cli;
mod common;
mod dapr;
mod ops;
mod secrets;
mod security;
mod v1;
