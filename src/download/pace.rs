//! How fast the disk and the network may go: where a file's last write runs ([`DiskPace`]),
//! and the bandwidth cap all downloads share ([`RateCap`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How long a write to the disk (a buffer of a large file, or the whole of a small one, with
/// the file's creation) has been taking, and so where it runs: on the download's own thread
/// while the disk answers at once (the page cache of a healthy disk, tmpfs), where a trip to
/// the blocking pool and back would cost more than the work; on the blocking pool once it is
/// slow (a disk under write-back pressure, a network file system), where several proceed at
/// once and no other download waits on them. (Lane 0 is the scheduler's thread: an inline
/// write holds the scheduler that long, which the threshold keeps to a couple of hundred
/// microseconds.) Syncs never run here: they are paid together, by the sync stage
/// ([`super::durable`]).
///
/// The average is recent (each step weighs an eighth), so one slow sync moves the next steps
/// off the thread at once, and a fast disk brings them back within a few dozen files. It
/// starts slow: the first files go to the pool until the disk has shown its pace.
#[derive(Debug)]
pub struct DiskPace {
    /// Average microseconds per step.
    average_us: AtomicU64,
}

/// Steps faster than this on average run on the download's thread.
const INLINE_BELOW_US: u64 = 200;

impl Default for DiskPace {
    fn default() -> Self {
        DiskPace {
            average_us: AtomicU64::new(4 * INLINE_BELOW_US),
        }
    }
}

impl DiskPace {
    /// Whether the next step runs on the download's own thread.
    pub fn inline(&self) -> bool {
        self.average_us.load(Ordering::Relaxed) < INLINE_BELOW_US
    }

    /// Run `step` here, timed: its time goes into the average.
    pub fn time<T>(&self, step: impl FnOnce() -> T) -> T {
        let start = std::time::Instant::now();
        let done = step();
        self.observe(start.elapsed());
        done
    }

    /// Run the write `step` where the disk's pace says (on this thread, or the blocking
    /// pool), timed.
    pub async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        step: impl FnOnce() -> T + Send + 'static,
    ) -> std::io::Result<T> {
        if self.inline() {
            return Ok(self.time(step));
        }
        let pace = self.clone();
        tokio::task::spawn_blocking(move || pace.time(step))
            .await
            .map_err(std::io::Error::other)
    }

    /// A step took `took`. (Steps finishing at once on two threads may each update from the
    /// same average: one of them is lost, which an average of recent steps can afford.)
    pub fn observe(&self, took: Duration) {
        let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX / 2);
        let avg = self.average_us.load(Ordering::Relaxed);
        let next = (avg.saturating_mul(7) / 8).saturating_add(took / 8);
        self.average_us.store(next, Ordering::Relaxed);
    }
}

/// A total bandwidth cap shared by every download: each chunk reserves its share of time at
/// the capped rate before it is written (so the socket is read no faster than that either).
#[derive(Debug)]
pub struct RateCap {
    bytes_per_sec: f64,
    /// When the bytes reserved so far will have been "sent" at the capped rate.
    next: std::sync::Mutex<Instant>,
}

/// How far ahead of the capped rate a burst may run.
const RATE_BURST: Duration = Duration::from_millis(100);

impl RateCap {
    pub fn new(bytes_per_sec: u64) -> Arc<Self> {
        Arc::new(RateCap {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            next: std::sync::Mutex::new(Instant::now()),
        })
    }

    /// Wait until `n` more bytes fit under the cap.
    pub async fn take(&self, n: usize) {
        let until = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let start = (*next).max(now.checked_sub(RATE_BURST).unwrap_or(now));
            *next = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec);
            next.checked_sub(RATE_BURST).unwrap_or(*next)
        };
        tokio::time::sleep_until(until).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_disk_writes_inline_and_one_slow_write_sends_writes_back_to_the_pool() {
        let pace = DiskPace::default();
        // Until the disk has shown its pace: the pool.
        assert!(!pace.inline());
        let fast = Duration::from_micros(30);
        let mut steps = 0;
        while !pace.inline() {
            pace.observe(fast);
            steps += 1;
            assert!(steps < 40, "a fast disk never earned inline steps");
        }
        // One 20 ms write: off the thread at once.
        pace.observe(Duration::from_millis(20));
        assert!(!pace.inline());
        // A disk that stays slow stays on the pool.
        for _ in 0..100 {
            pace.observe(Duration::from_micros(900));
        }
        assert!(!pace.inline());
        // And back, once fast again.
        for _ in 0..60 {
            pace.observe(fast);
        }
        assert!(pace.inline());
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_cap_spaces_chunks_at_the_capped_rate() {
        let cap = RateCap::new(100_000);
        let start = Instant::now();
        for _ in 0..10 {
            cap.take(50_000).await;
        }
        // 500 kB at 100 kB/s: 5 s, less the burst allowance.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(4800), "{took:?}");
        assert!(took <= Duration::from_millis(5000), "{took:?}");
    }
}
