//! The vendors' rate limits: each request must fit every rule's sliding window; a refusal says
//! how long to wait, an admission what the `RateLimit-*` headers say.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::shared::Shared;
use crate::{RateRule, Stats, lock};

/// What an admitted API request's `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateHeaders {
    pub(crate) limit: u32,
    pub(crate) remaining: u64,
    /// Seconds until the window's oldest request leaves it.
    pub(crate) reset: u64,
}

/// Which vendor API a request is for (each has its own rate limit).
#[derive(Clone, Copy)]
pub(crate) enum Vendor {
    Veridox,
    Keelvar,
}

impl Shared {
    /// The vendor's rate rules: Veridox's one, Keelvar's per minute and per hour.
    fn rate_rules(&self, vendor: Vendor) -> impl Iterator<Item = RateRule> {
        let (a, b) = match vendor {
            Vendor::Veridox => (self.cfg.faults.rate_limit, None),
            Vendor::Keelvar => (
                self.cfg.keelvar.rate_limit,
                self.cfg.keelvar.rate_limit_hourly,
            ),
        };
        a.into_iter().chain(b)
    }

    /// Record an API request and apply the vendor's rate limits: it must fit in every rule's
    /// sliding window. `Err(wait)` means: answer 429, with the longest wait any rule asks.
    /// `Ok(Some(_))` gives what to put in `RateLimit-*` headers (of the rule that leaves the
    /// fewest requests), where the vendor sends them.
    pub(crate) fn admit_api(&self, vendor: Vendor) -> Result<Option<RateHeaders>, Duration> {
        self.stats.api_requests.fetch_add(1, Ordering::SeqCst);
        Stats::push_sample(&self.stats.api_times_ms, self.now_ms());
        let forced = match vendor {
            Vendor::Veridox => control!(0, self.cfg.faults.test.force_429),
            Vendor::Keelvar => control!(0, self.cfg.keelvar.test.force_429),
        };
        if self.among_first("force_429", forced, vendor as u64) {
            self.stats.api_throttled.fetch_add(1, Ordering::SeqCst);
            return Err(self.forced_retry_after());
        }
        let rules: Vec<RateRule> = self.rate_rules(vendor).collect();
        let Some(longest) = rules.iter().map(|r| r.window).max() else {
            return Ok(None);
        };
        let now = Instant::now();
        // One log of admitted requests serves every rule: it keeps the longest window.
        let mut log = lock(match vendor {
            Vendor::Veridox => &self.veridox_log,
            Vendor::Keelvar => &self.keelvar_log,
        });
        while log.front().is_some_and(|t| *t + longest <= now) {
            log.pop_front();
        }
        if let Some(wait) = wait_to_fit(&rules, &log, now) {
            self.stats.api_throttled.fetch_add(1, Ordering::SeqCst);
            return Err(wait);
        }
        log.push_back(now);
        Ok(tightest(&rules, &log, now).filter(|_| rules.iter().any(|r| r.headers)))
    }

    /// Add `RateLimit-Limit/Remaining/Reset` to an answer, where the vendor sends them.
    pub(crate) fn with_rate_headers(
        &self,
        mut resp: axum::response::Response,
        limits: Option<RateHeaders>,
    ) -> axum::response::Response {
        if let Some(l) = limits {
            use axum::http::HeaderValue;
            let h = resp.headers_mut();
            h.insert("ratelimit-limit", HeaderValue::from(l.limit));
            h.insert("ratelimit-remaining", HeaderValue::from(l.remaining));
            h.insert("ratelimit-reset", HeaderValue::from(l.reset));
        }
        resp
    }
}

/// Where the requests of `log` still inside `window` at `now` begin.
fn first_in(log: &VecDeque<Instant>, window: Duration, now: Instant) -> usize {
    log.partition_point(|t| *t + window <= now)
}

