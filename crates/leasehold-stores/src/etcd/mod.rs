//! `lock.etcd`: locks in an etcd v3 cluster.
//!
//! Each lock is one key, `<etcdKeyPrefix><scoped key>`, whose value is the
//! owner and which is attached to a lease of its own. The lease, measured by
//! the etcd leader alone, is the lock's lifetime: when it runs out etcd
//! deletes the key. Leases are whole seconds, so a requested length is
//! rounded up to the next second (at least one), and etcd itself raises very
//! short leases to its minimum (1.5 × the election timeout, 2 s with the
//! default settings).
//!
//! | operation | round trips |
//! |---|---|
//! | acquire | lease grant, then one transaction `create_revision(key) == 0 → put(key, owner, lease)` |
//! | release | one transaction `value(key) == owner → delete(key)`, then the lease is revoked in the background |
//! | renew | lease grant, then one transaction `value(key) == owner → put(key, owner, new lease)`; the old lease is revoked in the background |
//! | status, list | a range read, then one lease time-to-live per lock found |
//! | force-unlock | one delete |
//!
//! The fencing token is the key's create revision: etcd numbers every write
//! of the cluster in one sequence, so a later grant of any key has a greater
//! token, across restarts of sidecars and of etcd members alike.
//!
//! Lease grants are separate from the transaction that uses them, so a
//! grant can be left over: when the transaction fails or loses, the lease is
//! revoked at once, and if even that is impossible (the caller went away, or
//! etcd did) it runs out by itself after the requested length. A retry of a
//! transaction whose reply was lost recognises its own success by the lease
//! id stored with the key.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchFilterType, WatchOptions,
};
use leasehold_core::manifest::Component;
use leasehold_core::metadata::{Metadata, MetadataReader, Secret};
use leasehold_core::{
    Acquire, Capabilities, Consistency, Fence, ForceRelease, LockInfo, LockStore, Release,
    ReleaseWait, Renewal, StoreError,
};
use tokio::time::{Instant, sleep, timeout_at};

use crate::StoreContext;

/// The store's keys live under this prefix unless `etcdKeyPrefix` says
/// otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "leasehold/locks/";

const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many tries of one RPC when the cluster has several members
/// and a member is unreachable or an election is under way.
const MAX_ATTEMPTS: u32 = 8;

/// gRPC status codes, compared by number (`tonic::Code` is not a direct
/// dependency of this crate).
const GRPC_CANCELLED: i32 = 1;
const GRPC_UNKNOWN: i32 = 2;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_UNAVAILABLE: i32 = 14;

/// Configuration of `lock.etcd`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Client URLs of the members (`http://host:port`).
    pub endpoints: Vec<String>,
    /// User and password for etcd's authentication, if enabled.
    pub user: Option<(String, Secret)>,
    /// Prefix of every key this store writes.
    pub key_prefix: String,
    /// How long opening a connection to a member may take.
    pub dial_timeout: Duration,
    /// How long one store operation may take, retries included.
    pub request_timeout: Duration,
}

impl Config {
    /// Read the component's metadata (no I/O).
    pub fn from_component(component: &Component, cx: &StoreContext) -> Result<Self, Vec<String>> {
        let _ = cx;
        Self::from_metadata(&component.metadata)
    }

