//! The HTTP front end: Dapr's lock, health and metadata routes.
//!
//! One dispatch function instead of a router table: daprd cleans paths
//! (`path.Clean`, trailing slash stripped) and unescapes path parameters
//! with Go's `QueryUnescape`, and doing both by hand keeps that behaviour
//! exact and the hot path short.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use leasehold_core::{Acquire, Release};

use crate::AppState;
use crate::auth::TOKEN_HEADER;
use crate::error::{ApiError, ErrorKind};
use crate::json::LockBody;
use crate::metrics::{Op, Outcome, Transport};

/// The router serving every HTTP route.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(State(app): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = clean_path(parts.uri.path());
    let method = &parts.method;

    let is_health =
        *method == Method::GET && (path == "/v1.0/healthz" || path == "/v1.0/healthz/outbound");
    if !is_health {
        if let Some(limit) = &app.rate
            && !limit.allow()
        {
            return error(&ApiError::new(
                ErrorKind::TooManyRequests,
                format!(
                    "request rate above the limit of {} per second",
                    limit.per_second()
                ),
            ));
        }
        let presented = parts.headers.get(TOKEN_HEADER).map(HeaderValue::as_bytes);
        if app.auth.check_api(presented).is_err() {
            return plain(StatusCode::UNAUTHORIZED, "invalid api token\n");
        }
    }

    let mut segments = path.trim_start_matches('/').splitn(3, '/');
    let route = (segments.next(), segments.next(), segments.next());
    match (method, route) {
        (&Method::POST, (Some("v1.0-alpha1"), Some("lock"), Some(store))) => {
            match unescape(store) {
                Ok(store) => lock(&app, &store, body).await,
                Err(err) => bad_escape(&err),
            }
        }
        (&Method::POST, (Some("v1.0-alpha1"), Some("unlock"), Some(store))) => {
            match unescape(store) {
                Ok(store) => unlock(&app, &store, body).await,
                Err(err) => bad_escape(&err),
            }
        }
        (&Method::GET, (Some("v1.0"), Some("healthz"), None)) => healthz(&app, parts.uri.query()),
        (&Method::GET, (Some("v1.0"), Some("healthz"), Some("outbound"))) => no_content(),
        (&Method::GET, (Some("v1.0"), Some("metadata"), None)) => metadata(&app),
        (&Method::GET, (Some("v1"), Some("health"), None)) => {
            let (healthy, body) = crate::admin::health_json(&app).await;
            let status = if healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, body.to_string())
        }
        (_, (Some("v1"), _, _)) => {
            match crate::http_v1::dispatch(
                &app,
                method,
                &path,
                parts.uri.query(),
                &parts.headers,
                body,
            )
            .await
            {
                Some(response) => response,
                None => route_not_found(method, &path),
            }
        }
        _ => route_not_found(method, &path),
    }
}

pub(crate) async fn read_body(app: &AppState, body: Body) -> Result<Bytes, ApiError> {
    match Limited::new(body, app.max_body_bytes).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => {
            let reason = if err.is::<http_body_util::LengthLimitError>() {
                format!(
                    "the body is larger than the limit of {} bytes",
                    app.max_body_bytes
                )
            } else {
                err.to_string()
            };
            Err(ApiError::new(
                ErrorKind::BodyRead,
                format!("failed to read request body: {reason}"),
            ))
        }
    }
}

async fn decode(app: &AppState, body: Body) -> Result<LockBody, ApiError> {
    let bytes = read_body(app, body).await?;
    LockBody::parse(&bytes).map_err(|err| {
        ApiError::new(
            ErrorKind::MalformedRequest,
            format!("failed deserializing HTTP body: {err}"),
        )
    })
}

