//! The backend health of every store, as `/v1/health` reports it.

use std::time::SystemTime;

use leasehold_core::StoreError;

use super::LockService;

/// One store's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreReport {
    /// `metadata.name`.
    pub name: String,
    /// `spec.type`.
    pub type_name: String,
    /// Whether the backend answered the check just made.
    pub reachable: bool,
    /// The last failure seen, if any.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<SystemTime>,
    /// When the backend was last seen.
    pub checked_at: Option<SystemTime>,
}

/// Every store's health; healthy when every backend answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// Whether every store's backend answered.
    pub healthy: bool,
    /// The stores, sorted by name.
    pub stores: Vec<StoreReport>,
}

impl LockService {
    /// Check every store now (each bounded by the store timeout) and report
    /// what was seen, with the last error.
    pub async fn health_report(&self) -> HealthReport {
        let mut handles: Vec<_> = self.stores().cloned().collect();
        handles.sort_by(|a, b| a.name.cmp(&b.name));
        let timeout = self.limits().store_timeout;
        let mut stores = Vec::with_capacity(handles.len());
        for handle in handles {
            let result = tokio::time::timeout(timeout, handle.store.health())
                .await
                .unwrap_or(Err(StoreError::Timeout(timeout)));
            handle.record_check(result.as_ref().map(|_| ()));
            let health = handle.health();
            stores.push(StoreReport {
                name: handle.name.to_string(),
                type_name: handle.type_name.clone(),
                reachable: health.reachable,
                last_error: health.last_error,
                last_error_at: health.last_error_at,
                checked_at: health.checked_at,
            });
        }
        HealthReport {
            healthy: stores.iter().all(|s| s.reachable),
            stores,
        }
    }
}
