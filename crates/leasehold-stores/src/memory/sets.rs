//! Lease sets (semaphores, read/write locks, elections) in this process.
//!
//! Each set is a small record under one mutex for all sets: primitives are
//! fewer and less hot than plain locks, and a set's permits are counted
//! together anyway. Every operation first drops what has expired, by the
//! monotonic clock, so an expired permit never counts; the reaper calls
//! [`Sets::reap`] so that watchers hear of expiries nobody asked about.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use leasehold_core::leaseset::{Permit, PermitAsk, PermitGrant, SetKind, SetView};
use leasehold_core::{Fence, Release, ReleaseWait, Renewal};
use tokio::sync::oneshot;
use tokio::time::Instant;

#[derive(Debug)]
struct Held {
    owner: Box<str>,
    fence: Fence,
    weight: u32,
    value: Box<str>,
    deadline: Instant,
}

#[derive(Debug)]
struct Intent {
    owner: Box<str>,
    weight: u32,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct Set {
    limit: u32,
    permits: Vec<Held>,
    intents: Vec<Intent>,
    watchers: Vec<oneshot::Sender<()>>,
}

impl Set {
    /// Drop what has expired by `now`; whether anything was.
    fn expire(&mut self, now: Instant) -> bool {
        let before = self.permits.len() + self.intents.len();
        self.permits.retain(|p| p.deadline > now);
        self.intents.retain(|i| i.deadline > now);
        before != self.permits.len() + self.intents.len()
    }

    fn held(&self) -> u64 {
        self.permits.iter().map(|p| u64::from(p.weight)).sum()
    }

    fn notify(&mut self) {
        for watcher in self.watchers.drain(..) {
            let _ = watcher.send(());
        }
    }

    fn is_empty(&self) -> bool {
        self.permits.is_empty() && self.intents.is_empty() && self.watchers.is_empty()
    }

