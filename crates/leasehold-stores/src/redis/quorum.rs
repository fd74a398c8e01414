//! A quorum of independent masters (Redlock-style): a lease is granted when
//! a majority of the masters grant it within its validity, measured on this
//! process's monotonic clock and shortened by a clock drift margin.
//!
//! Every operation goes to all masters at once. The safety assumptions
//! (bounded clock drift, masters that do not forget a lease on restart) are
//! written down in `docs/stores/redis.md`.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::{join_all, select_all};
use leasehold_core::{
    Acquire, Fence, ForceRelease, LockInfo, Release, ReleaseWait, Renewal, StoreError,
};
use tokio::time::Instant;

use super::Nonces;
use super::node::{LIST_SCAN_LIMIT, Node, Seen};

/// Redlock's fixed part of the drift margin, for the clock's granularity.
const DRIFT_FLOOR: Duration = Duration::from_millis(2);

#[derive(Debug)]
pub(crate) struct Quorum {
    nodes: Vec<Node>,
    majority: usize,
    drift_factor: f64,
    node_timeout: Duration,
}

/// How many times a split vote is tried again.
const SPLIT_RETRIES: u32 = 3;

/// What one round of grants decided.
enum Vote {
    Decided(Acquire),
    /// Some masters granted, too few to win, and no other owner won either.
    Split,
}

/// A pause of up to `attempt` × 3 ms, different for each caller, so that
/// racers that split the vote do not collide again in step.
fn split_pause(owner: &str, attempt: u32) -> Duration {
    use std::hash::BuildHasher;
    let noise = std::hash::RandomState::new().hash_one((owner, std::time::Instant::now()));
    let ceiling_us = 3_000 * u64::from(attempt);
    Duration::from_micros(noise % ceiling_us)
}

/// One master's answer, or a timeout after `limit`: the quorum never waits
/// on a frozen master longer than that.
async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or(Err(StoreError::Timeout(limit)))
}

impl Quorum {
    pub(crate) fn new(
        nodes: Vec<Node>,
        majority: usize,
        drift_factor: f64,
        node_timeout: Duration,
    ) -> Self {
        debug_assert!(majority > nodes.len() / 2 && majority <= nodes.len());
        Quorum {
            nodes,
            majority,
            drift_factor,
            node_timeout,
        }
    }

    fn drift(&self, ttl: Duration) -> Duration {
        ttl.mul_f64(self.drift_factor) + DRIFT_FLOOR
    }

    fn too_few(&self, what: &str, answered: usize, errors: &[StoreError]) -> StoreError {
        let first = errors
            .first()
            .map_or_else(String::new, |err| format!("; first error: {err}"));
        StoreError::Unavailable(format!(
            "{what}: only {answered} of {} redis masters answered, {} needed{first}",
            self.nodes.len(),
            self.majority
        ))
    }

    /// Take the lease on every master that grants it; keep it if a majority
    /// did within the lease's validity, else give back what was taken.
    ///
    /// Callers racing for a free key can split the vote (each granted by a
    /// minority of masters, so nobody wins); then, as Redlock advises, the
    /// attempt is repeated after a short random pause, a few times, so that
    /// a free key is not reported held when nobody holds it.
    pub(crate) async fn acquire(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        nonce: &str,
        nonces: &Nonces,
    ) -> Result<Acquire, StoreError> {
        let mut nonce = nonce.to_owned();
        let mut attempt = 0;
        loop {
            match self.acquire_once(key, owner, ttl, &nonce).await? {
                Vote::Decided(outcome) => return Ok(outcome),
                Vote::Split if attempt >= SPLIT_RETRIES => return Ok(Acquire::HeldByOther),
                Vote::Split => {
                    attempt += 1;
                    tokio::time::sleep(split_pause(owner, attempt)).await;
                    // Each send of a grant carries its own nonce.
                    nonce = nonces.next();
                }
            }
        }
    }

