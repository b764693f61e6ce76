//! What is worth retrying, and how long to wait: one place, tested on its own (the uv model).

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
}

/// Set to `1`, it makes a run's own backoff waits zero: for the scenario tests, which would
/// otherwise spend seconds on each ladder of retries. Any other value is ignored, so that a
/// stray `=0` or empty value cannot turn it on; when on, it is said at debug level (`-vv`),
/// since a real run with it would retry a failing server back to back. Hidden (not in `--help` nor in the
/// CLI's specification) and read in [`Backoff::default`] alone. Only fetchdocs' own waits go:
/// the retries are as many, a server's `Retry-After` and `RateLimit-Reset` are still obeyed,
/// and the bounded windows (`api::UNREACHABLE_WITHIN`, the read timeout) are unchanged.
pub const NO_RETRY_DELAY_ENV: &str = "FETCHDOCS_TEST_NO_RETRY_DELAY";

impl Backoff {
    /// A run's backoff: 250 ms doubling to 20 s, five retries.
    pub const PRODUCTION: Backoff = Backoff {
        base: Duration::from_millis(250),
        cap: Duration::from_secs(20),
        max_retries: 5,
    };
}

impl Default for Backoff {
    /// [`Backoff::PRODUCTION`]; with [`NO_RETRY_DELAY_ENV`] set, the same retries without
    /// waits.
    fn default() -> Self {
        if std::env::var_os(NO_RETRY_DELAY_ENV).is_some_and(|v| v == "1") {
            log::debug!("{NO_RETRY_DELAY_ENV}=1: retries without backoff waits (for tests)");
            Backoff {
                base: Duration::ZERO,
                cap: Duration::ZERO,
                ..Backoff::PRODUCTION
            }
        } else {
            Backoff::PRODUCTION
        }
    }
}

impl Backoff {
    /// The wait before retry number `retry` (1-based): `base·2^(retry-1)`, capped, then drawn
    /// uniformly from its upper half so that many clients do not retry in step.
    pub fn delay(&self, retry: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        let full = exp.min(self.cap);
        let half = full / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// After failure number `failures` (1-based): how long to wait before the next attempt —
    /// the longer of the backoff and the server's own `Retry-After` — or `None` to give up.
    pub fn next_wait(&self, failures: u32, server_wait: Option<Duration>) -> Option<Duration> {
        (failures <= self.max_retries)
            .then(|| server_wait.unwrap_or_default().max(self.delay(failures)))
    }
}

/// The reason for a failure that was retried until the retries ran out.
pub fn gave_up(reason: &str, attempts: u32) -> String {
    format!("{reason} (gave up after {attempts} attempts)")
}

/// Statuses that say "try again later": timeouts, throttling and server-side failures.
pub fn is_transient_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// Whether a reqwest error is worth retrying: timeouts, refused or reset connections, bodies cut
/// short. Not: bad URLs, redirect loops, TLS certificate problems.
pub fn is_transient_reqwest(err: &reqwest::Error) -> bool {
    if err.is_builder() || err.is_redirect() {
        return false;
    }
    if chain_has_certificate_error(err) {
        return false;
    }
    err.is_timeout()
        || err.is_connect()
        || err.is_body()
        || err.is_request()
        || chain_has_transient_io(err)
}

/// Walk an error's source chain for an I/O error of a transient kind.
pub fn chain_has_transient_io(err: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && is_transient_io_kind(io.kind())
        {
            return true;
        }
        current = next_in_chain(e);
    }
    false
}

/// I/O error kinds that a retry can fix.
pub fn is_transient_io_kind(kind: io::ErrorKind) -> bool {
    use io::ErrorKind::*;
    matches!(
        kind,
        ConnectionReset
            | ConnectionAborted
            | ConnectionRefused
            | BrokenPipe
            | TimedOut
            | UnexpectedEof
            | Interrupted
            | NotConnected
    )
}

/// Whether a TLS certificate was refused somewhere in the error's source chain: found by type
/// (rustls' own error, also where an `io::Error` carries it), never by reading messages, which
/// hold URLs and therefore file names such as `ISO_Certificate.pdf`.
pub fn chain_has_certificate_error(err: &(dyn StdError + 'static)) -> bool {
    first_tls_error(err).is_some_and(is_certificate_error)
}

/// Whether TLS failed somewhere in the error's source chain (a refused certificate, a handshake
/// with something that does not speak TLS…), found by type.
pub fn chain_has_tls_error(err: &(dyn StdError + 'static)) -> bool {
    first_tls_error(err).is_some()
}

fn first_tls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = next_in_chain(e);
    }
    None
}

