//! Helpers shared by the end-to-end tests.

use std::path::Path;

use leasehold_testkit::sidecar::{Sidecar, SidecarOptions};
use serde_json::Value;

pub(crate) fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_leasehold"))
}

pub(crate) fn start(args: &[&str], env: &[(&str, &str)]) -> Sidecar {
    start_serving(None, args, env)
}

fn start_serving(components: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Sidecar {
    Sidecar::start(
        binary(),
        SidecarOptions {
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ports: None,
            components: components.map(str::to_owned),
        },
    )
}

pub(crate) fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

pub(crate) fn write_component(dir: &Path, file: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    leasehold_testkit::component::write(dir, file, text);
}

/// A lock store for the tests that run on every store: the component file
/// to serve it, and whatever keeps its backend alive.
pub(crate) struct Backend {
    pub(crate) name: &'static str,
    pub(crate) component: String,
    /// Keeps backend processes alive for the test.
    pub(crate) _guard: Box<dyn std::any::Any>,
}

/// Every store this build has, each with a fresh backend. A missing server
/// binary fails the test (see `leasehold_testkit::find_binary`).
pub(crate) fn backends() -> Vec<Backend> {
    let redis = leasehold_testkit::redis::RedisServer::start();
    let etcd = leasehold_testkit::etcd::EtcdCluster::single();
    let postgres = leasehold_testkit::postgres::Postgres::start();
    vec![
        Backend {
            name: "memory",
            component: component("lock.in-memory", &[("restartGuard", "false")]),
            _guard: Box::new(()),
        },
        Backend {
            name: "redis",
            component: component("lock.redis", &[("redisHost", &redis.addr())]),
            _guard: Box::new(redis),
        },
        Backend {
            name: "etcd",
            component: component("lock.etcd", &[("endpoints", &etcd.endpoints())]),
            _guard: Box::new(etcd),
        },
        Backend {
            name: "postgres",
            component: component(
                "lock.postgresql",
                &[("connectionString", &postgres.connection_string())],
            ),
            _guard: Box::new(postgres),
        },
    ]
}

/// A component named `locks` of `type_name` with `metadata`.
pub(crate) fn component(type_name: &str, metadata: &[(&str, &str)]) -> String {
    leasehold_testkit::component("locks", type_name, metadata)
}

/// Start a sidecar serving `backend` as the store `locks`.
pub(crate) fn start_with(backend: &Backend, args: &[&str], env: &[(&str, &str)]) -> Sidecar {
    start_serving(Some(&backend.component), args, env)
}
