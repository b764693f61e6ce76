//! Veridox: synchronous `POST /files/download`, up to 25 UUIDv7 per request, `x-api-key`.

use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::time::Instant;
use uuid::Uuid;

use super::{
    ListError, MintOutcome, Provider, RawFile, Vendor, listing_not_found, reason_text, reconcile,
    wrong_listing,
};
use crate::api::{ApiClient, ApiResponse, AuthStyle, Slot, describe_body};
use crate::error::{ApiError, Credentials, Rejected, Unusable};
use crate::ids::IdRule;
use crate::listing::{Cursor, Found, Listed, Source};
use crate::ratelimit::{Need, Reservation};

/// Veridox, by its documentation.
pub const VENDOR: Vendor = Vendor {
    name: "veridox",
    default_base_url: "https://api.uk.veridox.ai",
    requests_per_minute: 20,
    requests_per_hour: None,
    auth: AuthStyle::XApiKey,
    id_rule: IdRule::UuidV7,
    max_batch: 25,
    url_lifetime: Duration::from_secs(60 * 60),
    mint_need: Need::Request,
};

pub struct Veridox {
    api: ApiClient,
}

impl Veridox {
    pub fn new(api: ApiClient) -> Self {
        Veridox { api }
    }
}

#[derive(Deserialize)]
struct DownloadResponse {
    #[serde(default)]
    files: Vec<FileEntry>,
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct FileEntry {
    #[serde(default)]
    file_id: Option<String>,
    #[serde(default)]
    download_url: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    label: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    file_id: Option<String>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// `{"error_code", "error_message", "error_details"?}` as documented; `{"message"}` as gateways
/// in front of it answer.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The API refused the key: what it said, and what to do.
fn auth_error(resp: &ApiResponse) -> ApiError {
    ApiError::Auth(Credentials::Veridox {
        status: resp.status,
        said: vendor_message(resp),
    })
}

/// The vendor's error body in words, after its status: "HTTP 401: API key expired
/// (request.authentication.api-key.expired)". A body of another shape is quoted (a `message`
/// field, else a short excerpt); the status is said once.
pub fn vendor_message(resp: &ApiResponse) -> String {
    let status = resp.status.as_u16();
    let text = match serde_json::from_slice::<ErrorBody>(&resp.body) {
        Ok(ErrorBody {
            error_code,
            error_message,
            message,
        }) if error_code.is_some() || error_message.is_some() || message.is_some() => {
            let msg = error_message.or(message).unwrap_or_default();
            match error_code {
                Some(code) if msg.is_empty() => code,
                Some(code) => format!("{msg} ({code})"),
                None => msg,
            }
        }
        _ => describe_body(&resp.body)
            .trim_start_matches(':')
            .trim()
            .to_string(),
    };
    match text.is_empty() {
        true => format!("HTTP {status}, no reason given"),
        false => format!("HTTP {status}: {text}"),
    }
}

impl Provider for Veridox {
    fn vendor(&self) -> &'static Vendor {
        &VENDOR
    }

    fn api(&self) -> &ApiClient {
        &self.api
    }

    async fn mint(&self, ids: Vec<Uuid>, slot: Reservation) -> Result<MintOutcome, ApiError> {
        let body = serde_json::json!({ "file_ids": ids });
        let resp = self
            .api
            .send_in(
                Method::POST,
                "files/download",
                Some(&body),
                Slot::First(&slot),
            )
            .await?;
        match resp.status {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(auth_error(&resp)),
            status if status.is_redirection() => {
                return Err(ApiError::Rejected(Rejected::Redirect { status }));
            }
            status => {
                return Err(ApiError::Rejected(Rejected::VeridoxRefused {
                    status,
                    said: vendor_message(&resp),
                }));
            }
        }
        let server_now = resp
            .headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .unwrap_or_else(SystemTime::now);
        decode(&ids, &resp.body, server_now, Instant::now())
    }

    async fn list_page(
        &self,
        source: Source,
        page_size: u32,
        cursor: &Cursor,
    ) -> Result<Listed, ListError> {
        let offset = match (source, cursor) {
            (Source::Files, Cursor::Start) => 0,
            (Source::Files, Cursor::Offset(n)) => *n,
            _ => return Err(wrong_listing(&VENDOR, source).into()),
        };
        let mut url = self.api.url("files");
        url.query_pairs_mut()
            .append_pair("limit", &page_size.to_string())
            .append_pair("offset", &offset.to_string());
        let resp = self.api.send_to(Method::GET, url.clone(), None).await?;
        match resp.status {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(auth_error(&resp).into());
            }
            StatusCode::NOT_FOUND => return Err(listing_not_found("Veridox", &url, &resp.body)),
            status => {
                return Err(ApiError::Rejected(Rejected::ListingRefused {
                    offset,
                    status,
                    said: vendor_message(&resp),
                })
                .into());
            }
        }
        let page = decode_listing(&resp.body)
            .map_err(|cause| ApiError::Request(Unusable::Listing { offset, cause }))?;
        let next_offset = offset + page.entries as u64;
        let last = is_last_page(page_size, offset, page.entries, page.total);
        Ok(Listed {
            found: page.found,
            bad: page.bad,
            next: (!last).then_some(Cursor::Offset(next_offset)),
            stop: None,
            at: Cursor::Offset(offset),
            entries: page.entries,
            total: page.total,
            notes: Vec::new(),
        })
    }
}

