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
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use leasehold_core::manifest::Component;
use leasehold_core::metadata::{Metadata, MetadataReader, Secret};
use leasehold_core::{
    Acquire, Capabilities, Consistency, Fence, ForceRelease, LockInfo, LockStore, Release,
    ReleaseWait, Renewal, StoreError,
};
use leasehold_proto::etcd::etcdserverpb::{
    self as pb, compare, request_op, response_op, watch_create_request,
};
use leasehold_proto::etcd::mvccpb::{KeyValue, event::EventType};
use leasehold_proto::tonic::{Code, Status};
use tokio::time::{Instant, sleep, timeout_at};

use crate::StoreContext;

mod client;

use client::{EtcdClient, WatchStart, is_transient};

/// The store's keys live under this prefix unless `etcdKeyPrefix` says
/// otherwise.
pub const DEFAULT_KEY_PREFIX: &str = "leasehold/locks/";

const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// At most this many tries of one RPC when the cluster has several members
/// and a member is unreachable or an election is under way.
const MAX_ATTEMPTS: u32 = 8;

/// Configuration of `lock.etcd`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Client URLs of the members (`http://host:port`, or `https://host:port`
    /// with TLS).
    pub endpoints: Vec<String>,
    /// TLS to every member, when on.
    pub tls: Option<Tls>,
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
    /// * `tlsEnable`: TLS to every member; on by itself when an endpoint is
    ///   `https://` or a certificate field is set;
    /// * `caCert` (PEM, required with TLS): the CA that signed the members'
    ///   certificates;
    /// * `clientCert`, `clientKey` (PEM, the key secret, both or neither):
    ///   the store's own certificate, for etcd's `--client-cert-auth`.
    pub fn from_metadata(metadata: &Metadata) -> Result<Self, Vec<String>> {
        let mut reader = MetadataReader::new(metadata);
        let parsed = reader
            .required("endpoints")
            .map(|raw| parse_endpoints(&raw, &mut reader))
            .unwrap_or_default();
        let (tls_on, tls) = read_tls(&mut reader, &parsed);
        let endpoints = finish_endpoints(parsed, tls_on, &mut reader);
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
        reader
            .finish()
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        Ok(Config {
            endpoints,
            tls,
            user,
            key_prefix,
            dial_timeout,
            request_timeout,
        })
    }
}

/// TLS settings of `lock.etcd`: PEM text, checked for its markers when read
/// and parsed when the store connects. `Debug` shows which parts are set,
/// never their text.
#[derive(Clone, PartialEq, Eq)]
pub struct Tls {
    /// The CA that signed the members' certificates.
    pub ca_cert: String,
    /// The store's certificate and its private key, for etcd's
    /// `--client-cert-auth`.
    pub client: Option<(String, Secret)>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("ca_cert", &"<pem>")
            .field("client_identity", &self.client.is_some())
            .finish()
    }
}

const CERT_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const CERT_END: &str = "-----END CERTIFICATE-----";

/// Whether `text` holds a PEM certificate (by its markers).
fn looks_like_cert(text: &str) -> bool {
    text.find(CERT_BEGIN)
        .is_some_and(|at| text[at..].contains(CERT_END))
}

/// Whether `text` holds a PEM private key (PKCS#8, PKCS#1 or SEC1), by its
/// markers.
fn looks_like_key(text: &str) -> bool {
    ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"]
        .iter()
        .any(|kind| {
            let begin = format!("-----BEGIN {kind}-----");
            let end = format!("-----END {kind}-----");
            text.find(&begin)
                .is_some_and(|at| text[at..].contains(&end))
        })
}

/// One entry of `endpoints`, before TLS decides the scheme of bare ones.
struct ParsedEndpoint {
    /// `Some(true)` for `https://`, `Some(false)` for `http://`, `None` for
    /// `host:port`.
    https: Option<bool>,
    /// `host:port` and whatever follows.
    rest: String,
}

