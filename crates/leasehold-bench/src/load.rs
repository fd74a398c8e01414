//! The clients that generate load and the workloads they run.
//!
//! Every client task owns one connection: an HTTP/1.1 keep-alive connection
//! (hyper), one gRPC channel (one HTTP/2 connection), or one connection to
//! the raw backend. Latency is taken around each request and recorded in a
//! per-task HDR histogram, merged at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use leasehold_proto::dapr::dapr_client::DaprClient;
use leasehold_proto::dapr::{TryLockRequest, UnlockRequest};
use leasehold_proto::etcd::etcdserverpb::{
    self as etcd, kv_client::KvClient, lease_client::LeaseClient,
};
use leasehold_proto::v1::locks_client::LocksClient;
use leasehold_proto::v1::{AcquireRequest, ReleaseRequest, RenewRequest, RenewStatus};
use leasehold_testkit::Rng;
use tonic::transport::Channel;

/// Where the load goes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// The sidecar's Dapr HTTP API at `addr`, lock store `store`.
    Http { addr: String, store: String },
    /// The sidecar's Dapr gRPC API (TryLockAlpha1 / UnlockAlpha1).
    DaprGrpc { addr: String, store: String },
    /// The sidecar's leasehold.v1 gRPC API (Acquire / Release / Renew).
    V1Grpc { addr: String, store: String },
    /// Redis itself: `SET k owner PX ms NX` and the compare-and-delete Lua.
    Redis { addr: String },
    /// etcd itself: lease grant + txn put; txn delete + lease revoke.
    Etcd { endpoint: String },
    /// PostgreSQL itself: the upsert and the delete.
    Postgres { conninfo: String },
}

impl Target {
    /// A short name for tables and charts.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Target::Http { .. } => "http",
            Target::DaprGrpc { .. } => "grpc",
            Target::V1Grpc { .. } => "grpc-v1",
            Target::Redis { .. } => "raw-redis",
            Target::Etcd { .. } => "raw-etcd",
            Target::Postgres { .. } => "raw-postgres",
        }
    }
}

/// What each client does in a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Workload {
    /// Try-lock a random key, then unlock it: two requests per cycle.
    Uncontended,
    /// Try-lock one of a few hot keys; unlock when acquired.
    Contended,
    /// Take one lock per client, then renew it again and again.
    Renew,
    /// Pairs of clients pass a lock back and forth: one waits in Acquire
    /// (wait_ms), the other releases; the figure is release-to-grant time.
    Handoff,
}

impl Workload {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Uncontended => "uncontended",
            Workload::Contended => "contended",
            Workload::Renew => "renew",
            Workload::Handoff => "handoff",
        }
    }
}

/// How long and how hard to run.
#[derive(Debug, Clone)]
pub(crate) struct RunSpec {
    pub(crate) workload: Workload,
    pub(crate) clients: usize,
    /// Measured time, after `warmup`.
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    /// Stop after this many measured requests, if it comes first.
    pub(crate) max_ops: Option<u64>,
    /// The number of hot keys of the contended workload.
    pub(crate) hot_keys: usize,
    /// Lease length of every lock taken.
    pub(crate) lease: Duration,
    /// A tag in key names, so that runs never meet each other's keys.
    pub(crate) run_id: u64,
}

/// What a run measured.
#[derive(Debug)]
pub(crate) struct RunResult {
    /// Latency of every measured request, in nanoseconds.
    pub(crate) latency: Histogram<u64>,
    pub(crate) requests: u64,
    pub(crate) acquired: u64,
    pub(crate) errors: u64,
    /// The first error seen, to show what went wrong.
    pub(crate) first_error: Option<String>,
    pub(crate) elapsed: Duration,
}

impl RunResult {
    pub(crate) fn ops_per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A new histogram for latencies from 1 µs to 60 s in nanoseconds, with 3
/// significant figures.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Acquired, released or renewed.
    Done,
    /// Held by someone else, not found: an answer, not an error.
    Refused,
}

