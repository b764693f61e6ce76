//! One TLS set-up for every HTTP client of a run.
//!
//! reqwest, left to itself, reads the system's root certificates once per client as the client
//! is built: with an API client and a file-host client per lane, three readings of
//! `/etc/ssl/certs` (each a few milliseconds) before the first request could go out, and all of
//! it wasted when every host speaks plain http (a sandbox, a private deployment). Here every
//! client shares one [`rustls::ClientConfig`] whose certificate check is the platform's own
//! ([`rustls_platform_verifier::Verifier`], what reqwest would have used), built the first time
//! a server's certificate needs checking, and then kept.
//!
//! Measured (`cargo run --release --example tls_cost`, 2026-12-04, Debian, 146 system roots):
//! building the platform verifier takes 2.6 ms (median of 41; 2.5–3.4 ms). That is all the
//! lazy check saves, and only for a run whose hosts are all plain http; a run that meets https
//! pays it at its first handshake instead. Beside it: such a run also works on a machine with
//! no root certificates at all, where building the verifier up front fails.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_platform_verifier::Verifier;

/// The TLS configuration every client of a run is built with: the system's roots plus `extra`
/// (`--ca-cert`), read when first needed; TLS 1.2 and 1.3; HTTP/2 or 1.1 offered, as reqwest
/// offers them.
pub fn client_config(extra: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = LazyRoots {
        extra: extra.to_vec(),
        provider: provider.clone(),
        verifier: OnceLock::new(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        // Not a weaker check: the platform's verifier, only built later (see `LazyRoots`).
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(roots))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The platform's certificate verifier, made on the first certificate to check. Should the
/// system have no root certificates at all (and no `--ca-cert` was given), every https
/// connection fails with the platform verifier's own error, as it would have at start-up.
#[derive(Debug)]
struct LazyRoots {
    extra: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Result<Verifier, rustls::Error>>,
}

impl LazyRoots {
    fn verifier(&self) -> Result<&Verifier, rustls::Error> {
        self.verifier
            .get_or_init(|| {
                Verifier::new_with_extra_roots(self.extra.iter().cloned(), self.provider.clone())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for LazyRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier()?.verify_tls13_signature(message, cert, dss)
    }

    /// Offered in the first message of every handshake, before any certificate: the
    /// provider's schemes, which is what the platform verifier answers too.
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_read_until_a_certificate_is_checked() {
        let config = client_config(&[]).unwrap();
        let roots = LazyRoots {
            extra: Vec::new(),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            verifier: OnceLock::new(),
        };
        assert!(roots.verifier.get().is_none());
        // The same schemes as the platform verifier would offer, without building it.
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let platform =
            Verifier::new_with_extra_roots([ca.cert.der().clone()], roots.provider.clone())
                .unwrap();
        assert_eq!(
            roots.supported_verify_schemes(),
            platform.supported_verify_schemes()
        );
        assert!(roots.verifier.get().is_none());
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
