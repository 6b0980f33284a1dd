//! `https://` daemons: the client's TLS settings (rustls, TLS 1.2 and 1.3).
//! The server's certificate is checked against the system's roots, or against
//! a CA file the caller names (a private CA, as `--tls-cert` daemons usually
//! have); the name checked is the URL's host (a DNS name or an IP address).

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::ClientError;

/// Which certificates a TLS endpoint trusts, and the name it checks.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("name", &self.name).finish()
    }
}

impl Tls {
    /// Trust the CA certificates in PEM file `ca`, or the system's roots when
    /// `None`; check the certificate is for `host`.
    pub fn new(host: &str, ca: Option<&Path>) -> Result<Tls, ClientError> {
        let roots = match ca {
            Some(path) => ca_file(path)?,
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::BadUrl(format!("TLS set-up failed: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_string()).map_err(|_| {
            ClientError::BadUrl(format!(
                "`{host}` is neither a DNS name nor an IP address a certificate can name"
            ))
        })?;
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    /// Shake hands over `tcp`.
    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
        endpoint: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
        self.connector
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|source| ClientError::Tls {
                endpoint: endpoint.to_string(),
                source,
            })
    }
}

fn ca_file(path: &Path) -> Result<RootCertStore, ClientError> {
    let io = |source| ClientError::Io {
        what: format!("cannot read the CA file {}", path.display()),
        source,
    };
    let pem = std::fs::read(path).map_err(io)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            ClientError::BadUrl(format!(
                "the CA file {} is not PEM certificates: {e}",
                path.display()
            ))
        })?;
        roots.add(cert).map_err(|e| {
            ClientError::BadUrl(format!(
                "the CA file {} holds a certificate rustls refuses: {e}",
                path.display()
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(ClientError::BadUrl(format!(
            "the CA file {} holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)",
            path.display()
        )));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, ClientError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(ClientError::BadUrl(
            "no system CA certificates were found (install ca-certificates) and no CA file was named: set ZYGOTE_CA to the daemon's CA (PEM)".into(),
        ));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ca.pem");
        std::fs::write(&p, "not a certificate\n").unwrap();
        let e = Tls::new("localhost", Some(&p)).unwrap_err().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        let e = Tls::new("localhost", Some(&d.path().join("absent.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absent.pem"), "{e}");
    }

    #[test]
    fn names_are_dns_names_or_addresses() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ca.pem");
        std::fs::write(&p, ck.cert.pem()).unwrap();
        assert!(Tls::new("localhost", Some(&p)).is_ok());
        assert!(Tls::new("127.0.0.1", Some(&p)).is_ok());
        assert!(Tls::new("[::1]", Some(&p)).is_ok());
        assert!(Tls::new("bad host!", Some(&p)).is_err());
    }
}
