//! The domain of leasehold: what a lock is, what a store promises, and how
//! stores are described.
//!
//! * [`LockStore`] is the one trait every backend implements. Contention is
//!   an `Ok` outcome ([`Acquire`], [`Release`]); `Err` means the store failed.
//! * [`manifest`] reads Dapr component YAML into [`manifest::Component`]s.
//! * [`metadata`] parses component metadata values the way daprd does
//!   (case-insensitive names, Go durations, Go booleans).
//! * [`renewal`] is the one renewal schedule of every lease kept alive on a
//!   holder's behalf (the sidecar's Hold streams, the client guards).
//! * [`secretstore`] is daprd's two local secret stores, through which
//!   [`manifest`] resolves `secretKeyRef` metadata.
//! * With the `testsuite` feature, `testsuite` is the conformance suite that
//!   every store runs in its own tests.
//!
//! This crate does no I/O apart from reading component files and the
//! secrets files they name.

mod store;

pub mod duration;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
pub mod leaseset;
#[cfg(feature = "manifest")]
pub mod manifest;
pub mod metadata;
pub mod renewal;
#[cfg(feature = "manifest")]
pub mod secretstore;
#[cfg(feature = "testsuite")]
mod setsuite;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use store::{
    Acquire, Capabilities, Consistency, Fence, ForceRelease, LockInfo, LockStore, Release,
    ReleaseWait, Renewal, StoreError, StoreErrorKind,
};
