//! The system under test: one backend (or none, for the in-memory store)
//! and the sidecars in front of it, all real processes on loopback, with
//! the faults that can be done to them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use leasehold_testkit::etcd::EtcdCluster;
use leasehold_testkit::postgres::Postgres;
use leasehold_testkit::redis::{RedisOptions, RedisServer};
use leasehold_testkit::sidecar::{Sidecar, SidecarOptions};

/// The lock stores a run can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// `lock.in-memory` with its restart guard on, one sidecar.
    Memory,
    /// `lock.redis` on one `redis-server` with an fsync'd append-only file.
    Redis,
    /// `lock.etcd` on a cluster of three members.
    Etcd,
    /// `lock.postgresql` on one PostgreSQL server.
    Postgres,
}

impl StoreKind {
    /// Every store.
    pub const ALL: [StoreKind; 4] = [
        StoreKind::Memory,
        StoreKind::Redis,
        StoreKind::Etcd,
        StoreKind::Postgres,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::Redis => "redis",
            StoreKind::Etcd => "etcd",
            StoreKind::Postgres => "postgres",
        }
    }

    /// The store named `name`.
    pub fn parse(name: &str) -> Option<StoreKind> {
        StoreKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// A fault the injector can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL a sidecar and start it again on the same ports and data dir.
    SidecarKill(usize),
    /// SIGTERM a sidecar, wait for it to exit, start it again.
    SidecarTerm(usize),
    /// SIGSTOP a sidecar for a while, then SIGCONT.
    SidecarPause(usize, Duration),
    /// SIGKILL the backend (every member) and start it again.
    BackendKill,
    /// SIGSTOP one etcd member for a while, then SIGCONT.
    MemberPause(usize, Duration),
}

impl FaultKind {
    /// A description for reports.
    pub fn describe(self) -> String {
        match self {
            FaultKind::SidecarKill(i) => format!("sidecar {i}: kill -9 and restart"),
            FaultKind::SidecarTerm(i) => format!("sidecar {i}: SIGTERM and restart"),
            FaultKind::SidecarPause(i, d) => {
                format!("sidecar {i}: SIGSTOP for {} ms", d.as_millis())
            }
            FaultKind::BackendKill => "backend: kill -9 and restart".to_owned(),
            FaultKind::MemberPause(i, d) => {
                format!("etcd member {i}: SIGSTOP for {} ms", d.as_millis())
            }
        }
    }
}

/// One sidecar that can be killed and started again on the same ports,
/// with the same data directory (where the in-memory store's restart guard
/// lives).
#[derive(Debug)]
pub struct SidecarSlot {
    binary: PathBuf,
    options: SidecarOptions,
    current: Option<Sidecar>,
    grpc_url: String,
}

impl SidecarSlot {
    /// Start `binary serve` with `args` (which must name `--data-dir`).
    pub fn start(binary: &Path, args: Vec<String>, env: Vec<(String, String)>) -> Self {
        let mut options = SidecarOptions {
            args,
            env,
            ports: None,
            components: None,
        };
        let sidecar = Sidecar::start(binary, options.clone());
        options.ports = Some((sidecar.http.port(), sidecar.grpc.port()));
        SidecarSlot {
            binary: binary.to_owned(),
            options,
            grpc_url: sidecar.grpc_url(),
            current: Some(sidecar),
        }
    }

    /// The gRPC endpoint (stable across restarts).
    pub fn grpc_url(&self) -> &str {
        &self.grpc_url
    }

    /// The running sidecar.
    pub fn sidecar(&self) -> Option<&Sidecar> {
        self.current.as_ref()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.current.as_ref().and_then(|s| s.process.pid())
    }

