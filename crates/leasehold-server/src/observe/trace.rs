//! W3C trace context, continued from each request through its store calls,
//! and exported over OTLP/HTTP (JSON) when an endpoint is configured.
//!
//! With no exporter and no `traceparent` header, a request pays one header
//! lookup and nothing else. With a `traceparent` header, the request's
//! trace id is known to its log lines and store calls. With an exporter,
//! each request and each store call becomes a span, batched and sent to
//! `<endpoint>/v1/traces` in the background; a slow or absent collector
//! costs dropped spans, never slower requests.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::Either;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

tokio::task_local! {
    /// The trace context of the request being served.
    static CURRENT: TraceContext;
}

/// The trace context of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id (16 bytes), from `traceparent` or new.
    pub trace_id: u128,
    /// This request's span id.
    pub span_id: u64,
    /// The caller's span id, from `traceparent`.
    pub parent_span_id: Option<u64>,
    /// The sampled flag.
    pub sampled: bool,
}

/// Parse a `traceparent` header: `00-<32 hex>-<16 hex>-<2 hex>`. Any other
/// version with at least these fields is read the same way, as the W3C
/// specification asks; all-zero ids are invalid.
pub fn parse_traceparent(value: &str) -> Option<(u128, u64, bool)> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || parent.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !lower_hex(version) || !lower_hex(trace) || !lower_hex(parent) || !lower_hex(flags) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|id| *id != 0)?;
    let parent_id = u64::from_str_radix(parent, 16).ok().filter(|id| *id != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id, parent_id, flags & 1 == 1))
}

static ID_COUNTER: AtomicU64 = AtomicU64::new(1);

fn random_u64() -> u64 {
    // Unique per process (the counter) and unpredictable across processes
    // (the per-process random hasher keys).
    thread_local!(static STATE: RandomState = RandomState::new());
    let n = ID_COUNTER.fetch_add(1, Ordering::Relaxed);
    STATE.with(|s| s.hash_one(n)).max(1)
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One finished span.
#[derive(Debug, Clone)]
struct SpanRecord {
    trace_id: u128,
    span_id: u64,
    parent_span_id: Option<u64>,
    name: String,
    kind: u8,
    start: u64,
    end: u64,
    attributes: Vec<(&'static str, String)>,
    error: bool,
}

/// Starts and exports spans. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Tracer {
    spans: Option<mpsc::Sender<SpanRecord>>,
}

impl Tracer {
    /// A tracer that exports nothing.
    pub fn off() -> Self {
        Tracer { spans: None }
    }

    /// A tracer exporting to an OTLP/HTTP endpoint (`http://host:port`).
    /// Must be called inside a Tokio runtime.
    pub fn otlp(endpoint: &str, service_name: &str) -> Result<Self, String> {
        let target = Target::parse(endpoint)?;
        let (sender, receiver) = mpsc::channel(4096);
        tokio::spawn(export(receiver, target, service_name.to_owned()));
        Ok(Tracer {
            spans: Some(sender),
        })
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.spans.is_some()
    }

    /// The context for a request with this `traceparent` header, if the
    /// request is traced at all.
    pub fn context(&self, traceparent: Option<&str>) -> Option<TraceContext> {
        match traceparent.and_then(parse_traceparent) {
            Some((trace_id, parent, sampled)) => Some(TraceContext {
                trace_id,
                span_id: random_u64(),
                parent_span_id: Some(parent),
                sampled,
            }),
            None if self.exporting() => Some(TraceContext {
                trace_id: (u128::from(random_u64()) << 64) | u128::from(random_u64()),
                span_id: random_u64(),
                parent_span_id: None,
                sampled: true,
            }),
            None => None,
        }
    }

    fn record(&self, span: SpanRecord) {
        if let Some(spans) = &self.spans {
            // A full queue drops the span rather than slow the request.
            let _ = spans.try_send(span);
        }
    }
}

/// The trace id of the request being served, as 32 hex digits.
pub fn current_trace_id() -> Option<String> {
    CURRENT.try_with(|cx| format!("{:032x}", cx.trace_id)).ok()
}

/// Time a store call as a child span of the current request, if traced.
pub async fn child_span<T, E>(
    tracer: &Tracer,
    name: &str,
    store: &str,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let Ok(parent) = CURRENT.try_with(|cx| *cx) else {
        return call.await;
    };
    if !tracer.exporting() || !parent.sampled {
        return call.await;
    }
    let start = now_nanos();
    let result = call.await;
    tracer.record(SpanRecord {
        trace_id: parent.trace_id,
        span_id: random_u64(),
        parent_span_id: Some(parent.span_id),
        name: name.to_owned(),
        kind: 3, // CLIENT
        start,
        end: now_nanos(),
        attributes: vec![("leasehold.store", store.to_owned())],
        error: result.is_err(),
    });
    result
}

/// A tower layer that gives each request its trace context and, when
/// exporting, a server span. Used by both front ends.
#[derive(Debug, Clone)]
pub struct TraceLayer {
    tracer: Tracer,
}

impl TraceLayer {
    /// A layer over `tracer`.
    pub fn new(tracer: Tracer) -> Self {
        TraceLayer { tracer }
    }
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            tracer: self.tracer.clone(),
        }
    }
}