    /// Read metadata (no I/O); every problem is reported.
    ///
    /// * `endpoints` (required): comma-separated member URLs or `host:port`;
    /// * `username`, `password` (secret): etcd authentication;
    /// * `etcdKeyPrefix` (default `leasehold/locks/`);
    /// * `dialTimeout`, `requestTimeout` (default 5 s each);
    /// * `tlsEnable`, `caCert`, `clientCert`, `clientKey`: refused, this
    ///   build talks plain HTTP/2 to etcd.
    pub fn from_metadata(metadata: &Metadata) -> Result<Self, Vec<String>> {
        let mut reader = MetadataReader::new(metadata);
        let endpoints = reader
            .required("endpoints")
            .map(|raw| parse_endpoints(&raw, &mut reader))
            .unwrap_or_default();
        let username = reader.string("username");
        let password = reader.secret("password");
        let user = match (username, password) {
            (Some(name), Some(password)) => Some((name, password)),
            (Some(_), None) => {
                reader.error("password", "is required when `username` is set");
                None
            }
            (None, Some(_)) => {
                reader.error("username", "is required when `password` is set");
                None
            }
            (None, None) => None,
        };
        let key_prefix = reader
            .raw("etcdKeyPrefix")
            .map_or_else(|| DEFAULT_KEY_PREFIX.to_owned(), str::to_owned);
        let dial_timeout = positive(&mut reader, "dialTimeout", DEFAULT_DIAL_TIMEOUT);
        let request_timeout = positive(&mut reader, "requestTimeout", DEFAULT_REQUEST_TIMEOUT);
        if reader.bool("tlsEnable") == Some(true) {
            reader.error("tlsEnable", TLS_REFUSAL);
        }
        for field in ["caCert", "clientCert", "clientKey"] {
            if reader.string(field).is_some() {
                reader.error(field, TLS_REFUSAL);
            }
        }
        reader
            .finish()
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        Ok(Config {
            endpoints,
            user,
            key_prefix,
            dial_timeout,
            request_timeout,
        })
    }
}

const TLS_REFUSAL: &str = "TLS to etcd is not available in this build of lock.etcd (plain HTTP/2 only); reach etcd over a trusted network or a TLS-terminating proxy";

fn positive(reader: &mut MetadataReader<'_>, field: &str, default: Duration) -> Duration {
    match reader.duration(field) {
        Some(value) if value.is_zero() => {
            reader.error(field, "must be greater than zero");
            default
        }
        Some(value) => value,
        None => default,
    }
}

fn parse_endpoints(raw: &str, reader: &mut MetadataReader<'_>) -> Vec<String> {
    let mut endpoints = Vec::new();
    for part in raw.split(',').map(str::trim) {
        if part.is_empty() {
            reader.error("endpoints", format!("{raw:?} contains an empty entry"));
            continue;
        }
        if part.starts_with("https://") {
            reader.error("endpoints", format!("{part:?}: {TLS_REFUSAL}"));
            continue;
        }
        let url = if part.starts_with("http://") {
            part.to_owned()
        } else if part.contains("://") {
            reader.error(
                "endpoints",
                format!("{part:?} is not an http:// URL or a host:port"),
            );
            continue;
        } else {
            format!("http://{part}")
        };
        let authority = url.trim_start_matches("http://").trim_end_matches('/');
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !has_port {
            reader.error("endpoints", format!("{part:?} has no host and port"));
            continue;
        }
        endpoints.push(url);
    }
    endpoints
}

/// The lease length etcd is asked for: whole seconds, rounded up, at least 1.
fn lease_seconds(ttl: Duration) -> i64 {
    let whole = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(whole.max(1)).unwrap_or(i64::MAX)
}

/// The first key after every key that starts with `prefix` (etcd's range
/// end for a prefix); `\0` means "to the end of the key space".
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn fence_from(revision: i64) -> Result<Fence, StoreError> {
    Fence::try_from(revision)
        .ok()
        .filter(|fence| *fence > 0)
        .ok_or_else(|| StoreError::Backend(format!("etcd returned revision {revision}")))
}

