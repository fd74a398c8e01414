//! The leasehold sidecar: one [`service::LockService`] behind an
//! HTTP front end ([`http`], axum) and a gRPC front end ([`grpc`], tonic).
//!
//! ```text
//! client ──HTTP──┐
//!                ├─► LockService ──► LockStore ──► backend
//! client ──gRPC──┘   validation, scoping, store lookup, timeouts
//! ```
//!
//! The front ends only translate: wire format in, a service call, the
//! outcome or the [`error::ApiError`] out through one mapping table.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod admin;
pub mod auth;
pub mod embedded;
pub mod error;
pub mod extended;
pub mod grpc;
pub mod grpc_v1;
pub mod http;
pub mod http_v1;
pub mod json;
pub mod metrics;
pub mod net;
pub mod scope;
pub mod service;
pub mod trace;
mod waiters;

use auth::Auth;
use service::LockService;

/// The version string shown by the metadata endpoints.
pub const RUNTIME_VERSION: &str = concat!("leasehold-", env!("CARGO_PKG_VERSION"));

/// What both front ends share.
#[derive(Debug)]
pub struct AppState {
    /// The lock service.
    pub service: Arc<LockService>,
    /// The tokens in force.
    pub auth: Auth,
    /// The largest request body accepted over HTTP.
    pub max_body_bytes: usize,
    /// The request rate limit, if any.
    pub rate: Option<Arc<net::RateLimit>>,
}

/// One store as the metadata endpoints describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    /// `metadata.name`.
    pub name: String,
    /// `spec.type`.
    pub type_name: String,
    /// `spec.version`.
    pub version: String,
    /// The store's declared capabilities.
    pub capabilities: Vec<String>,
}

impl AppState {
    /// Shared state over a service.
    pub fn new(service: Arc<LockService>, auth: Auth, max_body_bytes: usize) -> Arc<Self> {
        Self::with_rate(service, auth, max_body_bytes, 0)
    }

    /// The same, with at most `max_request_rate` requests a second (0: no
    /// limit).
    pub fn with_rate(
        service: Arc<LockService>,
        auth: Auth,
        max_body_bytes: usize,
        max_request_rate: u32,
    ) -> Arc<Self> {
        Arc::new(AppState {
            service,
            auth,
            max_body_bytes,
            rate: net::RateLimit::new(max_request_rate),
        })
    }

    /// Check the admin token of a request. Admin operations are refused
    /// outright when no admin token is configured.
    pub fn check_admin(&self, presented: Option<&[u8]>) -> Result<(), error::ApiError> {
        let Some(expected) = &self.auth.admin else {
            return Err(error::ApiError::new(
                error::ErrorKind::Forbidden,
                "admin operations are disabled: start the sidecar with LEASEHOLD_ADMIN_TOKEN set",
            ));
        };
        match presented {
            Some(value) if expected.matches(value) => Ok(()),
            Some(_) => Err(error::ApiError::new(
                error::ErrorKind::Forbidden,
                "the admin token does not match",
            )),
            None => Err(error::ApiError::new(
                error::ErrorKind::Forbidden,
                format!(
                    "admin operations need the admin token in the {} header",
                    auth::ADMIN_TOKEN_HEADER
                ),
            )),
        }
    }

    /// The stores, sorted by name.
    pub fn components(&self) -> Vec<ComponentInfo> {
        let mut components: Vec<ComponentInfo> = self
            .service
            .stores()
            .map(|handle| ComponentInfo {
                name: handle.name.clone(),
                type_name: handle.type_name.clone(),
                version: handle.version.clone(),
                capabilities: handle
                    .capabilities
                    .names()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            })
            .collect();
        components.sort_by(|a, b| a.name.cmp(&b.name));
        components
    }

