//! Where the sidecar listens, and how every front end is wired to the one
//! service: HTTP (axum) and gRPC (tonic) behind the same tracing and access
//! layers, and the metrics listener.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access::AccessLayer;
use crate::app::AppState;
use crate::error::ServeError;
use crate::net;
use crate::observe::trace::TraceLayer;

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
    pub async fn bind(config: &ListenConfig) -> Result<Self, ServeError> {
        // Certificates are read before any port is bound, so a bad file
        // stops the start cleanly.
        if let Some(tls) = &config.tls {
            tls.rustls().map_err(ServeError::Tls)?;
            tls.tonic().map_err(ServeError::Tls)?;
        }
        let bind = |port: u16, what: &'static str| {
            let addr = SocketAddr::new(config.address, port);
            async move {
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::Bind { what, addr, source })
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
) -> Result<(), ServeError> {
    let config = &listeners.config;
    let tracer = app.service.tracer().clone();
    let http_tls = config
        .tls
        .as_ref()
        .map(net::TlsSettings::rustls)
        .transpose()
        .map_err(ServeError::Tls)?;
    let http_listener = net::HttpListener::new(
        listeners.http,
        net::connection_limit(config.max_connections),
        http_tls,
        shutdown.clone(),
    )
    .map_err(|err| ServeError::Server {
        what: "HTTP",
        message: err.to_string(),
    })?;
    let router = crate::http::router(app.clone())
        .layer(AccessLayer::http(&app))
        .layer(TraceLayer::new(tracer.clone()));
    let http = axum::serve(http_listener, router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let http = tokio::spawn(async move {
        http.await.map_err(|err| ServeError::Server {
            what: "HTTP",
            message: err.to_string(),
        })
    });

    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        builder = builder
            .tls_config(tls.tonic().map_err(ServeError::Tls)?)
            .map_err(|err| ServeError::Tls(format!("gRPC: {err}")))?;
    }
    let incoming = net::tonic_incoming(
        listeners.grpc,
        net::connection_limit(config.max_connections),
    );
    // The first layer added is the outermost: every call is traced, and
    // then let in or refused.
    let grpc = builder
        .layer(TraceLayer::new(tracer))
        .layer(AccessLayer::grpc(&app))
        .add_service(crate::grpc::dapr::service(app.clone()))
        .add_service(crate::grpc::v1::service(app.clone()))
        .add_service(crate::grpc::primitives::semaphores(app.clone()))
        .add_service(crate::grpc::primitives::rw_locks(app.clone()))
        .add_service(crate::grpc::primitives::elections(app.clone()))
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    let grpc = tokio::spawn(async move {
        grpc.await.map_err(|err| ServeError::Server {
            what: "gRPC",
            message: err.to_string(),
        })
    });

    let admin = listeners.admin.map(|listener| {
        tokio::spawn(crate::admin::serve_admin(
            listener,
            app.clone(),
            shutdown.clone(),
        ))
    });

    shutdown.cancelled().await;
    // Hold streams end now, so that the listeners' graceful drain does not
    // wait the whole grace period for streams that never end by
    // themselves.
    app.service.begin_shutdown();
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
    app.service.close(grace).await;
    Ok(())
}
