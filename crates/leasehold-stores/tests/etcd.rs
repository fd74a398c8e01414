//! `lock.etcd` against real etcd servers: the conformance suite, a backend
//! that goes away and comes back, authentication with tokens that go stale,
//! a three-member cluster that loses its leader, or the member the store
//! talks to, mid-run, and the conformance suite again over mutual TLS.

#![cfg(feature = "etcd")]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold_core::metadata::Metadata;
use leasehold_core::{Acquire, LockStore, Release, StoreErrorKind};
use leasehold_stores::etcd::{Config, EtcdStore};
use leasehold_testkit::etcd::EtcdCluster;
use tokio::time::{Instant, sleep};

const LONG: Duration = Duration::from_secs(60);

fn config(endpoints: &str, request_timeout: &str) -> Config {
    Config::from_metadata(&Metadata::from_pairs([
        ("endpoints", endpoints),
        ("etcdKeyPrefix", "leasehold-test/"),
        ("dialTimeout", "2s"),
        ("requestTimeout", request_timeout),
    ]))
    .expect("valid metadata")
}

async fn connect(endpoints: &str, request_timeout: &str) -> Arc<EtcdStore> {
    Arc::new(
        EtcdStore::connect(config(endpoints, request_timeout))
            .await
            .expect("connect to etcd"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let cluster = EtcdCluster::single();
    let store = connect(&cluster.endpoints(), "10s").await;
    leasehold_core::testsuite::run_all(store, "etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_a_cluster_that_is_not_there() {
    let port = leasehold_testkit::free_port();
    let err = EtcdStore::connect(config(&format!("127.0.0.1:{port}"), "1s"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_fast_while_down_and_recovers_by_itself() {
    let mut cluster = EtcdCluster::single();
    let store = connect(&cluster.endpoints(), "2s").await;
    let held = "lock||recover||held";
    assert!(matches!(
        store.try_lock(held, "owner", LONG).await.unwrap(),
        Acquire::Acquired { .. }
    ));

    cluster.kill(0);
    for _ in 0..3 {
        let started = Instant::now();
        let err = store
            .try_lock("lock||recover||other", "owner", LONG)
            .await
            .expect_err("etcd is down");
        eprintln!("while down: {err} after {:?}", started.elapsed());
        assert!(
            matches!(
                err.kind(),
                StoreErrorKind::Unavailable | StoreErrorKind::Timeout
            ),
            "{err}"
        );
        assert!(store.health().await.is_err());
    }

    // Back on the same port with the same data: the store reconnects by
    // itself, and the lease taken before the outage is still there.
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(0);
        cluster
    })
    .await
    .expect("restart task panicked");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.health().await {
            Ok(()) => break,
            Err(err) => assert!(Instant::now() < deadline, "never recovered: {err}"),
        }
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        store.try_lock(held, "intruder", LONG).await.unwrap(),
        Acquire::HeldByOther
    );
    assert_eq!(
        store.unlock(held, "owner").await.unwrap(),
        Release::Released
    );
    assert!(matches!(
        store
            .try_lock("lock||recover||other", "owner", LONG)
            .await
            .unwrap(),
        Acquire::Acquired { .. }
    ));
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticates_with_a_user_and_password() {
    let mut cluster = EtcdCluster::single();
    cluster.members()[0]
        .enable_auth("root", "s3cret")
        .expect("enable etcd authentication");

    let with = |password: &'static str| {
        Config::from_metadata(&Metadata::from_pairs([
            ("endpoints", cluster.endpoints().as_str()),
            ("username", "root"),
            ("password", password),
            ("requestTimeout", "5s"),
        ]))
        .expect("valid metadata")
    };
    let err = EtcdStore::connect(with("wrong")).await.unwrap_err();
    assert!(!err.to_string().contains("wrong"), "{err}");
    let store = EtcdStore::connect(with("s3cret")).await.expect("connect");
    let key = "lock||auth||a";
    assert!(matches!(
        store.try_lock(key, "owner", LONG).await.unwrap(),
        Acquire::Acquired { .. }
    ));

    // Tokens run out, and etcd forgets them when authentication is turned
    // off and on; the store then fetches a new token by itself. A watch that
    // comes first is refused (not failed) on the stale token; an ordinary
    // call is failed with `invalid auth token`.
    let member = &cluster.members()[0];
    member.reset_auth("root", "s3cret").expect("reset auth");
    let released = store
        .watch_release(key)
        .await
        .expect("watch with a new token");
    member.reset_auth("root", "s3cret").expect("reset auth");
    assert_eq!(store.unlock(key, "owner").await.unwrap(), Release::Released);
    tokio::time::timeout(Duration::from_secs(10), released)
        .await
        .expect("the watch saw the release");

    // A restarted member still knows its tokens (it replays them from its
    // log); the store reconnects by itself.
    cluster.kill(0);
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(0);
        cluster
    })
    .await
    .expect("restart task panicked");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.health().await {
            Ok(()) => break,
            Err(err) => assert!(Instant::now() < deadline, "never recovered: {err}"),
        }
        sleep(Duration::from_millis(100)).await;
    }
    assert!(matches!(
        store.try_lock(key, "owner", LONG).await.unwrap(),
        Acquire::Acquired { .. }
    ));
    drop(cluster);
}

