//! The HTTP side of talking to a vendor API: authentication, pacing, retries, bounded bodies.
//! What the responses mean is the providers' business (`provider/`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use tokio::time::Instant;

use crate::error::{ApiError, Call, Unusable};
use crate::ratelimit::{Need, Permit, RateLimiter, Reservation};
use crate::retry::{self, Backoff};

mod decide;
use decide::{Answer, BodyError, Decision, History, Retry, Transport};

/// Most bytes read from any API response; a larger body is an error, not an allocation.
pub const MAX_API_BODY: usize = 8 * 1024 * 1024;
/// Most 429 answers one request waits out before it gives up…
pub const MAX_THROTTLED: u32 = 10;
/// …and the longest it waits them out in all (each `Retry-After` may ask for 15 min).
pub const MAX_THROTTLED_FOR: Duration = Duration::from_secs(10 * 60);
/// Per-request time limit for API calls.
pub const API_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection to the API may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an API host that cannot be connected to is retried before the run gives up on it.
pub const UNREACHABLE_WITHIN: Duration = Duration::from_secs(30);
/// Most attempts of one request that get no answer at all (the read timeout passes before any
/// response header) before the host is taken as unreachable, within [`UNREACHABLE_WITHIN`].
pub const SILENT_ATTEMPTS: u32 = 3;

/// Whether a request whose attempts got no answer at all is tried again: fewer than
/// [`SILENT_ATTEMPTS`] so far, and the next attempt (after `wait`, taking at most
/// `per_attempt`) would still end within [`UNREACHABLE_WITHIN`] of the first silent one's start.
/// With the default 30 s read timeout that is one attempt: a silent API ends the run at 30 s,
/// like a refused connection.
pub fn try_silent_again(
    silent: u32,
    since_first: Duration,
    wait: Duration,
    per_attempt: Duration,
) -> bool {
    silent < SILENT_ATTEMPTS && since_first + wait + per_attempt <= UNREACHABLE_WITHIN
}

/// The environment variable that holds the API key.
pub const API_KEY_ENV: &str = "FETCHDOCS_API_KEY";

/// The fewest characters a key may have. Vendors' keys are far longer (`vdx_` and a long
/// random part); a shorter one is a mistake (a placeholder, a truncated paste), and a short key
/// could not be redacted without redacting ordinary words ("key" for a key "k").
pub const MIN_KEY_LEN: usize = 12;

/// An API key. Its `Debug` never shows the value, and it has no `Display`; only the client
/// below reads it, to build its header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Validate a key: non-empty, sendable as an HTTP header value, and long enough to be a
    /// real one ([`MIN_KEY_LEN`]).
    pub fn new(raw: &str) -> Result<Self, String> {
        let key = raw.trim();
        if key.is_empty() {
            return Err("the API key is empty".into());
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the API key contains spaces or characters that cannot be sent in an HTTP header"
                    .into(),
            );
        }
        if key.len() < MIN_KEY_LEN {
            return Err(format!(
                "the API key is too short to be a real key ({} of at least {MIN_KEY_LEN} \
                 characters); check that the whole key was copied",
                key.len()
            ));
        }
        Ok(ApiKey(key.to_string()))
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// True for `localhost`, `127.0.0.0/8` and `::1`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// `builder` with the environment's proxies (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and
/// their lower-case forms, `NO_PROXY`), read as reqwest itself reads them, except that nothing
/// for this machine (`127.0.0.0/8`, `::1`, `localhost`) goes through a proxy: plain http is
/// allowed to loopback only because it never leaves the machine, and a proxy would receive
/// the API key and the signed URLs in clear.
pub fn proxies_but_loopback(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    let var = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok())
            .filter(|v| !v.trim().is_empty())
    };
    // As reqwest: under CGI, `HTTP_PROXY` may be a request header, so no proxy at all.
    let mut builder = builder.no_proxy();
    if std::env::var_os("REQUEST_METHOD").is_some() {
        return builder;
    }
    let no = format!(
        "127.0.0.0/8,::1,localhost,{}",
        var(["NO_PROXY", "no_proxy"]).unwrap_or_default()
    );
    let no = reqwest::NoProxy::from_string(&no);
    let all = var(["ALL_PROXY", "all_proxy"]);
    // The first that matches a request wins: the scheme's own, then `ALL_PROXY`.
    let proxies = [
        var(["HTTP_PROXY", "http_proxy"]).map(reqwest::Proxy::http),
        var(["HTTPS_PROXY", "https_proxy"]).map(reqwest::Proxy::https),
        all.map(reqwest::Proxy::all),
    ];
    // A proxy setting that is not a URL is passed over, as reqwest does.
    for proxy in proxies.into_iter().flatten().flatten() {
        builder = builder.proxy(proxy.no_proxy(no.clone()));
    }
    builder
}