/// A lock store on etcd.
pub struct EtcdStore {
    client: Client,
    prefix: String,
    request_timeout: Duration,
    /// Retrying on an unreachable member makes sense only when another
    /// member may answer.
    retry: bool,
    endpoints: String,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connect to the cluster and check that it answers.
    pub async fn connect(config: Config) -> Result<EtcdStore, StoreError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.dial_timeout)
            .with_timeout(config.request_timeout)
            // Pings find a connection to a member that went silent (paused,
            // cut off) long before the TCP stack would.
            .with_keep_alive(Duration::from_secs(10), config.dial_timeout)
            .with_tcp_keepalive(Duration::from_secs(30));
        if let Some((name, password)) = &config.user {
            options = options
                .with_user(name.clone(), password.expose())
                .with_auto_token_refresh(true);
        }
        let endpoints = config.endpoints.join(",");
        let connect = Client::connect(config.endpoints.clone(), Some(options));
        let client = match tokio::time::timeout(config.dial_timeout, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(err)) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot connect to etcd at {endpoints}: {err}"
                )));
            }
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot connect to etcd at {endpoints} within {:?}",
                    config.dial_timeout
                )));
            }
        };
        let store = EtcdStore {
            client,
            prefix: config.key_prefix,
            request_timeout: config.request_timeout,
            retry: config.endpoints.len() > 1,
            endpoints,
        };
        store.health().await.map_err(|err| {
            StoreError::Unavailable(format!(
                "etcd at {} does not answer: {err}",
                store.endpoints
            ))
        })?;
        Ok(store)
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(self.prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.request_timeout
    }

    /// Run one RPC before `deadline`. With several members, an RPC that
    /// failed because a member is unreachable or has no leader is tried
    /// again (a bounded number of times, with a growing pause): every RPC of
    /// this store is safe to repeat (see the module docs).
    async fn rpc<T, F, Fut>(
        &self,
        deadline: Instant,
        what: &str,
        mut call: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut pause = Duration::from_millis(25);
        let mut attempt = 1;
        loop {
            let err = match timeout_at(deadline, call()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(err)) => err,
                Err(_) => return Err(StoreError::Timeout(self.request_timeout)),
            };
            let transient = is_transient(&err);
            if !(self.retry && transient && attempt < MAX_ATTEMPTS)
                || Instant::now() + pause >= deadline
            {
                return Err(map_error(what, &self.endpoints, self.request_timeout, err));
            }
            tracing::debug!(what, attempt, error = %err, "etcd rpc failed; trying again");
            sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
            attempt += 1;
        }
    }

    async fn grant(&self, deadline: Instant, ttl: Duration) -> Result<i64, StoreError> {
        let seconds = lease_seconds(ttl);
        let granted = self
            .rpc(deadline, "lease grant", || {
                let mut lease = self.client.lease_client();
                async move { lease.grant(seconds, None).await }
            })
            .await?;
        Ok(granted.id())
    }

    async fn txn(
        &self,
        deadline: Instant,
        what: &str,
        txn: Txn,
    ) -> Result<TxnResponse, StoreError> {
        self.rpc(deadline, what, || {
            let mut kv = self.client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }

    /// Revoke a lease without making the caller wait: its keys, if any, are
    /// gone or were never written, and if the revoke fails the lease runs
    /// out by itself.
    fn revoke_in_background(&self, lease: i64) {
        if lease == 0 {
            return;
        }
        let mut client = self.client.lease_client();
        let within = self.request_timeout;
        tokio::spawn(async move {
            if let Ok(Err(err)) = tokio::time::timeout(within, client.revoke(lease)).await {
                tracing::debug!(lease, error = %err, "etcd lease revoke failed; it will run out by itself");
            }
        });
    }

    /// What is left of a lease, in whole seconds as etcd reports it; `None`
    /// when it has run out.
    async fn remaining(
        &self,
        deadline: Instant,
        lease: i64,
    ) -> Result<Option<Duration>, StoreError> {
        if lease == 0 {
            // A key without a lease was not written by this store; it never
            // runs out.
            return Ok(Some(Duration::MAX));
        }
        let answer = self
            .rpc(deadline, "lease time-to-live", || {
                let mut client = self.client.lease_client();
                async move { client.time_to_live(lease, None).await }
            })
            .await?;
        Ok(u64::try_from(answer.ttl())
            .ok()
            .filter(|seconds| *seconds > 0)
            .map(Duration::from_secs))
    }

    async fn info(&self, deadline: Instant, kv: &KeyValue) -> Result<Option<LockInfo>, StoreError> {
        let Some(remaining) = self.remaining(deadline, kv.lease()).await? else {
            return Ok(None);
        };
        let key = kv
            .key()
            .strip_prefix(self.prefix.as_bytes())
            .unwrap_or(kv.key());
        Ok(Some(LockInfo {
            key: String::from_utf8_lossy(key).into_owned(),
            owner: String::from_utf8_lossy(kv.value()).into_owned(),
            fence: fence_from(kv.create_revision())?,
            remaining,
        }))
    }
}

/// Whether the RPC failed because a member could not be reached, the
/// connection broke under it, or the member lost its leader.
///
/// gRPC reports a connection that broke under a call as "cancelled" (though
/// nobody cancelled it) or as "unknown" with the local transport error as
/// its source; a status that etcd itself sent never has a source.
fn is_transient(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => match status.code() as i32 {
            GRPC_UNAVAILABLE | GRPC_CANCELLED => true,
            GRPC_UNKNOWN => std::error::Error::source(status).is_some(),
            _ => false,
        },
        _ => false,
    }
}

