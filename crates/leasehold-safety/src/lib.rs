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
//! [`fuzz`] holds the fuzz targets (driven by `cargo fuzz` from `fuzz/` and
//! by a bounded loop in this crate's tests).

pub mod check;
pub mod cluster;
pub mod fuzz;
pub mod history;
pub mod resource;
pub mod workload;

use std::path::PathBuf;

/// The `leasehold` binary to test: `LEASEHOLD_BIN` if set, else the one
/// Cargo built beside the running executable (`target/<profile>/leasehold`).
pub fn leasehold_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LEASEHOLD_BIN") {
        return Some(PathBuf::from(path));
    }
    let me = std::env::current_exe().ok()?;
    let mut dir = me.parent()?;
    // Tests run from target/<profile>/deps, binaries from target/<profile>.
    for _ in 0..2 {
        let candidate = dir.join("leasehold");
        if candidate.is_file() {
            return Some(candidate);
        }
        dir = dir.parent()?;
    }
    None
}
