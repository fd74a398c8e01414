//! The conformance checks of lease sets (semaphores, read/write locks,
//! elections), run by [`crate::testsuite::run_all`] on every store that has
//! them. Each check uses sets of its own, named after the run's prefix.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep, timeout};

use crate::leaseset::{LeaseSets, PermitAsk, PermitGrant, RW_LIMIT, SetKind};
use crate::{Fence, LockStore, Release, Renewal};

const LONG: Duration = Duration::from_secs(60);
const PATIENCE: Duration = Duration::from_secs(10);

type Store = Arc<dyn LockStore>;

fn sets(store: &Store) -> &dyn LeaseSets {
    store.lease_sets().expect("the store has lease sets")
}

fn name(prefix: &str, set: &str) -> String {
    format!("lock||conformance-{prefix}||{set}")
}

fn ask<'a>(owner: &'a str, weight: u32, limit: u32, ttl: Duration) -> PermitAsk<'a> {
    PermitAsk {
        owner,
        weight,
        limit,
        ttl,
        value: "",
        intent: None,
    }
}

async fn acquire(store: &Store, kind: SetKind, key: &str, ask: PermitAsk<'_>) -> PermitGrant {
    sets(store)
        .permit_acquire(kind, key, ask)
        .await
        .unwrap_or_else(|err| panic!("permit_acquire({key}, {}) failed: {err}", ask.owner))
}

fn fence_of(grant: PermitGrant) -> Fence {
    match grant {
        PermitGrant::Acquired { fence } => fence,
        other => panic!("expected a permit, got {other:?}"),
    }
}

async fn release(store: &Store, kind: SetKind, key: &str, owner: &str, fence: Fence) -> Release {
    sets(store)
        .permit_release(kind, key, owner, fence)
        .await
        .unwrap_or_else(|err| panic!("permit_release({key}, {owner}) failed: {err}"))
}

/// Every lease-set check, one after another.
pub(crate) async fn run(store: Store, prefix: &str) {
    let checks: Vec<(&str, CheckFn)> = vec![
        ("sets_limit_and_tokens", |s, p| {
            Box::pin(limit_and_tokens(s, p))
        }),
        ("sets_limit_is_declared_once", |s, p| {
            Box::pin(limit_is_declared_once(s, p))
        }),
        ("sets_weights", |s, p| Box::pin(weights(s, p))),
        ("sets_readers_and_writers", |s, p| {
            Box::pin(readers_and_writers(s, p))
        }),
        ("sets_owner_and_token_checks", |s, p| {
            Box::pin(owner_and_token_checks(s, p))
        }),
        ("sets_expiry_frees_permits", |s, p| {
            Box::pin(expiry_frees_permits(s, p))
        }),
        ("sets_racing_clients", |s, p| Box::pin(racing_clients(s, p))),
        ("sets_force_release", |s, p| Box::pin(force_release(s, p))),
        ("sets_watch", |s, p| Box::pin(watch(s, p))),
        ("sets_kinds_are_apart", |s, p| {
            Box::pin(kinds_are_apart(s, p))
        }),
    ];
    for (check, run) in checks {
        eprintln!("conformance: {check}");
        run(store.clone(), format!("{prefix}-{check}")).await;
    }
}

