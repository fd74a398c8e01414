//! Compatibility with the official Dapr SDKs: the Python (`dapr`) and
//! JavaScript (`@dapr/dapr`) test suites under `tests/sdk/` run unchanged
//! against real `leasehold serve` processes.
//!
//! Each suite gets two fresh sidecars: one without an API token, and one
//! started with `DAPR_API_TOKEN` for the token cases. Their ports reach the
//! suite through environment variables:
//!
//! * `DAPR_RUNTIME_HOST`, `DAPR_HTTP_PORT`, `DAPR_GRPC_PORT`: the plain sidecar
//! * `LEASEHOLD_SDK_TOKEN_HTTP_PORT`, `LEASEHOLD_SDK_TOKEN_GRPC_PORT`,
//!   `LEASEHOLD_SDK_TOKEN`: the sidecar with a token
//! * `LEASEHOLD_SDK_STORE`: the lock store's name
//!
//! The SDKs are installed by `scripts/install-sdk-deps.sh`. When one is
//! missing (or is not the pinned version) its suite is skipped with a loud
//! message on a developer's machine, and fails under `CI=true`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use leasehold_testkit::find_binary;
use leasehold_testkit::sidecar::{Sidecar, SidecarOptions};
use serde_json::Value;

const STORE: &str = "lockstore";
const TOKEN: &str = "leasehold-sdk-compat-token";
/// How long one whole suite may run. The JS token cases alone wait about 30 s
/// on the SDK's own start-up probe; the rest takes seconds.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a quick probe of an interpreter may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_leasehold"))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// Fail because an SDK is not ready: the suite never passes by skipping.
fn not_ready(what: &str) -> ! {
    panic!("{what}; run scripts/install-sdk-deps.sh to install the pinned SDKs");
}

/// The plain sidecar and the one that checks `dapr-api-token`.
#[derive(Debug)]
struct Sidecars {
    plain: Sidecar,
    token: Sidecar,
}

impl Sidecars {
    fn start(app_id: &str) -> Sidecars {
        let plain = Sidecar::start(
            binary(),
            SidecarOptions {
                args: vec!["--app-id".into(), app_id.into()],
                ..SidecarOptions::default()
            },
        );
        let token = Sidecar::start(
            binary(),
            SidecarOptions {
                args: vec!["--app-id".into(), format!("{app_id}-token")],
                env: vec![("DAPR_API_TOKEN".into(), TOKEN.into())],
                ports: None,
                components: None,
            },
        );
        Sidecars { plain, token }
    }

    /// The environment a suite reads its sidecars from.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DAPR_RUNTIME_HOST", "127.0.0.1".into()),
            ("DAPR_HTTP_PORT", self.plain.http.port().to_string()),
            ("DAPR_GRPC_PORT", self.plain.grpc.port().to_string()),
            (
                "LEASEHOLD_SDK_TOKEN_HTTP_PORT",
                self.token.http.port().to_string(),
            ),
            (
                "LEASEHOLD_SDK_TOKEN_GRPC_PORT",
                self.token.grpc.port().to_string(),
            ),
            ("LEASEHOLD_SDK_TOKEN", TOKEN.into()),
            ("LEASEHOLD_SDK_STORE", STORE.into()),
        ]
    }
}

/// A command with none of the caller's Dapr settings, so that only what a
/// suite is given reaches the SDK.
fn clean_command(program: &Path, root: &Path) -> Command {
    let mut command = Command::new(program);
    command.current_dir(root).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("DAPR_") || name == "APP_ID" || name == "APP_PORT" {
            command.env_remove(&name);
        }
    }
    command
}

