//! Who may use the listeners, checked once, in one tower layer in front of
//! both: the request rate limit, then Dapr's app token
//! (`dapr-api-token`). Each transport words the refusal its own way: HTTP
//! as daprd's HTTP API does, gRPC as a status.
//!
//! daprd exempts only `GET /v1.0/healthz` and `GET /v1.0/healthz/outbound`
//! from the token (compared on the path with its slashes trimmed, before
//! any cleaning); the rate limit exempts them too, so health checks keep
//! working under load.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{HeaderValue, Method, StatusCode, header};
use leasehold_proto::google_rpc;
use prost::Message;

use crate::app::{AppState, RateLimit};
use crate::auth::{Refusal, TOKEN_HEADER, Token};
use crate::error::{ApiError, ErrorKind};

/// Why a request was refused at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turned {
    /// Over the request rate limit (per second).
    Rate(u32),
    /// The app token is missing or wrong.
    Token(Refusal),
}

/// The layer in front of one listener.
#[derive(Debug)]
pub struct AccessLayer<R> {
    token: Option<Token>,
    rate: Option<Arc<RateLimit>>,
    /// Whether daprd's health routes are exempt (the HTTP listener).
    health_exempt: bool,
    refuse: fn(Turned) -> http::Response<R>,
}

impl<R> Clone for AccessLayer<R> {
    fn clone(&self) -> Self {
        AccessLayer {
            token: self.token.clone(),
            rate: self.rate.clone(),
            health_exempt: self.health_exempt,
            refuse: self.refuse,
        }
    }
}

impl AccessLayer<axum::body::Body> {
    /// In front of the HTTP listener.
    pub fn http(app: &AppState) -> Self {
        AccessLayer {
            token: app.api_token.clone(),
            rate: app.rate.clone(),
            health_exempt: true,
            refuse: refuse_http,
        }
    }
}

impl AccessLayer<tonic::body::Body> {
    /// In front of the gRPC listener.
    pub fn grpc(app: &AppState) -> Self {
        AccessLayer {
            token: app.api_token.clone(),
            rate: app.rate.clone(),
            health_exempt: false,
            refuse: |turned| grpc_status(turned).into_http(),
        }
    }
}

impl<S, R> tower::Layer<S> for AccessLayer<R> {
    type Service = Access<S, R>;
    fn layer(&self, inner: S) -> Self::Service {
        Access {
            inner,
            layer: self.clone(),
        }
    }
}

/// See [`AccessLayer`].
#[derive(Debug)]
pub struct Access<S, R> {
    inner: S,
    layer: AccessLayer<R>,
}

impl<S: Clone, R> Clone for Access<S, R> {
    fn clone(&self) -> Self {
        Access {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Access<S, R>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let layer = &self.layer;
        if layer.health_exempt && is_health(request.method(), request.uri().path()) {
            return Either::Left(self.inner.call(request));
        }
        if let Some(limit) = &layer.rate
            && !limit.allow()
        {
            let refused = (layer.refuse)(Turned::Rate(limit.per_second()));
            return Either::Right(ready(Ok(refused)));
        }
        if let Some(token) = &layer.token {
            let presented = request
                .headers()
                .get(TOKEN_HEADER)
                .map(HeaderValue::as_bytes);
            if let Err(refusal) = crate::auth::check(token, presented) {
                return Either::Right(ready(Ok((layer.refuse)(Turned::Token(refusal)))));
            }
            // daprd removes the token before the request goes on.
            request.headers_mut().remove(TOKEN_HEADER);
        }
        Either::Left(self.inner.call(request))
    }
}

fn is_health(method: &Method, path: &str) -> bool {
    *method == Method::GET
        && matches!(
            path.trim_matches('/'),
            "v1.0/healthz" | "v1.0/healthz/outbound"
        )
}

fn refuse_http(turned: Turned) -> http::Response<axum::body::Body> {
    match turned {
        Turned::Rate(limit) => crate::http::error(&ApiError::new(
            ErrorKind::TooManyRequests,
            format!("request rate above the limit of {limit} per second"),
        )),
        // As daprd answers, byte for byte (Go's `http.Error`).
        Turned::Token(_) => {
            let mut response = crate::http::plain(StatusCode::UNAUTHORIZED, "invalid api token\n");
            response.headers_mut().insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            response
        }
    }
}

/// daprd's gRPC refusals: UNAUTHENTICATED, message `Unauthorized`, and an
/// `ErrorInfo` detail that says which check failed; RESOURCE_EXHAUSTED for
/// the rate limit.
fn grpc_status(turned: Turned) -> tonic::Status {
    let refusal = match turned {
        Turned::Rate(limit) => {
            return tonic::Status::resource_exhausted(format!(
                "request rate above the limit of {limit} per second"
            ));
        }
        Turned::Token(refusal) => refusal,
    };
    let detail = match refusal {
        Refusal::Missing => "missing api token in request metadata",
        Refusal::Mismatch => "authentication error: api token mismatch",
    };
    let info = google_rpc::ErrorInfo {
        reason: "Unauthorized".to_owned(),
        domain: "dapr.io".to_owned(),
        metadata: HashMap::from([
            ("http.code".to_owned(), "401".to_owned()),
            ("http.error_message".to_owned(), detail.to_owned()),
        ]),
    };
    let status = google_rpc::Status {
        code: tonic::Code::Unauthenticated as i32,
        message: "Unauthorized".to_owned(),
        details: vec![google_rpc::Any {
            type_url: "type.googleapis.com/google.rpc.ErrorInfo".to_owned(),
            value: info.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(
        tonic::Code::Unauthenticated,
        "Unauthorized",
        status.encode_to_vec().into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_daprs_health_routes_are_exempt() {
        assert!(is_health(&Method::GET, "/v1.0/healthz"));
        assert!(is_health(&Method::GET, "/v1.0/healthz/outbound/"));
        assert!(!is_health(&Method::HEAD, "/v1.0/healthz"));
        assert!(!is_health(&Method::GET, "/v1.0//healthz"));
        assert!(!is_health(&Method::GET, "/v1/health"));
    }
}
