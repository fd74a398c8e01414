//! Dapr's TryLock and Unlock, as daprd serves them: its validation order,
//! its error kinds and messages, its key scoping.

use std::sync::Arc;

use leasehold_core::{Acquire, Release};

use crate::error::{ApiError, ErrorKind};
use crate::observe::metrics::{Op, Outcome, StoreOp};

use super::{LeaseAsk, LockService, Operation};

/// Dapr's TryLock. `Ok(Acquire::HeldByOther)` is `{"success":false}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TryLock {
    /// The lock store's name.
    pub store: String,
    /// The resource, within the app's scope.
    pub resource_id: String,
    /// Who asks.
    pub owner: String,
    /// The lease, as `expiryInSeconds`.
    pub expiry: LeaseAsk,
}

/// Dapr's Unlock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unlock {
    /// The lock store's name.
    pub store: String,
    /// The resource, within the app's scope.
    pub resource_id: String,
    /// Who asks.
    pub owner: String,
}

impl Operation for TryLock {
    type Output = Acquire;
    const OP: Op = Op::TryLock;

    fn store(&self) -> &str {
        &self.store
    }

    fn outcome(output: &Acquire) -> Outcome {
        match output {
            Acquire::Acquired { .. } => Outcome::Acquired,
            Acquire::HeldByOther => Outcome::HeldByOther,
        }
    }

    async fn run(self, service: &Arc<LockService>) -> Result<Acquire, ApiError> {
        // daprd checks the expiry before anything else.
        self.expiry.positive(&self.store)?;
        let handle = service.lookup(&self.store, Some(&self.resource_id), Some(&self.owner))?;
        let lease = self.expiry.check(handle)?;
        let failed = |e: &dyn std::fmt::Display| {
            ApiError::new(
                ErrorKind::TryLockFailed,
                format!("failed to try acquiring lock: {e}"),
            )
        };
        let key = handle
            .scope
            .key(&self.resource_id)
            .map_err(|e| failed(&e))?;
        if !handle.dapr_wait.is_zero() {
            // The component opted in: wait in the key's FIFO queue, woken
            // by the store, before answering `success: false`.
            let (outcome, _) = service
                .acquire_key(handle, &key, &self.owner, lease, handle.dapr_wait)
                .await
                .map_err(|e| failed(&e.message))?;
            return Ok(outcome);
        }
        service
            .call_store(
                handle,
                StoreOp::TryLock,
                handle.store.try_lock(&key, &self.owner, lease),
            )
            .await
            .map_err(|e| failed(&e))
    }
}

impl Operation for Unlock {
    type Output = Release;
    const OP: Op = Op::Unlock;

    fn store(&self) -> &str {
        &self.store
    }

    fn outcome(output: &Release) -> Outcome {
        release_outcome(*output)
    }

    async fn run(self, service: &Arc<LockService>) -> Result<Release, ApiError> {
        let handle = service.lookup(&self.store, Some(&self.resource_id), Some(&self.owner))?;
        let failed = |e: &dyn std::fmt::Display| {
            ApiError::new(
                ErrorKind::UnlockFailed,
                format!("failed to release lock: {e}"),
            )
        };
        let key = handle
            .scope
            .key(&self.resource_id)
            .map_err(|e| failed(&e))?;
        service
            .call_store(
                handle,
                StoreOp::Unlock,
                handle.store.unlock(&key, &self.owner),
            )
            .await
            .map_err(|e| failed(&e))
    }
}

/// How a release is counted, on either API.
pub(crate) fn release_outcome(release: Release) -> Outcome {
    match release {
        Release::Released => Outcome::Released,
        Release::NotFound => Outcome::NotFound,
        Release::HeldByOther => Outcome::BelongsToOthers,
    }
}