/// How the key is sent.
#[derive(Debug, Clone, Copy)]
pub enum AuthStyle {
    /// `x-api-key: <key>` (Veridox).
    XApiKey,
    /// `Authorization: Bearer <key>` (Keelvar).
    Bearer,
}

/// Time since the command started ([`commands::run`](crate::commands::run) starts the clock).
pub fn since_start() -> Duration {
    START.get_or_init(std::time::Instant::now).elapsed()
}

static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Say (at debug level, once) how long after the process started the first API request went
/// out: what a million-ID input costs before anything is asked (the benchmark reads it).
fn note_first_request() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        log::debug!("first API request after {} ms", since_start().as_millis());
    });
}

/// `scheme://host:port` of a URL: what may be said of it (paths and queries can carry
/// signatures or cursors).
pub fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// A response that is not worth retrying (any status), with its body read (bounded).
#[derive(Debug)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Where a request's place in the request budget comes from.
#[derive(Debug, Clone, Copy)]
pub enum Slot<'a> {
    /// An ordinary request (a listing page).
    Ordinary,
    /// A mint call's request, on the reservation taken when it was decided (its first
    /// request; ordinary places for retries and resubmissions).
    First(&'a Reservation),
    /// A Keelvar poll, on the slot promised to its job.
    Poll(&'a Reservation),
}

/// A client for one API host.
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    auth: (HeaderName, HeaderValue),
    limiter: Arc<RateLimiter>,
    backoff: Backoff,
    /// To take the key out of whatever the vendor sends back.
    key: ApiKey,
    /// The longest an attempt waits for an answer: the read timeout, within [`API_TIMEOUT`].
    per_attempt: Duration,
    /// How long the API has left requests unanswered, for the status line.
    silence: std::sync::Mutex<Silence>,
}

/// Requests in flight, and since when none of them has been answered.
#[derive(Debug, Default)]
struct Silence {
    in_flight: usize,
    since: Option<Instant>,
}

/// One attempt in flight; dropped when it ends (or is cancelled).
struct InFlight<'a> {
    client: &'a ApiClient,
    /// Set when the attempt ended without any answer: the silence goes on.
    silent: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut s = self
            .client
            .silence
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s.in_flight = s.in_flight.saturating_sub(1);
        if !self.silent {
            s.since = (s.in_flight > 0).then(Instant::now);
        }
    }
}

impl ApiClient {
    pub fn new(
        base: Url,
        key: &ApiKey,
        style: AuthStyle,
        limiter: Arc<RateLimiter>,
        backoff: Backoff,
        read_timeout: Duration,
        tls: &rustls::ClientConfig,
    ) -> Result<Self, String> {
        let (name, value) = match style {
            AuthStyle::XApiKey => (
                HeaderName::from_static("x-api-key"),
                key.expose().to_string(),
            ),
            AuthStyle::Bearer => (
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", key.expose()),
            ),
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| "the API key cannot be sent as an HTTP header".to_string())?;
        value.set_sensitive(true);
        let http = proxies_but_loopback(reqwest::Client::builder())
            .user_agent(concat!("fetchdocs/", env!("CARGO_PKG_VERSION")))
            // Never follow redirects with the key: a redirect could carry it to another host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(read_timeout)
            .timeout(API_TIMEOUT)
            .tls_backend_preconfigured(tls.clone())
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(ApiClient {
            http,
            base,
            auth: (name, value),
            limiter,
            backoff,
            key: key.clone(),
            per_attempt: read_timeout.min(API_TIMEOUT),
            silence: std::sync::Mutex::new(Silence::default()),
        })
    }

