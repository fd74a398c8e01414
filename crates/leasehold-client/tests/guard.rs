//! The client against an embedded server.

use std::time::Duration;

use leasehold_client::{Client, Config, Error, Released};
use leasehold_server::auth::{Auth, Token};
use leasehold_server::embedded::EmbeddedServer;
use leasehold_server::service::Limits;

#[tokio::test]
async fn guard_holds_renews_and_releases() {
    let server = EmbeddedServer::start().await.unwrap();
    let a = Client::connect(Config::new(server.grpc_endpoint()).with_owner("a"))
        .await
        .unwrap();
    let b = Client::connect(Config::new(server.grpc_endpoint()).with_owner("b"))
        .await
        .unwrap();
    let guard = a
        .lock(
            "lockstore",
            "job",
            Duration::from_millis(300),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(guard.owner(), "a");
    // Held well past several leases: the sidecar renews it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!guard.is_lost());
    assert!(
        b.try_lock("lockstore", "job", Duration::from_secs(1))
            .await
            .unwrap()
            .is_none()
    );
    let first = guard.fencing_token();
    guard.unlock().await.unwrap();
    let next = b
        .try_lock("lockstore", "job", Duration::from_secs(1))
        .await
        .unwrap()
        .expect("free after unlock");
    assert!(next.fencing_token() > first);
    // Dropping a guard releases too.
    drop(next);
    let again = a
        .lock(
            "lockstore",
            "job",
            Duration::from_secs(1),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(
        a.release("lockstore", "job", "nobody").await.unwrap(),
        Released::HeldByOther
    );
    drop(again);
}

#[tokio::test]
async fn loss_is_reported_and_unlock_says_so() {
    let auth = Auth {
        api: None,
        admin: Token::new("adm"),
    };
    let server = EmbeddedServer::start_with(auth, Limits::default())
        .await
        .unwrap();
    let config = Config::new(server.grpc_endpoint()).with_admin_token("adm");
    let client = Client::connect(config).await.unwrap();
    let guard = client
        .lock("lockstore", "job", Duration::from_secs(5), Duration::ZERO)
        .await
        .unwrap();
    let evicted = client
        .force_unlock("lockstore", "job", "maintenance")
        .await
        .unwrap();
    assert_eq!(
        evicted,
        Some((client.owner().to_owned(), guard.fencing_token()))
    );
    let reason = tokio::time::timeout(Duration::from_secs(10), guard.lost())
        .await
        .expect("loss not reported");
    assert!(reason.contains("force-unlocked"), "{reason}");
    assert!(matches!(guard.unlock().await, Err(Error::LeaseLost(_))));
}

#[tokio::test]
async fn a_wait_that_runs_out_is_an_error() {
    let server = EmbeddedServer::start().await.unwrap();
    let a = Client::connect(Config::new(server.grpc_endpoint()))
        .await
        .unwrap();
    let b = Client::connect(Config::new(server.grpc_endpoint()))
        .await
        .unwrap();
    let _held = a
        .lock("lockstore", "k", Duration::from_secs(5), Duration::ZERO)
        .await
        .unwrap();
    let err = b
        .lock(
            "lockstore",
            "k",
            Duration::from_secs(5),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotAcquired), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_stopped_sidecar_cannot_keep_a_guard_believing() {
    // The sidecar goes away under a held guard: renewals fail, and the
    // guard's own timer reports the loss before the lease could have run
    // out, counted from when the acquire was sent.
    let server = EmbeddedServer::start().await.unwrap();
    let client = Client::connect(Config::new(server.grpc_endpoint()))
        .await
        .unwrap();
    let lease = Duration::from_millis(900);
    let sent = tokio::time::Instant::now();
    let guard = client
        .lock("lockstore", "stall", lease, Duration::ZERO)
        .await
        .unwrap();
    drop(server);
    let reason = tokio::time::timeout(Duration::from_secs(10), guard.lost())
        .await
        .expect("loss not reported");
    assert!(
        reason.contains("could not be renewed") || reason.contains("expired"),
        "{reason}"
    );
    let _ = sent;
}

/// Two guards of one client share its owner name. When the first guard's
/// grant is released behind its back and the second guard gets the lock,
/// the first must learn it lost the lock (its renewals now reach the second
/// grant), and dropping it must not release the second grant.
#[tokio::test]
async fn a_guard_does_not_mistake_or_release_a_later_grant_of_its_owner() {
    let server = EmbeddedServer::start().await.unwrap();
    let a = Client::connect(Config::new(server.grpc_endpoint()).with_owner("a"))
        .await
        .unwrap();
    let b = Client::connect(Config::new(server.grpc_endpoint()).with_owner("b"))
        .await
        .unwrap();
    let lease = Duration::from_millis(600);
    let first = a
        .lock("lockstore", "shared", lease, Duration::ZERO)
        .await
        .unwrap();
    // Released by owner name, not through the guard (another task of the
    // same application, or an operator using the owner name).
    assert_eq!(
        a.release("lockstore", "shared", "a").await.unwrap(),
        Released::Released
    );
    let second = a
        .lock("lockstore", "shared", lease, Duration::ZERO)
        .await
        .unwrap();
    assert!(second.fencing_token() > first.fencing_token());

    let reason = tokio::time::timeout(Duration::from_secs(2), first.lost())
        .await
        .expect("the first guard never learned it lost the lock");
    assert!(reason.contains("granted again"), "{reason}");
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_lost());
    assert!(
        b.try_lock("lockstore", "shared", lease)
            .await
            .unwrap()
            .is_none(),
        "dropping the first guard released the second grant"
    );
    second.unlock().await.unwrap();
}

async fn client(server: &EmbeddedServer, owner: &str) -> Client {
    Client::connect(Config::new(server.grpc_endpoint()).with_owner(owner))
        .await
        .unwrap()
}

#[tokio::test]
async fn semaphore_guards_share_a_limit_and_renew() {
    let server = EmbeddedServer::start().await.unwrap();
    let lease = Duration::from_millis(300);
    let (a, b, c) = (
        client(&server, "a").await,
        client(&server, "b").await,
        client(&server, "c").await,
    );
    let first = a
        .semaphore("lockstore", "api", 1, 2, lease, Duration::ZERO)
        .await
        .unwrap();
    let second = b
        .semaphore("lockstore", "api", 1, 2, lease, Duration::ZERO)
        .await
        .unwrap();
    assert!(second.fencing_token() > first.fencing_token());
    // Past several leases, both still hold, and the limit still binds.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(!first.is_lost() && !second.is_lost());
    assert!(matches!(
        c.semaphore("lockstore", "api", 1, 2, lease, Duration::ZERO)
            .await,
        Err(Error::NotAcquired)
    ));
    // Another limit is refused while the semaphore is held.
    let refused = c
        .semaphore("lockstore", "api", 1, 3, lease, Duration::ZERO)
        .await;
    assert!(
        matches!(&refused, Err(Error::Status(s)) if s.code() == tonic::Code::FailedPrecondition),
        "{refused:?}"
    );
    first.unlock().await.unwrap();
    let third = c
        .semaphore("lockstore", "api", 1, 2, lease, Duration::from_secs(5))
        .await
        .unwrap();
    second.unlock().await.unwrap();
    third.unlock().await.unwrap();
}

#[tokio::test]
async fn read_and_write_guards_exclude_each_other() {
    let server = EmbeddedServer::start().await.unwrap();
    let lease = Duration::from_secs(5);
    let (a, b, w) = (
        client(&server, "a").await,
        client(&server, "b").await,
        client(&server, "w").await,
    );
    let r1 = a
        .read("lockstore", "doc", lease, Duration::ZERO)
        .await
        .unwrap();
    let r2 = b
        .read("lockstore", "doc", lease, Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(
        w.write("lockstore", "doc", lease, Duration::ZERO).await,
        Err(Error::NotAcquired)
    ));
    let writer = tokio::spawn(async move {
        w.write("lockstore", "doc", lease, Duration::from_secs(30))
            .await
    });
    r1.unlock().await.unwrap();
    r2.unlock().await.unwrap();
    let writer = writer.await.unwrap().unwrap();
    assert!(matches!(
        a.read("lockstore", "doc", lease, Duration::ZERO).await,
        Err(Error::NotAcquired)
    ));
    writer.unlock().await.unwrap();
}

#[tokio::test]
async fn an_elected_guard_proclaims_and_hands_over_on_unlock() {
    let server = EmbeddedServer::start().await.unwrap();
    let lease = Duration::from_millis(500);
    let (one, two) = (client(&server, "one").await, client(&server, "two").await);
    let mut changes = one.observe("lockstore", "scheduler").await.unwrap();
    assert_eq!(changes.next().await.unwrap(), Some(None));
    let leader = one
        .elect(
            "lockstore",
            "scheduler",
            "10.0.0.1:8080",
            lease,
            Duration::ZERO,
        )
        .await
        .unwrap();
    let term = leader.fencing_token();
    let seen = changes.next().await.unwrap().unwrap().unwrap();
    assert_eq!((seen.candidate.as_str(), seen.term), ("one", term));
    assert!(leader.proclaim("10.0.0.2:8080").await.unwrap());
    assert_eq!(
        one.leader("lockstore", "scheduler")
            .await
            .unwrap()
            .unwrap()
            .value,
        "10.0.0.2:8080"
    );
    let follower = tokio::spawn(async move {
        two.elect(
            "lockstore",
            "scheduler",
            "10.0.0.3:8080",
            lease,
            Duration::from_secs(30),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!leader.is_lost(), "the leader renews");
    leader.unlock().await.unwrap();
    let next = follower.await.unwrap().unwrap();
    assert!(next.fencing_token() > term, "terms only grow");
    next.unlock().await.unwrap();
}

/// A guard that waited longer than its lease for the lock still holds it:
/// its deadline starts again from a renewal sent once the wait is over.
#[tokio::test]
async fn a_guard_that_waited_longer_than_its_lease_holds() {
    let server = EmbeddedServer::start().await.unwrap();
    let lease = Duration::from_millis(300);
    let (a, b) = (client(&server, "a").await, client(&server, "b").await);
    let first = a
        .lock("lockstore", "w", lease, Duration::ZERO)
        .await
        .unwrap();
    let waiter = tokio::spawn(async move {
        b.lock("lockstore", "w", lease, Duration::from_secs(10))
            .await
    });
    tokio::time::sleep(Duration::from_millis(900)).await;
    first.unlock().await.unwrap();
    let second = waiter.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!second.is_lost());
    second.unlock().await.unwrap();
}
