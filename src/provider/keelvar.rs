//! Keelvar: an asynchronous job per batch of up to 50 UUIDs, polled until it completes.
//! `Authorization: Bearer`. The URLs a job mints die 60 s after it completes, so the scheduler
//! submits a job only when its downloads can start at once (see `pipeline.rs`).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use super::{
    ListError, MintOutcome, Provider, RawFile, Vendor, listing_not_found, reason_text, reconcile,
    wrong_listing,
};
use crate::api::{ApiClient, ApiResponse, AuthStyle, Slot, body_text, describe_body, origin_of};
use crate::error::{ApiError, Credentials, Rejected, Unusable};
use crate::ids::IdRule;
use crate::listing::{Cursor, Found, Listed, Source, body_next, collect_file_uuids, next_link};
use crate::ratelimit::{Need, Reservation};

/// Keelvar, by its documentation: 30 requests a minute and 600 an hour, polls included; URLs
/// die 60 seconds after their job completes.
pub const VENDOR: Vendor = Vendor {
    name: "keelvar",
    default_base_url: "https://my.keelvar.app",
    requests_per_minute: 30,
    requests_per_hour: Some(600),
    auth: AuthStyle::Bearer,
    id_rule: IdRule::AnyUuid,
    max_batch: 50,
    url_lifetime: Duration::from_secs(60),
    mint_need: Need::Job,
};

/// How often to poll a job. Every poll is a request out of the vendor's budget (30 a minute,
/// 600 an hour), so a job whose duration is not known yet is probed with doubling waits
/// (0.5 s, 1 s, 2 s, …): a few polls find any duration within a factor of two. The waits are
/// capped at a quarter of the URLs' life, so a job that completed just after a poll still
/// hands over URLs with three quarters of their life left when the next poll finds it done.
#[derive(Debug, Clone, Copy)]
pub struct PollPolicy {
    pub first: Duration,
    pub factor: f64,
    pub cap: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy::for_lifetime(VENDOR.url_lifetime)
    }
}

impl PollPolicy {
    /// The policy for URLs that live `lifetime` after their job completes.
    pub fn for_lifetime(lifetime: Duration) -> Self {
        Self::scaled(lifetime, 1)
    }

    /// [`PollPolicy::for_lifetime`] with vendor time running `scale` times faster (benchmarks
    /// against a sandbox with compressed time).
    pub fn scaled(lifetime: Duration, scale: u32) -> Self {
        let first = (Duration::from_millis(500) / scale.max(1)).min(lifetime / 8);
        PollPolicy {
            first,
            factor: 2.0,
            cap: (lifetime / 4).max(first),
        }
    }

    /// The wait before poll number `n` (0-based). `learned`: when the first poll is likely to
    /// find the job done ([`JobClock::first_wait`]); then the first poll waits that long (each
    /// poll is a request out of the rate limit), and a job not done by then is polled again
    /// soon after, backing off. Without it, polls back off from `first` to `cap`.
    pub fn delay(&self, n: u32, learned: Option<Duration>) -> Duration {
        let (base, steps) = match learned {
            Some(first) if n == 0 => return first.max(self.first),
            Some(first) => ((first / 10).max(self.first / 2), n - 1),
            None => (self.first, n),
        };
        // In floating point and capped before it becomes a Duration: never an overflow.
        let secs = base.as_secs_f64() * self.factor.powi(steps.min(60) as i32);
        if secs.is_finite() && secs < self.cap.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.cap
        }
    }
}

/// When a job is likely done, learned from the jobs seen so far, so that most jobs cost one
/// poll.
///
/// Each job that ended leaves a figure: the age at which a poll found it done, when its first
/// poll found it still running (a job that took several polls); or, when its first poll
/// sufficed, the wait that poll used, lowered a little ([`JobClock::DECAY`]), so that jobs
/// that become faster are noticed after a few dozen jobs at the cost of one extra poll. A
/// job's first poll waits [`JobClock::MARGIN`] × the median of the last
/// [`JobClock::REMEMBERED`] figures: one job that took far longer than the rest (the vendor
/// had a hiccup) does not make every later job's first poll late, which would hand over URLs
/// already near their end.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct JobClock {
    recent: std::collections::VecDeque<Duration>,
}