    fn again(&mut self) {
        // The old process is gone and its ports are free; binding them
        // again can race with the kernel for a moment, so try a few times.
        for attempt in 0..5 {
            let started =
                std::panic::catch_unwind(|| Sidecar::start(&self.binary, self.options.clone()));
            match started {
                Ok(sidecar) => {
                    self.current = Some(sidecar);
                    return;
                }
                Err(_) if attempt < 4 => std::thread::sleep(Duration::from_millis(200)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }

    /// SIGKILL and start again.
    pub fn kill_restart(&mut self) {
        if let Some(mut old) = self.current.take() {
            old.process.kill();
        }
        self.again();
    }

    /// SIGTERM, wait for the exit, start again.
    pub fn term_restart(&mut self) {
        if let Some(mut old) = self.current.take() {
            old.process.signal("TERM");
            if old.process.wait_exit(Duration::from_secs(20)).is_none() {
                old.process.kill();
            }
        }
        self.again();
    }

    /// The sidecar's log when it is no longer running (it exited or
    /// crashed outside any fault), for the report.
    pub fn log_if_exited(&mut self) -> Option<String> {
        let sidecar = self.current.as_mut()?;
        if sidecar.process.is_running() {
            return None;
        }
        Some(sidecar.process.log_text())
    }

    /// Send a signal to the running sidecar.
    pub fn signal(&self, signal: &str) {
        if let Some(sidecar) = &self.current {
            sidecar.process.signal(signal);
        }
    }
}

/// The backend processes.
#[derive(Debug)]
pub enum Backend {
    /// The in-memory store lives in the sidecar.
    None,
    /// One Redis server.
    Redis(RedisServer),
    /// An etcd cluster.
    Etcd(EtcdCluster),
    /// One PostgreSQL server.
    Postgres(Postgres),
}

/// A backend and its sidecars.
#[derive(Debug)]
pub struct Cluster {
    /// The store.
    pub kind: StoreKind,
    /// The backend.
    pub backend: Backend,
    /// The sidecars (one for the in-memory store, two otherwise).
    pub sidecars: Vec<SidecarSlot>,
    /// The store name clients use.
    pub store: String,
    _dirs: Vec<tempfile::TempDir>,
}

fn component(type_name: &str, metadata: &[(&str, String)]) -> String {
    let mut text = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: locks\nspec:\n  type: {type_name}\n  version: v1\n  metadata:\n"
    );
    for (name, value) in metadata {
        text.push_str(&format!("  - name: {name}\n    value: \"{value}\"\n"));
    }
    text
}

impl Cluster {
    /// Start the backend and sidecars of `kind`. A missing server binary
    /// fails with the testkit's message.
    pub fn start(kind: StoreKind, binary: &Path, extra_env: &[(String, String)]) -> Cluster {
        let (backend, text) = match kind {
            StoreKind::Memory => (
                Backend::None,
                component("lock.in-memory", &[("restartGuard", "true".to_owned())]),
            ),
            StoreKind::Redis => {
                let server = RedisServer::start_with(RedisOptions {
                    persistence: true,
                    ..RedisOptions::default()
                });
                let text = component("lock.redis", &[("redisHost", server.addr())]);
                (Backend::Redis(server), text)
            }
            StoreKind::Etcd => {
                let cluster = EtcdCluster::start(3);
                let text = component(
                    "lock.etcd",
                    &[
                        ("endpoints", cluster.endpoints()),
                        ("dialTimeout", "2s".to_owned()),
                        ("requestTimeout", "2s".to_owned()),
                    ],
                );
                (Backend::Etcd(cluster), text)
            }
            StoreKind::Postgres => {
                let server = Postgres::start();
                let text = component(
                    "lock.postgresql",
                    &[
                        ("connectionString", server.connection_string()),
                        ("timeout", "2s".to_owned()),
                    ],
                );
                (Backend::Postgres(server), text)
            }
        };
        let components = tempfile::tempdir().expect("temp dir");
        std::fs::write(components.path().join("locks.yaml"), text).expect("write component");
        let count = if kind == StoreKind::Memory { 1 } else { 2 };
        let mut dirs = vec![components];
        let mut sidecars = Vec::new();
        for _ in 0..count {
            let data = tempfile::tempdir().expect("temp dir");
            let args = vec![
                "--app-id".to_owned(),
                "safety".to_owned(),
                "--resources-path".to_owned(),
                dirs[0].path().display().to_string(),
                "--data-dir".to_owned(),
                data.path().display().to_string(),
                "--store-timeout".to_owned(),
                "3s".to_owned(),
                "--shutdown-grace".to_owned(),
                "2s".to_owned(),
            ];
            let mut env = vec![("RUST_LOG".to_owned(), "warn".to_owned())];
            env.extend_from_slice(extra_env);
            sidecars.push(SidecarSlot::start(binary, args, env));
            dirs.push(data);
        }
        Cluster {
            kind,
            backend,
            sidecars,
            store: "locks".to_owned(),
            _dirs: dirs,
        }
    }

    /// The faults that make sense for this store, in the order a run
    /// cycles through them. `pause` is how long the in-memory store's
    /// sidecar stops (twice that for a sidecar in front of a backend).
    pub fn faults(&self, pause: Duration) -> Vec<FaultKind> {
        match self.kind {
            // A kill -9 makes the restart guard refuse grants for up to its
            // deadline block (30 s): it comes last in each cycle.
            StoreKind::Memory => vec![
                FaultKind::SidecarPause(0, pause),
                FaultKind::SidecarTerm(0),
                FaultKind::SidecarKill(0),
            ],
            StoreKind::Redis | StoreKind::Postgres => vec![
                FaultKind::SidecarKill(1),
                FaultKind::BackendKill,
                FaultKind::SidecarTerm(0),
                FaultKind::SidecarPause(1, pause * 2),
            ],
            StoreKind::Etcd => vec![
                FaultKind::MemberPause(0, Duration::from_millis(3000)),
                FaultKind::SidecarKill(1),
                FaultKind::BackendKill,
                FaultKind::SidecarTerm(0),
                FaultKind::SidecarPause(1, pause * 2),
            ],
        }
    }

    /// Do `fault` (blocking; call from a blocking thread).
    pub fn inject(&mut self, fault: FaultKind) {
        match fault {
            FaultKind::SidecarKill(i) => self.sidecars[i].kill_restart(),
            FaultKind::SidecarTerm(i) => self.sidecars[i].term_restart(),
            FaultKind::SidecarPause(i, d) => {
                self.sidecars[i].signal("STOP");
                std::thread::sleep(d);
                self.sidecars[i].signal("CONT");
            }
            FaultKind::BackendKill => match &mut self.backend {
                Backend::None => {}
                Backend::Redis(server) => {
                    server.kill();
                    server.restart();
                }
                Backend::Etcd(cluster) => {
                    cluster.kill_all();
                    cluster.restart_all();
                }
                Backend::Postgres(server) => server.restart(),
            },
            FaultKind::MemberPause(i, d) => {
                if let Backend::Etcd(cluster) = &self.backend {
                    let port = cluster.members()[i].client_port;
                    if let Some(pid) = child_pid_with_arg(&format!("127.0.0.1:{port}")) {
                        signal(pid, "STOP");
                        std::thread::sleep(d);
                        signal(pid, "CONT");
                    }
                }
            }
        }
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// The pid of a process started by this run (a child of ours) whose
/// command line mentions `needle`.
fn child_pid_with_arg(needle: &str) -> Option<u32> {
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Field 4 of /proc/PID/stat is the parent's pid (after "(comm)").
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_owned));
        if cmdline.contains(needle) && parent.as_deref() == Some(me.as_str()) {
            return Some(pid);
        }
    }
    None
}

/// The resident set size of `pid` in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}
