//! `lock.postgresql`: locks as rows of one PostgreSQL table.
//!
//! ```sql
//! CREATE TABLE <tableName> (
//!     key        text COLLATE "C" PRIMARY KEY,
//!     owner      text        NOT NULL,
//!     fence      bigint      NOT NULL,
//!     expires_at timestamptz NOT NULL
//! );
//! CREATE INDEX <tableName>_expires_at_idx ON <tableName> (expires_at);
//! CREATE SEQUENCE <tableName>_fence_seq;
//! ```
//!
//! A lease is live while `expires_at > now()`, judged by the database's
//! clock alone, never the sidecar's. Every operation is one statement:
//!
//! * acquire inserts the row, or takes over a row whose lease has run out
//!   (`INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE expires_at <= now()`);
//!   the fencing token is drawn from the sequence in that statement, after
//!   the row is locked when it is a take-over;
//! * release, renew and force-unlock are one `UPDATE` of the live row that
//!   reports, through `RETURNING`, which of the outcomes happened; release
//!   and force-unlock call `pg_notify` in the same statement, so a
//!   notification goes out exactly when the change commits.
//!
//! A released or expired row is not deleted at once: it stays as a
//! tombstone (with `expires_at` in the past) so that the next grant of the
//! key takes it over and draws its token after the row is locked. A
//! periodic, bounded `DELETE` (through the index on `expires_at`) removes
//! tombstones older than [`TOMBSTONE_GRACE`] (by default), far longer than any statement
//! may run (`statement_timeout` is set to the request timeout), so no grant
//! can ever get a token smaller than one issued before for the same key.
//!
//! Connections: a small pool of `tokio-postgres` connections, each shared by
//! concurrent requests (the protocol pipelines them), reopened when broken;
//! plus one dedicated connection that `LISTEN`s for release notifications.
//! TLS follows libpq's `sslmode` (`disable`, `prefer`, `require`,
//! `verify-ca`, `verify-full`), `sslrootcert`, `sslcert` and `sslkey`,
//! over rustls with the ring provider (see [`TlsSettings`]).

mod tls;

pub use tls::{TlsMode, TlsSettings};

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use leasehold_core::manifest::Component;
use leasehold_core::metadata::{Metadata, MetadataReader};
use leasehold_core::{
    Acquire, Capabilities, Consistency, Fence, ForceRelease, LockInfo, LockStore, Release,
    ReleaseWait, Renewal, StoreError,
};
use tokio::sync::oneshot;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, Statement};
use tokio_util::sync::CancellationToken;

use crate::StoreContext;

/// The table's name unless `tableName` says otherwise.
pub const DEFAULT_TABLE: &str = "leasehold_locks";

/// How long a released or expired row is kept before the sweeper removes
/// it (see the module docs).
pub const TOMBSTONE_GRACE: Duration = Duration::from_secs(600);

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_CONNS: usize = 4;
const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(60);

/// The sweeper deletes at most this many rows per statement, and at most
/// [`CLEANUP_BATCHES`] statements per round.
const CLEANUP_BATCH: i64 = 1000;
const CLEANUP_BATCHES: usize = 10;

/// A `NOTIFY` payload must stay under 8000 bytes; longer keys are announced
/// with an empty payload, which wakes every watcher of a long key.
const MAX_PAYLOAD: usize = 7900;

/// Longest table name accepted: the derived names (`_fence_seq`,
/// `_expires_at_idx`, `_released`) must fit PostgreSQL's 63-byte limit.
const MAX_TABLE_NAME: usize = 40;

/// Configuration of `lock.postgresql`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The parsed connection string (its `Debug` hides the password);
    /// boxed, because it is large next to the other stores' configurations.
    pub connection: Box<tokio_postgres::Config>,
    /// The table; also the stem of the sequence, index and channel names.
    pub table: String,
    /// How long one operation may take; also the `statement_timeout`.
    pub timeout: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// Connections in the pool (the listener's is extra).
    pub max_conns: usize,
    /// How often tombstones are swept; `None` turns the sweeper off.
    pub cleanup_interval: Option<Duration>,
    /// How long a released or expired row is kept (not read from metadata;
    /// it must stay far above `timeout`, see the module docs).
    pub tombstone_grace: Duration,
    /// TLS, from the connection string's `sslmode`, `sslrootcert`,
    /// `sslcert` and `sslkey` (paths only; read when connecting).
    pub tls: TlsSettings,
}

