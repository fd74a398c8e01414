//! TLS for `lock.postgresql`: the `ssl*` parameters of the connection
//! string, and a `tokio-postgres` connector over rustls (ring provider).
//!
//! `tokio-postgres` sends the SSLRequest and decides, from its own
//! `sslmode` (`disable`, `prefer`, `require`), whether to call the
//! connector; the connector only wraps the socket in a TLS session whose
//! verification follows libpq's `sslmode`:
//!
//! * `disable`: no TLS;
//! * `prefer` and `require`: TLS (`prefer` falls back to plain text when
//!   the server refuses it); the certificate is checked against
//!   `sslrootcert` when one is given (as libpq does when a root file
//!   exists), otherwise it is not verified at all;
//! * `verify-ca`: TLS, the chain must lead to `sslrootcert`;
//! * `verify-full`: as `verify-ca`, and the certificate must name the host.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use crate::tls::NoVerification;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// libpq's `sslmode`, all five of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it (the default).
    #[default]
    Prefer,
    /// TLS or no connection.
    Require,
    /// TLS, with a chain that leads to `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host.
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> Option<TlsMode> {
        Some(match value {
            "disable" => TlsMode::Disable,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => return None,
        })
    }

    /// What `tokio-postgres` is told: whether TLS is tried and whether it
    /// is mandatory.
    pub(super) fn ssl_mode(self) -> SslMode {
        match self {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        }
    }
}

/// The TLS parameters of the connection string (paths only: the files are
/// read when the store connects).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsSettings {
    /// `sslmode`.
    pub mode: TlsMode,
    /// `sslrootcert`: a PEM bundle of trusted certificates.
    pub root_cert: Option<PathBuf>,
    /// `sslcert`: the client's certificate chain (PEM).
    pub client_cert: Option<PathBuf>,
    /// `sslkey`: the client's private key (PEM).
    pub client_key: Option<PathBuf>,
}

/// The connection string with the `ssl*` parameters taken out (so that
/// `tokio-postgres`, which knows three modes and no files, can parse the
/// rest), and the settings they made. Problems are reported without
/// quoting the string, which may hold a password.
pub(super) fn split_connection_string(raw: &str) -> Result<(String, TlsSettings), String> {
    let trimmed = raw.trim_start();
    let (rest, pairs) =
        if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
            split_url(trimmed)?
        } else {
            split_key_value(raw)?
        };
    let mut settings = TlsSettings::default();
    for (key, value) in pairs {
        match key.as_str() {
            "sslmode" => {
                settings.mode = TlsMode::parse(&value).ok_or_else(|| {
                    format!(
                        "sslmode={value:?} is not one of disable, prefer, require, verify-ca, verify-full"
                    )
                })?;
            }
            "sslrootcert" => settings.root_cert = non_empty_path("sslrootcert", value)?,
            "sslcert" => settings.client_cert = non_empty_path("sslcert", value)?,
            "sslkey" => settings.client_key = non_empty_path("sslkey", value)?,
            _ => unreachable!("only ssl parameters are taken out"),
        }
    }
    if matches!(settings.mode, TlsMode::VerifyCa | TlsMode::VerifyFull)
        && settings.root_cert.is_none()
    {
        return Err(
            "sslmode=verify-ca and verify-full need sslrootcert (the CA bundle to verify against)"
                .to_owned(),
        );
    }
    if settings.client_cert.is_some() != settings.client_key.is_some() {
        return Err("sslcert and sslkey must be given together".to_owned());
    }
    if settings.mode == TlsMode::Disable
        && (settings.root_cert.is_some() || settings.client_cert.is_some())
    {
        return Err(
            "sslmode=disable with sslrootcert, sslcert or sslkey: the files would never be used"
                .to_owned(),
        );
    }
    Ok((rest, settings))
}

fn non_empty_path(key: &str, value: String) -> Result<Option<PathBuf>, String> {
    if value.is_empty() {
        return Err(format!("{key} is empty"));
    }
    Ok(Some(PathBuf::from(value)))
}

fn is_tls_key(key: &str) -> bool {
    matches!(key, "sslmode" | "sslrootcert" | "sslcert" | "sslkey")
}

