//! leasehold.v1 on the lock service: acquire with a wait, release (of one
//! grant, by its token), renewal with a cap on the total hold time,
//! status, listing and force-unlock. None of it touches the Dapr surface.

use std::sync::Arc;
use std::time::Duration;

use leasehold_core::{
    Acquire as Acquired, Consistency, Fence, ForceRelease, LockInfo, Release as Released, Renewal,
};
use tokio::time::{Instant, sleep_until};

use crate::error::ApiError;
use crate::observe::metrics::{LossReason, Op, Outcome, StoreOp};

use super::dapr::release_outcome;
use super::holds::Eviction;
use super::limits::{malformed, require};
use super::{LeaseAsk, LockService, Operation, StoreHandle, store_failed};

/// Acquire, waiting up to `wait` (zero tries once). Waiters on one key in
/// this sidecar are served first come, first served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquire {
    /// The lock store's name.
    pub store: String,
    /// The resource, within the app's scope.
    pub resource_id: String,
    /// Who asks.
    pub owner: String,
    /// The lease, as `leaseMs`.
    pub lease: LeaseAsk,
    /// How long to wait for the lock.
    pub wait: Duration,
}

/// Release (same outcomes as Dapr's unlock). With a fencing token, only
/// the grant that was given it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The lock store's name.
    pub store: String,
    /// The resource, within the app's scope.
    pub resource_id: String,
    /// Who asks.
    pub owner: String,
    /// The grant to release; any grant of `owner` when `None`.
    pub grant: Option<Fence>,
}

/// Extend the owner's lease, capped by the store's maximum hold time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renew {
    /// The lock store's name.
    pub store: String,
    /// The resource, within the app's scope.
    pub resource_id: String,
    /// Who asks.
    pub owner: String,
    /// The new lease, from now.
    pub lease: LeaseAsk,
}

/// The outcome of a renewal as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    /// The lease now runs for `lease` from now.
    Renewed {
        /// The grant's token.
        fence: Fence,
        /// The lease granted; shorter than asked near the hold limit.
        lease: Duration,
    },
    /// No live lease.
    NotFound,
    /// Someone else holds it.
    HeldByOther,
    /// The maximum hold time is reached; the lease runs out on its own.
    HoldLimitReached,
}

/// Advisory status of one lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The lock store's name.
    pub store: String,
    /// The resource, within the app's scope.
    pub resource_id: String,
}

/// What a status request finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    /// The live lease, if any (it may be stale by the time it is read).
    pub lease: Option<LockInfo>,
    /// How many requests wait for it in this sidecar.
    pub waiters: usize,
}

/// A page of the live locks of the app's scope (admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    /// The lock store's name.
    pub store: String,
    /// Only resource ids that start with this.
    pub prefix: String,
    /// Where the page starts: the last resource id of the previous page.
    pub page_token: String,
    /// At most this many (0: 100; more than 1000 is refused).
    pub page_size: u32,
}

/// One live lock as listed, with its resource id (not the store key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedLock {
    /// The resource id within the app's scope.
    pub resource_id: String,
    /// The holder.
    pub owner: String,
    /// The grant's token.
    pub fence: Fence,
    /// What is left of the lease.
    pub remaining: Duration,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// The locks, in resource id order.
    pub locks: Vec<ListedLock>,
    /// Where the next page starts; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// Break a lock whoever holds it (admin). The fence moves on with the next
/// grant; the evicted holder's Hold stream in this sidecar ends once the
/// store has confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForceUnlock {
    /// The lock store's name.
    pub store: String,
    /// The resource, within the app's scope.
    pub resource_id: String,
    /// Why, for the log and the evicted holder.
    pub reason: String,
}

/// What one store can do and its limits, as `Capabilities` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreCapabilities {
    /// `metadata.name`.
    pub name: String,
    /// `spec.type`.
    pub type_name: String,
    /// The declared capabilities.
    pub capabilities: leasehold_core::Capabilities,
    /// The longest lease.
    pub max_lease: Duration,
    /// The longest hold through renewals.
    pub max_hold: Duration,
    /// Whether it has semaphores, read/write locks and elections.
    pub lease_sets: bool,
}

