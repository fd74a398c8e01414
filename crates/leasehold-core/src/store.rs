use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;

/// Resolves when a watched key may have become free.
pub type ReleaseWait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A fencing token: strictly greater than every token the same store issued
/// before for the same key, including across restarts of the sidecar.
///
/// A resource that remembers the highest token it has seen can refuse a
/// holder whose lease has run out (Kleppmann's fencing).
pub type Fence = u64;

/// The outcome of an acquire that reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    /// The caller holds the lease now, under this fencing token.
    Acquired {
        /// The token of this grant.
        fence: Fence,
    },
    /// Someone holds a live lease on the key; that includes the caller itself,
    /// because locks are not reentrant.
    HeldByOther,
}

/// The outcome of a release that reached the store. The numbering of Dapr's
/// `UnlockResponse.Status` follows from [`Release::dapr_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The caller held the lease and it is gone now.
    Released,
    /// No live lease exists on the key (never taken, released or expired).
    NotFound,
    /// A live lease exists and belongs to another owner; nothing changed.
    HeldByOther,
}

impl Release {
    /// Dapr's numeric unlock status: 0 success, 1 does not exist, 2 belongs
    /// to others.
    pub fn dapr_status(self) -> i32 {
        match self {
            Release::Released => 0,
            Release::NotFound => 1,
            Release::HeldByOther => 2,
        }
    }
}

/// The outcome of a renewal that reached the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The owner's lease now runs for the new length from now.
    Renewed {
        /// The token of the grant being renewed (unchanged by a renewal).
        fence: Fence,
    },
    /// No live lease exists on the key.
    NotFound,
    /// A live lease exists and belongs to another owner.
    HeldByOther,
}

/// The outcome of an administrative release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForceRelease {
    /// The lease of `owner` was removed.
    Released {
        /// The evicted owner.
        owner: String,
        /// The evicted grant's token.
        fence: Fence,
    },
    /// No live lease existed.
    NotFound,
}

/// An advisory view of one live lease: it may be stale by the time it is
/// read, so a decision must rest on the fencing token, never on this view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The key as the store sees it (after scoping).
    pub key: String,
    /// The current holder.
    pub owner: String,
    /// The current grant's token.
    pub fence: Fence,
    /// What is left of the lease, as the store measures it.
    pub remaining: Duration,
}

/// How strong a store's promise of mutual exclusion is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// One authority decides every grant (one process, or a consensus
    /// protocol): a granted lease is never lost while it is valid.
    Linearizable,
    /// Grants can be lost in a failover of the backend (asynchronous
    /// replication) or rest on timing assumptions.
    BestEffort,
}

/// What a store can do, declared once and checked by the server before it
/// serves a request that needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Every grant carries a fencing token.
    pub fencing: bool,
    /// The owner can extend its lease.
    pub renew: bool,
    /// The store tells waiters that a key was released, so a blocking
    /// acquire never polls.
    pub release_notify: bool,
    /// Status, listing and force-unlock are available.
    pub admin: bool,
    /// Leases survive a restart of the sidecar.
    pub durable: bool,
    /// See [`Consistency`].
    pub consistency: Consistency,
}

impl Capabilities {
    /// Names of the declared capabilities, as shown in `/v1.0/metadata`.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        let flags = [
            (self.fencing, "FENCING"),
            (self.renew, "RENEW"),
            (self.release_notify, "RELEASE_NOTIFY"),
            (self.admin, "ADMIN"),
            (self.durable, "DURABLE"),
            (
                self.consistency == Consistency::Linearizable,
                "LINEARIZABLE",
            ),
        ];
        for (on, name) in flags {
            if on {
                names.push(name);
            }
        }
        names
    }
}

/// What went wrong in a store, in broad strokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The backend could not be reached or the connection broke.
    Unavailable,
    /// The backend did not answer in time; the outcome is unknown.
    Timeout,
    /// The backend answered with an error.
    Backend,
    /// The store refuses grants for a while (see the restart guard).
    Recovering,
    /// The store does not support the operation.
    Unsupported,
}

/// A store failure. Contention is never an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or the connection broke.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The backend did not answer within the deadline; the operation may or
    /// may not have taken effect.
    #[error("backend did not answer within {0:?}; the outcome is unknown")]
    Timeout(Duration),
    /// The backend answered with an error.
    #[error("backend error: {0}")]
    Backend(String),
    /// Grants are refused until leases that may have been granted before an
    /// unclean shutdown have run out.
    #[error("store is recovering from an unclean shutdown: grants resume in {0:?}")]
    Recovering(Duration),
    /// The store cannot do this.
    #[error("this lock store does not support {0}")]
    Unsupported(&'static str),
}

