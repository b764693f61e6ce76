//! The Keelvar job API: submit a batch, poll until COMPLETED; URLs die a while after completion.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::rate::{RateHeaders, Vendor};
use crate::shared::{FaultKind, Shared};
use crate::{CatalogFile, key_of, lock, parse_api_uuid};

/// Most jobs remembered; the oldest are forgotten first (a long-running sandbox stays bounded).
const MAX_JOBS: usize = 50_000;

pub(crate) struct Job {
    ids: Vec<Uuid>,
    created_ms: u64,
    polls: u32,
    /// When the poll that met `polls_to_complete` arrived (the submission, with 0).
    polled_enough_ms: Option<u64>,
    fail: bool,
    /// Once terminal: the status and the detail, fixed from then on.
    end: Option<(&'static str, Value)>,
}

#[derive(Default)]
pub(crate) struct Jobs {
    by_id: HashMap<String, Job>,
    order: VecDeque<String>,
}

impl Jobs {
    /// Keep `job` under `id`, forgetting the oldest jobs past [`MAX_JOBS`].
    fn remember(&mut self, id: String, job: Job) {
        self.by_id.insert(id.clone(), job);
        self.order.push_back(id);
        while self.order.len() > MAX_JOBS {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/jobs/generate-file-download-links", post(submit))
        .route("/api/jobs/{id}", get(poll))
        .route("/api/feeds/rfi-responses", get(feed))
}

/// Rate limit, injected 5xx, then the Bearer key: none → 401, wrong → 403 with an empty body.
fn gate(
    shared: &Shared,
    headers: &HeaderMap,
    fault_key: u64,
) -> Result<Option<RateHeaders>, Box<Response>> {
    let limits = match shared.admit_api(Vendor::Keelvar) {
        Ok(l) => l,
        Err(wait) => {
            return Err(Box::new(throttled(
                wait.as_secs_f64().ceil().max(1.0) as u64
            )));
        }
    };
    let f = &shared.cfg.faults;
    if shared.fault(FaultKind::Api5xx, f.api_5xx_percent, fault_key) {
        shared.stats.api_5xx.fetch_add(1, Ordering::SeqCst);
        return Err(Box::new(
            (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response(),
        ));
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|_| !control!(false, shared.cfg.keelvar.test.strip_auth));
    match auth.and_then(|a| a.strip_prefix("Bearer ")) {
        Some(k) if k == shared.cfg.keelvar.key => Ok(limits),
        Some(_) => {
            shared.stats.api_unauthorized.fetch_add(1, Ordering::SeqCst);
            Err(Box::new(StatusCode::FORBIDDEN.into_response()))
        }
        None => {
            shared.stats.api_unauthorized.fetch_add(1, Ordering::SeqCst);
            Err(Box::new(
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"detail": "Authentication credentials were not provided."})),
                )
                    .into_response(),
            ))
        }
    }
}

/// Keelvar's 429, with `Retry-After: secs`.
fn throttled(secs: u64) -> Response {
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({"detail": "Request was throttled."})),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

