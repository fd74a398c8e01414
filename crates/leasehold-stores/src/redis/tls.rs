//! The rustls client configuration of a `lock.redis` store: trust from
//! `caCert` or the system's roots, or none with `insecureSkipTLSVerify`;
//! a client certificate from `clientCert` and `clientKey`.

use std::sync::Arc;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

use super::config::Tls;
use crate::tls::NoVerification;

/// The TLS side of every connection of one store.
#[derive(Clone)]
pub(crate) struct Connector(pub(crate) TlsConnector);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

/// The connector for every TLS connection of one store. Errors name the
/// field, never quote its text (a key must not reach a log).
pub(crate) fn connector(tls: &Tls) -> Result<Connector, String> {
    let provider = Arc::new(crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify {
        Arc::new(NoVerification::new(&provider))
    } else {
        let roots = match &tls.ca_cert {
            Some(pem) => roots_from_pem(pem)?,
            None => system_roots()?,
        };
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|err| format!("caCert: {err}"))?
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("tls setup: {err}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match &tls.identity {
        Some(identity) => {
            let chain = CertificateDer::pem_slice_iter(identity.cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| "clientCert: not a readable PEM certificate chain".to_owned())?;
            let key = PrivateKeyDer::from_pem_slice(identity.key.expose().as_bytes())
                .map_err(|_| "clientKey: not a readable PEM private key".to_owned())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| format!("clientCert/clientKey: {err}"))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Connector(TlsConnector::from(Arc::new(config))))
}

/// The certificates of `caCert`, at least one of them usable as a root.
pub(crate) fn roots_from_pem(pem: &str) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "caCert: not a readable PEM certificate bundle".to_owned())?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err("caCert: no certificate in it can be a trust root".to_owned());
    }
    Ok(roots)
}

/// The operating system's trusted roots.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(
            "no trusted root certificates on this system; set caCert to the ca that signed \
             the server's certificate"
                .to_owned(),
        );
    }
    Ok(roots)
}
