//! Veridox answers: never a panic; every requested ID ends in exactly one list, and nothing
//! unrequested or non-http gets through.
#![no_main]

use fetchdocs::fuzzing::decode_veridox;
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

fuzz_target!(|data: &[u8]| {
    let requested: Vec<Uuid> = (1..=3u128).map(Uuid::from_u128).collect();
    let now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_790_000_000);
    if let Ok(out) = decode_veridox(&requested, data, now, tokio::time::Instant::now()) {
        let mut all: Vec<Uuid> = out.files.iter().map(|f| f.id).collect();
        all.extend(out.errors.iter().map(|e| e.0));
        all.extend(out.missing.iter().copied());
        all.sort();
        assert_eq!(all, requested, "each requested ID exactly once");
        for f in &out.files {
            assert!(matches!(f.url.scheme(), "http" | "https"));
        }
    }
});
