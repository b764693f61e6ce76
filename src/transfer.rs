//! One file's transfer as the rest of the run sees it: its live numbers while it goes
//! ([`Progress`], what the scheduler predicts with), who watches its bytes arrive
//! ([`Watcher`], the UI's bar), and how it ended ([`Outcome`], with the [`Whole`] file).
//!
//! These are the types `download` hands to `scheduler`, `pipeline` and `progress`. They live
//! apart from the download machinery so that the policy and the display depend on what a
//! transfer tells, not on how a file is fetched.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// Live numbers about one download, read by the scheduler to predict when a slot frees.
#[derive(Debug)]
pub struct Progress {
    pub started: Instant,
    done: AtomicU64,
    /// Total length, 0 while unknown.
    total: AtomicU64,
    /// Bytes already on disk when this download started (not counted in its rate).
    resumed: AtomicU64,
    /// When the file host first accepted the URL (a 200 or 206).
    accepted: OnceLock<Instant>,
}

impl Progress {
    /// The numbers of a download that starts at `started` (the caller's clock: the scheduler
    /// never reads one).
    pub fn new(started: Instant) -> Arc<Progress> {
        Arc::new(Progress {
            started,
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
            accepted: OnceLock::new(),
        })
    }

    /// The file host accepted the URL, for a request sent at `at` (only the first counts).
    pub fn accept(&self, at: Instant) {
        let _ = self.accepted.set(at);
    }

    /// A body starts at byte `at` (kept from before, so not counted in the rate) of `total`
    /// (if known).
    pub fn begin(&self, at: u64, total: Option<u64>) {
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
        self.resumed.store(at, Ordering::Relaxed);
        self.done.store(at, Ordering::Relaxed);
    }

    /// The file holds `bytes` bytes so far.
    pub fn wrote(&self, bytes: u64) {
        self.done.store(bytes, Ordering::Relaxed);
    }

    /// When the file host first accepted the URL, if it did.
    pub fn accepted(&self) -> Option<Instant> {
        self.accepted.get().copied()
    }

    /// Estimated time to completion, if the length is known and bytes are flowing.
    pub fn eta(&self, now: Instant) -> Option<Duration> {
        let total = self.total.load(Ordering::Relaxed);
        let done = self.done.load(Ordering::Relaxed);
        let fresh = done.saturating_sub(self.resumed.load(Ordering::Relaxed));
        let elapsed = now.saturating_duration_since(self.started).as_secs_f64();
        if total == 0 || fresh == 0 || elapsed <= 0.0 {
            return None;
        }
        let rate = fresh as f64 / elapsed;
        Some(Duration::from_secs_f64(
            (total.saturating_sub(done) as f64 / rate).min(1e6),
        ))
    }
}

/// Whoever wants to see a download's bytes arrive (the UI's per-file bar), without the
/// download knowing what a terminal is.
pub trait Watcher: Send + Sync {
    /// The body starts at byte `at` of `total` (if known).
    fn begin(&self, at: u64, total: Option<u64>);
    /// `n` more bytes were written.
    fn advance(&self, n: u64);
}

/// A file complete under its final name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whole {
    pub bytes: u64,
    /// Of every byte, computed as they streamed (and over the resumed prefix, read once).
    pub sha256: String,
    /// The checksums the host declared that the bytes matched (`sha256:repr-digest`).
    pub verified: Vec<String>,
    /// The checksums it declared that could not be read, so were not checked.
    pub unchecked: Vec<String>,
    /// Something the report should say about this file although it is complete.
    pub note: Option<String>,
    /// The name it was saved under, if not the one chosen (that was taken meanwhile).
    pub renamed: Option<String>,
}

/// How one download ended.
#[derive(Debug)]
pub enum Outcome {
    /// The file arrived whole (handed to its destination; once placed, durable under its
    /// name).
    Whole(Whole),
    /// The file host refused the signed URL (403): mint a new one. Bytes on disk are kept.
    Expired {
        requested_at: Instant,
    },
    Failed(String),
    /// The local disk refused the data in a way that will fail every other file too (full,
    /// read-only, over quota). The temporary file is removed.
    StorageFailed(String),
    /// Stopped by Ctrl-C; what arrived is on disk for the next run.
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_eta_before_the_length_is_known_and_fresh_bytes_flow() {
        let t0 = Instant::now();
        let p = Progress::new(t0);
        assert_eq!(p.eta(t0 + Duration::from_secs(1)), None, "nothing known");
        p.begin(500, None);
        p.wrote(900);
        assert_eq!(p.eta(t0 + Duration::from_secs(1)), None, "no length");
        let p = Progress::new(t0);
        p.begin(500, Some(1500));
        assert_eq!(p.eta(t0 + Duration::from_secs(1)), None, "only kept bytes");
        p.wrote(900);
        assert_eq!(p.eta(t0), None, "no time has passed");
    }

    #[test]
    fn the_eta_counts_the_rate_of_fresh_bytes_only() {
        let t0 = Instant::now();
        let p = Progress::new(t0);
        // 500 bytes kept, 400 fresh in 2 s (200 B/s): 600 left take 3 s.
        p.begin(500, Some(1500));
        p.wrote(900);
        assert_eq!(
            p.eta(t0 + Duration::from_secs(2)),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn only_the_first_acceptance_counts() {
        let t0 = Instant::now();
        let p = Progress::new(t0);
        assert_eq!(p.accepted(), None);
        p.accept(t0 + Duration::from_secs(1));
        p.accept(t0 + Duration::from_secs(2));
        assert_eq!(p.accepted(), Some(t0 + Duration::from_secs(1)));
    }
}
