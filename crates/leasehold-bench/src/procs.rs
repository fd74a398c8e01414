//! The processes the bench starts and what the kernel says about them.
//!
//! CPU time comes from `/proc/PID/stat` (utime + stime, in clock ticks of
//! 10 ms on Linux), memory from `/proc/PID/status` (`VmRSS`, `VmHWM`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Clock ticks per second of `/proc/PID/stat`. Linux reports CPU times in
/// USER_HZ, which is 100 on every architecture it exports to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) a process has used so far.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the fields
    // that follow are counted from the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... utime(11) stime(12).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// The process and its direct children (a PostgreSQL postmaster and its
/// backends).
pub(crate) fn cpu_seconds_tree(pid: u32) -> Option<f64> {
    // The parent's own time plus what its exited children left it
    // (cutime, cstime), plus the live children's own time.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let mut total = 0.0;
    for index in 11..=14 {
        total += fields.get(index)?.parse::<f64>().ok()? / TICKS_PER_SECOND;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Some(total);
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if parent_of(child) == Some(pid) {
            total += cpu_seconds(child).unwrap_or(0.0);
        }
    }
    Some(total)
}

/// Busy CPU seconds of the whole machine so far (all CPUs, from the first
/// line of `/proc/stat`: everything but idle and iowait).
pub(crate) fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let fields: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .take(8)
        .map(|(_, v)| v)
        .sum();
    Some(busy / TICKS_PER_SECOND)
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A `VmXXX:` field of `/proc/PID/status`, in bytes.
pub(crate) fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Resident memory now.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS")
}

/// The highest resident memory since the process started.
pub(crate) fn peak_rss_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM")
}

/// A `leasehold serve` process started by the bench, killed on drop.
#[derive(Debug)]
pub(crate) struct Sidecar {
    child: Child,
    pub(crate) http: String,
    pub(crate) grpc: String,
    /// Wall time from `spawn` to the ready line on stdout.
    pub(crate) ready_ms: f64,
    /// What the server itself says its start took (`startup_ms=`).
    pub(crate) startup_ms: Option<f64>,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    /// Start `binary serve` on kernel-chosen loopback ports, with
    /// `components` (YAML text) as its only resources file when given.
    pub(crate) fn start(binary: &Path, components: Option<&str>) -> Result<Sidecar> {
        let dir = tempfile::Builder::new()
            .prefix("leasehold-bench-")
            .tempdir()?;
        let mut command = Command::new(binary);
        command
            .args([
                "serve",
                "--http-port",
                "0",
                "--grpc-port",
                "0",
                // Metrics stay on, as by default, on a free port so that
                // several sidecars can run at once.
                "--metrics-port",
                "0",
                "--data-dir",
            ])
            .arg(dir.path().join("data"));
        if let Some(yaml) = components {
            let resources = dir.path().join("components");
            std::fs::create_dir_all(&resources)?;
            std::fs::write(resources.join("store.yaml"), yaml)?;
            command.arg("--resources-path").arg(&resources);
        }
        for var in [
            "DAPR_HTTP_PORT",
            "DAPR_GRPC_PORT",
            "DAPR_API_TOKEN",
            "APP_ID",
        ] {
            command.env_remove(var);
        }
        let log = std::fs::File::create(dir.path().join("stderr.log"))?;
        let started = Instant::now();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        // A thread reads stdout so the wait below can time out.
        let (lines, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("leasehold ready") {
                    let _ = lines.send((line, Instant::now()));
                }
            }
        });
        let mut sidecar = Sidecar {
            child,
            http: String::new(),
            grpc: String::new(),
            ready_ms: 0.0,
            startup_ms: None,
            _dir: dir,
        };
        let (line, at) = match ready.recv_timeout(Duration::from_secs(30)) {
            Ok(found) => found,
            Err(_) => {
                let log = std::fs::read_to_string(sidecar._dir.path().join("stderr.log"))
                    .unwrap_or_default();
                bail!("leasehold did not print its ready line within 30 s; its log:\n{log}");
            }
        };
        sidecar.ready_ms = at.duration_since(started).as_secs_f64() * 1e3;
        for word in line.split_whitespace() {
            if let Some(addr) = word.strip_prefix("http=") {
                sidecar.http = addr.to_owned();
            } else if let Some(addr) = word.strip_prefix("grpc=") {
                sidecar.grpc = addr.to_owned();
            } else if let Some(ms) = word.strip_prefix("startup_ms=") {
                sidecar.startup_ms = ms.parse().ok();
            }
        }
        if sidecar.http.is_empty() || sidecar.grpc.is_empty() {
            bail!("cannot read the addresses in {line:?}");
        }
        Ok(sidecar)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
