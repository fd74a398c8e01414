//! The client commands: `lock`, `unlock`, `status`, `list`,
//! `force-unlock`, `run` (with a lock, a semaphore's permits or an
//! election's leadership), `leader` and `observe`, against a running
//! sidecar's leasehold.v1 gRPC API.
//!
//! Exit codes: 0 done; 1 held elsewhere (or, for `status`, not held);
//! 2 an error. `run` exits with the command's own code, or 75 when the lock
//! was not acquired within the wait and 69 when the sidecar failed.

use std::process::ExitCode;
use std::time::Duration;

use leasehold_client::{Client, Config, Released};
use serde_json::json;

use crate::serve::duration;

/// Exit codes of the client commands.
mod code {
    pub(super) const HELD_ELSEWHERE: u8 = 1;
    pub(super) const ERROR: u8 = 2;
    pub(super) const RUN_NOT_ACQUIRED: u8 = 75;
    pub(super) const RUN_ERROR: u8 = 69;
}

/// Where the sidecar is and how to talk to it.
#[derive(Debug, clap::Args)]
pub(crate) struct Connection {
    /// The sidecar's gRPC endpoint. Default: DAPR_GRPC_ENDPOINT, or
    /// http://127.0.0.1:$DAPR_GRPC_PORT (50001).
    #[arg(long, env = "LEASEHOLD_ENDPOINT", global = true)]
    endpoint: Option<String>,

    /// The lock store's component name.
    #[arg(long, default_value = "lockstore", global = true)]
    store: String,

    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// PEM CA bundle to verify an https:// endpoint.
    #[arg(long, env = "LEASEHOLD_TLS_CA", global = true, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,

    /// PEM client certificate, for a sidecar that requires one.
    #[arg(
        long,
        env = "LEASEHOLD_TLS_CLIENT_CERT",
        global = true,
        requires = "tls_client_key",
        value_name = "FILE"
    )]
    tls_client_cert: Option<std::path::PathBuf>,

    /// PEM key of --tls-client-cert.
    #[arg(
        long,
        env = "LEASEHOLD_TLS_CLIENT_KEY",
        global = true,
        requires = "tls_client_cert",
        value_name = "FILE"
    )]
    tls_client_key: Option<std::path::PathBuf>,
}

impl Connection {
    async fn client(&self, owner: Option<&str>) -> Result<Client, leasehold_client::Error> {
        let mut config = Config::from_env();
        if let Some(endpoint) = &self.endpoint {
            config.endpoint = endpoint.clone();
        }
        if let Some(owner) = owner {
            config = config.with_owner(owner);
        }
        let endpoint = config.endpoint.clone();
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|err| leasehold_client::Error::Connect {
                endpoint: endpoint.clone(),
                message: format!("cannot read {}: {err}", path.display()),
            })
        };
        if let Some(ca) = &self.tls_ca {
            let pem = read(ca)?;
            config = config.with_tls_ca(pem);
        }
        if let (Some(cert), Some(key)) = (&self.tls_client_cert, &self.tls_client_key) {
            let (cert, key) = (read(cert)?, read(key)?);
            config = config.with_tls_identity(cert, key);
        }
        Client::connect(config).await
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct LockArgs {
    /// The resource to lock.
    resource_id: String,
    /// The owner to hold it under (default: a new random name, printed).
    #[arg(long)]
    owner: Option<String>,
    /// Length of the lease.
    #[arg(long, default_value = "30s", value_parser = duration)]
    lease: Duration,
    /// How long to wait for the lock (0s: try once).
    #[arg(long, default_value = "0s", value_parser = zero_or_duration)]
    wait: Duration,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, clap::Args)]