/// Whether TLS is on, and its settings when they are valid; every problem
/// is reported by field name, never with the field's text.
fn read_tls(reader: &mut MetadataReader<'_>, endpoints: &[ParsedEndpoint]) -> (bool, Option<Tls>) {
    let enable = reader.bool("tlsEnable");
    let ca = reader
        .string("caCert")
        .filter(|text| !text.trim().is_empty());
    let cert = reader
        .string("clientCert")
        .filter(|text| !text.trim().is_empty());
    let key = reader
        .secret("clientKey")
        .filter(|key| !key.expose().trim().is_empty());
    let https = endpoints.iter().any(|e| e.https == Some(true));
    let any_field = ca.is_some() || cert.is_some() || key.is_some();
    let on = match enable {
        Some(true) => true,
        Some(false) => {
            if https {
                reader.error("tlsEnable", "is false but an endpoint is https://");
            }
            if any_field {
                reader.error(
                    "tlsEnable",
                    "is false but `caCert`, `clientCert` or `clientKey` is set",
                );
            }
            return (false, None);
        }
        None => https || any_field,
    };
    if !on {
        return (false, None);
    }
    let mut valid = true;
    let ca_cert = match ca {
        Some(text) if looks_like_cert(&text) => text,
        Some(_) => {
            reader.error("caCert", "is not a PEM certificate (no BEGIN/END CERTIFICATE lines); give the PEM text, not a path");
            valid = false;
            String::new()
        }
        None => {
            reader.error("caCert", "is required with TLS: the PEM text of the CA that signed the etcd members' certificates");
            valid = false;
            String::new()
        }
    };
    let client = match (cert, key) {
        (Some(cert), Some(key)) => {
            if !looks_like_cert(&cert) {
                reader.error("clientCert", "is not a PEM certificate (no BEGIN/END CERTIFICATE lines); give the PEM text, not a path");
                valid = false;
            }
            if !looks_like_key(key.expose()) {
                reader.error("clientKey", "is not a PEM private key (no BEGIN/END PRIVATE KEY lines); give the PEM text, not a path");
                valid = false;
            }
            Some((cert, key))
        }
        (Some(_), None) => {
            reader.error("clientKey", "is required when `clientCert` is set");
            valid = false;
            None
        }
        (None, Some(_)) => {
            reader.error("clientCert", "is required when `clientKey` is set");
            valid = false;
            None
        }
        (None, None) => None,
    };
    (true, valid.then_some(Tls { ca_cert, client }))
}

/// The endpoints' URLs: bare `host:port` entries take `https://` with TLS
/// and `http://` without; an explicit `http://` with TLS is refused.
fn finish_endpoints(
    parsed: Vec<ParsedEndpoint>,
    tls: bool,
    reader: &mut MetadataReader<'_>,
) -> Vec<String> {
    let mut endpoints = Vec::with_capacity(parsed.len());
    for endpoint in parsed {
        let https = endpoint.https.unwrap_or(tls);
        if endpoint.https == Some(false) && tls {
            reader.error(
                "endpoints",
                format!(
                    "\"http://{}\" is plain HTTP while TLS is on; use https:// or host:port",
                    endpoint.rest
                ),
            );
            continue;
        }
        let scheme = if https { "https" } else { "http" };
        endpoints.push(format!("{scheme}://{}", endpoint.rest));
    }
    endpoints
}

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

