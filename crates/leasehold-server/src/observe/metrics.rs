//! Prometheus metrics, kept in plain atomics.
//!
//! Every label is drawn from a closed set (an enum, or the stores named in
//! the component files), never from request data such as a resource id, so
//! the number of series is fixed at start-up. Each counter is one atomic
//! add on the request path; the text exposition is built only when scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Which call a request made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    TryLock,
    Unlock,
    Acquire,
    Release,
    Renew,
    Hold,
    Status,
    List,
    ForceUnlock,
    SemaphoreAcquire,
    SemaphoreRelease,
    SemaphoreRenew,
    SemaphoreHold,
    SemaphoreStatus,
    SemaphoreForceRelease,
    RwAcquire,
    RwRelease,
    RwRenew,
    RwHold,
    RwStatus,
    RwForceRelease,
    Campaign,
    ElectionAcquire,
    ElectionRenew,
    Resign,
    Proclaim,
    Leader,
    Observe,
    ElectionForceRelease,
}

impl Op {
    const ALL: [Op; 29] = [
        Op::TryLock,
        Op::Unlock,
        Op::Acquire,
        Op::Release,
        Op::Renew,
        Op::Hold,
        Op::Status,
        Op::List,
        Op::ForceUnlock,
        Op::SemaphoreAcquire,
        Op::SemaphoreRelease,
        Op::SemaphoreRenew,
        Op::SemaphoreHold,
        Op::SemaphoreStatus,
        Op::SemaphoreForceRelease,
        Op::RwAcquire,
        Op::RwRelease,
        Op::RwRenew,
        Op::RwHold,
        Op::RwStatus,
        Op::RwForceRelease,
        Op::Campaign,
        Op::ElectionAcquire,
        Op::ElectionRenew,
        Op::Resign,
        Op::Proclaim,
        Op::Leader,
        Op::Observe,
        Op::ElectionForceRelease,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::TryLock => "try_lock",
            Op::Unlock => "unlock",
            Op::Acquire => "acquire",
            Op::Release => "release",
            Op::Renew => "renew",
            Op::Hold => "hold",
            Op::Status => "status",
            Op::List => "list",
            Op::ForceUnlock => "force_unlock",
            Op::SemaphoreAcquire => "semaphore_acquire",
            Op::SemaphoreRelease => "semaphore_release",
            Op::SemaphoreRenew => "semaphore_renew",
            Op::SemaphoreHold => "semaphore_hold",
            Op::SemaphoreStatus => "semaphore_status",
            Op::SemaphoreForceRelease => "semaphore_force_release",
            Op::RwAcquire => "rw_acquire",
            Op::RwRelease => "rw_release",
            Op::RwRenew => "rw_renew",
            Op::RwHold => "rw_hold",
            Op::RwStatus => "rw_status",
            Op::RwForceRelease => "rw_force_release",
            Op::Campaign => "campaign",
            Op::ElectionAcquire => "election_acquire",
            Op::ElectionRenew => "election_renew",
            Op::Resign => "resign",
            Op::Proclaim => "proclaim",
            Op::Leader => "leader",
            Op::Observe => "observe",
            Op::ElectionForceRelease => "election_force_release",
        }
    }

    fn api(self) -> &'static str {
        match self {
            Op::TryLock | Op::Unlock => "dapr",
            _ => "leasehold.v1",
        }
    }
}

/// Which front end served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Transport {
    Http,
    Grpc,
}

impl Transport {
    const ALL: [Transport; 2] = [Transport::Http, Transport::Grpc];

