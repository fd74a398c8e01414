//! The clients of a run and the fault injector, driving a [`Cluster`] for a
//! bounded time and recording a [`History`](crate::history::History).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use leasehold_client::{Client, Config};
use leasehold_proto::dapr::dapr_client::DaprClient;
use leasehold_proto::dapr::{TryLockRequest, UnlockRequest};
use tokio::time::{Instant, sleep, timeout};
use tonic::transport::Channel;

use crate::cluster::{Cluster, FaultKind};
use crate::history::{Fault, Grant, Recorder, Via};
use crate::resource::FencedResource;

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How long clients run.
    pub duration: Duration,
    /// Keys the clients contend for.
    pub keys: usize,
    /// Clients holding through leasehold.v1 `Hold` (the sidecar renews).
    pub hold_clients: usize,
    /// Clients using Dapr TryLock / Unlock.
    pub dapr_clients: usize,
    /// Clients that pause past their lease and write late.
    pub paused_clients: usize,
    /// The lease of `Hold` clients.
    pub hold_lease: Duration,
    /// The Dapr `expiryInSeconds`.
    pub dapr_expiry_secs: i32,
    /// How long a paused client stops (longer than the Dapr expiry).
    pub pause: Duration,
    /// When each fault starts, from the start of the run; the kinds cycle
    /// through [`Cluster::faults`].
    pub fault_every: Duration,
    /// The first fault starts after this.
    pub first_fault: Duration,
    /// Seed of the clients' choices.
    pub seed: u64,
    /// How long the in-memory store's sidecar is stopped by SIGSTOP (twice
    /// that for a sidecar in front of a shared backend).
    pub sidecar_pause: Duration,
    /// Leave out sidecar pauses (see docs/safety.md: a `Hold` guard whose
    /// sidecar stalls keeps believing it holds the lock).
    pub skip_sidecar_pauses: bool,
}

impl Plan {
    /// The short run CI does.
    pub fn short(duration: Duration) -> Self {
        Plan {
            duration,
            keys: 3,
            hold_clients: 4,
            dapr_clients: 4,
            paused_clients: 2,
            hold_lease: Duration::from_millis(1500),
            dapr_expiry_secs: 1,
            pause: Duration::from_millis(2500),
            fault_every: Duration::from_secs(3),
            first_fault: Duration::from_secs(2),
            seed: 0x5afe,
            sidecar_pause: Duration::from_millis(1500),
            skip_sidecar_pauses: false,
        }
    }
}

/// The clients' choices come from the testkit's seeded generator.
pub use leasehold_testkit::Rng;

#[derive(Debug, Clone)]
struct Ctx {
    recorder: Recorder,
    resource: Arc<FencedResource>,
    store: String,
    plan: Plan,
    until: Instant,
}

impl Ctx {
    fn key(&self, rng: &mut Rng) -> String {
        format!("k{}", rng.below(self.plan.keys as u64))
    }
}

/// How long one RPC may take before the client gives up on it.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Grants a client may take in one run: a bound on every loop.
const MAX_ROUNDS: usize = 100_000;

/// Run `plan` against `cluster`: clients until the plan's duration is over,
/// faults meanwhile. Returns the recorder holding the history.
pub async fn run(cluster: Arc<Mutex<Cluster>>, plan: Plan) -> Recorder {
    let recorder = Recorder::new();
    let resource = Arc::new(FencedResource::new(recorder.clone()));
    let (store, endpoints, faults) = {
        let cluster = cluster.lock().expect("cluster");
        let endpoints: Vec<String> = cluster
            .sidecars
            .iter()
            .map(|s| s.grpc_url().to_owned())
            .collect();
        let mut faults = cluster.faults(plan.sidecar_pause);
        if plan.skip_sidecar_pauses {
            faults.retain(|fault| !matches!(fault, FaultKind::SidecarPause(..)));
        }
        (cluster.store.clone(), endpoints, faults)
    };
    let ctx = Ctx {
        recorder: recorder.clone(),
        resource,
        store,
        until: Instant::now() + plan.duration,
        plan: plan.clone(),
    };
    let mut tasks = Vec::new();
    let mut index = 0;
    let mut next_endpoint = || {
        index += 1;
        endpoints[index % endpoints.len()].clone()
    };
    for i in 0..plan.hold_clients {
        tasks.push(tokio::spawn(hold_client(ctx.clone(), next_endpoint(), i)));
    }
    for i in 0..plan.dapr_clients {
        tasks.push(tokio::spawn(dapr_client(
            ctx.clone(),
            next_endpoint(),
            i,
            false,
        )));
    }
    for i in 0..plan.paused_clients {
        tasks.push(tokio::spawn(dapr_client(
            ctx.clone(),
            next_endpoint(),
            i,
            true,
        )));
    }
    let injector = tokio::spawn(inject_faults(cluster, faults, ctx.clone()));
    for task in tasks {
        let _ = task.await;
    }
    let _ = injector.await;
    recorder
}

