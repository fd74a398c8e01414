//! One configured store as the service sees it: the store, its scope and
//! limits, and the truth about its backend as last seen.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use leasehold_core::{Capabilities, LockStore, StoreError, StoreErrorKind};

use super::scope::KeyScope;

/// One configured store and what the service needs to know about it.
#[derive(Debug)]
pub struct StoreHandle {
    /// `metadata.name`, shared with the wait queues and hold records.
    pub name: Arc<str>,
    /// `spec.type`, lower-cased.
    pub type_name: String,
    /// `spec.version` (shown as `v1` when empty).
    pub version: String,
    /// The store itself.
    pub store: Arc<dyn LockStore>,
    /// How resource ids become keys.
    pub scope: KeyScope,
    /// The longest lease this store grants.
    pub max_lease: Duration,
    /// The longest total hold through renewals.
    pub max_hold: Duration,
    /// How long Dapr's TryLock waits for a held lock (`tryLockWaitMs`;
    /// zero: it answers at once, as daprd).
    pub dapr_wait: Duration,
    /// What the store declared it can do.
    pub capabilities: Capabilities,
    health: Mutex<StoreHealth>,
    /// A copy of `health.reachable`, read without the lock on every call.
    reachable: AtomicBool,
}

/// The truth about one store's backend, as last seen.
#[derive(Debug, Clone, Default)]
pub struct StoreHealth {
    /// Whether the last call or check reached the backend.
    pub reachable: bool,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<SystemTime>,
    /// When the backend was last seen, by a call or a check.
    pub checked_at: Option<SystemTime>,
}

/// What a handle is made of; the rest starts from "reachable, checked now".
#[derive(Debug)]
pub struct StoreParts {
    /// `metadata.name`.
    pub name: String,
    /// `spec.type`.
    pub type_name: String,
    /// `spec.version`.
    pub version: String,
    /// The opened store.
    pub store: Arc<dyn LockStore>,
    /// How resource ids become keys.
    pub scope: KeyScope,
    /// The longest lease.
    pub max_lease: Duration,
    /// The longest hold.
    pub max_hold: Duration,
    /// How long Dapr's TryLock waits.
    pub dapr_wait: Duration,
}

impl StoreHandle {
    /// A handle over an opened store, reachable as of now.
    pub fn new(parts: StoreParts) -> Self {
        let capabilities = parts.store.capabilities();
        StoreHandle {
            name: Arc::from(parts.name),
            type_name: parts.type_name,
            version: if parts.version.is_empty() {
                "v1".to_owned()
            } else {
                parts.version
            },
            store: parts.store,
            scope: parts.scope,
            max_lease: parts.max_lease,
            max_hold: parts.max_hold,
            dapr_wait: parts.dapr_wait,
            capabilities,
            reachable: AtomicBool::new(true),
            health: Mutex::new(StoreHealth {
                reachable: true,
                checked_at: Some(SystemTime::now()),
                ..StoreHealth::default()
            }),
        }
    }

    /// Record the result of a store call. Failures of the backend count; a
    /// store that only refuses (recovering, unsupported) is still reachable.
    pub fn record_health(&self, result: Result<(), &StoreError>) {
        self.record(result, false);
    }

    /// Record a periodic health check: the same, and always stamped.
    pub fn record_check(&self, result: Result<(), &StoreError>) {
        self.record(result, true);
    }

    fn record(&self, result: Result<(), &StoreError>, stamp: bool) {
        use StoreErrorKind as K;
        let failure = result
            .err()
            .filter(|err| matches!(err.kind(), K::Unavailable | K::Timeout | K::Backend));
        if failure.is_none() && !stamp && self.reachable.load(Ordering::Relaxed) {
            // The common case on the request path: nothing changed, no lock taken.
            return;
        }
        self.reachable.store(failure.is_none(), Ordering::Relaxed);
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now();
        health.checked_at = Some(now);
        health.reachable = failure.is_none();
        if let Some(err) = failure {
            health.last_error = Some(err.to_string());
            health.last_error_at = Some(now);
        }
    }

    /// A copy of the current health.
    pub fn health(&self) -> StoreHealth {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