    /// How long requests to the API have gone without any answer, while one is in flight.
    pub fn silent_for(&self) -> Option<Duration> {
        let s = self.silence.lock().unwrap_or_else(|e| e.into_inner());
        s.since.filter(|_| s.in_flight > 0).map(|t| t.elapsed())
    }

    /// `scheme://host:port` of the API: what messages may name.
    pub fn host(&self) -> String {
        origin_of(&self.base)
    }

    fn begin(&self) -> InFlight<'_> {
        let mut s = self.silence.lock().unwrap_or_else(|e| e.into_inner());
        if s.in_flight == 0 && s.since.is_none() {
            s.since = Some(Instant::now());
        }
        s.in_flight += 1;
        InFlight {
            client: self,
            silent: false,
        }
    }

    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }

    /// The absolute URL of an API path such as `files/download`, under the base URL's path.
    pub fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}/{}", url.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        url
    }

    /// Send one request to an API path, paced by the rate limiter, its place in the request
    /// budget from `slot` (a mint call's own reservation, or the promise its job holds for
    /// polls); retry transient failures and 429s (bounded); return the first answer that is
    /// not worth retrying. Redirects are returned as answers.
    pub async fn send_in(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        slot: Slot<'_>,
    ) -> Result<ApiResponse, ApiError> {
        self.send_needing(method, self.url(path), body, slot).await
    }

    /// Whether `url` is on the API host itself (same scheme, host and port as `--base-url`):
    /// the only place the key may go.
    pub fn is_api_origin(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }

    /// [`ApiClient::send_in`] to an absolute URL the API handed out (a listing's next page). It
    /// must be on the API host: the key never follows a link anywhere else.
    pub async fn send_to(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<ApiResponse, ApiError> {
        self.send_needing(method, url, body, Slot::Ordinary).await
    }

    /// Send until an answer is worth returning or the request is given up: each attempt's
    /// ending is decided by [`decide::Request::decide`]; here it is only sent and acted on.
    async fn send_needing(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
        slot: Slot<'_>,
    ) -> Result<ApiResponse, ApiError> {
        if !self.is_api_origin(&url) {
            return Err(ApiError::Request(Unusable::NotApiHost {
                origin: origin_of(&url),
            }));
        }
        let call = Call {
            method,
            path: url.path().to_string(),
        };
        let host = self.unreachable_host();
        let request = decide::Request {
            call: &call,
            host: &host,
            backoff: &self.backoff,
            per_attempt: self.per_attempt,
        };
        note_first_request();
        let mut history = History::default();
        loop {
            let permit = match slot {
                Slot::Ordinary => self.limiter.acquire_for(Need::Request).await,
                Slot::First(r) => r.permit().await,
                Slot::Poll(r) => r.poll_permit().await,
            };
            log::trace!("{call}");
            let sent_at = Instant::now();
            // A permit that no answer used up is given back only once the wait below is over.
            let (answer, _unanswered) = self.attempt(&call.method, &url, body, permit).await;
            match request.decide(answer, &mut history, sent_at, Instant::now()) {
                Decision::Return(response) => return Ok(response),
                Decision::Fail(e) => return Err(e),
                Decision::Pause(wait) => {
                    log::debug!(
                        "{call}: rate-limited (HTTP 429); pausing API requests for {:.1}s",
                        wait.as_secs_f64()
                    );
                    self.limiter.pause_until(Instant::now() + wait);
                }
                Decision::Retry { wait, why } => {
                    self.say_retry(&call, wait, &why);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Send the request once, and read the answer's body (bounded, the key taken out) unless
    /// it is a 429. The permit is used up by an answer (its rate-limit headers); without one
    /// it is handed back.
    async fn attempt<'p>(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&serde_json::Value>,
        permit: Permit<'p>,
    ) -> (Answer, Option<Permit<'p>>) {
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header(self.auth.0.clone(), self.auth.1.clone());
        if let Some(b) = body {
            req = req.json(b);
        }
        let mut in_flight = self.begin();
        let sent = req.send().await;
        // No answer at all: the silence goes on (for the status line).
        in_flight.silent = matches!(&sent, Err(e) if Transport::is_silence(e));
        drop(in_flight);
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => return (Answer::Failed(Transport::of(e)), Some(permit)),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let (remaining, reset) = retry::rate_limit_headers(&headers);
        permit.observe(remaining, reset);
        if status == StatusCode::TOO_MANY_REQUESTS {
            return (Answer::Throttled(headers), None);
        }
        let body = match read_capped(resp).await {
            Ok(body) => Ok(redact(body, &self.key)),
            Err(ReadError::TooLarge) => Err(BodyError::TooLarge),
            Err(ReadError::Http(e)) => Err(BodyError::Read {
                transient: retry::is_transient_reqwest(&e),
                cause: e.without_url().to_string(),
            }),
        };
        (
            Answer::Http {
                status,
                headers,
                body,
            },
            None,
        )
    }

    /// Say in the log why a request is sent again.
    fn say_retry(&self, call: &Call, wait: Duration, why: &Retry) {
        match why {
            Retry::Refused { cause } => {
                log::debug!("{call}: {cause}; retrying in {:.1}s", wait.as_secs_f64());
            }
            Retry::Silent { quiet } => log::info!(
                "waiting for the API at {}: no answer for {:.0}s ({call}); trying again",
                self.host(),
                quiet.as_secs_f64()
            ),
            Retry::Failed { last, failures } => log::debug!(
                "{call}: {last}; retrying in {:.1}s ({failures}/{})",
                wait.as_secs_f64(),
                self.backoff.max_retries
            ),
        }
    }

    /// The API host as the unreachable message names it: the base URL without its path or
    /// query (never a path or a key).
    fn unreachable_host(&self) -> String {
        let mut host = self.base.clone();
        host.set_path("");
        host.set_query(None);
        host.as_str().trim_end_matches('/').to_string()
    }
}

/// The body with every occurrence of the key replaced, whole: a vendor that echoes the key in an
/// error text must not get it printed or written into a report. Only the exact key is replaced
/// (never a part of it), and keys are at least [`MIN_KEY_LEN`] long, so ordinary words stay.
fn redact(body: Bytes, key: &ApiKey) -> Bytes {
    let secret = key.expose().as_bytes();
    if secret.is_empty() {
        return body;
    }
    // A substring search (SIMD), not a comparison at every offset: bodies run to 8 MiB.
    let finder = memchr::memmem::Finder::new(secret);
    if finder.find(&body).is_none() {
        return body;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest = &body[..];
    while let Some(at) = finder.find(rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"[redacted]");
        rest = &rest[at + secret.len()..];
    }
    out.extend_from_slice(rest);
    Bytes::from(out)
}

enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

async fn read_capped(resp: reqwest::Response) -> Result<Bytes, ReadError> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_API_BODY as u64)
    {
        return Err(ReadError::TooLarge);
    }
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(ReadError::Http)?;
        if buf.len() + chunk.len() > MAX_API_BODY {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// A short, printable excerpt of an error body, for messages: ": excerpt", or nothing.
pub fn describe_body(body: &[u8]) -> String {
    crate::error::excerpt(&body_text(body))
}

/// The first 200 characters of an error body, control characters blanked, trimmed (maybe
/// empty): what messages quote of it.
pub fn body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    text.trim().to_string()
}

/// The innermost error of a chain, which names the cause ("Connection refused (os error 111)",
/// "failed to lookup address information: …") without the layers' wording around it.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = retry::next_in_chain(current) {
        current = next;
    }
    current.to_string()
}

