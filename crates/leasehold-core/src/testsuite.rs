//! The store conformance suite: one set of checks that every [`LockStore`]
//! passes before it is called done.
//!
//! A store's own tests build the store against a real backend and call
//! [`run_all`] with a key prefix of their own, so that runs never collide.
//! Checks that need a capability the store does not declare are skipped, and
//! a store that declares a capability must pass its checks.
//!
//! ```ignore
//! #[tokio::test]
//! async fn conformance() {
//!     let store = connect_my_store().await;
//!     leasehold_core::testsuite::run_all(store, "conformance").await;
//! }
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep, timeout};

use crate::{Acquire, ForceRelease, LockStore, Release, Renewal};

/// A lease long enough never to run out during a check.
const LONG: Duration = Duration::from_secs(60);

/// How long a check waits for something the store must do by itself
/// (expiry, a release notification) before it fails. Generous, because the
/// suite runs on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(10);

type Store = Arc<dyn LockStore>;

fn key(prefix: &str, name: &str) -> String {
    format!("lock||conformance-{prefix}||{name}")
}

async fn acquire(store: &Store, key: &str, owner: &str, ttl: Duration) -> Acquire {
    store
        .try_lock(key, owner, ttl)
        .await
        .unwrap_or_else(|err| panic!("try_lock({key}, {owner}) failed: {err}"))
}

async fn release(store: &Store, key: &str, owner: &str) -> Release {
    store
        .unlock(key, owner)
        .await
        .unwrap_or_else(|err| panic!("unlock({key}, {owner}) failed: {err}"))
}

fn fence_of(outcome: Acquire) -> u64 {
    match outcome {
        Acquire::Acquired { fence } => fence,
        Acquire::HeldByOther => panic!("expected the lock to be acquired"),
    }
}

/// Run every check against `store`. Panics, naming the check, at the first
/// failure.
pub async fn run_all(store: Store, prefix: &str) {
    let prefix = format!("{prefix}-{}", std::process::id());
    let checks: Vec<(&str, CheckFn)> = vec![
        ("acquire_and_release", |s, p| {
            Box::pin(acquire_and_release(s, p))
        }),
        ("not_reentrant", |s, p| Box::pin(not_reentrant(s, p))),
        ("unlock_grant_spares_a_later_grant", |s, p| {
            Box::pin(unlock_grant_spares_a_later_grant(s, p))
        }),
        ("wrong_owner", |s, p| Box::pin(wrong_owner(s, p))),
        ("missing_lock", |s, p| Box::pin(missing_lock(s, p))),
        ("independent_keys", |s, p| Box::pin(independent_keys(s, p))),
        ("expiry", |s, p| Box::pin(expiry(s, p))),
        ("racing_clients", |s, p| Box::pin(racing_clients(s, p))),
        ("cancellation", |s, p| Box::pin(cancellation(s, p))),
        ("fencing_monotonic", |s, p| {
            Box::pin(fencing_monotonic(s, p))
        }),
        ("renewal", |s, p| Box::pin(renewal(s, p))),
        ("status_and_force_unlock", |s, p| {
            Box::pin(status_and_force_unlock(s, p))
        }),
        ("release_notification", |s, p| {
            Box::pin(release_notification(s, p))
        }),
        ("health", |s, p| Box::pin(health(s, p))),
    ];
    for (name, check) in checks {
        eprintln!("conformance: {name}");
        check(store.clone(), format!("{prefix}-{name}")).await;
    }
    if store.lease_sets().is_some() {
        crate::setsuite::run(store, &prefix).await;
    }
}

