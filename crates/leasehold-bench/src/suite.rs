//! `leasehold-bench suite`: everything end to end. It starts the sidecar
//! and each backend on loopback, runs the sidecar and the raw backend side
//! by side with the same operations and client counts, measures the
//! sidecar's own CPU and memory, the in-memory store at scale, and writes
//! `results.json` and SVG charts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::load::{self, RunSpec, Target, Workload};
use leasehold_testkit::{component, procs};

use crate::procs::start_sidecar;
use crate::report::{self, BarGroup, Row, Series};

#[derive(Debug, clap::Args)]
pub(crate) struct SuiteArgs {
    /// A short run (a few seconds) that checks the tool works; its figures
    /// mean nothing.
    #[arg(long)]
    smoke: bool,
    /// Where results.json and the charts go.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,
    /// The `leasehold` binary (default: next to this one).
    #[arg(long, env = "LEASEHOLD_BIN")]
    leasehold: Option<PathBuf>,
    /// Measured seconds per run (at most 120).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Client counts to sweep, comma-separated.
    #[arg(long, default_value = "1,4,16,64")]
    clients: String,
    /// Which groups to run, comma-separated: memory, redis, etcd, postgres,
    /// scale.
    #[arg(long, default_value = "memory,redis,etcd,postgres,scale")]
    groups: String,
    /// Locks held in the large scale test and expired in the wave.
    #[arg(long, default_value_t = 1_000_000)]
    scale_locks: u64,
}

/// The sidecar and backend processes whose CPU time is read around a run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pids {
    pub(crate) sidecar: Option<u32>,
    /// The backend server, and whether its child processes count too.
    pub(crate) backend: Option<(u32, bool)>,
}

/// CPU readings at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSnapshot {
    sidecar: Option<f64>,
    backend: Option<f64>,
    bench: Option<f64>,
    machine: Option<f64>,
}

impl Pids {
    fn snapshot(self) -> CpuSnapshot {
        let (sidecar, backend) = self.cpu();
        CpuSnapshot {
            sidecar,
            backend,
            bench: procs::cpu_seconds(std::process::id()),
            machine: procs::machine_busy_seconds(),
        }
    }

    fn cpu(self) -> (Option<f64>, Option<f64>) {
        (
            self.sidecar.and_then(procs::cpu_seconds),
            self.backend.and_then(|(pid, tree)| {
                if tree {
                    procs::cpu_seconds_tree(pid)
                } else {
                    procs::cpu_seconds(pid)
                }
            }),
        )
    }
}

/// A tag that keeps each run's keys apart.
pub(crate) fn run_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// A run's result and the CPU each process spent in its measured window.
#[derive(Debug)]
struct Measured {
    result: load::RunResult,
    sidecar: Option<f64>,
    backend: Option<f64>,
    bench: Option<f64>,
    machine: Option<f64>,
}

fn delta(start: Option<f64>, end: Option<f64>) -> Option<f64> {
    Some(end? - start?)
}

fn add(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? + b?)
}

async fn measure_once(target: &Target, spec: &RunSpec, pids: Pids) -> Result<Measured> {
    let at_start = Arc::new(Mutex::new(CpuSnapshot::default()));
    let cell = at_start.clone();
    let result = load::run(target, spec, move || {
        *cell.lock().expect("not poisoned") = pids.snapshot();
    })
    .await?;
    let end = pids.snapshot();
    let start = *at_start.lock().expect("not poisoned");
    Ok(Measured {
        result,
        sidecar: delta(start.sidecar, end.sidecar),
        backend: delta(start.backend, end.backend),
        bench: delta(start.bench, end.bench),
        machine: delta(start.machine, end.machine),
    })
}

impl Measured {
    /// Add another slice of the same comparison.
    fn absorb(&mut self, other: Measured) {
        let r = &mut self.result;
        r.latency
            .add(&other.result.latency)
            .expect("same histogram bounds");
        r.requests += other.result.requests;
        r.acquired += other.result.acquired;
        r.errors += other.result.errors;
        r.elapsed += other.result.elapsed;
        if r.first_error.is_none() {
            r.first_error = other.result.first_error;
        }
        self.sidecar = add(self.sidecar, other.sidecar);
        self.backend = add(self.backend, other.backend);
        self.bench = add(self.bench, other.bench);
        self.machine = add(self.machine, other.machine);
    }

