//! leasehold.v1 on the lock service: renewal with a cap on the total hold
//! time, acquire with a wait, held-lock streams, status, listing and
//! force-unlock. Both front ends call these; none of it touches the Dapr
//! surface.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use leasehold_core::{Acquire, Fence, ForceRelease, LockInfo, Release, Renewal, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use crate::error::{ApiError, ErrorKind};
use crate::metrics::{LossReason, StoreOp};
use crate::service::{LockService, StoreHandle};

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

/// What a Hold stream tells its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldEvent {
    /// The lock is held under this token.
    Acquired {
        /// The grant's token.
        fence: Fence,
        /// The lease granted.
        lease: Duration,
    },
    /// The lease was extended.
    Renewed {
        /// The lease granted.
        lease: Duration,
    },
    /// The wait ran out; the stream ends.
    NotAcquired,
}

/// The receiving end of a Hold stream. An `Err` item is the last one: the
/// lease is lost, and says why.
pub type HoldStream = mpsc::Receiver<Result<HoldEvent, ApiError>>;

/// A key in one store.
type HoldKey = (Arc<str>, String);

/// The fence of an open Hold stream, and where to send its eviction.
type Eviction = (Fence, oneshot::Sender<String>);

/// When each held lock was first seen, so renewals can be capped.
#[derive(Debug, Default)]
pub(crate) struct HoldClock {
    inner: Mutex<HashMap<HoldKey, (Fence, Instant)>>,
    /// Size after the last sweep; the map is swept when it doubles.
    swept_at: Mutex<usize>,
}

impl HoldClock {
    fn map(&self) -> MutexGuard<'_, HashMap<HoldKey, (Fence, Instant)>> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Record that `fence` was granted on `key` now.
    fn started(&self, store: &Arc<str>, key: &str, fence: Fence, horizon: Duration) {
        let mut map = self.map();
        map.insert((store.clone(), key.to_owned()), (fence, Instant::now()));
        let mut swept_at = self.swept_at.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > (*swept_at).max(1024) * 2 {
            // Entries older than any hold could last are garbage.
            let now = Instant::now();
            map.retain(|_, (_, since)| now.duration_since(*since) < horizon);
            *swept_at = map.len();
        }
    }

    /// When `fence` on `key` started; recorded now if unknown (a lock taken
    /// through the Dapr API or another sidecar is capped from its first
    /// renewal here).
    fn since(&self, store: &Arc<str>, key: &str, fence: Fence) -> Instant {
        let mut map = self.map();
        let entry = map
            .entry((store.clone(), key.to_owned()))
            .or_insert((fence, Instant::now()));
        if entry.0 != fence {
            *entry = (fence, Instant::now());
        }
        entry.1
    }

    fn get(&self, store: &Arc<str>, key: &str) -> Option<(Fence, Instant)> {
        self.map().get(&(store.clone(), key.to_owned())).copied()
    }

    fn forget(&self, store: &Arc<str>, key: &str) {
        self.map().remove(&(store.clone(), key.to_owned()));
    }
}

/// Open Hold streams, so force-unlock can end the evicted holder's stream.
#[derive(Debug, Default)]
pub(crate) struct HoldRegistry {
    inner: Mutex<HashMap<HoldKey, Vec<Eviction>>>,
}

impl HoldRegistry {
    fn map(&self) -> MutexGuard<'_, HashMap<HoldKey, Vec<Eviction>>> {
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn register(&self, store: &Arc<str>, key: &str, fence: Fence) -> oneshot::Receiver<String> {
        let (sender, receiver) = oneshot::channel();
        let mut map = self.map();
        let holders = map.entry((store.clone(), key.to_owned())).or_default();
        holders.retain(|(_, s)| !s.is_closed());
        holders.push((fence, sender));
        receiver
    }

    /// End every Hold stream on `key` with `reason`.
    fn evict_all(&self, store: &Arc<str>, key: &str, reason: &str) {
        let holders = self.map().remove(&(store.clone(), key.to_owned()));
        for (_, sender) in holders.into_iter().flatten() {
            let _ = sender.send(reason.to_owned());
        }
    }

    fn unregister(&self, store: &Arc<str>, key: &str) {
        let mut map = self.map();
        let id = (store.clone(), key.to_owned());
        if let Some(holders) = map.get_mut(&id) {
            holders.retain(|(_, s)| !s.is_closed());
            if holders.is_empty() {
                map.remove(&id);
            }
        }
    }