pub(crate) struct UnlockArgs {
    /// The resource to unlock.
    resource_id: String,
    /// The owner that holds it (as printed by `leasehold lock`).
    #[arg(long)]
    owner: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// The resource to look at.
    resource_id: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ElectionArgs {
    /// The election.
    election: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Only resource ids starting with this.
    #[arg(long, default_value = "")]
    prefix: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ForceUnlockArgs {
    /// The resource to break.
    resource_id: String,
    /// Why; recorded in the sidecar's log and sent to the evicted holder.
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["resource_id", "elect", "semaphore"])))]
pub(crate) struct RunArgs {
    /// The resource to hold while the command runs.
    #[arg(long = "lock", value_name = "RESOURCE")]
    resource_id: Option<String>,
    /// Run the command only while leader of this election; the term is in
    /// LEASEHOLD_TERM (and LEASEHOLD_FENCING_TOKEN).
    #[arg(long, value_name = "ELECTION")]
    elect: Option<String>,
    /// What the leader publishes to `leasehold leader` and `observe`.
    #[arg(long, default_value = "", requires = "elect")]
    value: String,
    /// Run the command while holding permits of this semaphore.
    #[arg(long, value_name = "NAME", requires = "limit")]
    semaphore: Option<String>,
    /// The semaphore's limit (its first user declares it).
    #[arg(long, requires = "semaphore")]
    limit: Option<u32>,
    /// How many of its permits to take.
    #[arg(long, default_value_t = 1, requires = "semaphore")]
    permits: u32,
    /// How long to wait for the lock, the permits or the leadership (for
    /// --elect, 1h by default: a candidate waits its turn).
    #[arg(long, value_parser = zero_or_duration)]
    wait: Option<Duration>,
    /// Length of the lease; the sidecar renews it while the command runs.
    #[arg(long, default_value = "15s", value_parser = duration)]
    lease: Duration,
    /// After SIGTERM on lease loss, how long the command has before SIGKILL.
    #[arg(long, default_value = "5s", value_parser = duration)]
    kill_grace: Duration,
    #[command(flatten)]
    connection: Connection,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

fn zero_or_duration(value: &str) -> Result<Duration, String> {
    if value == "0" {
        return Ok(Duration::ZERO);
    }
    leasehold_core::duration::parse_go_duration(value)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts")
}

fn fail(json_out: bool, err: &dyn std::fmt::Display) -> ExitCode {
    if json_out {
        println!("{}", json!({ "error": err.to_string() }));
    } else {
        eprintln!("error: {err}");
    }
    ExitCode::from(code::ERROR)
}

pub(crate) fn lock(args: LockArgs) -> ExitCode {
    runtime().block_on(async {
        let c = &args.connection;
        let client = match c.client(args.owner.as_deref()).await {
            Ok(client) => client,
            Err(err) => return fail(c.json, &err),
        };
        let owner = client.owner().to_owned();
        match client
            .acquire(&c.store, &args.resource_id, &owner, args.lease, args.wait)
            .await
        {
            Ok(Some(token)) => {
                if c.json {
                    println!(
                        "{}",
                        json!({ "acquired": true, "resourceId": args.resource_id, "owner": owner,
                                "fencingToken": token, "leaseMs": args.lease.as_millis() as u64 })
                    );
                } else {
                    println!(
                        "acquired {} (owner {owner}, fencing token {token}, lease {:?})",
                        args.resource_id, args.lease
                    );
                }
                ExitCode::SUCCESS
            }
            Ok(None) => {
                if c.json {
                    println!(
                        "{}",
                        json!({ "acquired": false, "resourceId": args.resource_id })
                    );
                } else {
                    println!("{} is held elsewhere", args.resource_id);
                }
                ExitCode::from(code::HELD_ELSEWHERE)
            }
            Err(err) => fail(c.json, &err),
        }
    })
}

pub(crate) fn unlock(args: UnlockArgs) -> ExitCode {
    runtime().block_on(async {
        let c = &args.connection;
        let client = match c.client(None).await {
            Ok(client) => client,
            Err(err) => return fail(c.json, &err),
        };
        match client
            .release(&c.store, &args.resource_id, &args.owner)
            .await
        {
            Ok(outcome) => {
                let (name, text, exit) = match outcome {
                    Released::Released => ("RELEASED", "released", ExitCode::SUCCESS),
                    Released::NotFound => (
                        "NOT_FOUND",
                        "was not locked",
                        ExitCode::from(code::HELD_ELSEWHERE),
                    ),
                    Released::HeldByOther => (
                        "HELD_BY_OTHER",
                        "is held by another owner",
                        ExitCode::from(code::HELD_ELSEWHERE),
                    ),
                };
                if c.json {
                    println!(
                        "{}",
                        json!({ "status": name, "resourceId": args.resource_id })
                    );
                } else {
                    println!("{} {text}", args.resource_id);
                }
                exit
            }
            Err(err) => fail(c.json, &err),
        }
    })
}

pub(crate) fn status(args: StatusArgs) -> ExitCode {
    runtime().block_on(async {
        let c = &args.connection;
        let client = match c.client(None).await {
            Ok(client) => client,
            Err(err) => return fail(c.json, &err),
        };
        match client.status(&c.store, &args.resource_id).await {
            Ok(Some(state)) => {
                if c.json {
                    println!(
                        "{}",
                        json!({ "held": true, "resourceId": state.resource_id, "owner": state.owner,
                                "fencingToken": state.fencing_token, "remainingMs": state.remaining.as_millis() as u64 })
                    );
                } else {
                    println!(
                        "{} is held by {} (fencing token {}, {:.1}s left)",
                        state.resource_id,
                        state.owner,
                        state.fencing_token,
                        state.remaining.as_secs_f64()
                    );
                }
                ExitCode::SUCCESS
            }
            Ok(None) => {
                if c.json {
                    println!("{}", json!({ "held": false, "resourceId": args.resource_id }));
                } else {
                    println!("{} is not held", args.resource_id);
                }
                ExitCode::from(code::HELD_ELSEWHERE)
            }
            Err(err) => fail(c.json, &err),
        }
    })
}

/// One election's leadership, as text or JSON.
fn print_leader(json_out: bool, election: &str, leader: Option<&leasehold_client::Leadership>) {
    match (json_out, leader) {
        (true, Some(l)) => println!(
            "{}",
            json!({ "election": election, "hasLeader": true, "candidate": l.candidate,
                    "value": l.value, "term": l.term, "remainingMs": l.remaining.as_millis() as u64 })
        ),
        (true, None) => println!("{}", json!({ "election": election, "hasLeader": false })),
        (false, Some(l)) => println!(
            "{election} is led by {} (term {}, value {:?}, {:.1}s left)",
            l.candidate,
            l.term,
            l.value,
            l.remaining.as_secs_f64()
        ),
        (false, None) => println!("{election} has no leader"),
    }
}

/// `leasehold leader`: who leads; exit 1 when nobody does.
pub(crate) fn leader(args: ElectionArgs) -> ExitCode {
    runtime().block_on(async {
        let c = &args.connection;
        let client = match c.client(None).await {
            Ok(client) => client,
            Err(err) => return fail(c.json, &err),
        };
        match client.leader(&c.store, &args.election).await {
            Ok(leader) => {
                print_leader(c.json, &args.election, leader.as_ref());
                if leader.is_some() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(code::HELD_ELSEWHERE)
                }
            }
            Err(err) => fail(c.json, &err),
        }
    })
}