    fn row(&self, group: &str, label: &str, spec: &RunSpec, pids: Pids) -> Row {
        let result = &self.result;
        let mut row = Row::from_run(group, label, spec.workload.name(), spec.clients, result);
        let per_op = |cpu: Option<f64>| {
            cpu.filter(|_| result.requests > 0)
                .map(|cpu| cpu * 1e6 / result.requests as f64)
        };
        row.sidecar_cpu_us_per_op = per_op(self.sidecar);
        row.backend_cpu_us_per_op = per_op(self.backend);
        row.bench_cpu_us_per_op = per_op(self.bench);
        // What the rest of the machine used meanwhile, in % of one CPU:
        // other work on a shared machine shows up here and marks a noisy
        // row.
        if let Some(machine) = self.machine {
            let ours = self.sidecar.unwrap_or(0.0)
                + self.backend.unwrap_or(0.0)
                + self.bench.unwrap_or(0.0);
            let seconds = result.elapsed.as_secs_f64().max(1e-9);
            row.other_cpu_pct = Some(((machine - ours) / seconds * 100.0).max(0.0));
        }
        row.sidecar_rss_mb = pids.sidecar.and_then(procs::rss_bytes).map(mb);
        row
    }
}

/// Run `spec` against `target` and turn it into a row with the CPU each
/// process spent per request in the measured window.
pub(crate) async fn measure(
    group: &str,
    label: &str,
    target: &Target,
    spec: &RunSpec,
    pids: Pids,
) -> Result<Row> {
    Ok(measure_once(target, spec, pids)
        .await?
        .row(group, label, spec, pids))
}

/// One contestant of an interleaved comparison.
#[derive(Debug, Clone)]
struct Entry {
    group: &'static str,
    label: &'static str,
    target: Target,
    pids: Pids,
}

/// Run the same workload on every entry in turn, in `rounds` slices each
/// (A B C A B C ...), so that a slow drift in the machine's load (other
/// work on a shared machine) falls on all of them alike.
async fn interleaved(entries: &[Entry], spec: &RunSpec, rounds: u32) -> Result<Vec<Row>> {
    let rounds = rounds.max(1);
    let mut slice = spec.clone();
    slice.duration = spec.duration / rounds;
    slice.warmup = spec.warmup.min(Duration::from_millis(300));
    let mut totals: Vec<Option<Measured>> = entries.iter().map(|_| None).collect();
    for _ in 0..rounds {
        for (entry, total) in entries.iter().zip(totals.iter_mut()) {
            slice.run_id = run_id();
            let measured = measure_once(&entry.target, &slice, entry.pids).await?;
            match total {
                Some(total) => total.absorb(measured),
                None => *total = Some(measured),
            }
        }
    }
    Ok(entries
        .iter()
        .zip(totals)
        .filter_map(|(entry, total)| {
            total.map(|t| t.row(entry.group, entry.label, spec, entry.pids))
        })
        .collect())
}

