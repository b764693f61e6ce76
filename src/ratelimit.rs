//! Client-side pacing for API requests.
//!
//! A sliding-window log per limit ("at most N requests in any period P"), plus a "not before"
//! instant that a 429's `Retry-After` or an exhausted `RateLimit-Remaining` pushes forward, so
//! that one throttle pauses every task that talks to that API (the cargo-binstall model).
//!
//! Why not `governor`: its GCRA allows a burst of N and then N per period, which can put N+1
//! requests inside one window of a server that counts a sliding minute (the 21st request three
//! seconds after a burst of 20 gets a 429). The log below is exactly "N in any window", needs N
//! timestamps of memory, and takes the server's own signals; that is the product itself.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
struct Window {
    limit: usize,
    period: Duration,
    /// When requests were sent, and how many at that moment. Under a large limit, requests
    /// less than [`Window::grain`] apart share one entry stamped with the latest of them (so
    /// they leave the window no sooner than they would one by one): memory stays at most
    /// [`GRAINS`] entries whatever the limit.
    sent: VecDeque<(Instant, usize)>,
    /// Requests in `sent`.
    count: usize,
}

/// Most entries one window keeps.
const GRAINS: u32 = 1000;

impl Window {
    /// Requests closer together than this share an entry (zero: each has its own).
    fn grain(&self) -> Duration {
        if self.limit as u32 > GRAINS {
            self.period / GRAINS
        } else {
            Duration::ZERO
        }
    }

    fn push(&mut self, now: Instant) {
        let grain = self.grain();
        self.count += 1;
        if let Some((at, n)) = self.sent.back_mut()
            && !grain.is_zero()
            && now.saturating_duration_since(*at) < grain
        {
            *at = now;
            *n += 1;
            return;
        }
        self.sent.push_back((now, 1));
    }

    /// Forget what has left the window; how long until one more request fits.
    fn wait(&mut self, now: Instant) -> Duration {
        while let Some(&(first, n)) = self.sent.front() {
            if first + self.period <= now {
                self.sent.pop_front();
                self.count -= n;
            } else {
                break;
            }
        }
        if self.count < self.limit {
            return Duration::ZERO;
        }
        // The entry whose leaving brings the count below the limit.
        let mut to_free = self.count + 1 - self.limit;
        for &(at, n) in &self.sent {
            if n >= to_free {
                return (at + self.period).saturating_duration_since(now);
            }
            to_free -= n;
        }
        Duration::ZERO
    }
}

#[derive(Debug)]
struct State {
    windows: Vec<Window>,
    not_before: Instant,
    /// Requests sent whose answers have not arrived.
    in_flight: usize,
    /// What the server last said is left (`RateLimit-Remaining`, less the requests that were
    /// still in flight then), until its `RateLimit-Reset`.
    budget: Option<(u64, Instant)>,
}

/// Paces requests to an API host. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
}

