//! Lease sets: the one backend structure behind counting semaphores,
//! read/write locks and leader elections.
//!
//! A lease set is a named set of *permits* within a *limit*. Each permit is
//! held by one owner under a lease of its own and a fencing token of its
//! own, and takes a *weight* of the limit:
//!
//! | primitive | limit | weight of a permit |
//! |---|---|---|
//! | semaphore of N | N | the k permits asked for |
//! | read/write lock | [`RW_LIMIT`] | 1 for a reader, the whole limit for a writer |
//! | election | 1 | 1 (the leader), with its value |
//!
//! A permit is granted when the weights of the live permits and its own fit
//! in the limit. A waiting acquirer may leave an *intent*, itself a lease:
//! while a live intent of another owner is heavier than an ask, the ask is
//! refused, so a writer waiting for readers to leave is not starved by new
//! readers, from any sidecar.
//!
//! Every operation is one atomic operation of the backend (one Lua script,
//! one etcd transaction, one SQL statement), expired permits and intents
//! are reaped inside it, and a dropped call never leaves half a permit.
//! Tokens of one set only grow, across restarts and, as for locks, across a
//! backend that loses data.

use std::time::Duration;

use async_trait::async_trait;

use crate::{Fence, Release, ReleaseWait, Renewal, StoreError};

/// The limit of a read/write lock: a writer weighs all of it, a reader 1.
pub const RW_LIMIT: u32 = 1 << 30;

/// Which primitive a set belongs to. Each kind has a keyspace of its own in
/// every store, so a semaphore, a read/write lock and an election (and a
/// plain lock) of one name never meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetKind {
    /// A counting semaphore.
    Semaphore,
    /// A read/write lock.
    RwLock,
    /// A leader election.
    Election,
}

impl SetKind {
    /// Every kind.
    pub const ALL: [SetKind; 3] = [SetKind::Semaphore, SetKind::RwLock, SetKind::Election];

    /// Its name in store keys and messages.
    pub fn name(self) -> &'static str {
        match self {
            SetKind::Semaphore => "semaphore",
            SetKind::RwLock => "rwlock",
            SetKind::Election => "election",
        }
    }
}

/// One ask for a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermitAsk<'a> {
    /// Who asks.
    pub owner: &'a str,
    /// How much of the limit the permit takes (at least 1, at most `limit`).
    pub weight: u32,
    /// The set's limit. The first acquirer of an empty set declares it; a
    /// different limit is refused while any permit is held.
    pub limit: u32,
    /// The permit's lease.
    pub ttl: Duration,
    /// A value the permit carries (an election candidate's), readable by
    /// everyone through the set's status.
    pub value: &'a str,
    /// When the ask is not granted, leave (or refresh) an intent of its
    /// weight lasting this long; a waiting acquirer asks again before it
    /// runs out. `None`: no intent.
    pub intent: Option<Duration>,
}

/// The outcome of an ask that reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermitGrant {
    /// The permit is held now, under this token.
    Acquired {
        /// The token of this permit.
        fence: Fence,
    },
    /// Not enough of the limit is free, or a heavier acquirer waits first.
    Busy,
    /// The set is held under another limit.
    LimitMismatch {
        /// The limit in force.
        limit: u32,
    },
}

/// One live permit, as the set's status shows it (advisory, as all status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    /// Its holder.
    pub owner: String,
    /// Its token.
    pub fence: Fence,
    /// How much of the limit it takes.
    pub weight: u32,
    /// The value it carries.
    pub value: String,
    /// What is left of its lease, as the store measures it.
    pub remaining: Duration,
}

/// A set as its status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetView {
    /// The limit in force.
    pub limit: u32,
    /// The live permits, in token order (oldest first).
    pub permits: Vec<Permit>,
    /// The weights of the live intents of waiting acquirers.
    pub waiting: Vec<u32>,
}

impl SetView {
    /// How much of the limit the live permits take.
    pub fn held(&self) -> u64 {
        self.permits.iter().map(|p| u64::from(p.weight)).sum()
    }
}

/// What a store does for lease sets. Every method is one atomic round trip
/// to the backend; `key` is the scoped name of the set.
#[async_trait]
pub trait LeaseSets: Send + Sync {
    /// Take a permit if it fits in the limit and no heavier intent of
    /// another owner waits; a granted ask removes the owner's own intent,
    /// a refused one leaves or refreshes it when the ask says so.
    async fn permit_acquire(
        &self,
        kind: SetKind,
        key: &str,
        ask: PermitAsk<'_>,
    ) -> Result<PermitGrant, StoreError>;

    /// Give back the permit of token `fence` held by `owner`. Another
    /// owner's permit of that token, or none, is `HeldByOther` / `NotFound`.
    async fn permit_release(
        &self,
        kind: SetKind,
        key: &str,
        owner: &str,
        fence: Fence,
    ) -> Result<Release, StoreError>;

    /// Extend `owner`'s permit of token `fence` to `ttl` from now.
    async fn permit_renew(
        &self,
        kind: SetKind,
        key: &str,
        owner: &str,
        fence: Fence,
        ttl: Duration,
    ) -> Result<Renewal, StoreError>;

    /// Replace the value of `owner`'s permit of token `fence` (an elected
    /// leader proclaiming a new value without losing its term).
    async fn permit_update(
        &self,
        kind: SetKind,
        key: &str,
        owner: &str,
        fence: Fence,
        value: &str,
    ) -> Result<Renewal, StoreError>;

    /// Withdraw `owner`'s intent, if any (a waiter that gave up).
    async fn permit_withdraw(
        &self,
        kind: SetKind,
        key: &str,
        owner: &str,
    ) -> Result<(), StoreError>;

    /// The set's live permits and intents; `None` when it has none.
    async fn permit_status(&self, kind: SetKind, key: &str) -> Result<Option<SetView>, StoreError>;

    /// Remove the permit of token `fence` whoever holds it, or every permit
    /// of the set when `fence` is `None` (admin). Returns what was removed.
    async fn permit_force_release(
        &self,
        kind: SetKind,
        key: &str,
        fence: Option<Fence>,
    ) -> Result<Vec<Permit>, StoreError>;

    /// Start watching the set for any change: a permit given back, expired,
    /// broken, granted or updated, an intent gone. As with
    /// [`crate::LockStore::watch_release`], the watch is in place when this
    /// returns, and spurious wake-ups are allowed.
    async fn watch_set(&self, kind: SetKind, key: &str) -> Result<ReleaseWait, StoreError>;
}