async fn inject_faults(cluster: Arc<Mutex<Cluster>>, faults: Vec<FaultKind>, ctx: Ctx) {
    if faults.is_empty() {
        return;
    }
    let start = Instant::now();
    let mut next = start + ctx.plan.first_fault;
    for round in 0..10_000 {
        // A fault that could not end before the clients stop is left out.
        if next + Duration::from_secs(1) >= ctx.until {
            return;
        }
        tokio::time::sleep_until(next).await;
        let fault = faults[round % faults.len()];
        let began = ctx.recorder.now();
        let cluster = cluster.clone();
        let done = tokio::task::spawn_blocking(move || {
            cluster
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .inject(fault);
        })
        .await;
        if let Err(err) = done {
            ctx.recorder.error(format!("fault injector failed: {err}"));
        }
        ctx.recorder.fault(Fault {
            name: fault.describe(),
            start: began,
            end: ctx.recorder.now(),
        });
        next = (next + ctx.plan.fault_every).max(Instant::now() + Duration::from_millis(500));
    }
}

async fn connect_hold(ctx: &Ctx, endpoint: &str, owner: &str) -> Option<Client> {
    for _ in 0..1000 {
        if Instant::now() >= ctx.until {
            return None;
        }
        let config = Config::new(endpoint)
            .with_owner(owner)
            .with_connect_timeout(Duration::from_secs(2));
        match Client::connect(config).await {
            Ok(client) => return Some(client),
            Err(err) => {
                ctx.recorder.error(format!("connect: {err}"));
                sleep(Duration::from_millis(100)).await;
            }
        }
    }
    None
}

async fn hold_client(ctx: Ctx, endpoint: String, index: usize) {
    let mut rng = Rng::new(ctx.plan.seed ^ ((index as u64 + 1) * 7919));
    let owner = format!("hold-{index}");
    let Some(client) = connect_hold(&ctx, &endpoint, &owner).await else {
        return;
    };
    let lease = ctx.plan.hold_lease;
    for _ in 0..MAX_ROUNDS {
        if Instant::now() >= ctx.until {
            return;
        }
        let key = ctx.key(&mut rng);
        let wait = rng.millis(0, 500);
        let requested = ctx.recorder.now();
        ctx.recorder.operation();
        let guard = match timeout(RPC_TIMEOUT, client.lock(&ctx.store, &key, lease, wait)).await {
            Ok(Ok(guard)) => guard,
            Ok(Err(leasehold_client::Error::NotAcquired)) => continue,
            Ok(Err(err)) => {
                ctx.recorder.error(format!("hold: {err}"));
                sleep(rng.millis(20, 100)).await;
                continue;
            }
            Err(_) => {
                ctx.recorder.error("hold: timed out");
                continue;
            }
        };
        let granted = ctx.recorder.now();
        let token = guard.fencing_token();
        // Hold for up to a lease and a half, so that renewals happen.
        let work_until = Instant::now() + rng.millis(20, lease.as_millis() as u64 * 3 / 2);
        let mut lost_at = None;
        for _ in 0..10_000 {
            if Instant::now() >= work_until.min(ctx.until) {
                break;
            }
            tokio::select! {
                _ = guard.lost() => {
                    lost_at = Some(ctx.recorder.now());
                    break;
                }
                () = sleep(rng.millis(2, 30)) => {
                    if guard.is_lost() {
                        lost_at = Some(ctx.recorder.now());
                        break;
                    }
                    ctx.resource.write(&key, &owner, token, false);
                }
            }
        }
        let believed_until = match lost_at {
            Some(at) => at,
            None => {
                let releasing = ctx.recorder.now();
                ctx.recorder.operation();
                match timeout(RPC_TIMEOUT, guard.unlock()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => ctx.recorder.error(format!("hold release: {err}")),
                    Err(_) => ctx.recorder.error("hold release: timed out"),
                }
                releasing
            }
        };
        ctx.recorder.grant(Grant {
            key,
            owner: owner.clone(),
            via: Via::Hold,
            token,
            requested,
            granted,
            believed_until,
        });
        sleep(rng.millis(0, 30)).await;
    }
}