impl Config {
    /// Read the component's metadata (no I/O).
    pub fn from_component(component: &Component, cx: &StoreContext) -> Result<Self, Vec<String>> {
        let _ = cx;
        Self::from_metadata(&component.metadata)
    }

    /// Read metadata (no I/O); every problem is reported.
    ///
    /// * `connectionString` (required, secret): key=value or URL form, with
    ///   libpq's `sslmode`, `sslrootcert`, `sslcert` and `sslkey` (checked
    ///   here, the files read by [`PostgresStore::connect`]);
    /// * `tableName` (default `leasehold_locks`);
    /// * `timeout` (default 5 s), `connectTimeout` (default 5 s);
    /// * `maxConns` (default 4);
    /// * `cleanupInterval` (default 60 s, `0` turns the sweeper off).
    pub fn from_metadata(metadata: &Metadata) -> Result<Self, Vec<String>> {
        let mut reader = MetadataReader::new(metadata);
        let connection = reader.secret("connectionString");
        let connection = match connection {
            None => {
                reader.error("connectionString", "is required and empty or missing");
                None
            }
            Some(raw) => match tls::split_connection_string(raw.expose()) {
                Err(problem) => {
                    reader.error("connectionString", problem);
                    None
                }
                Ok((rest, settings)) => match rest.parse::<tokio_postgres::Config>() {
                    Ok(mut parsed) => {
                        parsed.ssl_mode(settings.mode.ssl_mode());
                        Some((parsed, settings))
                    }
                    Err(err) => {
                        // The parser's message names the problem, never the
                        // value, so no password reaches the log.
                        reader.error("connectionString", format!("cannot be parsed: {err}"));
                        None
                    }
                },
            },
        };
        if let Some((parsed, _)) = &connection
            && parsed.get_hosts().is_empty()
        {
            reader.error("connectionString", "names no host");
        }
        let table = reader
            .string("tableName")
            .unwrap_or_else(|| DEFAULT_TABLE.to_owned());
        if !valid_table_name(&table) {
            reader.error(
                "tableName",
                format!(
                    "{table:?} is not a plain identifier (lowercase letters, digits and underscores, starting with a letter or underscore, at most {MAX_TABLE_NAME} characters)"
                ),
            );
        }
        let timeout = match reader.duration("timeout") {
            Some(value) if value.is_zero() || value > MAX_TIMEOUT => {
                reader.error(
                    "timeout",
                    format!("must be greater than zero and at most {MAX_TIMEOUT:?}"),
                );
                DEFAULT_TIMEOUT
            }
            Some(value) => value,
            None => DEFAULT_TIMEOUT,
        };
        let connect_timeout = match reader.duration("connectTimeout") {
            Some(value) if value.is_zero() => {
                reader.error("connectTimeout", "must be greater than zero");
                DEFAULT_CONNECT_TIMEOUT
            }
            Some(value) => value,
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let max_conns = reader
            .number::<usize>("maxConns")
            .unwrap_or(DEFAULT_MAX_CONNS);
        if !(1..=64).contains(&max_conns) {
            reader.error("maxConns", format!("{max_conns} is not between 1 and 64"));
        }
        let cleanup_interval = match reader.duration("cleanupInterval") {
            Some(value) if value.is_zero() => None,
            Some(value) => Some(value),
            None => Some(DEFAULT_CLEANUP_INTERVAL),
        };
        reader
            .finish()
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let (connection, tls) = connection.expect("a parse failure was reported above");
        Ok(Config {
            connection: Box::new(connection),
            tls,
            table,
            timeout,
            connect_timeout,
            max_conns,
            cleanup_interval,
            tombstone_grace: TOMBSTONE_GRACE,
        })
    }
}

fn valid_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= MAX_TABLE_NAME
}

/// The SQL of every statement, with the table's names filled in.
#[derive(Debug)]
struct Sql {
    setup: String,
    acquire: String,
    release: String,
    renew: String,
    status: String,
    force: String,
    cleanup: String,
    listen: String,
    channel: String,
    table: String,
}