impl StoreCapabilities {
    /// `LINEARIZABLE` or `BEST_EFFORT`.
    pub fn consistency(&self) -> &'static str {
        match self.capabilities.consistency {
            Consistency::Linearizable => "LINEARIZABLE",
            Consistency::BestEffort => "BEST_EFFORT",
        }
    }
}

impl Operation for Acquire {
    type Output = Acquired;
    const OP: Op = Op::Acquire;

    fn store(&self) -> &str {
        &self.store
    }

    fn outcome(output: &Acquired) -> Outcome {
        match output {
            Acquired::Acquired { .. } => Outcome::Acquired,
            Acquired::HeldByOther => Outcome::HeldByOther,
        }
    }

    async fn run(self, service: &Arc<LockService>) -> Result<Acquired, ApiError> {
        let handle = service.lookup(&self.store, Some(&self.resource_id), Some(&self.owner))?;
        let lease = self.lease.check(handle)?;
        let wait = service.limits.wait(handle, self.wait)?;
        let key = v1_key(handle, &self.resource_id)?;
        let (outcome, _) = service
            .acquire_key(handle, &key, &self.owner, lease, wait)
            .await?;
        if let Acquired::Acquired { fence } = outcome {
            service.hold_started(handle, &key, fence);
        }
        Ok(outcome)
    }
}

impl Operation for Release {
    type Output = Released;
    const OP: Op = Op::Release;

    fn store(&self) -> &str {
        &self.store
    }

    fn outcome(output: &Released) -> Outcome {
        release_outcome(*output)
    }

    async fn run(self, service: &Arc<LockService>) -> Result<Released, ApiError> {
        let handle = service.lookup(&self.store, Some(&self.resource_id), Some(&self.owner))?;
        let key = v1_key(handle, &self.resource_id)?;
        let released = service
            .call_store(
                handle,
                StoreOp::Unlock,
                handle.store.release(&key, &self.owner, self.grant),
            )
            .await
            .map_err(store_failed)?;
        if released == Released::Released {
            service.hold_clock.forget(&handle.name, &key);
        }
        Ok(released)
    }
}

impl Operation for Renew {
    type Output = RenewOutcome;
    const OP: Op = Op::Renew;

    fn store(&self) -> &str {
        &self.store
    }

    fn outcome(output: &RenewOutcome) -> Outcome {
        match output {
            RenewOutcome::Renewed { .. } => Outcome::Renewed,
            RenewOutcome::NotFound => Outcome::NotFound,
            RenewOutcome::HeldByOther => Outcome::BelongsToOthers,
            RenewOutcome::HoldLimitReached => Outcome::HoldLimitReached,
        }
    }

    async fn run(self, service: &Arc<LockService>) -> Result<RenewOutcome, ApiError> {
        let handle = service.lookup(&self.store, Some(&self.resource_id), Some(&self.owner))?;
        require(handle, handle.capabilities.renew, "renew a lease", "RENEW")?;
        let lease = self.lease.check(handle)?;
        let key = v1_key(handle, &self.resource_id)?;
        service.renew_key(handle, &key, &self.owner, lease).await
    }
}

impl Operation for Status {
    type Output = StatusView;
    const OP: Op = Op::Status;

    fn store(&self) -> &str {
        &self.store
    }

    async fn run(self, service: &Arc<LockService>) -> Result<StatusView, ApiError> {
        let handle = service.lookup(&self.store, Some(&self.resource_id), None)?;
        require(handle, handle.capabilities.admin, "report status", "ADMIN")?;
        let key = v1_key(handle, &self.resource_id)?;
        let lease = service
            .call_store(handle, StoreOp::Status, handle.store.status(&key))
            .await
            .map_err(store_failed)?;
        Ok(StatusView {
            lease,
            waiters: service.waiters.len(&handle.name, &key),
        })
    }
}

impl Operation for List {
    type Output = ListPage;
    const OP: Op = Op::List;
    const ADMIN: bool = true;

    fn store(&self) -> &str {
        &self.store
    }

