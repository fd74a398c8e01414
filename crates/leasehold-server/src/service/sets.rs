//! Semaphores, read/write locks and elections: the operations on lease
//! sets (see `leasehold_core::leaseset`).
//!
//! The operations are written once for every primitive, over a marker
//! type ([`Semaphore`], [`RwLock`], [`Election`]) that gives the set's
//! kind, the words of its messages and its names in the metrics. What
//! differs is only the permit asked for (its weight, the limit, a value),
//! which the front ends' mappings decide. Elections add Proclaim, Leader
//! and Observe.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::leaseset::{LeaseSets, Permit, PermitAsk, PermitGrant, SetKind, SetView};
use leasehold_core::{Acquire as Acquired, Fence, Release, Renewal};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::error::{ApiError, ErrorKind};
use crate::observe::metrics::{LossReason, Op, Outcome, StoreOp};

use super::dapr::release_outcome;
use super::hold::{HoldStream, Target, record_key};
use super::holds::Eviction;
use super::limits::{malformed, require};
use super::locks::RenewOutcome;
use super::{LeaseAsk, LockService, Operation, StoreHandle, store_failed};

/// How long the intent of a waiting acquirer lasts; it is refreshed three
/// times as often, so a waiter that dies stops keeping others out soon.
const INTENT_TTL: Duration = Duration::from_secs(3);

/// The names of one primitive's operations in the metrics.
#[derive(Debug, Clone, Copy)]
pub struct Ops {
    /// Acquire.
    pub acquire: Op,
    /// Release (Resign).
    pub release: Op,
    /// Renew.
    pub renew: Op,
    /// Hold (Campaign).
    pub hold: Op,
    /// Status (Leader).
    pub status: Op,
    /// ForceRelease.
    pub force_release: Op,
}

/// One kind of lease set, as the API speaks of it.
pub trait Primitive: Send + Sync + 'static {
    /// Its kind in the store.
    const KIND: SetKind;
    /// What it is called in messages.
    const NOUN: &'static str;
    /// The field its name comes in.
    const NAME_FIELD: &'static str;
    /// The field its owner comes in.
    const OWNER_FIELD: &'static str;
    /// Its operations' names in the metrics.
    const OPS: Ops;
    /// Why a grant given back by another request ended a stream.
    const RELEASED: &'static str;
}

/// A counting semaphore.
#[derive(Debug)]
pub struct Semaphore;

/// A read/write lock.
#[derive(Debug)]
pub struct RwLock;

/// A leader election.
#[derive(Debug)]
pub struct Election;

impl Primitive for Semaphore {
    const KIND: SetKind = SetKind::Semaphore;
    const NOUN: &'static str = "semaphore";
    const NAME_FIELD: &'static str = "name";
    const OWNER_FIELD: &'static str = "owner";
    const OPS: Ops = Ops {
        acquire: Op::SemaphoreAcquire,
        release: Op::SemaphoreRelease,
        renew: Op::SemaphoreRenew,
        hold: Op::SemaphoreHold,
        status: Op::SemaphoreStatus,
        force_release: Op::SemaphoreForceRelease,
    };
    const RELEASED: &'static str = "the permits were released by a Release request";
}

impl Primitive for RwLock {
    const KIND: SetKind = SetKind::RwLock;
    const NOUN: &'static str = "read/write lock";
    const NAME_FIELD: &'static str = "name";
    const OWNER_FIELD: &'static str = "owner";
    const OPS: Ops = Ops {
        acquire: Op::RwAcquire,
        release: Op::RwRelease,
        renew: Op::RwRenew,
        hold: Op::RwHold,
        status: Op::RwStatus,
        force_release: Op::RwForceRelease,
    };
    const RELEASED: &'static str = "the lock was released by a Release request";
}

impl Primitive for Election {
    const KIND: SetKind = SetKind::Election;
    const NOUN: &'static str = "election";
    const NAME_FIELD: &'static str = "election";
    const OWNER_FIELD: &'static str = "candidate";
    const OPS: Ops = Ops {
        acquire: Op::ElectionAcquire,
        release: Op::Resign,
        renew: Op::ElectionRenew,
        hold: Op::Campaign,
        status: Op::Leader,
        force_release: Op::ElectionForceRelease,
    };
    const RELEASED: &'static str = "resigned";
}