/// The next error down a chain. An `io::Error`'s own `source()` skips the error it wraps (and
/// I/O errors get wrapped in I/O errors): its wrapped error comes next here.
pub fn next_in_chain<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a (dyn StdError + 'static)> {
    if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
        return Some(inner);
    }
    e.source()
}

fn is_certificate_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::InvalidCertRevocationList(_)
            | rustls::Error::NoCertificatesPresented
    )
}

/// The longest server-requested wait we honour; a larger `Retry-After` is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// `Retry-After` as seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(value).ok()?;
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The IETF draft's `RateLimit-Remaining` and `RateLimit-Reset` (seconds).
pub fn rate_limit_headers(headers: &HeaderMap) -> (Option<u64>, Option<Duration>) {
    let num = |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    (
        num("ratelimit-remaining"),
        num("ratelimit-reset").map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            max_retries: 10,
        };
        for _ in 0..100 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d30 = b.delay(30);
            assert!(d30 >= Duration::from_secs(1) && d30 <= Duration::from_secs(2));
        }
    }

    #[test]
    fn next_wait_honours_the_server_and_gives_up() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            max_retries: 2,
        };
        assert!(b.next_wait(1, None).unwrap() <= Duration::from_millis(100));
        assert_eq!(
            b.next_wait(2, Some(Duration::from_secs(7))),
            Some(Duration::from_secs(7))
        );
        assert_eq!(b.next_wait(3, None), None);
    }

    #[test]
    fn statuses() {
        for s in [408u16, 429, 500, 502, 503, 504] {
            assert!(is_transient_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200u16, 400, 401, 403, 404, 409, 410, 416] {
            assert!(
                !is_transient_status(StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }

    #[derive(Debug)]
    struct Wrapper(io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("request failed")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn walks_the_source_chain() {
        let reset = Wrapper(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(chain_has_transient_io(&reset));
        let eof = Wrapper(io::Error::new(io::ErrorKind::UnexpectedEof, "cut"));
        assert!(chain_has_transient_io(&eof));
        let denied = Wrapper(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(!chain_has_transient_io(&denied));
        let full = io::Error::new(io::ErrorKind::StorageFull, "disk full");
        assert!(!chain_has_transient_io(&full));
    }

    #[test]
    fn certificate_errors_are_found_by_type_not_by_text() {
        let bad_cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = Wrapper(io::Error::new(io::ErrorKind::InvalidData, bad_cert.clone()));
        assert!(chain_has_certificate_error(&wrapped));
        assert!(chain_has_certificate_error(&bad_cert));
        // Text alone says nothing: a reset while fetching …/ISO_Certificate.pdf is transient.
        let reset = Wrapper(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "for url (https://files.example/ISO_Certificate.pdf): certificate",
        ));
        assert!(!chain_has_certificate_error(&reset));
        assert!(chain_has_transient_io(&reset));
        let other_tls = Wrapper(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::DecryptError,
        ));
        assert!(!chain_has_certificate_error(&other_tls));
        assert!(chain_has_tls_error(&other_tls));
        // As hyper-util hands it up: an I/O error wrapping an I/O error wrapping rustls'.
        let nested = Wrapper(io::Error::other(io::Error::new(
            io::ErrorKind::InvalidData,
            bad_cert,
        )));
        assert!(chain_has_certificate_error(&nested));
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after", "999999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        h.insert(
            "retry-after",
            httpdate::fmt_http_date(later).parse().unwrap(),
        );
        let got = retry_after(&h).unwrap();
        assert!(got > Duration::from_secs(25) && got <= Duration::from_secs(30));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn ratelimit_headers() {
        let mut h = HeaderMap::new();
        h.insert("RateLimit-Remaining", "0".parse().unwrap());
        h.insert("RateLimit-Reset", "12".parse().unwrap());
        assert_eq!(
            rate_limit_headers(&h),
            (Some(0), Some(Duration::from_secs(12)))
        );
    }
}