/// One connection to a target.
#[derive(Debug)]
pub(crate) enum Client {
    Http(HttpClient),
    DaprGrpc(DaprClient<Channel>, String),
    V1Grpc(LocksClient<Channel>, String),
    Redis(redis::aio::MultiplexedConnection, Box<RedisScripts>),
    Etcd(Box<EtcdClient>, HashMap<String, i64>),
    Postgres(Box<PgClient>),
}

/// An HTTP/1.1 keep-alive connection to the Dapr HTTP API.
#[derive(Debug)]
pub(crate) struct HttpClient {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    lock_path: String,
    unlock_path: String,
}

/// One HTTP/2 connection to an etcd member, spoken through the generated
/// etcd v3 stubs: the baseline measures etcd, not a client library.
#[derive(Debug)]
pub(crate) struct EtcdClient {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
}

impl EtcdClient {
    async fn connect(endpoint: &str) -> Result<Self> {
        // The first member of a comma-separated list, as a URL.
        let first = endpoint.split(',').next().unwrap_or_default();
        let url = if first.contains("://") {
            first.to_owned()
        } else {
            format!("http://{first}")
        };
        let channel = tonic::transport::Endpoint::from_shared(url)?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connect to etcd at {first}"))?;
        Ok(EtcdClient {
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel),
        })
    }

    async fn grant(&mut self, seconds: i64) -> Result<i64> {
        let granted = self
            .lease
            .lease_grant(etcd::LeaseGrantRequest {
                ttl: seconds,
                id: 0,
            })
            .await?;
        Ok(granted.into_inner().id)
    }

    async fn revoke(&mut self, id: i64) -> Result<()> {
        self.lease
            .lease_revoke(etcd::LeaseRevokeRequest { id })
            .await?;
        Ok(())
    }

    /// One transaction: `then` when `compare` holds; whether it did.
    async fn txn(
        &mut self,
        compare: etcd::Compare,
        then: etcd::request_op::Request,
    ) -> Result<bool> {
        let response = self
            .kv
            .txn(etcd::TxnRequest {
                compare: vec![compare],
                success: vec![etcd::RequestOp {
                    request: Some(then),
                }],
                failure: Vec::new(),
            })
            .await?;
        Ok(response.into_inner().succeeded)
    }

    /// One keep-alive of `id`: the lease's new TTL (0 when it is gone).
    async fn keep_alive(&mut self, id: i64) -> Result<i64> {
        let requests = tonic::codegen::tokio_stream::iter([etcd::LeaseKeepAliveRequest { id }]);
        let mut answers = self.lease.lease_keep_alive(requests).await?.into_inner();
        let answer = answers.message().await?;
        Ok(answer.map_or(0, |a| a.ttl))
    }
}

fn compare(
    key: &str,
    target: etcd::compare::CompareTarget,
    value: etcd::compare::TargetUnion,
) -> etcd::Compare {
    etcd::Compare {
        result: etcd::compare::CompareResult::Equal as i32,
        target: target as i32,
        key: key.as_bytes().to_vec(),
        target_union: Some(value),
    }
}

/// The Lua scripts of the raw Redis baseline.
#[derive(Debug)]
pub(crate) struct RedisScripts {
    unlock: redis::Script,
    renew: redis::Script,
}

/// Compare-and-delete: the usual Redis unlock.
const REDIS_UNLOCK: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";
/// Compare-and-expire: the usual Redis renew.
const REDIS_RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// A PostgreSQL connection with its prepared statements.
#[derive(Debug)]
pub(crate) struct PgClient {
    client: tokio_postgres::Client,
    lock: tokio_postgres::Statement,
    unlock: tokio_postgres::Statement,
}

/// The table of the raw PostgreSQL baseline.
pub(crate) const PG_SETUP: &str = "CREATE TABLE IF NOT EXISTS bench_locks (
    key text PRIMARY KEY, owner text NOT NULL, expires_at timestamptz NOT NULL)";