type CheckFn = fn(Store, String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Acquire, contend, release, acquire again.
pub async fn acquire_and_release(store: Store, prefix: String) {
    let k = key(&prefix, "a");
    let first = fence_of(acquire(&store, &k, "owner-1", LONG).await);
    assert_eq!(
        acquire(&store, &k, "owner-2", LONG).await,
        Acquire::HeldByOther
    );
    assert_eq!(release(&store, &k, "owner-1").await, Release::Released);
    let second = fence_of(acquire(&store, &k, "owner-2", LONG).await);
    assert!(second > first, "fence must grow: {first} then {second}");
    assert_eq!(release(&store, &k, "owner-2").await, Release::Released);
}

/// The same owner asking again is refused, and its lease is not extended.
/// Releasing one grant by its token leaves a later grant of the same owner.
pub async fn unlock_grant_spares_a_later_grant(store: Store, prefix: String) {
    let k = key(&prefix, "grant");
    let first = fence_of(store.try_lock(&k, "owner", LONG).await.unwrap());
    assert_eq!(store.unlock(&k, "owner").await.unwrap(), Release::Released);
    assert_eq!(
        store.unlock_grant(&k, "owner", first).await.unwrap(),
        Release::NotFound
    );
    let second = fence_of(store.try_lock(&k, "owner", LONG).await.unwrap());
    assert!(second > first, "{first} then {second}");
    assert_eq!(
        store.unlock_grant(&k, "owner", first).await.unwrap(),
        Release::HeldByOther,
        "a cleanup of the first grant ended the second"
    );
    assert_eq!(
        store.unlock_grant(&k, "other", second).await.unwrap(),
        Release::HeldByOther
    );
    assert_eq!(
        store.try_lock(&k, "another", LONG).await.unwrap(),
        Acquire::HeldByOther
    );
    assert_eq!(
        store.unlock_grant(&k, "owner", second).await.unwrap(),
        Release::Released
    );
    assert_eq!(
        store.unlock_grant(&k, "owner", second).await.unwrap(),
        Release::NotFound
    );
}

pub async fn not_reentrant(store: Store, prefix: String) {
    let k = key(&prefix, "a");
    fence_of(acquire(&store, &k, "owner", LONG).await);
    assert_eq!(
        acquire(&store, &k, "owner", LONG).await,
        Acquire::HeldByOther
    );
    assert_eq!(release(&store, &k, "owner").await, Release::Released);
}

/// Another owner cannot release a lease, and nothing changes when it tries.
pub async fn wrong_owner(store: Store, prefix: String) {
    let k = key(&prefix, "a");
    fence_of(acquire(&store, &k, "owner", LONG).await);
    assert_eq!(release(&store, &k, "intruder").await, Release::HeldByOther);
    assert_eq!(
        acquire(&store, &k, "intruder", LONG).await,
        Acquire::HeldByOther
    );
    assert_eq!(release(&store, &k, "owner").await, Release::Released);
    assert_eq!(release(&store, &k, "owner").await, Release::NotFound);
}

/// Releasing what was never taken says so.
pub async fn missing_lock(store: Store, prefix: String) {
    let k = key(&prefix, "never-taken");
    assert_eq!(release(&store, &k, "owner").await, Release::NotFound);
}

/// Keys do not interfere, including keys that are prefixes of each other.
pub async fn independent_keys(store: Store, prefix: String) {
    let a = key(&prefix, "a");
    let ab = key(&prefix, "ab");
    fence_of(acquire(&store, &a, "owner-1", LONG).await);
    fence_of(acquire(&store, &ab, "owner-2", LONG).await);
    assert_eq!(release(&store, &a, "owner-1").await, Release::Released);
    assert_eq!(release(&store, &ab, "owner-2").await, Release::Released);
}

/// A lease runs out by itself: not before its time, and soon after.
pub async fn expiry(store: Store, prefix: String) {
    let k = key(&prefix, "a");
    let ttl = Duration::from_secs(1);
    let granted_at = Instant::now();
    let first = fence_of(acquire(&store, &k, "owner-1", ttl).await);
    let outcome = acquire(&store, &k, "owner-2", ttl).await;
    if granted_at.elapsed() < ttl {
        assert_eq!(
            outcome,
            Acquire::HeldByOther,
            "taken before the lease ran out"
        );
    }
    let deadline = Instant::now() + PATIENCE;
    let second = loop {
        if let Acquire::Acquired { fence } = acquire(&store, &k, "owner-2", LONG).await {
            assert!(
                granted_at.elapsed() >= ttl,
                "a second owner got in {:?} after a {ttl:?} lease",
                granted_at.elapsed()
            );
            break fence;
        }
        assert!(Instant::now() < deadline, "lease never expired");
        sleep(Duration::from_millis(100)).await;
    };
    assert!(
        second > first,
        "fence must grow across expiry: {first} then {second}"
    );
    // The expired owner has nothing left to release.
    assert_eq!(release(&store, &k, "owner-1").await, Release::HeldByOther);
    assert_eq!(release(&store, &k, "owner-2").await, Release::Released);
}

/// Many clients racing for one key: exactly one wins.
pub async fn racing_clients(store: Store, prefix: String) {
    for round in 0..5 {
        let k = key(&prefix, &format!("race-{round}"));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                let k = k.clone();
                tokio::spawn(async move { store.try_lock(&k, &format!("owner-{i}"), LONG).await })
            })
            .collect();
        let mut winners = 0;
        for task in tasks {
            if let Acquire::Acquired { .. } =
                task.await.expect("task panicked").expect("try_lock failed")
            {
                winners += 1;
            }
        }
        assert_eq!(
            winners, 1,
            "round {round}: {winners} owners acquired one key"
        );
    }
}

/// A call dropped half-way leaves either a whole lock or none, never a
/// broken one: the owner can release it or it was never taken, and the key
/// works normally afterwards.
pub async fn cancellation(store: Store, prefix: String) {
    for attempt in 0..10u64 {
        let k = key(&prefix, &format!("c-{attempt}"));
        let owner = "owner";
        // Give up after a varying, very short time.
        let _ = timeout(
            Duration::from_micros(attempt * 50),
            store.try_lock(&k, owner, LONG),
        )
        .await;
        let outcome = release(&store, &k, owner).await;
        assert!(
            matches!(outcome, Release::Released | Release::NotFound),
            "after a dropped acquire, unlock said {outcome:?}"
        );
        fence_of(acquire(&store, &k, "next", LONG).await);
        assert_eq!(release(&store, &k, "next").await, Release::Released);
    }
}

