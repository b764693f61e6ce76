//! Serving over TLS (test controls): for the tests of fetchdocs' `--ca-cert` against a
//! certificate from a test CA.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// An acceptor for the certificate chain and key given as PEM.
pub(crate) fn acceptor((chain, key): &(String, String)) -> std::io::Result<TlsAcceptor> {
    let bad = |e: &dyn std::fmt::Display| std::io::Error::other(format!("sandbox TLS: {e}"));
    let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| bad(&e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(&e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TCP connections and completes the TLS handshake; a failed handshake (a client
/// that does not trust the certificate) is dropped and the next connection accepted.
pub(crate) struct Listener {
    inner: TcpListener,
    acceptor: TlsAcceptor,
}

impl Listener {
    pub(crate) fn new(inner: TcpListener, acceptor: TlsAcceptor) -> Self {
        Listener { inner, acceptor }
    }
}

impl axum::serve::Listener for Listener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
