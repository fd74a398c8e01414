//! `cargo run --manifest-path xtask/Cargo.toml -- codegen` regenerates the
//! checked-in protobuf code in crates/leasehold-proto/src/gen from proto/
//! (needs `protoc` on PATH, which scripts/install-test-deps.sh installs).
//! `.ci/run` runs it and fails when the result differs from what is checked
//! in, so the generated code never drifts from the protos.

use std::path::Path;

fn main() {
    let task = std::env::args().nth(1).unwrap_or_default();
    if task != "codegen" {
        eprintln!("usage: xtask codegen");
        std::process::exit(2);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repo");
    let out = root.join("crates/leasehold-proto/src/gen");
    std::fs::create_dir_all(&out).expect("create the output directory");
    let protos: Vec<_> = [
        "proto/dapr/proto/runtime/v1/dapr.proto",
        "proto/leasehold/v1/leasehold.proto",
    ]
    .iter()
    .map(|p| existing(root, p))
    .collect();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .out_dir(&out)
        .compile_protos(&protos, &[root.join("proto")])
        .unwrap_or_else(|err| panic!("codegen failed: {err}"));
    // The etcd protos get client stubs only: leasehold talks to etcd and
    // never serves its API.
    let etcd: Vec<_> = [
        "proto/etcd/mvccpb/kv.proto",
        "proto/etcd/etcdserverpb/rpc.proto",
    ]
    .iter()
    .map(|p| existing(root, p))
    .collect();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .emit_rerun_if_changed(false)
        .out_dir(&out)
        .compile_protos(&etcd, &[root.join("proto")])
        .unwrap_or_else(|err| panic!("etcd codegen failed: {err}"));
    println!("generated into {}", out.display());
}

/// `root/path`, which must exist: a proto that went missing would otherwise
/// leave its old generated file in place and the CI check would not notice.
fn existing(root: &Path, path: &str) -> std::path::PathBuf {
    let path = root.join(path);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}
