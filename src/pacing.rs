//! What the request budget does to a run, in words: what the run waits for, and when it can
//! end when the budget (not the downloads) is what limits it.
//!
//! The driver calls [`Pacing::update`] on every turn; it looks at most four times a second.
//! The bar (or, off a terminal, the periodic status line) says what the run waits for, and the
//! ETA comes from the plan: the requests still to send, at the pace the budget's windows allow
//! ([`RateLimiter::time_to_send`]). `-v` says each kind of wait once.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::provider::{Budget, Vendor};
use crate::ratelimit::{Holdback, Need, RateLimiter};

/// How often the budget is looked at for the display.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// Waits shorter than this are not worth a word.
const WORTH_SAYING: Duration = Duration::from_millis(900);

/// The budget's side of the progress display.
pub struct Pacing {
    need: Need,
    max_batch: usize,
    looked: Option<Instant>,
    /// What the run waits for now, in words.
    waiting: Option<String>,
    /// The ETA the budget allows, when it is what limits the run.
    plan_eta: Option<Duration>,
    /// Kinds of wait already logged (`-v` says each once).
    said_minute: bool,
    said_hour: bool,
    said_server: bool,
    /// An API silence (no answer to requests in flight) has been logged, and goes on.
    said_silence: bool,
}

impl Pacing {
    /// Say (with `-v`) what the budget is and what it means for this vendor.
    pub fn new(vendor: &Vendor, budget: Budget) -> Self {
        let hourly = budget
            .per_hour
            .map(|h| format!(" and {h} an hour"))
            .unwrap_or_default();
        let per_mint = requests_per_mint(vendor.mint_need);
        let cost = if per_mint > 1 {
            format!(
                "each job of up to {} files costs a submission and a poll",
                vendor.max_batch
            )
        } else {
            format!(
                "each request fetches links for up to {} files",
                vendor.max_batch
            )
        };
        // A job is its submission and its poll.
        let files = |requests: u32| (requests as usize / per_mint).max(1) * vendor.max_batch;
        let per_hour = budget
            .per_hour
            .map(|h| format!(" and {} an hour", files(h)))
            .unwrap_or_default();
        log::debug!(
            "API budget: {} requests a minute{hourly}, polls and listing pages included; {cost}, \
             so at most about {} files a minute{per_hour}",
            budget.per_minute,
            files(budget.per_minute)
        );
        if per_mint > 1 && budget.per_minute < 3 {
            log::warn!(
                "{} requests a minute cannot hold a job, its poll and a spare poll in one \
                 minute: each job's links may die before they are fetched. Allow at least 3 \
                 (--requests-per-minute)",
                budget.per_minute
            );
        }
        Pacing {
            need: vendor.mint_need,
            max_batch: vendor.max_batch,
            looked: None,
            waiting: None,
            plan_eta: None,
            said_minute: false,
            said_hour: false,
            said_server: false,
            said_silence: false,
        }
    }

    /// Look again, if it is time: `held_back`, the scheduler has a mint call due that the
    /// budget holds back; `to_mint`, IDs that still need a mint call. Returns whether what is
    /// shown changed.
    pub fn update(
        &mut self,
        now: Instant,
        limiter: &RateLimiter,
        held_back: bool,
        to_mint: usize,
    ) -> bool {
        if self.looked.is_some_and(|at| now < at + LOOK_EVERY) {
            return false;
        }
        self.looked = Some(now);
        let waiting = if held_back {
            limiter
                .holdback(self.need)
                .filter(|(wait, _)| *wait >= WORTH_SAYING)
                .map(|(wait, why)| self.describe(wait, why))
        } else {
            None
        };
        let requests = to_mint.div_ceil(self.max_batch) * requests_per_mint(self.need);
        let plan = limiter.time_to_send(requests);
        // Worth showing only when the budget, not the downloads, sets the pace.
        let plan_eta = (plan >= WORTH_SAYING).then_some(plan);
        let changed = waiting != self.waiting || plan_eta.is_some() != self.plan_eta.is_some();
        self.waiting = waiting;
        self.plan_eta = plan_eta;
        changed || plan_eta.is_some()
    }

    /// What the run waits for, in words, if anything.
    /// Log (once per silence, at the normal level: a status line may be 30 s away) that the
    /// API leaves its requests unanswered; `what` is the words for it, `None` once it answers.
    pub fn note_silence(&mut self, what: Option<&str>) {
        match what {
            Some(what) if !self.said_silence => {
                self.said_silence = true;
                log::info!("{what}");
            }
            Some(_) => {}
            None => self.said_silence = false,
        }
    }

    pub fn waiting(&self) -> Option<&str> {
        self.waiting.as_deref()
    }

    /// The ETA the budget allows, when it limits the run.
    pub fn plan_eta(&self) -> Option<Duration> {
        self.plan_eta
    }

    fn describe(&mut self, wait: Duration, why: Holdback) -> String {
        let text = match why {
            Holdback::Window { .. } if why.is_long() => format!(
                "waiting for the hourly API budget ({why}): next request at {} UTC, in {}",
                clock_after(wait),
                crate::progress::human_duration(wait)
            ),
            Holdback::Window { .. } => format!(
                "waiting for the API budget: next request in {:.1}s ({why})",
                wait.as_secs_f64()
            ),
            Holdback::Server => format!(
                "waiting: the API asked for a pause (HTTP 429 or RateLimit-Remaining: 0); next \
                 request in {:.1}s",
                wait.as_secs_f64()
            ),
        };
        let said = match why {
            Holdback::Window { .. } if why.is_long() => &mut self.said_hour,
            Holdback::Window { .. } => &mut self.said_minute,
            Holdback::Server => &mut self.said_server,
        };
        if !*said {
            *said = true;
            log::debug!("{text} (new requests wait; polls of jobs under way have their slots)");
        }
        text
    }
}

/// Requests one mint call costs at least.
fn requests_per_mint(need: Need) -> usize {
    match need {
        Need::Job => 2,
        _ => 1,
    }
}

/// The wall-clock time `wait` from now, `HH:MM:SS` in UTC.
fn clock_after(wait: Duration) -> String {
    let at = time::OffsetDateTime::from(SystemTime::now() + wait);
    format!("{:02}:{:02}:{:02}", at.hour(), at.minute(), at.second())
}
