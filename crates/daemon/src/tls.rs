//! TLS for the TCP listener (rustls with the `ring` provider, HTTP/1.1 only).
//!
//! Handshakes run on their own tasks so a slow or silent client never holds up
//! the others; a client that speaks plain HTTP to the TLS port gets a plain
//! `400` naming the fix instead of TLS garbage, and the daemon keeps serving.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

/// How long a client may take to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; more wait in the kernel's accept queue.
const MAX_HANDSHAKES: usize = 256;
/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// A certificate or key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unusable.
    #[error("TLS certificate {path}: {why}: pass --tls-cert with a PEM file holding the certificate chain (server certificate first), e.g. from `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out cert.pem -subj /CN=zygote`")]
    Cert {
        /// The path.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The key file is unusable.
    #[error("TLS key {path}: {why}: pass --tls-key with the PEM private key (PKCS#8, PKCS#1 or SEC1) of the certificate")]
    Key {
        /// The path.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the pair.
    #[error("TLS certificate {cert} and key {key} cannot be used together: {why}: pass the key that belongs to the certificate")]
    Pair {
        /// Certificate path.
        cert: String,
        /// Key path.
        key: String,
        /// rustls's reason.
        why: String,
    },
}

/// Build the server configuration from PEM files.
pub(crate) fn server_config(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cp = cert.display().to_string();
    let kp = key.display().to_string();
    let cert_bytes = std::fs::read(cert).map_err(|e| TlsError::Cert {
        path: cp.clone(),
        why: format!("cannot read it ({e})"),
    })?;
    let chain = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert {
            path: cp.clone(),
            why: format!("not valid PEM ({e})"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Cert {
            path: cp,
            why: "it holds no `BEGIN CERTIFICATE` block".into(),
        });
    }
    let key_bytes = std::fs::read(key).map_err(|e| TlsError::Key {
        path: kp.clone(),
        why: format!("cannot read it ({e})"),
    })?;
    let private = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::Key {
        path: kp.clone(),
        why: format!("no private key found ({e})"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, private))
        .map_err(|e| TlsError::Pair {
            cert: cp,
            key: kp,
            why: e.to_string(),
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A TCP listener whose connections come out TLS-terminated.
pub(crate) struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(tcp: TcpListener, cfg: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(cfg);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        debug!(error = %e, "TCP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&acceptor, tcp)).await {
                        Ok(Ok(Some(s))) => {
                            let _ = tx.send((s, peer)).await;
                        }
                        Ok(Ok(None)) => {
                            info!(%peer, "plain HTTP on the TLS port: answered 400 and closed")
                        }
                        Ok(Err(e)) => info!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => info!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The handshake; `None` when the client spoke plain HTTP (answered and closed).
async fn handshake(
    acceptor: &TlsAcceptor,
    mut tcp: TcpStream,
) -> std::io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await?;
    if n == 1 && first[0] != TLS_HANDSHAKE && first[0].is_ascii_alphabetic() {
        answer_plain_http(&mut tcp).await?;
        return Ok(None);
    }
    acceptor.accept(tcp).await.map(Some)
}

/// Answer a plain HTTP request with a 400 naming https. The request head is
/// read first and the rest drained after, so closing never resets the
/// connection under the answer (unread data makes the kernel send RST).
async fn answer_plain_http(tcp: &mut TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read_head).await;
    let body = "{\"error\":\"this port serves HTTPS (TLS): use an https:// URL\"}";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(answer.as_bytes()).await?;
    tcp.shutdown().await?;
    let drain = async { while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    Ok(())
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task only ends when the listener is dropped.
            None => futures::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_named() {
        let d = std::env::temp_dir().join(format!("zygote-tls-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let missing = d.join("missing.pem");
        let e = server_config(&missing, &missing).unwrap_err().to_string();
        assert!(
            e.contains("missing.pem") && e.contains("cannot read") && e.contains("--tls-cert"),
            "{e}"
        );
        let empty = d.join("empty.pem");
        std::fs::write(&empty, "not pem at all\n").unwrap();
        let e = server_config(&empty, &empty).unwrap_err().to_string();
        assert!(e.contains("no `BEGIN CERTIFICATE`"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
