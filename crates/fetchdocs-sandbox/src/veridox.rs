//! The Veridox API, as its documentation describes it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use uuid::Uuid;

use crate::rate::{RateHeaders, Vendor};
use crate::shared::{FaultKind, Shared};
use crate::{key_of, parse_api_uuid};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/files/download", post(download))
        .route("/files", get(list))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error_code": code, "error_message": message})),
    )
        .into_response()
}

/// Rate limit, injected 5xx and key check, in that order. `Ok` carries `RateLimit-*` values.
fn gate(
    shared: &Shared,
    headers: &HeaderMap,
    fault_key: u64,
) -> Result<Option<RateHeaders>, Box<Response>> {
    let limits = match shared.admit_api(Vendor::Veridox) {
        Ok(l) => l,
        Err(wait) => {
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                "request.rate-limit",
                "Too many requests, slow down",
            );
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
            return Err(Box::new(resp));
        }
    };
    let f = &shared.cfg.faults;
    if shared.fault(FaultKind::Api5xx, f.api_5xx_percent, fault_key) {
        shared.stats.api_5xx.fetch_add(1, Ordering::SeqCst);
        return Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server.unavailable",
            "Service temporarily unavailable",
        )));
    }
    match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        Some(k) if k == shared.cfg.veridox_key => Ok(limits),
        Some(k) if k.starts_with("vdx_expired") => {
            shared.stats.api_unauthorized.fetch_add(1, Ordering::SeqCst);
            Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "request.authentication.api-key.expired",
                "API key expired",
            )))
        }
        presented => {
            shared.stats.api_unauthorized.fetch_add(1, Ordering::SeqCst);
            let message = match presented {
                Some(k) if control!(false, shared.cfg.faults.test.echo_key) => {
                    format!("Invalid API key: {k}")
                }
                _ => "Invalid API key".to_string(),
            };
            Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "request.authentication.api-key.invalid",
                &message,
            )))
        }
    }
}

pub(crate) async fn download(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let presented = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let key = key_of(&body);
    let limits = match gate(&shared, &headers, key) {
        Ok(l) => l,
        Err(resp) => return *resp,
    };
    if control!(false, shared.cfg.faults.test.api_redirect) {
        let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
        resp.headers_mut().insert(
            "location",
            HeaderValue::from_static("http://collector.invalid/files/download"),
        );
        return resp;
    }
    if shared.fault(
        FaultKind::Garbage,
        control!(0, shared.cfg.faults.test.api_garbage_percent),
        key,
    ) {
        return (
            [("content-type", "application/json")],
            r#"{"files": [{"file_id": "01"#,
        )
            .into_response();
    }
    if shared.fault(
        FaultKind::Huge,
        control!(0, shared.cfg.faults.test.api_huge_percent),
        key,
    ) {
        let pad = "x".repeat(9 * 1024 * 1024);
        return axum::Json(json!({"files": [], "errors": [], "padding": pad})).into_response();
    }
    let resp = mint(&shared, &body, &presented);
    shared.with_rate_headers(resp, limits)
}

/// A signed URL for each ID of a valid batch, a per-file error for each other, and (with
/// `api_noise`) entries that no client asked for.
fn mint(shared: &Shared, body: &str, presented_key: &str) -> Response {
    let ids = match batch_ids(body) {
        Ok(ids) => ids,
        Err(resp) => return *resp,
    };
    shared.stats.mint_batches.fetch_add(1, Ordering::SeqCst);
    shared
        .stats
        .max_batch
        .fetch_max(ids.len() as u64, Ordering::SeqCst);
    let now = shared.now_ms();
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut minted = 0;
    for id in ids.into_iter().filter(|id| !shared.omitted(id)) {
        match shared.cfg.catalog.get(&id) {
            Some(f) if !f.denied => {
                let (entry, usable) = url_entry(shared, &id, &f.label, now);
                minted += u64::from(usable);
                files.push(entry);
            }
            Some(_) => errors.push(access_denied(shared, &id, presented_key)),
            None => errors.push(json!({"file_id": id, "error": "not_found"})),
        }
    }
    shared.stats.urls_minted.fetch_add(minted, Ordering::SeqCst);
    if control!(false, shared.cfg.faults.test.api_noise) {
        add_noise(shared, &mut files, &mut errors);
    }
    axum::Json(json!({"files": files, "errors": errors})).into_response()
}