    fn name(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Grpc => "grpc",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Outcome {
    Acquired,
    HeldByOther,
    Released,
    NotFound,
    BelongsToOthers,
    Renewed,
    HoldLimitReached,
    Ok,
    Invalid,
    Error,
}

impl Outcome {
    const ALL: [Outcome; 10] = [
        Outcome::Acquired,
        Outcome::HeldByOther,
        Outcome::Released,
        Outcome::NotFound,
        Outcome::BelongsToOthers,
        Outcome::Renewed,
        Outcome::HoldLimitReached,
        Outcome::Ok,
        Outcome::Invalid,
        Outcome::Error,
    ];

    fn name(self) -> &'static str {
        match self {
            Outcome::Acquired => "acquired",
            Outcome::HeldByOther => "held_by_other",
            Outcome::Released => "released",
            Outcome::NotFound => "not_found",
            Outcome::BelongsToOthers => "belongs_to_others",
            Outcome::Renewed => "renewed",
            Outcome::HoldLimitReached => "hold_limit_reached",
            Outcome::Ok => "ok",
            Outcome::Invalid => "invalid",
            Outcome::Error => "error",
        }
    }
}

impl Outcome {
    /// `invalid` for the caller's mistakes, `error` for the service's.
    pub fn of_error(err: &crate::error::ApiError) -> Outcome {
        use crate::error::ErrorKind as K;
        match err.kind {
            K::MalformedRequest
            | K::BodyRead
            | K::LockStoreNotFound
            | K::Unauthorized
            | K::Forbidden
            | K::RouteNotFound
            | K::Unsupported
            | K::LimitMismatch
            | K::TooManyRequests => Outcome::Invalid,
            _ => Outcome::Error,
        }
    }
}

/// One call into a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum StoreOp {
    TryLock,
    Unlock,
    Renew,
    Status,
    List,
    ForceUnlock,
    Watch,
}

impl StoreOp {
    /// The span name of this call.
    pub fn span_name(self) -> &'static str {
        match self {
            StoreOp::TryLock => "store.try_lock",
            StoreOp::Unlock => "store.unlock",
            StoreOp::Renew => "store.renew",
            StoreOp::Status => "store.status",
            StoreOp::List => "store.list",
            StoreOp::ForceUnlock => "store.force_unlock",
            StoreOp::Watch => "store.watch",
        }
    }

    const ALL: [StoreOp; 7] = [
        StoreOp::TryLock,
        StoreOp::Unlock,
        StoreOp::Renew,
        StoreOp::Status,
        StoreOp::List,
        StoreOp::ForceUnlock,
        StoreOp::Watch,
    ];

    fn name(self) -> &'static str {
        match self {
            StoreOp::TryLock => "try_lock",
            StoreOp::Unlock => "unlock",
            StoreOp::Renew => "renew",
            StoreOp::Status => "status",
            StoreOp::List => "list",
            StoreOp::ForceUnlock => "force_unlock",
            StoreOp::Watch => "watch",
        }
    }
}

/// Why a held lock was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum LossReason {
    Expired,
    HeldByOther,
    HoldLimit,
    ForceUnlocked,
    RenewFailed,
    Shutdown,
    /// Given back by a request other than the stream's own (a Release or a
    /// Resign of its grant).
    Released,
}

impl LossReason {
    const ALL: [LossReason; 7] = [
        LossReason::Expired,
        LossReason::HeldByOther,
        LossReason::HoldLimit,
        LossReason::ForceUnlocked,
        LossReason::RenewFailed,
        LossReason::Shutdown,
        LossReason::Released,
    ];

    fn name(self) -> &'static str {
        match self {
            LossReason::Expired => "expired",
            LossReason::HeldByOther => "held_by_other",
            LossReason::HoldLimit => "hold_limit",
            LossReason::ForceUnlocked => "force_unlocked",
            LossReason::RenewFailed => "renew_failed",
            LossReason::Shutdown => "shutdown",
            LossReason::Released => "released",
        }
    }
}

/// Upper bounds of the latency buckets, in seconds: 50 µs to 10 s.
const BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }
}

