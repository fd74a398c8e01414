//! Security: TLS with client certificates on both listeners, the request
//! rate and connection limits, and secrets kept out of the logs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use leasehold_client::{Client, Config};
use leasehold_testkit::http::{post_json, request};
use leasehold_testkit::pki::{TestCa, Usage};

use crate::common::{json, start};

fn curl(args: &[&str]) -> (bool, String) {
    let output = Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_on_both_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "ca");
    let (server, client) = (
        ca.issue("server", Usage::Server),
        ca.issue("client", Usage::Client),
    );
    let p = |path: &Path| path.to_str().unwrap().to_owned();
    let sidecar = start(
        &[
            "--tls-cert",
            &p(&server.cert),
            "--tls-key",
            &p(&server.key),
            "--tls-client-ca",
            &p(&ca.cert()),
        ],
        &[],
    );
    let url = format!(
        "https://127.0.0.1:{}/v1.0-alpha1/lock/lockstore",
        sidecar.http.port()
    );
    let body = r#"{"resourceId":"r","lockOwner":"o","expiryInSeconds":30}"#;

    // With the client certificate: served.
    let (ok, out) = curl(&[
        "--cacert",
        &p(&ca.cert()),
        "--cert",
        &p(&client.cert),
        "--key",
        &p(&client.key),
        "-X",
        "POST",
        "-d",
        body,
        &url,
    ]);
    assert!(ok, "{out}");
    assert!(out.contains(r#""success":true"#), "{out}");
    // Without one: the handshake is refused.
    let (ok, _) = curl(&["--cacert", &p(&ca.cert()), "-X", "POST", "-d", body, &url]);
    assert!(!ok, "a client without a certificate was served");
    // Plain HTTP on the TLS port: refused.
    let plain = format!("http://127.0.0.1:{}/v1.0/healthz", sidecar.http.port());
    let (ok, out) = curl(&[&plain]);
    assert!(!ok || out.is_empty(), "plain HTTP was served: {out}");

    // gRPC with the client library.
    let endpoint = format!("https://127.0.0.1:{}", sidecar.grpc.port());
    let config = Config::new(endpoint.clone())
        .with_tls_ca(ca.cert_pem())
        .with_tls_identity(client.cert_pem(), client.key_pem());
    let client = Client::connect(config).await.expect("mutual TLS connects");
    let guard = client
        .try_lock("lockstore", "grpc-tls", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("acquired");
    guard.unlock().await.unwrap();
    // Without a client certificate the server refuses the call.
    let bare = Client::connect(Config::new(endpoint).with_tls_ca(ca.cert_pem())).await;
    let refused = match bare {
        Err(_) => true,
        Ok(client) => client
            .try_lock("lockstore", "x", Duration::from_secs(5))
            .await
            .is_err(),
    };
    assert!(refused, "a gRPC client without a certificate was served");
}

#[test]
fn request_rate_limit_refuses_with_429_and_spares_health() {
    let sidecar = start(&["--max-request-rate", "5"], &[]);
    let mut refused = 0;
    for i in 0..30 {
        let response = post_json(
            sidecar.http,
            "/v1.0-alpha1/lock/lockstore",
            &format!(r#"{{"resourceId":"r{i}","lockOwner":"o","expiryInSeconds":5}}"#),
        );
        if response.status == 429 {
            let body = json(&response.body);
            assert_eq!(body["errorCode"], "ERR_TOO_MANY_REQUESTS");
            assert!(body["message"].as_str().unwrap().contains("5 per second"));
            refused += 1;
        } else {
            assert_eq!(response.status, 200);
        }
    }
    assert!(refused > 0, "no request was refused over the limit");
    assert_eq!(
        request(sidecar.http, "GET", "/v1.0/healthz", &[], b"").status,
        204
    );
}

#[test]
fn connection_limit_holds_new_connections_until_one_closes() {
    let sidecar = start(&["--max-connections", "2"], &[]);
    let first = TcpStream::connect(sidecar.http).unwrap();
    let second = TcpStream::connect(sidecar.http).unwrap();
    // Make sure both are accepted (each is served once).
    for mut conn in [&first, &second] {
        conn.write_all(b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 64];
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let n = conn.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 204"));
    }
    let mut third = TcpStream::connect(sidecar.http).unwrap();
    third
        .write_all(b"GET /v1.0/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        third.read(&mut buf).is_err(),
        "a third connection was served over the limit of 2"
    );
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let n = loop {
        match third.read(&mut buf) {
            Ok(n) => break n,
            Err(_) => assert!(
                Instant::now() < deadline,
                "the waiting connection was never served"
            ),
        }
    };
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 204"));
    drop(second);
}

#[test]
fn tokens_never_reach_the_logs() {
    let sidecar = start(
        &["--log-level", "debug"],
        &[
            ("DAPR_API_TOKEN", "app-secret-771"),
            ("LEASEHOLD_ADMIN_TOKEN", "admin-secret-772"),
        ],
    );
    // Wrong tokens, right tokens, admin calls, store errors.
    request(
        sidecar.http,
        "GET",
        "/v1.0/metadata",
        &[("dapr-api-token", "wrong-secret-773")],
        b"",
    );
    request(
        sidecar.http,
        "GET",
        "/v1.0/metadata",
        &[("dapr-api-token", "app-secret-771")],
        b"",
    );
    request(
        sidecar.http,
        "POST",
        "/v1/locks/lockstore/force-unlock",
        &[
            ("dapr-api-token", "app-secret-771"),
            ("leasehold-admin-token", "admin-secret-772"),
        ],
        br#"{"resourceId":"r","reason":"test"}"#,
    );
    let log = sidecar.process.log_text();
    for secret in ["app-secret-771", "admin-secret-772", "wrong-secret-773"] {
        assert!(!log.contains(secret), "{secret} found in the log:\n{log}");
    }
}