async fn lock(app: &AppState, store: &str, body: Body) -> Response {
    let outcome = match decode(app, body).await {
        Ok(body) => {
            app.service
                .try_lock(
                    store,
                    &body.resource_id,
                    &body.lock_owner,
                    body.expiry_in_seconds.into(),
                )
                .await
        }
        Err(err) => Err(err),
    };
    app.service.metrics().request(
        Op::TryLock,
        Transport::Http,
        store,
        Outcome::of_acquire(&outcome),
    );
    match outcome {
        // daprd writes `false` out (EmitUnpopulated); the fencing token is
        // a uint64, which the proto3 JSON mapping writes as a string.
        Ok(Acquire::Acquired { fence }) => json(
            StatusCode::OK,
            format!(r#"{{"success":true,"fencingToken":"{fence}"}}"#),
        ),
        Ok(Acquire::HeldByOther) => json(StatusCode::OK, r#"{"success":false}"#.to_owned()),
        Err(err) => error(&err),
    }
}

async fn unlock(app: &AppState, store: &str, body: Body) -> Response {
    let outcome = match decode(app, body).await {
        Ok(body) => {
            app.service
                .unlock(store, &body.resource_id, &body.lock_owner)
                .await
        }
        Err(err) => Err(err),
    };
    app.service.metrics().request(
        Op::Unlock,
        Transport::Http,
        store,
        Outcome::of_release(&outcome),
    );
    match outcome {
        // The status is a number (UseEnumNumbers), always written out.
        Ok(release) => json(
            StatusCode::OK,
            format!(r#"{{"status":{}}}"#, Release::dapr_status(release)),
        ),
        Err(err) => error(&err),
    }
}

fn healthz(app: &AppState, query: Option<&str>) -> Response {
    let asked = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("appid="));
    if let Some(asked) = asked
        && unescape(asked)
            .map(|a| a != app.service.app_id())
            .unwrap_or(true)
    {
        return error(&ApiError::new(
            ErrorKind::HealthAppIdMismatch,
            "dapr app-id does not match",
        ));
    }
    no_content()
}

fn metadata(app: &AppState) -> Response {
    let mut body = serde_json::to_vec(&app.metadata_json()).unwrap_or_default();
    body.push(b'\n');
    json_bytes(StatusCode::OK, body)
}

fn route_not_found(method: &Method, path: &str) -> Response {
    // daprd sends unknown routes to service invocation, which answers 404;
    // the status is kept, with a message that says what went wrong.
    let message = format!(
        "no route for {method} {path}; the lock API is POST /v1.0-alpha1/lock/{{storeName}} and POST /v1.0-alpha1/unlock/{{storeName}}, and leasehold.v1 is described at GET /v1/openapi.yaml"
    );
    error(&ApiError::new(ErrorKind::RouteNotFound, message))
}

fn bad_escape(err: &str) -> Response {
    plain(
        StatusCode::BAD_REQUEST,
        &format!("failed to unescape request parameter \"storeName\". Error: {err}"),
    )
}

/// Dapr's error body: `{"errorCode":"...","message":"..."}`.
pub(crate) fn error(err: &ApiError) -> Response {
    let body = serde_json::json!({ "errorCode": err.error_code(), "message": err.message });
    json(err.http_status(), body.to_string())
}

/// A response with a body of one content type: the one builder every
/// listener uses.
pub(crate) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub(crate) fn json(status: StatusCode, body: String) -> Response {
    response(status, "application/json", body)
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    response(status, "application/json", body)
}

fn plain(status: StatusCode, text: &str) -> Response {
    response(status, "text/plain; charset=utf-8", text.to_owned())
}

fn no_content() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Go's `path.Clean` plus the trailing-slash strip of daprd's router.
pub(crate) fn clean_path(path: &str) -> Cow<'_, str> {
    let simple = path.starts_with('/')
        && !path.contains("//")
        && !path.contains("/./")
        && !path.contains("/../")
        && !path.ends_with("/.")
        && !path.ends_with("/..")
        && (path.len() == 1 || !path.ends_with('/'));
    if simple {
        return Cow::Borrowed(path);
    }
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    Cow::Owned(format!("/{}", parts.join("/")))
}

/// Go's `url.QueryUnescape`: `%XX` escapes, and `+` as a space.
pub(crate) fn unescape(input: &str) -> Result<Cow<'_, str>, String> {
    if !input.contains(['%', '+']) {
        return Ok(Cow::Borrowed(input));
    }
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = input
                    .get(i + 1..i + 3)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
                let Some(hex) = hex else {
                    let end = (i + 3).min(input.len());
                    return Err(format!("invalid URL escape {:?}", &input[i..end]));
                };
                out.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| "the unescaped value is not UTF-8".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_like_daprd() {
        assert_eq!(clean_path("/v1.0/healthz"), "/v1.0/healthz");
        assert_eq!(clean_path("/v1.0/healthz/"), "/v1.0/healthz");
        assert_eq!(clean_path("//v1.0-alpha1//lock/x/"), "/v1.0-alpha1/lock/x");
        assert_eq!(clean_path("/v1.0-alpha1/lock/./x"), "/v1.0-alpha1/lock/x");
        assert_eq!(clean_path("/a/../v1.0/metadata"), "/v1.0/metadata");
        assert_eq!(clean_path("/"), "/");
    }

    #[test]
    fn unescape_like_go() {
        assert_eq!(unescape("lockstore").unwrap(), "lockstore");
        assert_eq!(unescape("my%20store").unwrap(), "my store");
        assert_eq!(unescape("a+b").unwrap(), "a b");
        assert!(
            unescape("bad%zz")
                .unwrap_err()
                .contains("invalid URL escape \"%zz\"")
        );
        assert!(unescape("bad%2").is_err());
    }
}