/// `message` followed by the chain of causes that starts at `source`.
fn describe(mut message: String, mut source: Option<&dyn std::error::Error>) -> String {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Wrappers often repeat their cause's text; say it once.
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    message
}

fn map_error(
    what: &str,
    endpoints: &str,
    request_timeout: Duration,
    err: etcd_client::Error,
) -> StoreError {
    let transient = is_transient(&err);
    if let etcd_client::Error::GRpcStatus(status) = &err {
        // A status's own text is its message; its `Display` adds metadata.
        let text = describe(
            status.message().to_owned(),
            std::error::Error::source(status),
        );
        let message = format!("etcd {what} at {endpoints}: {text}");
        return match status.code() as i32 {
            GRPC_DEADLINE_EXCEEDED => StoreError::Timeout(request_timeout),
            _ if transient => StoreError::Unavailable(message),
            _ => StoreError::Backend(message),
        };
    }
    // The client's error has no `source`; its transport error does.
    let cause = match &err {
        etcd_client::Error::TransportError(inner) => std::error::Error::source(inner),
        etcd_client::Error::IoError(inner) => std::error::Error::source(inner),
        _ => None,
    };
    let text = describe(err.to_string(), cause);
    let message = format!("etcd {what} at {endpoints}: {text}");
    if transient {
        StoreError::Unavailable(message)
    } else {
        StoreError::Backend(message)
    }
}

/// The key-values of the `index`-th operation's range read.
fn range_of(response: &TxnResponse, index: usize) -> Vec<KeyValue> {
    match response.op_responses().into_iter().nth(index) {
        Some(TxnOpResponse::Get(mut get)) => get.take_kvs(),
        _ => Vec::new(),
    }
}

/// The count of the `index`-th operation's range read.
fn count_of(response: &TxnResponse, index: usize) -> i64 {
    match response.op_responses().into_iter().nth(index) {
        Some(TxnOpResponse::Get(get)) => get.count(),
        _ => 0,
    }
}

/// The previous key-value of the `index`-th operation (a put or a delete).
fn previous_of(response: &TxnResponse, index: usize) -> Option<KeyValue> {
    match response.op_responses().into_iter().nth(index)? {
        TxnOpResponse::Put(mut put) => put.take_prev_key(),
        TxnOpResponse::Delete(mut delete) => delete.take_prev_kvs().into_iter().next(),
        _ => None,
    }
}

