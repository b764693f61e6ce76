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
use tokio::time::Instant;
use uuid::Uuid;

use super::{FaultKind, Shared, Vendor, key_of, lock, parse_api_uuid};

/// Most jobs remembered; the oldest are forgotten first (a long-running sandbox stays bounded).
const MAX_JOBS: usize = 50_000;

pub(crate) struct Job {
    ids: Vec<Uuid>,
    created: Instant,
    created_ms: u64,
    polls: u32,
    fail: bool,
    /// Once terminal: the status and the detail, fixed from then on.
    end: Option<(&'static str, Value)>,
}

#[derive(Default)]
pub(crate) struct Jobs {
    by_id: HashMap<String, Job>,
    order: VecDeque<String>,
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/jobs/generate-file-download-links", post(submit))
        .route("/api/jobs/{id}", get(poll))
        .route("/api/feeds/rfi-responses", get(feed))
}

/// Rate limit, injected 5xx, then the Bearer key: none → 401, wrong → 403 with an empty body.
fn gate(shared: &Shared, headers: &HeaderMap, fault_key: u64) -> Result<(u64, u64), Box<Response>> {
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
        .filter(|_| !control!(false, shared.cfg.keelvar.strip_auth));
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

async fn submit(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let limits = match gate(&shared, &headers, key_of(&body)) {
        Ok(l) => l,
        Err(resp) => return *resp,
    };
    let parsed: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(_) => return bad_request(None, "JSON parse error"),
    };
    let Some(list) = parsed.get("file_uuids").and_then(Value::as_array) else {
        return bad_request(Some("file_uuids"), "This field is required.");
    };
    if list.is_empty() || list.len() > 50 {
        return bad_request(
            Some("file_uuids"),
            "Ensure this field has 1 to 50 elements.",
        );
    }
    let mut ids = Vec::with_capacity(list.len());
    for v in list {
        match v.as_str().and_then(|s| parse_api_uuid(s, false)) {
            Some(id) => ids.push(id),
            None => return bad_request(Some("file_uuids"), &format!("{v} is not a valid UUID.")),
        }
    }
    let stats = &shared.stats;
    let n = stats.jobs_submitted.fetch_add(1, Ordering::SeqCst);
    stats.mint_batches.fetch_add(1, Ordering::SeqCst);
    stats
        .max_batch
        .fetch_max(ids.len() as u64, Ordering::SeqCst);
    let kcfg = &shared.cfg.keelvar;
    let id = Uuid::new_v4().to_string();
    let mut job = Job {
        ids,
        created: Instant::now(),
        created_ms: shared.now_ms(),
        polls: 0,
        fail: n < u64::from(kcfg.fail_first_jobs),
        end: None,
    };
    if kcfg.polls_to_complete == 0
        && kcfg.min_job_time.is_zero()
        && !control!(false, kcfg.never_complete)
    {
        finish(&shared, &mut job);
    }
    let resp = job_json(&shared, &id, &job);
    let mut jobs = lock(&shared.jobs);
    jobs.by_id.insert(id.clone(), job);
    jobs.order.push_back(id.clone());
    while jobs.order.len() > MAX_JOBS {
        if let Some(old) = jobs.order.pop_front() {
            jobs.by_id.remove(&old);
        }
    }
    drop(jobs);
    let mut resp = (StatusCode::CREATED, axum::Json(resp)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/jobs/{id}")) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    shared.with_rate_headers(Vendor::Keelvar, resp, limits)
}

/// Make a job terminal: FAILED if it is to fail, else COMPLETED with URLs signed now.
fn finish(shared: &Shared, job: &mut Job) {
    if job.fail {
        shared.stats.jobs_failed.fetch_add(1, Ordering::SeqCst);
        job.end = Some(("FAILED", json!("Internal error while generating links")));
        return;
    }
    let now = shared.now_ms();
    let lifetime = shared.cfg.keelvar.url_lifetime;
    let mut data = Vec::new();
    let mut errors = Vec::new();
    for id in job.ids.iter().filter(|id| !shared.omitted(id)) {
        match shared.cfg.catalog.get(id) {
            Some(f) if !f.denied => data.push(json!({
                "file_uuid": id,
                "file_name": f.label,
                "download_url": shared.sign_url(id, now, lifetime, false),
            })),
            Some(_) => errors.push(json!({"file_uuid": id, "error": "permission_denied"})),
            None => errors.push(json!({"file_uuid": id, "error": "not_found"})),
        }
    }
    job.end = Some(("COMPLETED", json!({"data": data, "errors": errors})));
}

fn job_json(shared: &Shared, id: &str, job: &Job) -> Value {
    let (status, detail) = match &job.end {
        Some((s, d)) => (*s, d.clone()),
        None if job.polls == 0 => ("PENDING", Value::Null),
        None => (
            control!("RUNNING", shared.cfg.keelvar.running_status),
            Value::Null,
        ),
    };
    let mut body = json!({
        "type": "GENERATE_FILE_DOWNLOAD_LINKS",
        "status": status,
        "created": shared.rfc3339_at(job.created_ms),
        "detail": detail,
    });
    match control!("id", shared.cfg.keelvar.job_id_as) {
        "location" => {}
        field => body[field] = json!(id),
    }
    body
}

async fn poll(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let limits = match gate(&shared, &headers, key_of(&id)) {
        Ok(l) => l,
        Err(resp) => return *resp,
    };
    shared.stats.job_polls.fetch_add(1, Ordering::SeqCst);
    if control!(false, shared.cfg.keelvar.throttle_polls) {
        shared.stats.api_throttled.fetch_add(1, Ordering::SeqCst);
        return throttled(control!(1, shared.cfg.faults.retry_after_secs));
    }
    if shared.fault(
        FaultKind::Garbage,
        control!(0, shared.cfg.faults.api_garbage_percent),
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
    let kcfg = &shared.cfg.keelvar;
    if job.end.is_none()
        && !control!(false, kcfg.never_complete)
        && job.polls >= kcfg.polls_to_complete
        && job.created.elapsed() >= kcfg.min_job_time
    {
        finish(&shared, job);
    }
    let body = job_json(&shared, &id, job);
    drop(jobs);
    shared.with_rate_headers(Vendor::Keelvar, axum::Json(body).into_response(), limits)
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
    let page_size = q.page_size.unwrap_or(50);
    if !(10..=200).contains(&page_size) {
        return bad_request(
            Some("page_size"),
            "Ensure this value is between 10 and 200.",
        );
    }
    let start: usize = match q.cursor.as_deref() {
        None => 0,
        Some(c) => match c.strip_prefix('r').and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => return bad_request(Some("cursor"), "Invalid cursor"),
        },
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
    let mut data = Vec::new();
    let mut included = Vec::new();
    for r in start..(start + page_size).min(responses) {
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
    let mut resp = axum::Json(json!({"data": data, "included": included})).into_response();
    let next = start + page_size;
    if next < responses {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        let own = format!(
            "http://{host}/api/feeds/rfi-responses?include=questions&page_size={page_size}&cursor=r{next}"
        );
        let foreign: Option<String> = control!(
            None,
            shared
                .cfg
                .faults
                .listing_foreign_next
                .clone()
                .filter(|_| start == 0)
        );
        let link = foreign.unwrap_or(own);
        if let Ok(v) = HeaderValue::from_str(&format!("<{link}>; rel=\"next\"")) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    shared.with_rate_headers(Vendor::Keelvar, resp, limits)
}