/// key=value form: `key = value`, values optionally in single quotes with
/// backslash escapes. The remaining pairs are written back quoted.
fn split_key_value(raw: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut chars = raw.chars().peekable();
    let mut rest = String::new();
    let mut taken = Vec::new();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            // Left to tokio-postgres, whose message names the problem.
            return Ok((raw.to_owned(), Vec::new()));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Ok((raw.to_owned(), Vec::new())),
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Ok((raw.to_owned(), Vec::new())),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        if is_tls_key(&key) {
            taken.push((key, value));
        } else {
            if !rest.is_empty() {
                rest.push(' ');
            }
            rest.push_str(&key);
            rest.push_str("='");
            for c in value.chars() {
                if c == '\'' || c == '\\' {
                    rest.push('\\');
                }
                rest.push(c);
            }
            rest.push('\'');
        }
    }
    Ok((rest, taken))
}

/// URL form: the `ssl*` query parameters are removed, the rest is kept as
/// written.
fn split_url(raw: &str) -> Result<(String, Vec<(String, String)>), String> {
    let Some((base, query)) = raw.split_once('?') else {
        return Ok((raw.to_owned(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for part in query.split('&') {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let key_decoded =
            percent_decode(key).ok_or("a query parameter is not valid percent-encoded UTF-8")?;
        if is_tls_key(&key_decoded) {
            let value = percent_decode(value)
                .ok_or_else(|| format!("{key_decoded} is not valid percent-encoded UTF-8"))?;
            taken.push((key_decoded, value));
        } else {
            kept.push(part);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, taken))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Build the rustls client configuration: reads `sslrootcert`, `sslcert`
/// and `sslkey`. `None` for `sslmode=disable`. Errors name the parameter
/// and path, never the contents.
pub(super) fn client_config(settings: &TlsSettings) -> Result<Option<Arc<ClientConfig>>, String> {
    if settings.mode == TlsMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match &settings.root_cert {
        // Encryption without authentication, as libpq does.
        None => Arc::new(NoVerification::new(&provider)),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let certs = read_certs("sslrootcert", path)?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "sslrootcert {}: no usable certificate in the file",
                    path.display()
                ));
            }
            let inner =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|err| format!("sslrootcert {}: {err}", path.display()))?;
            if settings.mode == TlsMode::VerifyFull {
                inner
            } else {
                Arc::new(ChainOnly { inner })
            }
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS setup: {err}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("sslcert", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|err| {
                format!(
                    "sslkey {}: cannot read a PEM private key: {}",
                    key.display(),
                    pem_error(&err)
                )
            })?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|err| format!("sslcert/sslkey: {err}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = config;
    // PostgreSQL 17 requires this protocol name for direct TLS
    // (`sslnegotiation=direct`); older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(Arc::new(config)))
}

fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|err| format!("{key} {}: {}", path.display(), pem_error(&err)))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

/// The kind of failure only: a PEM error may otherwise carry file bytes.
fn pem_error(err: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match err {
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "nothing found".to_owned(),
        _ => "not valid PEM".to_owned(),
    }
}

/// `verify-ca` (and `require`/`prefer` with `sslrootcert`): the full
/// WebPKI check except the host name. rustls checks the name after the
/// chain, so a name error means the chain was good.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The connector handed to `tokio_postgres::Config::connect`. Without a
/// client configuration (`sslmode=disable`) it is never called.
#[derive(Clone)]
pub(super) struct MakeRustls {
    config: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for MakeRustls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeRustls")
            .field("tls", &self.config.is_some())
            .finish()
    }
}

impl MakeRustls {
    pub(super) fn new(config: Option<Arc<ClientConfig>>) -> MakeRustls {
        MakeRustls { config }
    }
}

/// A connector for one host.
pub(super) struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        let config = self
            .config
            .clone()
            .ok_or_else(|| io::Error::other("TLS requested with sslmode=disable"))?;
        let name = ServerName::try_from(domain.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{domain:?} is not a valid TLS server name"),
            )
        })?;
        Ok(RustlsConnect { config, name })
    }
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move {
            let tls = connector.connect(self.name, stream).await?;
            Ok(RustlsStream(tls))
        })
    }
}

/// A TLS session to the server.
pub(super) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM runs without channel binding (tokio-postgres's default
        // `channel_binding=prefer` accepts that).
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