#[derive(Default)]
struct Record {
    /// Grants seen, in the order they were held: (worker, fence).
    grants: Mutex<Vec<(usize, u64)>>,
    holders: AtomicUsize,
    overlaps: AtomicUsize,
    successes: AtomicUsize,
    errors: AtomicUsize,
    stop: AtomicBool,
}

/// Workers contend for one key until told to stop (and for a bounded number
/// of rounds); the record shows whether two ever held it at once.
async fn contend(store: Arc<EtcdStore>, record: Arc<Record>, worker: usize) {
    let key = "lock||failover||shared";
    let owner = format!("worker-{worker}");
    for _ in 0..5_000 {
        if record.stop.load(Ordering::SeqCst) {
            return;
        }
        match store.try_lock(key, &owner, Duration::from_secs(10)).await {
            Ok(Acquire::Acquired { fence }) => {
                if record.holders.fetch_add(1, Ordering::SeqCst) != 0 {
                    record.overlaps.fetch_add(1, Ordering::SeqCst);
                }
                record.grants.lock().unwrap().push((worker, fence));
                tokio::task::yield_now().await;
                record.holders.fetch_sub(1, Ordering::SeqCst);
                record.successes.fetch_add(1, Ordering::SeqCst);
                // An unlock whose reply is lost leaves the lock to its lease;
                // the others then wait, which is safe.
                if store.unlock(key, &owner).await.is_err() {
                    record.errors.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(Acquire::HeldByOther) => sleep(Duration::from_millis(5)).await,
            Err(_) => {
                record.errors.fetch_add(1, Ordering::SeqCst);
                sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn wait_for_successes(record: &Record, at_least: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while record.successes.load(Ordering::SeqCst) < at_least {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {} grants, {} errors",
            record.successes.load(Ordering::SeqCst),
            record.errors.load(Ordering::SeqCst)
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// Which member a failover test kills.
#[derive(Debug, Clone, Copy)]
enum Victim {
    /// The one that leads the cluster.
    Leader,
    /// The first endpoint, which the store talks to until it fails over.
    FirstEndpoint,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_survive_the_loss_of_the_leader() {
    lose_a_member(Victim::Leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_survive_the_loss_of_the_member_in_use() {
    lose_a_member(Victim::FirstEndpoint).await;
}

/// Three workers contend for one key on a three-member cluster while one
/// member is killed: grants carry on, never overlap, and their fences only
/// grow; a lock taken before survives; the member comes back as a follower.
async fn lose_a_member(victim: Victim) {
    let mut cluster = EtcdCluster::start(3);
    let store = connect(&cluster.endpoints(), "10s").await;
    let held = "lock||failover||held";
    let held_fence = match store.try_lock(held, "owner", LONG).await.unwrap() {
        Acquire::Acquired { fence } => fence,
        other => panic!("{other:?}"),
    };

    let record = Arc::new(Record::default());
    let workers: Vec<_> = (0..3)
        .map(|worker| tokio::spawn(contend(store.clone(), record.clone(), worker)))
        .collect();
    wait_for_successes(&record, 20, "grants before the failover").await;

    let killed = match victim {
        Victim::Leader => {
            tokio::task::block_in_place(|| cluster.leader()).expect("the cluster has a leader")
        }
        Victim::FirstEndpoint => 0,
    };
    cluster.kill(killed);
    let at_kill = record.successes.load(Ordering::SeqCst);
    wait_for_successes(&record, at_kill + 30, "grants after the member was killed").await;

    record.stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.expect("worker panicked");
    }
    eprintln!(
        "failover: {} grants ({at_kill} before member {killed} ({victim:?}) was killed), {} errors",
        record.successes.load(Ordering::SeqCst),
        record.errors.load(Ordering::SeqCst)
    );
    assert_eq!(
        record.overlaps.load(Ordering::SeqCst),
        0,
        "two workers held the lock at once"
    );
    let grants = record.grants.lock().unwrap().clone();
    for pair in grants.windows(2) {
        assert!(pair[1].1 > pair[0].1, "fences went backwards: {pair:?}");
    }

    // The lock taken before the failover survived it, with its fence.
    let info = store.status(held).await.unwrap().expect("still held");
    assert_eq!((info.owner.as_str(), info.fence), ("owner", held_fence));
    assert_eq!(
        store.try_lock(held, "intruder", LONG).await.unwrap(),
        Acquire::HeldByOther
    );

    // The member comes back as a follower; everything still works.
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(killed);
        cluster
    })
    .await
    .expect("restart task panicked");
    assert_eq!(
        store.unlock(held, "owner").await.unwrap(),
        Release::Released
    );
    store.health().await.unwrap();
    drop(cluster);
}

struct FixedEnv(&'static [(&'static str, &'static str)]);

impl leasehold_core::manifest::Env for FixedEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
    }
}

/// The example component files are valid as shipped (the TLS one with PEM
/// text in its environment variables; validation checks only its markers).
#[test]
fn example_components_validate() {
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n";
    let env = FixedEnv(&[
        ("ETCD_CA_CERT", CERT),
        ("ETCD_CLIENT_CERT", CERT),
        ("ETCD_CLIENT_KEY", KEY),
    ]);
    for name in ["etcd.yaml", "etcd-tls.yaml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/components")
            .join(name);
        let text = std::fs::read_to_string(&path).expect("example file");
        let cx = leasehold_core::manifest::LoadContext {
            app_id: "app",
            env: &env,
        };
        let mut loaded = leasehold_core::manifest::Loaded::default();
        let mut errors = Vec::new();
        leasehold_core::manifest::parse_file(&path, &text, cx, &mut loaded, &mut errors);
        assert!(errors.is_empty(), "{name}: {errors:?}");
        assert_eq!(loaded.components.len(), 1, "{name}");
        let store_cx = leasehold_stores::StoreContext {
            app_id: "app".to_owned(),
            data_dir: std::env::temp_dir(),
        };
        let config = leasehold_stores::validate(&loaded.components[0], &store_cx)
            .unwrap_or_else(|errors| panic!("{name}: {errors:?}"));
        assert!(
            matches!(config, leasehold_stores::StoreConfig::Etcd(_)),
            "{name}"
        );
    }
}

/// Mutual TLS: the conformance suite over `https://` with the store's own
/// certificate, and a store without one turned away at connect time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_mutual_tls() {
    let cluster = EtcdCluster::start_tls(1);
    let tls = cluster.tls().expect("a TLS cluster");
    let endpoints = cluster.endpoints();
    assert!(endpoints.starts_with("https://"), "{endpoints}");
    let (ca, cert, key) = (tls.ca_pem(), tls.client_cert_pem(), tls.client_key_pem());

    let anonymous = Config::from_metadata(&Metadata::from_pairs([
        ("endpoints", endpoints.as_str()),
        ("caCert", ca.as_str()),
        ("dialTimeout", "2s"),
        ("requestTimeout", "2s"),
    ]))
    .expect("valid metadata");
    let err = EtcdStore::connect(anonymous)
        .await
        .expect_err("etcd requires a client certificate");
    eprintln!("without a client certificate: {err}");
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains(&endpoints), "{err}");

    let config = Config::from_metadata(&Metadata::from_pairs([
        ("endpoints", endpoints.as_str()),
        ("tlsEnable", "true"),
        ("caCert", ca.as_str()),
        ("clientCert", cert.as_str()),
        ("clientKey", key.as_str()),
        ("etcdKeyPrefix", "leasehold-test/"),
        ("dialTimeout", "2s"),
        ("requestTimeout", "10s"),
    ]))
    .expect("valid metadata");
    assert!(!format!("{config:?}").contains("PRIVATE KEY"), "{config:?}");
    let store = Arc::new(EtcdStore::connect(config).await.expect("connect over TLS"));
    leasehold_core::testsuite::run_all(store, "etcd-tls").await;
}