/// The permit a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermitSpec {
    /// The set's kind.
    pub kind: SetKind,
    /// How much of the limit it takes.
    pub weight: u32,
    /// The set's limit.
    pub limit: u32,
    /// The value it carries.
    pub value: String,
}

/// Take a permit, waiting up to `wait`.
#[derive(Debug)]
pub struct PermitAcquire<P> {
    /// The lock store's name.
    pub store: String,
    /// The set's name, within the app's scope.
    pub name: String,
    /// Who asks.
    pub owner: String,
    /// How much of the limit, and the limit.
    pub weight: u32,
    /// The limit the asker expects.
    pub limit: u32,
    /// The value the permit carries.
    pub value: String,
    /// The lease.
    pub lease: LeaseAsk,
    /// How long to wait.
    pub wait: Duration,
    /// The primitive.
    pub primitive: PhantomData<P>,
}

/// Take a permit and keep it while the stream is read (Hold, Campaign).
#[derive(Debug)]
pub struct PermitHold<P>(pub PermitAcquire<P>);

/// Give back one grant (Release, Resign).
#[derive(Debug)]
pub struct PermitRelease<P> {
    /// The lock store's name.
    pub store: String,
    /// The set's name.
    pub name: String,
    /// Who gives it back.
    pub owner: String,
    /// The grant.
    pub fence: Fence,
    /// The primitive.
    pub primitive: PhantomData<P>,
}

/// Extend one grant, within the hold cap.
#[derive(Debug)]
pub struct PermitRenew<P> {
    /// The lock store's name.
    pub store: String,
    /// The set's name.
    pub name: String,
    /// Its holder.
    pub owner: String,
    /// The grant.
    pub fence: Fence,
    /// The new lease.
    pub lease: LeaseAsk,
    /// The primitive.
    pub primitive: PhantomData<P>,
}

/// Advisory status of a set.
#[derive(Debug)]
pub struct PermitStatus<P> {
    /// The lock store's name.
    pub store: String,
    /// The set's name.
    pub name: String,
    /// The primitive.
    pub primitive: PhantomData<P>,
}

/// What a set's status shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetStatus {
    /// The set, when anything is held or waits.
    pub view: Option<SetView>,
    /// Requests waiting for it in this sidecar.
    pub waiters: usize,
}

/// End one grant, or all of them (admin).
#[derive(Debug)]
pub struct PermitForceRelease<P> {
    /// The lock store's name.
    pub store: String,
    /// The set's name.
    pub name: String,
    /// The grant; every grant when `None`.
    pub fence: Option<Fence>,
    /// Why, for the log and the holders.
    pub reason: String,
    /// The primitive.
    pub primitive: PhantomData<P>,
}

/// The leader of a term replaces its value.
#[derive(Debug)]
pub struct Proclaim {
    /// The lock store's name.
    pub store: String,
    /// The election.
    pub election: String,
    /// The leader.
    pub candidate: String,
    /// Its term.
    pub term: Fence,
    /// The new value.
    pub value: String,
}

/// Who leads an election now.
#[derive(Debug)]
pub struct Leader {
    /// The lock store's name.
    pub store: String,
    /// The election.
    pub election: String,
}

/// Every change of an election's leader, value or term, as a stream.
#[derive(Debug)]
pub struct Observe {
    /// The lock store's name.
    pub store: String,
    /// The election.
    pub election: String,
}

/// An election's leadership as a stream reports it: `None` when nobody
/// leads. Each item differs from the one before in leader, value or term.
pub type LeaderStream = mpsc::Receiver<Result<Option<Permit>, ApiError>>;

/// The store's lease sets, or the refusal of a store without them.
fn sets<'h>(handle: &'h StoreHandle, noun: &str) -> Result<&'h dyn LeaseSets, ApiError> {
    handle.store.lease_sets().ok_or_else(|| {
        ApiError::new(
            ErrorKind::Unsupported,
            format!(
                "lock store {} ({}) cannot hold a {noun}: it does not declare the LEASE_SETS capability",
                handle.name, handle.type_name
            ),
        )
    })
}