const PG_LOCK: &str = "INSERT INTO bench_locks AS l (key, owner, expires_at)
    VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond')
    ON CONFLICT (key) DO UPDATE SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
    WHERE l.expires_at <= now()
    RETURNING l.owner";
const PG_UNLOCK: &str = "DELETE FROM bench_locks WHERE key = $1 AND owner = $2";

impl Client {
    /// Open one connection to `target`.
    pub(crate) async fn connect(target: &Target) -> Result<Client> {
        Ok(match target {
            Target::Http { addr, store } => {
                let stream = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .with_context(|| format!("connect to {addr}"))?;
                stream.set_nodelay(true)?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Client::Http(HttpClient {
                    sender,
                    host: addr.clone(),
                    lock_path: format!("/v1.0-alpha1/lock/{store}"),
                    unlock_path: format!("/v1.0-alpha1/unlock/{store}"),
                })
            }
            Target::DaprGrpc { addr, store } => {
                let channel = grpc_channel(addr).await?;
                Client::DaprGrpc(DaprClient::new(channel), store.clone())
            }
            Target::V1Grpc { addr, store } => {
                let channel = grpc_channel(addr).await?;
                Client::V1Grpc(LocksClient::new(channel), store.clone())
            }
            Target::Redis { addr } => {
                let client = redis::Client::open(format!("redis://{addr}/"))?;
                let connection = client.get_multiplexed_async_connection().await?;
                Client::Redis(
                    connection,
                    Box::new(RedisScripts {
                        unlock: redis::Script::new(REDIS_UNLOCK),
                        renew: redis::Script::new(REDIS_RENEW),
                    }),
                )
            }
            Target::Etcd { endpoint } => {
                let client = EtcdClient::connect(endpoint).await?;
                Client::Etcd(Box::new(client), HashMap::new())
            }
            Target::Postgres { conninfo } => {
                let (client, connection) =
                    tokio_postgres::connect(conninfo, tokio_postgres::NoTls).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                let lock = client.prepare(PG_LOCK).await?;
                let unlock = client.prepare(PG_UNLOCK).await?;
                Client::Postgres(Box::new(PgClient {
                    client,
                    lock,
                    unlock,
                }))
            }
        })
    }

    /// Try once to take `key` for `owner`.
    pub(crate) async fn lock(
        &mut self,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Outcome> {
        let seconds = lease.as_secs().max(1);
        match self {
            Client::Http(http) => {
                let body = format!(
                    r#"{{"resourceId":"{key}","lockOwner":"{owner}","expiryInSeconds":{seconds}}}"#
                );
                let path = http.lock_path.clone();
                let text = http.post(&path, body).await?;
                if text.contains(r#""success":true"#) {
                    Ok(Outcome::Done)
                } else if text.contains(r#""success":false"#) {
                    Ok(Outcome::Refused)
                } else {
                    bail!("unexpected lock answer {text}")
                }
            }
            Client::DaprGrpc(client, store) => {
                let response = client
                    .try_lock_alpha1(TryLockRequest {
                        store_name: store.clone(),
                        resource_id: key.to_owned(),
                        lock_owner: owner.to_owned(),
                        expiry_in_seconds: i32::try_from(seconds).unwrap_or(i32::MAX),
                    })
                    .await?;
                Ok(done_if(response.get_ref().success))
            }
            Client::V1Grpc(client, store) => {
                let acquired = v1_acquire(client, store, key, owner, lease, 0).await?;
                Ok(done_if(acquired))
            }
            Client::Redis(connection, _) => {
                let answer: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(owner)
                    .arg("PX")
                    .arg(lease.as_millis() as u64)
                    .arg("NX")
                    .query_async(connection)
                    .await?;
                Ok(done_if(answer.is_some()))
            }
            Client::Etcd(etcd, leases) => {
                use etcd::compare::{CompareTarget, TargetUnion};
                let lease_id = etcd.grant(seconds as i64).await?;
                let put = etcd::request_op::Request::RequestPut(etcd::PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: owner.as_bytes().to_vec(),
                    lease: lease_id,
                    ..Default::default()
                });
                let absent = compare(key, CompareTarget::Create, TargetUnion::CreateRevision(0));
                if etcd.txn(absent, put).await? {
                    leases.insert(key.to_owned(), lease_id);
                    Ok(Outcome::Done)
                } else {
                    etcd.revoke(lease_id).await?;
                    Ok(Outcome::Refused)
                }
            }
            Client::Postgres(pg) => {
                let rows = pg
                    .client
                    .query(&pg.lock, &[&key, &owner, &(lease.as_millis() as i64)])
                    .await?;
                Ok(done_if(!rows.is_empty()))
            }
        }
    }

