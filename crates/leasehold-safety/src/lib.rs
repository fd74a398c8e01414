//! Evidence that leasehold's locks stay mutually exclusive.
//!
//! A run starts real sidecars (and, for the Redis, etcd and PostgreSQL
//! stores, real backends) on loopback, lets many clients contend for a few
//! keys through leasehold.v1 `Hold` and Dapr `TryLock`/`Unlock`, has them
//! write to a [`resource::FencedResource`] under their fencing tokens, and
//! injects faults meanwhile: backends and sidecars killed and restarted,
//! sidecars and etcd members paused, clients paused past their lease. The
//! [`check`] module then reads the recorded [`history`] and lists every
//! violation:
//!
//! * two clients believed they held one key at the same moment;
//! * a token did not grow, or was issued twice;
//! * the fenced resource took a write with a token lower than one it had
//!   already taken, or from a writer the token was not granted to.
//!
//! The fuzz targets live beside the code they exercise (leasehold-core's and
//! leasehold-server's `fuzzing` features).

pub mod check;
pub mod cluster;
pub mod history;
pub mod resource;
pub mod workload;

pub use leasehold_testkit::sidecar::leasehold_binary;