/// The longest value a permit may carry (an election's published value),
/// in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;

fn check_value(value: &str) -> Result<(), ApiError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(malformed(format!(
            "value is {} bytes, more than the limit of {MAX_VALUE_BYTES} bytes",
            value.len()
        )));
    }
    Ok(())
}

/// The store key of set `name` (scoped like a resource id), refused in
/// leasehold.v1's terms.
fn set_key<P: Primitive>(handle: &StoreHandle, name: &str) -> Result<String, ApiError> {
    handle
        .scope
        .key(name)
        .map_err(|e| malformed(format!("{}: {e}", P::NAME_FIELD)))
}

impl<P: Primitive> PermitAcquire<P> {
    /// Check the ask: the store, the fields, the lease, the wait, the
    /// weight within the limit. Returns what the grant needs.
    fn check(
        &self,
        service: &LockService,
    ) -> Result<(Arc<StoreHandle>, String, PermitSpec, Duration, Duration), ApiError> {
        let handle = service
            .lookup_named(
                &self.store,
                Some((P::NAME_FIELD, &self.name)),
                Some((P::OWNER_FIELD, &self.owner)),
            )?
            .clone();
        sets(&handle, P::NOUN)?;
        require(&handle, handle.capabilities.renew, "keep a grant", "RENEW")?;
        let lease = self.lease.check(&handle)?;
        let wait = service.limits.wait(&handle, self.wait)?;
        if self.limit == 0 {
            return Err(malformed("limit must be at least 1".to_owned()));
        }
        if self.weight == 0 || self.weight > self.limit {
            return Err(malformed(format!(
                "permits {} is not between 1 and the limit of {}",
                self.weight, self.limit
            )));
        }
        check_value(&self.value)?;
        let key = set_key::<P>(&handle, &self.name)?;
        let spec = PermitSpec {
            kind: P::KIND,
            weight: self.weight,
            limit: self.limit,
            value: self.value.clone(),
        };
        Ok((handle, key, spec, lease, wait))
    }
}

impl<P: Primitive> Operation for PermitAcquire<P> {
    type Output = Acquired;
    const OP: Op = P::OPS.acquire;

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
        let (handle, key, spec, lease, wait) = self.check(service)?;
        let (outcome, _) = service
            .acquire_permit(&handle, &key, &self.owner, &spec, lease, wait)
            .await?;
        if let Acquired::Acquired { fence } = outcome {
            service.hold_started(&handle, &record_key(P::KIND, &key), fence);
        }
        Ok(outcome)
    }
}

impl<P: Primitive> Operation for PermitHold<P> {
    type Output = HoldStream;
    const OP: Op = P::OPS.hold;

    fn store(&self) -> &str {
        &self.0.store
    }

    async fn run(self, service: &Arc<LockService>) -> Result<HoldStream, ApiError> {
        let (handle, key, spec, lease, wait) = self.0.check(service)?;
        let target = Target::Permit(spec);
        Ok(service.start_hold(handle, key, self.0.owner, target, lease, wait))
    }
}

impl<P: Primitive> Operation for PermitRelease<P> {
    type Output = Release;
    const OP: Op = P::OPS.release;

    fn store(&self) -> &str {
        &self.store
    }

    fn outcome(output: &Release) -> Outcome {
        release_outcome(*output)
    }

    /// A Hold (or Campaign) stream of this grant in this sidecar ends, once
    /// the store has confirmed, with the reason.
    async fn run(self, service: &Arc<LockService>) -> Result<Release, ApiError> {
        let handle = service.lookup_named(
            &self.store,
            Some((P::NAME_FIELD, &self.name)),
            Some((P::OWNER_FIELD, &self.owner)),
        )?;
        let store = sets(handle, P::NOUN)?;
        let key = set_key::<P>(handle, &self.name)?;
        let record = record_key(P::KIND, &key);
        let eviction = Eviction {
            reason: LossReason::Released,
            message: P::RELEASED.to_owned(),
        };
        service
            .holds
            .mark_evicting(&handle.name, &record, Some(&eviction));
        let released = service
            .call_store(
                handle,
                StoreOp::Unlock,
                store.permit_release(P::KIND, &key, &self.owner, self.fence),
            )
            .await
            .map_err(store_failed);
        if let Ok(Release::Released) = released {
            service.hold_clock.forget(&handle.name, &record);
            service
                .holds
                .evict(&handle.name, &record, self.fence, &eviction);
        } else {
            service.holds.mark_evicting(&handle.name, &record, None);
        }
        released
    }
}