impl Sql {
    fn new(table: &str) -> Sql {
        let seq = format!("{table}_fence_seq");
        let channel = format!("{table}_released");
        // The payload names the key, or is empty for a key too long for it.
        let payload = format!("CASE WHEN octet_length($1) <= {MAX_PAYLOAD} THEN $1 ELSE '' END");
        Sql {
            // Several sidecars may start at once: the advisory lock makes
            // them create the objects one after another.
            setup: format!(
                "BEGIN;
                 SELECT pg_advisory_xact_lock(hashtext('leasehold schema {table}'));
                 CREATE TABLE IF NOT EXISTS {table} (
                     key text COLLATE \"C\" PRIMARY KEY,
                     owner text NOT NULL,
                     fence bigint NOT NULL,
                     expires_at timestamptz NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS {table}_expires_at_idx ON {table} (expires_at);
                 CREATE SEQUENCE IF NOT EXISTS {seq};
                 COMMIT;"
            ),
            // The token in VALUES serves a fresh insert; a take-over draws a
            // new one in SET, once it holds the row lock.
            acquire: format!(
                "INSERT INTO {table} AS l (key, owner, fence, expires_at)
                 VALUES ($1, $2, nextval('{seq}'), now() + $3::bigint * interval '1 millisecond')
                 ON CONFLICT (key) DO UPDATE
                     SET owner = EXCLUDED.owner, fence = nextval('{seq}'), expires_at = EXCLUDED.expires_at
                     WHERE l.expires_at <= now()
                 RETURNING l.fence"
            ),
            // One row back: released (true) or held by another (false); no
            // row: nothing live. $3, when not null, is the token of the one
            // grant to release: a later grant of the same owner is "another".
            release: format!(
                "UPDATE {table}
                 SET expires_at = CASE WHEN owner = $2 AND fence = coalesce($3, fence)
                     THEN now() ELSE expires_at END
                 WHERE key = $1 AND expires_at > now()
                 RETURNING owner = $2 AND fence = coalesce($3, fence) AS released,
                     (CASE WHEN owner = $2 AND fence = coalesce($3, fence)
                         THEN pg_notify('{channel}', {payload}) END) IS NULL AS quiet"
            ),
            renew: format!(
                "UPDATE {table}
                 SET expires_at = CASE WHEN owner = $2
                     THEN now() + $3::bigint * interval '1 millisecond' ELSE expires_at END
                 WHERE key = $1 AND expires_at > now()
                 RETURNING owner = $2 AS renewed, fence"
            ),
            status: format!(
                "SELECT owner, fence,
                     ceil(extract(epoch FROM (expires_at - now())) * 1000)::bigint AS remaining_ms
                 FROM {table} WHERE key = $1 AND expires_at > now()"
            ),
            force: format!(
                "UPDATE {table} SET expires_at = now()
                 WHERE key = $1 AND expires_at > now()
                 RETURNING owner, fence, pg_notify('{channel}', {payload}) IS NULL AS quiet"
            ),
            // The outer condition is checked again on the newest version
            // of a row that a grant took over meanwhile, so a live lock is
            // never deleted; both sides go through the expires_at index.
            cleanup: format!(
                "DELETE FROM {table}
                 WHERE key IN (
                     SELECT key FROM {table}
                     WHERE expires_at < now() - $1::bigint * interval '1 second'
                     LIMIT $2)
                 AND expires_at < now() - $1::bigint * interval '1 second'"
            ),
            listen: format!("LISTEN {channel}"),
            channel,
            table: table.to_owned(),
        }
    }

    /// A page of live locks by key prefix. The range bounds let the primary
    /// key's index find the first row and stop after the prefix.
    fn list(&self, bounded: bool) -> String {
        let table = &self.table;
        let upper = if bounded { "AND key < $4" } else { "" };
        format!(
            "SELECT key, owner, fence,
                 ceil(extract(epoch FROM (expires_at - now())) * 1000)::bigint AS remaining_ms
             FROM {table}
             WHERE key >= $1 AND key > $2 AND starts_with(key, $1) {upper} AND expires_at > now()
             ORDER BY key LIMIT $3"
        )
    }
}

/// One pooled connection with its prepared statements.
#[derive(Debug)]
struct Conn {
    client: Client,
    acquire: Statement,
    release: Statement,
    renew: Statement,
    status: Statement,
    force: Statement,
}

/// The smallest string greater than every string that starts with
/// `prefix`, in byte order (which is code point order for UTF-8); `None`
/// when there is none.
fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        // Skip the surrogate range, which no `char` occupies.
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

fn ttl_millis(ttl: Duration) -> i64 {
    let whole = ttl.as_millis() + u128::from(!ttl.subsec_nanos().is_multiple_of(1_000_000));
    i64::try_from(whole.max(1)).unwrap_or(i64::MAX)
}

fn fence_from(value: i64) -> Result<Fence, StoreError> {
    Fence::try_from(value)
        .map_err(|_| StoreError::Backend(format!("postgres returned fencing token {value}")))
}

fn remaining_from(millis: i64) -> Duration {
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

fn map_error(what: &str, err: &tokio_postgres::Error, timeout: Duration) -> StoreError {
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        let message = format!("postgres {what}: {} ({})", db.message(), code.code());
        if *code == SqlState::QUERY_CANCELED {
            return StoreError::Timeout(timeout);
        }
        let unavailable = code.code().starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION;
        return if unavailable {
            StoreError::Unavailable(message)
        } else {
            StoreError::Backend(message)
        };
    }
    if err.is_closed() {
        return StoreError::Unavailable(format!("postgres {what}: the connection is closed"));
    }
    // Anything else that is not the database's answer is the connection's
    // fault: refused, reset, unreachable. The cause is in the source chain.
    let mut message = format!("postgres {what}: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    StoreError::Unavailable(message)
}

/// The pool: a fixed set of slots, each holding a connection that is
/// (re)opened on demand.
///
/// Every request on a key goes to the slot chosen by a hash of the key.
/// A connection runs its requests in the order they were sent, so a
/// request that was sent and then abandoned by its caller (a dropped
/// future) still runs before that caller's next request on the same key:
/// an unlock after a cancelled acquire sees the lock the acquire took.
#[derive(Debug)]
struct Pool {
    config: tokio_postgres::Config,
    tls: tls::MakeRustls,
    sql: Arc<Sql>,
    slots: Box<[Mutex<Option<Arc<Conn>>>]>,
    /// Round robin for requests that name no key.
    next: AtomicUsize,
    hasher: RandomState,
    connect_timeout: Duration,
    timeout: Duration,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single read or write of an `Option`
    // or a map operation, so a poisoned mutex holds consistent data.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Pool {
    /// Open a connection and drive it in a task of its own.
    async fn open_client(
        &self,
    ) -> Result<
        (
            Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                tls::RustlsStream<tokio_postgres::Socket>,
            >,
        ),
        StoreError,
    > {
        match timeout(self.connect_timeout, self.config.connect(self.tls.clone())).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(err)) => Err(map_error("connect", &err, self.timeout)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "postgres connect: no connection within {:?}",
                self.connect_timeout
            ))),
        }
    }

    async fn open(&self) -> Result<Arc<Conn>, StoreError> {
        let (client, connection) = self.open_client().await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "postgres connection ended");
            }
        });
        let sql = &self.sql;
        let prepared = timeout(self.timeout, async {
            tokio::try_join!(
                client.prepare(&sql.acquire),
                client.prepare(&sql.release),
                client.prepare(&sql.renew),
                client.prepare(&sql.status),
                client.prepare(&sql.force),
            )
        })
        .await;
        let (acquire, release, renew, status, force) = match prepared {
            Ok(Ok(statements)) => statements,
            Ok(Err(err)) => return Err(map_error("prepare", &err, self.timeout)),
            Err(_) => return Err(StoreError::Timeout(self.timeout)),
        };
        Ok(Arc::new(Conn {
            client,
            acquire,
            release,
            renew,
            status,
            force,
        }))
    }

    /// A live connection: the key's slot's (or the next slot's, for no
    /// key), reopened if it broke. While the database is down every call tries one connect, which fails at once
    /// with a refused connection, so errors come back fast.
    async fn get(&self, key: Option<&str>) -> Result<Arc<Conn>, StoreError> {
        let spread = match key {
            Some(key) => self.hasher.hash_one(key) as usize,
            None => self.next.fetch_add(1, Ordering::Relaxed),
        };
        let index = spread % self.slots.len();
        let slot = &self.slots[index];
        if let Some(conn) = lock(slot).as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(conn.clone());
        }
        let conn = self.open().await?;
        let mut current = lock(slot);
        // Another request may have refilled the slot meanwhile; either
        // connection works, keep the one already there.
        match current.as_ref().filter(|c| !c.client.is_closed()) {
            Some(existing) => Ok(existing.clone()),
            None => {
                *current = Some(conn.clone());
                Ok(conn)
            }
        }
    }
}

