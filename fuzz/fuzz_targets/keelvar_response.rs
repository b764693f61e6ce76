//! Keelvar answers: job objects and completed details never panic; job ids that could leave
//! `/api/jobs/` are refused; every requested ID ends in exactly one list.
#![no_main]

use fetchdocs::progress::Ui;
use fetchdocs::provider::keelvar::{decode_completed, decode_job};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

fuzz_target!(|data: &[u8]| {
    if let Ok((Some(id), _state)) = decode_job(data) {
        assert!(!id.contains('/') && !id.contains('?') && !id.contains('#') && id != "..");
    }
    let requested: Vec<Uuid> = (1..=3u128).map(Uuid::from_u128).collect();
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(out) =
            decode_completed(&requested, value, tokio::time::Instant::now(), &Ui::quiet())
    {
        let mut all: Vec<Uuid> = out.files.iter().map(|f| f.id).collect();
        all.extend(out.errors.iter().map(|e| e.0));
        all.extend(out.missing.iter().copied());
        all.sort();
        assert_eq!(all, requested, "each requested ID exactly once");
    }
});
