//! Real servers for tests, started as processes on free loopback ports in
//! temporary directories and killed when dropped.
//!
//! A missing server binary fails the test with a message that names the
//! install script, on every machine and whether or not `CI` is set: the
//! test command never passes by skipping. Each spawner accepts an
//! environment override for the binary's path.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod component;
pub mod etcd;
pub mod fuzz;
pub mod http;
pub mod pki;
pub mod postgres;
pub mod procs;
pub mod redis;
pub mod rng;
pub mod sidecar;

pub use component::component;
pub use rng::Rng;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}

/// What to run when something a test needs is missing.
pub const INSTALL_HINT: &str = "scripts/install-test-deps.sh installs it";

/// Find a server binary: the path in `env_override` if set, else `name` on
/// `PATH` or in `extra_dirs`.
///
/// # Panics
///
/// When it is missing, with a message that names the install script: a test
/// that needs a server fails without it, on every machine.
pub fn find_binary(name: &str, env_override: &str, extra_dirs: &[&str]) -> PathBuf {
    if let Ok(path) = std::env::var(env_override) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return path;
        }
        panic!("{env_override}={} does not name a file", path.display());
    }
    let path_var = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` was not found on PATH (set {env_override} to its path); {INSTALL_HINT}"
            )
        })
}

/// Poll `ready` until it returns true or `within` passes.
pub fn wait_until(within: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// A child process that is killed on drop. When the test is failing, its log
/// file is printed, so a failure shows what the server said.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ServerProcess {
    /// Start `command` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, command: Command, log: &Path) -> ServerProcess {
        Self::spawn_watched(name, command, log, |_| {})
    }

    /// The same, with every line the process writes on stdout also shown
    /// to `watch` as it comes (a thread copies stdout into the log), so a
    /// caller can act on a line the moment it is written.
    pub fn spawn_watched(
        name: &str,
        mut command: Command,
        log: &Path,
        mut watch: impl FnMut(&str) + Send + 'static,
    ) -> ServerProcess {
        let mut out = std::fs::File::create(log).expect("cannot create a log file");
        let err = out.try_clone().expect("cannot clone a log file handle");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                watch(&line);
                let _ = writeln!(out, "{line}");
            }
        });
        ServerProcess {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Send a signal (`"STOP"`, `"CONT"`, `"KILL"`, `"TERM"`) with kill(1).
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status()
                .expect("cannot run kill");
            assert!(status.success(), "kill -{signal} {pid} failed");
        }
    }

    /// Kill the process at once (SIGKILL) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Wait for the process to exit by itself, up to `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// What the process has written so far.
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- log of {} -----\n{}\n----- end of log -----",
                self.name,
                self.log_text()
            );
        }
        self.kill();
    }
}
