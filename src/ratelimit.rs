//! Client-side pacing for API requests, and the request budget that the scheduler plans with.
//!
//! A sliding-window log per limit ("at most N requests in any period P"), plus a "not before"
//! instant that a 429's `Retry-After` or an exhausted `RateLimit-Remaining` pushes forward, so
//! that one throttle pauses every task that talks to that API (the cargo-binstall model).
//!
//! A request is in the window from when it is sent until a period after its answer arrived
//! (the server counted it somewhere in between), so latency can never put N+1 requests into
//! one server-side window, with only a small margin ([`margin`]) for servers that count in
//! coarse steps.
//!
//! # Promises: a job's poll is paid for before the job is submitted
//!
//! A Keelvar job costs a submission and at least one poll, and its URLs die a minute after it
//! completes: a job whose poll cannot be sent in time buys nothing. So when the scheduler
//! decides a mint call, the call takes a [`Reservation`] at once (before its task runs, so the
//! next decision sees it): a slot for its first request and, for a job, a promise of a slot
//! in every window for its polls until the job ends. Other requests (listing pages, a job
//! submitted again) leave room for every reservation and promise and for one spare poll (a job
//! the first poll found still running), so a poll never waits for the window to roll over.
//! [`RateLimiter::delay_for`] with [`Need::Job`] tells the scheduler when a job and its poll
//! both fit.
//!
//! Why not `governor`: its GCRA allows a burst of N and then N per period, which can put N+1
//! requests inside one window of a server that counts a sliding minute (the 21st request three
//! seconds after a burst of 20 gets a 429), and it has no notion of a slot promised ahead. The
//! log below is exactly "N in any window", needs N timestamps of memory, and takes the server's
//! own signals; that is the product itself.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// What a request needs from the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// One request (a listing page, a job submitted again): it leaves room for every
    /// reservation, every promise and a spare poll.
    Request,
    /// A mint call's first request, reserved when the call was decided ([`Reservation`]).
    Reserved,
    /// What the scheduler asks before it decides a Keelvar job: its submission, the promise
    /// for its poll, and the spare poll.
    Job,
    /// A job's first poll: it uses the slot promised to the job.
    Promised,
    /// A job's later poll (the first found it still running): it may use the spare.
    ExtraPoll,
    /// A mint call's later request (a retry, a job submitted again), not held back by the
    /// call's own promise (`promised`: it still holds one).
    Again { promised: bool },
}

/// Which limit holds requests back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holdback {
    /// A window of ours: `limit` requests in any `period`.
    Window { limit: u32, period: Duration },
    /// The server said so: a 429's `Retry-After`, or nothing left until `RateLimit-Reset`.
    Server,
}

impl std::fmt::Display for Holdback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Holdback::Window { limit, period } => {
                let secs = period.as_secs_f64();
                if (secs - 3600.0).abs() < 1.0 {
                    write!(f, "{limit}/hour")
                } else if (secs - 60.0).abs() < 0.5 {
                    write!(f, "{limit}/min")
                } else {
                    write!(f, "{limit} per {secs:.0}s")
                }
            }
            Holdback::Server => write!(f, "the API's own rate-limit signal"),
        }
    }
}

impl Holdback {
    /// The hourly (or any longer-than-a-minute) window: worth saying "until when".
    pub fn is_long(&self) -> bool {
        matches!(self, Holdback::Window { period, .. } if *period > Duration::from_secs(120))
    }
}

#[derive(Debug)]
struct Window {
    limit: usize,
    /// The period plus [`margin`].
    period: Duration,
    /// The period as configured (for messages).
    nominal: Duration,
    /// When requests were answered (or given up on), and how many at that moment, oldest
    /// first: a request stays in the window a period from then. Under a large limit, requests
    /// less than [`Window::grain`] apart share one entry stamped with the latest of them (so
    /// they leave the window no sooner than they would one by one): memory stays at most
    /// [`GRAINS`] entries whatever the limit.
    sent: VecDeque<(Instant, usize)>,
    /// Requests in `sent`. Requests sent and not answered yet ([`State::in_flight`]) are in
    /// every window too, until a period after their answer.
    count: usize,
}

/// Most entries one window keeps.
const GRAINS: u32 = 1000;

