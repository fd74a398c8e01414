//! `lock.redis` against real `redis-server` processes: the conformance suite
//! in each mode, interoperability with daprd's exact commands, lost replies,
//! Redis restarts, a Sentinel failover, a quorum losing masters, and TLS
//! (with certificates made by the `openssl` command line).

#![cfg(feature = "redis")]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold_core::manifest::Component;
use leasehold_core::metadata::Metadata;
use leasehold_core::{Acquire, LockStore, Release, Renewal, StoreError};
use leasehold_stores::StoreContext;
use leasehold_stores::redis::{Config, RedisStore};
use leasehold_testkit::redis::{
    Masters, RedisOptions, RedisServer, RedisTls, Reply, SentinelSetup,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep, timeout};

const LONG: Duration = Duration::from_secs(60);

/// The patience of every wait on a condition.
const PATIENCE: Duration = Duration::from_secs(30);

/// daprd's unlock script, byte for byte (dapr-lock-spec 6.4).
const DAPRD_UNLOCK: &str = r#"local v = redis.call("get",KEYS[1]); if v==false then return -1 end; if v~=ARGV[1] then return -2 else return redis.call("del",KEYS[1]) end"#;

fn component(pairs: &[(&str, &str)]) -> Component {
    Component {
        name: "lockstore".to_owned(),
        type_name: "lock.redis".to_owned(),
        version: "v1".to_owned(),
        init_timeout: None,
        ignore_errors: false,
        metadata: Metadata::from_pairs(pairs.iter().copied()),
        source: PathBuf::from("redis.yaml"),
    }
}

fn config(pairs: &[(&str, &str)]) -> Config {
    let cx = StoreContext {
        app_id: "app".to_owned(),
        data_dir: std::env::temp_dir(),
    };
    Config::from_component(&component(pairs), &cx).expect("valid metadata")
}

async fn connect(pairs: &[(&str, &str)]) -> RedisStore {
    RedisStore::connect(config(pairs))
        .await
        .unwrap_or_else(|err| panic!("connect failed: {err}"))
}

fn fence(outcome: Acquire) -> u64 {
    match outcome {
        Acquire::Acquired { fence } => fence,
        Acquire::HeldByOther => panic!("expected the lock to be acquired"),
    }
}

/// Poll `attempt` until it returns `Some`, within `PATIENCE`.
async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

