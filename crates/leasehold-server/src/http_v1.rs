//! The HTTP form of leasehold.v1, under `/v1/`. JSON follows the proto3
//! JSON mapping of proto/leasehold/v1/leasehold.proto (camelCase names,
//! 64-bit integers as strings, enums by name), and every refusal names the
//! field. Hold is a stream of server-sent events.
//!
//! | method | path | |
//! |---|---|---|
//! | POST | `/v1/locks/{store}/acquire` | `{resourceId, owner, leaseMs, waitMs?}` |
//! | POST | `/v1/locks/{store}/release` | `{resourceId, owner}` |
//! | POST | `/v1/locks/{store}/renew` | `{resourceId, owner, leaseMs}` |
//! | POST | `/v1/locks/{store}/hold` | `{resourceId, owner, leaseMs, waitMs?}` → `text/event-stream` |
//! | GET | `/v1/locks/{store}/status?resourceId=` | advisory |
//! | GET | `/v1/locks/{store}?prefix=&pageToken=&pageSize=` | admin |
//! | POST | `/v1/locks/{store}/force-unlock` | admin, `{resourceId, reason?}` |
//! | GET | `/v1/capabilities` | |
//! | GET | `/v1/openapi.yaml` | this API, described |

use std::convert::Infallible;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use leasehold_core::{Acquire, Consistency, ForceRelease, Release};
use serde_json::{Map, Value, json};
use tokio_stream::StreamExt;

use crate::AppState;
use crate::auth::ADMIN_TOKEN_HEADER;
use crate::error::{ApiError, ErrorKind};
use crate::extended::{HoldEvent, RenewOutcome};
use crate::http::{error, json as json_response, unescape};
use crate::metrics::{Counted, Op, Outcome, Transport};

/// The largest fencing token a request may name: more than any store hands
/// out, and within every store's integer type (the OpenAPI document says
/// the same).
const MAX_FENCE_IN: u64 = 999_999_999_999_999_999;

/// The OpenAPI document of this API, served at `/v1/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");

fn millis(d: std::time::Duration) -> String {
    d.as_millis().to_string()
}

fn malformed(message: String) -> ApiError {
    ApiError::new(ErrorKind::MalformedRequest, message)
}

/// A JSON object body with typed, named field access.
struct Fields(Map<String, Value>);

impl Fields {
    fn parse(body: &[u8], allowed: &[&str]) -> Result<Self, ApiError> {
        let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            serde_json::from_slice(body)
                .map_err(|e| malformed(format!("failed deserializing HTTP body: {e}")))?
        };
        let Value::Object(map) = value else {
            return Err(malformed(
                "failed deserializing HTTP body: expected a JSON object".to_owned(),
            ));
        };
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(malformed(format!(
                "unknown field `{unknown}`; expected one of: {}",
                allowed.join(", ")
            )));
        }
        Ok(Fields(map))
    }

    fn string(&self, name: &str) -> Result<String, ApiError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(malformed(format!(
                "field `{name}`: expected a string, got {other}"
            ))),
        }
    }

    /// A uint64: a number, or a string of digits as the proto3 JSON mapping
    /// writes 64-bit integers.
    fn uint(&self, name: &str) -> Result<u64, ApiError> {
        let bad =
            |v: &Value| malformed(format!("field `{name}`: expected a whole number, got {v}"));
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(v @ Value::Number(n)) => n.as_u64().ok_or_else(|| bad(v)),
            Some(v @ Value::String(s)) => s.parse().map_err(|_| bad(v)),
            Some(v) => Err(bad(v)),
        }
    }
}

fn query_param(query: Option<&str>, name: &str) -> Result<String, ApiError> {
    let mut found = None;
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != name {
            continue;
        }
        // A parameter given twice is refused, as a JSON body refuses a
        // duplicate field: which one was meant cannot be known.
        if found.is_some() {
            return Err(malformed(format!(
                "query parameter `{name}` is given more than once"
            )));
        }
        found = Some(
            unescape(value)
                .map(|v| v.into_owned())
                .map_err(|e| malformed(format!("query parameter `{name}`: {e}")))?,
        );
    }
    Ok(found.unwrap_or_default())
}

