//! `GET /v1/health`: every store's backend checked now, as JSON. Served on
//! the HTTP listener and on the metrics listener.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::Response;
use http::StatusCode;
use serde_json::json;

use crate::service::LockService;
use crate::service::health::HealthReport;

/// Check the stores and answer: 200 when every backend answers, 503 when
/// one does not.
pub async fn respond(service: &LockService) -> Response {
    let report = service.health_report().await;
    let status = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    super::json_response(status, render(&report).to_string())
}

/// The report as JSON.
pub fn render(report: &HealthReport) -> serde_json::Value {
    let stamp = |t: Option<SystemTime>| {
        t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
    };
    let stores: Vec<serde_json::Value> = report
        .stores
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "type": s.type_name,
                "reachable": s.reachable,
                "lastError": s.last_error,
                "lastErrorAtMs": stamp(s.last_error_at),
                "checkedAtMs": stamp(s.checked_at),
            })
        })
        .collect();
    json!({ "healthy": report.healthy, "stores": stores })
}
