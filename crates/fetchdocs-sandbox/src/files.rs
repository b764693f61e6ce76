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

use crate::shared::{FaultKind, Shared};
use crate::{CatalogFile, Stats, key_of, parse_api_uuid};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    // The name after the ID is decoration, as on real object stores: the signature covers the ID.
    Router::new()
        .route("/dl/{id}", get(serve))
        .route("/dl/{id}/{name}", get(serve))
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

/// When each version of a file was last modified.
const LAST_MODIFIED: [&str; 2] = [
    "Wed, 01 Jan 2025 00:00:00 GMT",
    "Thu, 02 Jan 2025 00:00:00 GMT",
];

/// The file host's listener: with `reset_first_requests`, a connection whose first request is
/// for a file still owed a reset is dropped with a TCP reset before anything is answered.
pub(crate) struct Listener {
    inner: tokio::net::TcpListener,
    shared: Arc<Shared>,
}

impl Listener {
    pub(crate) fn new(inner: tokio::net::TcpListener, shared: Arc<Shared>) -> Self {
        Listener { inner, shared }
    }
}

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Connection, std::net::SocketAddr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (
            Connection {
                stream,
                shared: self.shared.clone(),
                head: Some(Vec::new()),
            },
            addr,
        )
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// `GET /dl/` and a 36-character ID: what must have arrived to decide on a reset.
const HEAD_LEN: usize = 44;

/// One accepted connection of the file host.
pub(crate) struct Connection {
    stream: tokio::net::TcpStream,
    #[cfg_attr(not(feature = "test-controls"), allow(dead_code))]
    shared: Arc<Shared>,
    /// The start of the first request, until a reset has been decided on (`None` after).
    head: Option<Vec<u8>>,
}

impl Connection {
    /// Whether the first request, once `head` holds its start, is to be answered with a reset.
    #[cfg(feature = "test-controls")]
    fn reset_owed(&self, head: &[u8]) -> bool {
        let owed = self.shared.cfg.faults.test.reset_first_requests;
        let Some(id) = head
            .strip_prefix(b"GET /dl/")
            .and_then(|rest| rest.get(..36))
            .and_then(|id| std::str::from_utf8(id).ok())
            .and_then(|id| parse_api_uuid(id, false))
        else {
            return false;
        };
        owed > 0
            && self
                .shared
                .among_first("reset_first_requests", owed, key_of(&id))
    }

    #[cfg(not(feature = "test-controls"))]
    fn reset_owed(&self, _head: &[u8]) -> bool {
        false
    }
}

