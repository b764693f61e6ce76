//! The budget plan, whole: the [`Scheduler`], the real [`RateLimiter`] with its promises, and
//! the real Keelvar poll policy and job clock, against a simulated vendor that counts a
//! sliding minute and hour exactly and whose URLs die a fixed time after their job
//! *completes* (however late it is polled). All under tokio's paused clock: a simulated hour
//! takes well under a second, and nothing depends on timing luck.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;
use tokio::time::{Duration, Instant};
use uuid::Uuid;

use super::*;
use crate::provider::keelvar::{JobClock, PollPolicy};
use crate::provider::{MintOutcome, Minted};
use crate::ratelimit::{Need, RateLimiter, Reservation};
use crate::transfer::{Outcome, Whole};

/// The vendor as the simulation plays it.
#[derive(Clone, Copy)]
struct Vendor {
    /// A job takes this long to complete.
    job: Duration,
    /// Its URLs die this long after it completes.
    url_life: Duration,
    /// What the server enforces (requests, period): a request over any is a 429.
    limits: [(usize, Duration); 2],
}

const KEELVAR_LIMITS: [(usize, Duration); 2] = [
    (30, Duration::from_secs(60)),
    (600, Duration::from_secs(3600)),
];

fn keelvar(job_secs: f64, url_secs: u64) -> Vendor {
    Vendor {
        job: Duration::from_secs_f64(job_secs),
        url_life: Duration::from_secs(url_secs),
        limits: KEELVAR_LIMITS,
    }
}

/// What a run cost.
#[derive(Debug, Default)]
struct Tally {
    files: usize,
    jobs: usize,
    polls: usize,
    urls_minted: usize,
    /// URLs never used: re-minted before use, or refused by the host as expired.
    urls_unused: usize,
    /// Why files failed (none should).
    failures: Vec<String>,
    took: Duration,
}

impl Tally {
    fn requests(&self) -> usize {
        self.jobs + self.polls
    }
    fn files_per_request(&self) -> f64 {
        self.files as f64 / self.requests() as f64
    }
    fn unused_share(&self) -> f64 {
        self.urls_unused as f64 / self.urls_minted as f64
    }
}

/// When each request reached the server (every run of a test shares one log: one API key).
type ServerLog = Arc<Mutex<Vec<Instant>>>;

/// The most requests the server saw in any window of each of its limits.
fn worst_windows(log: &ServerLog, vendor: &Vendor) -> Vec<(usize, usize)> {
    let mut times = log.lock().unwrap().clone();
    times.sort();
    vendor
        .limits
        .iter()
        .map(|&(limit, period)| {
            let mut worst = 0;
            let mut lo = 0;
            for hi in 0..times.len() {
                while times[hi] - times[lo] >= period {
                    lo += 1;
                }
                worst = worst.max(hi - lo + 1);
            }
            (worst, limit)
        })
        .collect()
}

/// The server takes a request now and answers with its `RateLimit-Remaining` and
/// `RateLimit-Reset` for the minute, as Keelvar (and the sandbox) do.
fn answer(log: &ServerLog, permit: crate::ratelimit::Permit<'_>) -> Instant {
    let now = Instant::now();
    let mut times = log.lock().unwrap();
    times.push(now);
    let minute = Duration::from_secs(60);
    let in_window: Vec<Instant> = times
        .iter()
        .copied()
        .filter(|&t| t + minute > now)
        .collect();
    let remaining = KEELVAR_LIMITS[0].0.saturating_sub(in_window.len()) as u64;
    let reset = in_window
        .iter()
        .min()
        .map(|&oldest| (oldest + minute).saturating_duration_since(now));
    drop(times);
    permit.observe(Some(remaining), reset);
    now
}

enum Ended {
    Mint {
        items: Vec<Item>,
        result: MintOutcome,
        took: Duration,
        polls: usize,
        /// When each URL truly dies.
        deaths: Vec<(Uuid, Instant)>,
    },
    File {
        item: Item,
        outcome: Outcome,
    },
}

