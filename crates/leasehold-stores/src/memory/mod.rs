//! `lock.in-memory`: the embedded store.
//!
//! Locks live in this process, in shards chosen by a hash of the key so that
//! unrelated keys never wait on one mutex. Each shard keeps its leases in a
//! hash map and, beside it, an ordered index of deadlines:
//!
//! * an acquire checks the holder's deadline against the monotonic clock
//!   itself, so an expired lease never blocks anyone, whether or not it has
//!   been swept;
//! * the reaper pops only what has expired from the front of each index, so
//!   its cost follows what expires, never the number of locks held.
//!
//! Mutexes are `std` ones held for a few map operations and never across an
//! `.await`. Fencing tokens come from one counter for the whole store, so
//! they grow per key and across keys, and the restart guard (see
//! docs/stores/in-memory.md) keeps them growing across restarts.

mod guard;
mod sets;

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use leasehold_core::leaseset::{LeaseSets, Permit, PermitAsk, PermitGrant, SetKind, SetView};
use leasehold_core::manifest::Component;
use leasehold_core::metadata::MetadataReader;
use leasehold_core::{
    Acquire, Capabilities, Consistency, Fence, ForceRelease, LockInfo, LockStore, Release,
    ReleaseWait, Renewal, StoreError,
};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::StoreContext;
use guard::RestartGuard;

/// How often the reaper looks at the front of each shard's deadline index.
const REAP_INTERVAL: Duration = Duration::from_millis(50);

/// The reaper removes at most this many leases per shard lock, so a wave of
/// expiries never holds a shard for long.
const REAP_BATCH: usize = 1024;

/// Configuration of `lock.in-memory`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Number of shards (a power of two).
    pub shards: usize,
    /// Where the restart guard keeps its file; `None` turns the guard off.
    pub guard_file: Option<PathBuf>,
}

impl Config {
    /// A store with the guard off, for tests and embedding.
    pub fn ephemeral() -> Self {
        Config {
            shards: default_shards(),
            guard_file: None,
        }
    }

    /// Read the component's metadata (no I/O).
    ///
    /// * `restartGuard` (bool, default true): keep the restart guard file;
    /// * `dataDir` (path, default the sidecar's `--data-dir`): where it lives;
    /// * `shards` (power of two, default 16 × cores, at least 64).
    pub fn from_component(component: &Component, cx: &StoreContext) -> Result<Self, Vec<String>> {
        let mut reader = MetadataReader::new(&component.metadata);
        let guard_on = reader.bool("restartGuard").unwrap_or(true);
        let data_dir = reader
            .string("dataDir")
            .map(PathBuf::from)
            .unwrap_or_else(|| cx.data_dir.clone());
        let shards = reader
            .number::<usize>("shards")
            .unwrap_or_else(default_shards);
        if !shards.is_power_of_two() || shards > 1 << 16 {
            reader.error(
                "shards",
                format!("{shards} is not a power of two between 1 and 65536"),
            );
        }
        reader
            .finish()
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let app = if cx.app_id.is_empty() {
            "default"
        } else {
            &cx.app_id
        };
        Ok(Config {
            shards,
            guard_file: guard_on.then(|| data_dir.join(format!("{app}.{}.guard", component.name))),
        })
    }
}

fn default_shards() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores * 16).next_power_of_two().max(64)
}

#[derive(Debug)]
struct Lease {
    owner: Box<str>,
    fence: Fence,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct Shard {
    leases: HashMap<Arc<str>, Lease>,
    /// (deadline, fence) → key, for the reaper. Fences are unique, so the
    /// pair is a unique key even when deadlines tie.
    deadlines: BTreeMap<(Instant, Fence), Arc<str>>,
    /// Release watchers by key.
    watchers: HashMap<Arc<str>, Vec<oneshot::Sender<()>>>,
}

impl Shard {
    /// Remove the lease on `key` and wake whoever watches it.
    fn remove(&mut self, key: &str) -> Option<Lease> {
        let lease = self.leases.remove(key)?;
        self.deadlines.remove(&(lease.deadline, lease.fence));
        self.notify(key);
        Some(lease)
    }