impl<P: Primitive> Operation for PermitRenew<P> {
    type Output = RenewOutcome;
    const OP: Op = P::OPS.renew;

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
        let handle = service.lookup_named(
            &self.store,
            Some((P::NAME_FIELD, &self.name)),
            Some((P::OWNER_FIELD, &self.owner)),
        )?;
        sets(handle, P::NOUN)?;
        let lease = self.lease.check(handle)?;
        let key = set_key::<P>(handle, &self.name)?;
        service
            .renew_permit(handle, P::KIND, &key, &self.owner, self.fence, lease)
            .await
    }
}

impl<P: Primitive> Operation for PermitStatus<P> {
    type Output = SetStatus;
    const OP: Op = P::OPS.status;

    fn store(&self) -> &str {
        &self.store
    }

    async fn run(self, service: &Arc<LockService>) -> Result<SetStatus, ApiError> {
        let handle = service.lookup_named(&self.store, Some((P::NAME_FIELD, &self.name)), None)?;
        let store = sets(handle, P::NOUN)?;
        let key = set_key::<P>(handle, &self.name)?;
        let view = service
            .call_store(handle, StoreOp::Status, store.permit_status(P::KIND, &key))
            .await
            .map_err(store_failed)?;
        Ok(SetStatus {
            view,
            waiters: service
                .waiters
                .len(&handle.name, &record_key(P::KIND, &key)),
        })
    }
}

impl<P: Primitive> Operation for PermitForceRelease<P> {
    type Output = Vec<Permit>;
    const OP: Op = P::OPS.force_release;
    const ADMIN: bool = true;

    fn store(&self) -> &str {
        &self.store
    }

    async fn run(self, service: &Arc<LockService>) -> Result<Vec<Permit>, ApiError> {
        let handle = service.lookup_named(&self.store, Some((P::NAME_FIELD, &self.name)), None)?;
        let store = sets(handle, P::NOUN)?;
        let key = set_key::<P>(handle, &self.name)?;
        let record = record_key(P::KIND, &key);
        let reason = if self.reason.is_empty() {
            "no reason given"
        } else {
            &self.reason
        };
        // As for locks: the holders hear once the store has confirmed, and
        // only of the grants that were ended.
        let eviction = Eviction {
            reason: LossReason::ForceUnlocked,
            message: format!("force-released by an administrator: {reason}"),
        };
        service
            .holds
            .mark_evicting(&handle.name, &record, Some(&eviction));
        let removed = service
            .call_store(
                handle,
                StoreOp::ForceUnlock,
                store.permit_force_release(P::KIND, &key, self.fence),
            )
            .await
            .map_err(store_failed);
        let removed = match removed {
            Ok(removed) => removed,
            Err(err) => {
                service.holds.mark_evicting(&handle.name, &record, None);
                return Err(err);
            }
        };
        for permit in &removed {
            tracing::warn!(store = %handle.name, name = %self.name, kind = P::NOUN, owner = %permit.owner, fence = permit.fence, reason, "grant force-released by an administrator");
            service
                .holds
                .evict(&handle.name, &record, permit.fence, &eviction);
        }
        // Streams of grants the store did not end go on as they were.
        service.holds.mark_evicting(&handle.name, &record, None);
        if !removed.is_empty() {
            service.hold_clock.forget(&handle.name, &record);
        }
        Ok(removed)
    }
}

impl Operation for Proclaim {
    type Output = bool;
    const OP: Op = Op::Proclaim;

    fn store(&self) -> &str {
        &self.store
    }

    async fn run(self, service: &Arc<LockService>) -> Result<bool, ApiError> {
        let handle = service.lookup_named(
            &self.store,
            Some(("election", &self.election)),
            Some(("candidate", &self.candidate)),
        )?;
        let store = sets(handle, Election::NOUN)?;
        check_value(&self.value)?;
        let key = set_key::<Election>(handle, &self.election)?;
        let updated = service
            .call_store(
                handle,
                StoreOp::Renew,
                store.permit_update(
                    SetKind::Election,
                    &key,
                    &self.candidate,
                    self.term,
                    &self.value,
                ),
            )
            .await
            .map_err(store_failed)?;
        Ok(matches!(updated, Renewal::Renewed { .. }))
    }
}