/// See [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct TraceService<S> {
    inner: S,
    tracer: Tracer,
}

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for TraceService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Boxed<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let header = request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok());
        let Some(cx) = self.tracer.context(header) else {
            return Either::Left(self.inner.call(request));
        };
        let name = request.uri().path().to_owned();
        let method = request.method().to_string();
        let tracer = self.tracer.clone();
        let future = self.inner.call(request);
        Either::Right(Box::pin(async move {
            let start = now_nanos();
            let result = CURRENT.scope(cx, future).await;
            if cx.sampled {
                let (status, grpc_status) = match &result {
                    Ok(response) => (
                        response.status().as_u16(),
                        response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                    ),
                    Err(_) => (500, None),
                };
                let error = status >= 500 || grpc_status.as_deref().is_some_and(|s| s != "0");
                let mut attributes = vec![
                    ("http.request.method", method),
                    ("http.response.status_code", status.to_string()),
                ];
                if let Some(code) = grpc_status {
                    attributes.push(("rpc.grpc.status_code", code));
                }
                tracer.record(SpanRecord {
                    trace_id: cx.trace_id,
                    span_id: cx.span_id,
                    parent_span_id: cx.parent_span_id,
                    name,
                    kind: 2, // SERVER
                    start,
                    end: now_nanos(),
                    attributes,
                    error,
                });
            }
            result
        }))
    }
}

/// Where spans go.
#[derive(Debug, Clone)]
struct Target {
    host_port: String,
    path: String,
}

impl Target {
    fn parse(endpoint: &str) -> Result<Target, String> {
        let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
            format!("OTLP endpoint {endpoint:?} must start with http:// (OTLP/HTTP, JSON)")
        })?;
        let (host_port, base) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
        if host_port.is_empty() {
            return Err(format!("OTLP endpoint {endpoint:?} has no host"));
        }
        let host_port = if host_port.contains(':') {
            host_port.to_owned()
        } else {
            format!("{host_port}:4318")
        };
        let base = base.trim_end_matches('/');
        let path = if base.ends_with("v1/traces") {
            format!("/{base}")
        } else if base.is_empty() {
            "/v1/traces".to_owned()
        } else {
            format!("/{base}/v1/traces")
        };
        Ok(Target { host_port, path })
    }
}

fn span_json(span: &SpanRecord) -> Value {
    let attributes: Vec<Value> = span
        .attributes
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": { "stringValue": v } }))
        .collect();
    let mut value = json!({
        "traceId": format!("{:032x}", span.trace_id),
        "spanId": format!("{:016x}", span.span_id),
        "name": span.name,
        "kind": span.kind,
        "startTimeUnixNano": span.start.to_string(),
        "endTimeUnixNano": span.end.to_string(),
        "attributes": attributes,
        "status": { "code": if span.error { 2 } else { 1 } },
    });
    if let Some(parent) = span.parent_span_id {
        value["parentSpanId"] = json!(format!("{parent:016x}"));
    }
    value
}

async fn export(mut spans: mpsc::Receiver<SpanRecord>, target: Target, service_name: String) {
    let mut batch = Vec::with_capacity(512);
    loop {
        // Wait for the first span, then gather for up to a second.
        match spans.recv().await {
            Some(span) => batch.push(span),
            None => return,
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while batch.len() < 512 {
            match tokio::time::timeout_at(deadline, spans.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let body = json!({
            "resourceSpans": [{
                "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": service_name } }] },
                "scopeSpans": [{ "scope": { "name": "leasehold", "version": env!("CARGO_PKG_VERSION") },
                                 "spans": batch.iter().map(span_json).collect::<Vec<_>>() }],
            }]
        })
        .to_string();
        if let Err(err) = tokio::time::timeout(Duration::from_secs(5), post(&target, &body))
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()))
        {
            tracing::warn!(endpoint = %target.host_port, error = %err, spans = batch.len(), "could not export spans; dropped");
        }
        batch.clear();
    }
}

async fn post(target: &Target, body: &str) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(&target.host_port)
        .await
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        target.path,
        target.host_port,
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(body.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = [0u8; 12];
    stream
        .read_exact(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let status = String::from_utf8_lossy(&response[9..12]).into_owned();
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(format!("collector answered {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent() {
        let (trace, parent, sampled) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(trace, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parent, 0x00f067aa0ba902b7);
        assert!(sampled);
        assert!(
            parse_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01").is_none()
        );
        assert!(
            parse_traceparent("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            parse_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
                .is_none()
        );
        // A future version may carry more fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra")
                .is_some()
        );
        assert!(parse_traceparent("garbage").is_none());
    }

    #[test]
    fn endpoints() {
        let t = Target::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(
            (t.host_port.as_str(), t.path.as_str()),
            ("127.0.0.1:4318", "/v1/traces")
        );
        let t = Target::parse("http://collector/otlp").unwrap();
        assert_eq!(
            (t.host_port.as_str(), t.path.as_str()),
            ("collector:4318", "/otlp/v1/traces")
        );
        assert!(Target::parse("https://x").is_err());
    }
}