/// How long a request at `now` must wait to fit every rule, given the requests admitted
/// (`log`, oldest first); `None`: it fits now. Of the rules it does not fit, the longest wait.
fn wait_to_fit(rules: &[RateRule], log: &VecDeque<Instant>, now: Instant) -> Option<Duration> {
    let mut wait = None::<Duration>;
    for rule in rules {
        let first = first_in(log, rule.window, now);
        let used = log.len() - first;
        if used >= rule.limit as usize {
            // It fits once enough of the window's requests have left it.
            let frees = log
                .get(first + used - rule.limit as usize)
                .map_or(rule.window, |t| {
                    (*t + rule.window).saturating_duration_since(now)
                });
            wait = Some(wait.unwrap_or_default().max(frees));
        }
    }
    wait
}

/// The `RateLimit-*` values of the rule that leaves the fewest requests once `log` holds the
/// one just admitted (of equals, the later reset).
fn tightest(rules: &[RateRule], log: &VecDeque<Instant>, now: Instant) -> Option<RateHeaders> {
    rules
        .iter()
        .map(|rule| {
            let first = first_in(log, rule.window, now);
            let reset = log.get(first).map_or(0, |t| {
                (*t + rule.window)
                    .saturating_duration_since(now)
                    .as_secs_f64()
                    .ceil() as u64
            });
            RateHeaders {
                limit: rule.limit,
                remaining: rule.limit.saturating_sub((log.len() - first) as u32).into(),
                reset,
            }
        })
        .min_by_key(|h| (h.remaining, std::cmp::Reverse(h.reset)))
}

#[cfg(test)]
mod tests {
    use axum::extract::State;
    use axum::http::StatusCode;

    use super::*;
    use crate::{Catalog, SandboxConfig, keelvar, testkit};

    fn keelvar_limits(minute: (u32, u64), hour: (u32, u64)) -> SandboxConfig {
        let mut cfg = SandboxConfig::new(Catalog::generate(2, 5));
        let rule = |(limit, secs): (u32, u64)| RateRule {
            limit,
            window: Duration::from_secs(secs),
            headers: true,
        };
        cfg.keelvar.rate_limit = Some(rule(minute));
        cfg.keelvar.rate_limit_hourly = Some(rule(hour));
        cfg
    }

    fn admitted(limit: u32, remaining: u64, reset: u64) -> Result<Option<RateHeaders>, Duration> {
        Ok(Some(RateHeaders {
            limit,
            remaining,
            reset,
        }))
    }

    /// 3 a minute and 5 an hour: the minute rule refuses first, then the hour's, each 429
    /// asking for the longer wait, and the headers tell of whichever rule leaves fewer.
    #[tokio::test(start_paused = true)]
    async fn a_request_must_fit_the_minute_and_the_hour() {
        let shared = testkit::shared(keelvar_limits((3, 60), (5, 3600)));
        let admit = || shared.admit_api(Vendor::Keelvar);
        assert_eq!(admit(), admitted(3, 2, 60));
        assert_eq!(admit(), admitted(3, 1, 60));
        assert_eq!(admit(), admitted(3, 0, 60));
        assert_eq!(admit(), Err(Duration::from_secs(60)), "the minute is full");
        tokio::time::advance(Duration::from_secs(60)).await;
        // The minute's window is empty again; the hour's holds 3 + this one of 5.
        assert_eq!(admit(), admitted(5, 1, 3540));
        assert_eq!(admit(), admitted(5, 0, 3540));
        assert_eq!(
            admit(),
            Err(Duration::from_secs(3540)),
            "the minute has room, the hour has not: wait for the hour"
        );
        tokio::time::advance(Duration::from_secs(3539)).await;
        assert!(admit().is_err(), "a second early");
        tokio::time::advance(Duration::from_secs(1)).await;
        // The first three left the hour; the minute holds none of the last two.
        assert_eq!(admit(), admitted(3, 2, 60));
        let s = shared.stats.snapshot();
        assert_eq!((s.api_requests, s.api_throttled), (9, 3), "{s:?}");
    }