type CheckFn = fn(Store, String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A semaphore of 3 grants 3 permits and refuses a fourth; each permit has
/// a token greater than every earlier one.
async fn limit_and_tokens(store: Store, prefix: String) {
    let k = name(&prefix, "sem");
    let kind = SetKind::Semaphore;
    let mut last = 0;
    let mut held = Vec::new();
    for owner in ["a", "b", "c"] {
        let fence = fence_of(acquire(&store, kind, &k, ask(owner, 1, 3, LONG)).await);
        assert!(fence > last, "token {fence} after {last}");
        last = fence;
        held.push((owner, fence));
    }
    assert_eq!(
        acquire(&store, kind, &k, ask("d", 1, 3, LONG)).await,
        PermitGrant::Busy
    );
    let view = sets(&store).permit_status(kind, &k).await.unwrap().unwrap();
    assert_eq!((view.limit, view.held(), view.permits.len()), (3, 3, 3));
    let (owner, fence) = held.remove(0);
    assert_eq!(
        release(&store, kind, &k, owner, fence).await,
        Release::Released
    );
    let fence = fence_of(acquire(&store, kind, &k, ask("d", 1, 3, LONG)).await);
    assert!(fence > last);
    held.push(("d", fence));
    for (owner, fence) in held {
        assert_eq!(
            release(&store, kind, &k, owner, fence).await,
            Release::Released
        );
    }
    assert!(
        sets(&store)
            .permit_status(kind, &k)
            .await
            .unwrap()
            .is_none()
    );
}

/// The first acquirer declares the limit; another is refused while any
/// permit is held, and may be declared again once the set is empty.
async fn limit_is_declared_once(store: Store, prefix: String) {
    let k = name(&prefix, "sem");
    let kind = SetKind::Semaphore;
    let fence = fence_of(acquire(&store, kind, &k, ask("a", 1, 3, LONG)).await);
    assert_eq!(
        acquire(&store, kind, &k, ask("b", 1, 5, LONG)).await,
        PermitGrant::LimitMismatch { limit: 3 }
    );
    assert_eq!(
        release(&store, kind, &k, "a", fence).await,
        Release::Released
    );
    let fence = fence_of(acquire(&store, kind, &k, ask("b", 1, 5, LONG)).await);
    let view = sets(&store).permit_status(kind, &k).await.unwrap().unwrap();
    assert_eq!(view.limit, 5);
    release(&store, kind, &k, "b", fence).await;
}

/// Permits of several units fit by weight.
async fn weights(store: Store, prefix: String) {
    let k = name(&prefix, "sem");
    let kind = SetKind::Semaphore;
    let three = fence_of(acquire(&store, kind, &k, ask("a", 3, 5, LONG)).await);
    assert_eq!(
        acquire(&store, kind, &k, ask("b", 3, 5, LONG)).await,
        PermitGrant::Busy
    );
    let two = fence_of(acquire(&store, kind, &k, ask("b", 2, 5, LONG)).await);
    assert_eq!(
        acquire(&store, kind, &k, ask("c", 1, 5, LONG)).await,
        PermitGrant::Busy
    );
    release(&store, kind, &k, "a", three).await;
    release(&store, kind, &k, "b", two).await;
}

/// Readers share, a writer is alone, and a waiting writer's intent keeps
/// new readers out until it is served.
async fn readers_and_writers(store: Store, prefix: String) {
    let k = name(&prefix, "rw");
    let kind = SetKind::RwLock;
    let read = |owner| ask(owner, 1, RW_LIMIT, LONG);
    let r1 = fence_of(acquire(&store, kind, &k, read("r1")).await);
    let r2 = fence_of(acquire(&store, kind, &k, read("r2")).await);
    let mut write = ask("w", RW_LIMIT, RW_LIMIT, LONG);
    write.intent = Some(LONG);
    assert_eq!(acquire(&store, kind, &k, write).await, PermitGrant::Busy);
    // The writer waits: a new reader is turned away.
    assert_eq!(
        acquire(&store, kind, &k, read("r3")).await,
        PermitGrant::Busy
    );
    let view = sets(&store).permit_status(kind, &k).await.unwrap().unwrap();
    assert_eq!(view.waiting, vec![RW_LIMIT]);
    release(&store, kind, &k, "r1", r1).await;
    release(&store, kind, &k, "r2", r2).await;
    let w = fence_of(acquire(&store, kind, &k, write).await);
    assert!(w > r2);
    // Served, the writer's intent is gone; readers wait for the writer.
    let view = sets(&store).permit_status(kind, &k).await.unwrap().unwrap();
    assert!(view.waiting.is_empty());
    assert_eq!(
        acquire(&store, kind, &k, read("r3")).await,
        PermitGrant::Busy
    );
    release(&store, kind, &k, "w", w).await;
    let r3 = fence_of(acquire(&store, kind, &k, read("r3")).await);
    release(&store, kind, &k, "r3", r3).await;

    // An intent that is withdrawn, or runs out, lets readers in again.
    let r4 = fence_of(acquire(&store, kind, &k, read("r4")).await);
    assert_eq!(acquire(&store, kind, &k, write).await, PermitGrant::Busy);
    sets(&store).permit_withdraw(kind, &k, "w").await.unwrap();
    let r5 = fence_of(acquire(&store, kind, &k, read("r5")).await);
    let mut brief = write;
    brief.intent = Some(Duration::from_secs(1));
    assert_eq!(acquire(&store, kind, &k, brief).await, PermitGrant::Busy);
    let deadline = Instant::now() + PATIENCE;
    let r6 = loop {
        if let PermitGrant::Acquired { fence } = acquire(&store, kind, &k, read("r6")).await {
            break fence;
        }
        assert!(Instant::now() < deadline, "an intent never ran out");
        sleep(Duration::from_millis(100)).await;
    };
    for (owner, fence) in [("r4", r4), ("r5", r5), ("r6", r6)] {
        release(&store, kind, &k, owner, fence).await;
    }
}

/// Release, renew and update need the permit's owner and token.
async fn owner_and_token_checks(store: Store, prefix: String) {
    let k = name(&prefix, "election");
    let kind = SetKind::Election;
    let mut leader = ask("a", 1, 1, LONG);
    leader.value = "10.0.0.1";
    let fence = fence_of(acquire(&store, kind, &k, leader).await);
    let s = sets(&store);
    assert_eq!(
        s.permit_release(kind, &k, "b", fence).await.unwrap(),
        Release::HeldByOther
    );
    assert_eq!(
        s.permit_release(kind, &k, "a", fence + 1).await.unwrap(),
        Release::NotFound
    );
    assert_eq!(
        s.permit_renew(kind, &k, "b", fence, LONG).await.unwrap(),
        Renewal::HeldByOther
    );
    assert_eq!(
        s.permit_renew(kind, &k, "a", fence, LONG).await.unwrap(),
        Renewal::Renewed { fence }
    );
    assert_eq!(
        s.permit_update(kind, &k, "b", fence, "x").await.unwrap(),
        Renewal::HeldByOther
    );
    assert_eq!(
        s.permit_update(kind, &k, "a", fence, "10.0.0.2")
            .await
            .unwrap(),
        Renewal::Renewed { fence }
    );
    let view = s.permit_status(kind, &k).await.unwrap().unwrap();
    assert_eq!(view.permits.len(), 1);
    assert_eq!(
        (
            view.permits[0].owner.as_str(),
            view.permits[0].value.as_str()
        ),
        ("a", "10.0.0.2")
    );
    assert!(view.permits[0].remaining <= LONG);
    assert_eq!(
        s.permit_release(kind, &k, "a", fence).await.unwrap(),
        Release::Released
    );
    assert_eq!(
        s.permit_release(kind, &k, "a", fence).await.unwrap(),
        Release::NotFound
    );
    assert_eq!(
        s.permit_renew(kind, &k, "a", fence, LONG).await.unwrap(),
        Renewal::NotFound
    );
}

/// A permit whose lease runs out frees its part of the limit, and its
/// owner has nothing left to renew.
async fn expiry_frees_permits(store: Store, prefix: String) {
    let k = name(&prefix, "sem");
    let kind = SetKind::Semaphore;
    let ttl = Duration::from_secs(1);
    let granted_at = Instant::now();
    let first = fence_of(acquire(&store, kind, &k, ask("a", 1, 1, ttl)).await);
    let deadline = Instant::now() + PATIENCE;
    let second = loop {
        if let PermitGrant::Acquired { fence } =
            acquire(&store, kind, &k, ask("b", 1, 1, LONG)).await
        {
            assert!(
                granted_at.elapsed() >= ttl,
                "a second permit {:?} after a {ttl:?} lease",
                granted_at.elapsed()
            );
            break fence;
        }
        assert!(Instant::now() < deadline, "the permit never expired");
        sleep(Duration::from_millis(100)).await;
    };
    assert!(second > first);
    assert_eq!(
        sets(&store)
            .permit_renew(kind, &k, "a", first, LONG)
            .await
            .unwrap(),
        Renewal::NotFound
    );
    release(&store, kind, &k, "b", second).await;
}

/// Many clients racing for a semaphore of 3: exactly 3 win.
async fn racing_clients(store: Store, prefix: String) {
    for round in 0..3 {
        let k = name(&prefix, &format!("race-{round}"));
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                let k = k.clone();
                tokio::spawn(async move {
                    let owner = format!("owner-{i}");
                    let grant = sets(&store)
                        .permit_acquire(SetKind::Semaphore, &k, ask(&owner, 1, 3, LONG))
                        .await
                        .expect("permit_acquire failed");
                    (owner, grant)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            if let (owner, PermitGrant::Acquired { fence }) = task.await.expect("task panicked") {
                winners.push((owner, fence));
            }
        }
        assert_eq!(winners.len(), 3, "round {round}: {winners:?}");
        for (owner, fence) in winners {
            release(&store, SetKind::Semaphore, &k, &owner, fence).await;
        }
    }
}

/// An administrator removes one permit by token, or all of them.
async fn force_release(store: Store, prefix: String) {
    let k = name(&prefix, "sem");
    let kind = SetKind::Semaphore;
    let a = fence_of(acquire(&store, kind, &k, ask("a", 1, 3, LONG)).await);
    let b = fence_of(acquire(&store, kind, &k, ask("b", 1, 3, LONG)).await);
    let c = fence_of(acquire(&store, kind, &k, ask("c", 1, 3, LONG)).await);
    let s = sets(&store);
    let removed = s.permit_force_release(kind, &k, Some(b)).await.unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!((removed[0].owner.as_str(), removed[0].fence), ("b", b));
    assert_eq!(
        s.permit_release(kind, &k, "b", b).await.unwrap(),
        Release::NotFound
    );
    let removed = s.permit_force_release(kind, &k, None).await.unwrap();
    let mut fences: Vec<Fence> = removed.iter().map(|p| p.fence).collect();
    fences.sort_unstable();
    assert_eq!(fences, vec![a, c]);
    assert!(s.permit_status(kind, &k).await.unwrap().is_none());
    assert!(
        s.permit_force_release(kind, &k, None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A watcher hears of a grant, an update, a release and an expiry.
async fn watch(store: Store, prefix: String) {
    let k = name(&prefix, "election");
    let kind = SetKind::Election;
    let s = sets(&store);
    let heard = |what: &'static str, watch| async move {
        timeout(PATIENCE, watch)
            .await
            .unwrap_or_else(|_| panic!("no notification of {what}"));
    };
    let w = s.watch_set(kind, &k).await.unwrap();
    let fence = fence_of(acquire(&store, kind, &k, ask("a", 1, 1, LONG)).await);
    heard("a grant", w).await;
    let w = s.watch_set(kind, &k).await.unwrap();
    s.permit_update(kind, &k, "a", fence, "v2").await.unwrap();
    heard("an update", w).await;
    let w = s.watch_set(kind, &k).await.unwrap();
    release(&store, kind, &k, "a", fence).await;
    heard("a release", w).await;
    fence_of(acquire(&store, kind, &k, ask("b", 1, 1, Duration::from_secs(1))).await);
    let w = s.watch_set(kind, &k).await.unwrap();
    heard("an expiry", w).await;
}

/// Sets of different kinds, and plain locks, with one name are apart.
async fn kinds_are_apart(store: Store, prefix: String) {
    let k = name(&prefix, "same");
    let mut held = Vec::new();
    for kind in SetKind::ALL {
        let fence = fence_of(acquire(&store, kind, &k, ask("a", 1, 1, LONG)).await);
        held.push((kind, fence));
    }
    let plain = store
        .try_lock(&k, "b", LONG)
        .await
        .expect("try_lock failed");
    assert!(
        matches!(plain, crate::Acquire::Acquired { .. }),
        "{plain:?}"
    );
    assert_eq!(store.unlock(&k, "b").await.unwrap(), Release::Released);
    for (kind, fence) in held {
        release(&store, kind, &k, "a", fence).await;
    }
}