/// The IDs of a download request's body, or its 400: a JSON object whose `file_ids` holds 1
/// to 25 UUIDv7s.
fn batch_ids(body: &str) -> Result<Vec<Uuid>, Box<Response>> {
    let invalid =
        |message: &str| Box::new(error(StatusCode::BAD_REQUEST, "request.invalid", message));
    let parsed: Value = serde_json::from_str(body).map_err(|_| invalid("Body is not JSON"))?;
    let ids = parsed
        .get("file_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("file_ids must be an array"))?;
    if ids.is_empty() || ids.len() > 25 {
        return Err(invalid("file_ids must hold 1 to 25 IDs"));
    }
    ids.iter()
        .map(|v| {
            v.as_str()
                .and_then(|s| parse_api_uuid(s, true))
                .ok_or_else(|| invalid(&format!("file_ids: {v} is not a UUID version 7")))
        })
        .collect()
}

/// A file's entry with its signed URL (already expired for `expire_first_urls`; `ftp://` for
/// `bad_scheme_ids`), and whether that URL is one the file host would serve (so minted).
fn url_entry(shared: &Shared, id: &Uuid, label: &str, now: u64) -> (Value, bool) {
    let faults = &shared.cfg.faults;
    let expired = control!(
        false,
        shared.among_first(
            "expire_first_urls",
            faults.test.expire_first_urls,
            key_of(id)
        )
    );
    let mut url = shared.sign_url(id, now, faults.url_lifetime, expired);
    let bad_scheme = control!(false, faults.test.bad_scheme_ids.contains(id));
    if bad_scheme {
        url = format!("ftp://files.invalid/{id}");
    }
    let exp_ms = if expired {
        now
    } else {
        now + faults.url_lifetime.as_millis() as u64
    };
    let entry = json!({
        "file_id": id,
        "download_url": url,
        "expires_at": shared.rfc3339_at(exp_ms),
        "label": label,
    });
    (entry, !bad_scheme)
}

/// The error for a file the key may not have; with `echo_key`, it repeats the key.
fn access_denied(shared: &Shared, id: &Uuid, presented_key: &str) -> Value {
    #[cfg(not(feature = "test-controls"))]
    let _ = (shared, presented_key);
    if control!(false, shared.cfg.faults.test.echo_key) {
        return json!({
            "file_id": id,
            "error": format!("access_denied for key {presented_key}"),
        });
    }
    json!({"file_id": id, "error": "access_denied"})
}

/// What a careless API adds to its answer: a duplicate whose URL goes nowhere, an ID nobody
/// asked for, entries missing fields.
fn add_noise(shared: &Shared, files: &mut Vec<Value>, errors: &mut Vec<Value>) {
    let Some(mut dup) = files.first().cloned() else {
        return;
    };
    dup["download_url"] = json!(format!("{}/dl/nowhere", shared.files_url));
    files.push(dup);
    let stranger = Uuid::new_v4();
    files.push(json!({"file_id": stranger, "download_url": format!("{}/dl/{stranger}", shared.files_url), "label": "x"}));
    files.push(json!({"label": "no id"}));
    files.push(json!({"file_id": "not-a-uuid", "download_url": "http://x.invalid/"}));
    errors.push(json!({"file_id": Uuid::new_v4(), "error": "not_found"}));
    errors.push(json!({"error": "no id"}));
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    offset: Option<usize>,
}

/// `GET /files?limit=1..100&offset=N`
async fn list(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let limits = match gate(&shared, &headers, key_of(&"list")) {
        Ok(l) => l,
        Err(resp) => return *resp,
    };
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            "request.invalid",
            "limit must be 1 to 100",
        );
    }
    let offset = q.offset.unwrap_or(0);
    if let Some(resp) = shared.listing_fault((offset / limit) as u32 + 1) {
        return resp;
    }
    let files = listed(&shared, offset, limit);
    let total = announced_total(&shared);
    let body = match total {
        Some(total) => json!({"files": files, "total": total}),
        None => json!({"files": files}),
    };
    let resp = axum::Json(body).into_response();
    shared.with_rate_headers(resp, limits)
}

/// The catalog's entries from `offset`, at most `limit` of them; or, as a fault has it, from
/// the first whatever the offset, or fewer than `limit` asks for.
fn listed(shared: &Shared, offset: usize, limit: usize) -> Vec<Value> {
    let skip = control!(
        offset,
        if shared.cfg.faults.test.files_ignore_offset {
            0
        } else {
            offset
        }
    );
    let take = control!(
        limit,
        shared
            .cfg
            .faults
            .test
            .files_page_cap
            .map_or(limit, |cap| cap.min(limit))
    );
    shared
        .cfg
        .catalog
        .files()
        .iter()
        .skip(skip)
        .take(take)
        .map(|f| {
            json!({
                "file_id": f.id,
                "label": f.label,
                "mime_type": "application/octet-stream",
                "case_id": null,
            })
        })
        .collect()
}

/// The `total` a listing page announces: the catalog's size, or none or another as a fault has
/// it.
fn announced_total(shared: &Shared) -> Option<u64> {
    let size = shared.cfg.catalog.files().len() as u64;
    control!(
        Some(size),
        match &shared.cfg.faults.test {
            f if f.files_no_total => None,
            f => Some(f.files_total.unwrap_or(size)),
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    async fn refusal(body: &str) -> String {
        let resp = batch_ids(body).expect_err(body);
        let (status, _, v) = testkit::read(*resp).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(v["error_code"], "request.invalid", "{body}");
        v["error_message"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn a_batch_is_1_to_25_uuidv7s_in_file_ids() {
        let v7 = "0193a5e4-7c3b-7d2f-9b6a-1e0c4f8d2a11";
        let ids = batch_ids(&format!(r#"{{"file_ids": ["{v7}", "{v7}"]}}"#)).unwrap();
        assert_eq!(ids, vec![v7.parse::<Uuid>().unwrap(); 2]);
        assert_eq!(refusal("{").await, "Body is not JSON");
        assert_eq!(refusal(r#"{"ids": []}"#).await, "file_ids must be an array");
        assert_eq!(
            refusal(r#"{"file_ids": []}"#).await,
            "file_ids must hold 1 to 25 IDs"
        );
        let too_many = vec![format!("\"{v7}\""); 26].join(",");
        assert_eq!(
            refusal(&format!(r#"{{"file_ids": [{too_many}]}}"#)).await,
            "file_ids must hold 1 to 25 IDs"
        );
        let v4 = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
        assert_eq!(
            refusal(&format!(r#"{{"file_ids": ["{v7}", "{v4}"]}}"#)).await,
            format!("file_ids: \"{v4}\" is not a UUID version 7")
        );
        assert_eq!(
            refusal(r#"{"file_ids": [7]}"#).await,
            "file_ids: 7 is not a UUID version 7"
        );
    }
}