    async fn run(self, service: &Arc<LockService>) -> Result<ListPage, ApiError> {
        let handle = service.lookup(&self.store, None, None)?;
        require(handle, handle.capabilities.admin, "list locks", "ADMIN")?;
        if self.prefix.contains("||") || self.page_token.contains("||") {
            return Err(malformed(
                "prefix and pageToken can't contain '||'".to_owned(),
            ));
        }
        let limit = match self.page_size {
            0 => 100,
            n if n > 1000 => {
                return Err(malformed(format!(
                    "pageSize {n} is more than the limit of 1000"
                )));
            }
            n => n as usize,
        };
        let scope = handle.scope.prefix();
        let full_prefix = format!("{scope}{}", self.prefix);
        let after = (!self.page_token.is_empty()).then(|| format!("{scope}{}", self.page_token));
        let found = service
            .call_store(
                handle,
                StoreOp::List,
                handle.store.list(&full_prefix, after.as_deref(), limit),
            )
            .await
            .map_err(store_failed)?;
        let locks: Vec<ListedLock> = found
            .into_iter()
            .filter_map(|info| {
                Some(ListedLock {
                    resource_id: handle.scope.resource_id(&info.key)?.to_owned(),
                    owner: info.owner,
                    fence: info.fence,
                    remaining: info.remaining,
                })
            })
            .collect();
        let next_page_token = (locks.len() == limit).then(|| locks[limit - 1].resource_id.clone());
        Ok(ListPage {
            locks,
            next_page_token,
        })
    }
}

impl Operation for ForceUnlock {
    type Output = ForceRelease;
    const OP: Op = Op::ForceUnlock;
    const ADMIN: bool = true;

    fn store(&self) -> &str {
        &self.store
    }

    async fn run(self, service: &Arc<LockService>) -> Result<ForceRelease, ApiError> {
        let handle = service.lookup(&self.store, Some(&self.resource_id), None)?;
        require(handle, handle.capabilities.admin, "force-unlock", "ADMIN")?;
        let key = v1_key(handle, &self.resource_id)?;
        let reason = if self.reason.is_empty() {
            "no reason given"
        } else {
            &self.reason
        };
        // The evicted holder hears only once the store has confirmed the
        // release, and of exactly the grant that was broken; a failed call
        // leaves its lock, and its stream, as they were.
        let eviction = Eviction {
            reason: LossReason::ForceUnlocked,
            message: format!("force-unlocked by an administrator: {reason}"),
        };
        service
            .holds
            .mark_evicting(&handle.name, &key, Some(&eviction));
        let outcome = service
            .call_store(
                handle,
                StoreOp::ForceUnlock,
                handle.store.force_unlock(&key),
            )
            .await
            .map_err(store_failed);
        match &outcome {
            Ok(ForceRelease::Released { owner, fence }) => {
                tracing::warn!(store = %handle.name, resource_id = %self.resource_id, owner = %owner, fence, reason, "lock force-unlocked by an administrator");
                service.hold_clock.forget(&handle.name, &key);
                service.holds.evict(&handle.name, &key, *fence, &eviction);
            }
            _ => service.holds.mark_evicting(&handle.name, &key, None),
        }
        outcome
    }
}

/// The key of `resource_id`, with the refusal in leasehold.v1's terms.
pub(super) fn v1_key(handle: &StoreHandle, resource_id: &str) -> Result<String, ApiError> {
    handle
        .scope
        .key(resource_id)
        .map_err(|e| malformed(format!("resourceId: {e}")))
}

impl LockService {
    /// What every store can do, sorted by name.
    pub fn capabilities(&self) -> Vec<StoreCapabilities> {
        let mut stores: Vec<StoreCapabilities> = self
            .stores()
            .map(|h| StoreCapabilities {
                name: h.name.to_string(),
                type_name: h.type_name.clone(),
                capabilities: h.capabilities,
                max_lease: h.max_lease,
                max_hold: h.max_hold,
                lease_sets: h.store.lease_sets().is_some(),
            })
            .collect();
        stores.sort_by(|a, b| a.name.cmp(&b.name));
        stores
    }

    /// Remember that `fence` was granted on `key` now, for the hold cap.
    pub(super) fn hold_started(&self, handle: &StoreHandle, key: &str, fence: Fence) {
        self.hold_clock
            .started(&handle.name, key, fence, handle.max_hold + handle.max_lease);
    }