impl Operation for Leader {
    type Output = Option<Permit>;
    const OP: Op = Op::Leader;

    fn store(&self) -> &str {
        &self.store
    }

    async fn run(self, service: &Arc<LockService>) -> Result<Option<Permit>, ApiError> {
        let handle = service.lookup_named(&self.store, Some(("election", &self.election)), None)?;
        let store = sets(handle, Election::NOUN)?;
        let key = set_key::<Election>(handle, &self.election)?;
        service.leader_of(handle, store, &key).await
    }
}

impl Operation for Observe {
    type Output = LeaderStream;
    const OP: Op = Op::Observe;

    fn store(&self) -> &str {
        &self.store
    }

    /// The first item is the current leadership; then one per change, each
    /// found by a store notification, never by polling.
    async fn run(self, service: &Arc<LockService>) -> Result<LeaderStream, ApiError> {
        let handle = service
            .lookup_named(&self.store, Some(("election", &self.election)), None)?
            .clone();
        sets(&handle, Election::NOUN)?;
        require(
            &handle,
            handle.capabilities.release_notify,
            "observe an election",
            "RELEASE_NOTIFY",
        )?;
        let key = set_key::<Election>(&handle, &self.election)?;
        let (events, receiver) = mpsc::channel(8);
        let service = service.clone();
        let tracked = service.clone();
        tracked.tasks.spawn(async move {
            let store = handle.store.lease_sets().expect("checked above");
            let mut last: Option<Option<(String, Fence, String)>> = None;
            loop {
                // Watch first, read second: a change in between still wakes
                // this loop.
                let watch = service
                    .call_store(
                        &handle,
                        StoreOp::Watch,
                        store.watch_set(SetKind::Election, &key),
                    )
                    .await
                    .map_err(store_failed);
                let read = match watch {
                    Ok(watch) => service
                        .leader_of(&handle, store, &key)
                        .await
                        .map(|leader| (watch, leader)),
                    Err(err) => Err(err),
                };
                let (watch, leader) = match read {
                    Ok(read) => read,
                    Err(err) => {
                        let _ = events.send(Err(err)).await;
                        return;
                    }
                };
                let seen = leader
                    .as_ref()
                    .map(|p| (p.owner.clone(), p.fence, p.value.clone()));
                if last.as_ref() != Some(&seen) {
                    last = Some(seen);
                    if events.send(Ok(leader)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    () = watch => {}
                    () = events.closed() => return,
                    () = service.stopping.cancelled() => return,
                }
            }
        });
        Ok(receiver)
    }
}

impl LockService {
    /// The leader of an election: the one permit of its set.
    async fn leader_of(
        &self,
        handle: &StoreHandle,
        store: &dyn LeaseSets,
        key: &str,
    ) -> Result<Option<Permit>, ApiError> {
        let view = self
            .call_store(
                handle,
                StoreOp::Status,
                store.permit_status(SetKind::Election, key),
            )
            .await
            .map_err(store_failed)?;
        Ok(view.and_then(|view| view.permits.into_iter().next()))
    }