/// `leasehold observe`: one line per change of leader, value or term,
/// until interrupted.
pub(crate) fn observe(args: ElectionArgs) -> ExitCode {
    runtime().block_on(async {
        let c = &args.connection;
        let client = match c.client(None).await {
            Ok(client) => client,
            Err(err) => return fail(c.json, &err),
        };
        let mut changes = match client.observe(&c.store, &args.election).await {
            Ok(changes) => changes,
            Err(err) => return fail(c.json, &err),
        };
        loop {
            match changes.next().await {
                Ok(Some(leader)) => print_leader(c.json, &args.election, leader.as_ref()),
                Ok(None) => return ExitCode::SUCCESS,
                Err(err) => return fail(c.json, &err),
            }
        }
    })
}

pub(crate) fn list(args: ListArgs) -> ExitCode {
    runtime().block_on(async {
        let c = &args.connection;
        let client = match c.client(None).await {
            Ok(client) => client,
            Err(err) => return fail(c.json, &err),
        };
        match client.list(&c.store, &args.prefix).await {
            Ok(locks) => {
                if c.json {
                    let locks: Vec<_> = locks
                        .iter()
                        .map(|l| json!({ "resourceId": l.resource_id, "owner": l.owner,
                                         "fencingToken": l.fencing_token, "remainingMs": l.remaining.as_millis() as u64 }))
                        .collect();
                    println!("{}", json!({ "locks": locks }));
                } else if locks.is_empty() {
                    println!("no locks held");
                } else {
                    let width = locks.iter().map(|l| l.resource_id.len()).max().unwrap_or(0).max(8);
                    println!("{:<width$}  {:>14}  {:>9}  OWNER", "RESOURCE", "FENCING TOKEN", "LEFT");
                    for l in &locks {
                        println!(
                            "{:<width$}  {:>14}  {:>8.1}s  {}",
                            l.resource_id,
                            l.fencing_token,
                            l.remaining.as_secs_f64(),
                            l.owner
                        );
                    }
                }
                ExitCode::SUCCESS
            }
            Err(err) => fail(c.json, &err),
        }
    })
}

pub(crate) fn force_unlock(args: ForceUnlockArgs) -> ExitCode {
    runtime().block_on(async {
        let c = &args.connection;
        let client = match c.client(None).await {
            Ok(client) => client,
            Err(err) => return fail(c.json, &err),
        };
        match client.force_unlock(&c.store, &args.resource_id, &args.reason).await {
            Ok(Some((owner, token))) => {
                if c.json {
                    println!("{}", json!({ "released": true, "evictedOwner": owner, "evictedFencingToken": token }));
                } else {
                    println!("{} released; evicted {owner} (fencing token {token})", args.resource_id);
                }
                ExitCode::SUCCESS
            }
            Ok(None) => {
                if c.json {
                    println!("{}", json!({ "released": false }));
                } else {
                    println!("{} was not locked", args.resource_id);
                }
                ExitCode::from(code::HELD_ELSEWHERE)
            }
            Err(err) => fail(c.json, &err),
        }
    })
}