/// What is added to each period: a server counting in coarse steps (whole seconds) can see a
/// request a little earlier than its answer says. A tenth of a second on a minute.
pub fn margin(period: Duration) -> Duration {
    period / 600
}

impl Window {
    /// Requests closer together than this share an entry (zero: each has its own).
    fn grain(&self) -> Duration {
        if self.limit as u32 > GRAINS {
            self.period / GRAINS
        } else {
            Duration::ZERO
        }
    }

    /// A request was answered (or given up on) at `now`: the server counted it no later, so
    /// it leaves the window a period from now.
    fn answered(&mut self, now: Instant) {
        let grain = self.grain();
        self.count += 1;
        if let Some((at, n)) = self.sent.back_mut()
            && (*at >= now || (!grain.is_zero() && now.saturating_duration_since(*at) < grain))
        {
            *at = (*at).max(now);
            *n += 1;
            return;
        }
        self.sent.push_back((now, 1));
    }

    /// Forget what has left the window.
    fn expire(&mut self, now: Instant) {
        while let Some(&(first, n)) = self.sent.front() {
            if first + self.period <= now {
                self.sent.pop_front();
                self.count -= n;
            } else {
                break;
            }
        }
    }

    /// Requests in the window: answered within a period, or not answered yet (`in_flight`).
    fn used(&mut self, now: Instant, in_flight: usize) -> usize {
        self.expire(now);
        self.count + in_flight
    }

    /// How long until `reserved` requests (promised or spare) and `more` new ones fit, with
    /// `in_flight` requests not answered yet. `alone`: no other call holds a reservation.
    fn wait(
        &mut self,
        now: Instant,
        in_flight: usize,
        (reserved, more): (usize, usize),
        alone: bool,
    ) -> Duration {
        let used = self.used(now, in_flight);
        if used + reserved + more <= self.limit {
            return Duration::ZERO;
        }
        // The entry whose leaving makes room (requests in flight leave only after their
        // answer: an answer wakes the waiters).
        let mut to_free = (used + reserved + more).saturating_sub(self.limit);
        if to_free > used {
            if !alone {
                // Other calls' reservations fill it: they are given back (and waiters woken)
                // as those calls go.
                return self.period;
            }
            // Even an empty window could not hold this call's own needs (a limit smaller than
            // a job and its polls): one request at a time, each into an empty window, rather
            // than none ever.
            if used == 0 {
                return Duration::ZERO;
            }
            to_free = used;
        }
        if to_free > self.count {
            return self.period;
        }
        for &(at, n) in &self.sent {
            if n >= to_free {
                return (at + self.period).saturating_duration_since(now);
            }
            to_free -= n;
        }
        Duration::ZERO
    }

    fn holdback(&self) -> Holdback {
        Holdback::Window {
            limit: self.limit as u32,
            period: self.nominal,
        }
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
    /// Slots kept for the first polls of jobs under way (one per job until it is polled).
    promised: usize,
    /// Mint calls decided whose first request has not been sent yet (one slot each).
    pending: usize,
    /// Jobs under way (a spare slot is kept for their later polls while there are any).
    jobs: usize,
    /// Mint calls holding a reservation.
    calls: usize,
    /// How long a job's later poll may wait for a slot (see [`RateLimiter::with_spare_horizon`]).
    spare_horizon: Duration,
}

impl State {
    /// Slots that `need` must leave free beside itself (reservations and promises; the spare
    /// poll), and how many it takes. Every reservation and promise is a slot; while jobs are
    /// under way, one more is kept spare for a poll that finds its job still running.
    fn reserved(&self, need: Need) -> (usize, usize, usize) {
        let spare = usize::from(self.jobs > 0);
        let kept = self.promised + self.pending;
        match need {
            Need::Request => (kept, spare, 1),
            // Its own slot is among the pending ones: sending it leaves the rest as they were.
            Need::Reserved => (kept.saturating_sub(1), 0, 1),
            // The submission and the poll promised to it; the spare, which it will need.
            Need::Job => (kept, 1, 2),
            // Its own slot is among the promised ones.
            Need::Promised => (kept.saturating_sub(1), 0, 1),
            // The spare is for it.
            Need::ExtraPoll => (kept, 0, 1),
            // Its own promise is not in its way.
            Need::Again { promised } => (kept.saturating_sub(usize::from(promised)), spare, 1),
        }
    }

