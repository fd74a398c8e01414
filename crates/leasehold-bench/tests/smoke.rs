//! The suite in `--smoke` mode: a few seconds of load against a real
//! sidecar (and Redis when installed) that checks the tool runs, reports
//! and writes its files. It asserts nothing about speed.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn smoke_suite_runs_and_reports() {
    let leasehold = leasehold_testkit::sidecar::leasehold_binary();
    let out = tempfile::tempdir().expect("a temp dir");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_leasehold-bench"))
        .args(["suite", "--smoke", "--out"])
        .arg(out.path())
        .arg("--leasehold")
        .arg(&leasehold)
        .output()
        .expect("run leasehold-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "leasehold-bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "the smoke run is meant to stay well under a minute"
    );
    assert!(stdout.contains("sidecar-http"), "no HTTP rows:\n{stdout}");
    assert!(stdout.contains("sidecar-grpc"), "no gRPC rows:\n{stdout}");
    assert!(stdout.contains("checks against the targets"), "{stdout}");

    let json = std::fs::read_to_string(out.path().join("results.json")).expect("results.json");
    let results: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let rows = results["rows"].as_array().expect("rows");
    let memory: Vec<_> = rows
        .iter()
        .filter(|r| r["group"] == "memory" && r["workload"] == "uncontended")
        .collect();
    assert!(!memory.is_empty(), "no in-memory rows");
    for row in memory {
        assert!(row["requests"].as_u64().unwrap_or(0) > 0, "{row}");
        assert_eq!(row["errors"].as_u64(), Some(0), "{row}");
        assert!(row["p50_ms"].as_f64().unwrap_or(0.0) > 0.0, "{row}");
    }
    assert!(results["startup"]["idle_rss_mb"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(results["scale"]["bytes_per_lock"].is_number());
    for chart in ["throughput-vs-clients.svg", "latency-percentiles.svg"] {
        let svg = std::fs::read_to_string(out.path().join(chart)).expect(chart);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}
