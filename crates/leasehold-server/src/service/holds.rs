//! What the sidecar remembers about held locks: when each grant began (so
//! renewals can be capped by the store's maximum hold time), and which Hold
//! streams are open (so force-unlock can tell their holders first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use leasehold_core::Fence;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::observe::metrics::LossReason;

/// A key in one store.
type HoldKey = (Arc<str>, String);

/// Why a Hold stream was ended from outside (a force-unlock, a release of
/// its grant by another request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Eviction {
    /// For the metrics and the client.
    pub(crate) reason: LossReason,
    /// For people.
    pub(crate) message: String,
}

/// An open Hold stream: the grant it holds, where to send its eviction,
/// and whether a force-unlock of its key is under way.
#[derive(Debug)]
struct Holder {
    fence: Fence,
    evict: oneshot::Sender<Eviction>,
    /// The eviction a request under way will send if the store confirms.
    evicting: Option<Eviction>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each operation leaves the maps consistent, so a poisoned lock is safe
    // to use.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// When each held lock was first seen, so renewals can be capped.
#[derive(Debug, Default)]
pub(crate) struct HoldClock {
    inner: Mutex<HashMap<HoldKey, (Fence, Instant)>>,
    /// Size after the last sweep; the map is swept when it doubles.
    swept_at: Mutex<usize>,
}

impl HoldClock {
    /// Record that `fence` was granted on `key` now. Entries older than
    /// `horizon` (no hold lasts that long) are swept now and then.
    pub(crate) fn started(&self, store: &Arc<str>, key: &str, fence: Fence, horizon: Duration) {
        let mut map = lock(&self.inner);
        map.insert((store.clone(), key.to_owned()), (fence, Instant::now()));
        let mut swept_at = lock(&self.swept_at);
        if map.len() > (*swept_at).max(1024) * 2 {
            let now = Instant::now();
            map.retain(|_, (_, since)| now.duration_since(*since) < horizon);
            *swept_at = map.len();
        }
    }

    /// When `fence` on `key` started; recorded now if unknown (a lock taken
    /// through the Dapr API or another sidecar is capped from its first
    /// renewal here).
    pub(crate) fn since(&self, store: &Arc<str>, key: &str, fence: Fence) -> Instant {
        let mut map = lock(&self.inner);
        let entry = map
            .entry((store.clone(), key.to_owned()))
            .or_insert((fence, Instant::now()));
        if entry.0 != fence {
            *entry = (fence, Instant::now());
        }
        entry.1
    }

    /// The grant on record for `key`, and when it began.
    pub(crate) fn get(&self, store: &Arc<str>, key: &str) -> Option<(Fence, Instant)> {
        lock(&self.inner)
            .get(&(store.clone(), key.to_owned()))
            .copied()
    }

    /// Forget `key` (it was released).
    pub(crate) fn forget(&self, store: &Arc<str>, key: &str) {
        lock(&self.inner).remove(&(store.clone(), key.to_owned()));
    }
}

/// Open Hold streams, so force-unlock can end the evicted holder's stream.
///
/// A force-unlock (or a release by another request) marks the streams of
/// its key with the eviction it means before it asks the store, and tells
/// the evicted one only once the store has confirmed. A stream that finds
/// its lease gone while the mark is on reports the marked eviction at once
/// (it knows the grant is gone, and must not wait to say so), rather than a
/// mysterious expiry.
#[derive(Debug, Default)]
pub(crate) struct HoldRegistry {
    inner: Mutex<HashMap<HoldKey, Vec<Holder>>>,
}

impl HoldRegistry {
    /// Register a stream holding `fence` on `key`; the receiver hears why
    /// it was evicted.
    pub(crate) fn register(
        &self,
        store: &Arc<str>,
        key: &str,
        fence: Fence,
    ) -> oneshot::Receiver<Eviction> {
        let (evict, receiver) = oneshot::channel();
        let mut map = lock(&self.inner);
        let holders = map.entry((store.clone(), key.to_owned())).or_default();
        holders.retain(|h| !h.evict.is_closed());
        holders.push(Holder {
            fence,
            evict,
            evicting: None,
        });
        receiver
    }

    /// Mark the streams on `key` with the eviction a request under way
    /// means (`None`: unmark them, the request failed).
    pub(crate) fn mark_evicting(&self, store: &Arc<str>, key: &str, eviction: Option<&Eviction>) {
        if let Some(holders) = lock(&self.inner).get_mut(&(store.clone(), key.to_owned())) {
            for holder in holders {
                holder.evicting = eviction.cloned();
            }
        }
    }

    /// The eviction under way for the grant of `fence` on `key`, if any.
    pub(crate) fn evicting(&self, store: &Arc<str>, key: &str, fence: Fence) -> Option<Eviction> {
        lock(&self.inner)
            .get(&(store.clone(), key.to_owned()))?
            .iter()
            .find(|h| h.fence == fence)?
            .evicting
            .clone()
    }

    /// The store confirmed that the grant of `fence` on `key` is gone: end
    /// its streams with `eviction`, and unmark the others.
    pub(crate) fn evict(&self, store: &Arc<str>, key: &str, fence: Fence, eviction: &Eviction) {
        let mut map = lock(&self.inner);
        let id = (store.clone(), key.to_owned());
        let Some(holders) = map.get_mut(&id) else {
            return;
        };
        let (evicted, mut kept): (Vec<_>, Vec<_>) = std::mem::take(holders)
            .into_iter()
            .partition(|h| h.fence == fence);
        if kept.is_empty() {
            map.remove(&id);
        } else {
            for holder in &mut kept {
                holder.evicting = None;
            }
            *map.get_mut(&id).expect("present above") = kept;
        }
        // Sent before the lock is let go: a stream that no longer finds
        // its mark finds the verdict instead.
        for holder in evicted {
            let _ = holder.evict.send(eviction.clone());
        }
    }

    /// Drop the closed streams of `key`.
    pub(crate) fn unregister(&self, store: &Arc<str>, key: &str) {
        let mut map = lock(&self.inner);
        let id = (store.clone(), key.to_owned());
        if let Some(holders) = map.get_mut(&id) {
            holders.retain(|h| !h.evict.is_closed());
            if holders.is_empty() {
                map.remove(&id);
            }
        }
    }

    /// Open streams over every key.
    pub(crate) fn total(&self) -> usize {
        lock(&self.inner).values().map(Vec::len).sum()
    }
}