    /// Calls other than the one asking for `need` that hold a reservation.
    fn others(&self, need: Need) -> usize {
        match need {
            Need::Request | Need::Job => self.calls,
            Need::Reserved | Need::Promised | Need::ExtraPoll | Need::Again { .. } => {
                self.calls.saturating_sub(1)
            }
        }
    }

    /// A request that needs `need` is sent: the slot it was kept is used.
    fn sent(&mut self, need: Need) {
        match need {
            Need::Reserved => self.pending = self.pending.saturating_sub(1),
            Need::Promised => self.promised = self.promised.saturating_sub(1),
            Need::Request | Need::Job | Need::ExtraPoll | Need::Again { .. } => {}
        }
    }
}

/// Paces requests to an API host. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RateLimiter {
    state: Mutex<State>,
    /// Woken when slots are given back (an answer, a reservation dropped), so that a request
    /// held back by a reservation goes as soon as it fits, not when the window rolls over.
    changed: tokio::sync::Notify,
}

impl RateLimiter {
    /// A limiter allowing `limit` requests in any `period`, for each `(limit, period)` given.
    pub fn new(limits: &[(u32, Duration)]) -> Self {
        let windows = limits
            .iter()
            .map(|&(limit, period)| Window {
                limit: limit.max(1) as usize,
                period: period + margin(period),
                nominal: period,
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
                promised: 0,
                pending: 0,
                jobs: 0,
                calls: 0,
                spare_horizon: Duration::ZERO,
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// A job's spare poll (for a first poll that finds the job still running) may be a slot
    /// that frees within `horizon` of the job's decision instead of one kept free from the
    /// start: a later poll that waits that long still finds most of the URLs' life left (a
    /// quarter of it, for Keelvar). This lets a window's last job use the slots a kept spare
    /// would leave idle (with 30 a minute, 15 jobs a minute instead of 14).
    pub fn with_spare_horizon(self, horizon: Duration) -> Self {
        self.lock().spare_horizon = horizon;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another task panicked mid-update; the data is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long until an ordinary request could be sent without breaking any limit.
    #[cfg(test)]
    pub fn delay(&self) -> Duration {
        self.delay_for(Need::Request)
    }

    /// How long until a request that needs `need` could be sent.
    pub fn delay_for(&self, need: Need) -> Duration {
        let now = Instant::now();
        wait_locked(&mut self.lock(), now, need).0
    }

    /// What holds an ordinary request (or, with `need`, a job) back, and for how long; `None`
    /// when it could go now.
    pub fn holdback(&self, need: Need) -> Option<(Duration, Holdback)> {
        let now = Instant::now();
        let (wait, why) = wait_locked(&mut self.lock(), now, need);
        (!wait.is_zero()).then_some((wait, why))
    }

    /// Take what a mint call needs from the budget at the moment it is decided, before its
    /// task runs (so that the next decision already sees it): a slot for its first request,
    /// and for a job ([`Need::Job`]) a promise of a slot for its polls until the job ends.
    pub fn reserve(self: &Arc<Self>, need: Need) -> Reservation {
        let job = need == Need::Job;
        let mut state = self.lock();
        state.pending += 1;
        state.promised += usize::from(job);
        state.jobs += usize::from(job);
        state.calls += 1;
        drop(state);
        Reservation {
            limiter: self.clone(),
            first_sent: AtomicBool::new(false),
            promised: AtomicBool::new(job),
            job,
        }
    }

    /// Wait until an ordinary request may be sent, and count it as sent.
    #[cfg(test)]
    pub async fn acquire(&self) -> Permit<'_> {
        self.acquire_for(Need::Request).await
    }

    /// Wait until a request that needs `need` may be sent, and count it as sent. Hand the
    /// answer's rate-limit headers to the permit ([`Permit::observe`]); dropping it says "no
    /// answer".
    pub async fn acquire_for(&self, need: Need) -> Permit<'_> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait = {
                let now = Instant::now();
                let mut state = self.lock();
                let (wait, _) = wait_locked(&mut state, now, need);
                if wait.is_zero() {
                    state.sent(need);
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
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = changed => {}
            }
        }
    }

    /// Send nothing before `until` (a 429's `Retry-After`, or `RateLimit-Reset` with nothing remaining).
    pub fn pause_until(&self, until: Instant) {
        let mut state = self.lock();
        if until > state.not_before {
            state.not_before = until;
        }
    }

    /// How long from now until `requests` more ordinary requests will all have been sent, if
    /// each goes as soon as the windows allow (what is already in them included). The plan
    /// behind the ETA when the budget is what limits a run. At most [`PLAN_STEPS`] requests
    /// are followed one by one; beyond that the pace of the last window's worth is extended.
    pub fn time_to_send(&self, requests: usize) -> Duration {
        let now = Instant::now();
        let mut state = self.lock();
        let start = now.max(state.not_before);
        // Windows this large are lifted limits: the budget sets no pace worth planning.
        if state.windows.iter().any(|w| w.limit as u32 > GRAINS) {
            return Duration::ZERO;
        }
        // Calls already decided will send their first requests and polls too.
        let requests = requests + state.pending + state.promised;
        let in_flight = state.in_flight;
        let mut sim: Vec<(usize, Duration, VecDeque<Instant>)> = state
            .windows
            .iter_mut()
            .map(|w| {
                w.expire(now);
                // Requests in flight leave a period after now at the earliest.
                let times = w
                    .sent
                    .iter()
                    .flat_map(|&(at, n)| std::iter::repeat_n(at, n))
                    .chain(std::iter::repeat_n(now, in_flight))
                    .collect();
                (w.limit, w.period, times)
            })
            .collect();
        // The spare poll kept while jobs are under way.
        let reserved = usize::from(state.jobs > 0);
        drop(state);
        let steps = requests.min(PLAN_STEPS);
        let mut t = start;
        for _ in 0..steps {
            for (limit, period, times) in &sim {
                let room = limit.saturating_sub(reserved).max(1);
                if times.len() >= room {
                    let idx = times.len() - room;
                    t = t.max(times[idx] + *period);
                }
            }
            for (limit, _, times) in &mut sim {
                times.push_back(t);
                if times.len() > *limit {
                    times.pop_front();
                }
            }
        }
        let planned = t.saturating_duration_since(now);
        if requests <= steps || steps == 0 {
            return planned;
        }
        // Beyond the steps followed: the slowest window's steady pace.
        let per_request = sim
            .iter()
            .map(|(limit, period, _)| *period / (*limit).max(1) as u32)
            .max()
            .unwrap_or_default();
        planned + per_request * (requests - steps) as u32
    }

    fn finish(&self, remaining: Option<u64>, reset: Option<Duration>) {
        let mut state = self.lock();
        let now = Instant::now();
        for w in &mut state.windows {
            w.answered(now);
        }
        state.in_flight = state.in_flight.saturating_sub(1);
        // What our own windows leave (requests in flight included): the tightest of them.
        let in_flight = state.in_flight;
        let windows_left = state
            .windows
            .iter_mut()
            .map(|w| w.limit.saturating_sub(w.used(now, in_flight)) as u64)
            .min();
        if let (Some(remaining), Some(reset)) = (remaining, reset) {
            // Requests still in flight were sent after the server counted this one (or at the
            // same time): they will use up what it says is left.
            let left = remaining.saturating_sub(state.in_flight as u64);
            let until = now + reset;
            // The server's figure adds something only when it has seen requests our windows
            // have not (another program, or shards over budget, on the same key). Otherwise our
            // windows are as strict and more precise: its reset comes in whole seconds, and
            // waiting for it would idle up to a second at every roll-over.
            if windows_left.is_some_and(|ours| left >= ours) {
                drop(state);
                self.changed.notify_waiters();
                return;
            }
            // Answers can arrive out of order: within a window, an older answer must never
            // raise what is believed left. Only a passed reset clears the budget.
            state.budget = match state.budget {
                Some((old_left, old_until)) if old_until > now => {
                    Some((old_left.min(left), old_until.max(until)))
                }
                _ => Some((left, until)),
            };
        }
        drop(state);
        self.changed.notify_waiters();
    }
}

/// Most requests [`RateLimiter::time_to_send`] follows one by one.
pub const PLAN_STEPS: usize = 5000;

/// What a mint call took from the budget when it was decided ([`RateLimiter::reserve`]):
/// the slot of its first request until that is sent, and for a job the promise of a slot
/// for its polls until the job ends (the reservation is dropped). Given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    limiter: Arc<RateLimiter>,
    first_sent: AtomicBool,
    /// The job's first poll is still to come (its slot is kept).
    promised: AtomicBool,
    job: bool,
}

