//! The service layer on its own, over the in-memory store (a real store,
//! in this process), mostly under Tokio's paused clock so that leases,
//! renewals, caps and waits run in virtual time.

use std::sync::Arc;
use std::time::Duration;

use leasehold_core::manifest::Component;
use leasehold_core::metadata::Metadata;
use leasehold_core::{Acquire as Acquired, ForceRelease, Release as Released};
use leasehold_stores::StoreContext;
use tokio::time::{Instant, sleep, timeout};

use super::dapr::{TryLock, Unlock};
use super::hold::{Hold, HoldEvent, HoldStream};
use super::locks::{Acquire, ForceUnlock, List, Release, Renew, RenewOutcome};
use super::{LeaseAsk, Limits, LockService, Operation, Origin, Rejected};
use crate::auth::Token;
use crate::error::{ApiError, ErrorKind};
use crate::observe::metrics::Transport;

const SECOND: Duration = Duration::from_secs(1);

async fn service_with(limits: Limits, metadata: &[(&str, &str)]) -> Arc<LockService> {
    let mut pairs = vec![("restartGuard", "false")];
    pairs.extend_from_slice(metadata);
    let component = Component {
        name: "locks".to_owned(),
        type_name: "lock.in-memory".to_owned(),
        version: "v1".to_owned(),
        init_timeout: None,
        ignore_errors: false,
        metadata: Metadata::from_pairs(pairs),
        source: "<test>".into(),
    };
    let cx = StoreContext {
        app_id: "app".to_owned(),
        data_dir: std::env::temp_dir(),
    };
    let service = LockService::build("app", &[component], &cx, limits)
        .await
        .expect("in-memory store")
        .with_admin_token(Token::new("admin"));
    Arc::new(service)
}

async fn service() -> Arc<LockService> {
    service_with(Limits::default(), &[]).await
}

fn try_lock(resource_id: &str, owner: &str, seconds: i64) -> TryLock {
    TryLock {
        store: "locks".into(),
        resource_id: resource_id.into(),
        owner: owner.into(),
        expiry: LeaseAsk::Seconds(seconds),
    }
}

fn acquire(resource_id: &str, owner: &str, lease_ms: u64, wait: Duration) -> Acquire {
    Acquire {
        store: "locks".into(),
        resource_id: resource_id.into(),
        owner: owner.into(),
        lease: LeaseAsk::Millis(lease_ms),
        wait,
    }
}

fn hold(resource_id: &str, owner: &str, lease_ms: u64) -> Hold {
    Hold {
        store: "locks".into(),
        resource_id: resource_id.into(),
        owner: owner.into(),
        lease: LeaseAsk::Millis(lease_ms),
        wait: Duration::ZERO,
    }
}

fn refusal<T: std::fmt::Debug>(result: Result<T, ApiError>) -> (ErrorKind, String) {
    let err = result.expect_err("refused");
    (err.kind, err.message)
}

/// The end of a stream: why the grant was lost.
fn lost(event: Result<HoldEvent, ApiError>) -> (crate::observe::metrics::LossReason, String) {
    match event {
        Ok(HoldEvent::Lost { reason, message }) => (reason, message),
        other => panic!("expected the end of the stream, got {other:?}"),
    }
}

async fn next(events: &mut HoldStream) -> Result<HoldEvent, ApiError> {
    timeout(Duration::from_secs(3600), events.recv())
        .await
        .expect("an event within the hour")
        .expect("the stream is open")
}