impl tokio::io::AsyncRead for Connection {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(())))
            && let Some(mut head) = self.head.take()
        {
            let new = &buf.filled()[before..];
            head.extend_from_slice(&new[..new.len().min(HEAD_LEN - head.len())]);
            if head.len() < HEAD_LEN && !new.is_empty() {
                self.head = Some(head);
            } else if self.reset_owed(&head) {
                self.shared.stats.file_resets.fetch_add(1, Ordering::SeqCst);
                // SO_LINGER 0: closing sends RST, as a crashed proxy or a reset link would.
                let _ = self.stream.set_zero_linger();
                return std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
            }
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Connection {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
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

/// An expired signature refused as some object stores do: 400, and a body that says so.
fn expired_400() -> Response {
    plain(
        StatusCode::BAD_REQUEST,
        "<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>",
    )
}

fn plain(status: StatusCode, msg: &'static str) -> Response {
    (status, msg).into_response()
}

/// `GET /dl/{id}[/{name}]?iat=…&exp=…&sig=…`: the file a signed URL names, whole or the range
/// asked for, through whatever faults are set. Each fault rolls its own counter (per file), so
/// the order of the steps below is free only where one step does not decide whether the next
/// runs.
async fn serve(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<std::collections::HashMap<String, String>>,
    Query(q): Query<Signed>,
    headers: HeaderMap,
) -> Response {
    count_request(&shared.stats, &headers);
    let guard = InFlight::new(shared.clone());
    let now = shared.now_ms();
    let (id, file) = match signed_file(&shared, &path, &q, now) {
        Ok(found) => found,
        Err(refusal) => return *refusal,
    };
    let key = key_of(&id);
    if let Some(resp) = injected_refusal(&shared, &q, &id, key) {
        return resp;
    }
    Stats::push_sample(&shared.stats.url_ages_ms, now.saturating_sub(q.iat));
    let version = control!(0, version_served(&shared, key));
    let file = file.version(version);
    let (partial, start, end) = match span(&shared, &headers, &file, key) {
        Ok(span) => span,
        Err(unsatisfiable) => return *unsatisfiable,
    };
    let answer = Answer {
        file,
        version,
        key,
        partial,
        start,
        end,
    };
    let mut resp = Response::new(body(&shared, &answer, guard));
    *resp.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    set_headers(&shared, resp.headers_mut(), &answer);
    resp
}

/// What the file host is about to send: which version of which file, and which of its bytes.
struct Answer {
    /// The version served (see [`CatalogFile::version`]).
    file: CatalogFile,
    version: u32,
    /// The file's key for the per-file fault counters.
    key: u64,
    /// A range (206), not the whole file (200).
    partial: bool,
    start: u64,
    end: u64,
}

/// Count a file request, and whether it carried credentials (a mistake the tests look for) or
/// said where it came from.
fn count_request(stats: &Stats, headers: &HeaderMap) {
    stats.file_requests.fetch_add(1, Ordering::SeqCst);
    if headers.contains_key("x-api-key") || headers.contains_key(header::AUTHORIZATION) {
        stats
            .file_requests_with_credentials
            .fetch_add(1, Ordering::SeqCst);
    }
    if headers.contains_key(header::REFERER) {
        stats
            .file_requests_with_referer
            .fetch_add(1, Ordering::SeqCst);
    }
}

/// The file a signed URL names, if its signature holds, it has not expired (at `now`) and the
/// catalog has the file; else the refusal. A URL whose signature holds counts as used, expired
/// or not: the signature names the URL (its ID, `iat` and `exp`).
fn signed_file(
    shared: &Shared,
    path: &std::collections::HashMap<String, String>,
    q: &Signed,
    now: u64,
) -> Result<(Uuid, CatalogFile), Box<Response>> {
    let no_such_file = || Box::new(plain(StatusCode::NOT_FOUND, "no such file"));
    let id = path
        .get("id")
        .and_then(|id| parse_api_uuid(id, false))
        .ok_or_else(no_such_file)?;
    let sig = u64::from_str_radix(&q.sig, 16)
        .ok()
        .filter(|&sig| sig == shared.signature(&id, q.iat, q.exp))
        .ok_or_else(|| Box::new(plain(StatusCode::FORBIDDEN, "bad signature")))?;
    shared.stats.url_used(sig);
    if now >= q.exp {
        shared.stats.expired_hits.fetch_add(1, Ordering::SeqCst);
        if control!(false, shared.cfg.faults.test.expired_as_400) {
            return Err(Box::new(expired_400()));
        }
        return Err(Box::new(plain(
            StatusCode::FORBIDDEN,
            "Request has expired",
        )));
    }
    let file = shared
        .cfg
        .catalog
        .get(&id)
        .cloned()
        .ok_or_else(no_such_file)?;
    Ok((id, file))
}

/// An answer injected instead of the file, if any, tried in this order: a refusal (a deleted
/// object, or one of the first requests refused), a redirect to the same file, a 503.
fn injected_refusal(shared: &Shared, q: &Signed, id: &Uuid, key: u64) -> Option<Response> {
    let f = &shared.cfg.faults;
    let refused = control!(
        false,
        f.test.refuse_ids.contains(id)
            || shared.among_first("refuse_first_requests", f.test.refuse_first_requests, key)
    );
    if refused {
        return Some(match control!(false, f.test.expired_as_400) {
            true => expired_400(),
            false => plain(StatusCode::FORBIDDEN, "Access Denied"),
        });
    }
    let redirect_percent = control!(0, f.test.redirect_percent);
    if q.hop.is_none() && shared.fault(FaultKind::Redirect, redirect_percent, key) {
        let to = format!("/dl/{id}?iat={}&exp={}&sig={}&hop=1", q.iat, q.exp, q.sig);
        let mut resp = plain(StatusCode::FOUND, "moved");
        if let Ok(v) = HeaderValue::from_str(&to) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return Some(resp);
    }
    if shared.fault(FaultKind::File5xx, f.file_5xx_percent, key) {
        shared.stats.file_5xx.fetch_add(1, Ordering::SeqCst);
        return Some(plain(StatusCode::SERVICE_UNAVAILABLE, "try again"));
    }
    None
}

/// Which version of the file the host has: with `replace_after_first_request`, the object is
/// replaced after its first answer (a new version: other bytes, another ETag).
#[cfg(feature = "test-controls")]
fn version_served(shared: &Shared, key: u64) -> u32 {
    let replaced = shared.cfg.faults.test.replace_after_first_request
        && !shared.among_first("replace_after_first_request", 1, key);
    u32::from(replaced)
}

/// Which bytes to send, as `(partial, start, end)`: the whole file, or the range asked for
/// (unless a fault ignores it, or shortens it behind a `*` total); a range that starts past
/// the end is answered 416.
fn span(
    shared: &Shared,
    headers: &HeaderMap,
    file: &CatalogFile,
    key: u64,
) -> Result<(bool, u64, u64), Box<Response>> {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(parse_range);
    if range.is_some() {
        shared.stats.range_requests.fetch_add(1, Ordering::SeqCst);
    }
    let ignore_percent = control!(0, shared.cfg.faults.test.ignore_range_percent);
    let range = range.filter(|_| !shared.fault(FaultKind::IgnoreRange, ignore_percent, key));
    let (start, end) = match range {
        None => return Ok((false, 0, file.size)),
        Some(Some((s, e))) if s < file.size => (s, e.map_or(file.size, |e| (e + 1).min(file.size))),
        Some(_) => {
            let mut resp = plain(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", file.size)) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Err(Box::new(resp));
        }
    };
    if control!(false, shared.cfg.faults.test.star_range_short) {
        // A range that stops half-way to the end, its total hidden behind `*`.
        return Ok((true, start, start + ((end - start) / 2).max(1)));
    }
    Ok((true, start, end))
}

/// The body: the answer's bytes at the pace set, ended early by a fault, one byte changed for
/// `corrupt_first_requests`. `guard` counts the request in flight until the last byte.
fn body(shared: &Arc<Shared>, a: &Answer, mut guard: InFlight) -> Body {
    let ending = early_ending(shared, a);
    let (bps, chunk) = pace(shared, a.key);
    if a.end == a.start {
        guard.release();
    }
    let corrupt = control!(
        false,
        shared.among_first(
            "corrupt_first_requests",
            shared.cfg.faults.test.corrupt_first_requests,
            a.key
        )
    );
    Body::from_stream(futures_util::stream::unfold(
        BodyState {
            file: a.file.clone(),
            pos: a.start,
            end: a.end,
            ending,
            chunk,
            bps,
            guard,
            shared: shared.clone(),
            corrupt,
        },
        next_chunk,
    ))
}

/// Where and how a fault ends the body half-way through what is sent, if one does: cut (the
/// first requests, or at `cut_percent`), stalled, or short, tried in that order.
fn early_ending(shared: &Shared, a: &Answer) -> Option<(u64, Ending)> {
    let f = &shared.cfg.faults;
    let cut_first = control!(
        false,
        shared.among_first("cut_first_requests", f.test.cut_first_requests, a.key)
    );
    let how = if cut_first || shared.fault(FaultKind::Cut, f.cut_percent, a.key) {
        shared.stats.file_cuts.fetch_add(1, Ordering::SeqCst);
        Ending::Cut
    } else if shared.fault(FaultKind::Stall, control!(0, f.test.stall_percent), a.key) {
        Ending::Stall
    } else if shared.fault(
        FaultKind::Short,
        control!(0, f.test.short_body_percent),
        a.key,
    ) {
        Ending::Short
    } else {
        return None;
    };
    Some((a.start + (a.end - a.start) / 2, how))
}

/// Bytes per second (0: unthrottled) and per chunk: `slow_body_bps`, or 64 a second for the
/// first requests of `drip_first_requests`.
fn pace(shared: &Shared, key: u64) -> (u64, usize) {
    let f = &shared.cfg.faults;
    let dripped = control!(
        false,
        shared.among_first("drip_first_requests", f.test.drip_first_requests, key)
    );
    #[cfg(not(feature = "test-controls"))]
    let _ = key;
    let bps = if dripped { 64 } else { f.slow_body_bps };
    let chunk = if bps > 0 {
        (bps / 10).clamp(256, 64 * 1024) as usize
    } else {
        64 * 1024
    };
    (bps, chunk)
}

/// The answer's headers: its checksums (as the fault asks), length (unless a fault drops it),
/// validators, type and, for a range, `Content-Range`.
fn set_headers(shared: &Shared, h: &mut HeaderMap, a: &Answer) {
    #[cfg(feature = "test-controls")]
    {
        let f = &shared.cfg.faults.test;
        for (name, value) in checksum_headers(f.checksum, f.checksum_wrong, &a.file, !a.partial) {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.append(name, v);
            }
        }
    }
    let no_length_percent = control!(0, shared.cfg.faults.test.no_length_percent);
    if !shared.fault(FaultKind::NoLength, no_length_percent, a.key) {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(a.end - a.start));
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    set_validators(shared, h, a);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if a.partial
        && let Ok(v) = HeaderValue::from_str(&content_range(shared, a))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
}

/// `ETag` and `Last-Modified` of the version served, less those a fault leaves out. (With an
/// `etag-*` checksum the ETag is that checksum's, set with the checksums.)
fn set_validators(shared: &Shared, h: &mut HeaderMap, a: &Answer) {
    #[cfg(not(feature = "test-controls"))]
    let _ = shared;
    if control!(false, shared.cfg.faults.test.no_validators) {
        return;
    }
    let no_etag = control!(false, {
        let f = &shared.cfg.faults.test;
        f.checksum.starts_with("etag-") || f.no_etag || (f.no_etag_on_ranges && a.partial)
    });
    if !no_etag && let Ok(v) = HeaderValue::from_str(&format!("\"{:016x}\"", a.file.seed)) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_static(LAST_MODIFIED[a.version as usize]),
    );
}

/// A range answer's `Content-Range`: wrong by a byte at `bad_range_percent` (it claims the body
/// starts a byte later than it does), with a `*` total under `star_range_short`.
fn content_range(shared: &Shared, a: &Answer) -> String {
    let bad_range_percent = control!(0, shared.cfg.faults.test.bad_range_percent);
    let shown = if shared.fault(FaultKind::BadRange, bad_range_percent, a.key) {
        a.start + 1
    } else {
        a.start
    };
    let last = a.end - 1;
    if control!(false, shared.cfg.faults.test.star_range_short) {
        format!("bytes {shown}-{last}/*")
    } else {
        format!("bytes {shown}-{last}/{}", a.file.size)
    }
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
    /// Change one byte of the next chunk sent.
    corrupt: bool,
}

/// The checksum headers of `kind` for the whole `file` (`Content-MD5` only on a 200, where
/// the body is the whole file); `wrong`: of other bytes.
#[cfg(feature = "test-controls")]
fn checksum_headers(
    kind: &str,
    wrong: bool,
    file: &CatalogFile,
    whole: bool,
) -> Vec<(&'static str, String)> {
    use base64::Engine;
    use md5::Digest;
    if kind.is_empty() {
        return Vec::new();
    }
    let mut bytes = file.bytes();
    let real_md5 = md5::Md5::digest(&bytes);
    if wrong && !kind.starts_with("etag-") {
        bytes.push(b'!');
    }
    let md5 = md5::Md5::digest(&bytes);
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let crc32c = || crc32c::crc32c(&bytes).to_be_bytes();
    let sha256 = || sha2::Sha256::digest(&bytes);
    let sha512 = || sha2::Sha512::digest(&bytes);
    match kind {
        "content-md5" if whole => vec![("content-md5", b64(&md5))],
        "goog" => vec![(
            "x-goog-hash",
            format!("crc32c={},md5={}", b64(&crc32c()), b64(&md5)),
        )],
        "etag-md5" => vec![("etag", format!("\"{}\"", hex(&real_md5)))],
        // As SSE-KMS objects have: 32 hex digits that are not the MD5 of the bytes.
        "etag-kms" => vec![(
            "etag",
            format!("\"{}\"", hex(&md5::Md5::digest(file.seed.to_be_bytes()))),
        )],
        "etag-multipart" => vec![("etag", format!("\"{}-3\"", hex(&real_md5)))],
        "amz-crc32" => vec![(
            "x-amz-checksum-crc32",
            b64(&crc32fast::hash(&bytes).to_be_bytes()),
        )],
        "amz-crc32c" => vec![("x-amz-checksum-crc32c", b64(&crc32c()))],
        "amz-crc64nvme" => {
            let crc = crc::Crc::<u64>::new(&crc::CRC_64_NVME).checksum(&bytes);
            vec![("x-amz-checksum-crc64nvme", b64(&crc.to_be_bytes()))]
        }
        "amz-sha1" => vec![("x-amz-checksum-sha1", b64(&sha1::Sha1::digest(&bytes)))],
        "amz-sha256" => vec![("x-amz-checksum-sha256", b64(&sha256()))],
        // Of the parts' checksums: never the whole file's, wrong or not.
        "amz-composite" => vec![
            ("x-amz-checksum-crc32c", format!("{}-3", b64(&crc32c()))),
            ("x-amz-checksum-type", "COMPOSITE".into()),
        ],
        "repr-sha256" => vec![("repr-digest", format!("sha-256=:{}:", b64(&sha256())))],
        "repr-sha512" => vec![("repr-digest", format!("sha-512=:{}:", b64(&sha512())))],
        "digest-sha256" => vec![("digest", format!("SHA-256={}", b64(&sha256())))],
        "digest-sha512" => vec![("digest", format!("SHA-512={}", b64(&sha512())))],
        // Declared in a form the standards do not allow: hex in x-goog-hash (base64 only), an
        // uppercase key in Repr-Digest (RFC 9530 keys are lowercase).
        "goog-hex" => vec![(
            "x-goog-hash",
            format!("crc32c={},md5={}", hex(&crc32c()), hex(&md5)),
        )],
        "repr-upper" => vec![("repr-digest", format!("SHA-256=:{}:", b64(&sha256())))],
        _ => Vec::new(),
    }
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
    if std::mem::take(&mut s.corrupt)
        && let Some(b) = buf.first_mut()
    {
        *b ^= 0x5a;
    }
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

/// Ask the file host for a signed URL as the sandbox minted it (for the crate's tests).
#[cfg(test)]
pub(crate) async fn fetch(shared: &Arc<Shared>, url: &str) -> StatusCode {
    let (path, query) = url
        .strip_prefix(shared.files_url.as_str())
        .and_then(|rest| rest.split_once('?'))
        .expect("a URL on the sandbox's own file host");
    let id = path
        .trim_start_matches("/dl/")
        .split('/')
        .next()
        .unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or("")
            .to_string()
    };
    let signed = Signed {
        iat: param("iat").parse().unwrap_or(0),
        exp: param("exp").parse().unwrap_or(0),
        sig: param("sig"),
        hop: None,
    };
    let path = std::collections::HashMap::from([("id".to_string(), id.to_string())]);
    serve(
        State(shared.clone()),
        Path(path),
        Query(signed),
        HeaderMap::new(),
    )
    .await
    .status()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Catalog, SandboxConfig, testkit};

    fn ranged(range: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        h
    }

    fn file(size: u64) -> CatalogFile {
        CatalogFile {
            size,
            ..Catalog::generate(1, 2).files()[0].clone()
        }
    }

    #[tokio::test]
    async fn the_span_is_the_whole_file_or_the_range_asked_for() {
        let shared = testkit::shared(SandboxConfig::new(Catalog::generate(1, 2)));
        let f = file(1000);
        let span = |h: &HeaderMap| span(&shared, h, &f, 1).ok();
        assert_eq!(span(&HeaderMap::new()), Some((false, 0, 1000)));
        assert_eq!(span(&ranged("bytes=10-19")), Some((true, 10, 20)));
        assert_eq!(span(&ranged("bytes=10-")), Some((true, 10, 1000)));
        assert_eq!(span(&ranged("bytes=990-5000")), Some((true, 990, 1000)));
        assert_eq!(shared.stats.snapshot().range_requests, 3);
    }

    #[tokio::test]
    async fn a_range_past_the_end_or_not_understood_is_a_416_with_the_size() {
        let shared = testkit::shared(SandboxConfig::new(Catalog::generate(1, 2)));
        for range in [
            "bytes=1000-",
            "bytes=0-1,5-9",
            "bytes=-10",
            "bytes=9-3",
            "items=0-9",
        ] {
            let resp = *span(&shared, &ranged(range), &file(1000), 1).unwrap_err();
            assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
            assert_eq!(resp.headers()[header::CONTENT_RANGE], "bytes */1000");
        }
    }

    #[cfg(feature = "test-controls")]
    #[tokio::test]
    async fn faults_ignore_a_range_or_shorten_it_behind_a_star() {
        let mut cfg = SandboxConfig::new(Catalog::generate(1, 2));
        cfg.faults.max_per_item = 0;
        cfg.faults.test.ignore_range_percent = 100;
        let shared = testkit::shared(cfg.clone());
        let f = file(1000);
        assert_eq!(
            span(&shared, &ranged("bytes=10-"), &f, 1).ok(),
            Some((false, 0, 1000))
        );
        cfg.faults.test.ignore_range_percent = 0;
        cfg.faults.test.star_range_short = true;
        let shared = testkit::shared(cfg);
        assert_eq!(
            span(&shared, &ranged("bytes=10-"), &f, 1).ok(),
            Some((true, 10, 505))
        );
        let answer = Answer {
            file: f,
            version: 0,
            key: 1,
            partial: true,
            start: 10,
            end: 505,
        };
        assert_eq!(content_range(&shared, &answer), "bytes 10-504/*");
    }

    #[test]
    fn a_content_range_names_the_bytes_sent_and_the_size() {
        let shared = testkit::shared(SandboxConfig::new(Catalog::generate(1, 2)));
        let answer = Answer {
            file: file(1000),
            version: 0,
            key: 1,
            partial: true,
            start: 10,
            end: 20,
        };
        assert_eq!(content_range(&shared, &answer), "bytes 10-19/1000");
    }
}
