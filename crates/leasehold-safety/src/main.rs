//! `leasehold-safety`: the long run by hand.
//!
//! ```sh
//! cargo build --release -p leasehold-cli -p leasehold-safety
//! target/release/leasehold-safety --store all --duration 120s
//! target/release/leasehold-safety --store memory --duration 600s --no-faults --clients 32   # soak
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;
use leasehold_safety::check::check;
use leasehold_safety::cluster::{Cluster, StoreKind, rss_kib};
use leasehold_safety::workload::{Plan, run};

/// Run clients against real sidecars under faults and check the history.
#[derive(Debug, Parser)]
#[command(name = "leasehold-safety")]
struct Args {
    /// memory, redis, etcd, postgres or all.
    #[arg(long, default_value = "memory")]
    store: String,
    /// How long the clients run per store (a Go duration: 90s, 10m).
    #[arg(long, default_value = "60s", value_parser = duration)]
    duration: Duration,
    /// Clients of each kind (Hold and Dapr); paused clients are a quarter.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Keys contended for.
    #[arg(long, default_value_t = 3)]
    keys: usize,
    /// Seconds between faults.
    #[arg(long, default_value = "8s", value_parser = duration)]
    fault_every: Duration,
    /// Inject no faults (a soak: steady load, memory sampled).
    #[arg(long)]
    no_faults: bool,
    /// Seed of the clients' choices.
    #[arg(long, default_value_t = 0x5afe)]
    seed: u64,
    /// How long the in-memory store's sidecar is stopped (twice that in
    /// front of a shared backend).
    #[arg(long, default_value = "1500ms", value_parser = duration)]
    sidecar_pause: Duration,
    /// Leave out sidecar pauses (a `Hold` guard whose sidecar stalls keeps
    /// believing it holds the lock: docs/safety.md, known issue 1).
    #[arg(long)]
    skip_sidecar_pauses: bool,
    /// The leasehold binary (default: LEASEHOLD_BIN, or beside this one).
    #[arg(long)]
    leasehold: Option<PathBuf>,
}

fn duration(text: &str) -> Result<Duration, String> {
    leasehold_core::duration::parse_go_duration(text)
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("leasehold-safety: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<bool> {
    let args = Args::parse();
    let binary = match &args.leasehold {
        Some(path) => path.clone(),
        None => leasehold_safety::leasehold_binary(),
    };
    let stores: Vec<StoreKind> = if args.store == "all" {
        StoreKind::ALL.to_vec()
    } else {
        match StoreKind::parse(&args.store) {
            Some(kind) => vec![kind],
            None => bail!("unknown store {:?}", args.store),
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut clean = true;
    for kind in stores {
        println!("== {} for {:?}", kind.name(), args.duration);
        let cluster = Cluster::start(kind, &binary, &[]);
        let mut plan = Plan::short(args.duration);
        plan.keys = args.keys;
        plan.hold_clients = args.clients;
        plan.dapr_clients = args.clients;
        plan.paused_clients = (args.clients / 4).max(1);
        plan.fault_every = args.fault_every;
        plan.seed = args.seed;
        plan.skip_sidecar_pauses = args.skip_sidecar_pauses;
        plan.sidecar_pause = args.sidecar_pause;
        if args.no_faults {
            plan.first_fault = args.duration * 2;
        }
        let pid = cluster.sidecars[0].pid();
        let cluster = Arc::new(Mutex::new(cluster));
        let sampler = pid.map(|pid| std::thread::spawn(move || sample_rss(pid, args.duration)));
        let recorder = runtime.block_on(run(cluster.clone(), plan));
        for (i, slot) in cluster
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .sidecars
            .iter_mut()
            .enumerate()
        {
            if let Some(log) = slot.log_if_exited() {
                println!("sidecar {i} is not running at the end; its log:\n{log}");
                clean = false;
            }
        }
        let report = check(&recorder.snapshot());
        print!("{}", report.summary());
        if let Some(sampler) = sampler {
            let samples = sampler.join().unwrap_or_default();
            print_rss(&samples);
        }
        clean &= report.violations.is_empty();
    }
    Ok(clean)
}

/// RSS of `pid` every 5 s for `duration` (KiB; stops early if it exits).
fn sample_rss(pid: u32, duration: Duration) -> Vec<(Duration, u64)> {
    let start = std::time::Instant::now();
    let mut samples = Vec::new();
    for _ in 0..100_000 {
        let elapsed = start.elapsed();
        if elapsed > duration {
            break;
        }
        match rss_kib(pid) {
            Some(rss) => samples.push((elapsed, rss)),
            None => break,
        }
        std::thread::sleep(Duration::from_secs(5).min(duration / 4));
    }
    samples
}

fn print_rss(samples: &[(Duration, u64)]) {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return;
    };
    let max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    // Growth after warm-up: from the sample at a tenth of the run.
    let warm = samples[samples.len() / 10];
    println!(
        "sidecar 0 RSS: first {} KiB, after warm-up ({:?}) {} KiB, last ({:?}) {} KiB, max {} KiB, growth after warm-up {} KiB ({} samples; this pid only, until its first restart)",
        first.1,
        warm.0,
        warm.1,
        last.0,
        last.1,
        max,
        last.1 as i64 - warm.1 as i64,
        samples.len()
    );
}