fn parse_endpoints(raw: &str, reader: &mut MetadataReader<'_>) -> Vec<ParsedEndpoint> {
    let mut endpoints = Vec::new();
    for part in raw.split(',').map(str::trim) {
        if part.is_empty() {
            reader.error("endpoints", format!("{raw:?} contains an empty entry"));
            continue;
        }
        let (https, rest) = if let Some(rest) = part.strip_prefix("https://") {
            (Some(true), rest)
        } else if let Some(rest) = part.strip_prefix("http://") {
            (Some(false), rest)
        } else if part.contains("://") {
            reader.error(
                "endpoints",
                format!("{part:?} is not an http:// or https:// URL or a host:port"),
            );
            continue;
        } else {
            (None, part)
        };
        let authority = rest.trim_end_matches('/');
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !has_port {
            reader.error("endpoints", format!("{part:?} has no host and port"));
            continue;
        }
        endpoints.push(ParsedEndpoint {
            https,
            rest: rest.to_owned(),
        });
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
    client: Arc<EtcdClient>,
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
        let endpoints = config.endpoints.join(",");
        // etcd with `--client-cert-auth` closes the connection of a client
        // that has no certificate right after the handshake, which reads as
        // a broken connection; say what the likely cause is.
        let hint = match &config.tls {
            Some(tls) if tls.client.is_none() => {
                " (over TLS without `clientCert` and `clientKey`: if etcd runs with --client-cert-auth, it closes connections of clients without a certificate)"
            }
            _ => "",
        };
        let client = EtcdClient::new(client::Options {
            endpoints: config.endpoints.clone(),
            tls: config.tls,
            user: config.user,
            dial_timeout: config.dial_timeout,
            request_timeout: config.request_timeout,
        })
        .map_err(|err| {
            StoreError::Unavailable(format!("cannot connect to etcd at {endpoints}: {err}"))
        })?;
        let store = EtcdStore {
            client: Arc::new(client),
            prefix: config.key_prefix,
            request_timeout: config.request_timeout,
            retry: config.endpoints.len() > 1,
            endpoints,
        };
        // Connections open, and the user (if any) authenticates, on this
        // first call.
        store.health().await.map_err(|err| {
            let failure = match err {
                StoreError::Unavailable(_) | StoreError::Timeout(_) => "does not answer",
                // A refused user or password, for one.
                _ => "refuses the store's calls",
            };
            StoreError::Unavailable(format!(
                "etcd at {} {failure}: {err}{hint}",
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
    /// again (a bounded number of times, with a growing pause), on the next
    /// member: every RPC of this store is safe to repeat (see the module
    /// docs).
    async fn rpc<T, F, Fut>(
        &self,
        deadline: Instant,
        what: &str,
        mut call: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
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
                return Err(map_error(what, &self.endpoints, self.request_timeout, &err));
            }
            tracing::debug!(what, attempt, code = ?err.code(), error = err.message(), "etcd rpc failed; trying again");
            sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
            attempt += 1;
        }
    }

    async fn grant(&self, deadline: Instant, ttl: Duration) -> Result<i64, StoreError> {
        let seconds = lease_seconds(ttl);
        let granted = self
            .rpc(deadline, "lease grant", || self.client.lease_grant(seconds))
            .await?;
        Ok(granted.id)
    }

    async fn txn(
        &self,
        deadline: Instant,
        what: &str,
        txn: pb::TxnRequest,
    ) -> Result<pb::TxnResponse, StoreError> {
        self.rpc(deadline, what, || self.client.txn(txn.clone()))
            .await
    }

    /// Revoke a lease without making the caller wait: its keys, if any, are
    /// gone or were never written, and if the revoke fails the lease runs
    /// out by itself.
    fn revoke_in_background(&self, lease: i64) {
        if lease == 0 {
            return;
        }
        let client = Arc::clone(&self.client);
        let within = self.request_timeout;
        tokio::spawn(async move {
            if let Ok(Err(err)) = tokio::time::timeout(within, client.lease_revoke(lease)).await {
                tracing::debug!(
                    lease,
                    error = err.message(),
                    "etcd lease revoke failed; it will run out by itself"
                );
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
                self.client.lease_time_to_live(lease)
            })
            .await?;
        Ok(u64::try_from(answer.ttl)
            .ok()
            .filter(|seconds| *seconds > 0)
            .map(Duration::from_secs))
    }

    async fn info(&self, deadline: Instant, kv: &KeyValue) -> Result<Option<LockInfo>, StoreError> {
        let Some(remaining) = self.remaining(deadline, kv.lease).await? else {
            return Ok(None);
        };
        let key = kv
            .key
            .strip_prefix(self.prefix.as_bytes())
            .unwrap_or(&kv.key);
        Ok(Some(LockInfo {
            key: String::from_utf8_lossy(key).into_owned(),
            owner: String::from_utf8_lossy(&kv.value).into_owned(),
            fence: fence_from(kv.create_revision)?,
            remaining,
        }))
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
    status: &Status,
) -> StoreError {
    // A status's own text is its message; its `Display` adds metadata. A
    // transport failure carries its cause as the status's source.
    let text = describe(
        status.message().to_owned(),
        std::error::Error::source(status),
    );
    let message = format!("etcd {what} at {endpoints}: {text}");
    match status.code() {
        Code::DeadlineExceeded => StoreError::Timeout(request_timeout),
        _ if is_transient(status) => StoreError::Unavailable(message),
        _ => StoreError::Backend(message),
    }
}

/// `key`'s create revision equals `revision` (0: the key does not exist).
fn create_revision_is(key: &[u8], revision: i64) -> pb::Compare {
    pb::Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(compare::TargetUnion::CreateRevision(revision)),
    }
}

/// `key`'s value equals `value` (false when the key does not exist).
fn value_is(key: &[u8], value: &str) -> pb::Compare {
    pb::Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Value as i32,
        key: key.to_vec(),
        target_union: Some(compare::TargetUnion::Value(value.as_bytes().to_vec())),
    }
}

/// The key was created at `revision`: it is that grant, not a later one.
fn created_at(key: &[u8], revision: i64) -> pb::Compare {
    pb::Compare {
        result: compare::CompareResult::Equal as i32,
        target: compare::CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(compare::TargetUnion::CreateRevision(revision)),
    }
}

fn put_op(key: &[u8], value: &str, lease: i64, prev_kv: bool) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestPut(pb::PutRequest {
            key: key.to_vec(),
            value: value.as_bytes().to_vec(),
            lease,
            prev_kv,
        })),
    }
}