    fn permit_mut(&mut self, owner: &str, fence: Fence) -> Result<&mut Held, Release> {
        match self.permits.iter_mut().find(|p| p.fence == fence) {
            None => Err(Release::NotFound),
            Some(p) if &*p.owner != owner => Err(Release::HeldByOther),
            Some(p) => Ok(p),
        }
    }
}

type SetKey = (SetKind, Arc<str>);

/// Every lease set of one store.
#[derive(Debug, Default)]
pub(super) struct Sets {
    sets: Mutex<HashMap<SetKey, Set>>,
}

fn key(kind: SetKind, key: &str) -> SetKey {
    (kind, Arc::from(key))
}

impl Sets {
    fn lock(&self) -> MutexGuard<'_, HashMap<SetKey, Set>> {
        // Each operation leaves a set whole, so a poisoned lock is usable.
        self.sets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the set of `key` with its expired entries dropped (and
    /// its watchers told of them), then forget the set if it is empty.
    fn with<T>(&self, kind: SetKind, name: &str, f: impl FnOnce(&mut Set) -> T) -> T {
        let now = Instant::now();
        let mut sets = self.lock();
        let id = key(kind, name);
        let set = sets.entry(id.clone()).or_default();
        if set.expire(now) {
            set.notify();
        }
        let out = f(set);
        if set.is_empty() {
            sets.remove(&id);
        }
        out
    }

    /// See [`leasehold_core::leaseset::LeaseSets::permit_acquire`]. `fence`
    /// draws the next token; it is called only for a grant.
    pub(super) fn acquire(
        &self,
        kind: SetKind,
        name: &str,
        ask: PermitAsk<'_>,
        fence: impl FnOnce() -> Fence,
    ) -> PermitGrant {
        let now = Instant::now();
        self.with(kind, name, |set| {
            if set.permits.is_empty() {
                // An empty set takes the limit of whoever comes first.
                set.limit = ask.limit;
            } else if set.limit != ask.limit {
                return PermitGrant::LimitMismatch { limit: set.limit };
            }
            let blocked = set
                .intents
                .iter()
                .any(|i| &*i.owner != ask.owner && i.weight > ask.weight);
            if blocked || set.held() + u64::from(ask.weight) > u64::from(set.limit) {
                if let Some(ttl) = ask.intent {
                    set.intents.retain(|i| &*i.owner != ask.owner);
                    set.intents.push(Intent {
                        owner: ask.owner.into(),
                        weight: ask.weight,
                        deadline: now + ttl,
                    });
                }
                return PermitGrant::Busy;
            }
            set.intents.retain(|i| &*i.owner != ask.owner);
            let fence = fence();
            set.permits.push(Held {
                owner: ask.owner.into(),
                fence,
                weight: ask.weight,
                value: ask.value.into(),
                deadline: now + ask.ttl,
            });
            set.notify();
            PermitGrant::Acquired { fence }
        })
    }

    pub(super) fn release(&self, kind: SetKind, name: &str, owner: &str, fence: Fence) -> Release {
        self.with(kind, name, |set| {
            if let Err(outcome) = set.permit_mut(owner, fence) {
                return outcome;
            }
            set.permits.retain(|p| p.fence != fence);
            set.notify();
            Release::Released
        })
    }

    pub(super) fn renew(
        &self,
        kind: SetKind,
        name: &str,
        owner: &str,
        fence: Fence,
        ttl: Duration,
    ) -> Renewal {
        let now = Instant::now();
        self.with(kind, name, |set| match set.permit_mut(owner, fence) {
            Ok(permit) => {
                permit.deadline = now + ttl;
                Renewal::Renewed { fence }
            }
            Err(outcome) => renewal_of(outcome),
        })
    }

    pub(super) fn update(
        &self,
        kind: SetKind,
        name: &str,
        owner: &str,
        fence: Fence,
        value: &str,
    ) -> Renewal {
        self.with(kind, name, |set| match set.permit_mut(owner, fence) {
            Ok(permit) => {
                permit.value = value.into();
                set.notify();
                Renewal::Renewed { fence }
            }
            Err(outcome) => renewal_of(outcome),
        })
    }

    pub(super) fn withdraw(&self, kind: SetKind, name: &str, owner: &str) {
        self.with(kind, name, |set| {
            let before = set.intents.len();
            set.intents.retain(|i| &*i.owner != owner);
            if set.intents.len() != before {
                set.notify();
            }
        });
    }

    pub(super) fn status(&self, kind: SetKind, name: &str) -> Option<SetView> {
        let now = Instant::now();
        self.with(kind, name, |set| {
            (!set.permits.is_empty() || !set.intents.is_empty()).then(|| SetView {
                limit: set.limit,
                permits: set.permits.iter().map(|p| view(p, now)).collect(),
                waiting: set.intents.iter().map(|i| i.weight).collect(),
            })
        })
    }

    pub(super) fn force_release(
        &self,
        kind: SetKind,
        name: &str,
        fence: Option<Fence>,
    ) -> Vec<Permit> {
        let now = Instant::now();
        self.with(kind, name, |set| {
            let (removed, kept): (Vec<Held>, Vec<Held>) = std::mem::take(&mut set.permits)
                .into_iter()
                .partition(|p| fence.is_none_or(|f| f == p.fence));
            set.permits = kept;
            if !removed.is_empty() {
                set.notify();
            }
            removed.iter().map(|p| view(p, now)).collect()
        })
    }

    pub(super) fn watch(&self, kind: SetKind, name: &str) -> ReleaseWait {
        let (sender, receiver) = oneshot::channel();
        self.with(kind, name, |set| {
            set.watchers.retain(|w| !w.is_closed());
            set.watchers.push(sender);
        });
        Box::pin(async move {
            let _ = receiver.await;
        })
    }

    /// Drop what has expired everywhere and tell the watchers; forget sets
    /// left empty (their watchers gone too).
    pub(super) fn reap(&self, now: Instant) {
        let mut sets = self.lock();
        sets.retain(|_, set| {
            if set.expire(now) {
                set.notify();
            }
            set.watchers.retain(|w| !w.is_closed());
            !set.is_empty()
        });
    }

    /// The latest deadline of any permit (for the restart guard at close).
    pub(super) fn latest_deadline(&self) -> Option<Instant> {
        self.lock()
            .values()
            .flat_map(|set| set.permits.iter().map(|p| p.deadline))
            .max()
    }
}

fn view(p: &Held, now: Instant) -> Permit {
    Permit {
        owner: p.owner.to_string(),
        fence: p.fence,
        weight: p.weight,
        value: p.value.to_string(),
        remaining: p.deadline.saturating_duration_since(now),
    }
}

fn renewal_of(outcome: Release) -> Renewal {
    match outcome {
        Release::HeldByOther => Renewal::HeldByOther,
        _ => Renewal::NotFound,
    }
}