impl Reservation {
    /// Wait for the next request's place: the reserved one the first time, an ordinary one
    /// after that (a retry, a job submitted again).
    pub async fn permit(&self) -> Permit<'_> {
        if self.first_sent.load(Ordering::SeqCst) {
            let promised = self.promised.load(Ordering::SeqCst);
            return self.limiter.acquire_for(Need::Again { promised }).await;
        }
        let permit = self.limiter.acquire_for(Need::Reserved).await;
        self.first_sent.store(true, Ordering::SeqCst);
        permit
    }

    /// Wait for a poll's place: the promised slot the first time, the spare after that.
    pub async fn poll_permit(&self) -> Permit<'_> {
        if !self.job {
            return self
                .limiter
                .acquire_for(Need::Again { promised: false })
                .await;
        }
        if !self.promised.load(Ordering::SeqCst) {
            return self.limiter.acquire_for(Need::ExtraPoll).await;
        }
        let permit = self.limiter.acquire_for(Need::Promised).await;
        self.promised.store(false, Ordering::SeqCst);
        permit
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut state = self.limiter.lock();
        if !self.first_sent.load(Ordering::SeqCst) {
            state.pending = state.pending.saturating_sub(1);
        }
        if self.promised.load(Ordering::SeqCst) {
            state.promised = state.promised.saturating_sub(1);
        }
        if self.job {
            state.jobs = state.jobs.saturating_sub(1);
        }
        state.calls = state.calls.saturating_sub(1);
        drop(state);
        self.limiter.changed.notify_waiters();
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