/// An error and its sources, joined: "error sending request: connection refused".
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        current = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_taken_out_of_vendor_text() {
        let key = ApiKey::new("vdx_s3cret_0001").unwrap();
        let body =
            Bytes::from_static(b"{\"error\": \"bad key vdx_s3cret_0001 (vdx_s3cret_0001)\"}");
        assert_eq!(
            &redact(body, &key)[..],
            b"{\"error\": \"bad key [redacted] ([redacted])\"}"
        );
        let clean = Bytes::from_static(b"nothing here");
        assert_eq!(&redact(clean, &key)[..], b"nothing here");
        // Parts of the key are not the key: the words around stay whole.
        let near = Bytes::from_static(b"Invalid API key vdx_s3cret_000 vdx_");
        assert_eq!(&redact(near.clone(), &key)[..], &near[..]);
    }

    #[test]
    fn a_key_too_short_to_be_real_is_refused() {
        assert!(ApiKey::new("k").unwrap_err().contains("too short"));
        assert!(ApiKey::new("vdx_s3cret").is_err());
        assert!(ApiKey::new(" vdx_12345678 \n").is_ok());
        for key in [
            "vdx_sandbox_key_0123456789",
            "klv_sandbox_key_0123456789",
            "vdx_wrong_key",
            "klv_not_the_key",
        ] {
            assert!(ApiKey::new(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn a_silent_api_is_tried_again_only_within_the_unreachable_window() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // A short read timeout: three silent attempts, then unreachable.
        assert!(try_silent_again(1, s(1), ms(250), s(1)));
        assert!(try_silent_again(2, s(3), ms(500), s(1)));
        assert!(!try_silent_again(SILENT_ATTEMPTS, s(5), ms(500), s(1)));
        // The default 30 s: one attempt fills the window, as long as a refusal is retried.
        assert!(!try_silent_again(1, s(30), ms(250), s(30)));
        // 10 s: a second attempt still ends within 30 s, a third would not.
        assert!(try_silent_again(1, s(10), ms(250), s(10)));
        assert!(!try_silent_again(2, s(20) + ms(300), ms(500), s(10)));
    }

    /// A client for `http://127.0.0.1:port`, with a short read timeout and quick retries.
    fn client_for(port: u16, read_timeout: Duration) -> ApiClient {
        let limiter = Arc::new(RateLimiter::new(&[(100_000, Duration::from_secs(60))]));
        let backoff = Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(20),
            max_retries: 2,
        };
        ApiClient::new(
            Url::parse(&format!("http://127.0.0.1:{port}/api/")).unwrap(),
            &ApiKey::new("vdx_unit_test_key_0123").unwrap(),
            AuthStyle::XApiKey,
            limiter,
            backoff,
            read_timeout,
            // Plain http: no certificate is ever checked.
            &rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        )
        .unwrap()
    }

    /// A server that accepts connections, reads what comes, and answers each with `answer`
    /// (nothing at all if empty) and then nothing more; counts the connections.
    async fn hostile(answer: &'static [u8]) -> (u16, Arc<std::sync::atomic::AtomicU32>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                    if !answer.is_empty() {
                        let _ = sock.write_all(answer).await;
                    }
                    // Hold the connection open, silent, until the client gives up on it.
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        });
        (port, seen)
    }

    #[tokio::test]
    async fn an_api_that_never_answers_is_unreachable_after_a_few_silent_attempts() {
        let (port, seen) = hostile(b"").await;
        let client = client_for(port, Duration::from_millis(200));
        let err = client
            .send_in(Method::POST, "files/download", None, Slot::Ordinary)
            .await
            .unwrap_err();
        let ApiError::Unreachable(e) = err else {
            panic!("{err:?}")
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "cannot reach the API at http://127.0.0.1:{port}: no answer"
            )),
            "{msg}"
        );
        assert!(msg.contains("3 attempts"), "{msg}");
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            SILENT_ATTEMPTS
        );
        // Nothing in flight any more: the status line says nothing.
        assert_eq!(client.silent_for(), None);
    }

    #[tokio::test]
    async fn a_body_that_stalls_after_the_header_is_an_answer_retried_as_a_failure() {
        // The header came: the host is there. Its body stalls: an ordinary transient failure,
        // retried (max_retries) and then "down", never "unreachable".
        let (port, seen) =
            hostile(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"fi")
                .await;
        let client = client_for(port, Duration::from_millis(200));
        let err = client
            .send_in(Method::POST, "files/download", None, Slot::Ordinary)
            .await
            .unwrap_err();
        let ApiError::Down(e) = err else {
            panic!("{err:?}")
        };
        let msg = e.to_string();
        assert!(msg.contains("reading the response failed"), "{msg}");
        assert!(msg.contains("gave up after 3 attempts"), "{msg}");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn api_key_never_shows_in_debug() {
        let key = ApiKey::new("vdx_supersecret\n").unwrap();
        assert_eq!(key.expose(), "vdx_supersecret");
        assert!(!format!("{key:?}").contains("supersecret"));
        assert!(ApiKey::new("  ").is_err());
        assert!(ApiKey::new("a b").is_err());
    }
}