fn get_op(key: &[u8], count_only: bool) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestRange(pb::RangeRequest {
            key: key.to_vec(),
            count_only,
            ..Default::default()
        })),
    }
}

fn delete_op(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            pb::DeleteRangeRequest {
                key: key.to_vec(),
                prev_kv: true,
            },
        )),
    }
}

/// The `index`-th operation's answer.
fn response_at(response: &mut pb::TxnResponse, index: usize) -> Option<response_op::Response> {
    response.responses.get_mut(index)?.response.take()
}

/// The key-values of the `index`-th operation's range read.
fn range_of(response: &mut pb::TxnResponse, index: usize) -> Vec<KeyValue> {
    match response_at(response, index) {
        Some(response_op::Response::ResponseRange(range)) => range.kvs,
        _ => Vec::new(),
    }
}

/// The count of the `index`-th operation's range read.
fn count_of(response: &mut pb::TxnResponse, index: usize) -> i64 {
    match response_at(response, index) {
        Some(response_op::Response::ResponseRange(range)) => range.count,
        _ => 0,
    }
}

/// The previous key-value of the `index`-th operation (a put or a delete).
fn previous_of(response: &mut pb::TxnResponse, index: usize) -> Option<KeyValue> {
    match response_at(response, index)? {
        response_op::Response::ResponsePut(put) => put.prev_kv,
        response_op::Response::ResponseDeleteRange(delete) => delete.prev_kvs.into_iter().next(),
        response_op::Response::ResponseRange(_) => None,
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
        let txn = pb::TxnRequest {
            compare: vec![create_revision_is(&key, 0)],
            success: vec![put_op(&key, owner, lease, false)],
            failure: vec![get_op(&key, false)],
        };
        let mut response = match self.txn(deadline, "acquire", txn).await {
            Ok(response) => response,
            Err(err) => {
                // Whether or not the put happened, revoking the lease leaves
                // no lock behind for a caller that was told it failed.
                self.revoke_in_background(lease);
                return Err(err);
            }
        };
        if response.succeeded {
            let revision = response.header.map_or(0, |header| header.revision);
            return Ok(Acquire::Acquired {
                fence: fence_from(revision)?,
            });
        }
        match range_of(&mut response, 0).first() {
            // A retry after a lost reply: the key carries this call's lease.
            Some(kv) if kv.lease == lease => Ok(Acquire::Acquired {
                fence: fence_from(kv.create_revision)?,
            }),
            _ => {
                self.revoke_in_background(lease);
                Ok(Acquire::HeldByOther)
            }
        }
    }

    /// Delete `owner`'s key: the grant with token (create revision)
    /// `grant`, or for a plain unlock the grant the owner holds now, read
    /// first. The delete compares the owner and that revision, so a send
    /// repeated after a lost reply (see [`EtcdStore::rpc`]) cannot delete a
    /// grant made after the first send freed the key, even one of the same
    /// owner.
    async fn release(
        &self,
        key: &str,
        owner: &str,
        grant: Option<Fence>,
    ) -> Result<Release, StoreError> {
        let deadline = self.deadline();
        let key = self.full_key(key);
        let revision = match grant {
            Some(fence) => i64::try_from(fence).unwrap_or(i64::MAX),
            None => {
                let request = pb::RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                };
                let found = self
                    .rpc(deadline, "release", || self.client.range(request.clone()))
                    .await?;
                match found.kvs.first() {
                    None => return Ok(Release::NotFound),
                    Some(kv) if kv.value != owner.as_bytes() => return Ok(Release::HeldByOther),
                    Some(kv) => kv.create_revision,
                }
            }
        };
        let txn = pb::TxnRequest {
            compare: vec![value_is(&key, owner), created_at(&key, revision)],
            success: vec![delete_op(&key)],
            failure: vec![get_op(&key, true)],
        };
        let mut response = self.txn(deadline, "release", txn).await?;
        if response.succeeded {
            if let Some(previous) = previous_of(&mut response, 0) {
                self.revoke_in_background(previous.lease);
            }
            return Ok(Release::Released);
        }
        Ok(if count_of(&mut response, 0) > 0 {
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
        let txn = pb::TxnRequest {
            compare: vec![value_is(&key, owner)],
            success: vec![put_op(&key, owner, lease, true)],
            failure: vec![get_op(&key, true)],
        };
        // On an error the new lease is left to run out: if the put did
        // happen, the lock now lives on it, and revoking it would drop a
        // lock its owner still holds.
        let mut response = self.txn(deadline, "renew", txn).await?;
        if response.succeeded {
            let previous = previous_of(&mut response, 0).ok_or_else(|| {
                StoreError::Backend("etcd renew returned no previous key".to_owned())
            })?;
            // A retry after a lost reply finds its own lease already there.
            if previous.lease != lease {
                self.revoke_in_background(previous.lease);
            }
            return Ok(Renewal::Renewed {
                fence: fence_from(previous.create_revision)?,
            });
        }
        self.revoke_in_background(lease);
        Ok(if count_of(&mut response, 0) > 0 {
            Renewal::HeldByOther
        } else {
            Renewal::NotFound
        })
    }

    async fn status(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        let deadline = self.deadline();
        let full = self.full_key(key);
        let request = pb::RangeRequest {
            key: full,
            ..Default::default()
        };
        let found = self
            .rpc(deadline, "status", || self.client.range(request.clone()))
            .await?;
        match found.kvs.first() {
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
        let request = pb::RangeRequest {
            key: start,
            range_end: end,
            limit,
            ..Default::default()
        };
        let page = self
            .rpc(deadline, "list", || self.client.range(request.clone()))
            .await?;
        // An admin call: one lease look-up per lock, in key order.
        let mut infos = Vec::new();
        for kv in page.kvs {
            if let Some(info) = self.info(deadline, &kv).await? {
                infos.push(info);
            }
        }
        Ok(infos)
    }

    /// Reads the holder, then deletes that grant only (compared by its
    /// create revision): a send repeated after a lost reply must not evict
    /// a grant made after the first send freed the key.
    async fn force_unlock(&self, key: &str) -> Result<ForceRelease, StoreError> {
        let deadline = self.deadline();
        let full = self.full_key(key);
        let request = pb::RangeRequest {
            key: full.clone(),
            ..Default::default()
        };
        for _ in 0..3 {
            let found = self
                .rpc(deadline, "force-unlock", || {
                    self.client.range(request.clone())
                })
                .await?;
            let Some(holder) = found.kvs.into_iter().next() else {
                return Ok(ForceRelease::NotFound);
            };
            let txn = pb::TxnRequest {
                compare: vec![created_at(&full, holder.create_revision)],
                success: vec![delete_op(&full)],
                failure: Vec::new(),
            };
            if self.txn(deadline, "force-unlock", txn).await?.succeeded {
                self.revoke_in_background(holder.lease);
                return Ok(ForceRelease::Released {
                    owner: String::from_utf8_lossy(&holder.value).into_owned(),
                    fence: fence_from(holder.create_revision)?,
                });
            }
            // Released and perhaps granted again meanwhile: look again.
        }
        Err(StoreError::Unavailable(
            "the lock changed hands three times during force-unlock; try again".to_owned(),
        ))
    }

    /// A watch on the key for deletions (a release, a force-unlock, or the
    /// lease running out all delete the key). The watch is established when
    /// this returns; if the watch stream breaks, the future resolves, which
    /// callers treat as a possible release.
    async fn watch_release(&self, key: &str) -> Result<ReleaseWait, StoreError> {
        let deadline = self.deadline();
        let create = pb::WatchCreateRequest {
            key: self.full_key(key),
            filters: vec![watch_create_request::FilterType::Noput as i32],
        };
        let started = self
            .rpc(deadline, "watch", || self.client.watch(create.clone()))
            .await?;
        let mut stream = match started {
            WatchStart::Created(stream) => stream,
            WatchStart::Refused(reason) => {
                return Err(StoreError::Backend(format!(
                    "etcd refused the watch: {reason}"
                )));
            }
        };
        Ok(Box::pin(async move {
            loop {
                match stream.message().await {
                    Ok(Some(response)) => {
                        let deleted = response
                            .events
                            .iter()
                            .any(|event| event.r#type == EventType::Delete as i32);
                        if deleted || response.canceled {
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
        // A linearizable read: it needs a leader and a quorum, which is what
        // a lock needs too.
        let probe = pb::RangeRequest {
            key: self.prefix.clone().into_bytes(),
            count_only: true,
            ..Default::default()
        };
        self.rpc(deadline, "health check", || {
            self.client.range(probe.clone())
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
            ("endpoints", "localhost,,https://a:1,http://b:2,unix://x"),
            ("username", "root"),
            ("requestTimeout", "0s"),
            ("caCert", "/etc/ca.pem"),
            ("clientKey", "secret-key-text"),
        ])
        .unwrap_err();
        let joined = errors.join("\n");
        assert!(
            joined.contains("\"localhost\" has no host and port"),
            "{joined}"
        );
        assert!(joined.contains("empty entry"), "{joined}");
        assert!(
            joined.contains("`caCert`: is not a PEM certificate"),
            "{joined}"
        );
        assert!(
            joined.contains("\"http://b:2\" is plain HTTP while TLS is on"),
            "{joined}"
        );
        assert!(joined.contains("`clientCert`"), "{joined}");
        assert!(!joined.contains("secret-key-text"), "{joined}");
        assert!(joined.contains("unix://x"), "{joined}");
        assert!(joined.contains("`password`"), "{joined}");
        assert!(joined.contains("`requestTimeout`"), "{joined}");
        assert!(joined.contains("`caCert`"), "{joined}");
        assert_eq!(config(&[]).unwrap_err().len(), 1);
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nsecret-key-body\n-----END PRIVATE KEY-----\n";

    #[test]
    fn reads_tls() {
        let plain = config(&[("endpoints", "a:1"), ("tlsEnable", "false")]).unwrap();
        assert!(plain.tls.is_none());
        assert_eq!(plain.endpoints, ["http://a:1"]);

        let tls = config(&[
            ("endpoints", "a:1, https://b:2"),
            ("caCert", CERT),
            ("clientCert", CERT),
            ("clientKey", KEY),
        ])
        .unwrap();
        assert_eq!(tls.endpoints, ["https://a:1", "https://b:2"]);
        let settings = tls.tls.as_ref().unwrap();
        assert_eq!(settings.ca_cert, CERT);
        assert_eq!(settings.client.as_ref().unwrap().0, CERT);
        let debug = format!("{tls:?}");
        assert!(!debug.contains("secret-key-body"), "{debug}");
        assert!(!debug.contains("MIIB"), "{debug}");

        let enabled = config(&[
            ("endpoints", "a:1"),
            ("tlsEnable", "true"),
            ("caCert", CERT),
        ])
        .unwrap();
        assert_eq!(enabled.endpoints, ["https://a:1"]);
        assert!(enabled.tls.unwrap().client.is_none());
    }

    #[test]
    fn tls_problems_name_the_field() {
        let no_ca = config(&[("endpoints", "https://a:1")])
            .unwrap_err()
            .join("\n");
        assert!(
            no_ca.contains("`caCert`") && no_ca.contains("required"),
            "{no_ca}"
        );

        let off = config(&[("endpoints", "https://a:1"), ("tlsEnable", "false")])
            .unwrap_err()
            .join("\n");
        assert!(off.contains("`tlsEnable`"), "{off}");

        let half = config(&[("endpoints", "a:1"), ("caCert", CERT), ("clientCert", CERT)])
            .unwrap_err()
            .join("\n");
        assert!(
            half.contains("`clientKey`") && half.contains("required"),
            "{half}"
        );

        let bad = config(&[
            ("endpoints", "a:1"),
            ("caCert", CERT),
            ("clientCert", "/etc/client.pem"),
            ("clientKey", "not-a-key-secret"),
        ])
        .unwrap_err()
        .join("\n");
        assert!(
            bad.contains("`clientCert`: is not a PEM certificate"),
            "{bad}"
        );
        assert!(
            bad.contains("`clientKey`: is not a PEM private key"),
            "{bad}"
        );
        assert!(!bad.contains("not-a-key-secret"), "{bad}");
        assert!(!bad.contains("/etc/client.pem"), "{bad}");
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