    /// Release `key` if `owner` holds it.
    pub(crate) async fn unlock(&mut self, key: &str, owner: &str) -> Result<Outcome> {
        match self {
            Client::Http(http) => {
                let body = format!(r#"{{"resourceId":"{key}","lockOwner":"{owner}"}}"#);
                let path = http.unlock_path.clone();
                let text = http.post(&path, body).await?;
                if text.contains(r#""status":0"#) {
                    Ok(Outcome::Done)
                } else if text.contains(r#""status":"#) {
                    Ok(Outcome::Refused)
                } else {
                    bail!("unexpected unlock answer {text}")
                }
            }
            Client::DaprGrpc(client, store) => {
                let response = client
                    .unlock_alpha1(UnlockRequest {
                        store_name: store.clone(),
                        resource_id: key.to_owned(),
                        lock_owner: owner.to_owned(),
                    })
                    .await?;
                Ok(done_if(response.get_ref().status == 0))
            }
            Client::V1Grpc(client, store) => {
                let response = client
                    .release(ReleaseRequest {
                        store: store.clone(),
                        resource_id: key.to_owned(),
                        owner: owner.to_owned(),
                        fencing_token: 0,
                    })
                    .await?;
                Ok(done_if(response.get_ref().status == 0))
            }
            Client::Redis(connection, scripts) => {
                let deleted: i64 = scripts
                    .unlock
                    .key(key)
                    .arg(owner)
                    .invoke_async(connection)
                    .await?;
                Ok(done_if(deleted == 1))
            }
            Client::Etcd(etcd, leases) => {
                use etcd::compare::{CompareTarget, TargetUnion};
                let owned = compare(
                    key,
                    CompareTarget::Value,
                    TargetUnion::Value(owner.as_bytes().to_vec()),
                );
                let delete =
                    etcd::request_op::Request::RequestDeleteRange(etcd::DeleteRangeRequest {
                        key: key.as_bytes().to_vec(),
                        ..Default::default()
                    });
                let deleted = etcd.txn(owned, delete).await?;
                if let Some(lease_id) = leases.remove(key) {
                    etcd.revoke(lease_id).await?;
                }
                Ok(done_if(deleted))
            }
            Client::Postgres(pg) => {
                let deleted = pg.client.execute(&pg.unlock, &[&key, &owner]).await?;
                Ok(done_if(deleted == 1))
            }
        }
    }

    /// Extend `owner`'s lease on `key`.
    pub(crate) async fn renew(
        &mut self,
        key: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Outcome> {
        match self {
            Client::V1Grpc(client, store) => {
                let response = client
                    .renew(RenewRequest {
                        store: store.clone(),
                        resource_id: key.to_owned(),
                        owner: owner.to_owned(),
                        lease_ms: lease.as_millis() as u64,
                    })
                    .await?;
                Ok(done_if(
                    response.get_ref().status == RenewStatus::Renewed as i32,
                ))
            }
            Client::Redis(connection, scripts) => {
                let renewed: i64 = scripts
                    .renew
                    .key(key)
                    .arg(owner)
                    .arg(lease.as_millis() as u64)
                    .invoke_async(connection)
                    .await?;
                Ok(done_if(renewed == 1))
            }
            Client::Etcd(etcd, leases) => {
                let Some(&lease_id) = leases.get(key) else {
                    return Ok(Outcome::Refused);
                };
                Ok(done_if(etcd.keep_alive(lease_id).await? > 0))
            }
            _ => bail!("renew is not part of this API"),
        }
    }
}

fn done_if(done: bool) -> Outcome {
    if done {
        Outcome::Done
    } else {
        Outcome::Refused
    }
}

async fn grpc_channel(addr: &str) -> Result<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connect to {addr}"))?;
    Ok(channel)
}

async fn v1_acquire(
    client: &mut LocksClient<Channel>,
    store: &str,
    key: &str,
    owner: &str,
    lease: Duration,
    wait_ms: u64,
) -> Result<bool> {
    let response = client
        .acquire(AcquireRequest {
            store: store.to_owned(),
            resource_id: key.to_owned(),
            owner: owner.to_owned(),
            lease_ms: lease.as_millis() as u64,
            wait_ms,
        })
        .await?;
    Ok(response.get_ref().acquired)
}

impl HttpClient {
    async fn post(&mut self, path: &str, body: String) -> Result<String> {
        let request = http::Request::post(path)
            .header(http::header::HOST, self.host.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&body).into_owned();
        if !status.is_success() {
            bail!("HTTP {status}: {text}");
        }
        Ok(text)
    }
}

/// Per-task tallies, merged after the run.
#[derive(Debug)]
struct Tally {
    latency: Histogram<u64>,
    requests: u64,
    acquired: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: new_histogram(),
            requests: 0,
            acquired: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn record(&mut self, started: Instant, result: &Result<Outcome>, measure: bool) {
        if !measure {
            return;
        }
        let nanos = started.elapsed().as_nanos() as u64;
        self.latency.saturating_record(nanos.max(1_000));
        self.requests += 1;
        match result {
            Ok(Outcome::Done) => {}
            Ok(Outcome::Refused) => {}
            Err(err) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(format!("{err:#}"));
                }
            }
        }
    }
}