    fn notify(&mut self, key: &str) {
        if let Some(senders) = self.watchers.remove(key) {
            for sender in senders {
                let _ = sender.send(());
            }
        }
    }

    /// The live lease on `key`, dropping it first if it has expired.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Lease> {
        if self
            .leases
            .get(key)
            .is_some_and(|lease| lease.deadline <= now)
        {
            self.remove(key);
        }
        self.leases.get_mut(key)
    }
}

/// The embedded lock store.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Arc<Inner>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// The last token issued.
    last_fence: AtomicU64,
    guard: Option<RestartGuard>,
    /// Monotonic instant before which grants are refused (restart guard).
    refuse_until: Option<Instant>,
    /// Semaphores, read/write locks and elections.
    sets: sets::Sets,
}

impl MemoryStore {
    /// Open the store; reads the restart guard file if there is one. Must be
    /// called inside a Tokio runtime (it starts the reaper).
    pub fn open(config: Config) -> Result<Self, StoreError> {
        let (guard, next_fence, refuse_until) = match &config.guard_file {
            None => (None, 1, None),
            Some(path) => {
                let (guard, recovery) =
                    RestartGuard::open(path).map_err(|err| StoreError::Backend(err.to_string()))?;
                let refuse_until = guard::remaining(recovery.refuse_until_ms).map(|wait| {
                    tracing::warn!(
                        file = %path.display(),
                        wait_ms = wait.as_millis() as u64,
                        "leases granted before the last shutdown may still be live; refusing grants until they have run out"
                    );
                    Instant::now() + wait
                });
                (Some(guard), recovery.next_token, refuse_until)
            }
        };
        let shards = config.shards.max(1).next_power_of_two();
        let inner = Arc::new(Inner {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            last_fence: AtomicU64::new(next_fence - 1),
            guard,
            refuse_until,
            sets: sets::Sets::default(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(reap(Arc::downgrade(&inner), stop.clone()));
        Ok(MemoryStore { inner, stop })
    }

    /// The number of live leases (counted shard by shard; for benchmarks).
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| lock(s).leases.len()).sum()
    }

    /// Whether no lease is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding a shard cannot leave a lease half-written (each
    // operation mutates the maps in one step), so a poisoned shard is used
    // as it is.
    shard.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Inner {
    fn shard(&self, key: &str) -> &Mutex<Shard> {
        let index = self.hasher.hash_one(key) as usize & (self.shards.len() - 1);
        &self.shards[index]
    }

    fn check_recovering(&self) -> Result<(), StoreError> {
        match self.refuse_until {
            Some(until) => {
                let now = Instant::now();
                if now < until {
                    Err(StoreError::Recovering(until - now))
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    /// Extend the guard's marks to cover a lease of `ttl` and one more token;
    /// done before the grant so the file is always ahead of what was granted.
    fn cover(&self, ttl: Duration) -> Result<(), StoreError> {
        if let Some(guard) = &self.guard {
            let next = self.last_fence.load(Ordering::Relaxed) + 1;
            guard
                .cover_token(next)
                .and_then(|()| guard.cover_deadline(SystemTime::now() + ttl))
                .map_err(|err| StoreError::Backend(err.to_string()))?;
        }
        Ok(())
    }

    fn next_fence(&self) -> Fence {
        self.last_fence.fetch_add(1, Ordering::Relaxed) + 1
    }
}

#[async_trait]
impl LockStore for MemoryStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fencing: true,
            renew: true,
            release_notify: true,
            admin: true,
            durable: false,
            consistency: Consistency::Linearizable,
        }
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<Acquire, StoreError> {
        let inner = &self.inner;
        inner.check_recovering()?;
        inner.cover(ttl)?;
        let now = Instant::now();
        let mut shard = lock(inner.shard(key));
        if shard.live(key, now).is_some() {
            return Ok(Acquire::HeldByOther);
        }
        // Taken under the shard lock: grants on one key get increasing
        // fences in the order they happen.
        let fence = inner.next_fence();
        let deadline = now + ttl;
        let key: Arc<str> = Arc::from(key);
        shard.deadlines.insert((deadline, fence), key.clone());
        shard.leases.insert(
            key,
            Lease {
                owner: owner.into(),
                fence,
                deadline,
            },
        );
        Ok(Acquire::Acquired { fence })
    }

    async fn release(
        &self,
        key: &str,
        owner: &str,
        grant: Option<Fence>,
    ) -> Result<Release, StoreError> {
        let mut shard = lock(self.inner.shard(key));
        match shard.live(key, Instant::now()) {
            None => Ok(Release::NotFound),
            Some(lease)
                if &*lease.owner != owner || grant.is_some_and(|fence| fence != lease.fence) =>
            {
                Ok(Release::HeldByOther)
            }
            Some(_) => {
                shard.remove(key);
                Ok(Release::Released)
            }
        }
    }

    async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Result<Renewal, StoreError> {
        self.inner.cover(ttl)?;
        let now = Instant::now();
        let mut guard = lock(self.inner.shard(key));
        let shard = &mut *guard;
        let Some(lease) = shard.live(key, now) else {
            return Ok(Renewal::NotFound);
        };
        if &*lease.owner != owner {
            return Ok(Renewal::HeldByOther);
        }
        let old = (lease.deadline, lease.fence);
        lease.deadline = now + ttl;
        let new = (lease.deadline, lease.fence);
        let fence = lease.fence;
        if let Some(key) = shard.deadlines.remove(&old) {
            shard.deadlines.insert(new, key);
        }
        Ok(Renewal::Renewed { fence })
    }

    async fn status(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        let now = Instant::now();
        let mut shard = lock(self.inner.shard(key));
        Ok(shard.live(key, now).map(|lease| LockInfo {
            key: key.to_owned(),
            owner: lease.owner.to_string(),
            fence: lease.fence,
            remaining: lease.deadline - now,
        }))
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LockInfo>, StoreError> {
        // Keys are spread over shards by hash, so a page gathers from every
        // shard and sorts. This is an admin call, not a hot path; its cost
        // grows with the number of matching locks.
        let now = Instant::now();
        let mut found = Vec::new();
        for shard in self.inner.shards.iter() {
            let shard = lock(shard);
            for (key, lease) in &shard.leases {
                if lease.deadline > now
                    && key.starts_with(prefix)
                    && after.is_none_or(|after| &**key > after)
                {
                    found.push(LockInfo {
                        key: key.to_string(),
                        owner: lease.owner.to_string(),
                        fence: lease.fence,
                        remaining: lease.deadline - now,
                    });
                }
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        found.truncate(limit);
        Ok(found)
    }

    async fn force_unlock(&self, key: &str) -> Result<ForceRelease, StoreError> {
        let mut shard = lock(self.inner.shard(key));
        if shard.live(key, Instant::now()).is_none() {
            return Ok(ForceRelease::NotFound);
        }
        let lease = shard.remove(key).expect("a live lease was just found");
        Ok(ForceRelease::Released {
            owner: lease.owner.into(),
            fence: lease.fence,
        })
    }

    async fn watch_release(&self, key: &str) -> Result<ReleaseWait, StoreError> {
        let (sender, receiver) = oneshot::channel();
        {
            let mut shard = lock(self.inner.shard(key));
            let watchers = shard.watchers.entry(Arc::from(key)).or_default();
            // Watchers that went away are dropped here, so an abandoned key
            // does not collect them.
            watchers.retain(|sender| !sender.is_closed());
            watchers.push(sender);
        }
        Ok(Box::pin(async move {
            let _ = receiver.await;
        }))
    }

    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn held_count(&self) -> Option<u64> {
        // Counted shard by shard, including leases expired but not yet
        // reaped (at most one reaper interval old).
        Some(self.len() as u64)
    }

    fn lease_sets(&self) -> Option<&dyn LeaseSets> {
        Some(self)
    }

    async fn close(&self) {
        self.stop.cancel();
        if let Some(guard) = &self.inner.guard {
            let now = Instant::now();
            let latest = self
                .inner
                .shards
                .iter()
                .filter_map(|shard| lock(shard).deadlines.keys().next_back().map(|(d, _)| *d))
                .chain(self.inner.sets.latest_deadline())
                // A store still waiting out a crash before it must pass the
                // rest of that wait on, or a quick restart would forget it.
                .chain(self.inner.refuse_until)
                .max()
                .filter(|deadline| *deadline > now)
                .map(|deadline| SystemTime::now() + (deadline - now));
            guard.close(latest, self.inner.last_fence.load(Ordering::Relaxed));
        }
    }
}

#[async_trait]
impl LeaseSets for MemoryStore {
    async fn permit_acquire(
        &self,
        kind: SetKind,
        key: &str,
        ask: PermitAsk<'_>,
    ) -> Result<PermitGrant, StoreError> {
        let inner = &self.inner;
        inner.check_recovering()?;
        inner.cover(ask.ttl)?;
        Ok(inner.sets.acquire(kind, key, ask, || inner.next_fence()))
    }

    async fn permit_release(
        &self,
        kind: SetKind,
        key: &str,
        owner: &str,
        fence: Fence,
    ) -> Result<Release, StoreError> {
        Ok(self.inner.sets.release(kind, key, owner, fence))
    }

    async fn permit_renew(
        &self,
        kind: SetKind,
        key: &str,
        owner: &str,
        fence: Fence,
        ttl: Duration,
    ) -> Result<Renewal, StoreError> {
        self.inner.cover(ttl)?;
        Ok(self.inner.sets.renew(kind, key, owner, fence, ttl))
    }

    async fn permit_update(
        &self,
        kind: SetKind,
        key: &str,
        owner: &str,
        fence: Fence,
        value: &str,
    ) -> Result<Renewal, StoreError> {
        Ok(self.inner.sets.update(kind, key, owner, fence, value))
    }

    async fn permit_withdraw(
        &self,
        kind: SetKind,
        key: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        self.inner.sets.withdraw(kind, key, owner);
        Ok(())
    }

    async fn permit_status(&self, kind: SetKind, key: &str) -> Result<Option<SetView>, StoreError> {
        Ok(self.inner.sets.status(kind, key))
    }

    async fn permit_force_release(
        &self,
        kind: SetKind,
        key: &str,
        fence: Option<Fence>,
    ) -> Result<Vec<Permit>, StoreError> {
        Ok(self.inner.sets.force_release(kind, key, fence))
    }

    async fn watch_set(&self, kind: SetKind, key: &str) -> Result<ReleaseWait, StoreError> {
        Ok(self.inner.sets.watch(kind, key))
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Remove expired leases from the front of each shard's deadline index.
async fn reap(inner: std::sync::Weak<Inner>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(REAP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(inner) = inner.upgrade() else { return };
        let now = Instant::now();
        inner.sets.reap(now);
        for shard in inner.shards.iter() {
            // A large wave: let go of the shard between batches.
            while reap_batch(shard, now) {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Remove up to one batch of leases expired by `now`; true if more remain.
fn reap_batch(shard: &Mutex<Shard>, now: Instant) -> bool {
    let mut shard = lock(shard);
    for _ in 0..REAP_BATCH {
        let Some((&(deadline, _), _)) = shard.deadlines.first_key_value() else {
            return false;
        };
        if deadline > now {
            return false;
        }
        let (_, key) = shard.deadlines.pop_first().expect("just seen");
        shard.leases.remove(&key);
        shard.notify(&key);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expiry_uses_the_monotonic_clock_and_the_reaper_frees_memory() {
        let store = MemoryStore::open(Config::ephemeral()).unwrap();
        let ttl = Duration::from_secs(5);
        assert!(matches!(
            store.try_lock("k", "a", ttl).await.unwrap(),
            Acquire::Acquired { .. }
        ));
        tokio::time::advance(Duration::from_millis(4999)).await;
        assert_eq!(
            store.try_lock("k", "b", ttl).await.unwrap(),
            Acquire::HeldByOther
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        // Expired exactly at the deadline, before any reaping.
        assert!(matches!(
            store.try_lock("k", "b", ttl).await.unwrap(),
            Acquire::Acquired { .. }
        ));
        assert_eq!(store.len(), 1);
        tokio::time::advance(ttl + REAP_INTERVAL * 2).await;
        tokio::task::yield_now().await;
        assert_eq!(store.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wave_of_expiries_is_reaped_in_batches() {
        let store = MemoryStore::open(Config {
            shards: 1,
            guard_file: None,
        })
        .unwrap();
        for i in 0..(REAP_BATCH * 3 + 7) {
            store
                .try_lock(&format!("k{i}"), "o", Duration::from_secs(1))
                .await
                .unwrap();
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(store.len(), 0);
    }

    #[tokio::test]
    async fn restart_guard_refuses_grants_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            shards: 4,
            guard_file: Some(dir.path().join("s.guard")),
        };
        let first = MemoryStore::open(config.clone()).unwrap();
        let granted = first.try_lock("k", "a", Duration::from_secs(30)).await;
        assert!(matches!(granted, Ok(Acquire::Acquired { .. })));
        // A crash: no close(). The file lock goes with the handle.
        drop(first);
        let second = MemoryStore::open(config.clone()).unwrap();
        let err = second
            .try_lock("k", "b", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Recovering(wait) if wait > Duration::from_secs(25)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn clean_shutdown_without_leases_starts_at_once_and_tokens_continue() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            shards: 4,
            guard_file: Some(dir.path().join("s.guard")),
        };
        let first = MemoryStore::open(config.clone()).unwrap();
        let fence = match first
            .try_lock("k", "a", Duration::from_secs(30))
            .await
            .unwrap()
        {
            Acquire::Acquired { fence } => fence,
            other => panic!("{other:?}"),
        };
        assert_eq!(first.unlock("k", "a").await.unwrap(), Release::Released);
        first.close().await;
        drop(first);
        let second = MemoryStore::open(config).unwrap();
        match second
            .try_lock("k", "b", Duration::from_secs(1))
            .await
            .unwrap()
        {
            Acquire::Acquired { fence: next } => assert!(next > fence),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_clean_stop_during_recovery_keeps_the_inherited_wait() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            shards: 4,
            guard_file: Some(dir.path().join("s.guard")),
        };
        let first = MemoryStore::open(config.clone()).unwrap();
        first
            .try_lock("k", "a", Duration::from_secs(30))
            .await
            .unwrap();
        drop(first);
        let second = MemoryStore::open(config.clone()).unwrap();
        second.close().await;
        drop(second);
        let third = MemoryStore::open(config).unwrap();
        let err = third
            .try_lock("k", "b", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Recovering(wait) if wait > Duration::from_secs(20)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn clean_shutdown_with_live_leases_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            shards: 4,
            guard_file: Some(dir.path().join("s.guard")),
        };
        let first = MemoryStore::open(config.clone()).unwrap();
        first
            .try_lock("k", "a", Duration::from_secs(20))
            .await
            .unwrap();
        first.close().await;
        drop(first);
        let second = MemoryStore::open(config).unwrap();
        let err = second
            .try_lock("other", "b", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Recovering(wait) if wait > Duration::from_secs(15) && wait <= Duration::from_secs(20)),
            "{err}"
        );
    }
}
