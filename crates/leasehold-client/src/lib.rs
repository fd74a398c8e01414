//! A Rust client for [leasehold](https://github.com/leasehold/leasehold):
//! distributed locks with fencing tokens, renewal in the background and
//! notice of loss.
//!
//! [`Client::lock`] and [`Client::try_lock`] return a [`LockGuard`], and so
//! do [`Client::semaphore`], [`Client::read`], [`Client::write`] and
//! [`Client::elect`] for the other primitives (an election's fencing token
//! is the leader's term). While
//! the guard lives, it renews the lease in the background (leasehold.v1
//! `Renew`, every third of the lease). The guard carries the grant's
//! [`fencing_token`](LockGuard::fencing_token): pass it to the resource you
//! protect, and have the resource refuse tokens lower than the highest it
//! has seen. [`LockGuard::lost`] resolves when the lease is lost: a renewal
//! is refused (force-unlocked, expired, the hold cap reached) or reaches a
//! later grant of the same owner (guards of one client share its owner
//! name), or renewals fail until a margin before the lease could run out.
//! The guard keeps that deadline on its own clock, counted from when each
//! request was *sent*, so a stalled sidecar or network cannot make it
//! believe it still holds a lock that may already be someone else's.
//! [`LockGuard::unlock`] consumes the guard; dropping it releases the lock
//! in the background. Either releases the guard's own grant only (by its
//! fencing token), never a later one; a lost lease is not released at all.
//! The lease is the safety net if the process dies.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), leasehold_client::Error> {
//! # let server = leasehold_server::embedded::EmbeddedServer::start().await.unwrap();
//! # let endpoint = server.grpc_endpoint();
//! use std::time::Duration;
//! use leasehold_client::{Client, Config};
//!
//! let client = Client::connect(Config::new(endpoint)).await?;
//! let guard = client
//!     .lock("lockstore", "nightly-report", Duration::from_secs(10), Duration::from_secs(30))
//!     .await?;
//! println!("holding with fencing token {}", guard.fencing_token());
//!
//! // Someone else cannot have it now.
//! assert!(client.try_lock("lockstore", "nightly-report", Duration::from_secs(10)).await?.is_none());
//!
//! tokio::select! {
//!     reason = guard.lost() => eprintln!("stop work at once: {reason}"),
//!     () = tokio::time::sleep(Duration::from_millis(50)) => {}, // the work
//! }
//! guard.unlock().await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use leasehold_core::renewal::Schedule;
use leasehold_proto::v1::elections_client::ElectionsClient;
use leasehold_proto::v1::locks_client::LocksClient;
use leasehold_proto::v1::rw_locks_client::RwLocksClient;
use leasehold_proto::v1::semaphores_client::SemaphoresClient;
use leasehold_proto::v1::{
    self as pb, AcquireRequest, ForceUnlockRequest, ListRequest, ReleaseRequest, ReleaseStatus,
    RenewRequest, RenewStatus, StatusRequest,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// How to reach the sidecar.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// The gRPC endpoint, e.g. `http://127.0.0.1:50001`.
    pub endpoint: String,
    /// Dapr's app token (`DAPR_API_TOKEN`), if the sidecar requires one.
    pub api_token: Option<String>,
    /// The admin token, for listing and force-unlock.
    pub admin_token: Option<String>,
    /// How long to wait for the connection.
    pub connect_timeout: Duration,
    /// The owner name used by guards; a random one per client by default.
    pub owner: String,
    /// PEM CA bundle to verify an `https://` endpoint with (the system's
    /// roots are not used).
    pub tls_ca: Option<Vec<u8>>,
    /// PEM certificate and key to present, for servers that require client
    /// certificates.
    pub tls_identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("endpoint", &self.endpoint)
            .field("api_token", &self.api_token.as_ref().map(|_| "***"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("connect_timeout", &self.connect_timeout)
            .field("owner", &self.owner)
            .field("tls_ca", &self.tls_ca.is_some())
            .field("tls_identity", &self.tls_identity.is_some())
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new("http://127.0.0.1:50001")
    }
}

impl Config {
    /// A configuration for `endpoint` with defaults for the rest.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Config {
            endpoint: endpoint.into(),
            api_token: None,
            admin_token: None,
            connect_timeout: Duration::from_secs(5),
            owner: random_owner(),
            tls_ca: None,
            tls_identity: None,
        }
    }

    /// Read the endpoint and tokens from the environment Dapr uses:
    /// `DAPR_GRPC_ENDPOINT`, or `DAPR_GRPC_PORT` on 127.0.0.1;
    /// `DAPR_API_TOKEN`; `LEASEHOLD_ADMIN_TOKEN`.
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        let endpoint = var("DAPR_GRPC_ENDPOINT").unwrap_or_else(|| {
            format!(
                "http://127.0.0.1:{}",
                var("DAPR_GRPC_PORT").unwrap_or_else(|| "50001".to_owned())
            )
        });
        let mut config = Config::new(endpoint);
        config.api_token = var("DAPR_API_TOKEN");
        config.admin_token = var("LEASEHOLD_ADMIN_TOKEN");
        config
    }

    /// Use this app token.
    #[must_use]
    pub fn with_api_token(mut self, token: impl Into<String>) -> Self {
        self.api_token = Some(token.into());
        self
    }

    /// Use this admin token.
    #[must_use]
    pub fn with_admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// Hold locks under this owner name.
    #[must_use]
    pub fn with_owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into();
        self
    }

    /// Verify an `https://` endpoint against this PEM CA bundle.
    #[must_use]
    pub fn with_tls_ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca = Some(pem.into());
        self
    }

    /// Present this PEM certificate and key (mutual TLS).
    #[must_use]
    pub fn with_tls_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls_identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Wait this long for the connection.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// An owner name unlikely to collide: process id, time and a random part.
