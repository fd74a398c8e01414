//! `lock.postgresql` against a real PostgreSQL 15: the conformance suite,
//! several sidecars on one table, and a database that goes away and comes
//! back.

#![cfg(feature = "postgres")]

use std::sync::Arc;
use std::time::Duration;

use leasehold_core::metadata::Metadata;
use leasehold_core::{Acquire, LockStore, Release, StoreErrorKind};
use leasehold_stores::postgres::{Config, PostgresStore};
use leasehold_testkit::pki::{TestCa, Usage};
use leasehold_testkit::postgres::Postgres;
use std::path::PathBuf;
use std::process::Command;
use tokio::time::{Instant, sleep, timeout};

const LONG: Duration = Duration::from_secs(60);

fn config(connection: &str, table: &str, request_timeout: &str) -> Config {
    Config::from_metadata(&Metadata::from_pairs([
        ("connectionString", connection),
        ("tableName", table),
        ("timeout", request_timeout),
        ("connectTimeout", "2s"),
        ("maxConns", "3"),
    ]))
    .expect("valid metadata")
}

async fn connect(connection: &str, table: &str) -> Arc<PostgresStore> {
    Arc::new(
        PostgresStore::connect(config(connection, table, "5s"))
            .await
            .expect("connect to postgres"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let server = Postgres::start();
    let store = connect(&server.connection_string(), "leasehold_locks").await;
    leasehold_core::testsuite::run_all(store, "postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_share_one_table_and_hear_each_others_releases() {
    let server = Postgres::start();
    // Both create the table at once; the URL form works as well.
    let (key_value, url) = (server.connection_string(), server.connection_url());
    let (a, b) = tokio::join!(
        connect(&key_value, "shared_locks"),
        connect(&url, "shared_locks"),
    );
    let key = "lock||app||shared";
    let fence = match a.try_lock(key, "owner-a", LONG).await.unwrap() {
        Acquire::Acquired { fence } => fence,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        b.try_lock(key, "owner-b", LONG).await.unwrap(),
        Acquire::HeldByOther
    );
    let watch = b.watch_release(key).await.unwrap();
    assert_eq!(a.unlock(key, "owner-a").await.unwrap(), Release::Released);
    timeout(Duration::from_secs(10), watch)
        .await
        .expect("b heard of a's release");
    match b.try_lock(key, "owner-b", LONG).await.unwrap() {
        Acquire::Acquired { fence: next } => assert!(next > fence),
        other => panic!("{other:?}"),
    }

    // A force-unlock notifies too.
    let watch = a.watch_release(key).await.unwrap();
    b.force_unlock(key).await.unwrap();
    timeout(Duration::from_secs(10), watch)
        .await
        .expect("a heard of the force-unlock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_removes_old_rows_and_tokens_keep_growing() {
    let server = Postgres::start();
    let mut config = Config::from_metadata(&Metadata::from_pairs([
        ("connectionString", server.connection_string().as_str()),
        ("tableName", "swept"),
        ("cleanupInterval", "100ms"),
    ]))
    .expect("valid metadata");
    // Far below what production keeps, to see the sweep within the test.
    config.tombstone_grace = Duration::ZERO;
    let store = PostgresStore::connect(config).await.expect("connect");
    let (client, connection) =
        tokio_postgres::connect(&server.connection_string(), tokio_postgres::NoTls)
            .await
            .expect("a direct connection");
    tokio::spawn(connection);
    let rows = || async {
        client
            .query_one("SELECT count(*) FROM swept", &[])
            .await
            .expect("count")
            .get::<_, i64>(0)
    };

    let key = "lock||sweep||a";
    let live = "lock||sweep||live";
    let first = match store.try_lock(key, "owner", LONG).await.unwrap() {
        Acquire::Acquired { fence } => fence,
        other => panic!("{other:?}"),
    };
    store.try_lock(live, "owner", LONG).await.unwrap();
    assert_eq!(store.unlock(key, "owner").await.unwrap(), Release::Released);
    let deadline = Instant::now() + Duration::from_secs(20);
    while rows().await != 1 {
        assert!(
            Instant::now() < deadline,
            "the released row was never swept"
        );
        sleep(Duration::from_millis(50)).await;
    }
    // The live lock was left alone, and a new grant of the swept key gets
    // a greater token.
    assert_eq!(
        store.try_lock(live, "intruder", LONG).await.unwrap(),
        Acquire::HeldByOther
    );
    match store.try_lock(key, "next", LONG).await.unwrap() {
        Acquire::Acquired { fence } => assert!(fence > first),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_a_database_that_is_not_there() {
    let port = leasehold_testkit::free_port();
    let connection = format!("host=127.0.0.1 port={port} user=postgres");
    let err = PostgresStore::connect(config(&connection, "t", "1s"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Unavailable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_fast_while_down_and_recovers_by_itself() {
    let mut server = Postgres::start();
    let store = Arc::new(
        PostgresStore::connect(config(&server.connection_string(), "recover", "2s"))
            .await
            .expect("connect"),
    );
    let held = "lock||recover||held";
    assert!(matches!(
        store.try_lock(held, "owner", LONG).await.unwrap(),
        Acquire::Acquired { .. }
    ));
    // A watcher is woken when its listening connection goes away.
    let watch = store.watch_release(held).await.unwrap();

    let mut server = tokio::task::spawn_blocking(move || {
        server.kill();
        server
    })
    .await
    .expect("kill task panicked");
    timeout(Duration::from_secs(10), watch)
        .await
        .expect("the watcher was woken when the listener broke");
    for _ in 0..3 {
        let started = Instant::now();
        let err = store
            .try_lock("lock||recover||other", "owner", LONG)
            .await
            .expect_err("postgres is down");
        eprintln!("while down: {err} after {:?}", started.elapsed());
        assert!(
            matches!(
                err.kind(),
                StoreErrorKind::Unavailable | StoreErrorKind::Timeout
            ),
            "{err}"
        );
        assert!(store.health().await.is_err());
        assert!(store.watch_release(held).await.is_err());
    }

    // Back on the same port with the same data: the pool reconnects by
    // itself and the lease taken before the outage is still there.
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
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
    let watch = store.watch_release(held).await.unwrap();
    assert_eq!(
        store.unlock(held, "owner").await.unwrap(),
        Release::Released
    );
    timeout(Duration::from_secs(10), watch)
        .await
        .expect("release heard after the listener reconnected");
    drop(server);
}

/// A server with `ssl = on` and a certificate for IP 127.0.0.1 from a CA
/// of its own; also a CA that did not sign it.
struct TlsServer {
    server: Postgres,
    ca: PathBuf,
    wrong_ca: PathBuf,
    _dir: tempfile::TempDir,
}

fn start_tls_server() -> TlsServer {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let wrong_ca = TestCa::new(dir.path(), "other-ca");
    let issued = ca.issue("server", Usage::Server);
    let server = Postgres::start_tls(&issued.cert, &issued.key);
    TlsServer {
        server,
        ca: ca.cert(),
        wrong_ca: wrong_ca.cert(),
        _dir: dir,
    }
}

/// The number of this server's `leasehold` sessions that use TLS, and of
/// those that do not, as the server sees them.
fn tls_sessions(server: &Postgres) -> (u32, u32) {
    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'leasehold'",
        ])
        .output()
        .expect("cannot run psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (with, without) = text.trim().split_once('|').expect("two counts");
    (with.parse().unwrap(), without.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_tls_verify_full() {
    let tls = start_tls_server();
    let connection = format!(
        "{} sslmode=verify-full sslrootcert='{}'",
        tls.server.connection_string(),
        tls.ca.display()
    );
    let store = connect(&connection, "tls_locks").await;
    leasehold_core::testsuite::run_all(store.clone(), "postgres-tls").await;
    let (with, without) = tls_sessions(&tls.server);
    assert!(with >= 1, "no TLS session seen");
    assert_eq!(without, 0, "a session without TLS");
    store.close().await;

    // The URL form carries the same parameters.
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        tls.server.connection_url(),
        tls.ca.display()
    );
    let store = connect(&url, "tls_locks").await;
    assert!(matches!(
        store
            .try_lock("lock||app||url", "owner", LONG)
            .await
            .unwrap(),
        Acquire::Acquired { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_wrong_ca_is_refused_clearly() {
    let tls = start_tls_server();
    let connection = format!(
        "{} sslmode=verify-full sslrootcert={}",
        tls.server.connection_string(),
        tls.wrong_ca.display()
    );
    let err = PostgresStore::connect(config(&connection, "tls_locks", "5s"))
        .await
        .expect_err("a server certificate from another CA must be refused");
    assert_eq!(err.kind(), StoreErrorKind::Unavailable);
    let message = err.to_string();
    assert!(
        message.contains("TLS") && message.contains("invalid peer certificate: UnknownIssuer"),
        "{message}"
    );

    // verify-ca checks the chain only: a host name the certificate does not
    // carry is accepted, a wrong CA is not.
    let by_name = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=postgres dbname=postgres",
        tls.server.port
    );
    let full = format!(
        "{by_name} sslmode=verify-full sslrootcert={}",
        tls.ca.display()
    );
    let err = PostgresStore::connect(config(&full, "tls_locks", "5s"))
        .await
        .expect_err("the certificate does not name localhost");
    assert!(
        err.to_string()
            .contains("certificate not valid for name \"localhost\""),
        "{err}"
    );
    let chain_only = format!(
        "{by_name} sslmode=verify-ca sslrootcert={}",
        tls.ca.display()
    );
    PostgresStore::connect(config(&chain_only, "tls_locks", "5s"))
        .await
        .expect("verify-ca ignores the name");

    // require without a root certificate encrypts without verifying.
    let require = format!("{} sslmode=require", tls.server.connection_string());
    PostgresStore::connect(config(&require, "tls_locks", "5s"))
        .await
        .expect("require skips verification without sslrootcert");
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

/// The example component file is valid as shipped.
#[test]
fn example_component_validates() {
    example_validates(
        "postgresql.yaml",
        "host=127.0.0.1 port=5432 user=leasehold password=hunter2 dbname=locks",
    );
}

/// The TLS example is valid as shipped, with the connection string its
/// comment suggests.
#[test]
fn tls_example_component_validates() {
    example_validates(
        "postgresql-tls.yaml",
        "host=db.internal port=5432 user=leasehold password=hunter2 dbname=locks \
         sslmode=verify-full sslrootcert=/etc/leasehold/pg-ca.crt \
         sslcert=/etc/leasehold/pg-client.crt sslkey=/etc/leasehold/pg-client.key",
    );
}

fn example_validates(file: &str, connection: &'static str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/components")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("example file");
    let pairs: &'static [(&'static str, &'static str)] =
        Box::leak(Box::new([("LOCKS_PG_CONNECTION_STRING", connection)]));
    let env = FixedEnv(pairs);
    let cx = leasehold_core::manifest::LoadContext {
        app_id: "app",
        env: &env,
    };
    let mut loaded = leasehold_core::manifest::Loaded::default();
    let mut errors = Vec::new();
    leasehold_core::manifest::parse_file(&path, &text, cx, &mut loaded, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(loaded.components.len(), 1);
    let store_cx = leasehold_stores::StoreContext {
        app_id: "app".to_owned(),
        data_dir: std::env::temp_dir(),
    };
    let config = leasehold_stores::validate(&loaded.components[0], &store_cx)
        .unwrap_or_else(|errors| panic!("{errors:?}"));
    assert!(matches!(config, leasehold_stores::StoreConfig::Postgres(_)));
}