/// One Keelvar job as `keelvar.rs` runs it: a promise, the submission, polls by the policy
/// and the job clock until the job is done; URLs issued (as far as the client can know) at
/// the last poll that saw the job unfinished.
async fn job(
    slots: Reservation,
    log: ServerLog,
    clock: Arc<Mutex<JobClock>>,
    vendor: Vendor,
    items: Vec<Item>,
) -> Ended {
    let start = Instant::now();
    let submitted = answer(&log, slots.permit().await);
    let completes = submitted + vendor.job;
    let policy = PollPolicy::for_lifetime(vendor.url_life);
    let mut last_unfinished = submitted;
    let mut polls = 0;
    let learned = clock.lock().unwrap().first_wait();
    loop {
        tokio::time::sleep(policy.delay(polls as u32, learned)).await;
        let sent = answer(&log, slots.poll_permit().await);
        polls += 1;
        if sent < completes {
            last_unfinished = sent;
            continue;
        }
        clock
            .lock()
            .unwrap()
            .job_ended(learned, polls as u32, sent - submitted);
        break;
    }
    // The answer that found the job done: its URLs can live no longer than from here.
    let found = Instant::now();
    let files = items
        .iter()
        .map(|i| Minted {
            id: i.id,
            url: reqwest::Url::parse(&format!("https://files.example/{}", i.id)).unwrap(),
            label: format!("{}.pdf", i.id),
            issued: last_unfinished,
            expires: Some(found + vendor.url_life),
        })
        .collect();
    let deaths = items
        .iter()
        .map(|i| (i.id, completes + vendor.url_life))
        .collect();
    Ended::Mint {
        items,
        result: MintOutcome {
            files,
            ..MintOutcome::default()
        },
        took: start.elapsed(),
        polls,
        deaths,
    }
}

/// A download: refused at once if its URL is dead, else done after `each`.
async fn download(item: Item, dies: Instant, each: Duration) -> Ended {
    let now = Instant::now();
    if now >= dies {
        return Ended::File {
            item,
            outcome: Outcome::Expired { requested_at: now },
        };
    }
    tokio::time::sleep(each).await;
    Ended::File {
        item,
        outcome: Outcome::Whole(Whole {
            bytes: 32 * 1024,
            sha256: String::new(),
            verified: Vec::new(),
            unchecked: Vec::new(),
            note: None,
            renamed: None,
        }),
    }
}

/// One run (`pipeline.rs` in miniature) of `n` files taking `each` at `-j 16` through
/// `budget`, against `vendor`; the server's log is shared with other runs on the same key.
async fn run(
    n: u128,
    first_id: u128,
    each: Duration,
    vendor: Vendor,
    budget: &[(u32, Duration)],
    log: ServerLog,
) -> Tally {
    let start = Instant::now();
    let items = (first_id..first_id + n)
        .map(|i| Item::new(i as u32, Uuid::from_u128(i), None))
        .collect();
    let mut sim = Sim::new(items, each, vendor, budget, log, start);
    loop {
        let wake = sim.act();
        if sim.s.is_idle() {
            break;
        }
        let ended = tokio::select! {
            Some(ended) = sim.tasks.join_next() => ended.unwrap(),
            _ = tokio::time::sleep_until(wake) => continue,
        };
        sim.ended(ended);
    }
    let stats = sim.s.stats();
    sim.tally.urls_unused = (stats.stale_before_start + stats.expired_hits) as usize;
    sim.tally.took = start.elapsed();
    sim.tally
}

/// The driver of one simulated run, and what it has cost so far.
struct Sim {
    s: Scheduler,
    limiter: Arc<RateLimiter>,
    clock: Arc<Mutex<JobClock>>,
    log: ServerLog,
    vendor: Vendor,
    /// How long each download takes.
    each: Duration,
    tasks: JoinSet<Ended>,
    /// When each URL minted truly dies.
    deaths: HashMap<Uuid, Instant>,
    tally: Tally,
}

impl Sim {
    fn new(
        items: Vec<Item>,
        each: Duration,
        vendor: Vendor,
        budget: &[(u32, Duration)],
        log: ServerLog,
        now: Instant,
    ) -> Sim {
        let settings = Settings {
            concurrency: 16,
            max_batch: 50,
            url_lifetime: vendor.url_life,
            dry_run: false,
            give_up_after: Duration::from_secs(24 * 3600),
            time_scale: 1,
        };
        Sim {
            s: Scheduler::new(settings, items, now),
            limiter: Arc::new(RateLimiter::new(budget).with_spare_horizon(vendor.url_life / 4)),
            clock: Arc::new(Mutex::new(JobClock::default())),
            log,
            vendor,
            each,
            tasks: JoinSet::new(),
            deaths: HashMap::new(),
            tally: Tally::default(),
        }
    }