    async fn acquire_once(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        nonce: &str,
    ) -> Result<Vote, StoreError> {
        let started = Instant::now();
        // A master that answers after a quarter of the lease leaves too
        // little of it to be worth waiting for.
        let limit = self.node_timeout.min(ttl / 4);
        let outcomes = join_all(
            self.nodes
                .iter()
                .map(|node| bounded(limit, node.acquire(key, owner, ttl, nonce))),
        )
        .await;
        let mut tokens = Vec::new();
        let mut held = 0;
        let mut errors = Vec::new();
        for outcome in &outcomes {
            match outcome {
                Ok(Acquire::Acquired { fence }) => tokens.push(*fence),
                Ok(Acquire::HeldByOther) => held += 1,
                Err(_) => {}
            }
        }
        for outcome in outcomes.iter() {
            if let Err(err) = outcome {
                errors.push(StoreError::Unavailable(err.to_string()));
            }
        }
        let drift = self.drift(ttl);
        let valid = |started: Instant| started.elapsed() + drift < ttl;

        if tokens.len() >= self.majority && valid(started) {
            // The chosen token is the largest granted. Lift every master's
            // counter to it, so that the next majority, which shares at
            // least one master with this one, starts above it.
            let token: Fence = tokens.iter().copied().max().unwrap_or(0);
            let raised = join_all(
                self.nodes
                    .iter()
                    .map(|node| bounded(limit, node.raise(key, token, nonce))),
            )
            .await;
            let lifted = raised.iter().filter(|r| r.is_ok()).count();
            if lifted >= self.majority && valid(started) {
                return Ok(Vote::Decided(Acquire::Acquired { fence: token }));
            }
            self.undo(key, owner, nonce, &outcomes).await;
            return Err(StoreError::Unavailable(format!(
                "the lease was granted by a majority but could not be fenced on a majority \
                 within its validity ({lifted} of {} masters); it was released again",
                self.nodes.len()
            )));
        }

        self.undo(key, owner, nonce, &outcomes).await;
        if !tokens.is_empty() && tokens.len() >= self.majority {
            // A majority granted, but too late to leave any validity.
            return Err(StoreError::Timeout(started.elapsed()));
        }
        let answered = tokens.len() + held;
        if answered < self.majority {
            return Err(self.too_few("try-lock", answered, &errors));
        }
        // Nobody won this round; unless a majority refused (someone else
        // holds the key), another round may find a winner.
        if tokens.is_empty() || held >= self.majority {
            return Ok(Vote::Decided(Acquire::HeldByOther));
        }
        Ok(Vote::Split)
    }

    /// Take back this round's grant (made with `nonce`) on every master that
    /// granted or may have granted. Only that grant: a master that did not
    /// answer in time may hold an earlier, valid lease of the same owner,
    /// which an unlock by owner would delete.
    async fn undo(
        &self,
        key: &str,
        owner: &str,
        nonce: &str,
        outcomes: &[Result<Acquire, StoreError>],
    ) {
        let undo = self
            .nodes
            .iter()
            .zip(outcomes)
            .filter(|(_, outcome)| !matches!(outcome, Ok(Acquire::HeldByOther)))
            .map(|(node, _)| bounded(self.node_timeout, node.take_back(key, owner, nonce)));
        let _ = join_all(undo).await;
    }

    pub(crate) async fn release(
        &self,
        key: &str,
        owner: &str,
        nonce: &str,
        grant: Option<Fence>,
    ) -> Result<Release, StoreError> {
        let outcomes = join_all(
            self.nodes
                .iter()
                .map(|node| bounded(self.node_timeout, node.release(key, owner, nonce, grant))),
        )
        .await;
        let (mut released, mut missing, mut other) = (0, 0, 0);
        let mut errors = Vec::new();
        for outcome in outcomes {
            match outcome {
                Ok(Release::Released) => released += 1,
                Ok(Release::NotFound) => missing += 1,
                Ok(Release::HeldByOther) => other += 1,
                Err(err) => errors.push(err),
            }
        }
        if released > 0 {
            return Ok(Release::Released);
        }
        let answered = missing + other;
        if answered < self.majority {
            return Err(self.too_few("unlock", answered, &errors));
        }
        Ok(if other >= self.majority {
            Release::HeldByOther
        } else {
            Release::NotFound
        })
    }