/// Watchers of release notifications, by key (long keys under "").
type Waiters = HashMap<String, Vec<oneshot::Sender<()>>>;

/// The `LISTEN` connection and the watchers it wakes.
#[derive(Debug, Default)]
struct Listener {
    waiters: Mutex<Waiters>,
    /// The live listening connection, if any.
    current: Mutex<Option<Arc<ListenConn>>>,
}

#[derive(Debug)]
struct ListenConn {
    client: Client,
    alive: AtomicBool,
    /// Ends this listener without waking the watchers: another listener
    /// serves them.
    retire: CancellationToken,
}

impl Listener {
    fn register(&self, key: &str) -> oneshot::Receiver<()> {
        let (sender, receiver) = oneshot::channel();
        let slot = if key.len() <= MAX_PAYLOAD { key } else { "" };
        let mut waiters = lock(&self.waiters);
        let list = waiters.entry(slot.to_owned()).or_default();
        // Watchers that gave up are dropped here, so an abandoned key does
        // not collect them.
        list.retain(|sender| !sender.is_closed());
        list.push(sender);
        receiver
    }

    fn wake(&self, payload: &str) {
        let woken = lock(&self.waiters).remove(payload);
        for sender in woken.into_iter().flatten() {
            let _ = sender.send(());
        }
    }

