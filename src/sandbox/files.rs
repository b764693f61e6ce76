//! The file host that signed URLs point at: checks signature and expiry, serves `Range`,
//! and can be slow, fail, or cut bodies off.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use uuid::Uuid;

use super::{CatalogFile, FaultKind, Shared, Stats, key_of};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/dl/{id}", get(serve))
}

#[derive(Deserialize)]
struct Signed {
    iat: u64,
    exp: u64,
    sig: String,
    /// Set on the target of an injected redirect (so it is not redirected again).
    #[serde(default)]
    hop: Option<u8>,
}

/// Counts a request as in flight until released: before the last byte is handed over, so that
/// a client that has its last byte can never be counted alongside its next request.
struct InFlight {
    shared: Arc<Shared>,
    released: bool,
}

impl InFlight {
    fn new(shared: Arc<Shared>) -> Self {
        let now = shared.stats.file_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared
            .stats
            .file_max_in_flight
            .fetch_max(now, Ordering::SeqCst);
        InFlight {
            shared,
            released: false,
        }
    }

    fn release(&mut self) {
        if !self.released {
            self.released = true;
            self.shared
                .stats
                .file_in_flight
                .fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.release();
    }
}

fn plain(status: StatusCode, msg: &'static str) -> Response {
    (status, msg).into_response()
}

async fn serve(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<Signed>,
    headers: HeaderMap,
) -> Response {
    let stats = &shared.stats;
    stats.file_requests.fetch_add(1, Ordering::SeqCst);
    if headers.contains_key("x-api-key") || headers.contains_key(header::AUTHORIZATION) {
        stats
            .file_requests_with_credentials
            .fetch_add(1, Ordering::SeqCst);
    }
    let mut guard = InFlight::new(shared.clone());
    let Ok(id) = Uuid::parse_str(&id) else {
        return plain(StatusCode::NOT_FOUND, "no such file");
    };
    let valid_sig =
        u64::from_str_radix(&q.sig, 16).is_ok_and(|sig| sig == shared.signature(&id, q.iat, q.exp));
    if !valid_sig {
        return plain(StatusCode::FORBIDDEN, "bad signature");
    }
    let now = shared.now_ms();
    if now >= q.exp {
        stats.expired_hits.fetch_add(1, Ordering::SeqCst);
        return plain(StatusCode::FORBIDDEN, "Request has expired");
    }
    let Some(file) = shared.cfg.catalog.get(&id).cloned() else {
        return plain(StatusCode::NOT_FOUND, "no such file");
    };
    let f = &shared.cfg.faults;
    let key = key_of(&id);
    if q.hop.is_none() && shared.fault(FaultKind::Redirect, f.redirect_percent, key) {
        let to = format!("/dl/{id}?iat={}&exp={}&sig={}&hop=1", q.iat, q.exp, q.sig);
        let mut resp = plain(StatusCode::FOUND, "moved");
        if let Ok(v) = HeaderValue::from_str(&to) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return resp;
    }
    if shared.fault(FaultKind::File5xx, f.file_5xx_percent, key) {
        stats.file_5xx.fetch_add(1, Ordering::SeqCst);
        return plain(StatusCode::SERVICE_UNAVAILABLE, "try again");
    }
    Stats::push_sample(&stats.url_ages_ms, now.saturating_sub(q.iat));

    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(parse_range);
    if range.is_some() {
        stats.range_requests.fetch_add(1, Ordering::SeqCst);
    }
    let range = match range {
        Some(_) if shared.fault(FaultKind::IgnoreRange, f.ignore_range_percent, key) => None,
        r => r,
    };
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, file.size),
        Some(Some((s, e))) if s < file.size => (
            StatusCode::PARTIAL_CONTENT,
            s,
            e.map_or(file.size, |e| (e + 1).min(file.size)),
        ),
        Some(_) => {
            let mut resp = plain(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", file.size)) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
    };
    // Faults that end the body half-way through what is being sent.
    let half = start + (end - start) / 2;
    let ending = if shared.fault(FaultKind::Cut, f.cut_percent, key) {
        stats.file_cuts.fetch_add(1, Ordering::SeqCst);
        Some((half, Ending::Cut))
    } else if shared.fault(FaultKind::Stall, f.stall_percent, key) {
        Some((half, Ending::Stall))
    } else if shared.fault(FaultKind::Short, f.short_body_percent, key) {
        Some((half, Ending::Short))
    } else {
        None
    };
    let bps = f.slow_body_bps;
    let chunk = if bps > 0 {
        (bps / 10).clamp(256, 64 * 1024) as usize
    } else {
        64 * 1024
    };
    if end == start {
        guard.release();
    }
    let total = file.size;
    let body = Body::from_stream(futures_util::stream::unfold(
        BodyState {
            file,
            pos: start,
            end,
            ending,
            chunk,
            bps,
            guard,
            shared: shared.clone(),
        },
        next_chunk,
    ));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if !shared.fault(FaultKind::NoLength, f.no_length_percent, key) {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        // A wrong Content-Range claims the body starts a byte later than it does.
        let shown = if shared.fault(FaultKind::BadRange, f.bad_range_percent, key) {
            start + 1
        } else {
            start
        };
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {shown}-{}/{total}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

/// How a body that does not run to its end stops.
#[derive(Clone, Copy)]
enum Ending {
    /// The connection is reset.
    Cut,
    /// Nothing more is ever sent.
    Stall,
    /// The body ends cleanly, short of its length.
    Short,
}

struct BodyState {
    file: CatalogFile,
    pos: u64,
    end: u64,
    ending: Option<(u64, Ending)>,
    chunk: usize,
    bps: u64,
    guard: InFlight,
    shared: Arc<Shared>,
}

async fn next_chunk(mut s: BodyState) -> Option<(Result<Bytes, std::io::Error>, BodyState)> {
    if s.pos >= s.end {
        return None;
    }
    if let Some((at, how)) = s.ending
        && s.pos >= at
    {
        // Let the server flush what was sent first, as a real connection delivers the bytes
        // that were already on the wire.
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.guard.release();
        s.pos = s.end;
        return match how {
            Ending::Cut => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "sandbox: connection cut",
                )),
                s,
            )),
            Ending::Short => None,
            Ending::Stall => {
                std::future::pending::<()>().await;
                None
            }
        };
    }
    let limit = s.ending.map_or(s.end, |(at, _)| at.min(s.end));
    let n = (s.chunk as u64).min(limit - s.pos) as usize;
    if s.bps > 0 {
        tokio::time::sleep(Duration::from_secs_f64(n as f64 / s.bps as f64)).await;
    }
    let mut buf = vec![0; n];
    s.file.fill(s.pos, &mut buf);
    s.pos += n as u64;
    s.shared
        .stats
        .bytes_served
        .fetch_add(n as u64, Ordering::SeqCst);
    if s.pos >= s.end {
        s.guard.release();
    }
    Some((Ok(Bytes::from(buf)), s))
}

/// `bytes=N-` or `bytes=N-M` → `Some((N, M))`; anything else (multiple ranges, suffix ranges)
/// → `None` (answered 416).
fn parse_range(v: &str) -> Option<(u64, Option<u64>)> {
    let spec = v.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (s, e) = spec.split_once('-')?;
    let start = s.trim().parse().ok()?;
    let end = match e.trim() {
        "" => None,
        e => {
            let e: u64 = e.parse().ok()?;
            if e < start {
                return None;
            }
            Some(e)
        }
    };
    Some((start, end))
}
