//! Listeners with limits: at most `max_connections` open connections per
//! listener (new ones wait in the kernel's backlog), and optional TLS
//! (rustls) with optional client certificates.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// Where the server's certificate and key are, and whether clients must
/// present certificates signed by a given CA.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle; when set, clients must present a certificate it signed.
    pub client_ca: Option<PathBuf>,
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|err| format!("cannot read the {what} {}: {err}", path.display()))
}

impl TlsSettings {
    fn certs(&self) -> Result<Vec<CertificateDer<'static>>, String> {
        let pem = read(&self.cert, "TLS certificate")?;
        let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
        let certs = certs.map_err(|err| {
            format!(
                "{}: not a PEM certificate chain: {err}",
                self.cert.display()
            )
        })?;
        if certs.is_empty() {
            return Err(format!("{}: holds no certificate", self.cert.display()));
        }
        Ok(certs)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, String> {
        let pem = read(&self.key, "TLS key")?;
        PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|err| format!("{}: not a PEM private key: {err}", self.key.display()))
    }

    /// The rustls configuration for the HTTP listener (h2 and HTTP/1.1).
    pub fn rustls(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let pem = read(ca, "client CA bundle")?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|err| format!("{}: {err}", ca.display()))?;
                    roots
                        .add(cert)
                        .map_err(|err| format!("{}: {err}", ca.display()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|err| format!("{}: {err}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(self.certs()?, self.key()?)
            .map_err(|err| format!("the TLS certificate and key do not fit together: {err}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The same settings for the gRPC listener.
    pub fn tonic(&self) -> Result<tonic::transport::ServerTlsConfig, String> {
        // Parse once here so that problems are reported with file names.
        self.certs()?;
        self.key()?;
        let identity = tonic::transport::Identity::from_pem(
            read(&self.cert, "TLS certificate")?,
            read(&self.key, "TLS key")?,
        );
        let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(
                ca,
                "client CA bundle",
            )?));
        }
        Ok(config)
    }
}

/// A TCP connection that holds its place under the connection limit until
/// it closes.
#[derive(Debug)]
pub struct Limited {
    io: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Limited {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Accept connections, at most `limit` open at once (0: no limit).
pub async fn accept_limited(
    listener: &TcpListener,
    limit: &Option<Arc<Semaphore>>,
) -> io::Result<(Limited, SocketAddr)> {
    let permit = match limit {
        Some(semaphore) => Some(
            semaphore
                .clone()
                .acquire_owned()
                .await
                .map_err(io::Error::other)?,
        ),
        None => None,
    };
    let (io, addr) = listener.accept().await?;
    // Lock calls are small request/response pairs: never wait to coalesce.
    let _ = io.set_nodelay(true);
    Ok((
        Limited {
            io,
            _permit: permit,
        },
        addr,
    ))
}

/// The connection limit as a semaphore (`None` when unlimited).
pub fn connection_limit(max: usize) -> Option<Arc<Semaphore>> {
    (max > 0).then(|| Arc::new(Semaphore::new(max)))
}

/// The incoming stream tonic serves: limited TCP connections.
pub fn tonic_incoming(
    listener: TcpListener,
    limit: Option<Arc<Semaphore>>,
) -> impl futures_util::Stream<Item = io::Result<Limited>> + Send + 'static {
    futures_util::stream::unfold((listener, limit), |(listener, limit)| async move {
        loop {
            match accept_limited(&listener, &limit).await {
                Ok((conn, _)) => return Some((Ok(conn), (listener, limit))),
                // A failed accept (e.g. out of file descriptors) must not end
                // the server: back off briefly and go on.
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// A connection of the HTTP listener: plain or TLS.
#[derive(Debug)]
pub enum HttpConn {
    /// Plain TCP.
    Plain(Limited),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::server::TlsStream<Limited>>),
}

impl AsyncRead for HttpConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpConn::Plain(io) => Pin::new(io).poll_read(cx, buf),
            HttpConn::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HttpConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            HttpConn::Plain(io) => Pin::new(io).poll_write(cx, buf),
            HttpConn::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpConn::Plain(io) => Pin::new(io).poll_flush(cx),
            HttpConn::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpConn::Plain(io) => Pin::new(io).poll_shutdown(cx),
            HttpConn::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The HTTP listener as axum sees it. TLS handshakes run in their own
/// tasks, so a slow client never holds up the accepting of others.
#[derive(Debug)]
pub struct HttpListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(HttpConn, SocketAddr)>,
}

impl HttpListener {
    /// Start accepting on `listener`.
    pub fn new(
        listener: TcpListener,
        limit: Option<Arc<Semaphore>>,
        tls: Option<Arc<rustls::ServerConfig>>,
        stop: CancellationToken,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(64);
        let acceptor = tls.map(TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = accept_limited(&listener, &limit) => accepted,
                };
                let (conn, addr) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                match &acceptor {
                    None => {
                        if sender.send((HttpConn::Plain(conn), addr)).await.is_err() {
                            return;
                        }
                    }
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        let sender = sender.clone();
                        tokio::spawn(async move {
                            match tokio::time::timeout(
                                Duration::from_secs(10),
                                acceptor.accept(conn),
                            )
                            .await
                            {
                                Ok(Ok(tls)) => {
                                    let _ = sender.send((HttpConn::Tls(Box::new(tls)), addr)).await;
                                }
                                Ok(Err(err)) => {
                                    tracing::debug!(%addr, error = %err, "TLS handshake failed")
                                }
                                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                            }
                        });
                    }
                }
            }
        });
        Ok(HttpListener { local, ready })
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = HttpConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (shutdown): never yield again; axum's
            // graceful shutdown ends the serve loop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
