//! What the sidecar remembers about held locks: when each grant began (so
//! renewals can be capped by the store's maximum hold time), and which Hold
//! streams are open (so force-unlock can tell their holders first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use leasehold_core::Fence;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A key in one store.
type HoldKey = (Arc<str>, String);

/// An open Hold stream: the grant it holds, where to send its eviction,
/// and whether a force-unlock of its key is under way.
#[derive(Debug)]
struct Holder {
    fence: Fence,
    evict: oneshot::Sender<String>,
    evicting: bool,
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
/// A force-unlock marks the streams of its key before it asks the store,
/// and tells the evicted one only once the store has confirmed. A stream
/// that finds its lease gone while the mark is on waits for that verdict,
/// so it reports the force-unlock, not a mysterious expiry.
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
    ) -> oneshot::Receiver<String> {
        let (evict, receiver) = oneshot::channel();
        let mut map = lock(&self.inner);
        let holders = map.entry((store.clone(), key.to_owned())).or_default();
        holders.retain(|h| !h.evict.is_closed());
        holders.push(Holder {
            fence,
            evict,
            evicting: false,
        });
        receiver
    }

    /// Mark (or unmark) the streams on `key`: a force-unlock is under way.
    pub(crate) fn mark_evicting(&self, store: &Arc<str>, key: &str, evicting: bool) {
        if let Some(holders) = lock(&self.inner).get_mut(&(store.clone(), key.to_owned())) {
            for holder in holders {
                holder.evicting = evicting;
            }
        }
    }

    /// Whether a force-unlock of the grant of `fence` on `key` is under way.
    pub(crate) fn is_evicting(&self, store: &Arc<str>, key: &str, fence: Fence) -> bool {
        lock(&self.inner)
            .get(&(store.clone(), key.to_owned()))
            .is_some_and(|holders| holders.iter().any(|h| h.fence == fence && h.evicting))
    }

    /// The store confirmed that the grant of `fence` on `key` is broken:
    /// end its streams with `reason`, and unmark the others.
    pub(crate) fn evict(&self, store: &Arc<str>, key: &str, fence: Fence, reason: &str) {
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
                holder.evicting = false;
            }
            *map.get_mut(&id).expect("present above") = kept;
        }
        // Sent before the lock is let go: a stream that no longer finds
        // its mark finds the verdict instead.
        for holder in evicted {
            let _ = holder.evict.send(reason.to_owned());
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