/// Shared clock of one run: when measuring starts and when clients stop.
#[derive(Debug)]
struct Window {
    measure_from: Instant,
    stop_at: Instant,
    budget: Option<AtomicU64>,
}

impl Window {
    /// Whether a request starting now is measured; `None` when the client
    /// should stop.
    fn admit(&self) -> Option<bool> {
        let now = Instant::now();
        if now >= self.stop_at {
            return None;
        }
        if now < self.measure_from {
            return Some(false);
        }
        if let Some(budget) = &self.budget {
            let left = budget.fetch_sub(1, Ordering::Relaxed);
            if left == 0 || left > u64::MAX / 2 {
                return None;
            }
        }
        Some(true)
    }
}

/// Run `spec` against `target`. `on_measure` is called once when the
/// measured window opens (to read the server's CPU time then).
pub(crate) async fn run(
    target: &Target,
    spec: &RunSpec,
    on_measure: impl FnOnce() + Send + 'static,
) -> Result<RunResult> {
    // Connect every client first, so connection set-up is not measured.
    let mut clients = Vec::with_capacity(spec.clients);
    for _ in 0..spec.clients {
        clients.push(Client::connect(target).await?);
    }
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let window = Arc::new(Window {
        measure_from,
        stop_at: measure_from + spec.duration,
        budget: spec.max_ops.map(AtomicU64::new),
    });
    let mut tasks = Vec::new();
    match spec.workload {
        Workload::Handoff => {
            if spec.clients < 2 {
                bail!("the hand-off workload needs at least 2 clients");
            }
            let mut pairs = Vec::new();
            while clients.len() >= 2 {
                let a = clients.pop().expect("two left");
                let b = clients.pop().expect("two left");
                pairs.push((a, b));
            }
            for (index, (a, b)) in pairs.into_iter().enumerate() {
                let window = window.clone();
                let spec = spec.clone();
                tasks.push(tokio::spawn(async move {
                    handoff_pair(a, b, index, &spec, &window).await
                }));
            }
        }
        _ => {
            for (index, client) in clients.into_iter().enumerate() {
                let window = window.clone();
                let spec = spec.clone();
                tasks.push(tokio::spawn(async move {
                    client_loop(client, index, &spec, &window).await
                }));
            }
        }
    }
    tokio::time::sleep_until(measure_from.into()).await;
    on_measure();
    let mut total = Tally::new();
    for task in tasks {
        let tally = task
            .await
            .map_err(|e| anyhow!("client task failed: {e}"))??;
        total
            .latency
            .add(&tally.latency)
            .expect("same histogram bounds");
        total.requests += tally.requests;
        total.acquired += tally.acquired;
        total.errors += tally.errors;
        if total.first_error.is_none() {
            total.first_error = tally.first_error;
        }
    }
    let elapsed = Instant::now().saturating_duration_since(measure_from);
    Ok(RunResult {
        latency: total.latency,
        requests: total.requests,
        acquired: total.acquired,
        errors: total.errors,
        first_error: total.first_error,
        elapsed,
    })
}