    pub(crate) async fn renew(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Renewal, StoreError> {
        let started = Instant::now();
        let outcomes = join_all(
            self.nodes
                .iter()
                .map(|node| bounded(self.node_timeout, node.renew(key, owner, ttl))),
        )
        .await;
        let mut fences = Vec::new();
        let (mut missing, mut other) = (0, 0);
        let mut errors = Vec::new();
        for outcome in outcomes {
            match outcome {
                Ok(Renewal::Renewed { fence }) => fences.push(fence),
                Ok(Renewal::NotFound) => missing += 1,
                Ok(Renewal::HeldByOther) => other += 1,
                Err(err) => errors.push(err),
            }
        }
        if fences.len() >= self.majority && started.elapsed() + self.drift(ttl) < ttl {
            return Ok(Renewal::Renewed {
                fence: fences.into_iter().max().unwrap_or(0),
            });
        }
        if fences.len() + missing + other < self.majority {
            return Err(self.too_few("renew", fences.len() + missing + other, &errors));
        }
        Ok(if other >= self.majority {
            Renewal::HeldByOther
        } else {
            // Fewer than a majority still hold the lease: it is lost.
            Renewal::NotFound
        })
    }

    /// The lease a majority agrees on (same owner, same grant).
    pub(crate) async fn status(&self, key: &str) -> Result<Option<LockInfo>, StoreError> {
        let outcomes = join_all(
            self.nodes
                .iter()
                .map(|node| bounded(self.node_timeout, node.status(key))),
        )
        .await;
        let mut answered = 0;
        let mut errors = Vec::new();
        let mut groups: HashMap<(String, String), Vec<Seen>> = HashMap::new();
        for outcome in outcomes {
            match outcome {
                Ok(Some(seen)) => {
                    answered += 1;
                    groups
                        .entry((seen.owner.clone(), seen.nonce.clone()))
                        .or_default()
                        .push(seen);
                }
                Ok(None) => answered += 1,
                Err(err) => errors.push(err),
            }
        }
        if answered < self.majority {
            return Err(self.too_few("status", answered, &errors));
        }
        let agreed = groups
            .into_values()
            .find(|seen| seen.len() >= self.majority);
        Ok(agreed.map(|seen| {
            // The lease ends when the majority no longer holds it: at the
            // majority-th longest remaining time.
            let mut remaining: Vec<Duration> = seen.iter().map(|s| s.remaining).collect();
            remaining.sort_unstable_by(|a, b| b.cmp(a));
            let left = remaining[self.majority - 1];
            LockInfo {
                key: key.to_owned(),
                owner: seen[0].owner.clone(),
                fence: seen.iter().map(|s| s.fence).max().unwrap_or(0),
                remaining: left.saturating_sub(self.drift(left)),
            }
        }))
    }

    pub(crate) async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LockInfo>, StoreError> {
        let scans = join_all(
            self.nodes
                .iter()
                .map(|node| bounded(self.node_timeout * 10, node.scan(prefix))),
        )
        .await;
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut answered = 0;
        let mut errors = Vec::new();
        for scan in scans {
            match scan {
                Ok(keys) => {
                    answered += 1;
                    for key in keys {
                        *counts.entry(key).or_default() += 1;
                    }
                }
                Err(err) => errors.push(err),
            }
        }
        if answered < self.majority {
            return Err(self.too_few("list", answered, &errors));
        }
        let mut keys: Vec<String> = counts
            .into_iter()
            .filter(|(key, count)| {
                *count >= self.majority && after.is_none_or(|after| key.as_str() > after)
            })
            .map(|(key, _)| key)
            .collect();
        keys.sort_unstable();
        keys.truncate(LIST_SCAN_LIMIT);
        let mut infos = Vec::new();
        for key in keys {
            if infos.len() >= limit {
                break;
            }
            if let Some(info) = self.status(&key).await? {
                infos.push(info);
            }
        }
        Ok(infos)
    }

    pub(crate) async fn force(&self, key: &str) -> Result<ForceRelease, StoreError> {
        let outcomes = join_all(
            self.nodes
                .iter()
                .map(|node| bounded(self.node_timeout, node.force(key))),
        )
        .await;
        let mut evicted: Option<(String, Fence)> = None;
        let mut answered = 0;
        let mut errors = Vec::new();
        for outcome in outcomes {
            match outcome {
                Ok(ForceRelease::Released { owner, fence }) => {
                    answered += 1;
                    if evicted.as_ref().is_none_or(|(_, best)| fence > *best) {
                        evicted = Some((owner, fence));
                    }
                }
                Ok(ForceRelease::NotFound) => answered += 1,
                Err(err) => errors.push(err),
            }
        }
        if answered < self.majority {
            return Err(self.too_few("force-unlock", answered, &errors));
        }
        Ok(match evicted {
            Some((owner, fence)) => ForceRelease::Released { owner, fence },
            None => ForceRelease::NotFound,
        })
    }

    /// Watch on every master that answers (a majority at least); wake on the
    /// first event from any of them.
    pub(crate) async fn watch(&self, key: &str) -> Result<ReleaseWait, StoreError> {
        let watches = join_all(
            self.nodes
                .iter()
                .map(|node| bounded(self.node_timeout, node.watch(key))),
        )
        .await;
        let mut waits = Vec::new();
        let mut errors = Vec::new();
        for watch in watches {
            match watch {
                Ok(wait) => waits.push(wait),
                Err(err) => errors.push(err),
            }
        }
        if waits.len() < self.majority {
            return Err(self.too_few("watch", waits.len(), &errors));
        }
        Ok(Box::pin(async move {
            let _ = select_all(waits).await;
        }))
    }

    pub(crate) async fn health(&self) -> Result<(), StoreError> {
        let pings = join_all(
            self.nodes
                .iter()
                .map(|node| bounded(self.node_timeout, node.ping())),
        )
        .await;
        let mut errors = Vec::new();
        let mut answered = 0;
        for ping in pings {
            match ping {
                Ok(()) => answered += 1,
                Err(err) => errors.push(err),
            }
        }
        if answered < self.majority {
            return Err(self.too_few("health check", answered, &errors));
        }
        Ok(())
    }

    pub(crate) fn close(&self) {
        for node in &self.nodes {
            node.close();
        }
    }
}
