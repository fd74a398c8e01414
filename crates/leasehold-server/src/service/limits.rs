//! Bounds on what a request may ask for, checked in one place for both
//! APIs. Each refusal names the field and the limit.

use std::time::Duration;

use crate::error::{ApiError, ErrorKind};

use super::store::StoreHandle;

/// The sidecar's limits. A component may lower (never raise) the lease and
/// hold limits for its store.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest resource id, in bytes.
    pub max_resource_id_bytes: usize,
    /// Longest lock owner, in bytes.
    pub max_owner_bytes: usize,
    /// Longest lease a client may ask for; a component may set a lower one
    /// with `maxLeaseSeconds`.
    pub max_lease: Duration,
    /// How long a store call may take before the request fails.
    pub store_timeout: Duration,
    /// Longest total time one grant may be held through renewals; a
    /// component may set a lower one with `maxHoldSeconds`.
    pub max_hold: Duration,
    /// Longest wait a client may ask for.
    pub max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_resource_id_bytes: 1024,
            max_owner_bytes: 256,
            max_lease: Duration::from_secs(24 * 3600),
            store_timeout: Duration::from_secs(10),
            max_hold: Duration::from_secs(24 * 3600),
            max_wait: Duration::from_secs(3600),
        }
    }
}

/// A lease as a client asked for it, in the field and unit of its API. It
/// becomes a `Duration` only through [`LeaseAsk::check`], against the
/// store's maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAsk {
    /// Dapr's `expiryInSeconds`.
    Seconds(i64),
    /// leasehold.v1's `leaseMs`.
    Millis(u64),
}

impl LeaseAsk {
    /// Refuse a lease of zero or less. Dapr does this first of all, before
    /// it looks for the store, with its own message.
    pub fn positive(self, store: &str) -> Result<(), ApiError> {
        match self {
            LeaseAsk::Seconds(s) if s <= 0 => Err(malformed(format!(
                "ExpiryInSeconds is not positive in lock store {store}"
            ))),
            LeaseAsk::Millis(0) => Err(malformed(format!(
                "leaseMs must be at least 1 in lock store {store}"
            ))),
            _ => Ok(()),
        }
    }

    /// The lease, if it is positive and within the store's maximum.
    pub fn check(self, handle: &StoreHandle) -> Result<Duration, ApiError> {
        self.positive(&handle.name)?;
        let (lease, field, value, max) = match self {
            LeaseAsk::Seconds(s) => (
                Duration::from_secs(s.unsigned_abs()),
                "ExpiryInSeconds",
                s.to_string(),
                format!("{} seconds", handle.max_lease.as_secs()),
            ),
            LeaseAsk::Millis(ms) => (
                Duration::from_millis(ms),
                "leaseMs",
                ms.to_string(),
                format!("{} ms", handle.max_lease.as_millis()),
            ),
        };
        if lease > handle.max_lease {
            return Err(malformed(format!(
                "{field} {value} is more than the maximum lease of {max} in lock store {}",
                handle.name
            )));
        }
        Ok(lease)
    }
}

impl Limits {
    /// A wait within the sidecar's maximum; a store must be able to tell
    /// waiters of releases for any wait at all.
    pub fn wait(&self, handle: &StoreHandle, wait: Duration) -> Result<Duration, ApiError> {
        if wait > self.max_wait {
            return Err(malformed(format!(
                "waitMs {} is more than the maximum wait of {} ms in lock store {}",
                wait.as_millis(),
                self.max_wait.as_millis(),
                handle.name
            )));
        }
        if !wait.is_zero() {
            require(
                handle,
                handle.capabilities.release_notify,
                "wait for a lock",
                "RELEASE_NOTIFY",
            )?;
        }
        Ok(wait)
    }
}

/// Refuse an operation the store did not declare it can do.
pub(super) fn require(
    handle: &StoreHandle,
    capable: bool,
    what: &str,
    capability: &str,
) -> Result<(), ApiError> {
    if capable {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorKind::Unsupported,
        format!(
            "lock store {} ({}) cannot {what}: it does not declare the {capability} capability",
            handle.name, handle.type_name
        ),
    ))
}

pub(crate) fn malformed(message: String) -> ApiError {
    ApiError::new(ErrorKind::MalformedRequest, message)
}