fn bad_request(field: Option<&str>, msg: &str) -> Response {
    let body = match field {
        Some(f) => json!({"field_errors": {f: [msg]}}),
        None => json!({"errors": [msg]}),
    };
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

pub(crate) async fn submit(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let limits = match gate(&shared, &headers, key_of(&body)) {
        Ok(l) => l,
        Err(resp) => return *resp,
    };
    let ids = match job_ids(&body) {
        Ok(ids) => ids,
        Err(resp) => return *resp,
    };
    let stats = &shared.stats;
    let n = stats.jobs_submitted.fetch_add(1, Ordering::SeqCst);
    stats.mint_batches.fetch_add(1, Ordering::SeqCst);
    stats
        .max_batch
        .fetch_max(ids.len() as u64, Ordering::SeqCst);
    let kcfg = &shared.cfg.keelvar;
    let id = Uuid::new_v4().to_string();
    let now = shared.now_ms();
    let mut job = Job {
        ids,
        created_ms: now,
        polls: 0,
        polled_enough_ms: (kcfg.polls_to_complete == 0).then_some(now),
        fail: n < u64::from(kcfg.fail_first_jobs),
        end: None,
    };
    settle(&shared, &mut job, now);
    let resp = job_json(&shared, &id, &job);
    lock(&shared.jobs).remember(id.clone(), job);
    let mut resp = (StatusCode::CREATED, axum::Json(resp)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/jobs/{id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    shared.with_rate_headers(resp, limits)
}

/// The IDs of a job submission's body, or its 400: a JSON object whose `file_uuids` holds 1 to
/// 50 UUIDs.
fn job_ids(body: &str) -> Result<Vec<Uuid>, Box<Response>> {
    let invalid = |field: Option<&str>, msg: &str| Box::new(bad_request(field, msg));
    let parsed: Value =
        serde_json::from_str(body).map_err(|_| invalid(None, "JSON parse error"))?;
    let list = parsed
        .get("file_uuids")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(Some("file_uuids"), "This field is required."))?;
    if list.is_empty() || list.len() > 50 {
        return Err(invalid(
            Some("file_uuids"),
            "Ensure this field has 1 to 50 elements.",
        ));
    }
    list.iter()
        .map(|v| {
            v.as_str()
                .and_then(|s| parse_api_uuid(s, false))
                .ok_or_else(|| invalid(Some("file_uuids"), &format!("{v} is not a valid UUID.")))
        })
        .collect()
}

/// Make a job terminal if its work is done by `now` (sandbox ms). The work is done at the later
/// of `min_job_time` after submission and the poll that met `polls_to_complete`: that is when
/// the job completed, whenever the client asks.
fn settle(shared: &Shared, job: &mut Job, now: u64) {
    let kcfg = &shared.cfg.keelvar;
    if job.end.is_some() || control!(false, kcfg.test.never_complete) {
        return;
    }
    let Some(polled_enough) = job.polled_enough_ms else {
        return;
    };
    let done = polled_enough.max(job.created_ms + kcfg.min_job_time.as_millis() as u64);
    if now >= done {
        finish(shared, job, done);
    }
}

/// Make a job terminal: FAILED if it is to fail, else COMPLETED with URLs signed valid from
/// `done` (the moment its work was done, sandbox ms). The answer that carries them is about to
/// be sent: they count as minted now, once.
fn finish(shared: &Shared, job: &mut Job, done: u64) {
    if job.fail {
        shared.stats.jobs_failed.fetch_add(1, Ordering::SeqCst);
        job.end = Some(("FAILED", json!("Internal error while generating links")));
        return;
    }
    let lifetime = shared.cfg.keelvar.url_lifetime;
    let mut data = Vec::new();
    let mut errors = Vec::new();
    for id in job.ids.iter().filter(|id| !shared.omitted(id)) {
        match shared.cfg.catalog.get(id) {
            Some(f) if !f.denied => data.push(json!({
                "file_uuid": id,
                "file_name": f.label,
                "download_url": shared.sign_url(id, done, lifetime, false),
            })),
            Some(_) => errors.push(json!({"file_uuid": id, "error": "permission_denied"})),
            None => errors.push(json!({"file_uuid": id, "error": "not_found"})),
        }
    }
    shared
        .stats
        .urls_minted
        .fetch_add(data.len() as u64, Ordering::SeqCst);
    job.end = Some(("COMPLETED", json!({"data": data, "errors": errors})));
}

fn job_json(shared: &Shared, id: &str, job: &Job) -> Value {
    let (status, detail) = match &job.end {
        Some((s, d)) => (*s, d.clone()),
        None if job.polls == 0 => ("PENDING", Value::Null),
        None => (
            match control!("", shared.cfg.keelvar.test.running_status) {
                "" => "RUNNING",
                word => word,
            },
            Value::Null,
        ),
    };
    let mut body = json!({
        "type": "GENERATE_FILE_DOWNLOAD_LINKS",
        "status": status,
        "created": shared.rfc3339_at(job.created_ms),
        "detail": detail,
    });
    match control!("", shared.cfg.keelvar.test.job_id_as) {
        "location" => {}
        "" => body["id"] = json!(id),
        field => body[field] = json!(id),
    }
    body
}

pub(crate) async fn poll(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let limits = match gate(&shared, &headers, key_of(&id)) {
        Ok(l) => l,
        Err(resp) => return *resp,
    };
    shared.stats.job_polls.fetch_add(1, Ordering::SeqCst);
    if control!(false, shared.cfg.keelvar.test.throttle_polls) {
        shared.stats.api_throttled.fetch_add(1, Ordering::SeqCst);
        return throttled(shared.forced_retry_after().as_secs());
    }
    if shared.fault(
        FaultKind::Garbage,
        control!(0, shared.cfg.faults.test.api_garbage_percent),
        key_of(&id),
    ) {
        return ([("content-type", "application/json")], r#"{"id": "#).into_response();
    }
    let mut jobs = lock(&shared.jobs);
    let Some(job) = jobs.by_id.get_mut(&id) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"detail": "Not found."})),
        )
            .into_response();
    };
    job.polls += 1;
    let now = shared.now_ms();
    if job.polled_enough_ms.is_none() && job.polls >= shared.cfg.keelvar.polls_to_complete {
        job.polled_enough_ms = Some(now);
    }
    settle(&shared, job, now);
    let body = job_json(&shared, &id, job);
    drop(jobs);
    shared.with_rate_headers(axum::Json(body).into_response(), limits)
}

