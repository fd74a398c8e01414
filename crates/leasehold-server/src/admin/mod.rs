//! The admin listener (daprd's metrics port, 9090 by default): Prometheus
//! metrics at `/metrics`, backend health at `/v1/health`, and a live view of
//! the locks at `/` (behind the admin token).
//!
//! A sampler takes one reading a second of the request and latency
//! counters, and keeps the last five minutes for the live view's charts.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::auth::ADMIN_TOKEN_HEADER;
use crate::http::{response, unescape};
use crate::observe::metrics::{Gauge, Metrics, escape, process_gauges};
use crate::service::Operation;
use crate::service::locks::{List, Status};

const PAGE: &str = include_str!("live/index.html");

/// How many one-second samples the live view keeps.
const HISTORY: usize = 300;

/// One second of traffic.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    at_ms: u64,
    requests: u64,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Debug)]
struct Admin {
    app: Arc<AppState>,
    history: Mutex<VecDeque<Sample>>,
    started_at: f64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Serve the admin listener until `shutdown`.
pub async fn serve_admin(
    listener: TcpListener,
    app: Arc<AppState>,
    shutdown: CancellationToken,
) -> Result<(), crate::error::ServeError> {
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let admin = Arc::new(Admin {
        app,
        history: Mutex::new(VecDeque::with_capacity(HISTORY)),
        started_at,
    });
    tokio::spawn(sample(admin.clone(), shutdown.clone()));
    let router = Router::new().fallback(dispatch).with_state(admin);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|err| crate::error::ServeError::Server {
            what: "metrics",
            message: err.to_string(),
        })
}

async fn sample(admin: Arc<Admin>, shutdown: CancellationToken) {
    let metrics: &Metrics = admin.app.service.metrics();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut last_total, mut last_errors) = metrics.totals();
    let (_, mut last_buckets) = metrics.latency_snapshot();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (total, errors) = metrics.totals();
        let (_, buckets) = metrics.latency_snapshot();
        let delta: Vec<u64> = buckets
            .iter()
            .zip(last_buckets.iter())
            .map(|(a, b)| a - b)
            .collect();
        let sample = Sample {
            at_ms: now_ms(),
            requests: total - last_total,
            errors: errors - last_errors,
            p50_ms: quantile(&delta, 0.5) * 1000.0,
            p99_ms: quantile(&delta, 0.99) * 1000.0,
        };
        (last_total, last_errors, last_buckets) = (total, errors, buckets);
        let mut history = admin.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(sample);
    }
}

/// The upper bound of the bucket holding quantile `q` (0 when empty).
fn quantile(buckets: &[u64], q: f64) -> f64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    for (count, bound) in buckets.iter().zip(Metrics::bucket_bounds()) {
        seen += count;
        if seen >= rank {
            return *bound;
        }
    }
    *Metrics::bucket_bounds().last().unwrap_or(&0.0)
}

async fn dispatch(State(admin): State<Arc<Admin>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    match path.as_str() {
        "/metrics" => response(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            render_metrics(&admin),
        ),
        "/v1/health" => crate::http::health::respond(&admin.app.service).await,
        "/" | "/live.json" => {
            if let Err(message) = authorized(&admin.app, &request) {
                let mut response = response(
                    StatusCode::UNAUTHORIZED,
                    "text/plain; charset=utf-8",
                    message,
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"leasehold\""),
                );
                return response;
            }
            if path == "/" {
                response(StatusCode::OK, "text/html; charset=utf-8", PAGE.to_owned())
            } else {
                response(
                    StatusCode::OK,
                    "application/json",
                    live_json(&admin).await.to_string(),
                )
            }
        }
        _ => response(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /metrics, /v1/health or /\n".to_owned(),
        ),
    }
}

/// The live view needs the admin token: in the `leasehold-admin-token`
/// header, as the password of HTTP Basic auth (what a browser sends), or as
/// `?token=` on the page's first load.
fn authorized(app: &AppState, request: &Request) -> Result<(), String> {
    let header = request
        .headers()
        .get(ADMIN_TOKEN_HEADER)
        .map(|v| v.as_bytes().to_vec());
    let basic = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(base64_decode)
        .and_then(|decoded| {
            let text = String::from_utf8(decoded).ok()?;
            text.split_once(':')
                .map(|(_, password)| password.as_bytes().to_vec())
        });
    let query = request.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .and_then(|v| unescape(v).ok())
            .map(|v| v.as_bytes().to_vec())
    });
    let presented = header.or(basic).or(query);
    app.service
        .check_admin(presented.as_deref())
        .map_err(|err| format!("{}\n", err.message))
}

fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = input.trim().bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, b) in chunk.iter().enumerate() {
            acc |= value(*b)? << (18 - 6 * i);
        }
        let produced = chunk.len().saturating_sub(1);
        for i in 0..produced {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

fn render_metrics(admin: &Admin) -> String {
    let service = &admin.app.service;
    let mut gauges = Vec::new();
    let mut held = Vec::new();
    for handle in service.stores() {
        if let Some(count) = handle.store.held_count() {
            held.push((format!("store=\"{}\"", escape(&handle.name)), count as f64));
        }
    }
    gauges.push(Gauge {
        name: "leasehold_locks_held",
        help: "Live leases, for stores that can count them cheaply.",
        kind: "gauge",
        values: held,
    });
    let reconnections: Vec<(String, f64)> = service
        .stores()
        .filter_map(|h| {
            h.store
                .reconnections()
                .map(|n| (format!("store=\"{}\"", escape(&h.name)), n as f64))
        })
        .collect();
    gauges.push(Gauge {
        name: "leasehold_backend_reconnections_total",
        help: "Times a store re-established its backend connection.",
        kind: "counter",
        values: reconnections,
    });
    gauges.push(Gauge {
        name: "leasehold_waiters",
        help: "Requests waiting for a lock.",
        kind: "gauge",
        values: vec![(String::new(), service.waiting() as f64)],
    });
    gauges.push(Gauge {
        name: "leasehold_hold_streams",
        help: "Open Hold streams.",
        kind: "gauge",
        values: vec![(String::new(), service.holding() as f64)],
    });
    gauges.push(Gauge {
        name: "leasehold_store_up",
        help: "Whether the store's backend answered the last call or check (1) or not (0).",
        kind: "gauge",
        values: service
            .stores()
            .map(|h| {
                (
                    format!("store=\"{}\"", escape(&h.name)),
                    if h.health().reachable { 1.0 } else { 0.0 },
                )
            })
            .collect(),
    });
    gauges.extend(process_gauges(admin.started_at));
    service.metrics().render(&gauges)
}

async fn live_json(admin: &Admin) -> Value {
    let service = &admin.app.service;
    let mut stores = Vec::new();
    let mut handles: Vec<_> = service.stores().cloned().collect();
    handles.sort_by(|a, b| a.name.cmp(&b.name));
    for handle in handles {
        // Every live lock of the app's scope, up to 200 per store.
        let locks = if handle.capabilities.admin {
            let list = List {
                store: handle.name.to_string(),
                prefix: String::new(),
                page_token: String::new(),
                page_size: 200,
            };
            match list.run(service).await {
                Ok(page) => {
                    let mut locks = Vec::new();
                    for lock in page.locks {
                        let status = Status {
                            store: handle.name.to_string(),
                            resource_id: lock.resource_id.clone(),
                        };
                        let waiters = status.run(service).await.map_or(0, |s| s.waiters);
                        locks.push(json!({
                            "resourceId": lock.resource_id,
                            "owner": lock.owner,
                            "fencingToken": lock.fence.to_string(),
                            "remainingMs": lock.remaining.as_millis() as u64,
                            "waiters": waiters,
                        }));
                    }
                    Value::Array(locks)
                }
                Err(err) => json!({ "error": err.message }),
            }
        } else {
            json!({ "error": "this store cannot list its locks" })
        };
        let health = handle.health();
        stores.push(json!({
            "name": &*handle.name,
            "type": handle.type_name,
            "capabilities": handle.capabilities.names(),
            "reachable": health.reachable,
            "lastError": health.last_error,
            "locks": locks,
        }));
    }
    let history: Vec<Value> = admin
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|s| json!({ "t": s.at_ms, "requests": s.requests, "errors": s.errors, "p50Ms": s.p50_ms, "p99Ms": s.p99_ms }))
        .collect();
    json!({
        "appId": service.app_id(),
        "version": crate::wire::dapr::RUNTIME_VERSION,
        "waiters": service.waiting(),
        "holdStreams": service.holding(),
        "stores": stores,
        "history": history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_decode("YWRtaW46czNjcmV0").unwrap(), b"admin:s3cret");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("!!").is_none());
    }

    #[test]
    fn quantiles_from_buckets() {
        let mut buckets = vec![0; Metrics::bucket_bounds().len()];
        buckets[1] = 90; // <= 100 µs
        buckets[6] = 10; // <= 5 ms
        assert_eq!(quantile(&buckets, 0.5), 0.0001);
        assert_eq!(quantile(&buckets, 0.99), 0.005);
        assert_eq!(quantile(&[0; 16], 0.5), 0.0);
    }
}