    /// The body of `GET /v1.0/metadata`, shaped like daprd's.
    pub fn metadata_json(&self) -> serde_json::Value {
        let components: Vec<serde_json::Value> = self
            .components()
            .into_iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "type": c.type_name,
                    "version": c.version,
                    "capabilities": c.capabilities,
                })
            })
            .collect();
        serde_json::json!({
            "id": self.service.app_id(),
            "runtimeVersion": RUNTIME_VERSION,
            "components": components,
            "extended": { "daprRuntimeVersion": RUNTIME_VERSION },
            "actorRuntime": { "runtimeStatus": "DISABLED", "hostReady": false },
        })
    }
}

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// The address both listeners bind (loopback by default).
    pub address: IpAddr,
    /// HTTP port (0: any free port).
    pub http_port: u16,
    /// gRPC port (0: any free port).
    pub grpc_port: u16,
    /// Metrics and live view port (0: any free port; `None`: off).
    pub metrics_port: Option<u16>,
    /// Open connections allowed per listener (0: no limit).
    pub max_connections: usize,
    /// Requests allowed per second over both front ends (0: no limit).
    pub max_request_rate: u32,
    /// TLS for the HTTP and gRPC listeners.
    pub tls: Option<net::TlsSettings>,
    /// How long requests in flight may run on after shutdown begins.
    pub grace: Duration,
}

/// Both listeners, bound.
#[derive(Debug)]
pub struct Listeners {
    http: TcpListener,
    grpc: TcpListener,
    admin: Option<TcpListener>,
    config: ListenConfig,
}

impl Listeners {
    /// Bind both ports; an error names the one that failed.
    pub async fn bind(config: &ListenConfig) -> Result<Self, String> {
        // Certificates are read before any port is bound, so a bad file
        // stops the start cleanly.
        if let Some(tls) = &config.tls {
            tls.rustls()?;
            tls.tonic()?;
        }
        let bind = |port: u16, what: &'static str| {
            let addr = SocketAddr::new(config.address, port);
            async move {
                TcpListener::bind(addr)
                    .await
                    .map_err(|err| format!("cannot listen for {what} on {addr}: {err}"))
            }
        };
        let admin = match config.metrics_port {
            Some(port) => Some(bind(port, "metrics").await?),
            None => None,
        };
        Ok(Listeners {
            http: bind(config.http_port, "HTTP").await?,
            grpc: bind(config.grpc_port, "gRPC").await?,
            admin,
            config: config.clone(),
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bound metrics address, if metrics are on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("a bound listener has an address")
    }
}

/// Serve until `shutdown` fires, then stop accepting, let requests in
/// flight finish (up to `grace`), and close the stores.
pub async fn serve(
    listeners: Listeners,
    app: Arc<AppState>,
    grace: Duration,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let config = &listeners.config;
    let tracer = app.service.tracer().clone();
    let http_tls = config
        .tls
        .as_ref()
        .map(net::TlsSettings::rustls)
        .transpose()?;
    let http_listener = net::HttpListener::new(
        listeners.http,
        net::connection_limit(config.max_connections),
        http_tls,
        shutdown.clone(),
    )
    .map_err(|err| format!("HTTP listener: {err}"))?;
    let router = http::router(app.clone()).layer(trace::TraceLayer::new(tracer.clone()));
    let http = axum::serve(http_listener, router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let http = tokio::spawn(async move {
        http.await
            .map_err(|err| format!("HTTP server failed: {err}"))
    });

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        builder = builder
            .tls_config(tls.tonic()?)
            .map_err(|err| format!("gRPC TLS: {err}"))?;
    }
    let incoming = net::tonic_incoming(
        listeners.grpc,
        net::connection_limit(config.max_connections),
    );
    let grpc = builder
        .layer(net::GrpcRateLayer::new(app.rate.clone()))
        .layer(trace::TraceLayer::new(tracer))
        .add_service(grpc::dapr_service(app.clone()))
        .add_service(grpc_v1::locks_service(app.clone()))
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    let grpc = tokio::spawn(async move {
        grpc.await
            .map_err(|err| format!("gRPC server failed: {err}"))
    });

    let admin = listeners
        .admin
        .map(|listener| tokio::spawn(admin::serve_admin(listener, app.clone(), shutdown.clone())));

    shutdown.cancelled().await;
    if let Some(admin) = admin {
        // The admin listener has nothing in flight worth waiting for.
        admin.abort();
    }
    let drained = tokio::time::timeout(grace, async {
        let (http, grpc) = tokio::join!(http, grpc);
        for result in [http, grpc] {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!("{err}"),
                Err(err) => tracing::error!("server task failed: {err}"),
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "requests still in flight after the grace period; stopping anyway"
        );
    }
    app.service.close().await;
    Ok(())
}
