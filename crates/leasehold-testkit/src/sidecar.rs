//! A `leasehold serve` process for end-to-end tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::ServerProcess;

/// The line `leasehold serve` prints on stdout once both listeners are bound.
pub const READY_PREFIX: &str = "leasehold ready";

/// The `leasehold` binary to test: `LEASEHOLD_BIN` if set, else the one
/// Cargo built beside the running executable (`target/<profile>/leasehold`,
/// which `cargo test --workspace` builds before any test runs).
///
/// # Panics
///
/// When there is none: a test that needs the sidecar fails without it.
pub fn leasehold_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("LEASEHOLD_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "LEASEHOLD_BIN={} does not name a file",
            path.display()
        );
        return path;
    }
    let me = std::env::current_exe().expect("the test knows its own path");
    // Tests run from target/<profile>/deps, binaries from target/<profile>.
    me.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("leasehold"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no `leasehold` binary beside {} (build it with `cargo build -p leasehold-cli`, \
                 run the whole workspace's tests, or set LEASEHOLD_BIN)",
                me.display()
            )
        })
}

/// A running sidecar with its addresses.
#[derive(Debug)]
pub struct Sidecar {
    /// The process; dropping the sidecar kills it.
    pub process: ServerProcess,
    /// The HTTP listener.
    pub http: SocketAddr,
    /// The gRPC listener.
    pub grpc: SocketAddr,
    /// The metrics listener, when on.
    pub metrics: Option<SocketAddr>,
    /// Wall time from the spawn to the ready line on stdout.
    pub ready_ms: f64,
    /// What the sidecar itself says its start took (`startup_ms=`).
    pub startup_ms: Option<f64>,
    /// A temporary directory that lives as long as the sidecar: its log,
    /// its data directory unless the caller passed `--data-dir`, and its
    /// resources path when [`SidecarOptions::components`] is set.
    pub dir: tempfile::TempDir,
}

/// How to start a sidecar.
#[derive(Debug, Clone, Default)]
pub struct SidecarOptions {
    /// Extra arguments after `serve`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Fixed ports instead of kernel-chosen ones.
    pub ports: Option<(u16, u16)>,
    /// Component YAML to serve, written to a resources path of the
    /// sidecar's own.
    pub components: Option<String>,
}

impl Sidecar {
    /// Start `binary serve` on loopback with kernel-chosen ports and wait
    /// until it says it is ready.
    pub fn start(binary: &Path, options: SidecarOptions) -> Sidecar {
        let dir = tempfile::tempdir().expect("cannot create a temp dir");
        let (http, grpc) = options.ports.unwrap_or((0, 0));
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--http-port")
            .arg(http.to_string())
            .arg("--grpc-port")
            .arg(grpc.to_string());
        if !options
            .args
            .iter()
            .any(|a| a.starts_with("--metrics-port") || a.starts_with("--enable-metrics"))
        {
            command.arg("--metrics-port").arg("0");
        }
        if !options.args.iter().any(|a| a == "--data-dir") {
            command.arg("--data-dir").arg(dir.path().join("data"));
        }
        if let Some(yaml) = &options.components {
            let resources = dir.path().join("components");
            std::fs::create_dir_all(&resources).expect("cannot create a resources path");
            crate::component::write(&resources, "components.yaml", yaml);
            command.arg("--resources-path").arg(&resources);
        }
        command.args(&options.args);
        // The caller's environment must not leak Dapr settings into the test.
        for var in [
            "DAPR_HTTP_PORT",
            "DAPR_GRPC_PORT",
            "DAPR_API_TOKEN",
            "APP_ID",
            "NAMESPACE",
        ] {
            command.env_remove(var);
        }
        command.env("RUST_LOG", "info");
        for (name, value) in &options.env {
            command.env(name, value);
        }
        let log = dir.path().join("leasehold.log");
        let (ready, lines) = mpsc::channel();
        let started = Instant::now();
        let mut process = ServerProcess::spawn_watched("leasehold", command, &log, move |line| {
            if line.starts_with(READY_PREFIX) {
                let _ = ready.send((line.to_owned(), Instant::now()));
            }
        });
        let deadline = started + Duration::from_secs(30);
        let (line, at) = loop {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(ready) => break ready,
                Err(_) if !process.is_running() => panic!(
                    "leasehold exited before it was ready:\n{}",
                    process.log_text()
                ),
                Err(_) if Instant::now() > deadline => panic!(
                    "leasehold was not ready within 30 s:\n{}",
                    process.log_text()
                ),
                Err(_) => {}
            }
        };
        let (http, grpc) = parse_ready(&line).expect("the ready line names both listeners");
        let startup_ms = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("startup_ms="))
            .and_then(|ms| ms.parse().ok());
        Sidecar {
            process,
            http,
            grpc,
            metrics: parse_metrics(&line),
            ready_ms: at.duration_since(started).as_secs_f64() * 1e3,
            startup_ms,
            dir,
        }
    }

    /// The process id (the sidecar runs until it is dropped, unless the
    /// caller killed it).
    pub fn pid(&self) -> u32 {
        self.process.pid().expect("the sidecar was killed")
    }

    /// `http://127.0.0.1:port`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `http://127.0.0.1:port` of the gRPC listener.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// A path inside the sidecar's temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Find `leasehold ready http=ADDR grpc=ADDR` in a log.
pub fn parse_ready(log: &str) -> Option<(SocketAddr, SocketAddr)> {
    let line = log.lines().find(|line| line.starts_with(READY_PREFIX))?;
    let mut http = None;
    let mut grpc = None;
    for word in line.split_whitespace() {
        if let Some(addr) = word.strip_prefix("http=") {
            http = addr.parse().ok();
        } else if let Some(addr) = word.strip_prefix("grpc=") {
            grpc = addr.parse().ok();
        }
    }
    Some((http?, grpc?))
}

/// The `metrics=ADDR` of the ready line, when metrics are on.
pub fn parse_metrics(log: &str) -> Option<SocketAddr> {
    let line = log.lines().find(|line| line.starts_with(READY_PREFIX))?;
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("metrics="))
        .and_then(|addr| addr.parse().ok())
}
