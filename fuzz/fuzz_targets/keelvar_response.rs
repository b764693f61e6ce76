//! Keelvar answers: job objects and completed details never panic; job ids that could leave
//! `/api/jobs/` are refused; every requested ID ends in exactly one list.
#![no_main]

use fetchdocs::fuzzing::{JobState, MintOutcome, decode_completed, decode_job};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

/// Every requested ID in exactly one of the outcome's lists.
fn check(requested: &[Uuid], out: Result<MintOutcome, String>) {
    if let Ok(out) = out {
        let mut all: Vec<Uuid> = out.files.iter().map(|f| f.id).collect();
        all.extend(out.errors.iter().map(|e| e.0));
        all.extend(out.missing.iter().copied());
        all.sort();
        assert_eq!(all, requested, "each requested ID exactly once");
    }
}

/// How long Keelvar's URLs live after their job completes.
const LIFE: std::time::Duration = std::time::Duration::from_secs(60);

fuzz_target!(|data: &[u8]| {
    let requested: Vec<Uuid> = (1..=3u128).map(Uuid::from_u128).collect();
    let now = tokio::time::Instant::now();
    // As production reads a poll: the job, then a completed job's detail.
    if let Ok(job) = decode_job(data) {
        if let Some(id) = &job.id {
            assert!(!id.contains('/') && !id.contains('?') && !id.contains('#') && id != "..");
        }
        if job.state == JobState::Completed {
            check(&requested, decode_completed(&requested, job.detail, now, now + LIFE));
        }
    }
    // Any JSON value as a detail, to reach the detail decoder directly.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        check(&requested, decode_completed(&requested, Some(value), now, now + LIFE));
    }
});