#[derive(serde::Deserialize)]
pub(crate) struct FeedQuery {
    page_size: Option<usize>,
    cursor: Option<String>,
    include: Option<String>,
}

/// `GET /api/feeds/rfi-responses`: RFI responses, two catalog files each: one in the
/// response's `document_file_uuids`, one in an attachment (on an included question, or, every
/// third response, nested inside the response's answers). Every seventh response names a file
/// of an earlier one again. Pages by cursor; the next page's URL is in `Link: rel="next"`.
async fn feed(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<FeedQuery>,
) -> Response {
    let limits = match gate(&shared, &headers, key_of(&q.cursor)) {
        Ok(l) => l,
        Err(resp) => return *resp,
    };
    let (start, page_size) = match feed_page(&q) {
        Ok(page) => page,
        Err(resp) => return *resp,
    };
    if let Some(resp) = shared.listing_fault((start / page_size) as u32 + 1) {
        return resp;
    }
    let files = shared.cfg.catalog.files();
    let responses = files.len().div_ceil(2);
    let with_questions = q
        .include
        .as_deref()
        .is_some_and(|i| i.split(',').any(|p| p == "questions"));
    let end = (start + page_size).min(responses);
    let (data, included) = rfi_responses(files, start..end, with_questions);
    let mut body = json!({"data": data, "included": included});
    // Where the link is put: the header unless told otherwise.
    let link_in: &str = control!("", shared.cfg.faults.test.listing_next_in);
    let endless = control!(false, shared.cfg.faults.test.listing_endless);
    let link = (start + page_size < responses || endless)
        .then(|| next_link(&shared, &headers, start, page_size, link_in));
    let resp = match place_link(link_in, &mut body, link) {
        Some(link) => with_link_header(axum::Json(body).into_response(), &link),
        None => axum::Json(body).into_response(),
    };
    shared.with_rate_headers(resp, limits)
}

/// `resp` with `Link: <link>; rel="next"`.
fn with_link_header(mut resp: Response, link: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("<{link}>; rel=\"next\"")) {
        resp.headers_mut().insert(header::LINK, v);
    }
    resp
}

/// The page a feed request asks for, as `(start, page_size)` (the cursor `r{N}` starts at
/// response N), or the 400 for a page size out of 10..=200 or a cursor that is not one.
fn feed_page(q: &FeedQuery) -> Result<(usize, usize), Box<Response>> {
    let page_size = q.page_size.unwrap_or(50);
    if !(10..=200).contains(&page_size) {
        return Err(Box::new(bad_request(
            Some("page_size"),
            "Ensure this value is between 10 and 200.",
        )));
    }
    let start = match q.cursor.as_deref() {
        None => 0,
        Some(c) => c
            .strip_prefix('r')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Box::new(bad_request(Some("cursor"), "Invalid cursor")))?,
    };
    Ok((start, page_size))
}

/// The RFI responses numbered `range` (see [`feed`]), and the questions they attach files to
/// where the client asked for them to be included.
fn rfi_responses(
    files: &[CatalogFile],
    range: std::ops::Range<usize>,
    with_questions: bool,
) -> (Vec<Value>, Vec<Value>) {
    let mut data = Vec::new();
    let mut included = Vec::new();
    for r in range {
        let mut docs = vec![files[2 * r].id.to_string()];
        if r % 7 == 6 {
            docs.push(files[2 * (r - 3)].id.to_string());
        }
        let mut response = json!({
            "id": format!("resp-{r}"),
            "type": "rfi_response",
            "document_file_uuids": docs,
            "answers": [],
        });
        if let Some(att) = files.get(2 * r + 1) {
            if r % 3 == 0 {
                response["answers"] = json!([{"question": format!("q-{r}"), "detail": {"attachment_file_uuids": [att.id.to_string()]}}]);
            } else if with_questions {
                included.push(json!({
                    "id": format!("q-{r}"),
                    "type": "question",
                    "attachment_file_uuids": [att.id.to_string()],
                }));
            }
        }
        data.push(response);
    }
    (data, included)
}