    /// Take a permit, waiting up to `wait` in this sidecar's FIFO queue for
    /// the set. A waiter heavier than one unit leaves an intent in the
    /// store, refreshed while it waits, so that lighter acquirers of every
    /// sidecar let it in first. With the outcome comes the instant just
    /// before the request that decided it was sent.
    pub(super) async fn acquire_permit(
        &self,
        handle: &StoreHandle,
        key: &str,
        owner: &str,
        spec: &PermitSpec,
        lease: Duration,
        wait: Duration,
    ) -> Result<(Acquired, Instant), ApiError> {
        let store = sets(handle, spec.kind.name())?;
        let try_now = |intent: Option<Duration>| async move {
            let ask = PermitAsk {
                owner,
                weight: spec.weight,
                limit: spec.limit,
                ttl: lease,
                value: &spec.value,
                intent,
            };
            let sent = Instant::now();
            let grant = self
                .call_store(
                    handle,
                    StoreOp::TryLock,
                    store.permit_acquire(spec.kind, key, ask),
                )
                .await
                .map_err(store_failed)?;
            let outcome = match grant {
                PermitGrant::Acquired { fence } => Acquired::Acquired { fence },
                PermitGrant::Busy => Acquired::HeldByOther,
                PermitGrant::LimitMismatch { limit } => {
                    return Err(ApiError::new(
                        ErrorKind::LimitMismatch,
                        format!(
                            "the {} is held under a limit of {limit}; this request declares {}",
                            spec.kind.name(),
                            spec.limit
                        ),
                    ));
                }
            };
            Ok::<_, ApiError>((outcome, sent))
        };
        if wait.is_zero() {
            return try_now(None).await;
        }
        let intent = (spec.weight > 1).then_some(INTENT_TTL);
        let deadline = Instant::now() + wait;
        let ticket = self.waiters.join(&handle.name, &record_key(spec.kind, key));
        let outcome = async {
            loop {
                tokio::select! {
                    () = ticket.my_turn() => {}
                    () = sleep_until(deadline) => return Ok((Acquired::HeldByOther, Instant::now())),
                }
                // Watch first, then try: a change between the two still
                // wakes this waiter.
                let changed = self
                    .call_store(handle, StoreOp::Watch, store.watch_set(spec.kind, key))
                    .await
                    .map_err(store_failed)?;
                let (outcome, sent) = try_now(intent).await?;
                if let Acquired::Acquired { .. } = outcome {
                    return Ok((outcome, sent));
                }
                // The intent is refreshed before it can run out.
                let refresh = match intent {
                    Some(ttl) => Instant::now() + ttl / 3,
                    None => deadline,
                };
                tokio::select! {
                    () = changed => {}
                    () = sleep_until(refresh.min(deadline)) => {}
                }
                if Instant::now() >= deadline {
                    return Ok((Acquired::HeldByOther, Instant::now()));
                }
            }
        }
        .await;
        let given_up = !matches!(outcome, Ok((Acquired::Acquired { .. }, _)));
        if given_up && intent.is_some() {
            // A waiter that leaves takes its intent along, so that lighter
            // acquirers need not wait for it to run out.
            let _ = self
                .call_store(
                    handle,
                    StoreOp::Unlock,
                    store.permit_withdraw(spec.kind, key, owner),
                )
                .await;
        }
        outcome
    }

    /// Extend `owner`'s permit of `fence`, within the hold cap, and count
    /// the renewal.
    pub(super) async fn renew_permit(
        &self,
        handle: &StoreHandle,
        kind: SetKind,
        key: &str,
        owner: &str,
        fence: Fence,
        lease: Duration,
    ) -> Result<RenewOutcome, ApiError> {
        let outcome = async {
            let store = sets(handle, kind.name())?;
            let record = record_key(kind, key);
            // A grant taken through another sidecar is capped from its
            // first renewal here.
            let since = self.hold_clock.since(&handle.name, &record, fence);
            let cap = since + handle.max_hold;
            let now = Instant::now();
            if now >= cap {
                return Ok(RenewOutcome::HoldLimitReached);
            }
            // Whole milliseconds, never zero: stores measure leases in ms.
            let granted = lease.min(cap - now);
            let granted = Duration::from_millis(granted.as_millis().max(1) as u64);
            let renewed = self
                .call_store(
                    handle,
                    StoreOp::Renew,
                    store.permit_renew(kind, key, owner, fence, granted),
                )
                .await
                .map_err(store_failed)?;
            Ok(match renewed {
                Renewal::Renewed { fence } => RenewOutcome::Renewed {
                    fence,
                    lease: granted,
                },
                Renewal::NotFound => RenewOutcome::NotFound,
                Renewal::HeldByOther => RenewOutcome::HeldByOther,
            })
        }
        .await;
        let class = match &outcome {
            Ok(RenewOutcome::Renewed { .. }) => 0,
            Ok(_) => 1,
            Err(_) => 2,
        };
        self.metrics.renewal(&handle.name, class);
        outcome
    }
}
