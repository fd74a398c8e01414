//! Operability: metrics after a known sequence of calls, backend health,
//! trace propagation to an OTLP collector, and the live view in a real
//! headless browser.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leasehold_testkit::http::{post_json, request};
use serde_json::Value;

use crate::common::{json, start};

fn lock(resource: &str, owner: &str) -> String {
    format!(r#"{{"resourceId":"{resource}","lockOwner":"{owner}","expiryInSeconds":60}}"#)
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_count_a_known_sequence() {
    let sidecar = start(&["--app-id", "ops"], &[]);
    let addr = sidecar.metrics.expect("metrics on");
    let path = "/v1.0-alpha1/lock/lockstore";
    post_json(sidecar.http, path, &lock("a", "o1"));
    post_json(sidecar.http, path, &lock("a", "o2"));
    post_json(sidecar.http, path, &lock("b", "o1"));
    post_json(
        sidecar.http,
        "/v1.0-alpha1/unlock/lockstore",
        r#"{"resourceId":"a","lockOwner":"o2"}"#,
    );
    post_json(
        sidecar.http,
        "/v1.0-alpha1/unlock/lockstore",
        r#"{"resourceId":"a","lockOwner":"o1"}"#,
    );
    post_json(sidecar.http, path, &lock("", "o1"));
    post_json(sidecar.http, "/v1.0-alpha1/lock/nope", &lock("x", "o1"));

    let response = request(addr, "GET", "/metrics", &[], b"");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text();
    let requests = |op: &str, store: &str, outcome: &str| {
        metric(
            &text,
            &format!(
                "leasehold_requests_total{{api=\"dapr\",op=\"{op}\",store=\"{store}\",transport=\"http\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(
        requests("try_lock", "lockstore", "acquired"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        requests("try_lock", "lockstore", "held_by_other"),
        Some(1.0)
    );
    assert_eq!(requests("try_lock", "lockstore", "invalid"), Some(1.0));
    assert_eq!(
        requests("try_lock", "", "invalid"),
        Some(1.0),
        "an unknown store is never a label"
    );
    assert_eq!(
        requests("unlock", "lockstore", "belongs_to_others"),
        Some(1.0)
    );
    assert_eq!(requests("unlock", "lockstore", "released"), Some(1.0));
    assert_eq!(
        metric(
            &text,
            "leasehold_fencing_tokens_issued_total{store=\"lockstore\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, "leasehold_locks_held{store=\"lockstore\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "leasehold_store_operation_duration_seconds_count{store=\"lockstore\",op=\"try_lock\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(&text, "leasehold_store_up{store=\"lockstore\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&text, "leasehold_waiters"), Some(0.0));
    assert!(metric(&text, "process_resident_memory_bytes").unwrap() > 0.0);
    // No resource id ever becomes a label.
    assert!(!text.contains("\"a\"") && !text.contains("\"b\""), "{text}");

    // Backend health, on both listeners.
    for addr in [sidecar.http, addr] {
        let response = request(addr, "GET", "/v1/health", &[], b"");
        assert_eq!(response.status, 200);
        let body = json(&response.body);
        assert_eq!(body["stores"][0]["name"], "lockstore");
        assert_eq!(body["stores"][0]["reachable"], true);
    }
}

/// A stand-in OTLP/HTTP collector: accepts POSTs and keeps their bodies.
fn collector() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100) {
            let Ok(mut stream) = stream else { continue };
            let mut raw = Vec::new();
            let mut buf = [0u8; 8192];
            // Read the head, then Content-Length bytes of body.
            let body = loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                raw.extend_from_slice(&buf[..n]);
                let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if raw.len() >= end + 4 + length {
                    break Some(raw[end + 4..end + 4 + length].to_vec());
                }
            };
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
            if let Some(body) = body.and_then(|b| serde_json::from_slice(&b).ok()) {
                seen.lock().unwrap().push(body);
            }
        }
    });
    (endpoint, bodies)
}

#[test]
fn traceparent_is_continued_into_exported_spans() {
    let (endpoint, bodies) = collector();
    let sidecar = start(&["--otlp-endpoint", &endpoint], &[]);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent}-01");
    let response = request(
        sidecar.http,
        "POST",
        "/v1.0-alpha1/lock/lockstore",
        &[("traceparent", &traceparent)],
        lock("traced", "o").as_bytes(),
    );
    assert_eq!(response.status, 200);

    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans: Vec<Value> = bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| {
                b["resourceSpans"][0]["scopeSpans"][0]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|s| s["traceId"] == trace_id)
            .collect();
        if spans.len() >= 2 {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans never exported: {:?}",
            bodies.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let server = spans
        .iter()
        .find(|s| s["kind"] == 2)
        .expect("a server span");
    assert_eq!(server["parentSpanId"], parent);
    assert_eq!(server["name"], "/v1.0-alpha1/lock/lockstore");
    let store = spans
        .iter()
        .find(|s| s["name"] == "store.try_lock")
        .expect("a store span");
    assert_eq!(
        store["parentSpanId"], server["spanId"],
        "the store call is a child of the request"
    );
}

fn chromium() -> std::path::PathBuf {
    leasehold_testkit::find_binary("chromium", "LEASEHOLD_CHROMIUM", &[])
}

fn render_page(browser: &std::path::Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("run chromium");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_live_view_shows_locks_in_a_real_browser() {
    let browser = chromium();
    let sidecar = start(
        &["--app-id", "billing"],
        &[("LEASEHOLD_ADMIN_TOKEN", "view-token")],
    );
    let metrics = sidecar.metrics.unwrap();
    let response = post_json(
        sidecar.http,
        "/v1.0-alpha1/lock/lockstore",
        &lock("invoice-7", "billing-worker-3"),
    );
    let token = json(&response.body)["fencingToken"]
        .as_str()
        .unwrap()
        .to_owned();

    // Without the token the page is refused.
    assert_eq!(request(metrics, "GET", "/", &[], b"").status, 401);

    let url = format!("http://{metrics}/?token=view-token");
    let dom = render_page(&browser, &url);
    assert!(
        dom.contains("<td>invoice-7</td>"),
        "lock row missing:\n{dom}"
    );
    assert!(dom.contains("<td>billing-worker-3</td>"), "holder missing");
    assert!(
        dom.contains(&format!("<td class=\"num\">{token}</td>")),
        "fencing token missing"
    );
    assert!(dom.contains("app billing"), "header missing");
    assert!(dom.contains("reachable"), "store health missing");

    // After the release, the page says nothing is held.
    post_json(
        sidecar.http,
        "/v1.0-alpha1/unlock/lockstore",
        r#"{"resourceId":"invoice-7","lockOwner":"billing-worker-3"}"#,
    );
    let dom = render_page(&browser, &url);
    assert!(
        dom.contains("<td class=\"empty\">no locks held</td>"),
        "{dom}"
    );
    assert!(!dom.contains("<td>invoice-7</td>"));
}
