//! Held grants as streams: acquire (optionally waiting), then keep the
//! lease alive while the client reads the stream, and end the stream with
//! the reason a margin before the lease could run out if it cannot be
//! kept. Closing the stream releases the grant, and only that grant.
//!
//! One task does this for a lock (`Hold`), a permit of a semaphore or a
//! read/write lock, and an election's leadership (`Campaign`): the
//! [`Target`] says which store calls it makes. Each task is tracked by the
//! service, so that shutdown can end and release them.

use std::sync::Arc;
use std::time::Duration;

use leasehold_core::leaseset::SetKind;
use leasehold_core::renewal::Schedule;
use leasehold_core::{Acquire as Acquired, Fence, Release, ReleaseWait};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use crate::error::{ApiError, ErrorKind};
use crate::observe::metrics::{LossReason, Op, StoreOp};

use super::holds::Eviction;
use super::limits::require;
use super::locks::{RenewOutcome, v1_key};
use super::sets::PermitSpec;
use super::{LeaseAsk, LockService, Operation, StoreHandle};

/// Acquire and keep the lease alive while the returned stream is read;
/// dropping the stream releases the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The lock store's name.
    pub store: String,
    /// The resource, within the app's scope.
    pub resource_id: String,
    /// Who asks.
    pub owner: String,
    /// The lease of each grant and renewal, as `leaseMs`.
    pub lease: LeaseAsk,
    /// How long to wait for the lock.
    pub wait: Duration,
}

/// What a Hold stream tells its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldEvent {
    /// The grant is held under this token.
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
    /// The grant is gone, or is about to be: the last event.
    Lost {
        /// Why, in a word.
        reason: LossReason,
        /// Why, for people.
        message: String,
    },
}

impl HoldEvent {
    /// The end of a lock's or a permit's stream as an error, as
    /// `Locks.Hold` reports it (gRPC `ABORTED`, SSE `lost`).
    pub fn lost_error(message: &str) -> ApiError {
        ApiError::new(ErrorKind::LeaseLost, format!("lease lost: {message}"))
    }
}

/// The receiving end of a held grant's stream. An `Err` item means the
/// grant was never taken (the store failed, the sidecar is stopping).
pub type HoldStream = mpsc::Receiver<Result<HoldEvent, ApiError>>;

type Events = mpsc::Sender<Result<HoldEvent, ApiError>>;

/// What a hold keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A lock.
    Lock,
    /// A permit of a lease set.
    Permit(PermitSpec),
}

impl Target {
    /// The key under which the sidecar records holds, waits and hold caps:
    /// the store key of a lock, the store key with its kind for a set.
    pub(crate) fn record_key(&self, key: &str) -> String {
        match self {
            Target::Lock => key.to_owned(),
            Target::Permit(spec) => record_key(spec.kind, key),
        }
    }
}

/// The record key of a set (see [`Target::record_key`]).
pub(crate) fn record_key(kind: SetKind, key: &str) -> String {
    format!("{}||{key}", kind.name())
}

impl Operation for Hold {
    type Output = HoldStream;
    const OP: Op = Op::Hold;

    fn store(&self) -> &str {
        &self.store
    }

    /// Validation errors come back at once; everything after is on the
    /// stream.
    async fn run(self, service: &Arc<LockService>) -> Result<HoldStream, ApiError> {
        let handle = service
            .lookup(&self.store, Some(&self.resource_id), Some(&self.owner))?
            .clone();
        require(&handle, handle.capabilities.renew, "hold a lock", "RENEW")?;
        let lease = self.lease.check(&handle)?;
        let wait = service.limits.wait(&handle, self.wait)?;
        let key = v1_key(&handle, &self.resource_id)?;
        Ok(service.start_hold(handle, key, self.owner, Target::Lock, lease, wait))
    }
}

impl LockService {
    /// Start the task of one held grant and hand back its stream.
    pub(crate) fn start_hold(
        self: &Arc<Self>,
        handle: Arc<StoreHandle>,
        key: String,
        owner: String,
        target: Target,
        lease: Duration,
        wait: Duration,
    ) -> HoldStream {
        let (events, receiver) = mpsc::channel(4);
        let task = HoldTask {
            service: self.clone(),
            record: target.record_key(&key),
            handle,
            key,
            owner,
            target,
            lease,
            events,
        };
        self.tasks.spawn(task.run(wait));
        receiver
    }
}

fn shutting_down() -> ApiError {
    ApiError::new(ErrorKind::Unavailable, "the sidecar is shutting down")
}

/// One held grant's task.
struct HoldTask {
    service: Arc<LockService>,
    handle: Arc<StoreHandle>,
    /// The store key of the lock or set.
    key: String,
    /// The key of the sidecar's records (holds, waits, hold caps).
    record: String,
    owner: String,
    target: Target,
    lease: Duration,
    events: Events,
}