/// How long until `need` fits, and what holds it back.
fn wait_locked(state: &mut State, now: Instant, need: Need) -> (Duration, Holdback) {
    let (kept, spare, more) = state.reserved(need);
    let alone = state.others(need) == 0;
    let in_flight = state.in_flight;
    // The spare poll may also be a slot that frees within the spare horizon: a later poll
    // that waits that long still finds the job's URLs with most of their life.
    let horizon = state.spare_horizon;
    let mut wait = state.not_before.saturating_duration_since(now);
    let mut why = Holdback::Server;
    match state.budget {
        Some((_, reset_at)) if reset_at <= now => state.budget = None,
        Some((left, reset_at)) if (left as usize) < kept + spare + more => {
            let spare_soon = spare > 0 && reset_at - now <= horizon && left as usize >= kept + more;
            if !spare_soon {
                wait = wait.max(reset_at - now)
            }
        }
        _ => {}
    }
    for w in &mut state.windows {
        let mut w_wait = w.wait(now, in_flight, (kept + spare, more), alone);
        if spare > 0 && !horizon.is_zero() && !w_wait.is_zero() {
            let without_spare = w.wait(now, in_flight, (kept, more), alone);
            w_wait = without_spare.max(w_wait.saturating_sub(horizon));
        }
        if w_wait > wait {
            wait = w_wait;
            why = w.holdback();
        }
    }
    (wait, why)
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
        // minute (and the 0.1 s margin) after they were sent, never sooner.
        let _ = limiter.acquire().await;
        let waited = Instant::now() - start;
        assert!(waited >= Duration::from_millis(60_100), "{waited:?}");
        assert!(waited <= Duration::from_millis(60_300), "{waited:?}");
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

    #[tokio::test(start_paused = true)]
    async fn a_jobs_poll_goes_at_once_whatever_else_wants_the_window() {
        let limiter = Arc::new(per_minute(6));
        let start = Instant::now();
        assert_eq!(limiter.delay_for(Need::Job), Duration::ZERO);
        let job = limiter.reserve(Need::Job);
        drop(job.permit().await);
        // Ordinary requests leave room for the promised poll and a spare one: three fit.
        for _ in 0..3 {
            drop(limiter.acquire().await);
        }
        assert!(limiter.delay() > Duration::from_secs(59));
        // The poll, and a second one (the job was still running), go at once.
        drop(job.poll_permit().await);
        drop(job.poll_permit().await);
        assert_eq!(Instant::now(), start);
        // A third would not: the window is full.
        assert!(limiter.delay_for(Need::Promised) > Duration::from_secs(59));
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_is_decided_only_when_its_poll_fits_too() {
        let limiter = Arc::new(per_minute(4));
        assert_eq!(limiter.delay_for(Need::Job), Duration::ZERO);
        let first = limiter.reserve(Need::Job);
        // Submission, poll and spare of the first leave one slot: not enough for a second job
        // (its submission and poll), though an ordinary request fits.
        assert!(limiter.delay_for(Need::Job) > Duration::ZERO);
        assert_eq!(limiter.delay(), Duration::ZERO);
        // A reservation given back unused frees its slots.
        drop(first);
        assert_eq!(limiter.delay_for(Need::Job), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_stays_in_the_window_a_period_after_its_answer() {
        let limiter = per_minute(1);
        let start = Instant::now();
        let permit = limiter.acquire().await;
        // The answer took 10 s: the server may have counted the request at any moment until
        // then.
        tokio::time::advance(Duration::from_secs(10)).await;
        permit.observe(None, None);
        let _ = limiter.acquire().await;
        let waited = Instant::now() - start;
        assert!(waited >= Duration::from_millis(70_100), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_plan_says_how_long_requests_take_at_the_budgets_pace() {
        let limiter = RateLimiter::new(&[
            (30, Duration::from_secs(60)),
            (600, Duration::from_secs(3600)),
        ]);
        assert_eq!(limiter.time_to_send(30), Duration::ZERO);
        let minute = limiter.time_to_send(31);
        assert!(
            (Duration::from_secs(60)..Duration::from_secs(61)).contains(&minute),
            "{minute:?}"
        );
        // Past 600 requests the hour's window decides.
        assert!(limiter.time_to_send(601) >= Duration::from_secs(3600));
        // What is already sent counts.
        for _ in 0..30 {
            drop(limiter.acquire().await);
        }
        assert!(limiter.time_to_send(1) >= Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_too_small_for_a_job_and_its_poll_still_moves() {
        // One request a minute: a job and its poll cannot share a window. Each still goes,
        // alone, into an empty one: slow, but never stuck.
        let limiter = Arc::new(per_minute(1));
        let start = Instant::now();
        assert_eq!(limiter.delay_for(Need::Job), Duration::ZERO);
        let job = limiter.reserve(Need::Job);
        drop(job.permit().await);
        drop(job.poll_permit().await);
        let waited = Instant::now() - start;
        assert!(waited >= Duration::from_secs(60) && waited < Duration::from_secs(61));
        drop(job);
        drop(limiter.acquire().await);
        assert!(Instant::now() - start < Duration::from_secs(122));
    }

    #[tokio::test(start_paused = true)]
    async fn the_servers_whole_second_reset_does_not_idle_a_window_it_agrees_with() {
        let limiter = per_minute(2);
        let start = Instant::now();
        limiter
            .acquire()
            .await
            .observe(Some(1), Some(Duration::from_secs(60)));
        tokio::time::advance(Duration::from_millis(59_700)).await;
        // The server counts what we count: none left, for 0.3 s, which it rounds up to 1 s.
        limiter
            .acquire()
            .await
            .observe(Some(0), Some(Duration::from_secs(1)));
        let _ = limiter.acquire().await;
        let at = Instant::now() - start;
        assert!(at < Duration::from_millis(60_500), "{at:?}");
        // A server that has seen more than we sent is heeded:
        // `exhausted_remaining_waits_for_reset`.
    }

    #[tokio::test(start_paused = true)]
    async fn a_retried_or_resubmitted_job_is_not_held_back_by_its_own_slots() {
        for per_minute_limit in [1, 2, 30] {
            let limiter = Arc::new(per_minute(per_minute_limit));
            let start = Instant::now();
            let job = limiter.reserve(Need::Job);
            drop(job.permit().await);
            // The submission failed (503): sent again, then polled, then (the job FAILED)
            // submitted again and polled again. Each waits at most for the window to empty.
            drop(job.permit().await);
            drop(job.poll_permit().await);
            drop(job.permit().await);
            drop(job.poll_permit().await);
            let took = Instant::now() - start;
            assert!(
                took <= Duration::from_secs(61) * 4,
                "{per_minute_limit}/min: {took:?}"
            );
        }
    }
}