    /// Do what the scheduler says until it has nothing more for now: returns when it wants
    /// to be asked again.
    fn act(&mut self) -> Instant {
        loop {
            let (actions, wake) = self
                .s
                .next(Instant::now(), self.limiter.delay_for(Need::Job));
            if actions.is_empty() {
                return wake;
            }
            for a in actions {
                match a {
                    Action::Mint(batch) => {
                        self.tally.jobs += 1;
                        self.tasks.spawn(job(
                            self.limiter.reserve(Need::Job),
                            self.log.clone(),
                            self.clock.clone(),
                            self.vendor,
                            batch,
                        ));
                    }
                    Action::Start { ready, .. } => {
                        let dies = self.deaths[&ready.item.id];
                        self.tasks.spawn(download(ready.item, dies, self.each));
                    }
                    other => {
                        if let Some(other) = self.count(other) {
                            panic!("unexpected {other:?}");
                        }
                    }
                }
            }
        }
    }

    /// A task ended: tell the scheduler, and count what follows.
    fn ended(&mut self, ended: Ended) {
        let actions = match ended {
            Ended::Mint {
                items,
                result,
                took,
                polls,
                deaths,
            } => {
                self.tally.polls += polls;
                self.tally.urls_minted += result.files.len();
                self.deaths.extend(deaths);
                self.s.minted(items, Ok(result), took, Instant::now())
            }
            Ended::File { item, outcome } => {
                self.s.finished(item, "x".into(), outcome, Instant::now())
            }
        };
        for a in actions {
            if let Some(Action::Start { .. } | Action::Mint(_)) = self.count(a) {
                unreachable!("only from next()");
            }
        }
    }

    /// Count a file completed or failed; any other action is handed back.
    fn count(&mut self, action: Action) -> Option<Action> {
        match action {
            Action::Complete { .. } => self.tally.files += 1,
            Action::Fail { reason, .. } | Action::NotAttempted { reason, .. } => {
                self.tally.failures.push(reason)
            }
            other => return Some(other),
        }
        None
    }
}

/// Keelvar's documented budget, as the client keeps it.
fn keelvar_budget() -> Vec<(u32, Duration)> {
    crate::provider::keelvar::VENDOR
        .budget(None, None, 1)
        .rate_limits(1)
}

/// What the issue asks of every run at the real limits.
fn assert_economical(t: &Tally, log: &ServerLog, vendor: &Vendor, per_request: f64, n: usize) {
    assert!(t.failures.is_empty(), "{t:?}");
    assert_eq!(t.files, n, "{t:?}");
    assert!(
        t.files_per_request() >= per_request,
        "{:.1} files per request: {t:?}",
        t.files_per_request()
    );
    assert!(
        t.unused_share() <= 0.01,
        "{} of {} URLs unused: {t:?}",
        t.urls_unused,
        t.urls_minted
    );
    for (worst, limit) in worst_windows(log, vendor) {
        assert!(
            worst <= limit,
            "{worst} requests in one window of {limit}: a 429"
        );
    }
}

const SMALL: Duration = Duration::from_millis(20);

