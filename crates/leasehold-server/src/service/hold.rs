//! Held-lock streams: acquire (optionally waiting), then keep the lease
//! alive while the client reads the stream, and end the stream with the
//! reason a margin before the lease could run out if it cannot be kept.
//! Closing the stream releases the grant, and only that grant.
//!
//! Each stream is one task, tracked by the service so that shutdown waits
//! for the releases of streams that closed.

use std::sync::Arc;
use std::time::Duration;

use leasehold_core::renewal::Schedule;
use leasehold_core::{Acquire as Acquired, Fence, Release, ReleaseWait};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

use crate::error::{ApiError, ErrorKind};
use crate::observe::metrics::{LossReason, Op, StoreOp};

use super::limits::require;
use super::locks::{RenewOutcome, v1_key};
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

type Events = mpsc::Sender<Result<HoldEvent, ApiError>>;

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
        let (events, receiver) = mpsc::channel(4);
        let task = HoldTask {
            service: service.clone(),
            handle,
            key,
            owner: self.owner,
            lease,
            events,
        };
        service.tasks.spawn(task.run(wait));
        Ok(receiver)
    }
}

fn shutting_down() -> ApiError {
    ApiError::new(ErrorKind::Unavailable, "the sidecar is shutting down")
}

/// One Hold stream's task.
struct HoldTask {
    service: Arc<LockService>,
    handle: Arc<StoreHandle>,
    key: String,
    owner: String,
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
            outcome = self.service.acquire_key(&self.handle, &self.key, &self.owner, self.lease, wait) => outcome,
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
        self.service.hold_started(&self.handle, &self.key, fence);
        let evicted = self
            .service
            .holds
            .register(&self.handle.name, &self.key, fence);
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
                service.holds.unregister(&self.handle.name, &self.key);
                service.metrics().lease_lost(&self.handle.name, loss.reason);
                tracing::info!(store = %self.handle.name, fence, reason = %loss.message, "held lock lost");
                let lost = ApiError::new(
                    ErrorKind::LeaseLost,
                    format!("lease lost: {}", loss.message),
                );
                let _ = self.events.send(Err(lost)).await;
                // Told first, released second: at shutdown the grant is
                // still held, and nobody else should wait for it to expire.
                if loss.reason == LossReason::Shutdown {
                    self.release(fence).await;
                }
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
        mut evicted: oneshot::Receiver<String>,
    ) -> Option<Loss> {
        let loss = self
            .renew_until_lost(fence, &mut schedule, &mut evicted)
            .await?;
        if loss.reason == LossReason::ForceUnlocked {
            return Some(loss);
        }
        if let Ok(reason) = evicted.try_recv() {
            return Some(Loss::new(LossReason::ForceUnlocked, reason));
        }
        let force_unlocking = self
            .service
            .holds
            .is_evicting(&self.handle.name, &self.key, fence);
        if !force_unlocking {
            return Some(loss);
        }
        // The lease went while a force-unlock of this grant is under way:
        // report it as that, once the store has confirmed (or the other
        // loss, if the force-unlock failed).
        let verdict = tokio::time::timeout_at(schedule.give_up_at(), &mut evicted).await;
        Some(match verdict {
            Ok(Ok(reason)) => Loss::new(LossReason::ForceUnlocked, reason),
            _ => loss,
        })
    }

    async fn renew_until_lost(
        &self,
        fence: Fence,
        schedule: &mut Schedule<Instant>,
        evicted: &mut oneshot::Receiver<String>,
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
                reason = &mut *evicted => {
                    let reason = reason.unwrap_or_else(|_| "evicted".to_owned());
                    return Some(Loss::new(LossReason::ForceUnlocked, reason));
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
            let renewed = tokio::time::timeout(
                schedule.budget(now),
                self.service
                    .renew_key(&self.handle, &self.key, &self.owner, self.lease),
            )
            .await;
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
        self.service
            .call_store(
                &self.handle,
                StoreOp::Watch,
                self.handle.store.watch_release(&self.key),
            )
            .await
            .ok()
    }

    /// The client closed its stream: release its grant, and only that one
    /// (the same owner may hold a later grant of the key by now).
    async fn release(&self, fence: Fence) {
        let service = &self.service;
        service.holds.unregister(&self.handle.name, &self.key);
        match service
            .call_store(
                &self.handle,
                StoreOp::Unlock,
                self.handle
                    .store
                    .unlock_grant(&self.key, &self.owner, fence),
            )
            .await
        {
            Ok(Release::Released) => service.hold_clock.forget(&self.handle.name, &self.key),
            // Gone already, or a later grant now: nothing of this stream's.
            Ok(_) => {}
            Err(err) => tracing::warn!(
                store = %self.handle.name,
                error = %err,
                "could not release a held lock after its stream closed; the lease will run out"
            ),
        }
    }
}