#[tokio::test(start_paused = true)]
async fn dapr_checks_run_in_daprds_order() {
    let service = service().await;
    let long = "r".repeat(2000);
    // The expiry comes first, before anything else is looked at.
    let (kind, message) = refusal(try_lock("", "", 0).run(&service).await);
    assert_eq!(kind, ErrorKind::MalformedRequest);
    assert_eq!(
        message,
        "ExpiryInSeconds is not positive in lock store locks"
    );
    let (_, message) = refusal(try_lock("", "o", 5).run(&service).await);
    assert_eq!(message, "ResourceId is empty in lock store locks");
    let (_, message) = refusal(try_lock("r", "", 5).run(&service).await);
    assert_eq!(message, "LockOwner is empty in lock store locks");
    // A store that does not exist wins over leasehold's own limits.
    let mut missing = try_lock(&long, "o", 5);
    missing.store = "nope".into();
    let (kind, message) = refusal(missing.run(&service).await);
    assert_eq!(kind, ErrorKind::LockStoreNotFound);
    assert_eq!(message, "lock store nope not found");
    // Then the limits, then the lease.
    let (_, message) = refusal(try_lock(&long, "o", 5).run(&service).await);
    assert!(message.starts_with("ResourceId is 2000 bytes"), "{message}");
    let (_, message) = refusal(try_lock("r", "o", 90_000).run(&service).await);
    assert_eq!(
        message,
        "ExpiryInSeconds 90000 is more than the maximum lease of 86400 seconds in lock store locks"
    );
    // A key daprd cannot build is a lock failure, as in daprd.
    let (kind, message) = refusal(try_lock("a||b", "o", 5).run(&service).await);
    assert_eq!(kind, ErrorKind::TryLockFailed);
    assert!(message.contains("can't contain '||'"), "{message}");
    // Nothing was taken by any of it.
    assert!(matches!(
        try_lock("r", "o", 5).run(&service).await,
        Ok(Acquired::Acquired { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn no_store_configured_is_daprs_error() {
    let service = Arc::new(LockService::new("app", Vec::new(), Limits::default()));
    let (kind, _) = refusal(try_lock("r", "o", 5).run(&service).await);
    assert_eq!(kind, ErrorKind::LockStoreNotConfigured);
    let unlock = Unlock {
        store: "locks".into(),
        resource_id: "r".into(),
        owner: "o".into(),
    };
    assert_eq!(
        refusal(unlock.run(&service).await).0,
        ErrorKind::LockStoreNotConfigured
    );
}

#[tokio::test(start_paused = true)]
async fn leases_run_out_and_tokens_grow() {
    let service = service().await;
    let Ok(Acquired::Acquired { fence: first }) = try_lock("r", "a", 2).run(&service).await else {
        panic!("not granted");
    };
    assert_eq!(
        try_lock("r", "b", 2).run(&service).await.unwrap(),
        Acquired::HeldByOther
    );
    sleep(2 * SECOND + Duration::from_millis(1)).await;
    let Ok(Acquired::Acquired { fence: second }) = try_lock("r", "b", 2).run(&service).await else {
        panic!("not granted after the lease ran out");
    };
    assert!(second > first);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_first_come_first_served() {
    let service = service().await;
    assert!(matches!(
        acquire("r", "holder", 10_000, Duration::ZERO)
            .run(&service)
            .await,
        Ok(Acquired::Acquired { .. })
    ));
    let mut waiting = Vec::new();
    for owner in ["w1", "w2", "w3"] {
        let waiter = service.clone();
        waiting.push(tokio::spawn(async move {
            let outcome = acquire("r", owner, 10_000, Duration::from_secs(60))
                .run(&waiter)
                .await;
            (owner, outcome)
        }));
        // Each joins the queue before the next one starts.
        while service.waiting() < waiting.len() {
            tokio::task::yield_now().await;
        }
    }
    let release = |owner: &str| Release {
        store: "locks".into(),
        resource_id: "r".into(),
        owner: owner.into(),
        grant: None,
    };
    assert_eq!(
        release("holder").run(&service).await.unwrap(),
        Released::Released
    );
    let mut order = Vec::new();
    for task in waiting {
        let (owner, outcome) = task.await.unwrap();
        assert!(matches!(outcome, Ok(Acquired::Acquired { .. })), "{owner}");
        order.push(owner);
        release(owner).run(&service).await.unwrap();
    }
    assert_eq!(order, ["w1", "w2", "w3"]);
    assert_eq!(service.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_wait_runs_out_without_the_lock() {
    let service = service().await;
    acquire("r", "holder", 60_000, Duration::ZERO)
        .run(&service)
        .await
        .unwrap();
    let started = Instant::now();
    let outcome = acquire("r", "late", 1000, Duration::from_secs(5))
        .run(&service)
        .await
        .unwrap();
    assert_eq!(outcome, Acquired::HeldByOther);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(service.waiting(), 0, "the waiter left the queue");
}

#[tokio::test(start_paused = true)]
async fn renewals_stop_at_the_hold_cap() {
    let service = service_with(Limits::default(), &[("maxHoldSeconds", "10")]).await;
    acquire("r", "a", 4000, Duration::ZERO)
        .run(&service)
        .await
        .unwrap();
    let renew = || Renew {
        store: "locks".into(),
        resource_id: "r".into(),
        owner: "a".into(),
        lease: LeaseAsk::Millis(4000),
    };
    sleep(3 * SECOND).await;
    // Another owner is refused, not capped.
    let mut other = renew();
    other.owner = "b".into();
    assert_eq!(
        other.run(&service).await.unwrap(),
        RenewOutcome::HeldByOther
    );
    assert!(matches!(
        renew().run(&service).await.unwrap(),
        RenewOutcome::Renewed { lease, .. } if lease == Duration::from_secs(4)
    ));
    sleep(Duration::from_millis(3500)).await;
    // 6.5 s in: 3.5 s are left of the 10 s cap, so the lease is cut to them.
    assert!(matches!(
        renew().run(&service).await.unwrap(),
        RenewOutcome::Renewed { lease, .. } if lease == Duration::from_millis(3500)
    ));
    sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        renew().run(&service).await.unwrap(),
        RenewOutcome::HoldLimitReached
    );
}

#[tokio::test(start_paused = true)]
async fn a_hold_renews_until_closed_then_releases_its_grant() {
    let service = service().await;
    let mut events = hold("r", "a", 3000).run(&service).await.unwrap();
    let HoldEvent::Acquired { fence, lease } = next(&mut events).await.unwrap() else {
        panic!("not acquired");
    };
    assert_eq!(lease, Duration::from_secs(3));
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(
            next(&mut events).await.unwrap(),
            HoldEvent::Renewed { lease }
        );
    }
    // Renewals come every third of the lease.
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(service.holding(), 1);
    drop(events);
    // The task releases the grant once it sees the stream closed.
    let deadline = Instant::now() + SECOND;
    loop {
        if let Ok(Acquired::Acquired { fence: next }) = try_lock("r", "b", 5).run(&service).await {
            assert!(next > fence);
            break;
        }
        assert!(Instant::now() < deadline, "never released");
        sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_hold_is_told_of_a_force_unlock_with_its_reason() {
    let service = service().await;
    let mut events = hold("r", "a", 3000).run(&service).await.unwrap();
    let HoldEvent::Acquired { fence, .. } = next(&mut events).await.unwrap() else {
        panic!("not acquired");
    };
    let force = ForceUnlock {
        store: "locks".into(),
        resource_id: "r".into(),
        reason: "stuck".into(),
    };
    let admin = Origin::new(Transport::Grpc, Some(b"admin"));
    let outcome = service.serve(admin, Ok(force)).await.unwrap();
    assert_eq!(
        outcome,
        ForceRelease::Released {
            owner: "a".into(),
            fence
        }
    );
    let (reason, message) = lost(next(&mut events).await);
    assert_eq!(reason, crate::observe::metrics::LossReason::ForceUnlocked);
    assert_eq!(message, "force-unlocked by an administrator: stuck");
}

#[tokio::test(start_paused = true)]
async fn a_hold_ends_before_its_capped_lease_runs_out() {
    let service = service_with(Limits::default(), &[("maxHoldSeconds", "5")]).await;
    let started = Instant::now();
    let mut events = hold("r", "a", 3000).run(&service).await.unwrap();
    assert!(matches!(
        next(&mut events).await,
        Ok(HoldEvent::Acquired { .. })
    ));
    let lost = loop {
        match next(&mut events).await {
            Ok(HoldEvent::Renewed { .. }) => {}
            Ok(HoldEvent::Lost { message, .. }) => break message,
            other => panic!("{other:?}"),
        }
    };
    assert!(lost.contains("maximum hold time"), "{}", lost);
    // The cap is 5 s; the holder hears a margin (300 ms) before it.
    let told = started.elapsed();
    assert!(told < Duration::from_secs(5), "{told:?}");
    assert!(told >= Duration::from_millis(4700), "{told:?}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_holds_and_releases_their_grants() {
    let service = service().await;
    let mut events = hold("r", "a", 3000).run(&service).await.unwrap();
    assert!(matches!(
        next(&mut events).await,
        Ok(HoldEvent::Acquired { .. })
    ));
    service.begin_shutdown();
    let (_, message) = lost(next(&mut events).await);
    assert_eq!(message, "the sidecar is shutting down");
    timeout(SECOND, service.close(SECOND))
        .await
        .expect("close waits for the hold task, briefly");
    assert!(matches!(
        try_lock("r", "b", 5).run(&service).await,
        Ok(Acquired::Acquired { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn admin_operations_need_the_admin_token() {
    let service = service().await;
    let list = || List {
        store: "locks".into(),
        prefix: String::new(),
        page_token: String::new(),
        page_size: 0,
    };
    for presented in [None, Some(&b"wrong"[..])] {
        let origin = Origin::new(Transport::Http, presented);
        let (kind, _) = refusal(service.serve(origin, Ok(list())).await);
        assert_eq!(kind, ErrorKind::Forbidden);
    }
    // Refused at the door even when the request itself is malformed.
    let rejected: Result<List, Rejected> = Err(Rejected::new(
        "locks",
        ApiError::new(ErrorKind::MalformedRequest, "bad"),
    ));
    let (kind, _) = refusal(
        service
            .serve(Origin::new(Transport::Http, None), rejected)
            .await,
    );
    assert_eq!(kind, ErrorKind::Forbidden);
    let origin = Origin::new(Transport::Http, Some(b"admin"));
    assert!(service.serve(origin, Ok(list())).await.is_ok());
}

mod primitives {
    use std::marker::PhantomData;

    use leasehold_core::leaseset::RW_LIMIT;

    use super::*;
    use crate::service::sets::{
        Election, Leader, Observe, PermitAcquire, PermitHold, PermitRelease, PermitStatus,
        Proclaim, RwLock, Semaphore,
    };

    fn permit<P>(
        name: &str,
        owner: &str,
        weight: u32,
        limit: u32,
        wait: Duration,
    ) -> PermitAcquire<P> {
        PermitAcquire {
            store: "locks".into(),
            name: name.into(),
            owner: owner.into(),
            weight,
            limit,
            value: String::new(),
            lease: LeaseAsk::Millis(10_000),
            wait,
            primitive: PhantomData,
        }
    }

    fn fence(outcome: Result<Acquired, ApiError>) -> u64 {
        match outcome {
            Ok(Acquired::Acquired { fence }) => fence,
            other => panic!("not acquired: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_semaphore_grants_up_to_its_limit_and_refuses_another_limit() {
        let service = service().await;
        let a = fence(
            permit::<Semaphore>("s", "a", 2, 3, Duration::ZERO)
                .run(&service)
                .await,
        );
        let b = fence(
            permit::<Semaphore>("s", "b", 1, 3, Duration::ZERO)
                .run(&service)
                .await,
        );
        assert!(b > a);
        assert_eq!(
            permit::<Semaphore>("s", "c", 1, 3, Duration::ZERO)
                .run(&service)
                .await
                .unwrap(),
            Acquired::HeldByOther
        );
        let (kind, message) = refusal(
            permit::<Semaphore>("s", "c", 1, 5, Duration::ZERO)
                .run(&service)
                .await,
        );
        assert_eq!(kind, ErrorKind::LimitMismatch);
        assert!(message.contains("limit of 3"), "{message}");
        // Bad input names the field and changes nothing.
        for (weight, limit, needle) in [(1, 0, "limit must be at least 1"), (4, 3, "permits 4")] {
            let (kind, message) = refusal(
                permit::<Semaphore>("s", "d", weight, limit, Duration::ZERO)
                    .run(&service)
                    .await,
            );
            assert_eq!(kind, ErrorKind::MalformedRequest);
            assert!(message.contains(needle), "{message}");
        }
        let status = PermitStatus::<Semaphore> {
            store: "locks".into(),
            name: "s".into(),
            primitive: PhantomData,
        };
        let view = status.run(&service).await.unwrap().view.unwrap();
        assert_eq!((view.limit, view.held()), (3, 3));
        // A waiter gets the permit when one comes back.
        let waiter = {
            let service = service.clone();
            tokio::spawn(async move {
                permit::<Semaphore>("s", "w", 1, 3, Duration::from_secs(30))
                    .run(&service)
                    .await
            })
        };
        while service.waiting() == 0 {
            tokio::task::yield_now().await;
        }
        let release = PermitRelease::<Semaphore> {
            store: "locks".into(),
            name: "s".into(),
            owner: "b".into(),
            fence: b,
            primitive: PhantomData,
        };
        assert_eq!(release.run(&service).await.unwrap(), Released::Released);
        assert!(fence(waiter.await.unwrap()) > b);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_writer_keeps_new_readers_out() {
        let service = service().await;
        let read = |owner: &'static str| permit::<RwLock>("r", owner, 1, RW_LIMIT, Duration::ZERO);
        let r1 = fence(read("r1").run(&service).await);
        let writer = {
            let service = service.clone();
            tokio::spawn(async move {
                permit::<RwLock>("r", "w", RW_LIMIT, RW_LIMIT, Duration::from_secs(60))
                    .run(&service)
                    .await
            })
        };
        // Once the writer waits (its intent is in the store), a new reader
        // is turned away, even through another path than the queue.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if read("r2").run(&service).await.unwrap() == Acquired::HeldByOther {
                break;
            }
            assert!(Instant::now() < deadline, "the writer never waited");
            tokio::task::yield_now().await;
            sleep(Duration::from_millis(1)).await;
        }
        let release = PermitRelease::<RwLock> {
            store: "locks".into(),
            name: "r".into(),
            owner: "r1".into(),
            fence: r1,
            primitive: PhantomData,
        };
        release.run(&service).await.unwrap();
        let w = fence(writer.await.unwrap());
        assert!(w > r1);
        assert_eq!(
            read("r3").run(&service).await.unwrap(),
            Acquired::HeldByOther
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_election_elects_proclaims_resigns_and_is_observed() {
        let service = service().await;
        let observe = Observe {
            store: "locks".into(),
            election: "e".into(),
        };
        let mut changes = observe.run(&service).await.unwrap();
        assert_eq!(changes.recv().await.unwrap().unwrap(), None);

        let mut campaign = permit::<Election>("e", "c1", 1, 1, Duration::ZERO);
        campaign.value = "10.0.0.1".into();
        let mut first = PermitHold(campaign).run(&service).await.unwrap();
        let HoldEvent::Acquired { fence: term, .. } = next(&mut first).await.unwrap() else {
            panic!("not elected");
        };
        let seen = changes.recv().await.unwrap().unwrap().unwrap();
        assert_eq!(
            (seen.owner.as_str(), seen.value.as_str(), seen.fence),
            ("c1", "10.0.0.1", term)
        );

        // A second candidate waits; the leader proclaims a new value.
        let mut second = PermitHold(permit::<Election>("e", "c2", 1, 1, Duration::from_secs(60)))
            .run(&service)
            .await
            .unwrap();
        let proclaim = Proclaim {
            store: "locks".into(),
            election: "e".into(),
            candidate: "c1".into(),
            term,
            value: "10.0.0.2".into(),
        };
        assert!(proclaim.run(&service).await.unwrap());
        let seen = changes.recv().await.unwrap().unwrap().unwrap();
        assert_eq!((seen.value.as_str(), seen.fence), ("10.0.0.2", term));
        let leader = Leader {
            store: "locks".into(),
            election: "e".into(),
        };
        assert_eq!(leader.run(&service).await.unwrap().unwrap().owner, "c1");

        // Resigning ends the leader's stream with the reason, and the next
        // candidate is elected with a greater term.
        let resign = PermitRelease::<Election> {
            store: "locks".into(),
            name: "e".into(),
            owner: "c1".into(),
            fence: term,
            primitive: PhantomData,
        };
        assert_eq!(resign.run(&service).await.unwrap(), Released::Released);
        loop {
            match next(&mut first).await.unwrap() {
                HoldEvent::Renewed { .. } => {}
                HoldEvent::Lost { reason, message } => {
                    assert_eq!(reason, crate::observe::metrics::LossReason::Released);
                    assert_eq!(message, "resigned");
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        let HoldEvent::Acquired {
            fence: next_term, ..
        } = next(&mut second).await.unwrap()
        else {
            panic!("the second candidate was not elected");
        };
        assert!(next_term > term);
        let mut seen = changes.recv().await.unwrap().unwrap();
        // The observer may see the election empty between the two.
        if seen.is_none() {
            seen = changes.recv().await.unwrap().unwrap();
        }
        assert_eq!(seen.unwrap().owner, "c2");
    }

    #[tokio::test(start_paused = true)]
    async fn dapr_try_lock_waits_when_the_component_asks() {
        let service = service_with(Limits::default(), &[("tryLockWaitMs", "5000")]).await;
        try_lock("r", "a", 2).run(&service).await.unwrap();
        let started = Instant::now();
        // The lease (2 s) runs out within the wait (5 s): granted then.
        assert!(matches!(
            try_lock("r", "b", 2).run(&service).await,
            Ok(Acquired::Acquired { .. })
        ));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
    }
}
