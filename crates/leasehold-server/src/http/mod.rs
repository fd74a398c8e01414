//! The HTTP front end: Dapr's lock, health and metadata routes ([`dapr`])
//! and leasehold.v1 under `/v1/` ([`v1`]), behind one dispatch function.
//!
//! One dispatch function instead of a router table: daprd cleans paths
//! (`path.Clean`, trailing slash stripped) and unescapes path parameters
//! with Go's `QueryUnescape`, and doing both by hand keeps that behaviour
//! exact and the hot path short. The app token and the request rate are
//! checked before this, by `crate::access`, the same way as for gRPC.
//!
//! Both APIs carry the JSON form of their protobuf messages ([`json`]), and
//! map them to the service's operations through `crate::wire`, as gRPC does.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};

use crate::app::AppState;
use crate::error::{ApiError, ErrorKind};
use crate::observe::metrics::Transport;
use crate::service::{Operation, Origin, Rejected};

pub mod dapr;
pub mod health;
pub(crate) mod json;
pub mod primitives;
pub mod v1;

/// The router serving every HTTP route.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(State(app): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = clean_path(parts.uri.path());
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let cx = Call {
        app: &app,
        method: &parts.method,
        query: parts.uri.query(),
        headers: &parts.headers,
    };
    let response = match segments[0] {
        "v1.0-alpha1" | "v1.0" => dapr::route(&cx, &segments, body).await,
        "v1" => v1::route(&cx, &segments[1..], body).await,
        _ => None,
    };
    response.unwrap_or_else(|| route_not_found(&parts.method, &path))
}

/// What a route handler needs of the request besides its body.
pub(crate) struct Call<'a> {
    pub(crate) app: &'a Arc<AppState>,
    pub(crate) method: &'a Method,
    pub(crate) query: Option<&'a str>,
    pub(crate) headers: &'a http::HeaderMap,
}

impl Call<'_> {
    /// Where the request came from, for the service.
    pub(crate) fn origin(&self) -> Origin<'_> {
        let admin = self
            .headers
            .get(crate::auth::ADMIN_TOKEN_HEADER)
            .map(HeaderValue::as_bytes);
        Origin::new(Transport::Http, admin)
    }

    /// Serve `request` through the service, and write its answer with
    /// `respond`, or its error as Dapr's error body.
    pub(crate) async fn serve<O: Operation>(
        &self,
        request: Result<O, Rejected>,
        respond: impl FnOnce(O::Output) -> Response,
    ) -> Response {
        match self.app.service.serve(self.origin(), request).await {
            Ok(output) => respond(output),
            Err(err) => error(&err),
        }
    }

    /// The body, read under the size limit.
    pub(crate) async fn body(&self, body: Body) -> Result<Bytes, ApiError> {
        let limit = self.app.max_body_bytes;
        match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) => {
                let reason = if err.is::<http_body_util::LengthLimitError>() {
                    format!("the body is larger than the limit of {limit} bytes")
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
}

fn route_not_found(method: &Method, path: &str) -> Response {
    // daprd sends unknown routes to service invocation, which answers 404;
    // the status is kept, with a message that says what went wrong.
    let message = format!(
        "no route for {method} {path}; the lock API is POST /v1.0-alpha1/lock/{{storeName}} and POST /v1.0-alpha1/unlock/{{storeName}}, and leasehold.v1 is described at GET /v1/openapi.yaml"
    );
    error(&ApiError::new(ErrorKind::RouteNotFound, message))
}

/// Dapr's error body: `{"errorCode":"...","message":"..."}`, written as Go's
/// `encoding/json` writes it (`<`, `>`, `&` escaped).
pub fn error(err: &ApiError) -> Response {
    let mut body = String::with_capacity(48 + err.message.len());
    body.push_str(r#"{"errorCode":""#);
    body.push_str(err.error_code());
    body.push_str(r#"","message":"#);
    json::push_string_html(&mut body, &err.message);
    body.push('}');
    json_response(err.http_status(), body)
}

/// A response with a body of one content type: the one builder every
/// listener uses.
pub fn response(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    response(status, "application/json", body)
}

/// A plain-text response.
pub fn plain(status: StatusCode, text: &str) -> Response {
    response(status, "text/plain; charset=utf-8", text.to_owned())
}

fn no_content() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

/// Go's `path.Clean` plus the trailing-slash strip of daprd's router.
pub fn clean_path(path: &str) -> Cow<'_, str> {
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
pub fn unescape(input: &str) -> Result<Cow<'_, str>, String> {
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

/// The one value of query parameter `name` (empty when absent). A
/// parameter given twice is refused, as a JSON body refuses a duplicate
/// field: which one was meant cannot be known.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Result<String, ApiError> {
    let mut found = None;
    for pair in query.unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != name {
            continue;
        }
        if found.is_some() {
            return Err(crate::service::malformed(format!(
                "query parameter `{name}` is given more than once"
            )));
        }
        found =
            Some(unescape(value).map(Cow::into_owned).map_err(|e| {
                crate::service::malformed(format!("query parameter `{name}`: {e}"))
            })?);
    }
    Ok(found.unwrap_or_default())
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

    #[test]
    fn query_parameters_once_each() {
        assert_eq!(query_param(Some("a=1&b=x%20y"), "b").unwrap(), "x y");
        assert_eq!(query_param(None, "a").unwrap(), "");
        assert!(
            query_param(Some("a=1&a=2"), "a")
                .unwrap_err()
                .message
                .contains("more than once")
        );
    }

    #[tokio::test]
    async fn error_bodies_escape_as_go_does() {
        let response = error(&ApiError::new(ErrorKind::MalformedRequest, "a <b> & \"c\""));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            &body[..],
            br#"{"errorCode":"ERR_MALFORMED_REQUEST","message":"a \u003cb\u003e \u0026 \"c\""}"#
        );
    }
}