    /// Open streams over every key.
    pub(crate) fn total(&self) -> usize {
        self.map().values().map(Vec::len).sum()
    }
}

fn store_failed(err: StoreError) -> ApiError {
    ApiError::new(ErrorKind::StoreFailed, format!("lock store failed: {err}"))
}

fn require(
    handle: &StoreHandle,
    capable: bool,
    what: &str,
    capability: &str,
) -> Result<(), ApiError> {
    if capable {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::Unsupported,
            format!(
                "lock store {} ({}) cannot {what}: it does not declare the {capability} capability",
                handle.name, handle.type_name
            ),
        ))
    }
}

impl LockService {
    /// Check a lease length in milliseconds against the store's maximum.
    fn lease(&self, handle: &StoreHandle, lease_ms: u64) -> Result<Duration, ApiError> {
        if lease_ms == 0 {
            return Err(ApiError::new(
                ErrorKind::MalformedRequest,
                format!("leaseMs must be at least 1 in lock store {}", handle.name),
            ));
        }
        let lease = Duration::from_millis(lease_ms);
        if lease > handle.max_lease {
            return Err(ApiError::new(
                ErrorKind::MalformedRequest,
                format!(
                    "leaseMs {lease_ms} is more than the maximum lease of {} ms in lock store {}",
                    handle.max_lease.as_millis(),
                    handle.name
                ),
            ));
        }
        Ok(lease)
    }

