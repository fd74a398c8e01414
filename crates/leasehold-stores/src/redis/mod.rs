//! `lock.redis`: locks in Redis, interoperable with daprd's Redis lock
//! component.
//!
//! * **Keys and values are daprd's.** The lock key is the scoped key
//!   (`lock||<appId>||<resourceId>`), its value the owner, with a
//!   millisecond expiry; unlock deletes only the owner's key and reports
//!   daprd's three outcomes. A daprd sidecar and a leasehold sidecar on one
//!   Redis respect each other's locks.
//! * **Fencing tokens** come from a counter in a hash beside each lock key
//!   (`leasehold-fence||<key>`), incremented by the same script that takes
//!   the lock, so they grow per key across sidecar restarts.
//! * **Lost replies**: each call carries a nonce stored by its script, so a
//!   retry on a new connection recognises the effect of an earlier send.
//! * **Modes**: one server, a master found through Sentinel
//!   (`failover: true`), or a majority of independent masters
//!   (`quorum: true`, Redlock-style).
//!
//! The metadata, the modes and their safety assumptions are described in
//! `docs/stores/redis.md`.

mod config;
mod link;
mod node;
mod pem;
mod pipe;
mod quorum;
mod resp;
mod scripts;
mod tls;
mod watch;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use leasehold_core::{
    Acquire, Capabilities, Consistency, Fence, ForceRelease, LockInfo, LockStore, Release,
    ReleaseWait, Renewal, StoreError,
};

pub use config::{Addr, Config, Identity, Mode, ReplicaAck, Tls};
use link::Link;
use node::{Node, info_field};
use quorum::Quorum;
use scripts::Scripts;

/// A connection to Redis that could not be set up, or a server that fails
/// daprd's start-up checks.
#[derive(Debug)]
pub struct ConnectError(String);

impl std::error::Error for ConnectError {}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `lock.redis` store.
#[derive(Debug)]
pub struct RedisStore {
    backend: Backend,
    nonces: Nonces,
    capabilities: Capabilities,
}

#[derive(Debug)]
enum Backend {
    /// Standalone or Sentinel: one master.
    Single {
        node: Node,
        replica_ack: Option<ReplicaAck>,
    },
    /// Independent masters.
    Quorum(Quorum),
}

impl RedisStore {
    /// Connect and run daprd's start-up checks: `PING` (`error connecting to
    /// Redis`), then `INFO replication` (replicas without `failover: true`
    /// are refused: `replication is not supported`).
    pub async fn connect(config: Config) -> Result<Self, ConnectError> {
        if config
            .tls
            .as_ref()
            .is_some_and(|tls| tls.insecure_skip_verify)
        {
            tracing::warn!(
                "lock.redis: insecureSkipTLSVerify is true: the redis server's certificate is \
                 not verified, so anyone on the network path can pose as redis"
            );
        }
        let scripts = Arc::new(Scripts::new());
        let nodes: Vec<Node> = Link::targets(&config)
            .into_iter()
            .map(|target| {
                let link = Link::new(target, &config, scripts.codes());
                Node::new(link, scripts.clone(), &config)
            })
            .collect();
        let failover = matches!(*config.mode, Mode::Sentinel { .. });
        // A quorum starts with a minority of its masters down, as it runs.
        let may_fail = nodes.len() - config.majority();
        let mut unreachable = Vec::new();
        let mut durable = true;
        for node in &nodes {
            if let Err(err) = node.ping().await {
                unreachable.push(format!(
                    "error connecting to Redis ({}): {err}",
                    node.link().describe()
                ));
                if unreachable.len() > may_fail {
                    return Err(ConnectError(unreachable.join("; ")));
                }
                continue;
            }
            // As in daprd, a failing INFO (a proxy, a restricted user) skips
            // the check.
            if let Ok(replication) = node.info("replication").await {
                let replicas = info_field(&replication, "connected_slaves")
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(0);
                if replicas > 0 && !failover {
                    return Err(ConnectError(format!(
                        "replication is not supported ({} has {replicas} replicas; \
                         set failover: true to use it through sentinel)",
                        node.link().describe()
                    )));
                }
            }
            // Leases survive a restart of Redis only with the append-only
            // file; RDB snapshots lose the writes since the last one.
            let aof = match node.info("persistence").await {
                Ok(persistence) => info_field(&persistence, "aof_enabled") == Some("1"),
                Err(_) => false,
            };
            durable &= aof;
        }
        for problem in &unreachable {
            tracing::warn!("{problem}; starting with the other masters of the quorum");
        }
        durable &= unreachable.is_empty();
        let capabilities = Capabilities {
            fencing: true,
            renew: true,
            release_notify: true,
            admin: true,
            durable,
            // Asynchronous replication can lose a grant in a failover, and a
            // quorum rests on timing assumptions.
            consistency: Consistency::BestEffort,
        };
        let backend = match &*config.mode {
            Mode::Quorum {
                clock_drift_factor,
                node_timeout,
                ..
            } => Backend::Quorum(Quorum::new(
                nodes,
                config.majority(),
                *clock_drift_factor,
                *node_timeout,
            )),
            _ => Backend::Single {
                node: nodes
                    .into_iter()
                    .next()
                    .ok_or_else(|| ConnectError("no redis server configured".to_owned()))?,
                replica_ack: config.replica_ack,
            },
        };
        Ok(RedisStore {
            backend,
            nonces: Nonces::new(),
            capabilities,
        })
    }
}