#[tokio::test(start_paused = true)]
async fn a_burst_at_the_start_then_pairs_as_the_minute_rolls_over() {
    let vendor = keelvar(1.0, 60);
    let log = ServerLog::default();
    let t = run(1000, 1, SMALL, vendor, &keelvar_budget(), log.clone()).await;
    assert_economical(&t, &log, &vendor, 23.0, 1000);
    assert_eq!(t.jobs, 20, "full jobs of 50: {t:?}");
    // The floor the budget sets: 20 jobs × (submission + poll) at 30 a minute.
    let floor = Duration::from_secs(80);
    assert!(t.took <= floor.mul_f64(1.1), "{:?}", t.took);
    // The first minute holds as many jobs as their polls allow, no more.
    let times = log.lock().unwrap().clone();
    let first_minute = times
        .iter()
        .filter(|&&at| at < times[0] + Duration::from_secs(60))
        .count();
    assert!((26..=30).contains(&first_minute), "{first_minute}");
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_files_run_at_the_budgets_pace() {
    let vendor = keelvar(1.0, 60);
    let log = ServerLog::default();
    let t = run(10_000, 1, SMALL, vendor, &keelvar_budget(), log.clone()).await;
    assert_economical(&t, &log, &vendor, 23.0, 10_000);
    // 200 jobs × 2 requests at 30 a minute.
    let floor = Duration::from_secs(800);
    assert!(t.took <= floor.mul_f64(1.1), "{:?} for {t:?}", t.took);
}

#[tokio::test(start_paused = true)]
async fn past_the_hours_600_requests_the_run_waits_for_the_hour_to_roll_over() {
    let vendor = keelvar(1.0, 60);
    let log = ServerLog::default();
    let t = run(20_000, 1, SMALL, vendor, &keelvar_budget(), log.clone()).await;
    assert_economical(&t, &log, &vendor, 23.0, 20_000);
    // 800 requests: 600 in the first hour, the rest once it rolls over.
    assert!(t.took > Duration::from_secs(3600), "{:?}", t.took);
    let floor = Duration::from_secs(3600 + 200 * 2);
    assert!(t.took <= floor.mul_f64(1.1), "{:?}", t.took);
}

#[tokio::test(start_paused = true)]
async fn slow_jobs_cost_few_polls_and_no_urls() {
    for job_secs in [10.0, 45.0] {
        let vendor = keelvar(job_secs, 60);
        let log = ServerLog::default();
        let t = run(1000, 1, SMALL, vendor, &keelvar_budget(), log.clone()).await;
        assert_economical(&t, &log, &vendor, 20.0, 1000);
    }
}

#[tokio::test(start_paused = true)]
async fn urls_that_live_20_seconds_are_still_all_used() {
    let vendor = keelvar(1.0, 20);
    let log = ServerLog::default();
    let t = run(1000, 1, SMALL, vendor, &keelvar_budget(), log.clone()).await;
    assert_economical(&t, &log, &vendor, 20.0, 1000);
}

#[tokio::test(start_paused = true)]
async fn shards_sharing_one_key_keep_to_its_budget_together() {
    let vendor = keelvar(1.0, 60);
    let log = ServerLog::default();
    // Three shards, each with the default budget: the vendor's divided by three.
    let budget = crate::provider::keelvar::VENDOR
        .budget(None, None, 3)
        .rate_limits(1);
    let shards = (0..3u128).map(|k| run(500, 1 + k * 1000, SMALL, vendor, &budget, log.clone()));
    let tallies = futures_util::future::join_all(shards).await;
    for t in &tallies {
        assert_economical(t, &log, &vendor, 20.0, 500);
    }
}

/// 200 files whose downloads take 20 s each, at -j 16, against `vendor`: a full job's 50 URLs
/// could not all start within the minute they live, so jobs carry what the slots can start in
/// time. Every file arrives, at most 1% of the URLs go unused, no window is exceeded.
async fn assert_large_files_use_their_urls(vendor: Vendor) {
    let log = ServerLog::default();
    let t = run(
        200,
        1,
        Duration::from_secs(20),
        vendor,
        &keelvar_budget(),
        log.clone(),
    )
    .await;
    assert!(t.failures.is_empty() && t.files == 200, "{t:?}");
    assert!(t.unused_share() <= 0.01, "{t:?}");
    for (worst, limit) in worst_windows(&log, &vendor) {
        assert!(worst <= limit);
    }
}

#[tokio::test(start_paused = true)]
async fn large_files_get_small_jobs_whose_urls_are_used_in_time() {
    assert_large_files_use_their_urls(keelvar(1.0, 60)).await;
}

#[tokio::test(start_paused = true)]
async fn slow_jobs_and_large_files_together_still_use_their_urls() {
    // 45 s jobs: a job's URLs may have less than their minute left when they arrive.
    assert_large_files_use_their_urls(keelvar(45.0, 60)).await;
}
