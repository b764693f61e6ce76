//! What one TLS set-up shared by a run's clients (`src/tls.rs`) saves: the cost of building the
//! platform's verifier (on Linux: reading and parsing the system's root certificates), paid
//! once a run instead of once for each of its clients.
//! `cargo run --release --example tls_cost`
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut each: Vec<Duration> = (0..41)
        .map(|_| {
            let t = Instant::now();
            let v = rustls_platform_verifier::Verifier::new_with_extra_roots([], provider.clone());
            let took = t.elapsed();
            assert!(v.is_ok(), "no system roots here");
            took
        })
        .collect();
    each.sort();
    println!(
        "building the platform verifier: median {:?}, min {:?}, max {:?} (41 builds)",
        each[20], each[0], each[40]
    );
}