fn cmd(server: &RedisServer, args: &[&str]) -> Reply {
    server
        .command(args)
        .unwrap_or_else(|err| panic!("{args:?}: {err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_standalone() {
    let server = RedisServer::start();
    let store = connect(&[("redisHost", &server.addr())]).await;
    let caps = store.capabilities();
    assert!(caps.fencing && caps.renew && caps.release_notify && caps.admin);
    assert!(!caps.durable, "no persistence, so not durable");
    leasehold_core::testsuite::run_all(Arc::new(store), "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_checks_match_daprd() {
    let master = RedisServer::start();
    // Nothing listens there.
    let port = leasehold_testkit::free_port();
    let err = RedisStore::connect(config(&[("redisHost", &format!("127.0.0.1:{port}"))]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("error connecting to Redis"), "{err}");

    // Replicas without failover are refused, as daprd refuses them.
    let _replica = RedisServer::start_with(RedisOptions {
        replica_of: Some(master.port()),
        ..RedisOptions::default()
    });
    let err = RedisStore::connect(config(&[("redisHost", &master.addr())]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("replication is not supported"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daprd_and_leasehold_respect_each_other() {
    let server = RedisServer::start();
    let store = connect(&[("redisHost", &server.addr())]).await;

    // leasehold holds; daprd's SET NX is refused and its unlock script
    // reports -2 for another owner, then deletes for the owner.
    let key = "lock||interop||from-leasehold";
    fence(store.try_lock(key, "lh-owner", LONG).await.unwrap());
    assert_eq!(cmd(&server, &["GET", key]).text(), Some("lh-owner"));
    assert_eq!(
        cmd(&server, &["SET", key, "dapr-owner", "EX", "60", "NX"]),
        Reply::Bulk(None)
    );
    assert_eq!(
        cmd(&server, &["EVAL", DAPRD_UNLOCK, "1", key, "dapr-owner"]).int(),
        Some(-2)
    );
    assert_eq!(
        cmd(&server, &["EVAL", DAPRD_UNLOCK, "1", key, "lh-owner"]).int(),
        Some(1)
    );
    assert_eq!(
        store.unlock(key, "lh-owner").await.unwrap(),
        Release::NotFound
    );
    assert_eq!(
        cmd(&server, &["EVAL", DAPRD_UNLOCK, "1", key, "lh-owner"]).int(),
        Some(-1)
    );

    // daprd holds; leasehold sees its lock, cannot take or release it for
    // another owner, and releases it for the owner.
    let key = "lock||interop||from-daprd";
    assert_eq!(
        cmd(&server, &["SET", key, "dapr-owner", "EX", "60", "NX"]).text(),
        Some("OK")
    );
    assert_eq!(
        store.try_lock(key, "lh-owner", LONG).await.unwrap(),
        Acquire::HeldByOther
    );
    assert_eq!(
        store.try_lock(key, "dapr-owner", LONG).await.unwrap(),
        Acquire::HeldByOther,
        "not reentrant, whoever wrote the lock"
    );
    assert_eq!(
        store.unlock(key, "lh-owner").await.unwrap(),
        Release::HeldByOther
    );
    let status = store
        .status(key)
        .await
        .unwrap()
        .expect("daprd's lock is live");
    assert_eq!(status.owner, "dapr-owner");
    assert_eq!(status.fence, 0, "no leasehold grant behind daprd's lock");
    assert!(matches!(
        store.renew(key, "dapr-owner", LONG).await.unwrap(),
        Renewal::Renewed { .. }
    ));
    assert_eq!(
        store.unlock(key, "dapr-owner").await.unwrap(),
        Release::Released
    );
    assert_eq!(cmd(&server, &["EXISTS", key]).int(), Some(0));

    // Fences keep growing across the handover between the two.
    let first = fence(store.try_lock(key, "lh-owner", LONG).await.unwrap());
    assert_eq!(
        cmd(&server, &["EVAL", DAPRD_UNLOCK, "1", key, "lh-owner"]).int(),
        Some(1)
    );
    assert_eq!(
        cmd(&server, &["SET", key, "dapr-owner", "EX", "1", "NX"]).text(),
        Some("OK")
    );
    let second = eventually("daprd's 1 s lock to expire", || {
        let store = &store;
        async move {
            match store.try_lock(key, "lh-owner", LONG).await.unwrap() {
                Acquire::Acquired { fence } => Some(fence),
                Acquire::HeldByOther => None,
            }
        }
    })
    .await;
    assert!(second > first, "{first} then {second}");
    assert_eq!(
        store.unlock(key, "lh-owner").await.unwrap(),
        Release::Released
    );
}

/// A TCP proxy that can be told to swallow the next reply from Redis and
/// cut the connection (the command has run, the client never hears so), or
/// to go silent on the connections open so far (commands still run, their
/// replies never arrive) while new connections work.
struct ReplyCutter {
    port: u16,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    silent_below: Arc<AtomicUsize>,
}

impl ReplyCutter {
    async fn start(upstream: u16) -> ReplyCutter {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cutter = ReplyCutter {
            port,
            armed: Arc::default(),
            cuts: Arc::default(),
            accepted: Arc::default(),
            silent_below: Arc::default(),
        };
        let (armed, cuts) = (cutter.armed.clone(), cutter.cuts.clone());
        let (accepted, silent_below) = (cutter.accepted.clone(), cutter.silent_below.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let id = accepted.fetch_add(1, Ordering::SeqCst);
                let silent = {
                    let silent_below = silent_below.clone();
                    move || id < silent_below.load(Ordering::SeqCst)
                };
                tokio::spawn(pump(client, server, armed.clone(), cuts.clone(), silent));
            }
        });
        cutter
    }

    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Drop every reply on the connections accepted so far.
    fn silence_open_connections(&self) {
        self.silent_below
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

async fn pump(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    silent: impl Fn() -> bool,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upward = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut buffer = vec![0; 64 * 1024];
    while let Ok(n) = server_read.read(&mut buffer).await {
        if n == 0 {
            break;
        }
        if armed.swap(false, Ordering::SeqCst) {
            // Swallow the reply and drop both sides.
            cuts.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if silent() {
            continue;
        }
        if client_write.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    upward.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_reply_is_recognised_on_retry() {
    let server = RedisServer::start();
    let proxy = ReplyCutter::start(server.port()).await;
    let store = connect(&[("redisHost", &format!("127.0.0.1:{}", proxy.port))]).await;
    // Load the scripts into Redis's cache, so the next sends are the
    // scripts themselves rather than a NOSCRIPT round trip.
    fence(store.try_lock("lock||lost||warm", "o", LONG).await.unwrap());
    assert_eq!(
        store.unlock("lock||lost||warm", "o").await.unwrap(),
        Release::Released
    );

    // The acquire runs in Redis, its reply is lost, the store retries on a
    // new connection and recognises its own grant.
    let key = "lock||lost||acquire";
    proxy.arm();
    let granted = fence(store.try_lock(key, "owner", LONG).await.unwrap());
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "a reply was cut");
    assert_eq!(cmd(&server, &["GET", key]).text(), Some("owner"));
    assert_eq!(
        cmd(&server, &["GET", "leasehold-fence-counter"]).text(),
        Some(granted.to_string().as_str()),
        "one grant, one token"
    );
    // A new call by the same owner is still refused: not reentrant.
    assert_eq!(
        store.try_lock(key, "owner", LONG).await.unwrap(),
        Acquire::HeldByOther
    );

    // The unlock runs, its reply is lost; the retry knows it released.
    proxy.arm();
    assert_eq!(store.unlock(key, "owner").await.unwrap(), Release::Released);
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 2);
    assert_eq!(cmd(&server, &["EXISTS", key]).int(), Some(0));

    // Without retries the store cannot know: it says so instead of
    // reporting "held by other" or "not found".
    let strict = connect(&[
        ("redisHost", &format!("127.0.0.1:{}", proxy.port)),
        ("redisMaxRetries", "-1"),
    ])
    .await;
    fence(
        strict
            .try_lock("lock||lost||warm", "o", LONG)
            .await
            .unwrap(),
    );
    strict.unlock("lock||lost||warm", "o").await.unwrap();
    proxy.arm();
    let err = strict.try_lock(key, "owner", LONG).await.unwrap_err();
    assert!(err.to_string().contains("outcome is unknown"), "{err}");
    assert_eq!(cmd(&server, &["GET", key]).text(), Some("owner"));
    // Open the next connection before cutting again, so that the cut hits
    // the unlock and not the connection's handshake.
    strict.health().await.unwrap();
    proxy.arm();
    let err = strict.unlock(key, "owner").await.unwrap_err();
    assert!(err.to_string().contains("outcome is unknown"), "{err}");
    assert_eq!(cmd(&server, &["EXISTS", key]).int(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_redis_restart_and_fails_fast_while_down() {
    let mut server = RedisServer::start_with(RedisOptions {
        persistence: true,
        ..RedisOptions::default()
    });
    let store = connect(&[("redisHost", &server.addr()), ("dialTimeout", "1s")]).await;
    assert!(store.capabilities().durable, "append-only file is on");
    let key = "lock||restart||a";
    let first = fence(store.try_lock(key, "owner", LONG).await.unwrap());

    server.kill();
    let err = store
        .try_lock("lock||restart||b", "owner", LONG)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(store.health().await.is_err());

    server.restart();
    eventually("the store to reconnect", || {
        let store = &store;
        async move { store.health().await.ok() }
    })
    .await;
    // With `appendfsync always`, the lease survived the crash.
    assert_eq!(
        store.try_lock(key, "other", LONG).await.unwrap(),
        Acquire::HeldByOther
    );
    assert_eq!(store.unlock(key, "owner").await.unwrap(), Release::Released);

    // A new sidecar (a new store) continues the fence.
    let restarted = connect(&[("redisHost", &server.addr())]).await;
    let second = fence(restarted.try_lock(key, "owner", LONG).await.unwrap());
    assert!(second > first, "{first} then {second}");
    assert_eq!(
        restarted.unlock(key, "owner").await.unwrap(),
        Release::Released
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_gives_timeouts_not_hangs() {
    let server = RedisServer::start();
    let store = connect(&[
        ("redisHost", &server.addr()),
        ("readTimeout", "300ms"),
        ("dialTimeout", "300ms"),
    ])
    .await;
    fence(
        store
            .try_lock("lock||frozen||a", "owner", LONG)
            .await
            .unwrap(),
    );
    server.pause();
    let outcome = timeout(
        Duration::from_secs(20),
        store.try_lock("lock||frozen||b", "owner", LONG),
    )
    .await
    .expect("the store's own deadline ends the call");
    server.resume();
    let err = outcome.unwrap_err();
    assert!(
        matches!(err, StoreError::Timeout(_) | StoreError::Unavailable(_)),
        "{err}"
    );
    eventually("the store to answer again", || {
        let store = &store;
        async move { store.health().await.ok() }
    })
    .await;
    assert_eq!(
        store.unlock("lock||frozen||a", "owner").await.unwrap(),
        Release::Released
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_share_one_connection() {
    let server = RedisServer::start();
    let store = Arc::new(connect(&[("redisHost", &server.addr())]).await);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = format!("lock||shared||{i}");
                fence(store.try_lock(&key, "owner", LONG).await.unwrap());
                store.unlock(&key, "owner").await.unwrap()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Release::Released);
    }
    let clients = cmd(&server, &["INFO", "clients"]);
    let connected: usize = clients
        .text()
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("connected_clients:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The store's command connection, perhaps its subscription, and the
    // INFO call itself.
    assert!(connected <= 3, "{connected} connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_conformance_failover_and_replica_ack() {
    let mut setup = SentinelSetup::start();
    let hosts = setup.sentinel_hosts();
    let sentinel = [
        ("redisHost", hosts.as_str()),
        ("failover", "true"),
        ("sentinelMasterName", leasehold_testkit::redis::MASTER_NAME),
        ("redisMaxRetries", "5"),
    ];
    let store = Arc::new(connect(&sentinel).await);
    leasehold_core::testsuite::run_all(store.clone(), "redis-sentinel").await;

    // replicaAck: one replica exists, so one acknowledgement comes back;
    // two cannot, and the grant is taken back.
    let mut with_ack = sentinel.to_vec();
    with_ack.push(("replicaAck", "1"));
    let acked = connect(&with_ack).await;
    let key = "lock||sentinel||acked";
    fence(acked.try_lock(key, "owner", LONG).await.unwrap());
    assert!(matches!(
        acked.renew(key, "owner", LONG).await.unwrap(),
        Renewal::Renewed { .. }
    ));
    assert_eq!(acked.unlock(key, "owner").await.unwrap(), Release::Released);
    let mut too_many = sentinel.to_vec();
    too_many.extend([("replicaAck", "2"), ("replicaAckTimeout", "200ms")]);
    let greedy = connect(&too_many).await;
    let err = greedy.try_lock(key, "owner", LONG).await.unwrap_err();
    assert!(err.to_string().contains("replica"), "{err}");
    assert_eq!(
        store.status(key).await.unwrap(),
        None,
        "an unacknowledged grant is released"
    );

    // A rough cost of WAIT, printed for the reference page (not asserted):
    // one caller at a time, then 16 at once on the shared connection.
    let acked = Arc::new(acked);
    for (name, store) in [("no ack", store.clone()), ("replicaAck 1", acked.clone())] {
        let started = Instant::now();
        for i in 0..200 {
            let key = format!("lock||sentinel||timing-{i}");
            fence(store.try_lock(&key, "owner", LONG).await.unwrap());
            store.unlock(&key, "owner").await.unwrap();
        }
        let sequential = started.elapsed() / 200;
        let started = Instant::now();
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..25 {
                        let key = format!("lock||sentinel||timing-{t}-{i}");
                        fence(store.try_lock(&key, "owner", LONG).await.unwrap());
                        store.unlock(&key, "owner").await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let concurrent = started.elapsed() / 400;
        eprintln!(
            "timing: {name}: {sequential:?} per acquire+release one at a time, \
             {concurrent:?} per acquire+release with 16 callers"
        );
    }

    // A lock taken before the failover, and replicated (WAIT makes sure).
    let held = "lock||sentinel||before-failover";
    let before = fence(acked.try_lock(held, "owner", LONG).await.unwrap());

    let old_master = setup.master_port().unwrap();
    let new_master = tokio::task::block_in_place(|| setup.kill_master_and_wait_failover());
    assert_ne!(old_master, new_master);

    // The store follows the new master by itself.
    let after = eventually("the store to reach the new master", || {
        let store = &store;
        async move {
            match store.try_lock("lock||sentinel||after", "owner", LONG).await {
                Ok(Acquire::Acquired { fence }) => Some(fence),
                _ => None,
            }
        }
    })
    .await;
    assert!(after > 0);
    assert_eq!(
        store.try_lock(held, "other", LONG).await.unwrap(),
        Acquire::HeldByOther,
        "the acknowledged lock survived the failover"
    );
    assert_eq!(
        store.unlock(held, "owner").await.unwrap(),
        Release::Released
    );
    let next = fence(store.try_lock(held, "other", LONG).await.unwrap());
    assert!(next > before, "{before} then {next}");
    assert_eq!(
        store.unlock(held, "other").await.unwrap(),
        Release::Released
    );

    // Release notifications come from the new master too.
    let watched = "lock||sentinel||watched";
    fence(store.try_lock(watched, "owner", LONG).await.unwrap());
    let wait = eventually("a watch on the new master", || {
        let store = &store;
        async move { store.watch_release(watched).await.ok() }
    })
    .await;
    assert_eq!(
        store.unlock(watched, "owner").await.unwrap(),
        Release::Released
    );
    timeout(PATIENCE, wait)
        .await
        .expect("no release notification");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_of_three_conformance_with_one_master_down() {
    let mut masters = Masters::start(3);
    let hosts = masters.hosts();
    let pairs = [("quorum", "true"), ("redisHosts", hosts.as_str())];
    let store = Arc::new(connect(&pairs).await);
    leasehold_core::testsuite::run_all(store.clone(), "redis-quorum-3").await;

    masters.servers[0].kill();
    leasehold_core::testsuite::run_all(store.clone(), "redis-quorum-3-minus-1").await;

    // Two down: no majority, and the store says so instead of granting.
    masters.servers[1].kill();
    let err = store
        .try_lock("lock||quorum||no-majority", "owner", LONG)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("masters answered"), "{err}");
    assert!(store.health().await.is_err());
}

/// A failed quorum round gives back only its own grants. Here the owner
/// already holds the key on three of five masters (two lost it), asks
/// again, and one of the three answers too late: the round fails, and
/// taking its grants back must not delete the owner's earlier lease on the
/// late master (an unlock by owner would, leaving it on two of five, where
/// another owner could then win a majority).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_quorum_round_takes_back_only_its_own_grants() {
    let masters = Masters::start(5);
    let late = ReplyCutter::start(masters.servers[2].port()).await;
    let hosts: Vec<String> = masters
        .servers
        .iter()
        .enumerate()
        .map(|(i, server)| match i {
            2 => format!("127.0.0.1:{}", late.port),
            _ => server.addr(),
        })
        .collect();
    let hosts = hosts.join(",");
    let store = connect(&[
        ("quorum", "true"),
        ("redisHosts", &hosts),
        ("quorumNodeTimeout", "300ms"),
        ("redisMaxRetries", "0"),
    ])
    .await;
    let key = "lock||quorum||own-grants";
    fence(store.try_lock(key, "owner", LONG).await.unwrap());
    for lost in &masters.servers[3..] {
        cmd(lost, &["DEL", key]);
    }

    late.silence_open_connections();
    assert_eq!(
        store.try_lock(key, "owner", LONG).await.unwrap(),
        Acquire::HeldByOther,
        "the key is held, by this owner's earlier lease"
    );
    for (i, server) in masters.servers.iter().enumerate() {
        let holder = cmd(server, &["GET", key]);
        match i {
            0..=2 => assert_eq!(holder.text(), Some("owner"), "master {i} lost the lease"),
            _ => assert_eq!(holder, Reply::Bulk(None), "master {i} kept a grant"),
        }
    }
    assert_eq!(
        store.try_lock(key, "other", LONG).await.unwrap(),
        Acquire::HeldByOther
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_of_five_keeps_mutual_exclusion_when_masters_die_or_freeze() {
    let mut masters = Masters::start(5);
    let hosts = masters.hosts();
    let store = Arc::new(
        connect(&[
            ("quorum", "true"),
            ("redisHosts", hosts.as_str()),
            ("quorumNodeTimeout", "300ms"),
        ])
        .await,
    );

    // Workers contend for a few keys; a checker records who is inside and
    // the tokens seen, so overlaps and shrinking tokens fail the test.
    let inside: Arc<Vec<AtomicBool>> = Arc::new((0..3).map(|_| AtomicBool::new(false)).collect());
    let last_token: Arc<Mutex<HashMap<usize, u64>>> = Arc::default();
    let grants = Arc::new(AtomicUsize::new(0));
    let run_workers = |rounds: usize, tag: &'static str| {
        (0..4)
            .map(|worker| {
                let (store, inside, last_token, grants) = (
                    store.clone(),
                    inside.clone(),
                    last_token.clone(),
                    grants.clone(),
                );
                tokio::spawn(async move {
                    let owner = format!("{tag}-worker-{worker}");
                    for round in 0..rounds {
                        let slot = (worker + round) % 3;
                        let key = format!("lock||quorum5||{slot}");
                        let Ok(Acquire::Acquired { fence }) =
                            store.try_lock(&key, &owner, LONG).await
                        else {
                            tokio::task::yield_now().await;
                            continue;
                        };
                        assert!(
                            !inside[slot].swap(true, Ordering::SeqCst),
                            "two holders of {key}"
                        );
                        {
                            let mut last = last_token.lock().unwrap();
                            let previous = last.insert(slot, fence).unwrap_or(0);
                            assert!(fence > previous, "{key}: token {fence} after {previous}");
                        }
                        grants.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        inside[slot].store(false, Ordering::SeqCst);
                        // An unlock may fail while masters die; the lease
                        // then runs out by itself, but LONG is long: give
                        // the keys back through force-unlock instead.
                        if store.unlock(&key, &owner).await.is_err() {
                            let _ = store.force_unlock(&key).await;
                        }
                    }
                })
            })
            .collect::<Vec<_>>()
    };

    let started = Instant::now();
    for task in run_workers(30, "healthy") {
        task.await.expect("worker failed");
    }
    let healthy = grants.load(Ordering::SeqCst);
    assert!(healthy > 0);

    // Mid-run: one master killed, one frozen.
    // Every call now waits out the frozen master's timeout: fewer rounds.
    let workers = run_workers(12, "faulty");
    masters.servers[1].kill();
    masters.servers[3].pause();
    for task in workers {
        task.await.expect("worker failed");
    }
    assert!(
        grants.load(Ordering::SeqCst) > healthy,
        "three of five masters still grant"
    );
    eprintln!(
        "quorum of 5: {} grants in {:?}, {healthy} of them before the faults",
        grants.load(Ordering::SeqCst),
        started.elapsed()
    );
    masters.servers[3].resume();

    // Freeze a third master: no majority left.
    masters.servers[3].pause();
    masters.servers[4].kill();
    let outcome = store.try_lock("lock||quorum5||none", "owner", LONG).await;
    masters.servers[3].resume();
    assert!(outcome.is_err(), "granted without a majority: {outcome:?}");
}

#[test]
fn the_example_components_are_valid() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/components");
    let env: HashMap<String, String> = HashMap::from([("REDIS_PASSWORD".into(), "secret".into())]);
    let cx = StoreContext {
        app_id: "app".to_owned(),
        data_dir: std::env::temp_dir(),
    };
    let pki = Pki::make("examples");
    let mut env = env;
    env.insert("REDIS_CA_CERT".into(), pki.pem("ca.crt"));
    env.insert("REDIS_CLIENT_CERT".into(), pki.pem("client.crt"));
    env.insert("REDIS_CLIENT_KEY".into(), pki.pem("client.key"));
    let names = [
        "redis.yaml",
        "redis-sentinel.yaml",
        "redis-quorum.yaml",
        "redis-tls.yaml",
    ];
    // The examples are alternatives with one store name: load each alone.
    for name in names {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(examples.join(name), dir.path().join(name)).unwrap();
        let loaded = leasehold_core::manifest::load_dirs(
            &[dir.path().to_owned()],
            leasehold_core::manifest::LoadContext {
                app_id: "app",
                env: &env,
            },
        );
        assert!(loaded.errors.is_empty(), "{name}: {:?}", loaded.errors);
        assert_eq!(loaded.components.len(), 1, "{name}");
        leasehold_stores::validate(&loaded.components[0], &cx)
            .unwrap_or_else(|errors| panic!("{name}: {errors:?}"));
    }
}

/// A CA, a server certificate for 127.0.0.1 (serverAuth) and a client
/// certificate (clientAuth) signed by it, in a temporary directory.
/// rustls accepts only X.509 v3 certificates with these extensions.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A missing `openssl` command fails the test.
    fn make(name: &str) -> Pki {
        leasehold_testkit::find_binary("openssl", "LEASEHOLD_OPENSSL", &[]);
        let dir = tempfile::tempdir().unwrap();
        let write = |file: &str, text: &str| std::fs::write(dir.path().join(file), text).unwrap();
        write(
            "ca.cnf",
            &format!(
                "[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n\
                 [dn]\nCN = leasehold test ca {name}\n\
                 [ext]\nbasicConstraints = critical,CA:TRUE\n\
                 keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n"
            ),
        );
        write(
            "server.ext",
            "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n\
             extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1\n\
             authorityKeyIdentifier = keyid\n",
        );
        write(
            "client.ext",
            "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n\
             extendedKeyUsage = clientAuth\nauthorityKeyIdentifier = keyid\n",
        );
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("cannot run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        openssl(
            &[
                &["req", "-x509", "-config", "ca.cnf", "-nodes", "-days", "2"][..],
                &new_key,
                &["-keyout", "ca.key", "-out", "ca.crt"],
            ]
            .concat(),
        );
        for (leaf, subject, serial) in [
            ("server", "/CN=127.0.0.1", "2"),
            ("client", "/CN=leasehold", "3"),
        ] {
            let (key, csr, crt, ext) = (
                format!("{leaf}.key"),
                format!("{leaf}.csr"),
                format!("{leaf}.crt"),
                format!("{leaf}.ext"),
            );
            openssl(
                &[
                    &["req", "-new", "-nodes", "-subj", subject][..],
                    &new_key,
                    &["-keyout", &key, "-out", &csr],
                ]
                .concat(),
            );
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                serial,
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ]);
        }
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn pem(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).unwrap()
    }

    /// A TLS-only server with this CA's server certificate.
    fn server(&self, auth_clients: bool) -> RedisServer {
        RedisServer::start_with(RedisOptions {
            tls: Some(RedisTls {
                cert_file: self.path("server.crt"),
                key_file: self.path("server.key"),
                ca_cert_file: self.path("ca.crt"),
                auth_clients,
            }),
            ..RedisOptions::default()
        })
    }
}

async fn connect_err(pairs: &[(&str, &str)]) -> String {
    match RedisStore::connect(config(pairs)).await {
        Ok(_) => panic!(
            "connected with {:?}",
            pairs.iter().map(|p| p.0).collect::<Vec<_>>()
        ),
        Err(err) => err.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_tls_with_client_certificates() {
    let pki = Pki::make("mtls");
    let server = pki.server(true);
    let (ca, cert, key) = (
        pki.pem("ca.crt"),
        pki.pem("client.crt"),
        pki.pem("client.key"),
    );
    let addr = server.addr();
    let tls = [
        ("redisHost", addr.as_str()),
        ("enableTLS", "true"),
        ("caCert", ca.as_str()),
        ("clientCert", cert.as_str()),
        ("clientKey", key.as_str()),
    ];
    let config = config(&tls);
    let shown = format!("{config:?}");
    assert!(!shown.contains("PRIVATE"), "the key leaks into Debug");
    let store = RedisStore::connect(config)
        .await
        .unwrap_or_else(|err| panic!("connect failed: {err}"));
    leasehold_core::testsuite::run_all(Arc::new(store), "redis-tls").await;

    // The server wants a client certificate: without one the handshake
    // fails, and the error says which server refused.
    let err = connect_err(&tls[..3]).await;
    assert!(err.contains("error connecting to Redis"), "{err}");
    assert!(err.contains(&addr), "{err}");
    assert!(
        err.contains("clientCert"),
        "names the fields to check: {err}"
    );
    assert!(!err.contains("PRIVATE KEY"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_signed_by_another_ca_is_refused() {
    let (pki, other) = (Pki::make("server"), Pki::make("other"));
    let server = pki.server(false);
    let addr = server.addr();
    let other_ca = other.pem("ca.crt");
    let err = connect_err(&[
        ("redisHost", &addr),
        ("enableTLS", "true"),
        ("caCert", &other_ca),
        ("dialTimeout", "60s"),
    ])
    .await;
    assert!(err.contains("error connecting to Redis"), "{err}");
    assert!(err.contains("unavailable"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(
        err.contains("set caCert"),
        "names the field to check: {err}"
    );
    assert!(!err.contains("within"), "refused, not timed out: {err}");

    // The system roots do not know the test CA either.
    let err = connect_err(&[("redisHost", &addr), ("enableTLS", "true")]).await;
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_verify_accepts_an_unknown_ca() {
    let pki = Pki::make("unknown");
    let server = pki.server(false);
    let store = connect(&[
        ("redisHost", &server.addr()),
        ("enableTLS", "true"),
        ("insecureSkipTLSVerify", "true"),
    ])
    .await;
    let key = "lock||tls||insecure";
    fence(store.try_lock(key, "owner", LONG).await.unwrap());
    let wait = store.watch_release(key).await.unwrap();
    assert_eq!(store.unlock(key, "owner").await.unwrap(), Release::Released);
    timeout(PATIENCE, wait)
        .await
        .expect("no release notification over tls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_to_a_tls_only_server_fails_fast() {
    let pki = Pki::make("plain");
    let server = pki.server(false);
    // A dial timeout far beyond the test's patience: the refusal must come
    // from the server closing the connection, not from waiting.
    let outcome = timeout(
        PATIENCE,
        RedisStore::connect(config(&[
            ("redisHost", &server.addr()),
            ("dialTimeout", "1h"),
            ("readTimeout", "1h"),
        ])),
    )
    .await
    .expect("plain tcp to a tls port hangs");
    let err = outcome.map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("error connecting to Redis"), "{err}");
    assert!(!err.contains("within"), "{err}");
    assert!(err.contains("unavailable"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_over_tls() {
    let pki = Pki::make("sentinel");
    let setup = SentinelSetup::start_tls(&RedisTls {
        cert_file: pki.path("server.crt"),
        key_file: pki.path("server.key"),
        ca_cert_file: pki.path("ca.crt"),
        auth_clients: false,
    });
    let hosts = setup.sentinel_hosts();
    let ca = pki.pem("ca.crt");
    let sentinel = [
        ("redisHost", hosts.as_str()),
        ("failover", "true"),
        ("sentinelMasterName", leasehold_testkit::redis::MASTER_NAME),
        ("enableTLS", "true"),
        ("caCert", ca.as_str()),
    ];
    // The sentinels are asked over TLS, and name the master by its TLS
    // port, which only a TLS dial can use.
    let named = setup.master_port().expect("a sentinel names the master");
    assert!(
        setup.servers.iter().all(|server| server.port() != named),
        "the sentinels name a plain port"
    );
    let store = Arc::new(connect(&sentinel).await);
    leasehold_core::testsuite::run_all(store, "redis-sentinel-tls").await;

    // Without TLS the sentinels' TLS ports refuse the store at once.
    let err = connect_err(&sentinel[..3]).await;
    assert!(err.contains("error connecting to Redis"), "{err}");
    assert!(err.contains("no sentinel named"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_over_tls() {
    let pki = Pki::make("quorum");
    let servers: Vec<_> = (0..3).map(|_| pki.server(true)).collect();
    let hosts = servers
        .iter()
        .map(RedisServer::addr)
        .collect::<Vec<_>>()
        .join(",");
    let (ca, cert, key) = (
        pki.pem("ca.crt"),
        pki.pem("client.crt"),
        pki.pem("client.key"),
    );
    let store = connect(&[
        ("quorum", "true"),
        ("redisHosts", &hosts),
        ("enableTLS", "true"),
        ("caCert", &ca),
        ("clientCert", &cert),
        ("clientKey", &key),
    ])
    .await;
    store.health().await.unwrap();
    let key = "lock||tls||quorum";
    let first = fence(store.try_lock(key, "owner", LONG).await.unwrap());
    assert_eq!(
        store.try_lock(key, "other", LONG).await.unwrap(),
        Acquire::HeldByOther
    );
    assert_eq!(store.unlock(key, "owner").await.unwrap(), Release::Released);
    let second = fence(store.try_lock(key, "other", LONG).await.unwrap());
    assert!(second > first, "{first} then {second}");
}