fn counters(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// The sidecar's metrics. Store labels are fixed at start-up; a request for
/// an unknown store is counted under `store=""`.
#[derive(Debug)]
pub struct Metrics {
    stores: Vec<String>,
    requests: Box<[AtomicU64]>,
    store_latency: Box<[Histogram]>,
    backend_errors: Box<[AtomicU64]>,
    renewals: Box<[AtomicU64]>,
    lost: Box<[AtomicU64]>,
    tokens: Box<[AtomicU64]>,
}

const KINDS: [&str; 5] = [
    "unavailable",
    "timeout",
    "backend",
    "recovering",
    "unsupported",
];

impl Metrics {
    /// Metrics for these stores.
    pub fn new(stores: impl IntoIterator<Item = String>) -> Self {
        let mut stores: Vec<String> = stores.into_iter().collect();
        stores.sort();
        let n = stores.len() + 1;
        Metrics {
            requests: counters(n * Op::ALL.len() * Transport::ALL.len() * Outcome::ALL.len()),
            store_latency: (0..n * StoreOp::ALL.len())
                .map(|_| Histogram::default())
                .collect(),
            backend_errors: counters(n * KINDS.len()),
            renewals: counters(n * 3),
            lost: counters(n * LossReason::ALL.len()),
            tokens: counters(n),
            stores,
        }
    }

    /// The index of `store` among the labels (unknown stores share one).
    pub fn store_index(&self, store: &str) -> usize {
        self.stores
            .iter()
            .position(|s| s == store)
            .unwrap_or(self.stores.len())
    }

    fn store_label(&self, index: usize) -> &str {
        self.stores.get(index).map_or("", String::as_str)
    }

    /// Count one request to the store of index `s` (see
    /// [`Metrics::store_index`]).
    pub fn request(&self, op: Op, transport: Transport, s: usize, outcome: Outcome) {
        // Each `ALL` lists its enum in declaration order, so a variant's
        // discriminant is its index (checked by a test below).
        let (o, t, r) = (op as usize, transport as usize, outcome as usize);
        let index = ((s * Op::ALL.len() + o) * Transport::ALL.len() + t) * Outcome::ALL.len() + r;
        self.requests[index].fetch_add(1, Ordering::Relaxed);
        if outcome == Outcome::Acquired {
            self.tokens[s].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Record one store call's latency, and its failure kind if it failed.
    pub fn store_call(
        &self,
        store: &str,
        op: StoreOp,
        elapsed: Duration,
        error: Option<leasehold_core::StoreErrorKind>,
    ) {
        let s = self.store_index(store);
        self.store_latency[s * StoreOp::ALL.len() + op as usize].observe(elapsed);
        if let Some(kind) = error {
            use leasehold_core::StoreErrorKind as K;
            let k = match kind {
                K::Unavailable => 0,
                K::Timeout => 1,
                K::Recovering => 3,
                K::Unsupported => 4,
                _ => 2,
            };
            self.backend_errors[s * KINDS.len() + k].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count one renewal by a Hold stream or a Renew call: 0 renewed,
    /// 1 refused, 2 failed.
    pub fn renewal(&self, store: &str, outcome: usize) {
        let s = self.store_index(store);
        self.renewals[s * 3 + outcome.min(2)].fetch_add(1, Ordering::Relaxed);
    }

    /// Count one lost lease.
    pub fn lease_lost(&self, store: &str, reason: LossReason) {
        let s = self.store_index(store);
        self.lost[s * LossReason::ALL.len() + reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests and errors so far, over every label (for the live view).
    pub fn totals(&self) -> (u64, u64) {
        let per_outcome = Outcome::ALL.len();
        let error_index = Outcome::Error as usize;
        let mut total = 0;
        let mut errors = 0;
        for (i, counter) in self.requests.iter().enumerate() {
            let v = counter.load(Ordering::Relaxed);
            total += v;
            if i % per_outcome == error_index {
                errors += v;
            }
        }
        (total, errors)
    }

    /// Store calls so far and their latency buckets summed over stores and
    /// operations (for the live view's percentiles).
    pub fn latency_snapshot(&self) -> (u64, [u64; BUCKETS.len()]) {
        let mut buckets = [0u64; BUCKETS.len()];
        let mut count = 0;
        for h in self.store_latency.iter() {
            count += h.count.load(Ordering::Relaxed);
            for (sum, b) in buckets.iter_mut().zip(h.buckets.iter()) {
                *sum += b.load(Ordering::Relaxed);
            }
        }
        (count, buckets)
    }

    /// The bucket bounds, in seconds.
    pub fn bucket_bounds() -> &'static [f64] {
        &BUCKETS
    }

    /// The Prometheus text exposition. `gauges` adds the values read at
    /// scrape time (locks held, waiters, streams, process figures).
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let n = self.stores.len() + 1;

        out.push_str("# HELP leasehold_requests_total Requests by API, call, store, transport and outcome.\n");
        out.push_str("# TYPE leasehold_requests_total counter\n");
        for s in 0..n {
            for (o, op) in Op::ALL.iter().enumerate() {
                for (t, transport) in Transport::ALL.iter().enumerate() {
                    for (r, outcome) in Outcome::ALL.iter().enumerate() {
                        let index = ((s * Op::ALL.len() + o) * Transport::ALL.len() + t)
                            * Outcome::ALL.len()
                            + r;
                        let v = self.requests[index].load(Ordering::Relaxed);
                        if v > 0 {
                            let _ = writeln!(
                                out,
                                "leasehold_requests_total{{api=\"{}\",op=\"{}\",store=\"{}\",transport=\"{}\",outcome=\"{}\"}} {v}",
                                op.api(),
                                op.name(),
                                escape(self.store_label(s)),
                                transport.name(),
                                outcome.name()
                            );
                        }
                    }
                }
            }
        }

        out.push_str(
            "# HELP leasehold_store_operation_duration_seconds Latency of calls into each store.\n",
        );
        out.push_str("# TYPE leasehold_store_operation_duration_seconds histogram\n");
        for s in 0..self.stores.len() {
            for (o, op) in StoreOp::ALL.iter().enumerate() {
                let h = &self.store_latency[s * StoreOp::ALL.len() + o];
                let count = h.count.load(Ordering::Relaxed);
                if count == 0 {
                    continue;
                }
                let labels = format!(
                    "store=\"{}\",op=\"{}\"",
                    escape(self.store_label(s)),
                    op.name()
                );
                let mut cumulative = 0;
                for (bound, bucket) in BUCKETS.iter().zip(h.buckets.iter()) {
                    cumulative += bucket.load(Ordering::Relaxed);
                    let _ = writeln!(
                        out,
                        "leasehold_store_operation_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "leasehold_store_operation_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
                );
                let _ = writeln!(
                    out,
                    "leasehold_store_operation_duration_seconds_sum{{{labels}}} {}",
                    h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
                );
                let _ = writeln!(
                    out,
                    "leasehold_store_operation_duration_seconds_count{{{labels}}} {count}"
                );
            }
        }

        let per_store = |out: &mut String,
                         name: &str,
                         help: &str,
                         values: &[AtomicU64],
                         labels: &[&str],
                         label: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for s in 0..self.stores.len() {
                for (i, value) in labels.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}{{store=\"{}\",{label}=\"{value}\"}} {}",
                        escape(self.store_label(s)),
                        values[s * labels.len() + i].load(Ordering::Relaxed)
                    );
                }
            }
        };
        per_store(
            &mut out,
            "leasehold_backend_errors_total",
            "Failed store calls by kind.",
            &self.backend_errors,
            &KINDS,
            "kind",
        );
        per_store(
            &mut out,
            "leasehold_renewals_total",
            "Lease renewals by outcome.",
            &self.renewals,
            &["renewed", "refused", "failed"],
            "outcome",
        );
        let reasons: Vec<&str> = LossReason::ALL.iter().map(|r| r.name()).collect();
        per_store(
            &mut out,
            "leasehold_leases_lost_total",
            "Held locks lost, by reason.",
            &self.lost,
            &reasons,
            "reason",
        );

        out.push_str(
            "# HELP leasehold_fencing_tokens_issued_total Grants, each with a new fencing token.\n",
        );
        out.push_str("# TYPE leasehold_fencing_tokens_issued_total counter\n");
        for s in 0..self.stores.len() {
            let _ = writeln!(
                out,
                "leasehold_fencing_tokens_issued_total{{store=\"{}\"}} {}",
                escape(self.store_label(s)),
                self.tokens[s].load(Ordering::Relaxed)
            );
        }

        for gauge in gauges {
            let _ = writeln!(
                out,
                "# HELP {} {}\n# TYPE {} {}",
                gauge.name, gauge.help, gauge.name, gauge.kind
            );
            for (labels, value) in &gauge.values {
                if labels.is_empty() {
                    let _ = writeln!(out, "{} {value}", gauge.name);
                } else {
                    let _ = writeln!(out, "{}{{{labels}}} {value}", gauge.name);
                }
            }
        }
        out
    }
}

/// A value read at scrape time.
#[derive(Debug, Clone)]
pub struct Gauge {
    /// The metric name.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// `gauge` or `counter`.
    pub kind: &'static str,
    /// Label text (`store="x"`) and value pairs.
    pub values: Vec<(String, f64)>,
}

/// Escape a label value for the text format.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Process figures from /proc/self, as Prometheus's process collector
/// names them. Empty where /proc is not there.
pub fn process_gauges(start_time_seconds: f64) -> Vec<Gauge> {
    let mut gauges = Vec::new();
    let ticks_per_second = 100.0; // USER_HZ on Linux
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name; utime and stime are
        // the 14th and 15th fields of the whole line.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            gauges.push(Gauge {
                name: "process_cpu_seconds_total",
                help: "User and system CPU time spent, in seconds.",
                kind: "counter",
                values: vec![(String::new(), (utime + stime) / ticks_per_second)],
            });
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kb = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        };
        if let Some(rss) = kb("VmRSS:") {
            gauges.push(Gauge {
                name: "process_resident_memory_bytes",
                help: "Resident memory size in bytes.",
                kind: "gauge",
                values: vec![(String::new(), rss * 1024.0)],
            });
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauges.push(Gauge {
            name: "process_open_fds",
            help: "Open file descriptors.",
            kind: "gauge",
            values: vec![(String::new(), fds.count() as f64)],
        });
    }
    gauges.push(Gauge {
        name: "process_start_time_seconds",
        help: "Start time of the process since the Unix epoch, in seconds.",
        kind: "gauge",
        values: vec![(String::new(), start_time_seconds)],
    });
    gauges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders_with_bounded_labels() {
        let m = Metrics::new(["b".to_owned(), "a".to_owned()]);
        m.request(
            Op::TryLock,
            Transport::Http,
            m.store_index("a"),
            Outcome::Acquired,
        );
        m.request(
            Op::TryLock,
            Transport::Http,
            m.store_index("a"),
            Outcome::Acquired,
        );
        m.request(
            Op::Unlock,
            Transport::Grpc,
            m.store_index("b"),
            Outcome::BelongsToOthers,
        );
        m.request(
            Op::TryLock,
            Transport::Grpc,
            m.store_index("nope"),
            Outcome::Invalid,
        );
        m.store_call("a", StoreOp::TryLock, Duration::from_micros(70), None);
        m.lease_lost("a", LossReason::ForceUnlocked);
        let text = m.render(&[]);
        assert!(text.contains("leasehold_requests_total{api=\"dapr\",op=\"try_lock\",store=\"a\",transport=\"http\",outcome=\"acquired\"} 2"), "{text}");
        assert!(text.contains("leasehold_requests_total{api=\"dapr\",op=\"unlock\",store=\"b\",transport=\"grpc\",outcome=\"belongs_to_others\"} 1"));
        assert!(
            text.contains("op=\"try_lock\",store=\"\",transport=\"grpc\",outcome=\"invalid\"} 1")
        );
        assert!(text.contains("leasehold_store_operation_duration_seconds_bucket{store=\"a\",op=\"try_lock\",le=\"0.0001\"} 1"));
        assert!(text.contains(
            "leasehold_store_operation_duration_seconds_count{store=\"a\",op=\"try_lock\"} 1"
        ));
        assert!(
            text.contains("leasehold_leases_lost_total{store=\"a\",reason=\"force_unlocked\"} 1")
        );
        assert!(text.contains("leasehold_fencing_tokens_issued_total{store=\"a\"} 2"));
        assert_eq!(m.totals(), (4, 0));
    }

    #[test]
    fn discriminants_are_indexes() {
        assert!(Op::ALL.iter().enumerate().all(|(i, x)| *x as usize == i));
        assert!(
            Transport::ALL
                .iter()
                .enumerate()
                .all(|(i, x)| *x as usize == i)
        );
        assert!(
            Outcome::ALL
                .iter()
                .enumerate()
                .all(|(i, x)| *x as usize == i)
        );
        assert!(
            StoreOp::ALL
                .iter()
                .enumerate()
                .all(|(i, x)| *x as usize == i)
        );
        assert!(
            LossReason::ALL
                .iter()
                .enumerate()
                .all(|(i, x)| *x as usize == i)
        );
    }

    #[test]
    fn process_figures_are_read() {
        let names: Vec<_> = process_gauges(1.0).iter().map(|g| g.name).collect();
        assert!(
            names.contains(&"process_resident_memory_bytes"),
            "{names:?}"
        );
        assert!(names.contains(&"process_cpu_seconds_total"));
    }
}