/// What `run` holds: the resource, election or semaphore named.
fn name_of(args: &RunArgs) -> &str {
    [&args.resource_id, &args.elect, &args.semaphore]
        .into_iter()
        .find_map(Option::as_deref)
        .unwrap_or_default()
}

/// Send `signal` to the process group `pgid` (the command and everything
/// it started) with kill(1); it may already be gone.
fn send_signal(pgid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .status();
}

fn exit_code_of(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(0, 255) as u8,
        // A shell reports death by signal N as 128 + N.
        (None, Some(signal)) => (128 + signal).clamp(0, 255) as u8,
        (None, None) => code::RUN_ERROR,
    }
}

pub(crate) fn run(args: RunArgs) -> ExitCode {
    runtime().block_on(async {
        let c = &args.connection;
        let client = match c.client(None).await {
            Ok(client) => client,
            Err(err) => {
                eprintln!("leasehold run: {err}");
                return ExitCode::from(code::RUN_ERROR);
            }
        };
        let store = &c.store;
        let (lease, wait) = (args.lease, args.wait);
        let taken = match (&args.resource_id, &args.elect, &args.semaphore) {
            (Some(resource), _, _) => client.lock(store, resource, lease, wait.unwrap_or_default()).await,
            (_, Some(election), _) => {
                let wait = wait.unwrap_or(Duration::from_secs(3600));
                client.elect(store, election, &args.value, lease, wait).await
            }
            (_, _, Some(name)) => {
                let limit = args.limit.unwrap_or_default();
                let wait = wait.unwrap_or_default();
                client.semaphore(store, name, args.permits, limit, lease, wait).await
            }
            _ => unreachable!("clap requires one of --lock, --elect, --semaphore"),
        };
        let guard = match taken {
            Ok(guard) => guard,
            Err(leasehold_client::Error::NotAcquired) => {
                eprintln!("leasehold run: {} is held elsewhere", name_of(&args));
                return ExitCode::from(code::RUN_NOT_ACQUIRED);
            }
            Err(err) => {
                eprintln!("leasehold run: {err}");
                return ExitCode::from(code::RUN_ERROR);
            }
        };
        let mut command = tokio::process::Command::new(&args.command[0]);
        command
            .args(&args.command[1..])
            .env("LEASEHOLD_FENCING_TOKEN", guard.fencing_token().to_string())
            .env("LEASEHOLD_LOCK_OWNER", guard.owner())
            .env("LEASEHOLD_RESOURCE_ID", name_of(&args));
        if args.elect.is_some() {
            command.env("LEASEHOLD_TERM", guard.fencing_token().to_string());
        }
        let mut child = match command
            // Its own process group, so that stopping it stops what it
            // started too; signals to `leasehold run` are forwarded.
            .process_group(0)
            .spawn()
        {
            Ok(child) => child,
            Err(err) => {
                eprintln!("leasehold run: cannot start {:?}: {err}", args.command[0]);
                let _ = guard.unlock().await;
                return ExitCode::from(code::RUN_ERROR);
            }
        };
        let pid = child.id().unwrap_or(0);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        let forwarded = async {
            tokio::select! {
                Some(()) = async { term.as_mut()?.recv().await } => "TERM",
                Some(()) = async { int.as_mut()?.recv().await } => "INT",
            }
        };
        tokio::select! {
            status = child.wait() => {
                let code = status.map(exit_code_of).unwrap_or(code::RUN_ERROR);
                if let Err(err) = guard.unlock().await {
                    eprintln!("leasehold run: {err}");
                }
                ExitCode::from(code)
            }
            reason = guard.lost() => {
                eprintln!("leasehold run: lease on {} lost ({reason}); stopping the command", name_of(&args));
                send_signal(pid, "TERM");
                let status = match tokio::time::timeout(args.kill_grace, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        send_signal(pid, "KILL");
                        child.wait().await
                    }
                };
                ExitCode::from(status.map(exit_code_of).unwrap_or(code::RUN_ERROR))
            }
            signal = forwarded => {
                send_signal(pid, signal);
                let code = child.wait().await.map(exit_code_of).unwrap_or(code::RUN_ERROR);
                let _ = guard.unlock().await;
                ExitCode::from(code)
            }
        }
    })
}