    /// Try-lock, waiting up to `wait` for the key in FIFO order. With the
    /// outcome comes the instant just before the try-lock that decided it
    /// was sent: a grant's lease began after it.
    pub(super) async fn acquire_key(
        &self,
        handle: &StoreHandle,
        key: &str,
        owner: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<(Acquired, Instant), ApiError> {
        let try_now = || async {
            let sent = Instant::now();
            let outcome = self
                .call_store(
                    handle,
                    StoreOp::TryLock,
                    handle.store.try_lock(key, owner, lease),
                )
                .await
                .map_err(store_failed)?;
            Ok::<_, ApiError>((outcome, sent))
        };
        if wait.is_zero() {
            return try_now().await;
        }
        let deadline = Instant::now() + wait;
        let ticket = self.waiters.join(&handle.name, key);
        loop {
            tokio::select! {
                () = ticket.my_turn() => {}
                () = sleep_until(deadline) => return Ok((Acquired::HeldByOther, Instant::now())),
            }
            // Watch first, then try: a release between the two still wakes
            // this waiter.
            let released = self
                .call_store(handle, StoreOp::Watch, handle.store.watch_release(key))
                .await
                .map_err(store_failed)?;
            let (outcome, sent) = try_now().await?;
            if let Acquired::Acquired { .. } = outcome {
                return Ok((outcome, sent));
            }
            tokio::select! {
                () = released => {}
                () = sleep_until(deadline) => return Ok((Acquired::HeldByOther, Instant::now())),
            }
        }
    }

    /// Renew `owner`'s lease on `key` for `lease`, within the hold cap, and
    /// count the renewal.
    pub(super) async fn renew_key(
        &self,
        handle: &StoreHandle,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<RenewOutcome, ApiError> {
        let outcome = self.renew_capped(handle, key, owner, lease).await;
        let class = match &outcome {
            Ok(RenewOutcome::Renewed { .. }) => 0,
            Ok(_) => 1,
            Err(_) => 2,
        };
        self.metrics.renewal(&handle.name, class);
        outcome
    }

    async fn renew_capped(
        &self,
        handle: &StoreHandle,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<RenewOutcome, ApiError> {
        // The hold's start must be known before the lease is extended, or a
        // renewal past the cap could happen once. A lock acquired through
        // this sidecar's leasehold.v1 API is known; any other is looked up
        // first (one more round trip) and capped from now.
        let (mut known_fence, mut since) = match self.hold_clock.get(&handle.name, key) {
            Some(known) => known,
            None => {
                let Some(info) = self.status_of(handle, key).await? else {
                    return Ok(RenewOutcome::NotFound);
                };
                if info.owner != owner {
                    return Ok(RenewOutcome::HeldByOther);
                }
                (
                    info.fence,
                    self.hold_clock.since(&handle.name, key, info.fence),
                )
            }
        };
        if Instant::now() >= since + handle.max_hold {
            // The record may be of an earlier grant of this owner (released
            // through the Dapr API, or expired, and granted again since):
            // a new grant's hold starts with it, so ask which grant it is.
            match self.status_of(handle, key).await? {
                Some(info) if info.owner == owner && info.fence != known_fence => {
                    known_fence = info.fence;
                    since = self.hold_clock.since(&handle.name, key, info.fence);
                }
                _ => return Ok(RenewOutcome::HoldLimitReached),
            }
        }
        let cap = since + handle.max_hold;
        let now = Instant::now();
        if now >= cap {
            return Ok(RenewOutcome::HoldLimitReached);
        }
        // Whole milliseconds, never zero: stores measure leases in ms.
        let granted = lease.min(cap - now);
        let granted = Duration::from_millis(granted.as_millis().max(1) as u64);
        match self
            .call_store(
                handle,
                StoreOp::Renew,
                handle.store.renew(key, owner, granted),
            )
            .await
            .map_err(store_failed)?
        {
            Renewal::Renewed { fence } => {
                if fence != known_fence {
                    // A newer grant to the same owner than the one on record:
                    // its hold starts now, and `granted` is within its cap.
                    self.hold_started(handle, key, fence);
                }
                Ok(RenewOutcome::Renewed {
                    fence,
                    lease: granted,
                })
            }
            Renewal::NotFound => Ok(RenewOutcome::NotFound),
            Renewal::HeldByOther => Ok(RenewOutcome::HeldByOther),
        }
    }

    async fn status_of(
        &self,
        handle: &StoreHandle,
        key: &str,
    ) -> Result<Option<LockInfo>, ApiError> {
        self.call_store(handle, StoreOp::Status, handle.store.status(key))
            .await
            .map_err(store_failed)
    }
}
