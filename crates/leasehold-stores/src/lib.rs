//! The lock stores of leasehold and the registry that builds them from
//! component files.
//!
//! | type | feature | backend |
//! |---|---|---|
//! | `lock.in-memory` | always | this process |
//! | `lock.redis` | `redis` | Redis standalone, Sentinel, or a quorum of masters |
//! | `lock.etcd` | `etcd` | etcd v3 |
//! | `lock.postgresql` | `postgres` | PostgreSQL |
//!
//! Building a store is two steps, so that every component file can be
//! checked before any connection is opened: [`validate`] is pure and reports
//! every problem with every field; [`connect`] does the I/O.

use std::path::PathBuf;
use std::sync::Arc;

use leasehold_core::LockStore;
use leasehold_core::manifest::Component;

pub mod memory;

#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod tls;

/// Store types this crate knows, with the feature that compiles each in.
const KNOWN_TYPES: &[(&str, &str, bool)] = &[
    ("in-memory", "", true),
    ("redis", "redis", cfg!(feature = "redis")),
    ("etcd", "etcd", cfg!(feature = "etcd")),
    ("postgresql", "postgres", cfg!(feature = "postgres")),
];

/// What the server tells a store about where it runs.
#[derive(Debug, Clone)]
pub struct StoreContext {
    /// The sidecar's app id.
    pub app_id: String,
    /// Where stores may keep small state files (the in-memory store's
    /// restart guard).
    pub data_dir: PathBuf,
}

/// A validated store configuration, ready to connect.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StoreConfig {
    /// `lock.in-memory`.
    Memory(memory::Config),
    /// `lock.redis`.
    #[cfg(feature = "redis")]
    Redis(redis::Config),
    /// `lock.etcd`.
    #[cfg(feature = "etcd")]
    Etcd(etcd::Config),
    /// `lock.postgresql`.
    #[cfg(feature = "postgres")]
    Postgres(postgres::Config),
}

/// Check one component without any I/O. Every problem is returned.
pub fn validate(component: &Component, cx: &StoreContext) -> Result<StoreConfig, Vec<String>> {
    let kind = component.kind();
    match kind {
        "in-memory" => memory::Config::from_component(component, cx).map(StoreConfig::Memory),
        #[cfg(feature = "redis")]
        "redis" => redis::Config::from_component(component, cx).map(StoreConfig::Redis),
        #[cfg(feature = "etcd")]
        "etcd" => etcd::Config::from_component(component, cx).map(StoreConfig::Etcd),
        #[cfg(feature = "postgres")]
        "postgresql" => postgres::Config::from_component(component, cx).map(StoreConfig::Postgres),
        _ => Err(vec![unknown_type(component)]),
    }
}

fn unknown_type(component: &Component) -> String {
    let kind = component.kind();
    if let Some((_, feature, false)) = KNOWN_TYPES.iter().find(|(name, _, _)| *name == kind) {
        return format!(
            "lock store type {} is not available in this build (feature `{feature}`)",
            component.type_name
        );
    }
    let known: Vec<String> = KNOWN_TYPES
        .iter()
        .map(|(name, _, _)| format!("lock.{name}"))
        .collect();
    format!(
        "unknown lock store type {}; known types: {}",
        component.type_name,
        known.join(", ")
    )
}

/// Open a store from a validated configuration.
pub async fn connect(config: StoreConfig) -> Result<Arc<dyn LockStore>, String> {
    match config {
        StoreConfig::Memory(config) => Ok(Arc::new(
            memory::MemoryStore::open(config).map_err(|err| err.to_string())?,
        )),
        #[cfg(feature = "redis")]
        StoreConfig::Redis(config) => Ok(Arc::new(
            redis::RedisStore::connect(config)
                .await
                .map_err(|err| err.to_string())?,
        )),
        #[cfg(feature = "etcd")]
        StoreConfig::Etcd(config) => Ok(Arc::new(
            etcd::EtcdStore::connect(config)
                .await
                .map_err(|err| err.to_string())?,
        )),
        #[cfg(feature = "postgres")]
        StoreConfig::Postgres(config) => Ok(Arc::new(
            postgres::PostgresStore::connect(config)
                .await
                .map_err(|err| err.to_string())?,
        )),
    }
}