#[async_trait]
impl LockStore for EtcdStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fencing: true,
            renew: true,
            release_notify: true,
            admin: true,
            durable: true,
            consistency: Consistency::Linearizable,
        }
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<Acquire, StoreError> {
        let deadline = self.deadline();
        let key = self.full_key(key);
        let lease = self.grant(deadline, ttl).await?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                owner,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = match self.txn(deadline, "acquire", txn).await {
            Ok(response) => response,
            Err(err) => {
                // Whether or not the put happened, revoking the lease leaves
                // no lock behind for a caller that was told it failed.
                self.revoke_in_background(lease);
                return Err(err);
            }
        };
        if response.succeeded() {
            let revision = response.header().map_or(0, |header| header.revision());
            return Ok(Acquire::Acquired {
                fence: fence_from(revision)?,
            });
        }
        match range_of(&response, 0).first() {
            // A retry after a lost reply: the key carries this call's lease.
            Some(kv) if kv.lease() == lease => Ok(Acquire::Acquired {
                fence: fence_from(kv.create_revision())?,
            }),
            _ => {
                self.revoke_in_background(lease);
                Ok(Acquire::HeldByOther)
            }
        }
    }

    async fn unlock(&self, key: &str, owner: &str) -> Result<Release, StoreError> {
        let deadline = self.deadline();
        let key = self.full_key(key);
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, owner)])
            .and_then([TxnOp::delete(
                key.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, Some(GetOptions::new().with_count_only()))]);
        let response = self.txn(deadline, "release", txn).await?;
        if response.succeeded() {
            if let Some(previous) = previous_of(&response, 0) {
                self.revoke_in_background(previous.lease());
            }
            return Ok(Release::Released);
        }
        Ok(if count_of(&response, 0) > 0 {
            Release::HeldByOther
        } else {
            Release::NotFound
        })
    }

    /// Renewal swaps a new lease of the requested length in, in one
    /// transaction, rather than keeping the old one alive: a keep-alive
    /// would restore the old lease's length, not the one asked for.
    async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Result<Renewal, StoreError> {
        let deadline = self.deadline();
        let key = self.full_key(key);
        let lease = self.grant(deadline, ttl).await?;
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, owner)])
            .and_then([TxnOp::put(
                key.clone(),
                owner,
                Some(PutOptions::new().with_lease(lease).with_prev_key()),
            )])
            .or_else([TxnOp::get(key, Some(GetOptions::new().with_count_only()))]);
        // On an error the new lease is left to run out: if the put did
        // happen, the lock now lives on it, and revoking it would drop a
        // lock its owner still holds.
        let response = self.txn(deadline, "renew", txn).await?;
        if response.succeeded() {
            let previous = previous_of(&response, 0).ok_or_else(|| {
                StoreError::Backend("etcd renew returned no previous key".to_owned())
            })?;
            // A retry after a lost reply finds its own lease already there.
            if previous.lease() != lease {
                self.revoke_in_background(previous.lease());
            }
            return Ok(Renewal::Renewed {
                fence: fence_from(previous.create_revision())?,
            });
        }
        self.revoke_in_background(lease);
        Ok(if count_of(&response, 0) > 0 {
            Renewal::HeldByOther
        } else {
            Renewal::NotFound
        })
    }

    async fn status(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        let deadline = self.deadline();
        let full = self.full_key(key);
        let mut found = self
            .rpc(deadline, "status", || {
                let mut kv = self.client.kv_client();
                let full = full.clone();
                async move { kv.get(full, None).await }
            })
            .await?;
        match found.take_kvs().first() {
            Some(kv) => self.info(deadline, kv).await,
            None => Ok(None),
        }
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
        let deadline = self.deadline();
        let from = self.full_key(prefix);
        let end = prefix_end(&from);
        // The smallest key greater than `after` is `after` followed by a
        // zero byte.
        let start = match after {
            Some(after) => {
                let mut next = self.full_key(after);
                next.push(0);
                next.max(from)
            }
            None => from,
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut page = self
            .rpc(deadline, "list", || {
                let mut kv = self.client.kv_client();
                let (start, end) = (start.clone(), end.clone());
                async move {
                    kv.get(
                        start,
                        Some(GetOptions::new().with_range(end).with_limit(limit)),
                    )
                    .await
                }
            })
            .await?;
        // An admin call: one lease look-up per lock, in key order.
        let mut infos = Vec::new();
        for kv in page.take_kvs() {
            if let Some(info) = self.info(deadline, &kv).await? {
                infos.push(info);
            }
        }
        Ok(infos)
    }

    async fn force_unlock(&self, key: &str) -> Result<ForceRelease, StoreError> {
        let deadline = self.deadline();
        let full = self.full_key(key);
        let mut deleted = self
            .rpc(deadline, "force-unlock", || {
                let mut kv = self.client.kv_client();
                let full = full.clone();
                async move {
                    kv.delete(full, Some(DeleteOptions::new().with_prev_key()))
                        .await
                }
            })
            .await?;
        match deleted.take_prev_kvs().into_iter().next() {
            Some(previous) => {
                self.revoke_in_background(previous.lease());
                Ok(ForceRelease::Released {
                    owner: String::from_utf8_lossy(previous.value()).into_owned(),
                    fence: fence_from(previous.create_revision())?,
                })
            }
            None => Ok(ForceRelease::NotFound),
        }
    }

    /// A watch on the key for deletions (a release, a force-unlock, or the
    /// lease running out all delete the key). The watch is established when
    /// this returns; if the watch stream breaks, the future resolves, which
    /// callers treat as a possible release.
    async fn watch_release(&self, key: &str) -> Result<ReleaseWait, StoreError> {
        let deadline = self.deadline();
        let full = self.full_key(key);
        let options = WatchOptions::new().with_filters([WatchFilterType::NoPut]);
        let mut stream = self
            .rpc(deadline, "watch", || {
                let mut watch = self.client.watch_client();
                let (full, options) = (full.clone(), options.clone());
                async move { watch.watch(full, Some(options)).await }
            })
            .await?;
        match timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(response))) if response.created() && !response.canceled() => {}
            Ok(Ok(Some(response))) => {
                return Err(StoreError::Backend(format!(
                    "etcd refused the watch: {}",
                    response.cancel_reason()
                )));
            }
            Ok(Ok(None)) => {
                return Err(StoreError::Unavailable(
                    "etcd closed the watch stream before confirming it".to_owned(),
                ));
            }
            Ok(Err(err)) => {
                return Err(map_error(
                    "watch",
                    &self.endpoints,
                    self.request_timeout,
                    err,
                ));
            }
            Err(_) => return Err(StoreError::Timeout(self.request_timeout)),
        }
        Ok(Box::pin(async move {
            loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        let deleted = response
                            .events()
                            .iter()
                            .any(|event| event.event_type() == EventType::Delete);
                        if deleted || response.canceled() {
                            return;
                        }
                    }
                    // The stream broke: wake the waiter, who tries again.
                    Ok(None) | Err(_) => return,
                }
            }
        }))
    }

    async fn health(&self) -> Result<(), StoreError> {
        let deadline = self.deadline();
        let probe = self.prefix.clone().into_bytes();
        // A linearizable read: it needs a leader and a quorum, which is what
        // a lock needs too.
        self.rpc(deadline, "health check", || {
            let mut kv = self.client.kv_client();
            let probe = probe.clone();
            async move {
                kv.get(probe, Some(GetOptions::new().with_count_only()))
                    .await
            }
        })
        .await
        .map(|_| ())
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
            ("endpoints", "127.0.0.1:2379, http://10.0.0.2:2379/"),
            ("username", "root"),
            ("password", "hunter2"),
            ("etcdKeyPrefix", "app/"),
            ("dialTimeout", "2s"),
            ("requestTimeout", "1500"),
        ])
        .unwrap();
        assert_eq!(
            config.endpoints,
            ["http://127.0.0.1:2379", "http://10.0.0.2:2379/"]
        );
        assert_eq!(config.user.as_ref().unwrap().0, "root");
        assert_eq!(config.key_prefix, "app/");
        assert_eq!(config.dial_timeout, Duration::from_secs(2));
        assert_eq!(config.request_timeout, Duration::from_millis(1500));
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn defaults() {
        let config = config(&[("endpoints", "localhost:2379")]).unwrap();
        assert_eq!(config.key_prefix, DEFAULT_KEY_PREFIX);
        assert_eq!(config.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert!(config.user.is_none());
    }

    #[test]
    fn reports_every_problem() {
        let errors = config(&[
            ("endpoints", "localhost,,https://a:1,unix://x"),
            ("username", "root"),
            ("requestTimeout", "0s"),
            ("caCert", "/etc/ca.pem"),
        ])
        .unwrap_err();
        let joined = errors.join("\n");
        assert!(
            joined.contains("\"localhost\" has no host and port"),
            "{joined}"
        );
        assert!(joined.contains("empty entry"), "{joined}");
        assert!(joined.contains("TLS to etcd is not available"), "{joined}");
        assert!(joined.contains("unix://x"), "{joined}");
        assert!(joined.contains("`password`"), "{joined}");
        assert!(joined.contains("`requestTimeout`"), "{joined}");
        assert!(joined.contains("`caCert`"), "{joined}");
        assert_eq!(config(&[]).unwrap_err().len(), 1);
    }

    #[test]
    fn lease_lengths_round_up_to_seconds() {
        assert_eq!(lease_seconds(Duration::from_millis(1)), 1);
        assert_eq!(lease_seconds(Duration::from_secs(1)), 1);
        assert_eq!(lease_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(lease_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