impl StoreError {
    /// The broad kind of the failure.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            StoreError::Unavailable(_) => StoreErrorKind::Unavailable,
            StoreError::Timeout(_) => StoreErrorKind::Timeout,
            StoreError::Backend(_) => StoreErrorKind::Backend,
            StoreError::Recovering(_) => StoreErrorKind::Recovering,
            StoreError::Unsupported(_) => StoreErrorKind::Unsupported,
        }
    }

    /// Whether asking again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            StoreErrorKind::Unavailable | StoreErrorKind::Timeout | StoreErrorKind::Recovering
        )
    }
}

/// A lock store: the one trait every backend implements.
///
/// Keys arrive already scoped (`lock||<appId>||<resourceId>`) and validated.
/// Every operation is one atomic round trip to the backend, so a future that
/// is dropped half-way never leaves half a lock behind; the lease, not the
/// caller, is the safety net.
#[async_trait]
pub trait LockStore: Send + Sync + fmt::Debug + 'static {
    /// What this store can do.
    fn capabilities(&self) -> Capabilities;

    /// Take the lease on `key` for `owner` if nobody holds a live one.
    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<Acquire, StoreError>;

    /// Release `owner`'s lease on `key`. With `grant`, only if it is the
    /// grant that was given that token: cleanup of one grant (a stream that
    /// closed, a guard dropped) must not end a later grant of the same owner
    /// string (after the first was released or expired and the key granted
    /// again), whose holder would lose its lock unknowingly. Another owner's
    /// lease, or another grant of this owner, is `HeldByOther`.
    async fn release(
        &self,
        key: &str,
        owner: &str,
        grant: Option<Fence>,
    ) -> Result<Release, StoreError>;

    /// Release `owner`'s lease on `key`, whichever grant it is.
    async fn unlock(&self, key: &str, owner: &str) -> Result<Release, StoreError> {
        self.release(key, owner, None).await
    }

    /// Release `owner`'s lease on `key` only if it is the grant of token
    /// `fence` (see [`LockStore::release`]).
    async fn unlock_grant(
        &self,
        key: &str,
        owner: &str,
        fence: Fence,
    ) -> Result<Release, StoreError> {
        self.release(key, owner, Some(fence)).await
    }

    /// Extend `owner`'s live lease on `key` to `ttl` from now.
    async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Result<Renewal, StoreError> {
        let _ = (key, owner, ttl);
        Err(StoreError::Unsupported("renew"))
    }

    /// The live lease on `key`, if any (advisory).
    async fn status(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        let _ = key;
        Err(StoreError::Unsupported("status"))
    }

    /// Live leases whose key starts with `prefix`, in key order, after the
    /// key `after`, at most `limit` of them.
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LockInfo>, StoreError> {
        let _ = (prefix, after, limit);
        Err(StoreError::Unsupported("list"))
    }

    /// Remove whatever live lease exists on `key`, whoever holds it. The next
    /// grant gets a greater fencing token, as always.
    async fn force_unlock(&self, key: &str) -> Result<ForceRelease, StoreError> {
        let _ = key;
        Err(StoreError::Unsupported("force-unlock"))
    }

    /// Start watching `key` for a release, an expiry or a force-unlock.
    ///
    /// When this returns, the watch is in place: an event after this point
    /// resolves the returned future. The caller subscribes first and tries to
    /// acquire second, so no release falls between the two. Spurious
    /// wake-ups are allowed. Stores without release notification return
    /// `Unsupported`.
    async fn watch_release(&self, key: &str) -> Result<ReleaseWait, StoreError> {
        let _ = key;
        Err(StoreError::Unsupported("release notification"))
    }

    /// Whether the backend answers.
    async fn health(&self) -> Result<(), StoreError>;

    /// How many live leases the store holds, when it can tell cheaply (for
    /// metrics); `None` when it cannot.
    fn held_count(&self) -> Option<u64> {
        None
    }

    /// How many times the store has re-established its backend connection
    /// since it opened (for metrics); `None` when it does not track it.
    fn reconnections(&self) -> Option<u64> {
        None
    }

    /// Let go of connections and background tasks; called once at shutdown.
    async fn close(&self) {}

    /// Semaphores, read/write locks and elections, when the store has them.
    fn lease_sets(&self) -> Option<&dyn crate::leaseset::LeaseSets> {
        None
    }
}