fn random_owner() -> String {
    use std::hash::{BuildHasher, RandomState};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let random = RandomState::new().hash_one(nanos);
    format!("client-{}-{random:016x}", std::process::id())
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint is malformed or could not be reached.
    #[error("cannot connect to {endpoint}: {message}")]
    Connect {
        /// The endpoint tried.
        endpoint: String,
        /// Why it failed.
        message: String,
    },
    /// The sidecar refused or failed the request.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// A wait for the lock ran out.
    #[error("the lock was not acquired within the wait")]
    NotAcquired,
    /// The lease was lost before the call completed.
    #[error("lease lost: {0}")]
    LeaseLost(String),
}

impl Error {
    /// Whether asking again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::NotAcquired => true,
            Error::Status(status) => matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Internal
            ),
            Error::LeaseLost(_) => false,
        }
    }
}

#[derive(Clone)]
struct Tokens {
    api: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
    admin: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Interceptor for Tokens {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.api {
            request
                .metadata_mut()
                .insert("dapr-api-token", token.clone());
        }
        if let Some(token) = &self.admin {
            request
                .metadata_mut()
                .insert("leasehold-admin-token", token.clone());
        }
        Ok(request)
    }
}

type Intercepted = InterceptedService<Channel, Tokens>;
type Rpc = LocksClient<Intercepted>;

/// A connection to a sidecar's leasehold.v1 API. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    rpc: Rpc,
    semaphores: SemaphoresClient<Intercepted>,
    rw_locks: RwLocksClient<Intercepted>,
    elections: ElectionsClient<Intercepted>,
    owner: String,
}

/// What a guard holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Grant {
    /// A lock on a resource.
    Lock(String),
    /// Permits of a semaphore.
    Semaphore(String),
    /// A read/write lock, in either mode.
    RwLock(String),
    /// The leadership of an election (the token is the term).
    Election(String),
}

impl Grant {
    fn name(&self) -> &str {
        match self {
            Grant::Lock(name)
            | Grant::Semaphore(name)
            | Grant::RwLock(name)
            | Grant::Election(name) => name,
        }
    }
}

/// An election's leader, as `leader` and `observe` report it (advisory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// The leader.
    pub candidate: String,
    /// What it published.
    pub value: String,
    /// Its term: the fencing token of its leadership.
    pub term: u64,
    /// What is left of its lease.
    pub remaining: Duration,
}

fn leadership(response: pb::LeaderResponse) -> Option<Leadership> {
    response.has_leader.then(|| Leadership {
        candidate: response.candidate,
        value: response.value,
        term: response.term,
        remaining: Duration::from_millis(response.remaining_ms),
    })
}

/// The changes of an election's leadership, from the current state on.
pub struct LeaderChanges(tonic::Streaming<pb::LeaderResponse>);

impl fmt::Debug for LeaderChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaderChanges")
    }
}