/// One client of the uncontended, contended or renew workload.
async fn client_loop(
    mut client: Client,
    index: usize,
    spec: &RunSpec,
    window: &Window,
) -> Result<Tally> {
    let mut tally = Tally::new();
    let mut rng = Rng::new(spec.run_id ^ ((index as u64 + 1) << 32));
    let owner = format!("owner-{}-{index}", spec.run_id);
    let mut key = String::with_capacity(48);
    if spec.workload == Workload::Renew {
        key = format!("renew-{}-{index}", spec.run_id);
        if client.lock(&key, &owner, spec.lease).await? != Outcome::Done {
            bail!("cannot take {key} to renew it");
        }
    }
    while let Some(measure) = window.admit() {
        match spec.workload {
            Workload::Uncontended | Workload::Contended => {
                key.clear();
                if spec.workload == Workload::Uncontended {
                    use std::fmt::Write;
                    let _ = write!(key, "bench-{}-{:x}", spec.run_id, rng.next_u64());
                } else {
                    use std::fmt::Write;
                    let hot = rng.next_u64() % spec.hot_keys.max(1) as u64;
                    let _ = write!(key, "hot-{}-{hot}", spec.run_id);
                }
                let started = Instant::now();
                let result = client.lock(&key, &owner, spec.lease).await;
                tally.record(started, &result, measure);
                if matches!(result, Ok(Outcome::Done)) {
                    if measure {
                        tally.acquired += 1;
                    }
                    // The unlock is a request of its own, measured as long
                    // as the window is open.
                    let Some(measure) = window.admit() else { break };
                    let started = Instant::now();
                    let result = client.unlock(&key, &owner).await;
                    tally.record(started, &result, measure);
                }
            }
            Workload::Renew => {
                let started = Instant::now();
                let result = client.renew(&key, &owner, spec.lease).await;
                if matches!(result, Ok(Outcome::Done)) && measure {
                    tally.acquired += 1;
                }
                tally.record(started, &result, measure);
            }
            Workload::Handoff => unreachable!("hand-off runs in pairs"),
        }
    }
    Ok(tally)
}