    fn wait(&self, handle: &StoreHandle, wait_ms: u64) -> Result<Duration, ApiError> {
        let wait = Duration::from_millis(wait_ms);
        if wait > self.limits().max_wait {
            return Err(ApiError::new(
                ErrorKind::MalformedRequest,
                format!(
                    "waitMs {wait_ms} is more than the maximum wait of {} ms in lock store {}",
                    self.limits().max_wait.as_millis(),
                    handle.name
                ),
            ));
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

    fn key(handle: &StoreHandle, resource_id: &str) -> Result<String, ApiError> {
        handle
            .scope
            .key(resource_id)
            .map_err(|e| ApiError::new(ErrorKind::MalformedRequest, format!("resourceId: {e}")))
    }

    /// Acquire, waiting up to `wait_ms` (0 tries once). Waiters on one key
    /// in this sidecar are served first come, first served.
    pub async fn acquire(
        &self,
        store: &str,
        resource_id: &str,
        owner: &str,
        lease_ms: u64,
        wait_ms: u64,
    ) -> Result<Acquire, ApiError> {
        let handle = self.lookup(store, Some(resource_id), Some(owner))?.clone();
        let lease = self.lease(&handle, lease_ms)?;
        let wait = self.wait(&handle, wait_ms)?;
        let key = Self::key(&handle, resource_id)?;
        let (outcome, _) = self.acquire_key(&handle, &key, owner, lease, wait).await?;
        if let Acquire::Acquired { fence } = outcome {
            self.hold_clock.started(
                &handle.name_arc,
                &key,
                fence,
                handle.max_hold + handle.max_lease,
            );
        }
        Ok(outcome)
    }

    /// Try-lock, waiting up to `wait` for the key in FIFO order. With the
    /// outcome comes the instant just before the try-lock that decided it
    /// was sent: a grant's lease began after it.
    async fn acquire_key(
        &self,
        handle: &StoreHandle,
        key: &str,
        owner: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<(Acquire, Instant), ApiError> {
        let try_now = || async {
            let sent = Instant::now();
            let outcome = self
                .call(
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
        let ticket = self.waiters.join(&handle.name_arc, key);
        loop {
            tokio::select! {
                () = ticket.my_turn() => {}
                () = sleep_until(deadline) => return Ok((Acquire::HeldByOther, Instant::now())),
            }
            // Watch first, then try: a release between the two still wakes
            // this waiter.
            let released = self
                .call(handle, StoreOp::Watch, handle.store.watch_release(key))
                .await
                .map_err(store_failed)?;
            let (outcome, sent) = try_now().await?;
            if let Acquire::Acquired { .. } = outcome {
                return Ok((outcome, sent));
            }
            tokio::select! {
                () = released => {}
                () = sleep_until(deadline) => return Ok((Acquire::HeldByOther, Instant::now())),
            }
        }
    }

    /// Release (leasehold.v1); same outcomes as Dapr's unlock. With a
    /// fencing token (not 0), only the grant that was given it.
    pub async fn release(
        &self,
        store: &str,
        resource_id: &str,
        owner: &str,
        fence: Fence,
    ) -> Result<Release, ApiError> {
        let handle = self.lookup(store, Some(resource_id), Some(owner))?;
        let key = Self::key(handle, resource_id)?;
        let grant = (fence != 0).then_some(fence);
        let released = self
            .call(
                handle,
                StoreOp::Unlock,
                handle.store.release(&key, owner, grant),
            )
            .await
            .map_err(store_failed)?;
        if released == Release::Released {
            self.hold_clock.forget(&handle.name_arc, &key);
        }
        Ok(released)
    }

    /// Extend the owner's lease, capped by the store's maximum hold time.
    pub async fn renew(
        &self,
        store: &str,
        resource_id: &str,
        owner: &str,
        lease_ms: u64,
    ) -> Result<RenewOutcome, ApiError> {
        let handle = self.lookup(store, Some(resource_id), Some(owner))?.clone();
        require(&handle, handle.capabilities.renew, "renew a lease", "RENEW")?;
        let lease = self.lease(&handle, lease_ms)?;
        let key = Self::key(&handle, resource_id)?;
        self.renew_key(&handle, &key, owner, lease).await
    }

    async fn renew_key(
        &self,
        handle: &StoreHandle,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<RenewOutcome, ApiError> {
        let outcome = self.renew_key_inner(handle, key, owner, lease).await;
        let class = match &outcome {
            Ok(RenewOutcome::Renewed { .. }) => 0,
            Ok(_) => 1,
            Err(_) => 2,
        };
        self.metrics().renewal(&handle.name, class);
        outcome
    }

    async fn renew_key_inner(
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
        let (mut known_fence, mut since) = match self.hold_clock.get(&handle.name_arc, key) {
            Some(known) => known,
            None => {
                let Some(info) = self
                    .call(handle, StoreOp::Status, handle.store.status(key))
                    .await
                    .map_err(store_failed)?
                else {
                    return Ok(RenewOutcome::NotFound);
                };
                if info.owner != owner {
                    return Ok(RenewOutcome::HeldByOther);
                }
                (
                    info.fence,
                    self.hold_clock.since(&handle.name_arc, key, info.fence),
                )
            }
        };
        if Instant::now() >= since + handle.max_hold {
            // The record may be of an earlier grant of this owner (released
            // through the Dapr API, or expired, and granted again since):
            // a new grant's hold starts with it, so ask which grant it is.
            match self
                .call(handle, StoreOp::Status, handle.store.status(key))
                .await
                .map_err(store_failed)?
            {
                Some(info) if info.owner == owner && info.fence != known_fence => {
                    known_fence = info.fence;
                    since = self.hold_clock.since(&handle.name_arc, key, info.fence);
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
            .call(
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
                    self.hold_clock.started(
                        &handle.name_arc,
                        key,
                        fence,
                        handle.max_hold + handle.max_lease,
                    );
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

    /// Advisory status of one lock, and how many requests wait for it in
    /// this sidecar.
    pub async fn status(
        &self,
        store: &str,
        resource_id: &str,
    ) -> Result<(Option<LockInfo>, usize), ApiError> {
        let handle = self.lookup(store, Some(resource_id), None)?;
        require(handle, handle.capabilities.admin, "report status", "ADMIN")?;
        let key = Self::key(handle, resource_id)?;
        let info = self
            .call(handle, StoreOp::Status, handle.store.status(&key))
            .await
            .map_err(store_failed)?;
        Ok((info, self.waiters.len(&handle.name, &key)))
    }

    /// A page of the live locks of this app's scope.
    pub async fn list(
        &self,
        store: &str,
        prefix: &str,
        page_token: &str,
        page_size: u32,
    ) -> Result<ListPage, ApiError> {
        let handle = self.lookup(store, None, None)?;
        require(handle, handle.capabilities.admin, "list locks", "ADMIN")?;
        if prefix.contains("||") || page_token.contains("||") {
            return Err(ApiError::new(
                ErrorKind::MalformedRequest,
                "prefix and pageToken can't contain '||'",
            ));
        }
        let limit = match page_size {
            0 => 100,
            n if n > 1000 => {
                return Err(ApiError::new(
                    ErrorKind::MalformedRequest,
                    format!("pageSize {n} is more than the limit of 1000"),
                ));
            }
            n => n as usize,
        };
        let full_prefix = format!("{}{prefix}", handle.scope.prefix());
        let after =
            (!page_token.is_empty()).then(|| format!("{}{page_token}", handle.scope.prefix()));
        let found = self
            .call(
                handle,
                StoreOp::List,
                handle.store.list(&full_prefix, after.as_deref(), limit),
            )
            .await
            .map_err(store_failed)?;
        let locks: Vec<ListedLock> = found
            .into_iter()
            .filter_map(|info| {
                let resource_id = handle.scope.resource_id(&info.key)?.to_owned();
                Some(ListedLock {
                    resource_id,
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

    /// Break a lock whoever holds it. The fence moves on with the next grant.
    /// A Hold stream on the key in this sidecar ends first, with `reason`,
    /// so its holder hears before anyone else can be granted the lock.
    pub async fn force_unlock(
        &self,
        store: &str,
        resource_id: &str,
        reason: &str,
    ) -> Result<ForceRelease, ApiError> {
        let handle = self.lookup(store, Some(resource_id), None)?;
        require(handle, handle.capabilities.admin, "force-unlock", "ADMIN")?;
        let key = Self::key(handle, resource_id)?;
        let reason = if reason.is_empty() {
            "no reason given"
        } else {
            reason
        };
        self.holds.evict_all(
            &handle.name_arc,
            &key,
            &format!("force-unlocked by an administrator: {reason}"),
        );
        let outcome = self
            .call(
                handle,
                StoreOp::ForceUnlock,
                handle.store.force_unlock(&key),
            )
            .await
            .map_err(store_failed)?;
        if let ForceRelease::Released { owner, fence } = &outcome {
            tracing::warn!(store, resource_id, owner = %owner, fence, reason, "lock force-unlocked by an administrator");
            self.hold_clock.forget(&handle.name_arc, &key);
        }
        Ok(outcome)
    }

    /// Acquire and then keep the lease alive while the returned stream is
    /// read; dropping it releases the lock. Validation errors come back at
    /// once; everything after is on the stream.
    pub fn hold(
        self: &Arc<Self>,
        store: &str,
        resource_id: &str,
        owner: &str,
        lease_ms: u64,
        wait_ms: u64,
    ) -> Result<HoldStream, ApiError> {
        let handle = self.lookup(store, Some(resource_id), Some(owner))?.clone();
        require(&handle, handle.capabilities.renew, "hold a lock", "RENEW")?;
        let lease = self.lease(&handle, lease_ms)?;
        let wait = self.wait(&handle, wait_ms)?;
        let key = Self::key(&handle, resource_id)?;
        let (sender, receiver) = mpsc::channel(4);
        let service = self.clone();
        let owner = owner.to_owned();
        tokio::spawn(async move {
            service
                .run_hold(handle, key, owner, lease, wait, sender)
                .await;
        });
        Ok(receiver)
    }

    async fn run_hold(
        self: Arc<Self>,
        handle: Arc<StoreHandle>,
        key: String,
        owner: String,
        lease: Duration,
        wait: Duration,
        events: mpsc::Sender<Result<HoldEvent, ApiError>>,
    ) {
        let acquired = tokio::select! {
            outcome = self.acquire_key(&handle, &key, &owner, lease, wait) => outcome,
            () = events.closed() => return,
        };
        let (fence, sent) = match acquired {
            Ok((Acquire::Acquired { fence }, sent)) => (fence, sent),
            Ok((Acquire::HeldByOther, _)) => {
                let _ = events.send(Ok(HoldEvent::NotAcquired)).await;
                return;
            }
            Err(err) => {
                let _ = events.send(Err(err)).await;
                return;
            }
        };
        // The lease surely lasts until `deadline`: the store started it
        // after the try-lock was sent (a slow reply must not stretch it).
        let mut deadline = sent + lease;
        self.hold_clock.started(
            &handle.name_arc,
            &key,
            fence,
            handle.max_hold + handle.max_lease,
        );
        let mut evicted = self.holds.register(&handle.name_arc, &key, fence);
        if events
            .send(Ok(HoldEvent::Acquired { fence, lease }))
            .await
            .is_err()
        {
            self.end_hold(&handle, &key, &owner, fence).await;
            return;
        }

        // Renew at a third of the lease; stop a margin before the lease
        // could run out, so the holder hears of the loss before anyone else
        // can be granted the lock.
        let margin = (lease / 10).clamp(Duration::from_millis(20), Duration::from_secs(2));
        let mut renew_at = Instant::now() + lease / 3;
        let mut released = self
            .call(&handle, StoreOp::Watch, handle.store.watch_release(&key))
            .await
            .ok();
        let mut capped = false;
        let (reason, lost) = loop {
            let watch = async {
                match released.as_mut() {
                    Some(watch) => watch.await,
                    None => std::future::pending().await,
                }
            };
            // Biased: an eviction or a closed stream wins over a renewal
            // that happens to be due at the same moment.
            tokio::select! {
                biased;
                () = events.closed() => {
                    self.end_hold(&handle, &key, &owner, fence).await;
                    return;
                }
                reason = &mut evicted => break (LossReason::ForceUnlocked, reason.unwrap_or_else(|_| "evicted".to_owned())),
                () = sleep_until(deadline - margin) => {
                    if capped {
                        break (LossReason::HoldLimit, format!("the maximum hold time of {:?} is reached", handle.max_hold));
                    }
                    break (LossReason::RenewFailed, "the lease could not be renewed before it would run out".to_owned());
                }
                () = watch => {
                    // The key was released, expired or broken: find out now
                    // rather than at the next renewal.
                    released = None;
                    renew_at = Instant::now();
                }
                () = sleep_until(renew_at) => {}
            }
            if Instant::now() < renew_at {
                continue;
            }
            let started = Instant::now();
            let budget = (deadline - margin).saturating_duration_since(started);
            let renewed =
                tokio::time::timeout(budget, self.renew_key(&handle, &key, &owner, lease)).await;
            match renewed {
                Ok(Ok(RenewOutcome::Renewed {
                    fence: now_fence,
                    lease: granted,
                })) if now_fence == fence => {
                    deadline = started + granted;
                    renew_at = started + granted / 3;
                    if granted < lease {
                        // The cap cut this lease short: the next renewal
                        // would be refused, so the stream ends with it.
                        capped = true;
                        renew_at = deadline;
                    }
                    if released.is_none() {
                        released = self
                            .call(&handle, StoreOp::Watch, handle.store.watch_release(&key))
                            .await
                            .ok();
                    }
                    let _ = events.try_send(Ok(HoldEvent::Renewed { lease: granted }));
                }
                Ok(Ok(RenewOutcome::Renewed { .. })) => {
                    break (
                        LossReason::Expired,
                        "the lock was released and taken again".to_owned(),
                    );
                }
                Ok(Ok(RenewOutcome::NotFound)) => {
                    break (
                        LossReason::Expired,
                        "the lease expired or was released elsewhere".to_owned(),
                    );
                }
                Ok(Ok(RenewOutcome::HeldByOther)) => {
                    break (
                        LossReason::HeldByOther,
                        "another owner holds the lock".to_owned(),
                    );
                }
                Ok(Ok(RenewOutcome::HoldLimitReached)) => {
                    break (
                        LossReason::HoldLimit,
                        format!("the maximum hold time of {:?} is reached", handle.max_hold),
                    );
                }
                Ok(Err(err)) => {
                    tracing::warn!(store = %handle.name, error = %err.message, "renewal failed; retrying while the lease lasts");
                    renew_at = Instant::now() + Duration::from_millis(100).min(lease / 10);
                }
                Err(_) => {
                    renew_at = Instant::now();
                }
            }
        };
        self.holds.unregister(&handle.name_arc, &key);
        self.metrics().lease_lost(&handle.name, reason);
        tracing::info!(store = %handle.name, fence, reason = %lost, "held lock lost");
        let _ = events
            .send(Err(ApiError::new(
                ErrorKind::LeaseLost,
                format!("lease lost: {lost}"),
            )))
            .await;
    }

    /// The client closed its Hold stream: release its grant, and only that
    /// one (the same owner may hold a later grant of the key by now).
    async fn end_hold(&self, handle: &StoreHandle, key: &str, owner: &str, fence: Fence) {
        self.holds.unregister(&handle.name_arc, key);
        match self
            .call(
                handle,
                StoreOp::Unlock,
                handle.store.unlock_grant(key, owner, fence),
            )
            .await
        {
            Ok(Release::Released) => self.hold_clock.forget(&handle.name_arc, key),
            // Gone already, or a later grant now: nothing of this stream's.
            Ok(_) => {}
            Err(err) => tracing::warn!(
                store = %handle.name,
                error = %err,
                "could not release a held lock after its stream closed; the lease will run out"
            ),
        }
    }
}
