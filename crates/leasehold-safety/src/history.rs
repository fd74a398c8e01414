//! What a run records: every grant as its client saw it, every write the
//! fenced resource was asked to take, every error and every fault.
//!
//! All times are offsets from one [`Recorder`]'s origin, read from one
//! monotonic clock in one process, so they can be compared with each other
//! (and only with each other).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How a client took the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Via {
    /// leasehold.v1 `Hold` through `leasehold_client` (the sidecar renews).
    Hold,
    /// Dapr `TryLockAlpha1` / `UnlockAlpha1` over gRPC (no renewal).
    Dapr,
    /// Dapr `TryLockAlpha1`, then a pause longer than the lease, then a
    /// late write (the fault a GC or VM pause causes).
    Paused,
}

impl Via {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Via::Hold => "hold",
            Via::Dapr => "dapr",
            Via::Paused => "paused",
        }
    }
}

/// One grant, as the client that received it believed it.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The resource id.
    pub key: String,
    /// The owner the lock was granted to.
    pub owner: String,
    /// How it was taken.
    pub via: Via,
    /// The fencing token of the grant.
    pub token: u64,
    /// When the acquire request was sent.
    pub requested: Duration,
    /// When the grant reply arrived: the client's belief starts here.
    pub granted: Duration,
    /// Where the client's belief ends: the earliest of the start of its
    /// release, the moment it heard of the loss, and the lease deadline
    /// counted from `requested`.
    pub believed_until: Duration,
}

/// One write offered to the fenced resource.
#[derive(Debug, Clone)]
pub struct Write {
    /// The resource id.
    pub key: String,
    /// The writer.
    pub owner: String,
    /// The token the writer presented.
    pub token: u64,
    /// When the resource decided (inside its lock).
    pub at: Duration,
    /// Whether the resource took it.
    pub accepted: bool,
    /// Whether the writer knew its lease might be over (a paused client
    /// writing after its pause).
    pub late: bool,
}

/// One fault injected during the run.
#[derive(Debug, Clone)]
pub struct Fault {
    /// What was done (`sidecar kill -9 + restart`, ...).
    pub name: String,
    /// When it began.
    pub start: Duration,
    /// When the injector finished (the process back, or resumed).
    pub end: Duration,
}

/// Everything a run recorded.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// Lock operations sent (acquire, renew-bearing holds, release).
    pub operations: u64,
    /// Grants.
    pub grants: Vec<Grant>,
    /// Writes offered to the fenced resource.
    pub writes: Vec<Write>,
    /// Failed operations: when, and the message.
    pub errors: Vec<(Duration, String)>,
    /// Faults injected.
    pub faults: Vec<Fault>,
}

/// Shared by every client task of a run. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Recorder {
    origin: Instant,
    history: Arc<Mutex<History>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        Recorder {
            origin: Instant::now(),
            history: Arc::default(),
        }
    }

    /// The time since the origin.
    pub fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn lock(&self) -> MutexGuard<'_, History> {
        self.history
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Count one operation sent.
    pub fn operation(&self) {
        self.lock().operations += 1;
    }

    /// Record a failed operation.
    pub fn error(&self, message: impl Into<String>) {
        let at = self.now();
        self.lock().errors.push((at, message.into()));
    }

    /// Record a grant whose belief has ended.
    pub fn grant(&self, grant: Grant) {
        self.lock().grants.push(grant);
    }

    /// Record a write decision (the fenced resource calls this).
    pub fn write(&self, write: Write) {
        self.lock().writes.push(write);
    }

    /// Record a fault.
    pub fn fault(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// A copy of what has been recorded so far.
    pub fn snapshot(&self) -> History {
        self.lock().clone()
    }
}