/// Two clients pass one lock back and forth through leasehold.v1 Acquire
/// with a wait. The measured time is from the moment the holder sends its
/// Release to the moment the waiter's Acquire returns granted.
async fn handoff_pair(
    a: Client,
    b: Client,
    index: usize,
    spec: &RunSpec,
    window: &Window,
) -> Result<Tally> {
    let (Client::V1Grpc(mut holder, store), Client::V1Grpc(mut waiter, _)) = (a, b) else {
        bail!("the hand-off workload needs leasehold.v1 clients");
    };
    let mut tally = Tally::new();
    let key = format!("handoff-{}-{index}", spec.run_id);
    let mut owners = (
        format!("a-{}-{index}", spec.run_id),
        format!("b-{}-{index}", spec.run_id),
    );
    if !v1_acquire(&mut holder, &store, &key, &owners.0, spec.lease, 1_000).await? {
        bail!("cannot take {key} to start the hand-off");
    }
    while let Some(measure) = window.admit() {
        // The waiter asks first; it blocks in the server until the release.
        let mut wait_client = waiter.clone();
        let wait_store = store.clone();
        let wait_key = key.clone();
        let wait_owner = owners.1.clone();
        let lease = spec.lease;
        let waiting = tokio::spawn(async move {
            let granted = v1_acquire(
                &mut wait_client,
                &wait_store,
                &wait_key,
                &wait_owner,
                lease,
                5_000,
            )
            .await;
            (granted, Instant::now())
        });
        // Give the waiter's request time to reach the server and queue.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let released_at = Instant::now();
        let released = holder
            .release(ReleaseRequest {
                store: store.clone(),
                resource_id: key.clone(),
                owner: owners.0.clone(),
                fencing_token: 0,
            })
            .await;
        let (granted, granted_at) = waiting.await?;
        let result = match (released, granted) {
            (Ok(_), Ok(true)) => Ok(Outcome::Done),
            (Ok(_), Ok(false)) => Ok(Outcome::Refused),
            (Err(err), _) => Err(anyhow!(err)),
            (_, Err(err)) => Err(err),
        };
        if measure {
            let nanos = granted_at.saturating_duration_since(released_at).as_nanos() as u64;
            tally.latency.saturating_record(nanos.max(1_000));
            tally.requests += 1;
            match &result {
                Ok(Outcome::Done) => tally.acquired += 1,
                Ok(Outcome::Refused) => {}
                Err(err) => {
                    tally.errors += 1;
                    if tally.first_error.is_none() {
                        tally.first_error = Some(format!("{err:#}"));
                    }
                }
            }
        }
        match result {
            Ok(Outcome::Done) => {
                // Roles swap: the new holder releases next time.
                std::mem::swap(&mut holder, &mut waiter);
                std::mem::swap(&mut owners.0, &mut owners.1);
            }
            _ => {
                // Start again from a known state: the holder retakes it.
                let _ = v1_acquire(&mut holder, &store, &key, &owners.0, spec.lease, 1_000).await;
            }
        }
    }
    Ok(tally)
}

/// Take `count` locks with long leases through the Dapr gRPC API, with
/// `parallel` requests in flight over `connections` channels. Each lock's
/// lease is `lease_for(i)`. Returns the number taken and the time it took.
pub(crate) async fn fill(
    addr: &str,
    store: &str,
    prefix: &str,
    range: std::ops::Range<u64>,
    parallel: usize,
    lease_for: Arc<dyn Fn(u64) -> i32 + Send + Sync>,
) -> Result<(u64, Duration)> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(range.start));
    let taken = Arc::new(AtomicU64::new(0));
    let mut channels = Vec::new();
    for _ in 0..parallel.clamp(1, 4) {
        channels.push(grpc_channel(addr).await?);
    }
    let mut tasks = Vec::new();
    for index in 0..parallel {
        let channel = channels[index % channels.len()].clone();
        let mut client = DaprClient::new(channel);
        let next = next.clone();
        let taken = taken.clone();
        let lease_for = lease_for.clone();
        let store = store.to_owned();
        let prefix = prefix.to_owned();
        let end = range.end;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<(), anyhow::Error>(());
                }
                let response = client
                    .try_lock_alpha1(TryLockRequest {
                        store_name: store.clone(),
                        resource_id: format!("{prefix}{i}"),
                        lock_owner: "filler".to_owned(),
                        expiry_in_seconds: lease_for(i),
                    })
                    .await?;
                if response.get_ref().success {
                    taken.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok((taken.load(Ordering::Relaxed), started.elapsed()))
}
