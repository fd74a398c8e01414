//! The in-memory store against a model a few lines long.
//!
//! Random sequences of try_lock / unlock / renew / force_unlock / status
//! and advances of tokio's paused clock run on a few keys and owners; every
//! outcome must be the one the model predicts, and every grant's fence must
//! be greater than every fence issued before on its key.

use std::collections::HashMap;
use std::time::Duration;

use leasehold_core::{Acquire, ForceRelease, LockStore, Release, Renewal};
use leasehold_stores::memory::{Config, MemoryStore};
use proptest::prelude::*;

const KEYS: [&str; 3] = ["k0", "k1", "lock||app||k2"];
const OWNERS: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    TryLock { key: usize, owner: usize, ttl: u64 },
    Unlock { key: usize, owner: usize },
    Renew { key: usize, owner: usize, ttl: u64 },
    ForceUnlock { key: usize },
    Status { key: usize },
    Advance { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let owner = 0..OWNERS.len();
    // Leases and steps of the same order, so that expiry (including the
    // exact deadline) is hit often.
    let ttl = 1u64..40;
    prop_oneof![
        4 => (key.clone(), owner.clone(), ttl.clone())
            .prop_map(|(key, owner, ttl)| Op::TryLock { key, owner, ttl }),
        3 => (key.clone(), owner.clone()).prop_map(|(key, owner)| Op::Unlock { key, owner }),
        2 => (key.clone(), owner, ttl)
            .prop_map(|(key, owner, ttl)| Op::Renew { key, owner, ttl }),
        1 => key.clone().prop_map(|key| Op::ForceUnlock { key }),
        1 => key.prop_map(|key| Op::Status { key }),
        3 => (0u64..30).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// One lease in the model: owner, fence, deadline (ms on the paused clock).
#[derive(Debug, Clone, Copy)]
struct Lease {
    owner: usize,
    fence: u64,
    deadline: u64,
}

#[derive(Debug, Default)]
struct Model {
    now: u64,
    leases: HashMap<usize, Lease>,
    /// The highest fence issued per key.
    fences: HashMap<usize, u64>,
}

impl Model {
    fn live(&self, key: usize) -> Option<Lease> {
        self.leases
            .get(&key)
            .copied()
            .filter(|lease| lease.deadline > self.now)
    }
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let store = MemoryStore::open(Config::ephemeral()).expect("open");
    let mut model = Model::default();
    let start = tokio::time::Instant::now();
    for (step, op) in ops.into_iter().enumerate() {
        // The paused clock only moves when told to, so the model's `now`
        // is the store's.
        prop_assert_eq!(start.elapsed(), Duration::from_millis(model.now));
        match op {
            Op::TryLock { key, owner, ttl } => {
                let got = store
                    .try_lock(KEYS[key], OWNERS[owner], Duration::from_millis(ttl))
                    .await
                    .expect("the in-memory store does not fail");
                match (model.live(key), got) {
                    (Some(_), Acquire::HeldByOther) => {}
                    (None, Acquire::Acquired { fence }) => {
                        let before = model.fences.get(&key).copied().unwrap_or(0);
                        prop_assert!(
                            fence > before,
                            "step {step}: fence {fence} on {key} not above {before}"
                        );
                        model.fences.insert(key, fence);
                        model.leases.insert(
                            key,
                            Lease {
                                owner,
                                fence,
                                deadline: model.now + ttl,
                            },
                        );
                    }
                    (expected, got) => {
                        prop_assert!(
                            false,
                            "step {step}: try_lock: model {expected:?}, store {got:?}"
                        )
                    }
                }
            }
            Op::Unlock { key, owner } => {
                let got = store
                    .unlock(KEYS[key], OWNERS[owner])
                    .await
                    .expect("unlock");
                let expected = match model.live(key) {
                    None => Release::NotFound,
                    Some(lease) if lease.owner != owner => Release::HeldByOther,
                    Some(_) => {
                        model.leases.remove(&key);
                        Release::Released
                    }
                };
                prop_assert_eq!(got, expected, "step {}: unlock", step);
            }
            Op::Renew { key, owner, ttl } => {
                let got = store
                    .renew(KEYS[key], OWNERS[owner], Duration::from_millis(ttl))
                    .await
                    .expect("renew");
                let now = model.now;
                let expected = match model.live(key) {
                    None => Renewal::NotFound,
                    Some(lease) if lease.owner != owner => Renewal::HeldByOther,
                    Some(lease) => {
                        model.leases.insert(
                            key,
                            Lease {
                                deadline: now + ttl,
                                ..lease
                            },
                        );
                        Renewal::Renewed { fence: lease.fence }
                    }
                };
                prop_assert_eq!(got, expected, "step {}: renew", step);
            }
            Op::ForceUnlock { key } => {
                let got = store.force_unlock(KEYS[key]).await.expect("force unlock");
                let expected = match model.live(key) {
                    None => ForceRelease::NotFound,
                    Some(lease) => {
                        model.leases.remove(&key);
                        ForceRelease::Released {
                            owner: OWNERS[lease.owner].to_owned(),
                            fence: lease.fence,
                        }
                    }
                };
                prop_assert_eq!(got, expected, "step {}: force unlock", step);
            }
            Op::Status { key } => {
                let got = store.status(KEYS[key]).await.expect("status");
                match (model.live(key), got) {
                    (None, None) => {}
                    (Some(lease), Some(info)) => {
                        prop_assert_eq!(info.owner, OWNERS[lease.owner]);
                        prop_assert_eq!(info.fence, lease.fence);
                        prop_assert_eq!(
                            info.remaining,
                            Duration::from_millis(lease.deadline - model.now)
                        );
                    }
                    (expected, got) => {
                        prop_assert!(
                            false,
                            "step {step}: status: model {expected:?}, store {got:?}"
                        )
                    }
                }
            }
            Op::Advance { ms } => {
                tokio::time::advance(Duration::from_millis(ms)).await;
                model.now += ms;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn memory_store_matches_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(run(ops))?;
    }
}