impl LeaderChanges {
    /// The next change: the new leadership (`None`: nobody leads), or
    /// `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<Option<Leadership>>, Error> {
        Ok(self.0.message().await?.map(leadership))
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

/// One live lock as a status or a listing reports it (advisory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockState {
    /// The resource id.
    pub resource_id: String,
    /// The holder.
    pub owner: String,
    /// The grant's fencing token.
    pub fencing_token: u64,
    /// What is left of the lease.
    pub remaining: Duration,
}

/// The outcome of a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The lock was ours and is free now.
    Released,
    /// There was no live lock.
    NotFound,
    /// Someone else holds it.
    HeldByOther,
}

/// The outcome of a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewed {
    /// The lease runs for this long from now.
    Renewed(Duration),
    /// There was no live lock.
    NotFound,
    /// Someone else holds it.
    HeldByOther,
    /// The maximum hold time is reached; the lease runs out on its own.
    HoldLimitReached,
}

fn released_of(status: i32) -> Released {
    match ReleaseStatus::try_from(status) {
        Ok(ReleaseStatus::Released) => Released::Released,
        Ok(ReleaseStatus::NotFound) => Released::NotFound,
        _ => Released::HeldByOther,
    }
}

fn renewed_of(response: &pb::RenewResponse) -> Renewed {
    match RenewStatus::try_from(response.status) {
        Ok(RenewStatus::Renewed) => Renewed::Renewed(Duration::from_millis(response.lease_ms)),
        Ok(RenewStatus::RenewNotFound) => Renewed::NotFound,
        Ok(RenewStatus::HoldLimitReached) => Renewed::HoldLimitReached,
        _ => Renewed::HeldByOther,
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

fn metadata_value(
    what: &str,
    token: Option<&String>,
) -> Result<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>, Error> {
    token
        .map(|t| {
            t.parse().map_err(|_| Error::Connect {
                endpoint: String::new(),
                message: format!("the {what} is not valid header text"),
            })
        })
        .transpose()
}

impl Client {
    /// Connect to the sidecar.
    pub async fn connect(config: Config) -> Result<Client, Error> {
        let fail = |message: String| Error::Connect {
            endpoint: config.endpoint.clone(),
            message,
        };
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| fail(e.to_string()))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true);
        if config.endpoint.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new();
            match &config.tls_ca {
                Some(ca) => tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca)),
                None => {
                    return Err(fail(
                        "an https:// endpoint needs a CA bundle (Config::with_tls_ca)".to_owned(),
                    ));
                }
            }
            if let Some((cert, key)) = &config.tls_identity {
                tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| fail(e.to_string()))?;
        }
        let channel = endpoint.connect().await.map_err(|e| fail(e.to_string()))?;
        let tokens = Tokens {
            api: metadata_value("api token", config.api_token.as_ref())?,
            admin: metadata_value("admin token", config.admin_token.as_ref())?,
        };
        Ok(Client {
            rpc: LocksClient::with_interceptor(channel.clone(), tokens.clone()),
            semaphores: SemaphoresClient::with_interceptor(channel.clone(), tokens.clone()),
            rw_locks: RwLocksClient::with_interceptor(channel.clone(), tokens.clone()),
            elections: ElectionsClient::with_interceptor(channel, tokens),
            owner: config.owner,
        })
    }

    /// The owner name this client's guards hold locks under.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Take the lock if it is free; `None` if someone holds it.
    pub async fn try_lock(
        &self,
        store: &str,
        resource_id: &str,
        lease: Duration,
    ) -> Result<Option<LockGuard>, Error> {
        match self.hold(store, resource_id, lease, Duration::ZERO).await {
            Ok(guard) => Ok(Some(guard)),
            Err(Error::NotAcquired) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Take the lock, waiting up to `wait` for it. Waiters are served in
    /// order of arrival and woken by releases, never by polling.
    pub async fn lock(
        &self,
        store: &str,
        resource_id: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<LockGuard, Error> {
        self.hold(store, resource_id, lease, wait).await
    }

    async fn hold(
        &self,
        store: &str,
        resource_id: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<LockGuard, Error> {
        let grant = Grant::Lock(resource_id.to_owned());
        self.guard(store, grant, lease, |client| async move {
            client
                .acquire(store, resource_id, &client.owner, lease, wait)
                .await
        })
        .await
    }

    /// Take `permits` of the semaphore `name` of `limit`, waiting up to
    /// `wait`, and keep them in the background, as [`Client::lock`] keeps a
    /// lock. The first user of an idle semaphore declares its limit;
    /// another limit is refused while permits are held.
    pub async fn semaphore(
        &self,
        store: &str,
        name: &str,
        permits: u32,
        limit: u32,
        lease: Duration,
        wait: Duration,
    ) -> Result<LockGuard, Error> {
        let request = pb::SemaphoreAcquireRequest {
            store: store.to_owned(),
            name: name.to_owned(),
            owner: self.owner.clone(),
            permits,
            limit,
            lease_ms: millis(lease),
            wait_ms: millis(wait),
        };
        self.guard(
            store,
            Grant::Semaphore(name.to_owned()),
            lease,
            |client| async move {
                let answer = client
                    .semaphores
                    .clone()
                    .acquire(request)
                    .await?
                    .into_inner();
                Ok(answer.acquired.then_some(answer.fencing_token))
            },
        )
        .await
    }

    /// Take the read/write lock `name` to read (shared with other readers),
    /// waiting up to `wait`.
    pub async fn read(
        &self,
        store: &str,
        name: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<LockGuard, Error> {
        self.rw(store, name, pb::RwMode::Read, lease, wait).await
    }

    /// Take the read/write lock `name` to write (alone), waiting up to
    /// `wait`. While it waits, new readers wait behind it.
    pub async fn write(
        &self,
        store: &str,
        name: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<LockGuard, Error> {
        self.rw(store, name, pb::RwMode::Write, lease, wait).await
    }

    async fn rw(
        &self,
        store: &str,
        name: &str,
        mode: pb::RwMode,
        lease: Duration,
        wait: Duration,
    ) -> Result<LockGuard, Error> {
        let request = pb::RwAcquireRequest {
            store: store.to_owned(),
            name: name.to_owned(),
            owner: self.owner.clone(),
            mode: mode as i32,
            lease_ms: millis(lease),
            wait_ms: millis(wait),
        };
        self.guard(
            store,
            Grant::RwLock(name.to_owned()),
            lease,
            |client| async move {
                let answer = client.rw_locks.clone().acquire(request).await?.into_inner();
                Ok(answer.acquired.then_some(answer.fencing_token))
            },
        )
        .await
    }

    /// Campaign in `election`, waiting up to `wait` to be elected, and stay
    /// leader in the background. The guard's fencing token is the term:
    /// fence every write of the leader with it. `value` is what followers
    /// see (an address, say); the leader may replace it with
    /// [`LockGuard::proclaim`].
    pub async fn elect(
        &self,
        store: &str,
        election: &str,
        value: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<LockGuard, Error> {
        let request = pb::CampaignRequest {
            store: store.to_owned(),
            election: election.to_owned(),
            candidate: self.owner.clone(),
            value: value.to_owned(),
            lease_ms: millis(lease),
            wait_ms: millis(wait),
        };
        self.guard(
            store,
            Grant::Election(election.to_owned()),
            lease,
            |client| async move {
                let answer = client
                    .elections
                    .clone()
                    .acquire(request)
                    .await?
                    .into_inner();
                Ok(answer.acquired.then_some(answer.fencing_token))
            },
        )
        .await
    }

    /// Who leads `election` now (advisory: decide on terms, not on this).
    pub async fn leader(&self, store: &str, election: &str) -> Result<Option<Leadership>, Error> {
        let response = self
            .elections
            .clone()
            .leader(pb::LeaderRequest {
                store: store.to_owned(),
                election: election.to_owned(),
            })
            .await?
            .into_inner();
        Ok(leadership(response))
    }

    /// Every change of `election`'s leader, value or term, starting with
    /// the current leadership.
    pub async fn observe(&self, store: &str, election: &str) -> Result<LeaderChanges, Error> {
        let stream = self
            .elections
            .clone()
            .observe(pb::LeaderRequest {
                store: store.to_owned(),
                election: election.to_owned(),
            })
            .await?
            .into_inner();
        Ok(LeaderChanges(stream))
    }

    /// Take a grant with `acquire` and keep it: the guard renews it in the
    /// background from the moment the request was sent.
    async fn guard<F, Fut>(
        &self,
        store: &str,
        grant: Grant,
        lease: Duration,
        acquire: F,
    ) -> Result<LockGuard, Error>
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = Result<Option<u64>, Error>>,
    {
        // The store granted the lease after this instant, so the lease
        // surely lasts until `sent + lease` on this machine's clock.
        let sent = Instant::now();
        let Some(fence) = acquire(self.clone()).await? else {
            return Err(Error::NotAcquired);
        };
        // After a wait the grant came at some moment this side cannot know:
        // the send time is still a safe start, but may leave little of the
        // lease, or none. A renewal now starts it again from a known time.
        let (mut sent, mut granted) = (sent, lease);
        if sent.elapsed() >= lease / 3 {
            let again = Instant::now();
            match self.renew_grant(store, &grant, fence, lease).await? {
                (Renewed::Renewed(renewed), token) if token == fence => {
                    (sent, granted) = (again, renewed);
                }
                _ => {
                    return Err(Error::LeaseLost(
                        "the lease ran out while the answer to the wait was on its way".to_owned(),
                    ));
                }
            }
        }
        let (lost_tx, lost_rx) = watch::channel(None);
        let keeper = Keeper {
            client: self.clone(),
            store: store.to_owned(),
            grant: grant.clone(),
            lease,
            fence,
        };
        let task = tokio::spawn(async move {
            let reason = keeper.run(sent, granted).await;
            let _ = lost_tx.send(Some(reason));
        });
        Ok(LockGuard {
            client: self.clone(),
            store: store.to_owned(),
            grant,
            fence,
            lost: lost_rx,
            task: Some(task),
        })
    }

    /// Renew a grant: a lock by its owner (the answer names the grant it
    /// reached), a permit by its token.
    async fn renew_grant(
        &self,
        store: &str,
        grant: &Grant,
        fence: u64,
        lease: Duration,
    ) -> Result<(Renewed, u64), Error> {
        let request = |name: &str| pb::PermitRenewRequest {
            store: store.to_owned(),
            name: name.to_owned(),
            owner: self.owner.clone(),
            fencing_token: fence,
            lease_ms: millis(lease),
        };
        let response = match grant {
            Grant::Lock(resource_id) => {
                return self
                    .renew_with_token(store, resource_id, &self.owner, lease)
                    .await;
            }
            Grant::Semaphore(name) => self.semaphores.clone().renew(request(name)).await?,
            Grant::RwLock(name) => self.rw_locks.clone().renew(request(name)).await?,
            Grant::Election(name) => self.elections.clone().renew(request(name)).await?,
        }
        .into_inner();
        Ok((renewed_of(&response), response.fencing_token))
    }

    /// Give back exactly the grant of `fence`.
    async fn release_of(&self, store: &str, grant: &Grant, fence: u64) -> Result<Released, Error> {
        let request = |name: &str| pb::PermitReleaseRequest {
            store: store.to_owned(),
            name: name.to_owned(),
            owner: self.owner.clone(),
            fencing_token: fence,
        };
        let response = match grant {
            Grant::Lock(resource_id) => {
                return self
                    .release_grant(store, resource_id, &self.owner, fence)
                    .await;
            }
            Grant::Semaphore(name) => self.semaphores.clone().release(request(name)).await?,
            Grant::RwLock(name) => self.rw_locks.clone().release(request(name)).await?,
            Grant::Election(name) => {
                self.elections
                    .clone()
                    .resign(pb::ResignRequest {
                        store: store.to_owned(),
                        election: name.to_owned(),
                        candidate: self.owner.clone(),
                        term: fence,
                    })
                    .await?
            }
        }
        .into_inner();
        Ok(released_of(response.status))
    }

    /// One acquire without a guard: no renewal, no loss notice. Returns the
    /// fencing token if acquired.
    pub async fn acquire(
        &self,
        store: &str,
        resource_id: &str,
        owner: &str,
        lease: Duration,
        wait: Duration,
    ) -> Result<Option<u64>, Error> {
        let response = self
            .rpc
            .clone()
            .acquire(AcquireRequest {
                store: store.to_owned(),
                resource_id: resource_id.to_owned(),
                owner: owner.to_owned(),
                lease_ms: millis(lease),
                wait_ms: millis(wait),
            })
            .await?
            .into_inner();
        Ok(response.acquired.then_some(response.fencing_token))
    }

    /// Release `owner`'s lock.
    pub async fn release(
        &self,
        store: &str,
        resource_id: &str,
        owner: &str,
    ) -> Result<Released, Error> {
        self.release_grant(store, resource_id, owner, 0).await
    }

    /// Release only the grant that was given `fencing_token` (0: whichever
    /// grant `owner` holds). A later grant of the same owner is reported
    /// [`Released::HeldByOther`] and kept.
    pub async fn release_grant(
        &self,
        store: &str,
        resource_id: &str,
        owner: &str,
        fencing_token: u64,
    ) -> Result<Released, Error> {
        let response = self
            .rpc
            .clone()
            .release(ReleaseRequest {
                store: store.to_owned(),
                resource_id: resource_id.to_owned(),
                owner: owner.to_owned(),
                fencing_token,
            })
            .await?
            .into_inner();
        Ok(released_of(response.status))
    }

    /// Extend `owner`'s lease to `lease` from now.
    pub async fn renew(
        &self,
        store: &str,
        resource_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Renewed, Error> {
        self.renew_with_token(store, resource_id, owner, lease)
            .await
            .map(|(renewed, _)| renewed)
    }

    /// [`Client::renew`], with the fencing token of the grant it renewed.
    async fn renew_with_token(
        &self,
        store: &str,
        resource_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<(Renewed, u64), Error> {
        let response = self
            .rpc
            .clone()
            .renew(RenewRequest {
                store: store.to_owned(),
                resource_id: resource_id.to_owned(),
                owner: owner.to_owned(),
                lease_ms: millis(lease),
            })
            .await?
            .into_inner();
        Ok((renewed_of(&response), response.fencing_token))
    }

    /// Who holds a lock (advisory: decide on fencing tokens, not on this).
    pub async fn status(&self, store: &str, resource_id: &str) -> Result<Option<LockState>, Error> {
        let response = self
            .rpc
            .clone()
            .status(StatusRequest {
                store: store.to_owned(),
                resource_id: resource_id.to_owned(),
            })
            .await?
            .into_inner();
        Ok(response.held.then(|| LockState {
            resource_id: resource_id.to_owned(),
            owner: response.owner,
            fencing_token: response.fencing_token,
            remaining: Duration::from_millis(response.remaining_ms),
        }))
    }

    /// Every live lock whose resource id starts with `prefix` (admin token
    /// needed), following pages to the end.
    pub async fn list(&self, store: &str, prefix: &str) -> Result<Vec<LockState>, Error> {
        let mut locks = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .rpc
                .clone()
                .list(ListRequest {
                    store: store.to_owned(),
                    prefix: prefix.to_owned(),
                    page_token,
                    page_size: 500,
                })
                .await?
                .into_inner();
            locks.extend(page.locks.into_iter().map(|l| LockState {
                resource_id: l.resource_id,
                owner: l.owner,
                fencing_token: l.fencing_token,
                remaining: Duration::from_millis(l.remaining_ms),
            }));
            if page.next_page_token.is_empty() {
                return Ok(locks);
            }
            page_token = page.next_page_token;
        }
    }

    /// Break a lock whoever holds it (admin token needed). Returns the
    /// evicted owner and token, if there was a lock.
    pub async fn force_unlock(
        &self,
        store: &str,
        resource_id: &str,
        reason: &str,
    ) -> Result<Option<(String, u64)>, Error> {
        let response = self
            .rpc
            .clone()
            .force_unlock(ForceUnlockRequest {
                store: store.to_owned(),
                resource_id: resource_id.to_owned(),
                reason: reason.to_owned(),
            })
            .await?
            .into_inner();
        Ok(response
            .released
            .then_some((response.evicted_owner, response.evicted_fencing_token)))
    }
}

/// Renews one guard's lease and keeps the guard's own deadline.
struct Keeper {
    client: Client,
    store: String,
    grant: Grant,
    lease: Duration,
    /// The grant this guard holds: a renewal that reaches another grant
    /// (same owner, granted again since) means this one is gone.
    fence: u64,
}

impl Keeper {
    /// Renew at a third of the lease until the lease is lost; returns why.
    ///
    /// Each renewal's lease is counted from the moment its request was
    /// sent, never from the reply, so the deadline kept here is never later
    /// than the store's. When renewals fail, the guard reports the loss a
    /// margin before that deadline, by its own timer: a stalled sidecar or
    /// network cannot make it believe it still holds the lock.
    async fn run(self, granted_after: Instant, granted: Duration) -> String {
        let mut schedule = Schedule::new(granted_after, self.lease);
        // A lease cut short by the hold cap counts for what it is.
        schedule.renewed(granted_after, granted);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(schedule.give_up_at()) => {
                    return "the lease could not be renewed before it would run out".to_owned();
                }
                () = tokio::time::sleep_until(schedule.renew_at()) => {}
            }
            let attempt = Instant::now();
            let renewal = tokio::time::timeout(
                schedule.budget(attempt),
                self.client
                    .renew_grant(&self.store, &self.grant, self.fence, self.lease),
            )
            .await;
            match renewal {
                Ok(Ok((Renewed::Renewed(_), token))) if token != self.fence => {
                    return "the lock was released or expired without this guard and granted \
                            again to the same owner (another guard or request holds it now)"
                        .to_owned();
                }
                Ok(Ok((Renewed::Renewed(lease), _))) => schedule.renewed(attempt, lease),
                Ok(Ok((Renewed::NotFound, _))) => {
                    return "the lock was released or expired without this guard (force-unlocked, or the lease ran out)"
                        .to_owned();
                }
                Ok(Ok((Renewed::HeldByOther, _))) => {
                    return "another owner holds the lock".to_owned();
                }
                Ok(Ok((Renewed::HoldLimitReached, _))) => {
                    return "the sidecar's maximum hold time is reached".to_owned();
                }
                // Try again soon, while the lease lasts.
                Ok(Err(_)) => schedule.retry(Instant::now()),
                Err(_) => {
                    return "the lease could not be renewed before it would run out".to_owned();
                }
            }
        }
    }
}

/// A held lock, renewed in the background while the guard lives.
#[derive(Debug)]
pub struct LockGuard {
    client: Client,
    store: String,
    grant: Grant,
    fence: u64,
    lost: watch::Receiver<Option<String>>,
    task: Option<JoinHandle<()>>,
}

impl LockGuard {
    /// The grant's fencing token: hand it to the resource you protect.
    pub fn fencing_token(&self) -> u64 {
        self.fence
    }

    /// The owner name the lock is held under.
    pub fn owner(&self) -> &str {
        &self.client.owner
    }

    /// The resource id (the semaphore's, the read/write lock's or the
    /// election's name, for those guards).
    pub fn resource_id(&self) -> &str {
        self.grant.name()
    }

    /// For an election's guard: replace the value followers see, keeping
    /// the term. `false` when this guard no longer leads.
    pub async fn proclaim(&self, value: &str) -> Result<bool, Error> {
        let Grant::Election(election) = &self.grant else {
            return Err(Error::Status(tonic::Status::invalid_argument(
                "only an election's guard proclaims",
            )));
        };
        let response = self
            .client
            .elections
            .clone()
            .proclaim(pb::ProclaimRequest {
                store: self.store.clone(),
                election: election.clone(),
                candidate: self.client.owner.clone(),
                term: self.fence,
                value: value.to_owned(),
            })
            .await?
            .into_inner();
        Ok(response.proclaimed)
    }

    /// Whether the lease is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some()
    }

    /// Resolves, with the reason, when the lease is lost. Stop using the
    /// resource at once when it does.
    pub async fn lost(&self) -> String {
        let mut lost = self.lost.clone();
        match lost.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the lock guard's stream ended".to_owned(),
        }
    }

    /// Release the lock. An error when the lease was already lost.
    pub async fn unlock(mut self) -> Result<(), Error> {
        if let Some(reason) = self.lost.borrow().clone() {
            return Err(Error::LeaseLost(reason));
        }
        let outcome = self
            .client
            .release_of(&self.store, &self.grant, self.fence)
            .await;
        if let Some(task) = self.task.take() {
            task.abort();
        }
        match outcome? {
            Released::Released => Ok(()),
            Released::NotFound => Err(Error::LeaseLost("the lease had run out".to_owned())),
            Released::HeldByOther => {
                Err(Error::LeaseLost("another owner holds the lock".to_owned()))
            }
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        task.abort();
        // A lost lease is not released: the key may be someone else's by
        // now, or this owner's again under a later grant.
        if self.is_lost() {
            return;
        }
        // Release this grant (and only it) in the background when a runtime
        // is there to do it; the lease is the safety net otherwise.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let (store, grant, fence) = (self.store.clone(), self.grant.clone(), self.fence);
            runtime.spawn(async move {
                let _ = client.release_of(&store, &grant, fence).await;
            });
        }
    }
}