    /// Over HTTP: the `RateLimit-*` headers of the tighter rule; a 429 whose `Retry-After` is
    /// the longer wait (both rules full).
    #[tokio::test(start_paused = true)]
    async fn the_hourly_rule_shows_in_the_headers_and_in_retry_after() {
        let shared = testkit::shared(keelvar_limits((1, 60), (1, 3600)));
        let id = shared.cfg.catalog.files()[0].id;
        let body = format!(r#"{{"file_uuids": ["{id}"]}}"#);
        let submit = || {
            keelvar::submit(
                State(shared.clone()),
                testkit::keelvar_auth(&shared),
                body.clone(),
            )
        };
        let (status, h, _) = testkit::read(submit().await).await;
        assert_eq!(status, StatusCode::CREATED);
        let header = |name| testkit::num(&h, name);
        assert_eq!(
            (
                header("ratelimit-limit"),
                header("ratelimit-remaining"),
                header("ratelimit-reset")
            ),
            (1, 0, 3600)
        );
        tokio::time::advance(Duration::from_secs(90)).await;
        let (status, h, _) = testkit::read(submit().await).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(testkit::num(&h, "retry-after"), 3510);
        assert_eq!(shared.stats.snapshot().api_throttled, 1);
    }

    fn rule(limit: u32, secs: u64) -> RateRule {
        RateRule {
            limit,
            window: Duration::from_secs(secs),
            headers: true,
        }
    }

    /// A log of requests made `ago` seconds before `now`, oldest first.
    fn log_of(now: Instant, ago: &[u64]) -> VecDeque<Instant> {
        ago.iter().map(|&s| now - Duration::from_secs(s)).collect()
    }

    #[test]
    fn a_request_fits_while_every_window_has_room() {
        let now = Instant::now() + Duration::from_secs(10_000);
        let log = log_of(now, &[50, 10]);
        assert_eq!(wait_to_fit(&[rule(3, 60), rule(5, 3600)], &log, now), None);
        // Requests that left the window do not count.
        assert_eq!(
            wait_to_fit(&[rule(1, 30)], &log, now),
            Some(Duration::from_secs(20))
        );
    }

    #[test]
    fn a_full_window_waits_until_its_oldest_needed_request_leaves_and_the_longest_wait_wins() {
        let now = Instant::now() + Duration::from_secs(10_000);
        let log = log_of(now, &[3000, 50, 10]);
        // The minute holds 2 of 2: the one of 50 s ago leaves in 10 s.
        assert_eq!(
            wait_to_fit(&[rule(2, 60)], &log, now),
            Some(Duration::from_secs(10))
        );
        // The hour holds 3 of 3 too: the one of 3000 s ago leaves in 600 s.
        assert_eq!(
            wait_to_fit(&[rule(2, 60), rule(3, 3600)], &log, now),
            Some(Duration::from_secs(600))
        );
    }

    #[test]
    fn the_headers_tell_of_the_rule_with_the_fewest_requests_left() {
        let now = Instant::now() + Duration::from_secs(10_000);
        let log = log_of(now, &[3000, 0]);
        let headers = |limit, remaining, reset| RateHeaders {
            limit,
            remaining,
            reset,
        };
        assert_eq!(
            tightest(&[rule(3, 60), rule(3, 3600)], &log, now),
            Some(headers(3, 1, 600)),
            "the hour holds both: it leaves fewer"
        );
        assert_eq!(
            tightest(&[rule(2, 60), rule(3, 3600)], &log, now),
            Some(headers(3, 1, 600)),
            "one left in either: the later reset"
        );
        assert_eq!(
            tightest(&[rule(2, 60), rule(5, 3600)], &log, now),
            Some(headers(2, 1, 60))
        );
        assert_eq!(tightest(&[], &log, now), None);
    }
}