/// Why a held lease ended, for the metrics and for the client.
struct Loss {
    reason: LossReason,
    message: String,
}

impl Loss {
    fn new(reason: LossReason, message: impl Into<String>) -> Self {
        Loss {
            reason,
            message: message.into(),
        }
    }
}

impl HoldTask {
    async fn run(self, wait: Duration) {
        let acquired = tokio::select! {
            outcome = self.acquire(wait) => outcome,
            () = self.events.closed() => return,
            () = self.service.stopping.cancelled() => Err(shutting_down()),
        };
        let (fence, sent) = match acquired {
            Ok((Acquired::Acquired { fence }, sent)) => (fence, sent),
            Ok((Acquired::HeldByOther, _)) => {
                let _ = self.events.send(Ok(HoldEvent::NotAcquired)).await;
                return;
            }
            Err(err) => {
                let _ = self.events.send(Err(err)).await;
                return;
            }
        };
        self.service.hold_started(&self.handle, &self.record, fence);
        let evicted = self
            .service
            .holds
            .register(&self.handle.name, &self.record, fence);
        let first = HoldEvent::Acquired {
            fence,
            lease: self.lease,
        };
        if self.events.send(Ok(first)).await.is_err() {
            self.release(fence).await;
            return;
        }
        match self
            .keep(fence, Schedule::new(sent, self.lease), evicted)
            .await
        {
            // The client closed the stream: the grant is released.
            None => self.release(fence).await,
            Some(loss) => {
                let service = &self.service;
                service.holds.unregister(&self.handle.name, &self.record);
                service.metrics().lease_lost(&self.handle.name, loss.reason);
                tracing::info!(store = %self.handle.name, fence, reason = %loss.message, "held grant lost");
                let lost = HoldEvent::Lost {
                    reason: loss.reason,
                    message: loss.message,
                };
                let _ = self.events.send(Ok(lost)).await;
                // Told first, released second: at shutdown the grant is
                // still held, and nobody else should wait for it to expire.
                if loss.reason == LossReason::Shutdown {
                    self.release(fence).await;
                }
            }
        }
    }

    /// Take the grant, waiting up to `wait`; with the instant just before
    /// the request that decided it was sent.
    async fn acquire(&self, wait: Duration) -> Result<(Acquired, Instant), ApiError> {
        let service = &self.service;
        match &self.target {
            Target::Lock => {
                service
                    .acquire_key(&self.handle, &self.key, &self.owner, self.lease, wait)
                    .await
            }
            Target::Permit(spec) => {
                service
                    .acquire_permit(&self.handle, &self.key, &self.owner, spec, self.lease, wait)
                    .await
            }
        }
    }

    /// Extend the grant, within the hold cap.
    async fn renew(&self, fence: Fence) -> Result<RenewOutcome, ApiError> {
        let service = &self.service;
        match &self.target {
            Target::Lock => {
                service
                    .renew_key(&self.handle, &self.key, &self.owner, self.lease)
                    .await
            }
            Target::Permit(spec) => {
                service
                    .renew_permit(
                        &self.handle,
                        spec.kind,
                        &self.key,
                        &self.owner,
                        fence,
                        self.lease,
                    )
                    .await
            }
        }
    }

    /// Renew at a third of the lease until the client closes the stream
    /// (`None`) or the lease is lost (why). A renewal is also tried at once
    /// when the store says the key was released, expired or broken.
    async fn keep(
        &self,
        fence: Fence,
        mut schedule: Schedule<Instant>,
        mut evicted: oneshot::Receiver<Eviction>,
    ) -> Option<Loss> {
        let loss = self
            .renew_until_lost(fence, &mut schedule, &mut evicted)
            .await?;
        if matches!(
            loss.reason,
            LossReason::ForceUnlocked | LossReason::Released | LossReason::Shutdown
        ) {
            return Some(loss);
        }
        if let Ok(eviction) = evicted.try_recv() {
            return Some(Loss::new(eviction.reason, eviction.message));
        }
        // The lease went while a request to end this grant is under way:
        // it is what ended it, and the holder hears so now.
        let pending = self
            .service
            .holds
            .evicting(&self.handle.name, &self.record, fence);
        Some(match pending {
            Some(eviction) => Loss::new(eviction.reason, eviction.message),
            None => loss,
        })
    }