/// The URL of the page after the one at `start`: on the host the client asked (a path only
/// where the link goes in `links`), or as a fault has it: back to the first page
/// (`listing_cycle_after`), or on another host (`listing_foreign_next`, from the first page).
fn next_link(
    shared: &Shared,
    headers: &HeaderMap,
    start: usize,
    page_size: usize,
    link_in: &str,
) -> String {
    #[cfg(not(feature = "test-controls"))]
    let _ = shared;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let next = start + page_size;
    let path =
        format!("/api/feeds/rfi-responses?include=questions&page_size={page_size}&cursor=r{next}");
    let cycle = control!(
        false,
        shared.cfg.faults.test.listing_cycle_after == Some((start / page_size) as u32 + 1)
    );
    let own = if cycle {
        // Back to the first page, by the very URL a client asks for it.
        format!("http://{host}/api/feeds/rfi-responses?include=questions&page_size={page_size}")
    } else if link_in == "links" {
        // JSON:API servers often give a path.
        path
    } else {
        format!("http://{host}{path}")
    };
    let foreign: Option<String> = control!(
        None,
        shared
            .cfg
            .faults
            .test
            .listing_foreign_next
            .clone()
            .filter(|_| start == 0)
    );
    foreign.unwrap_or(own)
}

/// Put the next page's link (or its absence) in the body where `link_in` says (see
/// `listing_next_in`); or, as documented, give it back for the `Link` header.
fn place_link(link_in: &str, body: &mut Value, link: Option<String>) -> Option<String> {
    match link_in {
        "links" => body["links"] = json!({ "next": link }),
        "links-href" => body["links"] = json!({ "next": link.map(|l| json!({ "href": l })) }),
        "next" => body["next"] = json!(link),
        _ => return link,
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use serde_json::{Value, json};

    use super::*;
    use crate::testkit::{self, validity};
    use crate::{Catalog, SandboxConfig};

    /// A sandbox of one file whose jobs complete after `polls` polls and `job_ms`, URLs living
    /// `lifetime_s`.
    fn sandbox(polls: u32, job_ms: u64, lifetime_s: u64) -> Arc<Shared> {
        let mut cfg = SandboxConfig::new(Catalog::generate(1, 3));
        cfg.keelvar.polls_to_complete = polls;
        cfg.keelvar.min_job_time = Duration::from_millis(job_ms);
        cfg.keelvar.url_lifetime = Duration::from_secs(lifetime_s);
        testkit::shared(cfg)
    }

    /// Submit a job for the sandbox's file: its id and the answer.
    async fn submit_job(shared: &Arc<Shared>) -> (String, Value) {
        let id = shared.cfg.catalog.files()[0].id;
        let body = format!(r#"{{"file_uuids": ["{id}"]}}"#);
        let resp = submit(State(shared.clone()), testkit::keelvar_auth(shared), body).await;
        let (status, _, job) = testkit::read(resp).await;
        assert_eq!(status, StatusCode::CREATED, "{job}");
        (job["id"].as_str().unwrap().to_string(), job)
    }

    async fn poll_job(shared: &Arc<Shared>, id: &str) -> Value {
        let resp = poll(
            State(shared.clone()),
            Path(id.to_string()),
            testkit::keelvar_auth(shared),
        )
        .await;
        testkit::read(resp).await.2
    }

    fn url_of(job: &Value) -> &str {
        assert_eq!(job["status"], "COMPLETED", "{job}");
        job["detail"]["data"][0]["download_url"].as_str().unwrap()
    }

    async fn advance_to(shared: &Shared, ms: u64) {
        let now = shared.now_ms();
        assert!(ms >= now);
        tokio::time::advance(Duration::from_millis(ms - now)).await;
        assert_eq!(shared.now_ms(), ms);
    }

    /// Polled enough early, the job is done at created + job time: polled 29 s after that, its
    /// URL has been valid since then, and a minute from then it dies.
    #[tokio::test(start_paused = true)]
    async fn a_late_poll_gets_urls_signed_when_the_job_completed() {
        let shared = sandbox(1, 1000, 60);
        let (id, job) = submit_job(&shared).await;
        assert_eq!(job["status"], "PENDING");
        advance_to(&shared, 200).await;
        assert_eq!(poll_job(&shared, &id).await["status"], "RUNNING");
        advance_to(&shared, 30_000).await;
        let job = poll_job(&shared, &id).await;
        assert_eq!(validity(url_of(&job)), (1000, 61_000));
        // Polled again, the same URLs.
        advance_to(&shared, 40_000).await;
        assert_eq!(poll_job(&shared, &id).await["detail"], job["detail"]);
        assert_eq!(shared.stats.snapshot().urls_minted, 1);
    }

    /// When the poll that the job waits for comes after its job time, the job completes at
    /// that poll.
    #[tokio::test(start_paused = true)]
    async fn the_last_needed_poll_completes_a_job_past_its_job_time() {
        let shared = sandbox(2, 1000, 60);
        let (id, _) = submit_job(&shared).await;
        advance_to(&shared, 500).await;
        assert_eq!(poll_job(&shared, &id).await["status"], "RUNNING");
        advance_to(&shared, 5000).await;
        let job = poll_job(&shared, &id).await;
        assert_eq!(validity(url_of(&job)), (5000, 65_000));
    }

    /// With no polls needed, the submission counts: a job first polled after its URLs' lifetime
    /// hands out URLs that are already dead.
    #[tokio::test(start_paused = true)]
    async fn a_job_polled_after_its_urls_died_hands_out_dead_urls() {
        let shared = sandbox(0, 1000, 2);
        let (id, job) = submit_job(&shared).await;
        assert_eq!(job["status"], "PENDING", "not done before its job time");
        advance_to(&shared, 10_000).await;
        let job = poll_job(&shared, &id).await;
        let url = url_of(&job);
        assert_eq!(validity(url), (1000, 3000));
        assert_eq!(
            crate::files::fetch(&shared, url).await,
            StatusCode::FORBIDDEN
        );
        let s = shared.stats.snapshot();
        assert_eq!((s.expired_hits, s.urls_minted, s.urls_used), (1, 1, 1));
    }

    /// No polls and no job time: the submission's answer is COMPLETED already.
    #[tokio::test(start_paused = true)]
    async fn a_job_with_nothing_to_wait_for_completes_at_submission() {
        let shared = sandbox(0, 0, 60);
        advance_to(&shared, 700).await;
        let (_, job) = submit_job(&shared).await;
        assert_eq!(validity(url_of(&job)), (700, 60_700));
        assert_eq!(shared.stats.snapshot().urls_minted, 1);
    }

    /// Jobs set to fail still end FAILED (at their completion), with no URLs.
    #[tokio::test(start_paused = true)]
    async fn a_failing_job_ends_failed_when_its_work_is_done() {
        let mut cfg = SandboxConfig::new(Catalog::generate(1, 3));
        cfg.keelvar.polls_to_complete = 1;
        cfg.keelvar.min_job_time = Duration::from_secs(1);
        cfg.keelvar.fail_first_jobs = 1;
        let shared = testkit::shared(cfg);
        let (id, _) = submit_job(&shared).await;
        assert_eq!(poll_job(&shared, &id).await["status"], "RUNNING");
        advance_to(&shared, 1000).await;
        assert_eq!(poll_job(&shared, &id).await["status"], "FAILED");
        let s = shared.stats.snapshot();
        assert_eq!((s.jobs_failed, s.urls_minted), (1, 0));
    }

    fn query(page_size: Option<usize>, cursor: Option<&str>) -> FeedQuery {
        FeedQuery {
            page_size,
            cursor: cursor.map(str::to_string),
            include: None,
        }
    }

    #[test]
    fn a_feed_page_starts_at_its_cursor_and_is_50_by_default() {
        assert_eq!(feed_page(&query(None, None)).ok(), Some((0, 50)));
        assert_eq!(
            feed_page(&query(Some(10), Some("r30"))).ok(),
            Some((30, 10))
        );
        assert_eq!(feed_page(&query(Some(200), None)).ok(), Some((0, 200)));
    }

    #[tokio::test]
    async fn a_feed_page_size_out_of_range_is_a_400_on_page_size() {
        for size in [9, 201] {
            let resp = feed_page(&query(Some(size), None)).unwrap_err();
            let (status, _, body) = testkit::read(*resp).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{size}");
            assert!(body["field_errors"]["page_size"].is_array(), "{body}");
        }
    }

    #[tokio::test]
    async fn a_feed_cursor_not_of_the_feeds_making_is_a_400_on_cursor() {
        for cursor in ["", "r", "30", "rx", "r-1"] {
            let resp = feed_page(&query(None, Some(cursor))).unwrap_err();
            let (status, _, body) = testkit::read(*resp).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{cursor:?}");
            assert!(body["field_errors"]["cursor"].is_array(), "{body}");
        }
    }

    /// Response 0 nests its attachment in its answers (every third does); response 1's is on
    /// an included question, when questions are asked for; response 6 names response 3's
    /// document again.
    #[test]
    fn rfi_responses_hold_two_files_each_as_the_feed_documents() {
        let catalog = Catalog::generate(14, 8);
        let files = catalog.files();
        let id = |i: usize| json!(files[i].id.to_string());
        let (data, included) = rfi_responses(files, 0..7, true);
        assert_eq!(data.len(), 7);
        assert_eq!(data[0]["document_file_uuids"], json!([id(0)]));
        assert_eq!(
            data[0]["answers"][0]["detail"]["attachment_file_uuids"],
            json!([id(1)])
        );
        assert_eq!(data[1]["answers"], json!([]));
        assert_eq!(included[0]["id"], "q-1");
        assert_eq!(included[0]["attachment_file_uuids"], json!([id(3)]));
        assert_eq!(data[6]["document_file_uuids"], json!([id(12), id(6)]));
        let (_, without) = rfi_responses(files, 0..7, false);
        assert!(without.is_empty());
    }

    #[test]
    fn the_next_link_goes_where_listing_next_in_says() {
        let link = || Some("http://h/next".to_string());
        let mut body = json!({});
        assert_eq!(place_link("", &mut body, link()), link(), "the Link header");
        assert_eq!(body, json!({}));
        for (link_in, expected) in [
            ("links", json!({"links": {"next": "http://h/next"}})),
            (
                "links-href",
                json!({"links": {"next": {"href": "http://h/next"}}}),
            ),
            ("next", json!({"next": "http://h/next"})),
        ] {
            let mut body = json!({});
            assert_eq!(place_link(link_in, &mut body, link()), None, "{link_in}");
            assert_eq!(body, expected, "{link_in}");
        }
        let mut last = json!({});
        assert_eq!(place_link("links", &mut last, None), None);
        assert_eq!(
            last,
            json!({"links": {"next": null}}),
            "the last page says so"
        );
    }

    async fn job_refusal(body: &str) -> Value {
        let resp = job_ids(body).expect_err(body);
        let (status, _, v) = testkit::read(*resp).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        v
    }

    #[tokio::test]
    async fn a_job_is_1_to_50_uuids_in_file_uuids() {
        let v4 = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
        let ids = job_ids(&format!(r#"{{"file_uuids": ["{v4}"]}}"#)).unwrap();
        assert_eq!(ids, vec![v4.parse::<Uuid>().unwrap()]);
        assert_eq!(
            job_refusal("{").await,
            json!({"errors": ["JSON parse error"]})
        );
        let required = json!({"field_errors": {"file_uuids": ["This field is required."]}});
        assert_eq!(job_refusal(r#"{"ids": []}"#).await, required);
        let count =
            json!({"field_errors": {"file_uuids": ["Ensure this field has 1 to 50 elements."]}});
        assert_eq!(job_refusal(r#"{"file_uuids": []}"#).await, count);
        let too_many = vec![format!("\"{v4}\""); 51].join(",");
        assert_eq!(
            job_refusal(&format!(r#"{{"file_uuids": [{too_many}]}}"#)).await,
            count
        );
        assert_eq!(
            job_refusal(r#"{"file_uuids": ["nope"]}"#).await,
            json!({"field_errors": {"file_uuids": ["\"nope\" is not a valid UUID."]}})
        );
    }

    #[test]
    fn past_max_jobs_the_oldest_job_is_forgotten() {
        let job = || Job {
            ids: Vec::new(),
            created_ms: 0,
            polls: 0,
            polled_enough_ms: None,
            fail: false,
            end: None,
        };
        let mut jobs = Jobs::default();
        for n in 0..=MAX_JOBS {
            jobs.remember(n.to_string(), job());
        }
        assert_eq!(jobs.by_id.len(), MAX_JOBS);
        assert!(!jobs.by_id.contains_key("0"));
        assert!(jobs.by_id.contains_key("1"));
        assert_eq!(jobs.order.front().map(String::as_str), Some("1"));
    }
}
