//! `leasehold-bench`: drives a leasehold sidecar over HTTP/1.1 and gRPC
//! with N concurrent clients, drives the raw backends with the same lock
//! operations in the same run, and reports latency percentiles, throughput
//! and the sidecar's own CPU and memory.
//!
//! * `leasehold-bench suite` starts the sidecar and the backends itself,
//!   runs every comparison, prints a table and writes JSON and SVG charts.
//!   `--smoke` makes it a run of a few seconds that only shows it works.
//! * `leasehold-bench run` drives one already-running target.

mod load;
mod procs;
mod report;
mod suite;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::load::{RunSpec, Target, Workload};

#[derive(Debug, Parser)]
#[command(
    name = "leasehold-bench",
    about = "Benchmarks for the leasehold sidecar"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Start the sidecar and the backends, run every comparison, write the
    /// results.
    Suite(suite::SuiteArgs),
    /// Drive one running target.
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// http, grpc, grpc-v1, redis, etcd or postgres.
    #[arg(long, default_value = "http")]
    target: String,
    /// host:port of the sidecar or the backend (etcd: its URL; postgres: a
    /// connection string).
    #[arg(long)]
    addr: String,
    /// The sidecar's lock store.
    #[arg(long, default_value = "lockstore")]
    store: String,
    /// uncontended, contended, renew or handoff.
    #[arg(long, default_value = "uncontended")]
    workload: String,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Measured seconds (at most 600).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Stop after this many measured requests.
    #[arg(long)]
    ops: Option<u64>,
    /// Hot keys of the contended workload.
    #[arg(long, default_value_t = 4)]
    hot_keys: usize,
    /// A process whose CPU time per request to report (the server).
    #[arg(long)]
    pid: Option<u32>,
    /// Write the result here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_workload(name: &str) -> Result<Workload> {
    Ok(match name {
        "uncontended" => Workload::Uncontended,
        "contended" => Workload::Contended,
        "renew" => Workload::Renew,
        "handoff" => Workload::Handoff,
        other => bail!("unknown workload {other:?}"),
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("leasehold-bench: cannot start the runtime: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Suite(args) => suite::run_suite(args).await,
            Command::Run(args) => run_one(args).await,
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("leasehold-bench: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run_one(args: RunArgs) -> Result<()> {
    let target = match args.target.as_str() {
        "http" => Target::Http {
            addr: args.addr.clone(),
            store: args.store.clone(),
        },
        "grpc" => Target::DaprGrpc {
            addr: args.addr.clone(),
            store: args.store.clone(),
        },
        "grpc-v1" => Target::V1Grpc {
            addr: args.addr.clone(),
            store: args.store.clone(),
        },
        "redis" => Target::Redis {
            addr: args.addr.clone(),
        },
        "etcd" => Target::Etcd {
            endpoint: args.addr.clone(),
        },
        "postgres" => Target::Postgres {
            conninfo: args.addr.clone(),
        },
        other => bail!("unknown target {other:?}"),
    };
    let spec = RunSpec {
        workload: parse_workload(&args.workload)?,
        clients: args.clients.clamp(1, 4096),
        duration: Duration::from_secs_f64(args.seconds.clamp(0.1, 600.0)),
        warmup: Duration::from_millis(500),
        max_ops: args.ops,
        hot_keys: args.hot_keys,
        lease: Duration::from_secs(30),
        run_id: suite::run_id(),
    };
    let row = suite::measure(
        "run",
        target.kind(),
        &target,
        &spec,
        suite::Pids {
            sidecar: args.pid,
            backend: None,
        },
    )
    .await?;
    println!("{}", report::table_header());
    println!("{}", report::table_line(&row));
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&row)?;
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