/// Call nonces: unique per call, across processes (a random prefix per
/// store and a counter).
#[derive(Debug)]
struct Nonces {
    prefix: u64,
    next: AtomicU64,
}

impl Nonces {
    fn new() -> Self {
        let seed = (
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Nonces {
            prefix: RandomState::new().hash_one(seed),
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}-{n:x}", self.prefix)
    }
}

/// `WAIT` for the replicas after a grant (made with `nonce`) that went out
/// on connection `written_on`; a grant they did not acknowledge is taken
/// back.
async fn acknowledged(
    node: &Node,
    ack: ReplicaAck,
    written_on: u64,
    key: &str,
    owner: &str,
    nonce: &str,
) -> Result<(), StoreError> {
    let acks = node
        .link()
        .wait_replicas(ack.replicas, ack.timeout, written_on)
        .await;
    match acks {
        Ok(acks) if acks >= ack.replicas => Ok(()),
        other => {
            // A grant that may vanish in a failover is taken back rather
            // than handed out.
            let _ = node.take_back(key, owner, nonce).await;
            let why = match other {
                Ok(acks) => format!(
                    "{acks} of {} replicas acknowledged the lock within {:?}",
                    ack.replicas, ack.timeout
                ),
                Err(failure) => failure.into_error("wait").to_string(),
            };
            Err(StoreError::Unavailable(format!(
                "replica acknowledgement failed, the lock was released again: {why}"
            )))
        }
    }
}

#[async_trait]
impl LockStore for RedisStore {
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn try_lock(&self, key: &str, owner: &str, ttl: Duration) -> Result<Acquire, StoreError> {
        let nonce = self.nonces.next();
        match &self.backend {
            Backend::Single { node, replica_ack } => {
                let used = AtomicU64::new(0);
                let outcome = node
                    .acquire_on(key, owner, ttl, &nonce, Some(&used))
                    .await?;
                if let (Acquire::Acquired { .. }, Some(ack)) = (outcome, replica_ack) {
                    let written_on = used.load(Ordering::Acquire);
                    acknowledged(node, *ack, written_on, key, owner, &nonce).await?;
                }
                Ok(outcome)
            }
            Backend::Quorum(quorum) => quorum.acquire(key, owner, ttl, &nonce, &self.nonces).await,
        }
    }

    async fn release(
        &self,
        key: &str,
        owner: &str,
        grant: Option<Fence>,
    ) -> Result<Release, StoreError> {
        let nonce = self.nonces.next();
        match &self.backend {
            Backend::Single { node, .. } => node.release(key, owner, &nonce, grant).await,
            Backend::Quorum(quorum) => quorum.release(key, owner, &nonce, grant).await,
        }
    }

    async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Result<Renewal, StoreError> {
        match &self.backend {
            Backend::Single { node, replica_ack } => {
                let used = AtomicU64::new(0);
                let outcome = node.renew_on(key, owner, ttl, Some(&used)).await?;
                if let (Renewal::Renewed { .. }, Some(ack)) = (outcome, replica_ack) {
                    let written_on = used.load(Ordering::Acquire);
                    let acks = node
                        .link()
                        .wait_replicas(ack.replicas, ack.timeout, written_on)
                        .await;
                    if !matches!(acks, Ok(n) if n >= ack.replicas) {
                        return Err(StoreError::Unavailable(format!(
                            "the renewal was not acknowledged by {} replicas within {:?}",
                            ack.replicas, ack.timeout
                        )));
                    }
                }
                Ok(outcome)
            }
            Backend::Quorum(quorum) => quorum.renew(key, owner, ttl).await,
        }
    }

    async fn status(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        match &self.backend {
            Backend::Single { node, .. } => Ok(node.status(key).await?.map(|seen| LockInfo {
                key: key.to_owned(),
                owner: seen.owner,
                fence: seen.fence,
                remaining: seen.remaining,
            })),
            Backend::Quorum(quorum) => quorum.status(key).await,
        }
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LockInfo>, StoreError> {
        match &self.backend {
            Backend::Single { node, .. } => {
                let keys = node.scan(prefix).await?;
                let mut infos = Vec::new();
                // Keys can expire between the scan and their status: ask
                // for more until the page is full or the keys run out.
                let mut rest: Vec<String> = keys
                    .into_iter()
                    .filter(|key| after.is_none_or(|after| key.as_str() > after))
                    .collect();
                while infos.len() < limit && !rest.is_empty() {
                    let take = (limit - infos.len()).min(rest.len());
                    let batch: Vec<String> = rest.drain(..take).collect();
                    infos.extend(node.statuses(&batch).await?);
                }
                Ok(infos)
            }
            Backend::Quorum(quorum) => quorum.list(prefix, after, limit).await,
        }
    }

    async fn force_unlock(&self, key: &str) -> Result<ForceRelease, StoreError> {
        match &self.backend {
            Backend::Single { node, .. } => node.force(key).await,
            Backend::Quorum(quorum) => quorum.force(key).await,
        }
    }

    async fn watch_release(&self, key: &str) -> Result<ReleaseWait, StoreError> {
        match &self.backend {
            Backend::Single { node, .. } => node.watch(key).await,
            Backend::Quorum(quorum) => quorum.watch(key).await,
        }
    }

    async fn health(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Single { node, .. } => node.ping().await,
            Backend::Quorum(quorum) => quorum.health().await,
        }
    }

    async fn close(&self) {
        match &self.backend {
            Backend::Single { node, .. } => node.close(),
            Backend::Quorum(quorum) => quorum.close(),
        }
    }
}