/// A lazy channel: it connects on first use and again after a restart.
fn connect_dapr(endpoint: &str) -> Option<DaprClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    Some(DaprClient::new(channel))
}

async fn dapr_client(ctx: Ctx, endpoint: String, index: usize, paused: bool) {
    let salt = if paused { 1_000_003 } else { 15_485_863 };
    let mut rng = Rng::new(ctx.plan.seed ^ ((index as u64 + 1) * salt));
    let Some(mut dapr) = connect_dapr(&endpoint) else {
        return;
    };
    let expiry = Duration::from_secs(ctx.plan.dapr_expiry_secs as u64);
    let via = if paused { Via::Paused } else { Via::Dapr };
    for round in 0..MAX_ROUNDS {
        if Instant::now() >= ctx.until {
            return;
        }
        // A fresh owner per attempt: an attempt whose reply was lost leaves
        // at most a lease that runs out, never a lock we think is ours.
        let owner = format!("{}-{index}-{round}", via.name());
        let key = ctx.key(&mut rng);
        let requested = ctx.recorder.now();
        ctx.recorder.operation();
        let reply = timeout(
            RPC_TIMEOUT,
            dapr.try_lock_alpha1(TryLockRequest {
                store_name: ctx.store.clone(),
                resource_id: key.clone(),
                lock_owner: owner.clone(),
                expiry_in_seconds: ctx.plan.dapr_expiry_secs,
            }),
        )
        .await;
        let token = match reply {
            Ok(Ok(reply)) if reply.get_ref().success => reply.get_ref().fencing_token,
            Ok(Ok(_)) => {
                sleep(rng.millis(5, 40)).await;
                continue;
            }
            Ok(Err(status)) => {
                ctx.recorder
                    .error(format!("try lock: {}: {}", status.code(), status.message()));
                sleep(rng.millis(20, 100)).await;
                continue;
            }
            Err(_) => {
                ctx.recorder.error("try lock: timed out");
                continue;
            }
        };
        let granted = ctx.recorder.now();
        // The lease is counted from the request's start: the client cannot
        // know when the store began it, only that it was not earlier.
        let deadline = requested + expiry;
        let mut believed_until = deadline;
        if paused {
            if ctx.recorder.now() < deadline {
                ctx.resource.write(&key, &owner, token, false);
            }
            // The pause: the client stops, its lease runs out meanwhile,
            // and it goes on as if nothing happened.
            sleep(ctx.plan.pause).await;
            ctx.resource.write(&key, &owner, token, true);
        } else {
            let work_until = Instant::now() + rng.millis(10, expiry.as_millis() as u64 / 2);
            for _ in 0..10_000 {
                // Stop a little before the conservative deadline.
                if Instant::now() >= work_until
                    || ctx.recorder.now() + Duration::from_millis(50) >= deadline
                {
                    break;
                }
                ctx.resource.write(&key, &owner, token, false);
                sleep(rng.millis(2, 30)).await;
            }
            believed_until = believed_until.min(ctx.recorder.now());
        }
        ctx.recorder.operation();
        let unlock = timeout(
            RPC_TIMEOUT,
            dapr.unlock_alpha1(UnlockRequest {
                store_name: ctx.store.clone(),
                resource_id: key.clone(),
                lock_owner: owner.clone(),
            }),
        )
        .await;
        match unlock {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => {
                ctx.recorder
                    .error(format!("unlock: {}: {}", status.code(), status.message()))
            }
            Err(_) => ctx.recorder.error("unlock: timed out"),
        }
        ctx.recorder.grant(Grant {
            key,
            owner,
            via,
            token,
            requested,
            granted,
            believed_until,
        });
        sleep(rng.millis(0, 30)).await;
    }
}
