//! A server inside the calling process, on the in-memory store: for tests,
//! documentation examples and programs that want a lock server without a
//! separate process.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use leasehold_core::manifest::Component;
use leasehold_core::metadata::Metadata;
use leasehold_stores::StoreContext;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::error::ServeError;
use crate::service::{BuildError, Limits, LockService};
use crate::{AppState, ListenConfig, Listeners};

/// Why an embedded server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The in-memory store did not open.
    #[error("the store did not open: {0}")]
    Build(#[from] BuildError),
    /// The listeners could not be bound.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// A running embedded server. Dropping it stops the server.
#[derive(Debug)]
pub struct EmbeddedServer {
    /// The HTTP listener's address.
    pub http: SocketAddr,
    /// The gRPC listener's address.
    pub grpc: SocketAddr,
    stop: CancellationToken,
}

impl EmbeddedServer {
    /// Serve an in-memory store named `lockstore` on free loopback ports.
    pub async fn start() -> Result<Self, StartError> {
        Self::start_with(Auth::default(), Limits::default()).await
    }

    /// The same, with tokens and limits of the caller's choosing.
    pub async fn start_with(auth: Auth, limits: Limits) -> Result<Self, StartError> {
        let component = Component {
            name: "lockstore".to_owned(),
            type_name: "lock.in-memory".to_owned(),
            version: "v1".to_owned(),
            init_timeout: None,
            ignore_errors: false,
            metadata: Metadata::from_pairs([("restartGuard", "false")]),
            source: "<embedded>".into(),
        };
        let cx = StoreContext {
            app_id: String::new(),
            data_dir: std::env::temp_dir(),
        };
        let service = LockService::build("", &[component], &cx, limits)
            .await?
            .with_admin_token(auth.admin);
        let listen = ListenConfig {
            address: Ipv4Addr::LOCALHOST.into(),
            http_port: 0,
            grpc_port: 0,
            metrics_port: None,
            max_connections: 0,
            max_request_rate: 0,
            tls: None,
            grace: Duration::from_secs(1),
        };
        let listeners = Listeners::bind(&listen).await?;
        let (http, grpc) = (listeners.http_addr(), listeners.grpc_addr());
        let app = AppState::new(Arc::new(service), auth.api, 4 << 20, 0);
        let stop = CancellationToken::new();
        tokio::spawn(crate::serve(listeners, app, listen.grace, stop.clone()));
        Ok(EmbeddedServer { http, grpc, stop })
    }

    /// `http://127.0.0.1:port` of the gRPC listener, for clients.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
