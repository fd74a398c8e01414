//! The command-line client against a real sidecar, with real child
//! processes for `leasehold run`.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{binary, start};

const ADMIN: &str = "cli-admin";

fn cli(endpoint: &str, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .env("LEASEHOLD_ENDPOINT", endpoint)
        .env("LEASEHOLD_ADMIN_TOKEN", ADMIN)
        .env_remove("DAPR_API_TOKEN")
        .output()
        .expect("run leasehold")
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn lock_unlock_status_list_with_exit_codes() {
    let sidecar = start(&[], &[("LEASEHOLD_ADMIN_TOKEN", ADMIN)]);
    let endpoint = sidecar.grpc_url();
    let e = endpoint.as_str();

    let got = cli(
        e,
        &[
            "lock", "job", "--owner", "alice", "--lease", "30s", "--json",
        ],
    );
    assert_eq!(got.status.code(), Some(0));
    let got = stdout_json(&got);
    assert_eq!(
        (got["acquired"].as_bool(), got["owner"].as_str()),
        (Some(true), Some("alice"))
    );
    let token = got["fencingToken"].as_u64().unwrap();

    let refused = cli(e, &["lock", "job", "--owner", "bob"]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&refused.stdout),
        "job is held elsewhere\n"
    );

    let status = cli(e, &["status", "job"]);
    assert_eq!(status.status.code(), Some(0));
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.starts_with(&format!("job is held by alice (fencing token {token}, ")),
        "{text}"
    );

    let listed = stdout_json(&cli(e, &["list", "--json"]));
    assert_eq!(listed["locks"][0]["resourceId"], "job");
    let table = cli(e, &["list"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.lines().next().unwrap().starts_with("RESOURCE"),
        "{text}"
    );
    assert!(text.lines().nth(1).unwrap().contains("alice"), "{text}");

    assert_eq!(
        cli(e, &["unlock", "job", "--owner", "bob"]).status.code(),
        Some(1)
    );
    let released = cli(e, &["unlock", "job", "--owner", "alice", "--json"]);
    assert_eq!(released.status.code(), Some(0));
    assert_eq!(stdout_json(&released)["status"], "RELEASED");
    assert_eq!(cli(e, &["status", "job"]).status.code(), Some(1));

    // An unreachable sidecar is an error, not "held elsewhere".
    let port = leasehold_testkit::free_port();
    let down = cli(&format!("http://127.0.0.1:{port}"), &["lock", "job"]);
    assert_eq!(down.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&down.stderr).starts_with("error: cannot connect"));
    // And a bad request names the field.
    let bad = cli(e, &["lock", "job", "--store", "nope"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lock store nope not found"));
}

#[test]
fn run_holds_the_lock_while_the_command_runs() {
    let sidecar = start(&[], &[("LEASEHOLD_ADMIN_TOKEN", ADMIN)]);
    let endpoint = sidecar.grpc_url();
    let e = endpoint.as_str();

    // The command sees the token and its exit code comes back.
    let out = cli(
        e,
        &[
            "run",
            "--lock",
            "job",
            "--",
            "sh",
            "-c",
            "echo token=$LEASEHOLD_FENCING_TOKEN; exit 7",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let token: u64 = text.trim().strip_prefix("token=").unwrap().parse().unwrap();
    assert!(token > 0);
    // Released afterwards.
    assert_eq!(cli(e, &["status", "job"]).status.code(), Some(1));

    // While a run holds the lock, nobody else gets it, and a second run
    // that will not wait says "held elsewhere" with its own code.
    let marker = tempfile::tempdir().unwrap();
    let started = marker.path().join("started");
    let mut holder = Command::new(binary())
        .args(["run", "--lock", "job", "--lease", "1s", "--"])
        .args([
            "sh",
            "-c",
            &format!("touch {}; sleep 30", started.display()),
        ])
        .env("LEASEHOLD_ENDPOINT", e)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cli(e, &["lock", "job"]).status.code(), Some(1));
    assert_eq!(
        cli(e, &["run", "--lock", "job", "--", "true"])
            .status
            .code(),
        Some(75)
    );

    // Losing the lease stops the command; its code comes back.
    let evicted = cli(e, &["force-unlock", "job", "--reason", "test"]);
    assert_eq!(
        evicted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&evicted.stderr)
    );
    let status = loop {
        if let Some(status) = holder.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the command was not stopped after the lease was lost"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(143), "SIGTERM'd sh reports 128 + 15");
    let mut stderr = String::new();
    std::io::Read::read_to_string(holder.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("lease on job lost") && stderr.contains("force-unlocked"),
        "{stderr}"
    );
}

/// Wait until `path` exists (a command's sign that it started).
fn wait_for_file(path: &std::path::Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what} never started");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_elect_runs_only_while_leader_and_hands_over() {
    let sidecar = start(&[], &[("LEASEHOLD_ADMIN_TOKEN", ADMIN)]);
    let endpoint = sidecar.grpc_url();
    let e = endpoint.as_str();
    let dir = tempfile::tempdir().unwrap();
    let candidate = |name: &str| {
        let started = dir.path().join(name);
        let child = Command::new(binary())
            .args([
                "run",
                "--elect",
                "scheduler",
                "--value",
                name,
                "--lease",
                "1s",
                "--",
            ])
            .args([
                "sh",
                "-c",
                &format!("echo $LEASEHOLD_TERM > {}; sleep 30", started.display()),
            ])
            .env("LEASEHOLD_ENDPOINT", e)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        (child, started)
    };
    let (mut first, first_started) = candidate("first");
    wait_for_file(&first_started, "the first leader's command");
    let (mut second, second_started) = candidate("second");
    // The second candidate waits: its command does not run.
    let led = stdout_json(&cli(e, &["leader", "scheduler", "--json"]));
    assert_eq!(
        (led["candidate"].is_string(), led["value"].as_str()),
        (true, Some("first"))
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!second_started.exists(), "two leaders ran at once");

    // Stopping the first (SIGTERM, forwarded to its command) resigns, and
    // the second is elected with a greater term.
    terminate(&mut first);
    wait_for_file(&second_started, "the second leader's command");
    let term = |path: &std::path::Path| -> u64 {
        std::fs::read_to_string(path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    // The first term's file was written when it led.
    let (t1, t2) = (term(&first_started), term(&second_started));
    assert!(t2 > t1, "terms must grow: {t1} then {t2}");
    let led = stdout_json(&cli(e, &["leader", "scheduler", "--json"]));
    assert_eq!(led["value"], "second");
    assert_eq!(led["term"], t2);
    terminate(&mut second);
}

/// SIGTERM to a `leasehold run`, which stops its command and lets go.
fn terminate(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[test]
fn run_semaphore_caps_how_many_commands_run() {
    let sidecar = start(&[], &[("LEASEHOLD_ADMIN_TOKEN", ADMIN)]);
    let endpoint = sidecar.grpc_url();
    let e = endpoint.as_str();
    let dir = tempfile::tempdir().unwrap();
    let mut workers = Vec::new();
    for i in 0..2 {
        let started = dir.path().join(format!("w{i}"));
        let child = Command::new(binary())
            .args([
                "run",
                "--semaphore",
                "api",
                "--limit",
                "2",
                "--lease",
                "2s",
                "--",
            ])
            .args([
                "sh",
                "-c",
                &format!("touch {}; sleep 30", started.display()),
            ])
            .env("LEASEHOLD_ENDPOINT", e)
            .spawn()
            .unwrap();
        wait_for_file(&started, "a worker");
        workers.push(child);
    }
    // The third finds no permit, and a different limit is refused.
    let third = cli(
        e,
        &["run", "--semaphore", "api", "--limit", "2", "--", "true"],
    );
    assert_eq!(third.status.code(), Some(75));
    let other = cli(
        e,
        &["run", "--semaphore", "api", "--limit", "3", "--", "true"],
    );
    assert_eq!(other.status.code(), Some(69));
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("limit of 2"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    for mut worker in workers {
        terminate(&mut worker);
    }
}