/// Run `command` in its own process group with output to a file; kill the
/// whole group if it outlives `within`. Returns the exit status (`None` on a
/// timeout) and everything it printed.
fn run_bounded(mut command: Command, within: Duration) -> (Option<ExitStatus>, String) {
    use std::os::unix::process::CommandExt;

    let dir = tempfile::tempdir().expect("cannot create a temp dir");
    let log = dir.path().join("output.log");
    let out = File::create(&log).expect("cannot create an output file");
    let err = out.try_clone().expect("cannot clone an output file handle");
    let mut child = command
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let deadline = Instant::now() + within;
    let status = loop {
        match child.try_wait().expect("cannot wait for a child") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(format!("-{}", child.id()))
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    (status, output)
}

/// Run a suite and fail, with its whole output, unless it exits 0.
fn run_suite(name: &str, command: Command) -> String {
    let started = Instant::now();
    let (status, output) = run_bounded(command, SUITE_TIMEOUT);
    println!(
        "----- {name} ({:.1} s) -----\n{output}\n----- end of {name} -----",
        started.elapsed().as_secs_f64()
    );
    match status {
        None => panic!("{name} did not finish within {SUITE_TIMEOUT:?}; its output is above"),
        Some(status) => assert!(
            status.success(),
            "{name} failed ({status}); its output is above"
        ),
    }
    output
}

/// The version pinned for `package` in a pip requirements file.
fn pinned_requirement(requirements: &Path, package: &str) -> String {
    let text = std::fs::read_to_string(requirements)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", requirements.display()));
    text.lines()
        .find_map(|line| line.trim().strip_prefix(&format!("{package}==")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("{} pins no {package}==", requirements.display()))
}

fn read_json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

#[test]
fn python_sdk_suite() {
    let root = repo_root();
    let suite = root.join("tests/sdk/python");
    let pinned = pinned_requirement(&suite.join("requirements.txt"), "dapr");
    let python = find_binary("python3", "LEASEHOLD_PYTHON", &[]);

    // Is the pinned SDK (with pytest) importable by this interpreter?
    let mut probe = clean_command(&python, &root);
    probe.args([
        "-c",
        "import importlib.metadata as m, dapr.clients, dapr.aio.clients, pytest; \
         print(m.version('dapr'))",
    ]);
    let (status, output) = run_bounded(probe, PROBE_TIMEOUT);
    if status.is_none_or(|s| !s.success()) {
        not_ready(&format!(
            "the Python SDK `dapr` (or pytest) cannot be imported by {}:\n{}",
            python.display(),
            output.trim_end()
        ));
    }
    let installed = output.lines().last().unwrap_or_default().trim();
    if installed != pinned {
        not_ready(&format!(
            "the Python SDK `dapr` is {installed}, but tests/sdk/python/requirements.txt pins {pinned}"
        ));
    }

    let sidecars = Sidecars::start("sdk-python");
    let mut command = clean_command(&python, &root);
    command
        .args([
            "-m",
            "pytest",
            "tests/sdk/python",
            "-q",
            "-p",
            "no:cacheprovider",
        ])
        .envs(sidecars.env())
        .env("DAPR_HEALTH_TIMEOUT", "30")
        .env("DAPR_API_TIMEOUT_SECONDS", "30")
        // The suite uses no pytest plugin; a plugin installed elsewhere in
        // the same interpreter must not be able to break it.
        .env("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let output = run_suite(&format!("Python SDK dapr=={pinned} (pytest)"), command);
    assert!(
        output.lines().any(|l| l.contains(" passed")),
        "pytest reported no passed test"
    );
    drop(sidecars);
}

#[test]
fn js_sdk_suite() {
    let root = repo_root();
    let suite = root.join("tests/sdk/js");
    let package = read_json(&suite.join("package.json")).expect("tests/sdk/js/package.json");
    let pinned = package["dependencies"]["@dapr/dapr"]
        .as_str()
        .expect("package.json depends on @dapr/dapr")
        .to_owned();
    let node = find_binary("node", "LEASEHOLD_NODE", &[]);

    let installed = read_json(&suite.join("node_modules/@dapr/dapr/package.json"));
    let Some(installed) = installed else {
        not_ready("tests/sdk/js/node_modules/@dapr/dapr is not installed");
    };
    let installed = installed["version"].as_str().unwrap_or_default().to_owned();
    if installed != pinned {
        not_ready(&format!(
            "tests/sdk/js/node_modules has @dapr/dapr {installed}, but package.json pins {pinned}"
        ));
    }

    let sidecars = Sidecars::start("sdk-js");
    let mut command = clean_command(&node, &root);
    command
        .args(["--test", "tests/sdk/js/"])
        .envs(sidecars.env());
    let output = run_suite(
        &format!("JavaScript SDK @dapr/dapr@{pinned} (node --test)"),
        command,
    );
    let count = |key: &str| {
        output
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# {key} ")))
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    assert!(
        count("pass").is_some_and(|n| n > 0),
        "node --test reported no passed test"
    );
    assert_eq!(count("fail"), Some(0), "node --test reported failures");
    drop(sidecars);
}
