//! One TLS set-up for every HTTP client of a run.
//!
//! reqwest, left to itself, builds the platform's certificate verifier (on Linux: reads and
//! parses the system's root certificates) once per client: with an API client and a file-host
//! client per lane (up to 8), as many readings before the first request. Here every client
//! shares one [`rustls::ClientConfig`] whose certificate check is the platform's own
//! ([`rustls_platform_verifier::Verifier`], what reqwest would have used), built once.
//!
//! Measured (`cargo run --release --example tls_cost`, 2026-12-04, Debian, 146 system roots):
//! building the platform verifier takes 2.6 ms (median of 41; 2.5–3.4 ms). Until issue 23 it
//! was built lazily, on the first certificate to check, behind a verifier of fetchdocs' own:
//! that saved those 2.6 ms only for a run whose hosts are all plain http (never a vendor's), so
//! the wrapper went and the verifier is built here, at start. Sharing it stays: it saves 2.6 ms
//! for every client past the first, on every run.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls_platform_verifier::Verifier;

/// The TLS configuration every client of a run is built with: the system's roots plus `extra`
/// (`--ca-cert`); TLS 1.2 and 1.3; HTTP/2 or 1.1 offered, as reqwest offers them.
///
/// A machine with no root certificates at all (a bare container) still runs against plain
/// http hosts (the sandbox) and against hosts `extra` vouches for: its https connections to
/// anything else fail at the handshake, as they would have with reqwest's own set-up.
pub fn client_config(extra: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let mut config = match Verifier::new_with_extra_roots(extra.iter().cloned(), provider) {
        Ok(verifier) => builder
            // Not a weaker check: the platform's own verifier (rustls offers no other way to
            // give it extra roots).
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
        Err(e) => {
            log::debug!("no usable system root certificates ({e}); trusting --ca-cert only");
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(extra.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_and_http1_are_offered_as_reqwest_offers_them() {
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        for extra in [vec![], vec![ca.cert.der().clone()]] {
            let config = client_config(&extra).unwrap();
            assert_eq!(
                config.alpn_protocols,
                [b"h2".to_vec(), b"http/1.1".to_vec()]
            );
        }
    }
}