    async fn renew_until_lost(
        &self,
        fence: Fence,
        schedule: &mut Schedule<Instant>,
        evicted: &mut oneshot::Receiver<Eviction>,
    ) -> Option<Loss> {
        let mut released = self.watch().await;
        let mut capped = false;
        loop {
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
                () = self.events.closed() => return None,
                () = self.service.stopping.cancelled() => {
                    return Some(Loss::new(LossReason::Shutdown, "the sidecar is shutting down"));
                }
                eviction = &mut *evicted => {
                    return Some(match eviction {
                        Ok(eviction) => Loss::new(eviction.reason, eviction.message),
                        Err(_) => Loss::new(LossReason::ForceUnlocked, "evicted"),
                    });
                }
                () = sleep_until(schedule.give_up_at()) => {
                    return Some(if capped {
                        self.hold_limit()
                    } else {
                        Loss::new(LossReason::RenewFailed, "the lease could not be renewed before it would run out")
                    });
                }
                () = watch => {
                    released = None;
                    schedule.renew_at_instant(Instant::now());
                }
                () = sleep_until(schedule.renew_at()) => {}
            }
            let now = Instant::now();
            if now < schedule.renew_at() {
                continue;
            }
            let renewed = tokio::time::timeout(schedule.budget(now), self.renew(fence)).await;
            match renewed {
                Ok(Ok(RenewOutcome::Renewed {
                    fence: now_fence,
                    lease: granted,
                })) if now_fence == fence => {
                    schedule.renewed(now, granted);
                    if granted < self.lease {
                        // The cap cut this lease short: the next renewal
                        // would be refused, so the stream ends with it.
                        capped = true;
                        schedule.renew_at_instant(schedule.deadline());
                    }
                    if released.is_none() {
                        released = self.watch().await;
                    }
                    let _ = self
                        .events
                        .try_send(Ok(HoldEvent::Renewed { lease: granted }));
                }
                Ok(Ok(RenewOutcome::Renewed { .. })) => {
                    return Some(Loss::new(
                        LossReason::Expired,
                        "the lock was released and taken again",
                    ));
                }
                Ok(Ok(RenewOutcome::NotFound)) => {
                    return Some(Loss::new(
                        LossReason::Expired,
                        "the lease expired or was released elsewhere",
                    ));
                }
                Ok(Ok(RenewOutcome::HeldByOther)) => {
                    return Some(Loss::new(
                        LossReason::HeldByOther,
                        "another owner holds the lock",
                    ));
                }
                Ok(Ok(RenewOutcome::HoldLimitReached)) => return Some(self.hold_limit()),
                Ok(Err(err)) => {
                    tracing::warn!(store = %self.handle.name, error = %err.message, "renewal failed; retrying while the lease lasts");
                    schedule.retry(Instant::now());
                }
                // The budget ran out: the give-up point is here.
                Err(_) => schedule.renew_at_instant(Instant::now()),
            }
        }
    }

    fn hold_limit(&self) -> Loss {
        Loss::new(
            LossReason::HoldLimit,
            format!(
                "the maximum hold time of {:?} is reached",
                self.handle.max_hold
            ),
        )
    }

    /// Watch the key for a release; `None` when the store cannot (the
    /// renewals still find out, later).
    async fn watch(&self) -> Option<ReleaseWait> {
        let store = &self.handle.store;
        let watch = match &self.target {
            Target::Lock => {
                self.service
                    .call_store(&self.handle, StoreOp::Watch, store.watch_release(&self.key))
                    .await
            }
            Target::Permit(spec) => {
                let sets = store.lease_sets()?;
                self.service
                    .call_store(
                        &self.handle,
                        StoreOp::Watch,
                        sets.watch_set(spec.kind, &self.key),
                    )
                    .await
            }
        };
        watch.ok()
    }

    /// The client closed its stream: release its grant, and only that one
    /// (the same owner may hold a later grant of the key by now).
    async fn release(&self, fence: Fence) {
        let service = &self.service;
        service.holds.unregister(&self.handle.name, &self.record);
        let store = &self.handle.store;
        let released = match &self.target {
            Target::Lock => {
                service
                    .call_store(
                        &self.handle,
                        StoreOp::Unlock,
                        store.unlock_grant(&self.key, &self.owner, fence),
                    )
                    .await
            }
            Target::Permit(spec) => match store.lease_sets() {
                Some(sets) => {
                    service
                        .call_store(
                            &self.handle,
                            StoreOp::Unlock,
                            sets.permit_release(spec.kind, &self.key, &self.owner, fence),
                        )
                        .await
                }
                None => Ok(Release::NotFound),
            },
        };
        match released {
            Ok(Release::Released) => service.hold_clock.forget(&self.handle.name, &self.record),
            // Gone already, or a later grant now: nothing of this stream's.
            Ok(_) => {}
            Err(err) => tracing::warn!(
                store = %self.handle.name,
                error = %err,
                "could not release a held grant after its stream closed; the lease will run out"
            ),
        }
    }
}