impl JobClock {
    pub const MARGIN: f64 = 1.2;
    /// A median of the last 8 figures follows a steady fall with a lag of about 4 figures:
    /// 0.988 a figure lowers the first wait by about 0.3% a job.
    pub const DECAY: f64 = 0.988;
    pub const REMEMBERED: usize = 8;

    /// How long after submitting a job to poll it first, once something is known.
    pub fn first_wait(&self) -> Option<Duration> {
        let mut figures: Vec<Duration> = self.recent.iter().copied().collect();
        figures.sort();
        figures
            .get(figures.len() / 2)
            .map(|t| t.mul_f64(Self::MARGIN))
    }

    /// A job ended: its first poll waited `first_wait` (if anything was known), it took
    /// `polls` polls, and the last of them, sent `found` after submission, found it ended.
    pub fn job_ended(&mut self, first_wait: Option<Duration>, polls: u32, found: Duration) {
        let figure = match first_wait {
            Some(wait) if polls <= 1 => wait.div_f64(Self::MARGIN).mul_f64(Self::DECAY),
            _ => found,
        };
        if self.recent.len() == Self::REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back(figure);
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The RFI responses feed (with its questions, whose attachments are files too).
pub const FEED_PATH: &str = "api/feeds/rfi-responses";

/// One page of the feed, read.
#[derive(Debug, PartialEq, Eq)]
pub struct FeedPage {
    /// The file UUIDs, in the order they appear.
    pub ids: Vec<Uuid>,
    /// Entries under the file keys that were not UUIDs.
    pub bad: usize,
    /// The next page's link if the body gives one (JSON:API `links.next`, or a top-level
    /// `next`), as given; an error if it is there but not a link.
    pub next: Option<Result<String, String>>,
}

/// Read one feed page. Never panics.
pub fn decode_feed(body: &[u8]) -> Result<FeedPage, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if !value.is_object() {
        return Err("not a JSON object".into());
    }
    let (mut ids, mut bad) = (Vec::new(), 0);
    collect_file_uuids(&value, &mut ids, &mut bad);
    Ok(FeedPage {
        ids,
        bad,
        next: body_next(&value),
    })
}

/// Most times one batch is submitted when its jobs keep failing.
pub const MAX_SUBMISSIONS: u32 = 3;
/// Most unreadable poll answers in a row before a job is given up.
pub const MAX_BAD_POLLS: u32 = 3;

pub struct Keelvar {
    api: ApiClient,
    job_timeout: Duration,
    poll: PollPolicy,
    /// How long URLs live after their job completes (the documented minute, unless time is
    /// compressed for a benchmark).
    url_lifetime: Duration,
    job_clock: std::sync::Mutex<JobClock>,
    /// Undocumented statuses already reported (each is said once).
    unknown_statuses: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Keelvar {
    pub fn new(
        api: ApiClient,
        job_timeout: Duration,
        poll: PollPolicy,
        url_lifetime: Duration,
    ) -> Self {
        Keelvar {
            api,
            job_timeout,
            poll,
            url_lifetime,
            job_clock: Default::default(),
            unknown_statuses: Default::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Job {
    #[serde(default)]
    id: Value,
    /// Not documented, but seen: the job's id under this name.
    #[serde(default)]
    job_id: Value,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    detail: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Detail {
    #[serde(default)]
    data: Vec<DataEntry>,
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Debug, Deserialize)]
struct DataEntry {
    #[serde(default)]
    file_uuid: Option<String>,
    #[serde(default)]
    file_name: Option<String>,
    #[serde(default)]
    download_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    file_uuid: Option<String>,
    #[serde(default)]
    error: Option<Value>,
}

/// How a job's status reads.
#[derive(Debug, PartialEq, Eq)]
pub enum JobState {
    Completed,
    /// Terminal, unsuccessful: the batch may be submitted again.
    Failed(String),
    Running,
    /// A word the documentation does not list: polled as running (until `--job-timeout`), and
    /// said once.
    Unknown(String),
}

impl JobState {
    /// Still going, as far as fetchdocs can tell.
    fn is_unfinished(&self) -> bool {
        matches!(self, JobState::Running | JobState::Unknown(_))
    }
}

/// `COMPLETED` is success; `FAILED` and other clearly terminal words are failure; the
/// documented and usual in-progress words (or no status) are running; anything else is unknown.
pub fn job_state(status: Option<&str>) -> JobState {
    let s = status.unwrap_or("").trim().to_ascii_uppercase();
    match s.as_str() {
        "COMPLETED" => JobState::Completed,
        "FAILED" | "CANCELLED" | "CANCELED" | "ERROR" | "ERRORED" | "ABORTED" | "EXPIRED"
        | "REJECTED" | "TIMED_OUT" => JobState::Failed(s),
        "" | "PENDING" | "QUEUED" | "RUNNING" | "IN_PROGRESS" | "PROCESSING" | "STARTED" => {
            JobState::Running
        }
        _ => JobState::Unknown(s),
    }
}

/// A Keelvar 400 in words: `file_uuids: must not be empty; request too large`.
pub fn describe_400(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        #[serde(default)]
        field_errors: serde_json::Map<String, Value>,
        #[serde(default)]
        errors: Vec<Value>,
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match serde_json::from_slice::<Body>(body) {
        Ok(b) if !b.field_errors.is_empty() || !b.errors.is_empty() => {
            let mut parts = Vec::new();
            for (field, msgs) in &b.field_errors {
                let msgs = match msgs {
                    Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(", "),
                    other => text(other),
                };
                parts.push(format!("{field}: {msgs}"));
            }
            parts.extend(b.errors.iter().map(text));
            parts.join("; ")
        }
        _ => format!("HTTP 400{}", describe_body(body)),
    }
}

fn auth_error(resp: &ApiResponse) -> ApiError {
    ApiError::Auth(Credentials::Keelvar {
        status: resp.status,
    })
}

fn job_id(v: &Value) -> Option<String> {
    let id = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    // The ID goes into a URL path: refuse anything that could step outside `/api/jobs/`.
    (!id.is_empty()
        && id.len() <= 200
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && id != "."
        && id != "..")
        .then_some(id)
}

enum JobEnd {
    /// The detail; the last moment the job was seen unfinished; the moment the answer that
    /// found it completed arrived.
    Completed(Option<Value>, Instant, Instant),
    Failed(String),
}

/// A job object (a submission's or a poll's answer), read.
#[derive(Debug)]
pub struct JobAnswer {
    /// The job's id, if it is one that can safely go into `/api/jobs/{id}`.
    pub id: Option<String>,
    pub state: JobState,
    /// `detail`: the files once COMPLETED, a reason once FAILED.
    pub detail: Option<Value>,
}

/// Read a job object. Never panics, whatever the bytes (fuzzed:
/// `fuzz/fuzz_targets/keelvar_response.rs`).
pub fn decode_job(body: &[u8]) -> Result<JobAnswer, String> {
    let job: Job = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(JobAnswer {
        id: job_id(&job.id).or_else(|| job_id(&job.job_id)),
        state: job_state(job.status.as_deref()),
        detail: job.detail,
    })
}

/// Read a completed job's `detail` for the `requested` IDs. The job completed somewhere
/// between `issued` (the last moment it was seen unfinished: URL ages count from there, so
/// they are never underestimated) and `expires` less the URLs' life (the answer that found it
/// completed): `expires` is the latest moment its URLs can still work. No detail at all means
/// no file came back. Never panics, whatever the value (fuzzed:
/// `fuzz/fuzz_targets/keelvar_response.rs`).
pub fn decode_completed(
    requested: &[Uuid],
    detail: Option<Value>,
    issued: Instant,
    expires: Instant,
) -> Result<MintOutcome, String> {
    let detail: Detail = match detail {
        Some(d) => serde_json::from_value(d).map_err(|e| e.to_string())?,
        None => Detail::default(),
    };
    let files = detail
        .data
        .into_iter()
        .filter_map(|d| {
            Some(RawFile {
                id: d.file_uuid?,
                url: d.download_url.unwrap_or_default(),
                label: d.file_name,
                issued,
                expires: Some(expires),
            })
        })
        .collect();
    let errors = detail
        .errors
        .into_iter()
        .filter_map(|e| Some((e.file_uuid?, reason_text(e.error))))
        .collect();
    Ok(reconcile(requested, files, errors))
}

/// Why a job ended unsuccessfully, from its `detail`.
fn failure_reason(detail: Option<&Value>) -> String {
    match detail {
        Some(Value::String(s)) => format!(": {s}"),
        None | Some(Value::Null) => String::new(),
        Some(other) => format!(
            ": {}",
            other.to_string().chars().take(200).collect::<String>()
        ),
    }
}

impl Keelvar {
    async fn submit(
        &self,
        ids: &[Uuid],
        slots: &Reservation,
    ) -> Result<(String, JobAnswer), ApiError> {
        let body = serde_json::json!({ "file_uuids": ids });
        let resp = self
            .api
            .send_in(
                Method::POST,
                "api/jobs/generate-file-download-links",
                Some(&body),
                Slot::First(slots),
            )
            .await?;
        match resp.status {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(auth_error(&resp)),
            status => {
                let said = match status {
                    StatusCode::BAD_REQUEST => describe_400(&resp.body),
                    _ => format!("HTTP {status}{}", describe_body(&resp.body)),
                };
                return Err(ApiError::Rejected(Rejected::JobRefused { status, said }));
            }
        }
        let job = decode_job(&resp.body)
            .map_err(|cause| ApiError::Request(Unusable::Submission { cause }))?;
        // The documented `id`, else `job_id`, else the job's address in `Location`.
        let from_location = || {
            let location = resp.headers.get(reqwest::header::LOCATION)?.to_str().ok()?;
            let path = location.split(['?', '#']).next()?;
            job_id(&Value::String(
                path.trim_end_matches('/').rsplit('/').next()?.into(),
            ))
        };
        let id = job
            .id
            .clone()
            .or_else(from_location)
            .ok_or(ApiError::Request(Unusable::NoJobId))?;
        Ok((id, job))
    }

    /// Poll until the job ends or the deadline passes. What each poll's answer means is
    /// [`read_poll`]'s to say; here the polls are only sent and their answers acted on.
    async fn wait(
        &self,
        id: &str,
        first: JobAnswer,
        submitted: Instant,
        deadline: Instant,
        slots: &Reservation,
    ) -> Result<JobEnd, ApiError> {
        let path = format!("api/jobs/{id}");
        // The job can have completed at any moment after the server last saw it unfinished:
        // that moment starts the URLs' 60 seconds.
        let mut last_unfinished = submitted;
        let mut job = first;
        let mut n = 0u32;
        let mut bad_polls = 0u32;
        // What was known of jobs' durations when this one was submitted: its first poll waits
        // that long; without it, this job's polls probe (its own polls teach the next jobs).
        let learned = lock(&self.job_clock).first_wait();
        loop {
            if let Some(end) = self.ended(id, job, last_unfinished) {
                return Ok(end);
            }
            let wait = self.poll.delay(n, learned);
            n += 1;
            let (resp, sent) = self.poll_once(id, &path, wait, deadline, slots).await?;
            job = match read_poll(id, &resp, &mut bad_polls) {
                Poll::Job(next) if next.state.is_unfinished() => {
                    last_unfinished = sent;
                    next
                }
                Poll::Job(next) => {
                    // Its answer's arrival: the poll itself may have waited for its slot.
                    let found = Instant::now().saturating_duration_since(submitted);
                    lock(&self.job_clock).job_ended(learned, n, found);
                    next
                }
                Poll::Again(why) => {
                    log::debug!("{why}; polling again");
                    JobAnswer {
                        id: None,
                        state: JobState::Running,
                        detail: None,
                    }
                }
                Poll::Vanished(why) => return Ok(JobEnd::Failed(why)),
                Poll::Fail(e) => return Err(e),
            };
        }
    }

    /// How the job ended, or `None` while it runs (a status the documentation does not list
    /// is taken as running, and said once for the run). `last_unfinished`: the last moment it
    /// was seen unfinished.
    fn ended(&self, id: &str, job: JobAnswer, last_unfinished: Instant) -> Option<JobEnd> {
        match job.state {
            JobState::Completed => Some(JobEnd::Completed(
                job.detail,
                last_unfinished,
                Instant::now(),
            )),
            JobState::Failed(status) => {
                let why = failure_reason(job.detail.as_ref());
                Some(JobEnd::Failed(format!("job {id} ended {status}{why}")))
            }
            JobState::Running => None,
            JobState::Unknown(word) => {
                if lock(&self.unknown_statuses).insert(word.clone()) {
                    log::warn!(
                        "Keelvar job {id} reports the status {word:?}, which the Keelvar \
                         documentation does not list; polling it as still running, until it \
                         completes or --job-timeout"
                    );
                }
                None
            }
        }
    }

    /// Wait `wait` (the last poll lands on the deadline itself, not short of it), then poll
    /// once; the answer and when the poll was sent. `--job-timeout` holds also while the poll
    /// waits out 429s.
    async fn poll_once(
        &self,
        id: &str,
        path: &str,
        wait: Duration,
        deadline: Instant,
        slots: &Reservation,
    ) -> Result<(ApiResponse, Instant), ApiError> {
        let timed_out = || {
            ApiError::Rejected(Rejected::JobTimeout {
                job: id.to_string(),
                limit: self.job_timeout,
            })
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(timed_out());
        }
        tokio::time::sleep(wait.min(deadline - now)).await;
        let sent = Instant::now();
        // The poll uses the slot promised to this job (see `mint`): it never waits for the
        // minute's window to roll over while the job's URLs age.
        let poll = self.api.send_in(Method::GET, path, None, Slot::Poll(slots));
        match tokio::time::timeout_at(deadline, poll).await {
            Ok(resp) => Ok((resp?, sent)),
            Err(_) => Err(timed_out()),
        }
    }
}

/// What one poll's answer means for the job `id`.
#[derive(Debug)]
enum Poll {
    /// The job as the answer describes it.
    Job(JobAnswer),
    /// An unreadable answer: one garbled answer does not lose the job, it is polled again.
    Again(Unusable),
    /// The job is gone (404, 410): it ended without its files.
    Vanished(String),
    /// The poll cannot go on.
    Fail(ApiError),
}

/// Read a poll's answer; `bad_polls`: unreadable answers in a row so far (a job is given up
/// after [`MAX_BAD_POLLS`] of them).
fn read_poll(id: &str, resp: &ApiResponse, bad_polls: &mut u32) -> Poll {
    match resp.status {
        s if s.is_success() => {}
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Poll::Fail(auth_error(resp)),
        StatusCode::NOT_FOUND | StatusCode::GONE => {
            return Poll::Vanished(format!("job {id} vanished (HTTP {})", resp.status.as_u16()));
        }
        status => {
            return Poll::Fail(ApiError::Request(Unusable::PollStatus {
                job: id.to_string(),
                status,
                body: body_text(&resp.body),
            }));
        }
    }
    match decode_job(&resp.body) {
        Ok(job) => {
            *bad_polls = 0;
            Poll::Job(job)
        }
        Err(cause) => {
            *bad_polls += 1;
            let why = Unusable::Poll {
                job: id.to_string(),
                cause,
            };
            match *bad_polls >= MAX_BAD_POLLS {
                true => Poll::Fail(ApiError::Request(why)),
                false => Poll::Again(why),
            }
        }
    }
}

impl Keelvar {
    /// The page after the feed page at `url`: wherever the feed says it, the `Link` header,
    /// else the body's link (`in_body`: JSON:API `links.next`, or a top-level `next`), resolved
    /// against `url`. `(next, None)`, or `(None, why the walk stops there)`.
    fn next_page(
        &self,
        headers: &reqwest::header::HeaderMap,
        url: &reqwest::Url,
        in_body: Option<Result<String, String>>,
    ) -> (Option<Cursor>, Option<String>) {
        let next = next_link(headers, url).or_else(|| {
            in_body.map(|target| {
                target.and_then(|t| {
                    url.join(&t)
                        .map_err(|e| format!("the next page's link is not a URL ({e})"))
                })
            })
        });
        match next {
            None => (None, None),
            Some(Err(e)) => (None, Some(e)),
            // The key goes to the API host only: a link elsewhere is not followed.
            Some(Ok(next)) if !self.api.is_api_origin(&next) => (
                None,
                Some(format!(
                    "the next page's link leads to {}, not the API host; not followed (the API \
                     key goes to the API host only)",
                    origin_of(&next)
                )),
            ),
            Some(Ok(next)) => (Some(Cursor::Url(next)), None),
        }
    }
}

impl Provider for Keelvar {
    fn vendor(&self) -> &'static Vendor {
        &VENDOR
    }

    fn api(&self) -> &ApiClient {
        &self.api
    }

    async fn list_page(
        &self,
        source: Source,
        page_size: u32,
        cursor: &Cursor,
    ) -> Result<Listed, ListError> {
        let url = match (source, cursor) {
            (Source::RfiResponses, Cursor::Start) => {
                let mut url = self.api.url(FEED_PATH);
                url.query_pairs_mut()
                    .append_pair("include", "questions")
                    .append_pair("page_size", &page_size.to_string());
                url
            }
            (Source::RfiResponses, Cursor::Url(url)) => url.clone(),
            _ => return Err(wrong_listing(&VENDOR, source).into()),
        };
        let resp = self.api.send_to(Method::GET, url.clone(), None).await?;
        match resp.status {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(auth_error(&resp).into());
            }
            StatusCode::NOT_FOUND => return Err(listing_not_found("Keelvar", &url, &resp.body)),
            status => {
                return Err(ApiError::Rejected(Rejected::FeedRefused {
                    status,
                    body: body_text(&resp.body),
                })
                .into());
            }
        }
        let mut page =
            decode_feed(&resp.body).map_err(|cause| ApiError::Request(Unusable::Feed { cause }))?;
        let (next, stop) = self.next_page(&resp.headers, &url, page.next.take());
        Ok(Listed {
            entries: page.ids.len() + page.bad,
            found: page
                .ids
                .into_iter()
                .map(|id| Found { id, label: None })
                .collect(),
            bad: page.bad,
            next,
            stop,
            at: Cursor::Url(url),
            total: None,
            notes: Vec::new(),
        })
    }

    /// `slots` holds this job's submission and a slot for its polls in every window of the
    /// budget until the job ends, so its URLs are fetched as soon as it completes (the
    /// scheduler decided this job only when both fit: `VENDOR.mint_need`).
    async fn mint(&self, ids: Vec<Uuid>, slots: Reservation) -> Result<MintOutcome, ApiError> {
        let mut last_failure = String::new();
        for attempt in 1..=MAX_SUBMISSIONS {
            let deadline = Instant::now() + self.job_timeout;
            let (id, job) = self.submit(&ids, &slots).await?;
            // When the submission was answered: the job exists from then at the latest (the
            // submission may have waited for its slot, a 429 or a retry before).
            let submitted = Instant::now();
            log::trace!("Keelvar job {id} submitted for {} file(s)", ids.len());
            match self.wait(&id, job, submitted, deadline, &slots).await? {
                JobEnd::Completed(detail, issued, found) => {
                    let expires = found + self.url_lifetime;
                    return decode_completed(&ids, detail, issued, expires)
                        .map_err(|cause| ApiError::Request(Unusable::Detail { job: id, cause }));
                }
                JobEnd::Failed(why) => {
                    log::debug!(
                        "{why}; {}",
                        if attempt < MAX_SUBMISSIONS {
                            "submitting the batch again"
                        } else {
                            "giving up on it"
                        }
                    );
                    last_failure = why;
                }
            }
        }
        Err(ApiError::Rejected(Rejected::JobFailed {
            times: MAX_SUBMISSIONS,
            last: last_failure,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(job_state(Some("COMPLETED")), JobState::Completed);
        assert_eq!(job_state(Some("completed")), JobState::Completed);
        assert!(matches!(job_state(Some("FAILED")), JobState::Failed(_)));
        assert!(matches!(job_state(Some("Cancelled")), JobState::Failed(_)));
        for running in [
            Some("PENDING"),
            Some("RUNNING"),
            Some("QUEUED"),
            Some("in_progress"),
            None,
            Some(""),
        ] {
            assert_eq!(job_state(running), JobState::Running, "{running:?}");
        }
        for terminal in ["ERROR", "CANCELED", "CANCELLED", "EXPIRED"] {
            assert!(matches!(job_state(Some(terminal)), JobState::Failed(_)));
        }
        assert_eq!(
            job_state(Some("Warming_Up")),
            JobState::Unknown("WARMING_UP".into())
        );
    }

    #[test]
    fn feed_pages_are_read_or_refused_never_panicking() {
        let id = Uuid::from_u128(77);
        let page = format!(r#"{{"data": [{{"document_file_uuids": ["{id}", "nope"]}}]}}"#);
        assert_eq!(
            decode_feed(page.as_bytes()),
            Ok(FeedPage {
                ids: vec![id],
                bad: 1,
                next: None
            })
        );
        assert!(decode_feed(b"[1, 2]").is_err());
        assert!(decode_feed(b"{\"data\": [").is_err());
        // Deeper than any parser should follow: an error, not a crash.
        let deep = format!("{{\"a\": {}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(decode_feed(deep.as_bytes()).is_err());
    }

    #[test]
    fn poll_backs_off_to_a_cap() {
        let p = PollPolicy::default();
        assert_eq!(p.delay(0, None), Duration::from_millis(500));
        assert_eq!(p.delay(1, None), Duration::from_secs(1));
        // Capped at a quarter of the URLs' minute: a job found done late still hands over
        // URLs with most of their life left.
        assert_eq!(p.delay(30, None), Duration::from_secs(15));
        assert_eq!(p.delay(u32::MAX, None), Duration::from_secs(15));
        // Shorter-lived URLs, shorter waits.
        let short = PollPolicy::for_lifetime(Duration::from_secs(20));
        assert_eq!(short.delay(30, None), Duration::from_secs(5));
    }

    #[test]
    fn the_first_poll_waits_for_the_learned_time_then_polls_come_soon() {
        let p = PollPolicy::default();
        let learned = Some(Duration::from_secs(2));
        assert_eq!(p.delay(0, learned), Duration::from_secs(2));
        // A job not done by then is asked again soon, backing off.
        assert_eq!(p.delay(1, learned), Duration::from_millis(250));
        assert!(p.delay(2, learned) > p.delay(1, learned));
        // Long jobs are not capped at the backoff's cap: one poll, late, not many.
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
        // Fast jobs never poll faster than the policy's first step.
        assert_eq!(
            p.delay(0, Some(Duration::from_millis(10))),
            Duration::from_millis(500)
        );
    }

    /// Simulate jobs that each take `job`: how many polls the run costs.
    /// Simulate jobs that each take `job`: how many polls the run costs, and the first poll's
    /// wait for each job.
    fn polls_for(jobs: usize, job: impl Fn(usize) -> Duration) -> (usize, Vec<Duration>) {
        let p = PollPolicy::default();
        let mut clock = JobClock::default();
        let mut polls = 0;
        let mut firsts = Vec::new();
        for j in 0..jobs {
            let learned = clock.first_wait();
            firsts.push(p.delay(0, learned));
            let mut age = Duration::ZERO;
            for n in 0.. {
                age += p.delay(n, learned);
                polls += 1;
                if age >= job(j) {
                    clock.job_ended(learned, n + 1, age);
                    break;
                }
            }
        }
        (polls, firsts)
    }

    #[test]
    fn most_jobs_cost_one_poll_once_their_time_is_learned() {
        // 60 jobs of a second each (3,000 files in full batches of 50).
        let (polls, _) = polls_for(60, |_| Duration::from_secs(1));
        assert!(polls <= 64, "{polls} polls for 60 jobs");
        // 200 jobs (10,000 files).
        let (polls, _) = polls_for(200, |_| Duration::from_secs(1));
        assert!(polls <= 210, "{polls} polls for 200 jobs");
        // Jobs that vary between 0.8 and 1.2 s.
        let (polls, _) = polls_for(60, |j| Duration::from_millis(800 + (j as u64 * 37) % 400));
        assert!(polls <= 72, "{polls} polls for 60 varying jobs");
        // Jobs that become much faster are noticed: the first poll comes earlier again.
        let (_, firsts) = polls_for(400, |j| {
            Duration::from_millis(if j < 10 { 2000 } else { 200 })
        });
        assert!(
            firsts[399] < firsts[10] / 2,
            "{:?} then {:?}",
            firsts[10],
            firsts[399]
        );
    }

    #[test]
    fn one_slow_job_does_not_make_later_first_polls_late() {
        // Jobs of 10 s, one of which took 130 s (the vendor had a hiccup).
        let (_, firsts) = polls_for(40, |j| Duration::from_secs(if j == 20 { 130 } else { 10 }));
        for (j, first) in firsts.iter().enumerate().skip(21) {
            assert!(
                *first < Duration::from_secs(20),
                "job {j}: first poll at {first:?}"
            );
        }
    }

    #[test]
    fn waits_never_overflow_however_long_the_learned_time() {
        let p = PollPolicy::default();
        let learned = Some(Duration::from_secs(1_000_000));
        for n in [0, 1, 61, 1000, u32::MAX] {
            assert!(p.delay(n, learned) >= p.cap.min(Duration::from_secs(1)));
        }
    }

    #[test]
    fn bad_request_in_words() {
        let body = br#"{"field_errors": {"file_uuids": ["must hold 1 to 50 items"]}, "errors": ["try again"]}"#;
        assert_eq!(
            describe_400(body),
            "file_uuids: must hold 1 to 50 items; try again"
        );
        assert_eq!(describe_400(br#"{"errors": ["nope"]}"#), "nope");
        assert_eq!(describe_400(b"<html>"), "HTTP 400: <html>");
    }

    #[test]
    fn a_job_is_named_by_id_or_job_id() {
        let read = |b: &str| decode_job(b.as_bytes()).unwrap().id;
        assert_eq!(
            read(r#"{"id": "j1", "status": "PENDING"}"#),
            Some("j1".into())
        );
        assert_eq!(
            read(r#"{"job_id": 7, "status": "PENDING"}"#),
            Some("7".into())
        );
        assert_eq!(read(r#"{"id": "j1", "job_id": "j2"}"#), Some("j1".into()));
        assert_eq!(read(r#"{"status": "PENDING"}"#), None);
    }

    fn poll_answer(status: u16, body: &str) -> ApiResponse {
        ApiResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: Default::default(),
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn a_poll_answer_is_the_job_or_says_why_not() {
        let mut bad = 0;
        let read = |status, body, bad: &mut u32| read_poll("j1", &poll_answer(status, body), bad);
        let running = read(200, r#"{"id": "j1", "status": "RUNNING"}"#, &mut bad);
        assert!(
            matches!(&running, Poll::Job(j) if j.state == JobState::Running),
            "{running:?}"
        );
        let done = read(
            200,
            r#"{"status": "COMPLETED", "detail": {"data": []}}"#,
            &mut bad,
        );
        assert!(
            matches!(&done, Poll::Job(j) if j.state == JobState::Completed && j.detail.is_some()),
            "{done:?}"
        );
        for status in [404, 410] {
            let Poll::Vanished(why) = read(status, "", &mut bad) else {
                panic!("{status}")
            };
            assert_eq!(why, format!("job j1 vanished (HTTP {status})"));
        }
        for status in [401, 403] {
            let answer = read(status, "", &mut bad);
            assert!(
                matches!(
                    &answer,
                    Poll::Fail(ApiError::Auth(Credentials::Keelvar { .. }))
                ),
                "{answer:?}"
            );
        }
        let Poll::Fail(e) = read(400, "nope", &mut bad) else {
            panic!("a 400 is final")
        };
        assert_eq!(
            e.to_string(),
            "polling Keelvar job j1: HTTP 400 Bad Request: nope"
        );
    }

    #[test]
    fn unreadable_poll_answers_are_polled_again_a_few_times_in_a_row() {
        let mut bad = 0;
        let garbled = poll_answer(200, "<html>");
        for _ in 1..MAX_BAD_POLLS {
            let Poll::Again(why) = read_poll("j1", &garbled, &mut bad) else {
                panic!("polled again")
            };
            assert!(
                why.to_string()
                    .starts_with("polling Keelvar job j1: unreadable answer ("),
                "{why}"
            );
        }
        // A readable answer in between starts the count over.
        let fine = poll_answer(200, r#"{"status": "RUNNING"}"#);
        assert!(matches!(read_poll("j1", &fine, &mut bad), Poll::Job(_)));
        assert_eq!(bad, 0);
        for _ in 1..MAX_BAD_POLLS {
            assert!(matches!(
                read_poll("j1", &garbled, &mut bad),
                Poll::Again(_)
            ));
        }
        let last = read_poll("j1", &garbled, &mut bad);
        assert!(
            matches!(&last, Poll::Fail(ApiError::Request(Unusable::Poll { .. }))),
            "{last:?}"
        );
    }

    #[test]
    fn job_ids_cannot_escape_the_jobs_path() {
        assert_eq!(
            job_id(&serde_json::json!("abc-123")),
            Some("abc-123".into())
        );
        assert_eq!(job_id(&serde_json::json!(42)), Some("42".into()));
        assert_eq!(job_id(&serde_json::json!("../files")), None);
        assert_eq!(job_id(&serde_json::json!("a/b")), None);
        assert_eq!(job_id(&serde_json::json!("..")), None);
        assert_eq!(job_id(&serde_json::json!(null)), None);
    }
}