/// Whether a page of `GET /files` at `offset` holding `entries` is the listing's last: an empty
/// page is; a short one is unless a `total` says more lie beyond it (a server that caps its pages
/// below `limit`: the walk goes on from where this page ended). A full page is not, whatever
/// `total` says: a listing whose pages hold more than it says is read to its end (the walk says
/// so), and a full last page costs one request more, an empty page.
pub fn is_last_page(page_size: u32, offset: u64, entries: usize, total: Option<u64>) -> bool {
    entries == 0
        || (entries < page_size as usize && total.is_none_or(|t| offset + entries as u64 >= t))
}

/// One page of `GET /files`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListingPage {
    pub found: Vec<Found>,
    /// Entries on the page, good or bad (the offset moves by this many).
    pub entries: usize,
    pub bad: usize,
    pub total: Option<u64>,
}

/// Read a page of `GET /files`: `{files: [{file_id, label, …}], total}`. Never panics.
pub fn decode_listing(body: &[u8]) -> Result<ListingPage, String> {
    #[derive(Deserialize)]
    struct Page {
        files: Vec<serde_json::Value>,
        #[serde(default)]
        total: Option<u64>,
    }
    let page: Page = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut out = ListingPage {
        entries: page.files.len(),
        total: page.total,
        ..ListingPage::default()
    };
    for f in &page.files {
        let id = f
            .get("file_id")
            .and_then(|v| v.as_str())
            .and_then(|s| crate::ids::parse_one(s.trim(), IdRule::UuidV7).ok());
        match id {
            Some(id) => out.found.push(Found {
                id,
                label: f
                    .get("label")
                    .and_then(|v| v.as_str())
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string),
            }),
            None => out.bad += 1,
        }
    }
    Ok(out)
}

/// Read a 200 answer of `POST /files/download` for the `requested` IDs. `server_now` is the
/// answer's `Date` (expiries are read on the server's clock), `received` when it arrived.
/// Never panics, whatever the bytes (fuzzed: `fuzz/fuzz_targets/veridox_response.rs`).
pub fn decode(
    requested: &[Uuid],
    body: &[u8],
    server_now: SystemTime,
    received: Instant,
) -> Result<MintOutcome, ApiError> {
    let parsed: DownloadResponse = serde_json::from_slice(body).map_err(|e| {
        ApiError::Request(Unusable::Mint {
            cause: e.to_string(),
        })
    })?;
    let lifetime = VENDOR.url_lifetime;
    let files = parsed
        .files
        .into_iter()
        .filter_map(|f| {
            Some(RawFile {
                id: f.file_id?,
                url: f.download_url.unwrap_or_default(),
                label: f.label,
                issued: received,
                expires: f
                    .expires_at
                    .as_deref()
                    .and_then(|e| remaining(e, server_now))
                    .map(|r| received + r.min(lifetime)),
            })
        })
        .collect();
    let errors = parsed
        .errors
        .into_iter()
        .filter_map(|e| Some((e.file_id?, reason_text(e.error))))
        .collect();
    Ok(reconcile(requested, files, errors))
}

/// Time left until an RFC 3339 instant, measured on the server's clock (its `Date` header), so
/// that a skewed local clock does not make every URL look expired. `None` if unreadable or past.
fn remaining(expires_at: &str, server_now: SystemTime) -> Option<Duration> {
    let at =
        time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339)
            .ok()?;
    let now = time::OffsetDateTime::from(server_now);
    let left = at - now;
    (left.is_positive()).then(|| left.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_page_ends_the_listing_only_at_its_total() {
        // No total: empty or short is the last page.
        assert!(is_last_page(100, 0, 0, None));
        assert!(is_last_page(100, 0, 3, None));
        assert!(!is_last_page(100, 0, 100, None));
        // A server that caps its pages at 3 under a total of 12: on until offset + 3 >= 12.
        assert!(!is_last_page(100, 0, 3, Some(12)));
        assert!(!is_last_page(100, 6, 3, Some(12)));
        assert!(is_last_page(100, 9, 3, Some(12)));
        // Past the total, or an empty page, ends it whatever the total says.
        assert!(is_last_page(100, 20, 3, Some(12)));
        assert!(is_last_page(100, 3, 0, Some(12)));
        // A full page never is (a total below what the pages hold is not trusted).
        assert!(!is_last_page(100, 0, 100, Some(50)));
    }

    fn answer(status: u16, body: &str) -> ApiResponse {
        ApiResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: Default::default(),
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn the_vendors_reason_in_words_with_the_status_once() {
        let documented = r#"{"error_code": "request.authentication.api-key.expired",
                             "error_message": "API key expired"}"#;
        assert_eq!(
            vendor_message(&answer(401, documented)),
            "HTTP 401: API key expired (request.authentication.api-key.expired)"
        );
        assert_eq!(
            vendor_message(&answer(401, r#"{"message":"Unauthorized"}"#)),
            "HTTP 401: Unauthorized"
        );
        assert_eq!(
            vendor_message(&answer(502, "<html>Bad gateway</html>")),
            "HTTP 502: <html>Bad gateway</html>"
        );
        assert_eq!(
            vendor_message(&answer(403, "")),
            "HTTP 403, no reason given"
        );
    }

    #[test]
    fn remaining_uses_the_server_clock() {
        let now = httpdate::parse_http_date("Mon, 23 Nov 2026 10:00:00 GMT").unwrap();
        assert_eq!(
            remaining("2026-11-23T11:00:00Z", now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            remaining("2026-11-23T12:30:00+01:00", now),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(remaining("2026-11-23T09:00:00Z", now), None);
        assert_eq!(remaining("tomorrow", now), None);
    }
}