/// Tokens only grow, per key and across keys of one store.
pub async fn fencing_monotonic(store: Store, prefix: String) {
    if !store.capabilities().fencing {
        eprintln!("conformance: store declares no fencing; skipped");
        return;
    }
    let mut last = 0;
    for round in 0..20 {
        let k = key(&prefix, &format!("f-{}", round % 3));
        let fence = fence_of(acquire(&store, &k, "owner", LONG).await);
        assert!(fence > last, "round {round}: fence {fence} after {last}");
        last = fence;
        assert_eq!(release(&store, &k, "owner").await, Release::Released);
    }
}

/// The owner extends its lease; nobody else can.
pub async fn renewal(store: Store, prefix: String) {
    if !store.capabilities().renew {
        eprintln!("conformance: store declares no renewal; skipped");
        return;
    }
    let k = key(&prefix, "a");
    let short = Duration::from_secs(2);
    let fence = fence_of(acquire(&store, &k, "owner", short).await);
    let renew = |owner: &'static str, ttl| {
        let store = store.clone();
        let k = k.clone();
        async move { store.renew(&k, owner, ttl).await.expect("renew failed") }
    };
    assert_eq!(renew("intruder", LONG).await, Renewal::HeldByOther);
    assert_eq!(renew("owner", LONG).await, Renewal::Renewed { fence });
    // Past the original lease, the renewed one still holds.
    sleep(short + Duration::from_millis(500)).await;
    assert_eq!(
        acquire(&store, &k, "intruder", LONG).await,
        Acquire::HeldByOther
    );
    assert_eq!(release(&store, &k, "owner").await, Release::Released);
    assert_eq!(renew("owner", LONG).await, Renewal::NotFound);
}

/// Status reports the holder; force-unlock evicts it and the fence moves on.
pub async fn status_and_force_unlock(store: Store, prefix: String) {
    if !store.capabilities().admin {
        eprintln!("conformance: store declares no admin operations; skipped");
        return;
    }
    let k = key(&prefix, "a");
    assert_eq!(store.status(&k).await.expect("status failed"), None);
    let fence = fence_of(acquire(&store, &k, "owner", LONG).await);
    let info = store
        .status(&k)
        .await
        .expect("status failed")
        .expect("no status for a held lock");
    assert_eq!(info.owner, "owner");
    assert_eq!(info.fence, fence);
    assert!(
        info.remaining <= LONG && info.remaining > LONG / 2,
        "remaining {:?}",
        info.remaining
    );

    let other = key(&prefix, "b");
    fence_of(acquire(&store, &other, "owner-b", LONG).await);
    let listed = store
        .list(&key(&prefix, ""), None, 10)
        .await
        .expect("list failed");
    let keys: Vec<_> = listed.iter().map(|info| info.key.as_str()).collect();
    assert_eq!(keys, [k.as_str(), other.as_str()]);
    let page = store
        .list(&key(&prefix, ""), Some(&k), 10)
        .await
        .expect("list failed");
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].key, other);

    assert_eq!(
        store.force_unlock(&k).await.expect("force_unlock failed"),
        ForceRelease::Released {
            owner: "owner".to_owned(),
            fence
        }
    );
    assert_eq!(
        store.force_unlock(&k).await.expect("force_unlock failed"),
        ForceRelease::NotFound
    );
    assert_eq!(release(&store, &k, "owner").await, Release::NotFound);
    let next = fence_of(acquire(&store, &k, "next", LONG).await);
    assert!(next > fence);
    assert_eq!(release(&store, &k, "next").await, Release::Released);
    assert_eq!(release(&store, &other, "owner-b").await, Release::Released);
}

/// A watcher hears of a release without polling.
pub async fn release_notification(store: Store, prefix: String) {
    if !store.capabilities().release_notify {
        eprintln!("conformance: store declares no release notification; skipped");
        return;
    }
    let k = key(&prefix, "a");
    fence_of(acquire(&store, &k, "owner", LONG).await);
    let watch = store.watch_release(&k).await.expect("watch failed");
    assert_eq!(release(&store, &k, "owner").await, Release::Released);
    timeout(PATIENCE, watch)
        .await
        .expect("no release notification");

    // An expiry is a release too.
    fence_of(acquire(&store, &k, "owner", Duration::from_secs(1)).await);
    let watch = store.watch_release(&k).await.expect("watch failed");
    timeout(PATIENCE, watch)
        .await
        .expect("no notification of an expiry");
    fence_of(acquire(&store, &k, "next", LONG).await);
    assert_eq!(release(&store, &k, "next").await, Release::Released);
}

/// The backend answers a health check.
pub async fn health(store: Store, _prefix: String) {
    store.health().await.expect("health check failed");
}
