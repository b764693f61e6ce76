//! TLS with a private CA (a TLS-inspecting proxy's, a private deployment's): refused without
//! --ca-cert, with one clear message; trusted with it, for the API and the file host alike.

use crate::common::*;
use fetchdocs_sandbox::{Catalog, SandboxConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A test CA (PEM) and a certificate for 127.0.0.1 it signed, with its key (PEM).
fn test_ca() -> (String, (String, String)) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "fetchdocs test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), (server.pem(), key.serialize_pem()))
}

fn tls_env(files: usize) -> (Env, String) {
    let (ca, server) = test_ca();
    let mut cfg = SandboxConfig::new(Catalog::generate(files, 101));
    cfg.tls = Some(server);
    let env = Env::start(cfg, "veridox");
    assert!(env.sandbox.api_url.starts_with("https://"));
    (env, ca)
}

#[test]
fn a_private_ca_is_refused_without_ca_cert_and_trusted_with_it() {
    let (env, ca) = tls_env(6);
    // Not trusted: the run ends at once, one line, its own exit code.
    let (out, _) = env.run(&env.all_ids(), &[]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("TLS failed"), "{err}");
    assert!(!err.lines().any(|l| l.starts_with("failed: ")), "{err}");

    // Trusted through --ca-cert: the API and the file host (both https) serve every file.
    let ca_file = env.path("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let (out, report) = env.run(&env.all_ids(), &["--ca-cert", ca_file.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(summary(&report), (6, 6, 0, 0));
    env.assert_intact(&report);
}

#[test]
fn a_ca_cert_file_that_is_not_one_is_refused_before_any_request() {
    let (env, _) = tls_env(1);
    for (content, why) in [
        ("not a certificate\n", "holds no certificate"),
        ("", "holds no"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "certificate 1 of 1 is not usable as a CA certificate",
        ),
    ] {
        let bad = env.path("bad.pem");
        std::fs::write(&bad, content).unwrap();
        let (out, _) = env.run(&env.all_ids(), &["--ca-cert", bad.to_str().unwrap()]);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    }
    let (out, _) = env.run(&env.all_ids(), &["--ca-cert", "/no/such/ca.pem"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("cannot read it"), "{}", stderr(&out));
    assert_eq!(env.sandbox.stats().api_requests, 0);
}