    fn wake_all(&self) {
        let all = std::mem::take(&mut *lock(&self.waiters));
        for sender in all.into_values().flatten() {
            let _ = sender.send(());
        }
    }

    fn is_listening(&self) -> bool {
        lock(&self.current)
            .as_ref()
            .is_some_and(|conn| conn.alive.load(Ordering::SeqCst))
    }
}

/// A lock store on PostgreSQL.
#[derive(Debug)]
pub struct PostgresStore {
    pool: Arc<Pool>,
    listener: Arc<Listener>,
    stop: CancellationToken,
}

impl PostgresStore {
    /// Connect, create the table, sequence and index if missing, and start
    /// the sweeper.
    pub async fn connect(config: Config) -> Result<PostgresStore, StoreError> {
        let mut connection = *config.connection;
        // A statement can never outlive the request that sent it; the
        // tombstone grace relies on this bound.
        let bound = format!("-c statement_timeout={}", config.timeout.as_millis());
        let options = match connection.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {bound}"),
            _ => bound,
        };
        connection
            .options(options)
            .connect_timeout(config.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if connection.get_application_name().is_none() {
            connection.application_name("leasehold");
        }
        // The certificate files are read here, once for every connection.
        let client_tls = tls::client_config(&config.tls)
            .map_err(|problem| StoreError::Backend(format!("postgres TLS: {problem}")))?;
        let sql = Arc::new(Sql::new(&config.table));
        let pool = Arc::new(Pool {
            config: connection,
            tls: tls::MakeRustls::new(client_tls),
            sql: sql.clone(),
            slots: (0..config.max_conns).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            hasher: RandomState::new(),
            connect_timeout: config.connect_timeout,
            timeout: config.timeout,
        });

        let (client, connection) = pool.open_client().await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        match timeout(config.timeout, client.batch_execute(&sql.setup)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(map_error("creating the lock table", &err, config.timeout)),
            Err(_) => return Err(StoreError::Timeout(config.timeout)),
        }
        drop(client);
        // Fail now, not at the first request, if statements do not prepare.
        pool.get(None).await?;

        let stop = CancellationToken::new();
        if let Some(every) = config.cleanup_interval {
            tokio::spawn(sweep(
                Arc::downgrade(&pool),
                every,
                config.tombstone_grace,
                stop.clone(),
            ));
        }
        Ok(PostgresStore {
            pool,
            listener: Arc::new(Listener::default()),
            stop,
        })
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.pool.timeout
    }

