//! The sidecars the bench starts, through the testkit's spawner, quiet
//! (warnings only) so that logging costs no CPU during a run.

use std::path::Path;

use leasehold_testkit::sidecar::{Sidecar, SidecarOptions};

/// Start `binary serve` on kernel-chosen loopback ports, serving
/// `components` (YAML text) when given, and wait until it is ready.
pub(crate) fn start_sidecar(binary: &Path, components: Option<&str>) -> Sidecar {
    Sidecar::start(
        binary,
        SidecarOptions {
            env: vec![("RUST_LOG".to_owned(), "warn".to_owned())],
            components: components.map(str::to_owned),
            ..SidecarOptions::default()
        },
    )
}