impl RateLimiter {
    /// A limiter allowing `limit` requests in any `period`, for each `(limit, period)` given.
    /// Each period is stretched by 2% so that network latency cannot put N+1 requests into one
    /// server-side window.
    pub fn new(limits: &[(u32, Duration)]) -> Self {
        let windows = limits
            .iter()
            .map(|&(limit, period)| Window {
                limit: limit.max(1) as usize,
                period: period + period / 50,
                sent: VecDeque::with_capacity(limit.min(GRAINS) as usize),
                count: 0,
            })
            .collect();
        RateLimiter {
            state: Mutex::new(State {
                windows,
                not_before: Instant::now(),
                in_flight: 0,
                budget: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another task panicked mid-update; the data is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long until a request could be sent without breaking any limit.
    pub fn delay(&self) -> Duration {
        let now = Instant::now();
        let mut state = self.lock();
        wait_locked(&mut state, now)
    }

    /// Wait until a request may be sent, and count it as sent. Hand the answer's rate-limit
    /// headers to the permit ([`Permit::observe`]); dropping it says "no answer".
    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let wait = {
                let now = Instant::now();
                let mut state = self.lock();
                let wait = wait_locked(&mut state, now);
                if wait.is_zero() {
                    for w in &mut state.windows {
                        w.push(now);
                    }
                    if let Some((left, _)) = &mut state.budget {
                        *left = left.saturating_sub(1);
                    }
                    state.in_flight += 1;
                    return Permit {
                        limiter: self,
                        done: false,
                    };
                }
                wait
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Send nothing before `until` (a 429's `Retry-After`, or `RateLimit-Reset` with nothing remaining).
    pub fn pause_until(&self, until: Instant) {
        let mut state = self.lock();
        if until > state.not_before {
            state.not_before = until;
        }
    }

    fn finish(&self, remaining: Option<u64>, reset: Option<Duration>) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if let (Some(remaining), Some(reset)) = (remaining, reset) {
            // Requests still in flight were sent after the server counted this one (or at the
            // same time): they will use up what it says is left.
            let left = remaining.saturating_sub(state.in_flight as u64);
            let now = Instant::now();
            let until = now + reset;
            // Answers can arrive out of order: within a window, an older answer must never
            // raise what is believed left. Only a passed reset clears the budget.
            state.budget = match state.budget {
                Some((old_left, old_until)) if old_until > now => {
                    Some((old_left.min(left), old_until.max(until)))
                }
                _ => Some((left, until)),
            };
        }
    }
}

/// One request's place in the rate limit.
#[must_use = "report the answer's headers with observe(), or drop for no answer"]
pub struct Permit<'a> {
    limiter: &'a RateLimiter,
    done: bool,
}

impl Permit<'_> {
    /// The answer arrived: take its `RateLimit-Remaining` / `RateLimit-Reset` into account.
    pub fn observe(mut self, remaining: Option<u64>, reset: Option<Duration>) {
        self.done = true;
        self.limiter.finish(remaining, reset);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.limiter.finish(None, None);
        }
    }
}

fn wait_locked(state: &mut State, now: Instant) -> Duration {
    let mut wait = state.not_before.saturating_duration_since(now);
    match state.budget {
        Some((_, reset_at)) if reset_at <= now => state.budget = None,
        Some((0, reset_at)) => wait = wait.max(reset_at - now),
        _ => {}
    }
    for w in &mut state.windows {
        wait = wait.max(w.wait(now));
    }
    wait
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_minute(n: u32) -> RateLimiter {
        RateLimiter::new(&[(n, Duration::from_secs(60))])
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_limit_is_kept_in_bounded_memory_and_never_exceeded() {
        let limiter = per_minute(200_000);
        let start = Instant::now();
        for i in 0..200_000u32 {
            let _ = limiter.acquire().await;
            if i % 1000 == 0 {
                // Spread over the first 30 s.
                tokio::time::advance(Duration::from_millis(150)).await;
            }
        }
        let entries = limiter.lock().windows[0].sent.len();
        assert!(entries <= GRAINS as usize + 1, "{entries} entries");
        // The window is full: the next request waits until the earliest requests leave it, a
        // minute (and the 2% margin) after they were sent, never sooner.
        let _ = limiter.acquire().await;
        let waited = Instant::now() - start;
        assert!(waited >= Duration::from_millis(61_200), "{waited:?}");
        assert!(waited <= Duration::from_millis(61_400), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_n_in_any_window() {
        let limiter = per_minute(20);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..65 {
            let _ = limiter.acquire().await;
            times.push(Instant::now() - start);
        }
        // A burst of 20, then each next one only when the window has room.
        assert!(times[19] < Duration::from_millis(1));
        for i in 20..times.len() {
            let gap = times[i] - times[i - 20];
            assert!(gap >= Duration::from_secs(60), "request {i}: {gap:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pause_until_holds_everyone_back() {
        let limiter = per_minute(100);
        let start = Instant::now();
        limiter.pause_until(start + Duration::from_secs(7));
        let _ = limiter.acquire().await;
        assert!(Instant::now() - start >= Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn exhausted_remaining_waits_for_reset() {
        let limiter = per_minute(100);
        let start = Instant::now();
        limiter
            .acquire()
            .await
            .observe(Some(3), Some(Duration::from_secs(5)));
        assert_eq!(limiter.delay(), Duration::ZERO);
        limiter
            .acquire()
            .await
            .observe(Some(0), Some(Duration::from_secs(5)));
        let _ = limiter.acquire().await;
        assert!(Instant::now() - start >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_count_against_what_is_remaining() {
        let limiter = per_minute(100);
        let start = Instant::now();
        let a = limiter.acquire().await;
        let b = limiter.acquire().await;
        // A's answer says one is left, but B is still out and will take it.
        a.observe(Some(1), Some(Duration::from_secs(4)));
        assert!(limiter.delay() >= Duration::from_secs(3));
        b.observe(Some(0), Some(Duration::from_secs(4)));
        let _ = limiter.acquire().await;
        assert!(Instant::now() - start >= Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_answer_arriving_late_does_not_raise_the_budget() {
        let limiter = per_minute(100);
        let start = Instant::now();
        let a = limiter.acquire().await;
        let b = limiter.acquire().await;
        // The server counted A then B, but B's answer (nothing left) arrives first.
        b.observe(Some(0), Some(Duration::from_secs(4)));
        a.observe(Some(1), Some(Duration::from_secs(4)));
        let _ = limiter.acquire().await;
        assert!(Instant::now() - start >= Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_is_spent_then_refreshed_at_reset() {
        let limiter = per_minute(100);
        let start = Instant::now();
        limiter
            .acquire()
            .await
            .observe(Some(2), Some(Duration::from_secs(10)));
        let _ = limiter.acquire().await;
        let _ = limiter.acquire().await;
        // Two used, none left: the next waits for the reset.
        let _ = limiter.acquire().await;
        assert!(Instant::now() - start >= Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn two_windows_both_hold() {
        // Keelvar: 30 a minute in bursts, 600 an hour sustained.
        let limiter =
            RateLimiter::new(&[(3, Duration::from_secs(60)), (5, Duration::from_secs(3600))]);
        let start = Instant::now();
        for _ in 0..6 {
            let _ = limiter.acquire().await;
        }
        assert!(Instant::now() - start >= Duration::from_secs(3600));
    }
}