    /// Run `op` on a pooled connection within the request timeout.
    async fn run<T, F, Fut>(&self, what: &str, key: Option<&str>, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Arc<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let deadline = self.deadline();
        let conn = match timeout_at(deadline, self.pool.get(key)).await {
            Ok(conn) => conn?,
            Err(_) => return Err(StoreError::Timeout(self.pool.timeout)),
        };
        match timeout_at(deadline, op(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(map_error(what, &err, self.pool.timeout)),
            Err(_) => Err(StoreError::Timeout(self.pool.timeout)),
        }
    }

    /// Make sure a connection is listening on the release channel; the
    /// `LISTEN` has been acknowledged when this returns.
    async fn ensure_listening(&self) -> Result<(), StoreError> {
        if self.listener.is_listening() {
            return Ok(());
        }
        let (client, mut connection) = self.pool.open_client().await?;
        let conn = Arc::new(ListenConn {
            client,
            alive: AtomicBool::new(true),
            retire: self.stop.child_token(),
        });
        let listener = Arc::downgrade(&self.listener);
        let channel = self.pool.sql.channel.clone();
        let task_conn = conn.clone();
        tokio::spawn(async move {
            let mut retired = false;
            loop {
                let message = tokio::select! {
                    _ = task_conn.retire.cancelled() => {
                        retired = true;
                        break;
                    }
                    message = std::future::poll_fn(|cx| connection.poll_message(cx)) => message,
                };
                match message {
                    Some(Ok(AsyncMessage::Notification(note))) if note.channel() == channel => {
                        match listener.upgrade() {
                            Some(listener) => listener.wake(note.payload()),
                            None => break,
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => {
                        tracing::debug!(error = %err, "postgres listener connection failed");
                        break;
                    }
                    None => break,
                }
            }
            // Marked dead before the wake-up, so a watcher that registers
            // after it opens a new listener.
            task_conn.alive.store(false, Ordering::SeqCst);
            if !retired && let Some(listener) = listener.upgrade() {
                // Nobody hears releases any more: wake every watcher, who
                // tries again and subscribes anew.
                listener.wake_all();
            }
        });
        let listen = timeout(
            self.pool.timeout,
            conn.client.batch_execute(&self.pool.sql.listen),
        )
        .await;
        let failed = match listen {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(map_error("listen", &err, self.pool.timeout)),
            Err(_) => Some(StoreError::Timeout(self.pool.timeout)),
        };
        if let Some(err) = failed {
            conn.retire.cancel();
            return Err(err);
        }
        let mut current = lock(&self.listener.current);
        if current
            .as_ref()
            .is_some_and(|other| other.alive.load(Ordering::SeqCst))
        {
            // A concurrent watch opened one first; one is enough.
            drop(current);
            conn.retire.cancel();
        } else {
            *current = Some(conn);
        }
        Ok(())
    }
}

#[async_trait]
impl LockStore for PostgresStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fencing: true,
            renew: true,
            release_notify: true,
            admin: true,
            durable: true,
            // One primary decides every grant; a failover to an
            // asynchronous standby can lose recent grants, which the docs
            // spell out.
            consistency: Consistency::Linearizable,
        }
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<Acquire, StoreError> {
        let millis = ttl_millis(ttl);
        let row = self
            .run("acquire", Some(key), |conn| async move {
                conn.client
                    .query_opt(&conn.acquire, &[&key, &owner, &millis])
                    .await
            })
            .await?;
        match row {
            Some(row) => Ok(Acquire::Acquired {
                fence: fence_from(row.get(0))?,
            }),
            None => Ok(Acquire::HeldByOther),
        }
    }

    async fn release(
        &self,
        key: &str,
        owner: &str,
        grant: Option<Fence>,
    ) -> Result<Release, StoreError> {
        let grant = grant.map(|fence| i64::try_from(fence).unwrap_or(i64::MAX));
        let row = self
            .run("release", Some(key), |conn| async move {
                conn.client
                    .query_opt(&conn.release, &[&key, &owner, &grant])
                    .await
            })
            .await?;
        Ok(match row.map(|row| row.get::<_, bool>(0)) {
            Some(true) => Release::Released,
            Some(false) => Release::HeldByOther,
            None => Release::NotFound,
        })
    }

    async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Result<Renewal, StoreError> {
        let millis = ttl_millis(ttl);
        let row = self
            .run("renew", Some(key), |conn| async move {
                conn.client
                    .query_opt(&conn.renew, &[&key, &owner, &millis])
                    .await
            })
            .await?;
        match row {
            Some(row) if row.get::<_, bool>(0) => Ok(Renewal::Renewed {
                fence: fence_from(row.get(1))?,
            }),
            Some(_) => Ok(Renewal::HeldByOther),
            None => Ok(Renewal::NotFound),
        }
    }

    async fn status(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        let row = self
            .run("status", Some(key), |conn| async move {
                conn.client.query_opt(&conn.status, &[&key]).await
            })
            .await?;
        row.map(|row| {
            Ok(LockInfo {
                key: key.to_owned(),
                owner: row.get(0),
                fence: fence_from(row.get(1))?,
                remaining: remaining_from(row.get(2)),
            })
        })
        .transpose()
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LockInfo>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Keys are never empty, so `key > ''` lets every key through.
        let after = after.unwrap_or("");
        let successor = prefix_successor(prefix);
        let sql = self.pool.sql.list(successor.is_some());
        let rows = self
            .run("list", None, |conn| async move {
                match &successor {
                    Some(upper) => {
                        conn.client
                            .query(&sql, &[&prefix, &after, &limit, upper])
                            .await
                    }
                    None => conn.client.query(&sql, &[&prefix, &after, &limit]).await,
                }
            })
            .await?;
        rows.iter()
            .map(|row| {
                Ok(LockInfo {
                    key: row.get(0),
                    owner: row.get(1),
                    fence: fence_from(row.get(2))?,
                    remaining: remaining_from(row.get(3)),
                })
            })
            .collect()
    }

    async fn force_unlock(&self, key: &str) -> Result<ForceRelease, StoreError> {
        let row = self
            .run("force-unlock", Some(key), |conn| async move {
                conn.client.query_opt(&conn.force, &[&key]).await
            })
            .await?;
        match row {
            Some(row) => Ok(ForceRelease::Released {
                owner: row.get(0),
                fence: fence_from(row.get(1))?,
            }),
            None => Ok(ForceRelease::NotFound),
        }
    }

    /// Resolves on a `NOTIFY` for the key (a release or a force-unlock), or
    /// when the lease the database reports has run out, or when the
    /// listening connection breaks (a spurious wake-up: the caller tries
    /// again). Resolves at once if no live lease exists.
    async fn watch_release(&self, key: &str) -> Result<ReleaseWait, StoreError> {
        // Registered before LISTEN is confirmed and before the lease is
        // read, so no release between here and the caller's acquire is
        // missed.
        let notified = self.listener.register(key);
        self.ensure_listening().await?;
        let remaining = self.status(key).await?.map(|info| info.remaining);
        Ok(Box::pin(async move {
            let Some(remaining) = remaining else {
                return;
            };
            // A little past the end, so the expiry has happened by the
            // database's clock when the caller tries again.
            let expiry = tokio::time::sleep(remaining + Duration::from_millis(20));
            tokio::select! {
                _ = notified => {}
                () = expiry => {}
            }
        }))
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.run("health check", None, |conn| async move {
            conn.client.simple_query("SELECT 1").await
        })
        .await
        .map(|_| ())
    }

    async fn close(&self) {
        self.stop.cancel();
        // Pending watches would never hear anything again.
        self.listener.wake_all();
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.stop.cancel();
        self.listener.wake_all();
    }
}

/// Remove old tombstones in bounded batches through the `expires_at` index.
async fn sweep(
    pool: std::sync::Weak<Pool>,
    every: Duration,
    grace: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once; nothing is old enough yet.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(pool) = pool.upgrade() else { return };
        let grace = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        for _ in 0..CLEANUP_BATCHES {
            let Ok(conn) = pool.get(None).await else {
                break;
            };
            let deleted = timeout(
                pool.timeout,
                conn.client
                    .execute(&pool.sql.cleanup, &[&grace, &CLEANUP_BATCH]),
            )
            .await;
            match deleted {
                Ok(Ok(count)) if count == CLEANUP_BATCH as u64 => continue,
                Ok(Ok(_)) => break,
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, "postgres tombstone sweep failed");
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        Config::from_metadata(&Metadata::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn reads_every_field() {
        let config = config(&[
            (
                "connectionString",
                "host=db port=5433 user=app password=hunter2 dbname=locks",
            ),
            ("tableName", "app_locks"),
            ("timeout", "2s"),
            ("connectTimeout", "3s"),
            ("maxConns", "8"),
            ("cleanupInterval", "0"),
        ])
        .unwrap();
        assert_eq!(config.table, "app_locks");
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert_eq!(config.connect_timeout, Duration::from_secs(3));
        assert_eq!(config.max_conns, 8);
        assert_eq!(config.cleanup_interval, None);
        assert_eq!(config.connection.get_ports(), [5433]);
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn url_form_and_defaults() {
        let config = config(&[(
            "connectionString",
            "postgres://app:secret@db:5432/locks?sslmode=disable",
        )])
        .unwrap();
        assert_eq!(config.table, DEFAULT_TABLE);
        assert_eq!(config.max_conns, DEFAULT_MAX_CONNS);
        assert_eq!(config.cleanup_interval, Some(DEFAULT_CLEANUP_INTERVAL));
        assert_eq!(config.connection.get_dbname(), Some("locks"));
    }

    #[test]
    fn reports_every_problem() {
        let errors = config(&[
            ("connectionString", "host=db sslmode=verify-full"),
            ("tableName", "locks; DROP TABLE x"),
            ("timeout", "1h"),
            ("maxConns", "0"),
        ])
        .unwrap_err();
        let joined = errors.join("\n");
        for needle in ["sslrootcert", "`tableName`", "`timeout`", "`maxConns`"] {
            assert!(joined.contains(needle), "{needle} missing from {joined}");
        }
        assert_eq!(config(&[]).unwrap_err().len(), 1);
    }

    #[test]
    fn tls_parameters_in_both_forms() {
        let config = config(&[(
            "connectionString",
            "host=db user=app password='it\\'s x' sslmode=verify-full sslrootcert='/etc/my ca.pem' sslcert=/c.pem sslkey=/k.pem dbname=locks",
        )])
        .unwrap();
        assert_eq!(config.tls.mode, TlsMode::VerifyFull);
        assert_eq!(
            config.tls.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/my ca.pem"))
        );
        assert_eq!(
            config.tls.client_key.as_deref(),
            Some(std::path::Path::new("/k.pem"))
        );
        assert_eq!(config.connection.get_password(), Some(&b"it's x"[..]));
        assert_eq!(config.connection.get_dbname(), Some("locks"));
        assert_eq!(
            config.connection.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );

        let config = self::config(&[(
            "connectionString",
            "postgresql://app:secret@db/locks?application_name=x&sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem",
        )])
        .unwrap();
        assert_eq!(config.tls.mode, TlsMode::VerifyCa);
        assert_eq!(
            config.tls.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(config.connection.get_application_name(), Some("x"));

        let config = self::config(&[("connectionString", "host=db password=pw")]).unwrap();
        assert_eq!(config.tls, TlsSettings::default());
        assert_eq!(config.tls.mode, TlsMode::Prefer);
        let config = self::config(&[("connectionString", "host=db sslmode=require")]).unwrap();
        assert_eq!(config.tls.mode, TlsMode::Require);
        assert!(config.tls.root_cert.is_none());
    }

    #[test]
    fn tls_problems_name_the_field_and_no_secret() {
        for (connection, needle) in [
            ("host=db password=hunter2 sslmode=verify-ca", "sslrootcert"),
            ("host=db password=hunter2 sslmode=bogus", "sslmode"),
            (
                "host=db password=hunter2 sslmode=require sslcert=/c.pem",
                "sslkey",
            ),
            (
                "host=db password=hunter2 sslmode=disable sslrootcert=/ca.pem",
                "disable",
            ),
            (
                "postgres://u:hunter2@db/x?sslmode=verify-full",
                "sslrootcert",
            ),
            ("host=db password=hunter2 sslrootcert=", "sslrootcert"),
        ] {
            let errors = config(&[("connectionString", connection)]).unwrap_err();
            let joined = errors.join("\n");
            assert!(joined.contains("`connectionString`"), "{joined}");
            assert!(joined.contains(needle), "{needle} missing from {joined}");
            assert!(!joined.contains("hunter2"), "{joined}");
        }
        let config = config(&[(
            "connectionString",
            "host=db password=hunter2 sslmode=verify-full sslrootcert=/ca.pem sslcert=/c.pem sslkey=/k.pem",
        )])
        .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn tls_files_are_read_at_connect_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let settings = TlsSettings {
            mode: TlsMode::VerifyFull,
            root_cert: Some(missing),
            ..TlsSettings::default()
        };
        let err = tls::client_config(&settings).unwrap_err();
        assert!(err.starts_with("sslrootcert"), "{err}");
        assert!(err.contains("missing.pem"), "{err}");

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate, secret-ish bytes").unwrap();
        let settings = TlsSettings {
            mode: TlsMode::Require,
            root_cert: Some(junk),
            ..TlsSettings::default()
        };
        let err = tls::client_config(&settings).unwrap_err();
        assert!(!err.contains("secret-ish"), "{err}");

        let plain = TlsSettings {
            mode: TlsMode::Disable,
            ..TlsSettings::default()
        };
        assert!(tls::client_config(&plain).unwrap().is_none());
        let unverified = TlsSettings {
            mode: TlsMode::Require,
            ..TlsSettings::default()
        };
        assert!(tls::client_config(&unverified).unwrap().is_some());
    }

    #[test]
    fn table_names() {
        assert!(valid_table_name("leasehold_locks"));
        assert!(valid_table_name("_t1"));
        assert!(!valid_table_name("1t"));
        assert!(!valid_table_name("Locks"));
        assert!(!valid_table_name("a.b"));
        assert!(!valid_table_name(""));
        assert!(!valid_table_name(&"a".repeat(MAX_TABLE_NAME + 1)));
    }

    #[test]
    fn successors_and_millis() {
        assert_eq!(prefix_successor("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_secs(2)), 2000);
    }
}