/// Everything one suite run found.
#[derive(Debug, Default, Serialize)]
struct Results {
    machine: Machine,
    smoke: bool,
    seconds_per_run: f64,
    clients: Vec<usize>,
    startup: Option<Startup>,
    rows: Vec<Row>,
    scale: Option<Scale>,
    checks: Vec<Check>,
    skipped: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
struct Machine {
    nproc: usize,
    cpu: String,
    kernel: String,
    redis: String,
    leasehold_binary: String,
    /// `git describe` of the working tree the bench runs in, when it is a
    /// git checkout (the sidecar binary is assumed to be built from it).
    source: String,
}

impl Machine {
    fn probe(leasehold: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("")
            .trim()
            .to_owned();
        let redis = std::process::Command::new("redis-server")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            redis,
            leasehold_binary: leasehold.display().to_string(),
            source: std::process::Command::new("git")
                .args(["describe", "--always", "--dirty"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct Startup {
    /// Wall time from spawn to the ready line, each start.
    ready_ms: Vec<f64>,
    ready_ms_median: f64,
    /// What the server reported (`startup_ms=`), each start.
    startup_ms: Vec<f64>,
    /// Resident memory one second after ready, no request served.
    idle_rss_mb: f64,
    /// Peak resident memory of the in-memory sidecar over the memory group.
    #[serde(skip_serializing_if = "Option::is_none")]
    peak_rss_mb_after_load: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
struct Scale {
    small_held: u64,
    large_held: u64,
    rss_idle_mb: f64,
    rss_small_mb: f64,
    rss_large_mb: f64,
    /// (RSS with the large set − RSS with the small set) / difference in locks.
    bytes_per_lock: f64,
    fill_seconds: f64,
    fill_rate_per_sec: f64,
    wave: Option<Wave>,
}

#[derive(Debug, Default, Serialize)]
struct Wave {
    locks: u64,
    /// The leases end over this many seconds.
    spread_seconds: u64,
    /// Seconds between the end of the fill and the first expiry (negative:
    /// the fill was slower than planned and some expired during it).
    margin_seconds: f64,
    rss_before_mb: f64,
    rss_after_mb: f64,
    /// Of a sample of the expired keys, how many a new owner could take.
    sample_free: u64,
    sample_size: u64,
}

#[derive(Debug, Serialize)]
struct Check {
    what: String,
    target: String,
    measured: String,
    met: bool,
}

fn parse_clients(text: &str) -> Result<Vec<usize>> {
    let mut clients = Vec::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let n: usize = part
            .trim()
            .parse()
            .with_context(|| format!("client count {part:?}"))?;
        clients.push(n.clamp(1, 1024));
    }
    if clients.is_empty() {
        bail!("no client counts given");
    }
    Ok(clients)
}

fn find_leasehold(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = given {
        if path.is_file() {
            return Ok(path);
        }
        bail!("{} is not a file", path.display());
    }
    let me = std::env::current_exe()?;
    let dir = me.parent().context("the bench binary has no directory")?;
    for candidate in [dir.join("leasehold"), dir.join("../leasehold")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no `leasehold` binary next to {} (build it with `cargo build --release -p leasehold-cli`, or pass --leasehold)",
        me.display()
    )
}

/// Settings of one suite run.
#[derive(Debug)]
struct Plan {
    leasehold: PathBuf,
    duration: Duration,
    warmup: Duration,
    clients: Vec<usize>,
    /// The client count of the single-point comparisons (16 unless the
    /// sweep lacks it).
    focus: usize,
    groups: Vec<String>,
    scale_locks: u64,
    starts: usize,
    /// Slices per interleaved comparison.
    rounds: u32,
}

impl Plan {
    fn spec(&self, workload: Workload, clients: usize) -> RunSpec {
        RunSpec {
            workload,
            clients,
            duration: self.duration,
            warmup: self.warmup,
            max_ops: None,
            hot_keys: 4,
            lease: Duration::from_secs(30),
            run_id: run_id(),
        }
    }

    fn wants(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

fn print_row(row: &Row) {
    println!("{}", report::table_line(row));
    if let Some(err) = &row.first_error {
        println!("    first error: {err}");
    }
}

pub(crate) async fn run_suite(args: SuiteArgs) -> Result<()> {
    let leasehold = find_leasehold(args.leasehold)?;
    let mut plan = Plan {
        leasehold,
        duration: Duration::from_secs_f64(args.seconds.clamp(0.1, 120.0)),
        warmup: Duration::from_millis(500),
        clients: parse_clients(&args.clients)?,
        focus: 16,
        groups: args
            .groups
            .split(',')
            .map(|g| g.trim().to_owned())
            .collect(),
        scale_locks: args.scale_locks.clamp(2_000, 10_000_000),
        starts: 5,
        rounds: 3,
    };
    if args.smoke {
        plan.duration = Duration::from_millis(300);
        plan.warmup = Duration::from_millis(100);
        plan.clients = vec![1, 2];
        plan.groups
            .retain(|g| g == "memory" || g == "redis" || g == "scale");
        plan.scale_locks = 5_000;
        plan.starts = 2;
        plan.rounds = 1;
    }
    if !plan.clients.contains(&plan.focus) {
        plan.focus = *plan.clients.iter().max().expect("not empty");
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let mut results = Results {
        machine: Machine::probe(&plan.leasehold),
        smoke: args.smoke,
        seconds_per_run: plan.duration.as_secs_f64(),
        clients: plan.clients.clone(),
        ..Results::default()
    };
    println!(
        "leasehold-bench suite: {} s per run after {} ms warm-up, clients {:?}, sidecar {}",
        plan.duration.as_secs_f64(),
        plan.warmup.as_millis(),
        plan.clients,
        plan.leasehold.display()
    );
    println!("{}", report::table_header());

    let started = Instant::now();
    if plan.wants("memory") || plan.wants("redis") {
        memory_and_redis(&plan, &mut results).await?;
    }
    if plan.wants("etcd")
        && let Err(err) = etcd_group(&plan, &mut results).await
    {
        results.skipped.push(format!("etcd: {err:#}"));
    }
    if plan.wants("postgres")
        && let Err(err) = postgres_group(&plan, &mut results).await
    {
        results.skipped.push(format!("postgres: {err:#}"));
    }
    if plan.wants("scale") {
        scale_group(&plan, &mut results).await?;
    }
    results.checks = checks(&plan, &results);
    println!("\nchecks against the targets:");
    for check in &results.checks {
        println!(
            "  [{}] {}: {} (target {})",
            if check.met { "met" } else { "MISSED" },
            check.what,
            check.measured,
            check.target
        );
    }
    for skipped in &results.skipped {
        println!("  skipped: {skipped}");
    }
    write_outputs(&args.out, &plan, &results)?;
    println!(
        "suite done in {:.0} s; results in {}",
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// Whether the sidecar serves leasehold.v1 yet: Renew on a key nobody
/// holds answers NOT_FOUND, or UNIMPLEMENTED when the service is missing.
async fn v1_available(grpc: &str, store: &str) -> bool {
    let target = Target::V1Grpc {
        addr: grpc.to_owned(),
        store: store.to_owned(),
    };
    let Ok(mut client) = load::Client::connect(&target).await else {
        return false;
    };
    match client
        .renew("probe-v1", "probe", Duration::from_secs(5))
        .await
    {
        Ok(_) => true,
        Err(err) => {
            println!("    leasehold.v1 not measured: {err:#}");
            false
        }
    }
}

/// Start-up time and the idle footprint: several fresh starts of the
/// in-memory sidecar.
async fn startup(plan: &Plan) -> Result<Startup> {
    let mut startup = Startup::default();
    for index in 0..plan.starts {
        let sidecar = start_sidecar(&plan.leasehold, None);
        startup.ready_ms.push(sidecar.ready_ms);
        if let Some(ms) = sidecar.startup_ms {
            startup.startup_ms.push(ms);
        }
        if index == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            startup.idle_rss_mb = procs::rss_bytes(sidecar.pid()).map_or(0.0, mb);
        }
    }
    startup.ready_ms_median = median(&startup.ready_ms);
    println!(
        "startup: ready in {:?} ms (median {:.1}), server says {:?} ms; idle RSS {:.1} MB",
        startup
            .ready_ms
            .iter()
            .map(|v| (v * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        startup.ready_ms_median,
        startup.startup_ms,
        startup.idle_rss_mb
    );
    Ok(startup)
}

fn push(results: &mut Results, rows: Vec<Row>) {
    for row in rows {
        print_row(&row);
        results.rows.push(row);
    }
}

/// The in-memory sidecar and the Redis-backed sidecar against raw Redis,
/// interleaved at every client count; then contention, renewal and
/// hand-off.
async fn memory_and_redis(plan: &Plan, results: &mut Results) -> Result<()> {
    let with_memory = plan.wants("memory");
    // A missing server stops the suite with a message naming the install
    // script (leasehold_testkit::find_binary).
    let redis = plan
        .wants("redis")
        .then(leasehold_testkit::redis::RedisServer::start);
    if with_memory {
        results.startup = Some(startup(plan).await?);
    }
    let memory = if with_memory {
        Some(start_sidecar(&plan.leasehold, None))
    } else {
        None
    };
    let redis_pid: Option<u32> = redis.as_ref().and_then(|r| {
        leasehold_testkit::redis::info_field(r.port(), "server", "process_id")
            .and_then(|pid| pid.trim().parse().ok())
    });
    let redis_sidecar = match &redis {
        Some(redis) => {
            let yaml = component("redisstore", "lock.redis", &[("redisHost", &redis.addr())]);
            Some(start_sidecar(&plan.leasehold, Some(&yaml)))
        }
        None => None,
    };

    let mut entries = Vec::new();
    if let Some(redis) = &redis {
        entries.push(Entry {
            group: "redis",
            label: "raw-redis",
            target: Target::Redis { addr: redis.addr() },
            pids: Pids {
                sidecar: None,
                backend: redis_pid.map(|p| (p, false)),
            },
        });
    }
    let mut sidecars = Vec::new();
    if let Some(sidecar) = &memory {
        sidecars.push(("memory", "lockstore", sidecar, None));
    }
    if let Some(sidecar) = &redis_sidecar {
        sidecars.push((
            "redis",
            "redisstore",
            sidecar,
            redis_pid.map(|p| (p, false)),
        ));
    }
    for &(group, store, sidecar, backend) in &sidecars {
        let pids = Pids {
            sidecar: Some(sidecar.pid()),
            backend,
        };
        entries.push(Entry {
            group,
            label: "sidecar-http",
            target: Target::Http {
                addr: sidecar.http.to_string(),
                store: store.to_owned(),
            },
            pids,
        });
        entries.push(Entry {
            group,
            label: "sidecar-grpc",
            target: Target::DaprGrpc {
                addr: sidecar.grpc.to_string(),
                store: store.to_owned(),
            },
            pids,
        });
    }

    // Throughput and latency against clients, uncontended.
    for &clients in &plan.clients {
        let spec = plan.spec(Workload::Uncontended, clients);
        push(results, interleaved(&entries, &spec, plan.rounds).await?);
        if let Some(redis) = &redis {
            push(
                results,
                redis_benchmark(redis.port(), clients, plan.duration, redis_pid)?,
            );
        }
    }
    // Contention on a few hot keys.
    let spec = plan.spec(Workload::Contended, plan.focus);
    push(results, interleaved(&entries, &spec, plan.rounds).await?);
    // Renewal and hand-off (leasehold.v1), with raw Redis's
    // compare-and-expire as the renewal baseline.
    let spec = plan.spec(Workload::Renew, plan.focus);
    let mut renew_entries: Vec<Entry> = entries
        .iter()
        .filter(|e| e.label == "raw-redis")
        .cloned()
        .collect();
    for &(group, store, sidecar, backend) in &sidecars {
        if v1_available(&sidecar.grpc.to_string(), store).await {
            renew_entries.push(Entry {
                group,
                label: "sidecar-grpc-v1",
                target: Target::V1Grpc {
                    addr: sidecar.grpc.to_string(),
                    store: store.to_owned(),
                },
                pids: Pids {
                    sidecar: Some(sidecar.pid()),
                    backend,
                },
            });
        } else {
            results.skipped.push(format!(
                "{group}: leasehold.v1 (renew, hand-off) not served by this build"
            ));
        }
    }
    push(
        results,
        interleaved(&renew_entries, &spec, plan.rounds).await?,
    );
    for entry in renew_entries
        .iter()
        .filter(|e| e.label == "sidecar-grpc-v1")
    {
        v1_rows(entry.group, plan, &entry.target, entry.pids, results).await?;
    }
    if let (Some(startup), Some(sidecar)) = (results.startup.as_mut(), &memory) {
        startup.peak_rss_mb_after_load = procs::peak_rss_bytes(sidecar.pid()).map(mb);
    }
    Ok(())
}

/// leasehold.v1 rows: uncontended Acquire/Release and hand-off.
async fn v1_rows(
    group: &str,
    plan: &Plan,
    v1: &Target,
    pids: Pids,
    results: &mut Results,
) -> Result<()> {
    let mut runs = vec![
        plan.spec(Workload::Uncontended, plan.focus),
        plan.spec(Workload::Handoff, 2),
    ];
    if plan.focus > 2 {
        runs.push(plan.spec(Workload::Handoff, plan.focus));
    }
    for spec in runs {
        match measure(group, "sidecar-grpc-v1", v1, &spec, pids).await {
            Ok(row) => {
                print_row(&row);
                results.rows.push(row);
            }
            Err(err) => results.skipped.push(format!(
                "{group}: grpc-v1 {}: {err:#}",
                spec.workload.name()
            )),
        }
    }
    Ok(())
}

/// `redis-benchmark` with the same commands: `SET k owner PX ms NX` on
/// random keys, and the compare-and-delete script (on random keys, so
/// mostly the miss path: GET, compare, return).
fn redis_benchmark(
    port: u16,
    clients: usize,
    duration: Duration,
    redis_pid: Option<u32>,
) -> Result<Vec<Row>> {
    let Ok(path) = which("redis-benchmark") else {
        return Ok(Vec::new());
    };
    let requests = ((if clients == 1 { 15_000.0 } else { 60_000.0 }) * duration.as_secs_f64())
        .clamp(2_000.0, 5_000_000.0) as u64;
    let commands: [(&str, Vec<&str>); 2] = [
        (
            "set-nx-px",
            vec!["SET", "lock:__rand_int__", "owner", "PX", "30000", "NX"],
        ),
        (
            "lua-unlock",
            vec![
                "EVAL",
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
                "1",
                "lock:__rand_int__",
                "owner",
            ],
        ),
    ];
    let mut rows = Vec::new();
    for (name, command) in commands {
        let cpu_before = redis_pid.and_then(procs::cpu_seconds);
        let output = std::process::Command::new(&path)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-c", &clients.to_string(), "-n", &requests.to_string()])
            .args(["-r", "100000000", "--csv"])
            .args(&command)
            .output()
            .context("run redis-benchmark")?;
        let cpu_after = redis_pid.and_then(procs::cpu_seconds);
        let text = String::from_utf8_lossy(&output.stdout);
        let Some(line) = text
            .lines()
            .find(|l| !l.starts_with("\"test\"") && l.contains(','))
        else {
            bail!("redis-benchmark printed no result: {text}");
        };
        let fields: Vec<f64> = line
            .rsplitn(8, ',')
            .map(|f| f.trim_matches('"').parse().unwrap_or(0.0))
            .collect();
        // rsplitn yields from the end: max, p99, p95, p50, min, avg, rps.
        let (rps, avg, p50, p99, max) = (fields[6], fields[5], fields[3], fields[1], fields[0]);
        let seconds = requests as f64 / rps.max(1.0);
        rows.push(Row {
            group: "redis".into(),
            target: "redis-benchmark".into(),
            workload: name.into(),
            clients,
            requests,
            seconds,
            ops_per_sec: rps,
            p50_ms: p50,
            p90_ms: 0.0,
            p99_ms: p99,
            p999_ms: 0.0,
            max_ms: max,
            mean_ms: avg,
            succeeded: 0,
            errors: 0,
            first_error: None,
            sidecar_cpu_us_per_op: None,
            backend_cpu_us_per_op: match (cpu_before, cpu_after) {
                (Some(a), Some(b)) => Some((b - a) * 1e6 / requests as f64),
                _ => None,
            },
            bench_cpu_us_per_op: None,
            other_cpu_pct: None,
            sidecar_rss_mb: None,
            note: Some("redis-benchmark reports no p90/p99.9".into()),
        });
    }
    Ok(rows)
}

fn which(name: &str) -> Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} is not on PATH"))
}

/// A backend measured at two client counts only: its own CPU per write
/// makes long sweeps slow and tells nothing new.
async fn side_by_side(
    plan: &Plan,
    raw: Entry,
    component: &str,
    store: &str,
    results: &mut Results,
) -> Result<()> {
    let sidecar = start_sidecar(&plan.leasehold, Some(component));
    let group = raw.group;
    let pids = Pids {
        sidecar: Some(sidecar.pid()),
        backend: raw.pids.backend,
    };
    let entries = [
        raw,
        Entry {
            group,
            label: "sidecar-http",
            target: Target::Http {
                addr: sidecar.http.to_string(),
                store: store.to_owned(),
            },
            pids,
        },
        Entry {
            group,
            label: "sidecar-grpc",
            target: Target::DaprGrpc {
                addr: sidecar.grpc.to_string(),
                store: store.to_owned(),
            },
            pids,
        },
    ];
    let mut counts = vec![1, plan.focus];
    counts.dedup();
    for clients in counts {
        let spec = plan.spec(Workload::Uncontended, clients);
        push(results, interleaved(&entries, &spec, plan.rounds).await?);
    }
    Ok(())
}

async fn etcd_group(plan: &Plan, results: &mut Results) -> Result<()> {
    let cluster = leasehold_testkit::etcd::EtcdCluster::single();
    let endpoint = cluster.endpoints();
    let port = cluster.members()[0].client_port;
    let pid = procs::pid_with_cmdline(&format!("127.0.0.1:{port}"), None);
    let component = component("etcdstore", "lock.etcd", &[("endpoints", &endpoint)]);
    let raw = Target::Etcd {
        endpoint: endpoint.clone(),
    };
    let raw = Entry {
        group: "etcd",
        label: "raw-etcd",
        target: raw,
        pids: Pids {
            sidecar: None,
            backend: pid.map(|p| (p, false)),
        },
    };
    side_by_side(plan, raw, &component, "etcdstore", results).await
}

async fn postgres_group(plan: &Plan, results: &mut Results) -> Result<()> {
    let postgres = leasehold_testkit::postgres::Postgres::start();
    let conninfo = postgres.connection_string();
    let postmaster = std::fs::read_to_string(postgres.data_dir().join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next().and_then(|l| l.trim().parse().ok()));
    let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(connection);
    client.batch_execute(load::PG_SETUP).await?;
    drop(client);
    let _ = driver.await;
    let component = component(
        "pgstore",
        "lock.postgresql",
        &[("connectionString", &conninfo)],
    );
    let raw = Target::Postgres { conninfo };
    let raw = Entry {
        group: "postgres",
        label: "raw-postgres",
        target: raw,
        pids: Pids {
            sidecar: None,
            backend: postmaster.map(|p| (p, true)),
        },
    };
    side_by_side(plan, raw, &component, "pgstore", results).await
}

async fn scale_group(plan: &Plan, results: &mut Results) -> Result<()> {
    let store = "lockstore";
    let small: u64 = 1_000;
    let large = plan.scale_locks;
    let parallel = 32;
    let long_lease: Arc<dyn Fn(u64) -> i32 + Send + Sync> = Arc::new(|_| 3_600);
    let mut scale = Scale {
        small_held: small,
        large_held: large,
        ..Scale::default()
    };
    {
        let sidecar = start_sidecar(&plan.leasehold, None);
        let pids = Pids {
            sidecar: Some(sidecar.pid()),
            backend: None,
        };
        let grpc = Target::DaprGrpc {
            addr: sidecar.grpc.to_string(),
            store: store.to_owned(),
        };
        scale.rss_idle_mb = procs::rss_bytes(sidecar.pid()).map_or(0.0, mb);
        load::fill(
            &sidecar.grpc.to_string(),
            store,
            "held-",
            0..small,
            parallel,
            long_lease.clone(),
        )
        .await?;
        let spec = plan.spec(Workload::Uncontended, plan.focus);
        let mut row = measure("scale", "sidecar-grpc", &grpc, &spec, pids).await?;
        row.note = Some(format!("{small} locks held"));
        row.workload = format!("held-{}", human_count(small));
        print_row(&row);
        results.rows.push(row);
        let rss_small = procs::rss_bytes(sidecar.pid()).unwrap_or(0);
        let (taken, took) = load::fill(
            &sidecar.grpc.to_string(),
            store,
            "held-",
            small..large,
            parallel,
            long_lease.clone(),
        )
        .await?;
        let rss_large = procs::rss_bytes(sidecar.pid()).unwrap_or(0);
        scale.rss_small_mb = mb(rss_small);
        scale.rss_large_mb = mb(rss_large);
        scale.bytes_per_lock =
            rss_large.saturating_sub(rss_small) as f64 / (large - small).max(1) as f64;
        scale.fill_seconds = took.as_secs_f64();
        scale.fill_rate_per_sec = taken as f64 / took.as_secs_f64().max(1e-9);
        println!(
            "scale: filled {taken} locks in {:.1} s ({:.0}/s); RSS {:.1} MB with {small}, {:.1} MB with {large}: {:.0} bytes per lock",
            scale.fill_seconds,
            scale.fill_rate_per_sec,
            scale.rss_small_mb,
            scale.rss_large_mb,
            scale.bytes_per_lock
        );
        let spec = plan.spec(Workload::Uncontended, plan.focus);
        let mut row = measure("scale", "sidecar-grpc", &grpc, &spec, pids).await?;
        row.note = Some(format!("{large} locks held"));
        row.workload = format!("held-{}", human_count(large));
        print_row(&row);
        results.rows.push(row);
    }

    // The wave: a fresh sidecar filled with leases that all end within a
    // few seconds of one moment planned after the fill; meanwhile other
    // clients keep locking and unlocking.
    let sidecar = start_sidecar(&plan.leasehold, None);
    let pids = Pids {
        sidecar: Some(sidecar.pid()),
        backend: None,
    };
    let grpc = Target::DaprGrpc {
        addr: sidecar.grpc.to_string(),
        store: store.to_owned(),
    };
    let spread: u64 = 3;
    let planned_fill = Duration::from_secs_f64(scale.fill_seconds * 1.4 + 4.0);
    let wave_at = Instant::now() + planned_fill + plan.duration + plan.warmup;
    let lease_until: Arc<dyn Fn(u64) -> i32 + Send + Sync> = Arc::new(move |i| {
        let end = wave_at + Duration::from_secs(i % spread);
        let left = end.saturating_duration_since(Instant::now());
        // Whole seconds, rounded up: the lease ends within one second
        // after `end`.
        (left.as_secs() + 1).min(3_600) as i32
    });
    load::fill(
        &sidecar.grpc.to_string(),
        store,
        "wave-",
        0..large,
        parallel,
        lease_until,
    )
    .await?;
    let now = Instant::now();
    let margin = if wave_at > now {
        wave_at.duration_since(now).as_secs_f64()
    } else {
        -now.duration_since(wave_at).as_secs_f64()
    };
    let rss_before = procs::rss_bytes(sidecar.pid()).unwrap_or(0);
    // Before the wave: as long a run as the margin allows.
    let before = wave_at.saturating_duration_since(Instant::now());
    if before > plan.warmup + Duration::from_millis(300) {
        let mut spec = plan.spec(Workload::Uncontended, plan.focus);
        spec.duration = (before - plan.warmup - Duration::from_millis(200)).min(plan.duration);
        let mut row = measure("scale", "sidecar-grpc", &grpc, &spec, pids).await?;
        row.workload = "before-wave".into();
        row.note = Some(format!("{large} leases live, none expiring yet"));
        print_row(&row);
        results.rows.push(row);
    }
    tokio::time::sleep_until(wave_at.into()).await;
    // During the wave: from the first expiry to one second after the last.
    let mut spec = plan.spec(Workload::Uncontended, plan.focus);
    spec.warmup = Duration::ZERO;
    spec.duration = Duration::from_secs(spread + 1);
    let mut row = measure("scale", "sidecar-grpc", &grpc, &spec, pids).await?;
    row.workload = "during-wave".into();
    row.note = Some(format!("{large} leases expiring over {} s", spread + 1));
    print_row(&row);
    results.rows.push(row);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = procs::rss_bytes(sidecar.pid()).unwrap_or(0);
    // Expired keys are free: sample some and take them.
    let sample = 1_000.min(large);
    let mut client = load::Client::connect(&grpc).await?;
    let mut free = 0;
    for i in 0..sample {
        let key = format!("wave-{}", i * (large / sample));
        if client
            .lock(&key, "after-wave", Duration::from_secs(5))
            .await?
            == load::Outcome::Done
        {
            free += 1;
        }
    }
    println!(
        "wave: {large} leases ended over {} s (fill finished {margin:.1} s before the first); RSS {:.1} MB before, {:.1} MB after; {free}/{sample} sampled keys free",
        spread + 1,
        mb(rss_before),
        mb(rss_after)
    );
    scale.wave = Some(Wave {
        locks: large,
        spread_seconds: spread + 1,
        margin_seconds: margin,
        rss_before_mb: mb(rss_before),
        rss_after_mb: mb(rss_after),
        sample_free: free,
        sample_size: sample,
    });
    results.scale = Some(scale);
    Ok(())
}

fn human_count(n: u64) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

fn find<'a>(
    results: &'a Results,
    group: &str,
    target: &str,
    workload: &str,
    clients: usize,
) -> Option<&'a Row> {
    results.rows.iter().find(|r| {
        r.group == group && r.target == target && r.workload == workload && r.clients == clients
    })
}

/// The targets, checked against this run's own figures.
fn checks(plan: &Plan, results: &Results) -> Vec<Check> {
    let mut checks = Vec::new();
    for &clients in &plan.clients {
        let Some(raw) = find(results, "redis", "raw-redis", "uncontended", clients) else {
            continue;
        };
        for label in ["sidecar-http", "sidecar-grpc"] {
            if let Some(row) = find(results, "memory", label, "uncontended", clients) {
                checks.push(Check {
                    what: format!("in-memory {label} ops/s at {clients} clients vs raw Redis"),
                    target: format!(">= {:.0} (raw Redis, same run)", raw.ops_per_sec),
                    measured: format!(
                        "{:.0} ({:.2}x)",
                        row.ops_per_sec,
                        row.ops_per_sec / raw.ops_per_sec
                    ),
                    met: row.ops_per_sec >= raw.ops_per_sec,
                });
            }
        }
    }
    let focus = plan.focus;
    if let Some(raw) = find(results, "redis", "raw-redis", "uncontended", focus) {
        for label in ["sidecar-http", "sidecar-grpc"] {
            if let Some(row) = find(results, "redis", label, "uncontended", focus) {
                checks.push(Check {
                    what: format!("Redis-backed {label} ops/s at {focus} clients"),
                    target: format!(">= 0.6 x raw = {:.0}", raw.ops_per_sec * 0.6),
                    measured: format!(
                        "{:.0} ({:.2}x)",
                        row.ops_per_sec,
                        row.ops_per_sec / raw.ops_per_sec
                    ),
                    met: row.ops_per_sec >= 0.6 * raw.ops_per_sec,
                });
                checks.push(Check {
                    what: format!("Redis-backed {label} p50 at {focus} clients"),
                    target: format!("<= raw p50 + 0.1 ms = {:.3} ms", raw.p50_ms + 0.1),
                    measured: format!("{:.3} ms (+{:.3})", row.p50_ms, row.p50_ms - raw.p50_ms),
                    met: row.p50_ms <= raw.p50_ms + 0.1,
                });
            }
        }
    }
    for group in ["memory", "redis"] {
        for label in ["sidecar-http", "sidecar-grpc"] {
            if let Some(cpu) = find(results, group, label, "uncontended", focus)
                .and_then(|r| r.sidecar_cpu_us_per_op)
            {
                checks.push(Check {
                    what: format!("sidecar CPU per request, {group} {label}, {focus} clients"),
                    target: "<= 20 us".into(),
                    measured: format!("{cpu:.1} us"),
                    met: cpu <= 20.0,
                });
            }
        }
    }
    if let Some(startup) = &results.startup {
        checks.push(Check {
            what: "idle RSS".into(),
            target: "<= 15 MB".into(),
            measured: format!("{:.1} MB", startup.idle_rss_mb),
            met: startup.idle_rss_mb <= 15.0,
        });
        checks.push(Check {
            what: "start to ready (median wall time)".into(),
            target: "< 100 ms".into(),
            measured: format!("{:.1} ms", startup.ready_ms_median),
            met: startup.ready_ms_median < 100.0,
        });
    }
    checks
}

fn write_outputs(out: &Path, plan: &Plan, results: &Results) -> Result<()> {
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(out.join("results.json"), json)?;

    // Throughput against clients, uncontended.
    let mut series = Vec::new();
    for (group, target, workload, name) in [
        ("memory", "sidecar-http", "uncontended", "in-memory, HTTP"),
        ("memory", "sidecar-grpc", "uncontended", "in-memory, gRPC"),
        ("redis", "raw-redis", "uncontended", "raw Redis (redis-rs)"),
        (
            "redis",
            "redis-benchmark",
            "set-nx-px",
            "redis-benchmark SET NX PX",
        ),
        ("redis", "sidecar-http", "uncontended", "Redis store, HTTP"),
        ("redis", "sidecar-grpc", "uncontended", "Redis store, gRPC"),
    ] {
        let points: Vec<(f64, f64)> = plan
            .clients
            .iter()
            .filter_map(|&c| find(results, group, target, workload, c))
            .map(|r| (r.clients as f64, r.ops_per_sec))
            .collect();
        if !points.is_empty() {
            series.push(Series {
                name: name.into(),
                points,
            });
        }
    }
    if !series.is_empty() {
        let svg = report::line_chart_svg(
            "Throughput against clients (try-lock + unlock, random keys)",
            "concurrent clients (one connection each)",
            "requests per second",
            &series,
        );
        std::fs::write(out.join("throughput-vs-clients.svg"), svg)?;
    }

    // Latency percentiles at the focus client count.
    let mut groups = Vec::new();
    for row in results.rows.iter().filter(|r| {
        r.clients == plan.focus
            && r.workload == "uncontended"
            && (r.group == "memory" || r.group == "redis")
    }) {
        groups.push(BarGroup {
            name: format!("{} {}", row.group, row.target),
            values: vec![row.p50_ms, row.p90_ms, row.p99_ms, row.p999_ms],
        });
    }
    if !groups.is_empty() {
        let svg = report::bar_chart_svg(
            &format!(
                "Request latency, {} clients, try-lock + unlock (log scale)",
                plan.focus
            ),
            "milliseconds",
            &["p50", "p90", "p99", "p99.9"],
            &groups,
        );
        std::fs::write(out.join("latency-percentiles.svg"), svg)?;
    }
    Ok(())
}