/// Route one `/v1/...` request; `None` when the path is not one of ours.
pub(crate) async fn dispatch(
    app: &std::sync::Arc<AppState>,
    method: &http::Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Option<Response> {
    let rest = path.strip_prefix("/v1/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    let response = match (method.as_str(), segments.as_slice()) {
        ("GET", ["capabilities"]) => Ok(capabilities(app)),
        ("GET", ["openapi.yaml"]) => Ok(openapi()),
        ("GET", ["locks", store]) => match admin(app, headers) {
            Ok(()) => list(app, store, query).await,
            Err(err) => Err(err),
        },
        ("GET", ["locks", store, "status"]) => status(app, store, query).await,
        ("POST", ["locks", store, op]) => {
            let store = match unescape(store) {
                Ok(store) => store.into_owned(),
                Err(e) => return Some(error(&malformed(format!("store name: {e}")))),
            };
            let bytes = match crate::http::read_body(app, body).await {
                Ok(bytes) => bytes,
                Err(err) => return Some(error(&err)),
            };
            match *op {
                "acquire" => acquire(app, &store, &bytes).await,
                "release" => release(app, &store, &bytes).await,
                "renew" => renew(app, &store, &bytes).await,
                "hold" => hold(app, &store, &bytes),
                "force-unlock" => match admin(app, headers) {
                    Ok(()) => force_unlock(app, &store, &bytes).await,
                    Err(err) => Err(err),
                },
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(response.unwrap_or_else(|err| error(&err)))
}

fn admin(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    app.check_admin(headers.get(ADMIN_TOKEN_HEADER).map(HeaderValue::as_bytes))
}

async fn acquire(app: &AppState, store: &str, body: &[u8]) -> Result<Response, ApiError> {
    let f = Fields::parse(body, &["resourceId", "owner", "leaseMs", "waitMs"])?;
    let outcome = app
        .service
        .acquire(
            store,
            &f.string("resourceId")?,
            &f.string("owner")?,
            f.uint("leaseMs")?,
            f.uint("waitMs")?,
        )
        .await
        .counted(
            app.service.metrics(),
            Op::Acquire,
            Transport::Http,
            store,
            Outcome::of_acquire,
        )?;
    Ok(json_response(
        StatusCode::OK,
        match outcome {
            Acquire::Acquired { fence } => {
                json!({ "acquired": true, "fencingToken": fence.to_string() })
            }
            Acquire::HeldByOther => json!({ "acquired": false }),
        }
        .to_string(),
    ))
}

async fn release(app: &AppState, store: &str, body: &[u8]) -> Result<Response, ApiError> {
    let f = Fields::parse(body, &["resourceId", "owner", "fencingToken"])?;
    let fence = f.uint("fencingToken")?;
    if fence > MAX_FENCE_IN {
        return Err(malformed(format!(
            "field `fencingToken`: {fence} is out of range (at most {MAX_FENCE_IN})"
        )));
    }
    let status = match app
        .service
        .release(store, &f.string("resourceId")?, &f.string("owner")?, fence)
        .await
        .counted(
            app.service.metrics(),
            Op::Release,
            Transport::Http,
            store,
            Outcome::of_release,
        )? {
        Release::Released => "RELEASED",
        Release::NotFound => "NOT_FOUND",
        Release::HeldByOther => "HELD_BY_OTHER",
    };
    Ok(json_response(
        StatusCode::OK,
        json!({ "status": status }).to_string(),
    ))
}

async fn renew(app: &AppState, store: &str, body: &[u8]) -> Result<Response, ApiError> {
    let f = Fields::parse(body, &["resourceId", "owner", "leaseMs"])?;
    let outcome = app
        .service
        .renew(
            store,
            &f.string("resourceId")?,
            &f.string("owner")?,
            f.uint("leaseMs")?,
        )
        .await
        .counted(
            app.service.metrics(),
            Op::Renew,
            Transport::Http,
            store,
            Outcome::of_renew,
        )?;
    let body = match outcome {
        RenewOutcome::Renewed { fence, lease } => {
            json!({ "status": "RENEWED", "fencingToken": fence.to_string(), "leaseMs": millis(lease) })
        }
        RenewOutcome::NotFound => json!({ "status": "RENEW_NOT_FOUND" }),
        RenewOutcome::HeldByOther => json!({ "status": "RENEW_HELD_BY_OTHER" }),
        RenewOutcome::HoldLimitReached => json!({ "status": "HOLD_LIMIT_REACHED" }),
    };
    Ok(json_response(StatusCode::OK, body.to_string()))
}

fn hold(app: &std::sync::Arc<AppState>, store: &str, body: &[u8]) -> Result<Response, ApiError> {
    let f = Fields::parse(body, &["resourceId", "owner", "leaseMs", "waitMs"])?;
    let events = app.service.hold(
        store,
        &f.string("resourceId")?,
        &f.string("owner")?,
        f.uint("leaseMs")?,
        f.uint("waitMs")?,
    );
    let events = events.counted(
        app.service.metrics(),
        Op::Hold,
        Transport::Http,
        store,
        Outcome::of,
    )?;
    // Each event is one server-sent event; the `lost` event is the last.
    // When the client disconnects, hyper drops this body, which drops the
    // receiver, and the hold task releases the lock.
    let stream = tokio_stream::wrappers::ReceiverStream::new(events).map(|item| {
        let (name, data) = match item {
            Ok(HoldEvent::Acquired { fence, lease }) => (
                "acquired",
                json!({ "fencingToken": fence.to_string(), "leaseMs": millis(lease) }),
            ),
            Ok(HoldEvent::Renewed { lease }) => ("renewed", json!({ "leaseMs": millis(lease) })),
            Ok(HoldEvent::NotAcquired) => ("not_acquired", json!({})),
            Err(err) => (
                "lost",
                json!({ "errorCode": err.error_code(), "message": err.message }),
            ),
        };
        Ok::<_, Infallible>(Bytes::from(format!("event: {name}\ndata: {data}\n\n")))
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn status(app: &AppState, store: &str, query: Option<&str>) -> Result<Response, ApiError> {
    let store = unescape(store).map_err(|e| malformed(format!("store name: {e}")))?;
    let resource_id = query_param(query, "resourceId")?;
    let (info, waiters) = app.service.status(&store, &resource_id).await.counted(
        app.service.metrics(),
        Op::Status,
        Transport::Http,
        &store,
        Outcome::of,
    )?;
    let body = match info {
        Some(info) => json!({
            "held": true,
            "owner": info.owner,
            "fencingToken": info.fence.to_string(),
            "remainingMs": millis(info.remaining),
            "waiters": waiters,
        }),
        None => json!({ "held": false, "waiters": waiters }),
    };
    Ok(json_response(StatusCode::OK, body.to_string()))
}

async fn list(app: &AppState, store: &str, query: Option<&str>) -> Result<Response, ApiError> {
    let store = unescape(store).map_err(|e| malformed(format!("store name: {e}")))?;
    let page_size = match query_param(query, "pageSize")?.as_str() {
        "" => 0,
        raw => raw.parse::<u32>().map_err(|_| {
            malformed(format!(
                "query parameter `pageSize`: {raw:?} is not a whole number"
            ))
        })?,
    };
    let page = app
        .service
        .list(
            &store,
            &query_param(query, "prefix")?,
            &query_param(query, "pageToken")?,
            page_size,
        )
        .await
        .counted(
            app.service.metrics(),
            Op::List,
            Transport::Http,
            &store,
            Outcome::of,
        )?;
    let locks: Vec<Value> = page
        .locks
        .into_iter()
        .map(|l| {
            json!({
                "resourceId": l.resource_id,
                "owner": l.owner,
                "fencingToken": l.fence.to_string(),
                "remainingMs": millis(l.remaining),
            })
        })
        .collect();
    let body = json!({ "locks": locks, "nextPageToken": page.next_page_token.unwrap_or_default() });
    Ok(json_response(StatusCode::OK, body.to_string()))
}

async fn force_unlock(app: &AppState, store: &str, body: &[u8]) -> Result<Response, ApiError> {
    let f = Fields::parse(body, &["resourceId", "reason"])?;
    let body = match app
        .service
        .force_unlock(store, &f.string("resourceId")?, &f.string("reason")?)
        .await
        .counted(
            app.service.metrics(),
            Op::ForceUnlock,
            Transport::Http,
            store,
            Outcome::of,
        )? {
        ForceRelease::Released { owner, fence } => {
            json!({ "released": true, "evictedOwner": owner, "evictedFencingToken": fence.to_string() })
        }
        ForceRelease::NotFound => json!({ "released": false }),
    };
    Ok(json_response(StatusCode::OK, body.to_string()))
}

fn capabilities(app: &AppState) -> Response {
    let mut stores: Vec<Value> = app
        .service
        .stores()
        .map(|h| {
            json!({
                "name": h.name,
                "type": h.type_name,
                "fencing": h.capabilities.fencing,
                "renew": h.capabilities.renew,
                "releaseNotify": h.capabilities.release_notify,
                "admin": h.capabilities.admin,
                "durable": h.capabilities.durable,
                "consistency": match h.capabilities.consistency {
                    Consistency::Linearizable => "LINEARIZABLE",
                    Consistency::BestEffort => "BEST_EFFORT",
                },
                "maxLeaseMs": millis(h.max_lease),
                "maxHoldMs": millis(h.max_hold),
            })
        })
        .collect();
    stores.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json_response(StatusCode::OK, json!({ "stores": stores }).to_string())
}

fn openapi() -> Response {
    crate::http::response(StatusCode::OK, "application/yaml", OPENAPI)
}
