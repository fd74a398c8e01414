//! The conformance suite on the in-memory store.

use std::sync::Arc;

use leasehold_stores::memory::{Config, MemoryStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let store = MemoryStore::open(Config::ephemeral()).unwrap();
    leasehold_core::testsuite::run_all(Arc::new(store), "memory").await;
}
