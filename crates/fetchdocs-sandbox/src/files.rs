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

async fn serve(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<std::collections::HashMap<String, String>>,
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
    if headers.contains_key(header::REFERER) {
        stats
            .file_requests_with_referer
            .fetch_add(1, Ordering::SeqCst);
    }
    let mut guard = InFlight::new(shared.clone());
    let Some(id) = path.get("id").and_then(|id| parse_api_uuid(id, false)) else {
        return plain(StatusCode::NOT_FOUND, "no such file");
    };
    let valid_sig =
        u64::from_str_radix(&q.sig, 16).is_ok_and(|sig| sig == shared.signature(&id, q.iat, q.exp));
    if !valid_sig {
        return plain(StatusCode::FORBIDDEN, "bad signature");
    }
    // (The signature names the URL: its ID, `iat` and `exp`.)
    if let Ok(sig) = u64::from_str_radix(&q.sig, 16) {
        stats.url_used(sig);
    }
    let now = shared.now_ms();
    if now >= q.exp {
        stats.expired_hits.fetch_add(1, Ordering::SeqCst);
        if control!(false, shared.cfg.faults.test.expired_as_400) {
            return expired_400();
        }
        return plain(StatusCode::FORBIDDEN, "Request has expired");
    }
    let Some(file) = shared.cfg.catalog.get(&id).cloned() else {
        return plain(StatusCode::NOT_FOUND, "no such file");
    };
    let f = &shared.cfg.faults;
    let key = key_of(&id);
    let refused = control!(
        false,
        f.test.refuse_ids.contains(&id)
            || shared.among_first("refuse_first_requests", f.test.refuse_first_requests, key)
    );
    if refused {
        return match control!(false, f.test.expired_as_400) {
            true => expired_400(),
            false => plain(StatusCode::FORBIDDEN, "Access Denied"),
        };
    }
    if q.hop.is_none()
        && shared.fault(
            FaultKind::Redirect,
            control!(0, f.test.redirect_percent),
            key,
        )
    {
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
    // The object may be replaced on the host after its first answer (a new version: other
    // bytes, another ETag).
    let replaced = control!(
        false,
        f.test.replace_after_first_request
            && !shared.among_first("replace_after_first_request", 1, key)
    );
    let version = u32::from(replaced);
    let file = file.version(version);
    let etag = format!("\"{:016x}\"", file.seed);
    let last_modified = LAST_MODIFIED[version as usize];

    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(parse_range);
    if range.is_some() {
        stats.range_requests.fetch_add(1, Ordering::SeqCst);
    }
    let range = match range {
        Some(_)
            if shared.fault(
                FaultKind::IgnoreRange,
                control!(0, f.test.ignore_range_percent),
                key,
            ) =>
        {
            None
        }
        r => r,
    };
    let (status, start, mut end) = match range {
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
    if status == StatusCode::PARTIAL_CONTENT && control!(false, f.test.star_range_short) {
        // A range that stops half-way to the end, its total hidden behind `*`.
        end = start + ((end - start) / 2).max(1);
    }
    // Faults that end the body half-way through what is being sent.
    let half = start + (end - start) / 2;
    let cut_first = control!(
        false,
        shared.among_first("cut_first_requests", f.test.cut_first_requests, key)
    );
    let ending = if cut_first || shared.fault(FaultKind::Cut, f.cut_percent, key) {
        stats.file_cuts.fetch_add(1, Ordering::SeqCst);
        Some((half, Ending::Cut))
    } else if shared.fault(FaultKind::Stall, control!(0, f.test.stall_percent), key) {
        Some((half, Ending::Stall))
    } else if shared.fault(
        FaultKind::Short,
        control!(0, f.test.short_body_percent),
        key,
    ) {
        Some((half, Ending::Short))
    } else {
        None
    };
    let dripped = control!(
        false,
        shared.among_first("drip_first_requests", f.test.drip_first_requests, key)
    );
    let bps = if dripped { 64 } else { f.slow_body_bps };
    let chunk = if bps > 0 {
        (bps / 10).clamp(256, 64 * 1024) as usize
    } else {
        64 * 1024
    };
    if end == start {
        guard.release();
    }
    let total = file.size;
    let corrupt = control!(
        false,
        shared.among_first("corrupt_first_requests", f.test.corrupt_first_requests, key)
    );
    #[cfg(feature = "test-controls")]
    let checksums = checksum_headers(
        f.test.checksum,
        f.test.checksum_wrong,
        &file,
        status == StatusCode::OK,
    );
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
            corrupt,
        },
        next_chunk,
    ));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    #[cfg(feature = "test-controls")]
    for (name, value) in checksums {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.append(name, v);
        }
    }
    if !shared.fault(
        FaultKind::NoLength,
        control!(0, f.test.no_length_percent),
        key,
    ) {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if !control!(false, f.test.no_validators) {
        // (With `etag-md5` the ETag is the MD5, set above.)
        let no_etag = control!(
            false,
            f.test.no_etag || (f.test.no_etag_on_ranges && status == StatusCode::PARTIAL_CONTENT)
        );
        if !control!(false, f.test.checksum.starts_with("etag-"))
            && !no_etag
            && let Ok(v) = HeaderValue::from_str(&etag)
        {
            h.insert(header::ETAG, v);
        }
        h.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static(last_modified),
        );
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        // A wrong Content-Range claims the body starts a byte later than it does.
        let shown = if shared.fault(
            FaultKind::BadRange,
            control!(0, f.test.bad_range_percent),
            key,
        ) {
            start + 1
        } else {
            start
        };
        let value = if control!(false, f.test.star_range_short) {
            format!("bytes {shown}-{}/*", end - 1)
        } else {
            format!("bytes {shown}-{}/{total}", end - 1)
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
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
